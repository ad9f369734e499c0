//! The [`PaymentProvider`] trait and the scriptable [`MockProvider`].
//!
//! The trait follows the calls of a card processor's payment-intent flow: *initiate* (create an
//! intent for an amount, deduplicated by an idempotency key), *confirm* (capture it) and
//! *refund* (return some or all of a capture, deduplicated by an idempotency key). A Stripe
//! PaymentIntents provider maps `initiate` to `POST /v1/payment_intents` with the
//! `Idempotency-Key` header, `confirm` to `POST /v1/payment_intents/{id}/confirm` and `refund`
//! to `POST /v1/refunds`.

mod mock;

use async_trait::async_trait;

pub use mock::{MockOutcome, MockProvider};

use crate::domain::{Money, OrderId};

/// What SOM asks a provider to set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    /// The order being paid.
    pub order_id: OrderId,
    /// The order's total.
    pub amount: Money,
    /// Which attempt on this order (1, 2, …).
    pub attempt: u32,
    /// `som-order-{order}-attempt-{n}`: the same attempt always sends the same key, so the
    /// provider returns the same payment instead of creating a second one.
    pub idempotency_key: String,
    /// The payment method: a provider-specific token (`mock_success`, `pm_card_visa`).
    pub method: String,
}

/// The provider's handle on a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderPayment {
    /// The provider's id for it.
    pub provider_payment_id: String,
}

/// The provider's answer to a successful confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCapture {
    /// The provider's id of the capture (charge), for reconciliation.
    pub capture_id: String,
}

/// What SOM asks a provider to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The provider's id of the captured payment.
    pub provider_payment_id: String,
    /// How much, in the payment's currency.
    pub amount: Money,
    /// `som-refund-{id}`: the same refund always sends the same key, so a retry (after a
    /// timeout, or by the worker after a crash) never returns the money twice.
    pub idempotency_key: String,
    /// Why, when the caller said.
    pub reason: Option<String>,
}

/// The provider's answer to a successful refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRefund {
    /// The provider's id for the refund.
    pub provider_refund_id: String,
}

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The payment was refused; retrying the same payment will not help.
    #[error("declined ({code}): {message}")]
    Declined {
        /// A machine-readable reason (`card_declined`, `insufficient_funds`).
        code: String,
        /// Words for the payer.
        message: String,
    },
    /// The request itself was wrong (an unknown payment method).
    #[error("{0}")]
    InvalidRequest(String),
    /// A timeout, an outage, a rate limit: the same call may succeed later.
    #[error("transient provider failure: {0}")]
    Transient(String),
}

/// A payment processor. Implementations must be idempotent on
/// [`PaymentRequest::idempotency_key`] and on repeated confirmation of the same payment.
#[async_trait]
pub trait PaymentProvider: Send + Sync + std::fmt::Debug {
    /// Short name recorded on each payment (`mock`, `stripe`).
    fn name(&self) -> &str;

    /// The payment methods it takes, for documentation (the API schema lists them); empty when
    /// they cannot be listed (card tokens, say).
    fn methods(&self) -> Vec<String> {
        Vec::new()
    }

    /// `Err` with a message for a payment method this provider cannot use, checked before any
    /// call. The default accepts everything and leaves the judgement to `initiate`.
    fn check_method(&self, method: &str) -> Result<(), String> {
        let _ = method;
        Ok(())
    }

    /// Creates (or, for a repeated key, returns) the provider-side payment.
    async fn initiate(&self, request: &PaymentRequest) -> Result<ProviderPayment, ProviderError>;

    /// Captures the payment. Confirming an already captured payment succeeds again with the
    /// same capture.
    async fn confirm(&self, provider_payment_id: &str) -> Result<ProviderCapture, ProviderError>;

    /// [`PaymentProvider::confirm`], told how many earlier confirmations of this payment failed
    /// transiently (SOM stores the count, so it is the same in every process). The default
    /// ignores the count.
    async fn confirm_attempt(
        &self,
        provider_payment_id: &str,
        transient_failures: u32,
    ) -> Result<ProviderCapture, ProviderError> {
        let _ = transient_failures;
        self.confirm(provider_payment_id).await
    }

    /// Returns `request.amount` of a captured payment. Must be idempotent on
    /// [`RefundRequest::idempotency_key`]: a repeated key answers with the same refund.
    async fn refund(&self, request: &RefundRequest) -> Result<ProviderRefund, ProviderError>;
}
