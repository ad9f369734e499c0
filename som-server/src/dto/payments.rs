//! Payments and refunds: requests and responses.

use super::*;

/// `POST /payments/initiate/` (and `POST /payments/`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct InitiatePaymentRequest {
    /// The order to pay.
    pub order_id: IdInput,
    /// Payment method, one of those the configured provider takes (listed in the document
    /// served by the running server); with the mock provider: mock_success (default),
    /// mock_decline, mock_insufficient_funds, mock_transient_error, mock_refund_decline,
    /// mock_capture_decline.
    #[serde(default)]
    #[schema(max_length = 100)]
    pub method: Option<String>,
    /// `automatic`: confirmation captures the money; `manual`: confirmation only authorises
    /// it, and staff capture all or part later (`POST /payments/{id}/capture/`) or void it.
    /// Default: the server's `SOM_CAPTURE_METHOD` (itself `automatic`).
    #[serde(default)]
    #[schema(value_type = Option<crate::schema::CaptureMethodSchema>, example = "manual")]
    pub capture: Option<CaptureMethodInput>,
}

/// `automatic` or `manual`; anything else is a field error.
#[derive(Debug, Clone, Copy)]
pub struct CaptureMethodInput(pub som_core::domain::CaptureMethod);

impl<'de> Deserialize<'de> for CaptureMethodInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        // Exactly as documented (the library's parser also takes other cases and spaces).
        som_core::domain::CaptureMethod::parse(&raw)
            .filter(|m| m.as_str() == raw)
            .map(CaptureMethodInput)
            .ok_or_else(|| serde::de::Error::custom("must be automatic or manual"))
    }
}

/// An ISO 4217 currency SOM accepts.
#[derive(Debug)]
pub struct CurrencyCode;

impl utoipa::PartialSchema for CurrencyCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .enum_values(Some(som_core::domain::Currency::all().map(|c| c.code())))
            .description(Some("ISO 4217 code; prices may have as many decimals as it has minor digits"))
            .into()
    }
}

impl ToSchema for CurrencyCode {}

/// `POST /payments/confirm/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfirmPaymentRequest {
    /// The payment to confirm.
    pub payment_id: IdInput,
}

/// A payment.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentResponse {
    /// Payment id.
    #[schema(example = 7)]
    pub id: i64,
    /// The order it pays.
    #[schema(example = 1001)]
    pub order: i64,
    /// Provider name.
    #[schema(example = "mock")]
    pub provider: String,
    /// SOM's unique reference for this attempt.
    #[schema(example = "txn_3f9a1c2b7d4e")]
    pub transaction_id: String,
    /// The provider's id for the payment.
    #[schema(example = "mock_pi_1001_1")]
    pub provider_payment_id: String,
    /// The payment method asked for.
    #[schema(example = "mock_success")]
    pub method: String,
    /// The amount, equal to the order total: what was authorised.
    #[schema(example = "250.00")]
    pub amount: String,
    /// `automatic` (confirmation captures) or `manual` (confirmation authorises; captured or
    /// voided later).
    #[schema(example = "automatic")]
    pub capture_method: String,
    /// What was authorised (the amount).
    #[schema(example = "250.00")]
    pub authorized_amount: String,
    /// What was captured: the whole amount once an automatic payment succeeded, what a manual
    /// capture took (perhaps less); `0.00` before. Refunds apply to it.
    #[schema(example = "250.00")]
    pub captured_amount: String,
    /// While AUTHORIZED: when the authorisation runs out (it is then released and EXPIRED).
    #[schema(example = "2026-12-07T09:16:30Z")]
    pub authorization_expires_at: Option<DateTime<Utc>>,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
    /// How much of it has been refunded.
    #[schema(example = "0.00")]
    pub refunded_amount: String,
    /// PENDING, AUTHORIZED, SUCCESS, FAILED, CANCELLED, PARTIALLY_REFUNDED, REFUNDED, VOIDED or
    /// EXPIRED.
    #[schema(value_type = crate::schema::PaymentStatusSchema, example = "PENDING")]
    pub status: String,
    /// Why it failed, when it did.
    pub failure_reason: Option<String>,
    /// For a front end that finishes the payment with the provider's own library (Stripe.js
    /// `confirmCardPayment` / `handleNextAction`); `null` for the mock provider.
    #[schema(example = "pi_3Q0abc_secret_xyz")]
    pub client_secret: Option<String>,
    /// While PENDING: what the payer must do before the payment can complete, in the
    /// provider's own words (Stripe's `next_action`, e.g. `{"type": "use_stripe_sdk", …}` or
    /// `{"type": "redirect_to_url", "redirect_to_url": {"url": …}}` for 3-D Secure). Finish it
    /// with `client_secret`; the payment completes when the provider reports the outcome (its
    /// webhook) or when it is confirmed again.
    #[schema(value_type = Option<Object>, example = json!({"type": "use_stripe_sdk"}))]
    pub next_action: Option<serde_json::Value>,
    /// When it was initiated.
    #[schema(example = "2026-11-30T09:16:00Z")]
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    #[schema(example = "2026-11-30T09:16:30Z")]
    pub updated_at: DateTime<Utc>,
}

impl From<Payment> for PaymentResponse {
    fn from(p: Payment) -> Self {
        PaymentResponse {
            id: p.id.get(),
            order: p.order_id.get(),
            provider: p.provider,
            transaction_id: p.transaction_id,
            provider_payment_id: p.provider_payment_id,
            method: p.method,
            amount: p.amount.amount_string(),
            capture_method: p.capture_method.as_str().to_owned(),
            authorized_amount: p.amount.amount_string(),
            captured_amount: p.captured.amount_string(),
            authorization_expires_at: p.authorization_expires_at,
            refunded_amount: p.refunded.amount_string(),
            currency: p.amount.currency().code().to_owned(),
            status: p.status.as_str().to_owned(),
            failure_reason: p.failure_reason,
            client_secret: p.client_secret,
            next_action: p.next_action,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// What SOM did with a provider's event.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderEventReceipt {
    /// The provider's event id.
    #[schema(example = "evt_1Q0abc")]
    pub id: String,
    /// The provider's event type.
    #[serde(rename = "type")]
    #[schema(example = "payment_intent.succeeded")]
    pub kind: String,
    /// applied (a payment completed, a refund recorded), duplicate (applied before; nothing
    /// changed) or ignored (another event type, an unknown payment, or already done).
    #[schema(example = "applied")]
    pub outcome: String,
    /// Why it was ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<som_core::EventReceipt> for ProviderEventReceipt {
    fn from(r: som_core::EventReceipt) -> Self {
        ProviderEventReceipt { id: r.id, kind: r.kind, outcome: r.outcome.as_str().to_owned(), detail: r.detail }
    }
}

/// `POST /payments/{id}/refunds/`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequestBody {
    /// How much, in the payment's currency with at most its minor digits; everything not yet
    /// refunded (nor being refunded) when absent. `null` is refused, so that a client's unset
    /// variable never refunds a whole payment.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "1.00", pattern = "^[0-9]{1,15}(\\.[0-9]{1,3})?$")]
    pub amount: Option<Decimal>,
    /// Why (at most 500 characters); recorded and told to the customer.
    #[serde(default)]
    #[schema(example = "damaged in transit", max_length = 500)]
    pub reason: Option<String>,
}

/// A field that may be left out but, when given, must not be `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    Option::<Decimal>::deserialize(d)?
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("must not be null; leave it out to refund everything not yet refunded"))
}

/// A refund.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundResponse {
    /// Refund id.
    #[schema(example = 3)]
    pub id: i64,
    /// The payment refunded.
    #[schema(example = 7)]
    pub payment: i64,
    /// The payment's order.
    #[schema(example = 1001)]
    pub order: i64,
    /// How much.
    #[schema(example = "1.00")]
    pub amount: String,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
    /// PENDING (the provider has not answered yet; finished automatically), SUCCEEDED or FAILED.
    #[schema(value_type = crate::schema::RefundStatusSchema, example = "SUCCEEDED")]
    pub status: String,
    /// The provider's id for it.
    pub provider_refund_id: Option<String>,
    /// Why it was made.
    pub reason: Option<String>,
    /// Why the provider refused it.
    pub failure_reason: Option<String>,
    /// Who asked: `user:<id>` or `system`.
    #[schema(example = "user:1")]
    pub actor: String,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Refund> for RefundResponse {
    fn from(r: Refund) -> Self {
        RefundResponse {
            id: r.id.get(),
            payment: r.payment_id.get(),
            order: r.order_id.get(),
            amount: r.amount.amount_string(),
            currency: r.amount.currency().code().to_owned(),
            status: r.status.as_str().to_owned(),
            provider_refund_id: r.provider_refund_id,
            reason: r.reason,
            failure_reason: r.failure_reason,
            actor: r.actor.to_string(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A refund status (documentation).
#[derive(Debug, ToSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms, dead_code)]
pub enum RefundStatusSchema {
    /// Amount set aside; the provider has not answered yet.
    PENDING,
    /// The money was returned.
    SUCCEEDED,
    /// The provider refused.
    FAILED,
}
