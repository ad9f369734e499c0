//! Closing the provider's side of payments SOM has ended. A payment SOM ends without money
//! (its order cancelled, the payer declined; a new attempt then replaces it) is closed at the
//! provider too — a Stripe PaymentIntent cancelled — so that whatever the payer was given
//! (`client_secret`, a 3-D Secure page) can no longer take money. Each close is recorded; one
//! that could not be made (the provider down, a crash in between) is made by the dispatcher's
//! sweep, so none is forgotten. Money the provider took anyway is returned at once.

use super::OrderSystem;
use crate::domain::{Actor, Payment, PaymentStatus, RefundStatus};
use crate::error::{Error, Result};
use crate::payment::{Cancellation, ProviderError};
use crate::storage::{NewRefundRecord, RefundReserve};

/// How many payments one sweep closes at most.
const SWEEP_BATCH: u32 = 100;

impl OrderSystem {
    /// Closes every ended payment whose provider side is not yet recorded as closed (oldest
    /// first, up to 100); how many were closed. The dispatcher runs this periodically; a
    /// payment the provider cannot be reached for is left for the next sweep.
    pub async fn close_ended_payments(&self) -> Result<usize> {
        let open = self
            .write(|s| async move { s.payments_open_at_provider(&PaymentStatus::ENDED_UNCAPTURED, SWEEP_BATCH).await })
            .await?;
        let mut closed = 0;
        for payment in open {
            match self.close_at_provider(&payment).await {
                Ok(()) => closed += 1,
                Err(e) => tracing::warn!(payment = %payment.id, error = %e, "not closed at the provider yet"),
            }
        }
        Ok(closed)
    }

    /// [`Self::close_at_provider`] right after SOM ended `payment`; a failure is logged and
    /// left to the sweep, never returned to the caller whose request ended it.
    pub(super) async fn close_now(&self, payment: &Payment) {
        if let Err(e) = self.close_at_provider(payment).await {
            tracing::warn!(payment = %payment.id, error = %e, "not closed at the provider yet; the dispatcher will retry");
        }
    }

    /// Closes `payment` (which SOM holds as ended) at the provider and records it. When the
    /// provider says it took the money, the money is refunded first.
    pub(super) async fn close_at_provider(&self, payment: &Payment) -> Result<()> {
        match self.inner.provider.cancel(&payment.provider_payment_id).await {
            Ok(Cancellation::Cancelled) => {}
            Ok(Cancellation::Captured) => self.return_late_capture(payment).await?,
            Err(ProviderError::Transient(message)) => {
                return Err(Error::Unavailable(format!("payment provider ({message})")));
            }
            Err(refused) => tracing::warn!(
                payment = %payment.id, provider_payment_id = %payment.provider_payment_id, error = %refused,
                "the provider refused to close an ended payment; it is not asked again"
            ),
        }
        let (id, at) = (payment.id, self.now());
        self.write(move |s| async move { s.mark_closed_at_provider(id, at).await }).await?;
        metrics::counter!("som_payments_closed_at_provider_total").increment(1);
        Ok(())
    }

    /// Returns money the provider captured for a payment SOM holds as ended (a payer who
    /// finished 3-D Secure after the order was cancelled, say): the whole amount, recorded as a
    /// refund of its own (reason "captured … after the payment was CANCELLED", made once however
    /// often this is called) and settled like any refund — the customer is told as for any
    /// refund; staff are alerted, and it is counted in `som_late_captures_total`. The payment
    /// and order keep their statuses.
    pub(super) async fn return_late_capture(&self, payment: &Payment) -> Result<()> {
        let record = NewRefundRecord {
            late_capture: true,
            payment_id: payment.id,
            amount: payment.amount,
            reason: Some(format!("captured by the provider after the payment was {}", payment.status)),
            actor: Actor::System,
            request_key: Some(format!("late-capture|{}", payment.id)),
            provider_refund_id: None,
            created_at: self.now(),
        };
        let refund = match self.write(move |s| async move { s.reserve_refund(record).await }).await? {
            RefundReserve::Reserved(refund) | RefundReserve::Existing(refund) => refund,
            RefundReserve::Refused(current) => {
                tracing::warn!(payment = %current.id, status = %current.status, "money captured late could not be set aside for a refund");
                return Ok(());
            }
        };
        let id = refund.id;
        let (outcome, what) = match self.settle_refund(refund).await {
            Ok(r) if r.status == RefundStatus::Succeeded => (
                "refunded",
                format!(
                    "the payment provider captured {} for payment {}, which SOM had ended ({}); it was refunded automatically (refund {id})",
                    payment.amount, payment.id, payment.status
                ),
            ),
            Ok(_) => (
                "refund_pending",
                format!(
                    "the payment provider captured {} for payment {}, which SOM had ended ({}); refund {id} returning it is pending at the provider",
                    payment.amount, payment.id, payment.status
                ),
            ),
            Err(Error::PaymentDeclined(reason)) => (
                "refund_refused",
                format!(
                    "the payment provider captured {} for payment {}, which SOM had ended ({}), and refused to refund it ({reason}): refund it by hand",
                    payment.amount, payment.id, payment.status
                ),
            ),
            Err(e) => return Err(e),
        };
        // One alert per outcome: a refund pending now and refused later is told twice.
        let alert = format!("late_capture:{outcome}:payment:{}", payment.id);
        self.alert_staff(payment.order_id, Some(payment), &alert, &what).await;
        metrics::counter!("som_late_captures_total", "outcome" => outcome).increment(1);
        Ok(())
    }
}
