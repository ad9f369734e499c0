//! Outcomes the payment provider reports on its own (a payer finishing 3-D Secure, a late
//! decline, a refund made in the provider's dashboard), applied once each: the same
//! transactions as SOM's own confirmations and refunds, with their notifications, and a ledger
//! of the events applied.

use serde::Serialize;

use super::OrderSystem;
use crate::domain::{Actor, CaptureMethod, Money, Payment, PaymentStatus, RefundStatus};
use crate::error::{Error, Result};
use crate::payment::{EventEffect, EventError, ProviderError, ProviderEvent, RefundReport};
use crate::storage::{NewRefundRecord, PaymentOutcome, RefundReserve, SettlementOutcome, Transition};

/// What applying a provider event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// It changed a payment or recorded a refund.
    Applied,
    /// It was applied before (a redelivery): nothing changed.
    Duplicate,
    /// Nothing to do: another event type, an unknown payment, or the change was already made
    /// (SOM's own confirmation got there first).
    Ignored,
    /// It contradicts SOM's payment (another amount or currency, a "succeeded" event for an
    /// intent that is not): nothing changed; logged as an error and counted in
    /// `som_provider_event_mismatches_total` for staff to look at.
    Mismatch,
}

impl EventOutcome {
    /// `applied`, `duplicate` or `ignored`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Applied => "applied",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Ignored => "ignored",
            EventOutcome::Mismatch => "mismatch",
        }
    }
}

/// The answer to a provider event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventReceipt {
    /// The provider's event id.
    pub id: String,
    /// The provider's event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// What SOM did with it.
    pub outcome: EventOutcome,
    /// Why it was ignored, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What an event about one of SOM's own refunds did.
enum OwnRefund {
    /// A PENDING refund ended (succeeded or failed).
    Finished,
    /// Nothing to do.
    Unchanged,
    /// Something staff must look at.
    Note(String),
}

impl OrderSystem {
    /// Checks a notification from the configured provider (`provider` names it, e.g. `stripe`;
    /// `payload` is the raw body, `signature` its signature header) and applies it.
    /// `NotFound` when `provider` is not the configured one or its events are not configured;
    /// `Validation` when it is unsigned, wrongly signed, stale or unreadable — nothing changes.
    pub async fn receive_provider_event(
        &self,
        provider: &str,
        payload: &[u8],
        signature: &str,
    ) -> Result<EventReceipt> {
        let configured = self.inner.provider.name();
        if provider != configured {
            return Err(Error::NotFound(format!("{provider} events (the payment provider is {configured})")));
        }
        let event = self.inner.provider.parse_event(payload, signature).map_err(|e| match e {
            EventError::Unsupported(what) => Error::NotFound(what),
            EventError::Rejected(why) => Error::invalid("signature", why),
        })?;
        self.apply_provider_event(event).await
    }

    /// Applies an event an app received (and verified) its own way. Each event id is applied
    /// once per provider: a redelivery is `Duplicate` and changes nothing. A payment captured
    /// or declined at the provider completes as a confirmation would (order PAID and its
    /// notification in one transaction), unless it already has; a refund made at the
    /// provider is recorded (with the customer's notification) unless SOM made it or has it.
    pub async fn apply_provider_event(&self, event: ProviderEvent) -> Result<EventReceipt> {
        let storage = &self.inner.storage;
        let receipt = |outcome, detail: Option<String>| EventReceipt {
            id: event.id.clone(),
            kind: event.kind.clone(),
            outcome,
            detail,
        };
        if storage.inbound_event_seen(&event.provider, &event.id).await? {
            return Ok(receipt(EventOutcome::Duplicate, None));
        }
        let provider = event.provider.as_str();
        let (outcome, detail) = match &event.effect {
            EventEffect::PaymentSucceeded { provider_payment_id, amount_minor, currency } => {
                match self.check_capture(provider, provider_payment_id, *amount_minor, currency).await? {
                    Some((payment, problem)) => {
                        self.alert_mismatch(&event, &payment, &problem).await;
                        (EventOutcome::Mismatch, Some(problem))
                    }
                    None => match storage.payment_by_provider_id(provider, provider_payment_id).await? {
                        // An authorisation captured at the provider (perhaps in part).
                        Some(payment) if payment.status == PaymentStatus::Authorized => {
                            let amount = Money::from_minor(*amount_minor, payment.amount.currency());
                            let outcome = SettlementOutcome::Captured { amount };
                            self.settled_by_event(&payment, outcome).await?
                        }
                        _ => self.complete_from_event(provider, provider_payment_id, PaymentOutcome::Succeeded).await?,
                    },
                }
            }
            EventEffect::PaymentAuthorized { provider_payment_id, amount_minor, currency } => {
                match self.check_capture(provider, provider_payment_id, *amount_minor, currency).await? {
                    Some((payment, problem)) => {
                        self.alert_mismatch(&event, &payment, &problem).await;
                        (EventOutcome::Mismatch, Some(problem))
                    }
                    None => {
                        let payment = storage.payment_by_provider_id(provider, provider_payment_id).await?;
                        let from = payment.map_or_else(|| self.now(), |p| p.created_at);
                        let outcome = PaymentOutcome::Authorized { expires_at: self.authorization_expiry(from) };
                        self.complete_from_event(provider, provider_payment_id, outcome).await?
                    }
                }
            }
            EventEffect::PaymentCanceled { provider_payment_id, expired } => {
                match storage.payment_by_provider_id(provider, provider_payment_id).await? {
                    Some(payment) if payment.status == PaymentStatus::Authorized => {
                        let reason = if *expired {
                            format!("the authorisation expired at {provider}")
                        } else {
                            format!("released at {provider}")
                        };
                        let outcome = SettlementOutcome::Released { expired: *expired, reason };
                        self.settled_by_event(&payment, outcome).await?
                    }
                    Some(payment) => {
                        (EventOutcome::Ignored, Some(format!("payment {} is {}", payment.id, payment.status)))
                    }
                    None => {
                        (EventOutcome::Ignored, Some(format!("no payment has {provider} id {provider_payment_id}")))
                    }
                }
            }
            EventEffect::Contradictory { provider_payment_id, problem } => {
                match storage.payment_by_provider_id(provider, provider_payment_id).await? {
                    Some(payment) => {
                        self.alert_mismatch(&event, &payment, problem).await;
                        (EventOutcome::Mismatch, Some(problem.clone()))
                    }
                    None => {
                        (EventOutcome::Ignored, Some(format!("no payment has {provider} id {provider_payment_id}")))
                    }
                }
            }
            EventEffect::PaymentFailed { provider_payment_id, message } => {
                let outcome = PaymentOutcome::Failed { reason: message.clone() };
                self.complete_from_event(provider, provider_payment_id, outcome).await?
            }
            EventEffect::Refunded { provider_payment_id, refunds } => {
                self.refunds_from_event(provider, provider_payment_id, refunds).await?
            }
            EventEffect::Ignored => (EventOutcome::Ignored, Some("not an event SOM acts on".to_owned())),
        };
        if outcome == EventOutcome::Mismatch {
            metrics::counter!("som_provider_event_mismatches_total", "type" => event.kind.clone()).increment(1);
            tracing::error!(
                provider, event = %event.id, kind = %event.kind, detail = detail.as_deref(),
                "a provider event contradicts SOM's payment; nothing was changed"
            );
        }
        // Recorded after its effect: every effect above is conditional, so a crash in between
        // and a redelivery apply nothing twice.
        let first = {
            let (provider, id, kind, at) = (provider.to_owned(), event.id.clone(), event.kind.clone(), self.now());
            self.write(move |s| async move { s.record_inbound_event(&provider, &id, &kind, at).await }).await?
        };
        let outcome = if first || outcome != EventOutcome::Applied { outcome } else { EventOutcome::Duplicate };
        metrics::counter!("som_provider_events_total", "type" => event.kind.clone(), "outcome" => outcome.as_str())
            .increment(1);
        tracing::info!(provider, event = %event.id, kind = %event.kind, ?outcome, detail = detail.as_deref(), "provider event");
        Ok(receipt(outcome, detail))
    }

    /// `Some(problem)` when a reported capture is not of the payment's own amount and currency
    /// (an unknown payment is left for [`Self::complete_from_event`] to ignore).
    async fn check_capture(
        &self,
        provider: &str,
        provider_payment_id: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Option<(Payment, String)>> {
        let Some(payment) = self.inner.storage.payment_by_provider_id(provider, provider_payment_id).await? else {
            return Ok(None);
        };
        let expected = payment.amount;
        // An authorisation may be captured in part.
        let fits = if payment.status == PaymentStatus::Authorized {
            amount_minor > 0 && amount_minor <= expected.minor()
        } else if payment.status.was_captured() {
            // A report of a capture SOM recorded: of what was captured.
            amount_minor == payment.captured.minor()
        } else {
            amount_minor == expected.minor()
        };
        if fits && currency.eq_ignore_ascii_case(expected.currency().code()) {
            return Ok(None);
        }
        let problem = format!(
            "{provider} reports {amount_minor} minor units of {currency} captured for payment {}, which is {} ({} minor units of {})",
            payment.id,
            expected,
            expected.minor(),
            expected.currency().code()
        );
        Ok(Some((payment, problem)))
    }

    /// Tells staff that a provider event contradicts `payment` (once per event).
    async fn alert_mismatch(&self, event: &ProviderEvent, payment: &Payment, problem: &str) {
        let alert = format!("event_mismatch:{}:{}", event.provider, event.id);
        let what = format!("{} event {} ({}) was not applied: {problem}", event.provider, event.id, event.kind);
        self.alert_staff(payment.order_id, Some(payment), &alert, &what).await;
    }

    async fn settled_by_event(
        &self,
        payment: &Payment,
        outcome: SettlementOutcome,
    ) -> Result<(EventOutcome, Option<String>)> {
        if self.settle_from_event(payment, outcome).await? {
            tracing::info!(payment = %payment.id, "authorised payment settled by the provider's event");
            Ok((EventOutcome::Applied, None))
        } else {
            let current = self.inner.storage.payment_by_id(payment.id).await?;
            let status = current.map_or_else(|| "gone".to_owned(), |p| p.status.to_string());
            Ok((EventOutcome::Ignored, Some(format!("payment {} is already {status}", payment.id))))
        }
    }

    async fn complete_from_event(
        &self,
        provider: &str,
        provider_payment_id: &str,
        outcome: PaymentOutcome,
    ) -> Result<(EventOutcome, Option<String>)> {
        let Some(payment) = self.inner.storage.payment_by_provider_id(provider, provider_payment_id).await? else {
            return Ok((EventOutcome::Ignored, Some(format!("no payment has {provider} id {provider_payment_id}"))));
        };
        let id = payment.id;
        let _guard = self.inner.payment_locks.lock(id).await;
        let owner = self.owner(payment.user_id).await?;
        let captured = outcome == PaymentOutcome::Succeeded;
        let notify = self.completion_notify(&outcome, owner);
        let at = self.now();
        match self
            .write(move |s| async move { s.complete_payment(id, outcome, Actor::System, at, notify, None).await })
            .await?
        {
            Transition::Applied(p) => {
                self.inner.wake.notify_one();
                if p.status == PaymentStatus::Failed {
                    self.close_now(&p).await;
                }
                let label = if captured { "success" } else { "declined" };
                metrics::counter!("som_payments_confirmed_total", "outcome" => label).increment(1);
                tracing::info!(payment = %p.id, order = %p.order_id, status = %p.status, "payment completed by the provider's event");
                Ok((EventOutcome::Applied, None))
            }
            // Authorised meanwhile (its own event or confirmation got there first): the
            // capture this event reports is of that authorisation.
            Transition::NotApplied(current) if captured && current.status == PaymentStatus::Authorized => {
                drop(_guard);
                // A pending payment's capture was checked to be of its whole amount.
                let amount = current.amount;
                self.settled_by_event(&current, SettlementOutcome::Captured { amount }).await
            }
            Transition::NotApplied(current) => {
                let was_captured = current.status.was_captured();
                if captured && !was_captured {
                    // Money for a payment SOM has ended: returned (and its provider side closed).
                    self.return_late_capture(&current).await?;
                    let at = self.now();
                    self.write(move |s| async move { s.mark_closed_at_provider(id, at).await }).await?;
                    return Ok((
                        EventOutcome::Applied,
                        Some(format!("payment {id} is {}: the captured money was refunded", current.status)),
                    ));
                }
                Ok((EventOutcome::Ignored, Some(format!("payment {id} is already {}", current.status))))
            }
        }
    }

    /// A provider event about a refund SOM made (`key` is its [`crate::domain::Refund::provider_idempotency_key`]).
    async fn own_refund_from_event(
        &self,
        payment_id: crate::domain::PaymentId,
        key: &str,
        report: &RefundReport,
    ) -> Result<OwnRefund> {
        let id = key.strip_prefix("som-refund-").and_then(|n| n.parse::<i64>().ok()).map(crate::domain::RefundId::new);
        let Some(refund) = (match id {
            Some(id) => self.inner.storage.refund_by_id(id).await?,
            None => None,
        }) else {
            return Ok(OwnRefund::Note(format!(
                "refund {} names no refund of SOM's ({key})",
                report.provider_refund_id
            )));
        };
        if refund.payment_id != payment_id {
            return Ok(OwnRefund::Note(format!("refund {} is not of payment {payment_id}", report.provider_refund_id)));
        }
        match refund.status {
            RefundStatus::Pending => {
                // The provider's id of it, from its own report: SOM asks about that refund and
                // never makes it again, however long after its first request.
                if refund.provider_refund_id.is_none() {
                    let (id, provider_refund_id) = (refund.id, report.provider_refund_id.clone());
                    self.write(move |s| async move { s.note_provider_refund(id, &provider_refund_id).await }).await?;
                }
                let refund = self.inner.storage.refund_by_id(refund.id).await?.unwrap_or(refund);
                let settled = match self.settle_refund(refund.clone()).await {
                    Ok(r) => r.status != RefundStatus::Pending,
                    Err(Error::PaymentDeclined(reason)) => {
                        let what = format!(
                            "refund {} of {} failed at the provider ({reason}); no money went back and the amount can be refunded again",
                            refund.id, refund.amount
                        );
                        let payment = self.inner.storage.payment_by_id(payment_id).await?;
                        let alert = format!("refund_failed:refund:{}", refund.id);
                        self.alert_staff(refund.order_id, payment.as_ref(), &alert, &what).await;
                        true
                    }
                    Err(e) => return Err(e),
                };
                Ok(if settled { OwnRefund::Finished } else { OwnRefund::Unchanged })
            }
            RefundStatus::Succeeded if report.failed => {
                // Trust only the provider's own answer, not the event's body.
                let provider_refund_id = refund.provider_refund_id.clone().unwrap_or(report.provider_refund_id.clone());
                let why = match self.inner.provider.refund_status(&provider_refund_id).await {
                    Err(ProviderError::Declined { message, .. }) => message,
                    Err(ProviderError::Transient(message)) => {
                        return Err(Error::Unavailable(format!("payment provider ({message})")));
                    }
                    Err(ProviderError::InvalidRequest(message)) => {
                        return Ok(OwnRefund::Note(format!("refund {}: {message}", refund.id)));
                    }
                    Ok(_) => {
                        return Ok(OwnRefund::Note(format!(
                            "refund {} is reported failed, but the provider says it stands",
                            refund.id
                        )));
                    }
                };
                let (id, reason, at) = (refund.id, why.clone(), self.now());
                match self.write(move |s| async move { s.reverse_refund(id, &reason, at).await }).await? {
                    Transition::Applied(reversed) => {
                        metrics::counter!("som_refunds_failed_after_success_total").increment(1);
                        let payment = self.inner.storage.payment_by_id(payment_id).await?;
                        let what = format!(
                            "refund {} of {} failed at the provider after it had succeeded ({why}): no money went back; the payment and order count it as not refunded again",
                            reversed.id, reversed.amount
                        );
                        let alert = format!("refund_failed:refund:{}", reversed.id);
                        self.alert_staff(reversed.order_id, payment.as_ref(), &alert, &what).await;
                        Ok(OwnRefund::Finished)
                    }
                    Transition::NotApplied(_) => Ok(OwnRefund::Unchanged),
                }
            }
            _ => Ok(OwnRefund::Unchanged),
        }
    }

    async fn refunds_from_event(
        &self,
        provider: &str,
        provider_payment_id: &str,
        reports: &[RefundReport],
    ) -> Result<(EventOutcome, Option<String>)> {
        let Some(payment) = self.inner.storage.payment_by_provider_id(provider, provider_payment_id).await? else {
            return Ok((EventOutcome::Ignored, Some(format!("no payment has {provider} id {provider_payment_id}"))));
        };
        let currency = payment.amount.currency();
        let mut recorded = 0;
        let mut notes = Vec::new();
        for report in reports {
            // SOM's own refunds: one still PENDING here is finished by asking the provider
            // where it stands (the event only says that it changed).
            if let Some(key) = &report.som_key {
                match self.own_refund_from_event(payment.id, key, report).await? {
                    OwnRefund::Finished => recorded += 1,
                    OwnRefund::Unchanged => {}
                    OwnRefund::Note(note) => notes.push(note),
                }
                continue;
            }
            // Providers on older API versions (Stripe before 2025-03-31) record the release of
            // an authorisation's uncaptured part (or of all of it, voided) as a refund: money
            // that was never taken, so never counted as returned.
            let released = payment.amount.minor() - payment.captured.minor();
            if payment.capture_method == CaptureMethod::Manual
                && payment.status != PaymentStatus::Authorized
                && released > 0
                && report.amount_minor == released
            {
                notes.push(format!(
                    "refund {} releases the {} that was authorised and not captured; not a refund",
                    report.provider_refund_id,
                    Money::from_minor(released, currency)
                ));
                continue;
            }
            if !report.succeeded {
                notes.push(format!("refund {} is not finished at {provider}", report.provider_refund_id));
                continue;
            }
            if !report.currency.eq_ignore_ascii_case(currency.code()) {
                notes.push(format!(
                    "refund {} is in {}, the payment in {currency}",
                    report.provider_refund_id, report.currency
                ));
                continue;
            }
            let record = NewRefundRecord {
                late_capture: false,
                payment_id: payment.id,
                amount: Money::from_minor(report.amount_minor, currency),
                reason: Some(format!("refunded at {provider}")),
                actor: Actor::System,
                request_key: Some(format!("provider|{provider}|{}", report.provider_refund_id)),
                provider_refund_id: Some(report.provider_refund_id.clone()),
                created_at: self.now(),
            };
            match self.write(move |s| async move { s.reserve_refund(record).await }).await? {
                RefundReserve::Reserved(refund) => {
                    self.settle_refund(refund).await?;
                    recorded += 1;
                }
                // Recorded before; finished now if a crash left it pending.
                RefundReserve::Existing(refund) if refund.status == RefundStatus::Pending => {
                    self.settle_refund(refund).await?;
                    recorded += 1;
                }
                RefundReserve::Existing(_) => {}
                RefundReserve::Refused(current) => {
                    tracing::error!(
                        payment = %current.id, refund = %report.provider_refund_id, amount = report.amount_minor,
                        status = %current.status, left = %current.refundable(),
                        "{provider} reports a refund larger than what SOM can still refund on the payment"
                    );
                    notes.push(format!(
                        "refund {} exceeds what is left to refund on payment {} ({})",
                        report.provider_refund_id,
                        current.id,
                        current.refundable()
                    ));
                }
            }
        }
        let detail = (!notes.is_empty()).then(|| notes.join("; "));
        if recorded > 0 {
            Ok((EventOutcome::Applied, detail))
        } else {
            Ok((EventOutcome::Ignored, detail.or_else(|| Some("no refund SOM does not already have".to_owned()))))
        }
    }
}
