//! Authorise now, capture later. A payment initiated with manual capture is only authorised
//! when it is confirmed (payment and order AUTHORIZED); staff then capture all or part of it
//! (payment SUCCESS with its captured amount, order PAID, the rest released at the provider),
//! or it is voided (by staff or its owner) or runs out (`SOM_AUTHORIZATION_TTL`): payment
//! VOIDED or EXPIRED, order CANCELLED.
//!
//! Every ending is first claimed in the database (one conditional update: exactly one of a
//! capture, a void and an expiry wins, the others get `Conflict`), then the provider is asked
//! outside any transaction — a capture with the key `som-capture-{payment}` — and its answer
//! finishes the payment. A claim whose answer never came (a crash, a provider outage) is
//! finished by the dispatcher with the same key, as refunds are, so a capture is neither lost
//! nor made twice.

use std::time::Duration;

use super::OrderSystem;
use crate::domain::{
    Actor, Caller, EventKind, Money, Payment, PaymentId, PaymentStatus, SettleAction, Settlement, User,
};
use crate::error::{Error, Result};
use crate::payment::{Cancellation, CaptureRequest, ProviderError};
use crate::storage::{IdempotencySlot, PaymentNotify, SettlementOutcome, Transition};

/// How many authorisations one dispatcher round expires, warns about or finishes at most.
const BATCH: u32 = 100;

impl OrderSystem {
    /// The capture itself; [`OrderSystem::capture_payment`] builds the request.
    pub(super) async fn capture_payment_now(
        &self,
        caller: Caller,
        id: PaymentId,
        amount: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<Payment> {
        let payment = self.payment(caller, id).await?;
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may capture payments".into()));
        }
        let requested = match amount {
            Some(raw) => Some(capture_amount(raw, &payment)?),
            None => None,
        };
        let fingerprint = (id, requested.map(|a| a.minor()));
        self.idempotent(caller, "capture_payment", idempotency_key, &fingerprint, |slot| async move {
            let payment = self.payment(caller, id).await?;
            let amount = requested.unwrap_or(payment.amount);
            let at = self.now();
            match self
                .write(move |s| async move { s.begin_settlement(id, SettleAction::Capture, amount, at).await })
                .await?
            {
                Transition::Applied(claimed) => {
                    let result = self.settle_authorization(claimed, caller.actor(), slot).await;
                    let outcome = match &result {
                        Ok(_) => "captured",
                        Err(Error::PaymentDeclined(_)) => "declined",
                        Err(e) if e.is_retryable() => "pending",
                        Err(_) => "refused",
                    };
                    metrics::counter!("som_captures_total", "outcome" => outcome).increment(1);
                    result
                }
                Transition::NotApplied(current) => Err(not_settleable(&current, SettleAction::Capture)),
            }
        })
        .await
    }

    /// The void itself; [`OrderSystem::void_payment`] builds the request.
    pub(super) async fn void_payment_now(
        &self,
        caller: Caller,
        id: PaymentId,
        idempotency_key: Option<&str>,
    ) -> Result<Payment> {
        // Its owner may release it too, while nothing of the order is being fulfilled.
        let payment = self.payment(caller, id).await?;
        if !caller.is_staff() {
            let fulfillments = self.inner.storage.fulfillments_for_order(payment.order_id).await?;
            if fulfillments.iter().any(|f| f.status.holds_items()) {
                return Err(Error::Conflict(format!(
                    "order {} is being fulfilled; only staff may release its payment now",
                    payment.order_id
                )));
            }
        }
        self.idempotent(caller, "void_payment", idempotency_key, &id, |slot| async move {
            let payment = self.payment(caller, id).await?;
            let at = self.now();
            let none = Money::zero(payment.amount.currency());
            match self.write(move |s| async move { s.begin_settlement(id, SettleAction::Void, none, at).await }).await?
            {
                Transition::Applied(claimed) => self.settle_authorization(claimed, caller.actor(), slot).await,
                Transition::NotApplied(current) => Err(not_settleable(&current, SettleAction::Void)),
            }
        })
        .await
    }

    /// Releases every authorisation that ran out (up to 100 a round), at the provider and here
    /// (EXPIRED, order CANCELLED, the owner and staff told); how many. The dispatcher runs
    /// this periodically; with several dispatchers each authorisation is expired once.
    pub async fn expire_authorizations(&self) -> Result<usize> {
        let now = self.now();
        let due = self.inner.storage.expiring_authorizations(now, false, BATCH).await?;
        let mut expired = 0;
        for payment in due {
            let (id, none) = (payment.id, Money::zero(payment.amount.currency()));
            let claimed = self
                .write(move |s| async move { s.begin_settlement(id, SettleAction::Expire, none, now).await })
                .await?;
            // Another dispatcher claimed it, or it was captured or voided meanwhile.
            let Transition::Applied(claimed) = claimed else { continue };
            match self.settle_authorization(claimed, Actor::System, None).await {
                Ok(p) if p.status == PaymentStatus::Expired => {
                    expired += 1;
                    let what = format!(
                        "the authorisation of {} for payment {} ran out before it was captured; it was released and the order cancelled",
                        p.amount, p.id
                    );
                    self.alert_staff(p.order_id, Some(&p), &format!("authorization_expired:payment:{}", p.id), &what)
                        .await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(payment = %id, error = %e, "an expired authorisation was not released yet"),
            }
        }
        Ok(expired)
    }

    /// Tells staff about authorisations that run out within `SOM_AUTHORIZATION_WARN_BEFORE`
    /// (each once); how many. The dispatcher runs this periodically.
    pub async fn warn_expiring_authorizations(&self) -> Result<usize> {
        let warn_before =
            chrono::Duration::from_std(self.inner.config.authorization_warn_before).unwrap_or(chrono::Duration::MAX);
        let now = self.now();
        let horizon = now.checked_add_signed(warn_before).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        let soon = self.inner.storage.expiring_authorizations(horizon, true, BATCH).await?;
        let mut warned = 0;
        for payment in soon {
            let expires = payment.authorization_expires_at.map_or_else(|| "soon".to_owned(), |t| t.to_rfc3339());
            let what = format!(
                "the authorisation of {} for payment {} expires at {expires}; capture or void it before then, or it is released",
                payment.amount, payment.id
            );
            // Written (once per staff account) before it is marked: a crash in between warns
            // again, and the outbox keeps the second copy out.
            self.alert_staff(
                payment.order_id,
                Some(&payment),
                &format!("authorization_expiring:payment:{}", payment.id),
                &what,
            )
            .await;
            let (id, at) = (payment.id, now);
            if self.write(move |s| async move { s.mark_expiry_warned(id, at).await }).await? {
                warned += 1;
            }
        }
        Ok(warned)
    }

    /// Finishes captures, voids and expiries claimed more than `older_than` ago whose answer
    /// never came (a crash, a provider outage), with the same provider idempotency key; how
    /// many were finished. The dispatcher runs this with `SOM_REFUND_RECOVERY_AFTER`.
    pub async fn recover_settlements(&self, older_than: Duration) -> Result<usize> {
        let age = chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let before = self.now().checked_sub_signed(age).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let mut finished = 0;
        for payment in self.inner.storage.stalled_settlements(before, BATCH).await? {
            let id = payment.id;
            match self.settle_authorization(payment, Actor::System, None).await {
                Ok(p) if p.status != PaymentStatus::Authorized => finished += 1,
                Ok(_) => {}
                Err(Error::PaymentDeclined(reason)) => {
                    tracing::warn!(payment = %id, %reason, "a capture finished later was declined; the payment stays authorised");
                    finished += 1;
                }
                Err(e) => tracing::warn!(payment = %id, error = %e, "a capture or void is not finished yet"),
            }
        }
        Ok(finished)
    }

    /// Asks the provider to carry out the settlement claimed on `payment` and records the
    /// answer. One settlement per payment at a time in this process; a payment no longer
    /// claimed (finished meanwhile) is returned as it is now. A transient failure leaves the
    /// claim for recovery and is `Unavailable`; a refusal gives the claim up.
    async fn settle_authorization(
        &self,
        payment: Payment,
        actor: Actor,
        slot: Option<IdempotencySlot>,
    ) -> Result<Payment> {
        let id = payment.id;
        let _guard = self.inner.payment_locks.lock(id).await;
        let payment = self.inner.storage.payment_by_id(id).await?.unwrap_or(payment);
        let Some(claim) = payment.settlement.filter(|_| payment.status == PaymentStatus::Authorized) else {
            return Ok(payment);
        };
        let Settlement { action, amount, started_at } = claim;
        let outcome = match action {
            SettleAction::Capture => {
                let request = CaptureRequest {
                    provider_payment_id: payment.provider_payment_id.clone(),
                    amount,
                    idempotency_key: payment.capture_idempotency_key(&claim),
                };
                match self.inner.provider.capture(&request).await {
                    Ok(_) => SettlementOutcome::Captured { amount },
                    Err(ProviderError::Transient(message)) => {
                        tracing::warn!(payment = %id, %message, "capture provider unavailable; the capture is finished later");
                        return Err(Error::Unavailable(
                            "payment provider (the capture is finished automatically)".into(),
                        ));
                    }
                    Err(refused) => {
                        self.write(move |s| async move { s.abandon_settlement(id, action, started_at).await }).await?;
                        return Err(match refused {
                            ProviderError::Declined { message, .. } => Error::PaymentDeclined(message),
                            other => Error::Conflict(format!("payment {id} cannot be captured: {other}")),
                        });
                    }
                }
            }
            SettleAction::Void | SettleAction::Expire => {
                let expired = action == SettleAction::Expire;
                match self.inner.provider.cancel(&payment.provider_payment_id).await {
                    Ok(Cancellation::Cancelled) => SettlementOutcome::Released {
                        expired,
                        reason: if expired {
                            "the authorisation expired".to_owned()
                        } else {
                            format!("voided by {actor}")
                        },
                    },
                    // The provider took the money (captured outside SOM): recorded as captured.
                    Ok(Cancellation::Captured) => SettlementOutcome::Captured { amount: payment.amount },
                    Err(ProviderError::Transient(message)) => {
                        tracing::warn!(payment = %id, %message, "void provider unavailable; the void is finished later");
                        return Err(Error::Unavailable("payment provider (the void is finished automatically)".into()));
                    }
                    Err(refused) => {
                        self.write(move |s| async move { s.abandon_settlement(id, action, started_at).await }).await?;
                        return Err(Error::Conflict(format!("payment {id} cannot be released: {refused}")));
                    }
                }
            }
        };
        let captured_instead = action != SettleAction::Capture && matches!(outcome, SettlementOutcome::Captured { .. });
        // A void answered with a capture fails: its key must not remember the captured payment.
        let slot = if captured_instead { None } else { slot };
        let owner = self.owner(payment.user_id).await?;
        let notify = self.settlement_notify(&outcome, owner);
        let at = self.now();
        let finished = match self
            .write(move |s| async move { s.finish_settlement(id, outcome, actor, at, notify, slot).await })
            .await?
        {
            Transition::Applied(p) => {
                self.inner.wake.notify_one();
                p
            }
            // Finished meanwhile by the provider's event of this very change (another process
            // received it): done as asked. Anything else is a conflict.
            Transition::NotApplied(current) => {
                let done = match action {
                    SettleAction::Capture => current.status.was_captured(),
                    SettleAction::Void | SettleAction::Expire => {
                        matches!(current.status, PaymentStatus::Voided | PaymentStatus::Expired)
                    }
                };
                return if done && !captured_instead { Ok(current) } else { Err(not_settleable(&current, action)) };
            }
        };
        if captured_instead {
            return Err(Error::Conflict(format!(
                "payment {id} was captured at the provider before it could be released; it is recorded as captured"
            )));
        }
        Ok(finished)
    }

    /// Applies a capture or release the provider reports on its own (made in its dashboard,
    /// or an authorisation it let run out) to an AUTHORIZED payment, once; whether it changed
    /// anything.
    pub(super) async fn settle_from_event(&self, payment: &Payment, outcome: SettlementOutcome) -> Result<bool> {
        let id = payment.id;
        let _guard = self.inner.payment_locks.lock(id).await;
        let owner = self.owner(payment.user_id).await?;
        let notify = self.settlement_notify(&outcome, owner);
        let at = self.now();
        match self
            .write(move |s| async move { s.finish_settlement(id, outcome, Actor::System, at, notify, None).await })
            .await?
        {
            Transition::Applied(_) => {
                self.inner.wake.notify_one();
                Ok(true)
            }
            Transition::NotApplied(_) => Ok(false),
        }
    }

    fn settlement_notify(&self, outcome: &SettlementOutcome, owner: User) -> PaymentNotify {
        match outcome {
            SettlementOutcome::Captured { .. } => self.payment_notify(EventKind::PaymentCaptured, owner, None),
            SettlementOutcome::Released { reason, .. } => {
                self.payment_notify(EventKind::PaymentVoided, owner, Some(reason.clone()))
            }
        }
    }
}

/// The amount asked for: above zero, in the payment's currency, at most what was authorised.
fn capture_amount(raw: &str, payment: &Payment) -> Result<Money> {
    let amount =
        Money::parse(raw.trim(), payment.amount.currency()).map_err(|e| Error::invalid("amount", e.to_string()))?;
    if !amount.is_positive() {
        return Err(Error::invalid("amount", "must be greater than zero"));
    }
    if amount.minor() > payment.amount.minor() {
        return Err(Error::invalid("amount", format!("must be at most the amount authorised, {}", payment.amount)));
    }
    Ok(amount)
}

/// Why `action` cannot be done to `payment` as it is now.
fn not_settleable(payment: &Payment, action: SettleAction) -> Error {
    let id = payment.id;
    let verb = match action {
        SettleAction::Capture => "captured",
        SettleAction::Void | SettleAction::Expire => "voided",
    };
    if let (PaymentStatus::Authorized, Some(busy)) = (payment.status, payment.settlement) {
        let what = match busy.action {
            SettleAction::Capture => format!("a capture of {} is under way", busy.amount),
            SettleAction::Void => "a void is under way".to_owned(),
            SettleAction::Expire => "its expiry is under way".to_owned(),
        };
        return Error::Conflict(format!("payment {id} cannot be {verb}: {what}"));
    }
    match payment.status {
        PaymentStatus::Authorized => Error::Conflict(format!("payment {id} cannot be {verb} now")),
        s if s.was_captured() => {
            Error::Conflict(format!("payment {id} was already captured ({}); it cannot be {verb}", payment.captured))
        }
        PaymentStatus::Pending => Error::Conflict(format!(
            "payment {id} is PENDING: only an AUTHORIZED payment can be {verb} (cancel its order to end it)"
        )),
        other => Error::Conflict(format!("payment {id} is {other}; only an AUTHORIZED payment can be {verb}")),
    }
}
