//! Refunds through the facade: staff (or the system caller) return some or all of a captured
//! payment. The amount is set aside in the database before the provider is called, outside
//! any transaction, with a key derived from the refund's id; the answer finishes or releases
//! it. A refund whose answer never came (a crash, a provider outage) is finished by the worker
//! with the same key, so it is neither lost nor doubled.

use std::time::Duration;

use super::OrderSystem;
use crate::domain::{
    Caller, Message, Money, Payment, PaymentId, Refund, RefundInput, RefundStatus, User, is_disallowed_in_text,
};
use crate::error::{Error, Result, ValidationErrors};
use crate::payment::{ProviderError, RefundRequest};
use crate::storage::{NewNotification, NewRefundRecord, RefundNotify, RefundOutcome, RefundReserve, Transition};

impl OrderSystem {
    /// The refund itself; [`OrderSystem::refund_payment`] builds the request.
    pub(super) async fn refund_payment_now(
        &self,
        caller: Caller,
        payment_id: PaymentId,
        input: RefundInput,
        idempotency_key: Option<&str>,
    ) -> Result<Refund> {
        let payment = self.payment(caller, payment_id).await?;
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may refund payments".into()));
        }
        let reason = refund_reason(input.reason.as_deref())?;
        let requested = parse_amount(input.amount.as_deref(), &payment)?;
        // The request as the key remembers it: "everything left" (no amount) is a request of
        // its own, never the same as any amount.
        let fingerprint = (payment_id, requested.map(|a| a.minor()), &reason);
        self.idempotent(caller, "refund_payment", idempotency_key, &fingerprint, |_| async {
            let request_key = idempotency_key.map(|k| format!("{}|refund|{k}", caller.scope()));
            // "Everything left" as read now; the reservation re-checks it in the database. With
            // a key, a replay reaches the stored refund even when nothing is left any more.
            let amount = requested.unwrap_or_else(|| payment.refundable());
            let record = NewRefundRecord {
                late_capture: false,
                payment_id,
                amount,
                reason: reason.clone(),
                actor: caller.actor(),
                request_key,
                provider_refund_id: None,
                created_at: self.now(),
            };
            let refund = match self.write(move |s| async move { s.reserve_refund(record).await }).await? {
                RefundReserve::Reserved(refund) => refund,
                RefundReserve::Existing(refund) => {
                    let same = refund.payment_id == payment_id
                        && requested.is_none_or(|a| a == refund.amount)
                        && refund.reason == reason;
                    if !same {
                        return Err(Error::IdempotencyMismatch);
                    }
                    refund
                }
                RefundReserve::Refused(current) => return Err(not_refundable(&current, amount)),
            };
            self.settle_refund(refund).await
        })
        .await
    }

    /// A payment's refunds, oldest first: its owner or staff.
    pub async fn payment_refunds(&self, caller: Caller, payment_id: PaymentId) -> Result<Vec<Refund>> {
        self.may_lag(caller, async {
            self.payment(caller, payment_id).await?;
            self.inner.storage.refunds_for_payment(payment_id).await
        })
        .await
    }

    /// Finishes PENDING refunds older than `older_than` (left behind by a crash or a provider
    /// outage) with the provider, using each refund's own idempotency key; how many were
    /// finished. The dispatcher runs this periodically with `SOM_REFUND_RECOVERY_AFTER`.
    pub async fn recover_refunds(&self, older_than: Duration) -> Result<usize> {
        let age = chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let before = self.now().checked_sub_signed(age).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let mut finished = 0;
        for refund in self.inner.storage.pending_refunds(before, 100).await? {
            let (id, order_id, payment_id, amount) = (refund.id, refund.order_id, refund.payment_id, refund.amount);
            match self.settle_refund(refund).await {
                Ok(r) if r.status == RefundStatus::Pending => {}
                Ok(_) => finished += 1,
                Err(Error::PaymentDeclined(reason)) => {
                    // Nobody is waiting for this answer any more: staff are told.
                    let what = format!(
                        "refund {id} of {amount} was declined by the provider when it was finished later ({reason}); no money went back and the amount is available again"
                    );
                    let payment = self.inner.storage.payment_by_id(payment_id).await?;
                    self.alert_staff(order_id, payment.as_ref(), &format!("refund_failed:refund:{id}"), &what).await;
                    finished += 1;
                }
                Err(e) => tracing::warn!(refund = %id, error = %e, "pending refund not finished yet"),
            }
        }
        Ok(finished)
    }

    /// Asks the provider to pay out a PENDING refund and records its answer. One settlement
    /// per refund at a time in this process (a replay, or recovery, waits for a live one and
    /// then sees its result). When the provider cannot be reached the refund is returned still
    /// PENDING: it exists and will be finished by recovery, so the caller must not ask again.
    pub(super) async fn settle_refund(&self, refund: Refund) -> Result<Refund> {
        let _guard = self.inner.refund_locks.lock(refund.id).await;
        let storage = &self.inner.storage;
        let refund = storage.refund_by_id(refund.id).await?.unwrap_or(refund);
        match refund.status {
            RefundStatus::Succeeded => return Ok(refund),
            RefundStatus::Failed => return Err(declined(&refund)),
            RefundStatus::Pending => {}
        }
        let payment = storage
            .payment_by_id(refund.payment_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("refund {} has no payment {}", refund.id, refund.payment_id)))?;
        let request = RefundRequest {
            provider_payment_id: payment.provider_payment_id.clone(),
            amount: refund.amount,
            idempotency_key: refund.provider_idempotency_key(),
            reason: refund.reason.clone(),
        };
        // A refund the provider already knows (made at the provider, or still being returned
        // there) is asked about, never made again.
        let answer = match refund.provider_refund_id.clone() {
            Some(provider_refund_id) => self.inner.provider.refund_status(&provider_refund_id).await,
            None => self.inner.provider.refund(&request).await,
        };
        let outcome = match answer {
            Ok(done) if done.pending => {
                // Reserved and PENDING until the provider says how it ended (its event, or
                // the recovery asking again).
                let (id, provider_refund_id) = (refund.id, done.provider_refund_id.clone());
                self.write(move |s| async move { s.note_provider_refund(id, &provider_refund_id).await }).await?;
                tracing::info!(refund = %refund.id, provider_refund_id = %done.provider_refund_id, "the provider is still returning the money; the refund stays pending");
                return Ok(storage.refund_by_id(refund.id).await?.unwrap_or(refund));
            }
            Ok(done) => RefundOutcome::Succeeded { provider_refund_id: done.provider_refund_id },
            Err(ProviderError::Declined { message, .. }) => RefundOutcome::Failed { reason: message },
            Err(ProviderError::InvalidRequest(message)) => RefundOutcome::Failed { reason: message },
            Err(ProviderError::Transient(message)) => {
                tracing::warn!(refund = %refund.id, %message, "refund provider unavailable; the refund stays pending");
                return Ok(refund);
            }
        };
        let owner = self.owner(refund.user_id).await?;
        let (id, at, notify) = (refund.id, self.now(), self.refund_notify(owner));
        let finished = match self.write(move |s| async move { s.finish_refund(id, outcome, at, notify).await }).await? {
            Transition::Applied(r) => {
                self.inner.wake.notify_one();
                metrics::counter!("som_refunds_total", "outcome" => r.status.as_str()).increment(1);
                r
            }
            Transition::NotApplied(r) => r,
        };
        match finished.status {
            RefundStatus::Failed => Err(declined(&finished)),
            _ => Ok(finished),
        }
    }

    fn refund_notify(&self, owner: User) -> RefundNotify {
        let channels = self.inner.channels.clone();
        Box::new(move |order, payment, refund| {
            channels
                .iter()
                .map(|channel| NewNotification {
                    channel: channel.clone(),
                    message: Message::refund(&owner, order, payment, refund),
                })
                .collect()
        })
    }
}

fn declined(refund: &Refund) -> Error {
    Error::PaymentDeclined(refund.failure_reason.clone().unwrap_or_else(|| "the refund was declined".into()))
}

fn refund_reason(raw: Option<&str>) -> Result<Option<String>> {
    let Some(reason) = raw.map(str::trim).filter(|r| !r.is_empty()) else { return Ok(None) };
    let mut errors = ValidationErrors::default();
    if reason.chars().count() > RefundInput::MAX_REASON_CHARS {
        errors.add("reason", format!("must be at most {} characters", RefundInput::MAX_REASON_CHARS));
    } else if reason.chars().any(is_disallowed_in_text) {
        errors.add("reason", "must not contain control characters or bidirectional controls");
    }
    errors.into_result()?;
    Ok(Some(reason.to_owned()))
}

/// The amount asked for, checked against the payment; `None` for "everything left".
fn parse_amount(raw: Option<&str>, payment: &Payment) -> Result<Option<Money>> {
    let Some(raw) = raw else { return Ok(None) };
    let currency = payment.amount.currency();
    let amount = Money::parse(raw.trim(), currency).map_err(|e| Error::invalid("amount", e.to_string()))?;
    if !amount.is_positive() {
        return Err(Error::invalid("amount", "must be greater than zero"));
    }
    if amount.minor() > payment.amount.minor() {
        return Err(Error::invalid("amount", format!("must be at most the payment's amount, {}", payment.amount)));
    }
    Ok(Some(amount))
}

fn not_refundable(payment: &Payment, amount: Money) -> Error {
    let id = payment.id;
    if payment.status == crate::domain::PaymentStatus::Refunded {
        return Error::Conflict(format!("payment {id} is fully refunded; there is nothing left to refund"));
    }
    if !payment.status.is_refundable() {
        return Error::Conflict(format!("payment {id} is {}; only a captured payment can be refunded", payment.status));
    }
    let left = payment.refundable();
    if !left.is_positive() {
        let pending = if payment.refund_pending.is_positive() {
            format!(" ({} of it in refunds still pending)", payment.refund_pending)
        } else {
            String::new()
        };
        return Error::Conflict(format!("payment {id} has nothing left to refund{pending}"));
    }
    Error::Conflict(format!("payment {id} has only {left} left to refund, less than {amount}"))
}
