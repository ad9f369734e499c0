//! The [`PaymentProvider`] trait and the scriptable [`MockProvider`].
//!
//! The trait follows the calls of a card processor's payment-intent flow: *initiate* (create an
//! intent for an amount, deduplicated by an idempotency key), *confirm* (capture it) and
//! *refund* (return some or all of a capture, deduplicated by an idempotency key). A Stripe
//! PaymentIntents provider maps `initiate` to `POST /v1/payment_intents` with the
//! `Idempotency-Key` header, `confirm` to `POST /v1/payment_intents/{id}/confirm` and `refund`
//! to `POST /v1/refunds`; [`StripeProvider`] does exactly that.
//!
//! Providers also report outcomes on their own (a payer finishing 3-D Secure, a refund made in
//! the provider's dashboard): [`PaymentProvider::parse_event`] turns a signed notification into
//! a [`ProviderEvent`], which `OrderSystem::apply_provider_event` applies once.

#[cfg(all(feature = "stripe", feature = "test-support"))]
pub(crate) mod localstripe;
mod mock;
#[cfg(feature = "stripe")]
pub mod stripe;

use async_trait::async_trait;

pub use mock::{MockOutcome, MockProvider};
#[cfg(feature = "stripe")]
pub use stripe::{StripeConfig, StripeProvider};

use crate::domain::{CaptureMethod, Money, OrderId};

/// The longest payment method name (a provider's token such as `pm_card_visa`) accepted.
pub const MAX_METHOD_CHARS: usize = 100;

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
    /// SOM's own reference for the attempt (the payment's `transaction_id`), for the
    /// provider's records.
    pub reference: String,
    /// The payment method: a provider-specific token (`mock_success`, `pm_card_visa`); `None`
    /// when the payer will choose it with the provider's own client library.
    pub method: Option<String>,
    /// `Manual`: confirmation only authorises; [`PaymentProvider::capture`] takes the money.
    pub capture: CaptureMethod,
}

/// The provider's handle on a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderPayment {
    /// The provider's id for it.
    pub provider_payment_id: String,
    /// The secret a front end uses with the provider's client library (Stripe's
    /// `client_secret`), when the provider has one.
    pub client_secret: Option<String>,
}

/// The provider's answer to a confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// The money was captured.
    Captured(ProviderCapture),
    /// Manual capture: the money is held for a later [`PaymentProvider::capture`].
    Authorized,
    /// Not finished yet: the payer must act first (`next_action`, e.g. 3-D Secure), or the
    /// provider is still processing (`None`). The payment stays PENDING; the outcome arrives
    /// as a [`ProviderEvent`] or with a later confirmation.
    Pending {
        /// What the payer must do, in the provider's own words.
        next_action: Option<serde_json::Value>,
    },
}

/// The provider's answer to a successful confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCapture {
    /// The provider's id of the capture (charge), for reconciliation.
    pub capture_id: String,
}

/// What SOM asks a provider to capture of an authorised payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRequest {
    /// The provider's id of the authorised payment.
    pub provider_payment_id: String,
    /// How much, at most what was authorised; the rest is released.
    pub amount: Money,
    /// `som-capture-{payment}`: every try of the capture sends the same key, so a retry
    /// (after a timeout, or by the dispatcher after a crash) never captures twice.
    pub idempotency_key: String,
}

/// The provider's answer to closing a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// Closed (now or before): it can no longer take money.
    Cancelled,
    /// The money was taken before it could be closed.
    Captured,
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
    /// True while the provider is still returning the money (Stripe's `pending` and
    /// `requires_action`): SOM keeps the refund PENDING and asks again with
    /// [`PaymentProvider::refund_status`] until the provider says it succeeded or failed.
    pub pending: bool,
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

    /// The payment method used when the caller names none (`None`: the payer chooses it with
    /// the provider's client library, and the payment completes by a [`ProviderEvent`]).
    fn default_method(&self) -> Option<&str> {
        None
    }

    /// Captures the payment. Confirming an already captured payment succeeds again with the
    /// same capture.
    async fn confirm(&self, provider_payment_id: &str) -> Result<Confirmation, ProviderError>;

    /// [`PaymentProvider::confirm`], told how many earlier confirmations of this payment failed
    /// transiently (SOM stores the count, so it is the same in every process). The default
    /// ignores the count.
    async fn confirm_attempt(
        &self,
        provider_payment_id: &str,
        transient_failures: u32,
    ) -> Result<Confirmation, ProviderError> {
        let _ = transient_failures;
        self.confirm(provider_payment_id).await
    }

    /// Whether [`PaymentRequest::capture`] may be [`CaptureMethod::Manual`]. The default: no.
    fn supports_manual_capture(&self) -> bool {
        false
    }

    /// Captures `request.amount` of an authorised payment and releases the rest. Must be
    /// idempotent on [`CaptureRequest::idempotency_key`]; capturing one already captured
    /// answers with that capture. `Declined` when the provider refuses (the authorisation
    /// stays), `InvalidRequest` when it can no longer be captured (released or expired there).
    async fn capture(&self, request: &CaptureRequest) -> Result<ProviderCapture, ProviderError> {
        let _ = request;
        Err(ProviderError::InvalidRequest(format!("{} cannot capture a payment later", self.name())))
    }

    /// Closes the provider's side of a payment SOM has ended (its order cancelled, the payer
    /// declined, replaced by a new attempt), so that it can no longer be completed with what
    /// the payer was given (Stripe: cancels the PaymentIntent). Closing one already closed
    /// answers `Cancelled` again; `Captured` when the provider took the money after all (SOM
    /// then returns it). The default, for providers whose payments cannot be completed
    /// outside SOM, has nothing to close.
    async fn cancel(&self, provider_payment_id: &str) -> Result<Cancellation, ProviderError> {
        let _ = provider_payment_id;
        Ok(Cancellation::Cancelled)
    }

    /// Returns `request.amount` of a captured payment. Must be idempotent on
    /// [`RefundRequest::idempotency_key`]: a repeated key answers with the same refund.
    async fn refund(&self, request: &RefundRequest) -> Result<ProviderRefund, ProviderError>;

    /// Where a refund made earlier stands at the provider: succeeded (`pending` false), still
    /// pending, or `Declined` when it failed or was canceled. The default, for providers whose
    /// refunds finish when they are made, reports it succeeded.
    async fn refund_status(&self, provider_refund_id: &str) -> Result<ProviderRefund, ProviderError> {
        Ok(ProviderRefund { provider_refund_id: provider_refund_id.to_owned(), pending: false })
    }

    /// Checks a notification the provider sent (its raw body and signature header) and reads
    /// it. The default knows no events.
    fn parse_event(&self, payload: &[u8], signature: &str) -> Result<ProviderEvent, EventError> {
        let _ = (payload, signature);
        Err(EventError::Unsupported(self.name().to_owned()))
    }
}

/// Why a provider's notification was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// This provider does not send events, or receiving them is not configured.
    #[error("{0} events are not accepted here")]
    Unsupported(String),
    /// Unsigned, wrongly signed, stale or unreadable: nothing is applied.
    #[error("{0}")]
    Rejected(String),
}

/// An outcome the provider reported on its own, read from a signed notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// Which provider (`stripe`): events are recorded per provider.
    pub provider: String,
    /// The provider's id of the event: each is applied once.
    pub id: String,
    /// The provider's event type (`payment_intent.succeeded`).
    pub kind: String,
    /// What it means for SOM.
    pub effect: EventEffect,
}

/// What a provider event means for SOM's payments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventEffect {
    /// The payment was captured (a payer finished 3-D Secure, a late capture). SOM applies it
    /// only when the amount and currency are the payment's own.
    PaymentSucceeded {
        /// The provider's id of the payment.
        provider_payment_id: String,
        /// How much the provider says it captured, in minor units of `currency`.
        amount_minor: i64,
        /// ISO 4217 code, upper case.
        currency: String,
    },
    /// The event names a payment but contradicts itself (a "succeeded" event whose payment is
    /// not succeeded, or that carries no amount): nothing is applied, and staff are told.
    Contradictory {
        /// The provider's id of the payment.
        provider_payment_id: String,
        /// What does not fit.
        problem: String,
    },
    /// The payment was authorised (manual capture): `amount_minor` is held for capture.
    PaymentAuthorized {
        /// The provider's id of the payment.
        provider_payment_id: String,
        /// How much is held, in minor units of `currency`.
        amount_minor: i64,
        /// ISO 4217 code, upper case.
        currency: String,
    },
    /// The payment was canceled at the provider (an authorisation released there, or run out
    /// when `expired`).
    PaymentCanceled {
        /// The provider's id of the payment.
        provider_payment_id: String,
        /// True when the provider released it because the authorisation ran out.
        expired: bool,
    },
    /// The payment was declined.
    PaymentFailed {
        /// The provider's id of the payment.
        provider_payment_id: String,
        /// Why, for the payer.
        message: String,
    },
    /// Refunds exist at the provider for the payment (some perhaps made outside SOM).
    Refunded {
        /// The provider's id of the payment.
        provider_payment_id: String,
        /// The refunds the event names.
        refunds: Vec<RefundReport>,
    },
    /// Nothing SOM acts on (another event type).
    Ignored,
}

/// One refund as a provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReport {
    /// The provider's id of the refund.
    pub provider_refund_id: String,
    /// How much, in minor units of `currency`.
    pub amount_minor: i64,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// True once the money is returned (refunds still pending are reported again later).
    pub succeeded: bool,
    /// True when the refund failed or was canceled: no money was returned.
    pub failed: bool,
    /// SOM's idempotency key for it when SOM made it ([`RefundRequest::idempotency_key`]):
    /// SOM records its own refunds itself.
    pub som_key: Option<String>,
}
