//! Capturing and voiding authorised payments. Each handler extracts, calls one OrderSystem
//! method, renders; who may do what, and when, is decided in som-core.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use som_core::domain::PaymentId;
use utoipa::ToSchema;

use crate::AppState;
use crate::dto::{Decimal, PaymentResponse};
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, IdempotencyHeader, IdempotencyKey, OptionalJsonBody, path_id};

/// `POST /payments/{id}/capture/`; the body may be left out to capture everything authorised.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequestBody {
    /// How much, in the payment's currency with at most its minor digits, above zero and at
    /// most what was authorised; everything authorised when absent or `null`. What is not
    /// captured is released.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "80.00", pattern = "^[0-9]{1,15}(\\.[0-9]{1,3})?$")]
    pub amount: Option<Decimal>,
}

/// Capture an authorised payment, fully or in part (staff only): the payment becomes SUCCESS
/// with its `captured_amount`, the order PAID, the rest of the hold is released; refunds then
/// apply to what was captured. Once per payment: of concurrent captures (or a capture and a
/// void) exactly one wins. If the provider cannot be reached the capture is finished
/// automatically with the same provider idempotency key (503) — do not ask again.
#[utoipa::path(post, path = "/api/v1/payments/{id}/capture/", tag = "payments", security(("bearer" = [])),
    request_body(content = Option<CaptureRequestBody>, description = "Optional: leave it out to capture everything authorised"),
    params(("id" = i64, Path, minimum = 1, description = "Payment id"), IdempotencyHeader),
    responses(
        (status = 200, description = "The payment, SUCCESS with its captured_amount", body = PaymentResponse),
        (status = 400, description = "The amount is not above zero, or more than was authorised", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "The provider declined the capture; the payment stays AUTHORIZED", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may capture", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not AUTHORIZED (already captured, voided, expired, not yet authorised), or another capture or void of it is under way", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider could not be reached; the capture is finished automatically", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn capture_payment(
    State(s): State<AppState>,
    Auth(caller): Auth,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    OptionalJsonBody(req): OptionalJsonBody<CaptureRequestBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id: PaymentId = path_id(&id, "payment")?;
    let amount = req.amount.map(Decimal::into_text);
    let payment =
        s.som.capture_payment(caller, id).maybe_amount(amount.as_deref()).maybe_idempotency_key(key.as_deref()).await?;
    Ok((StatusCode::OK, Json(PaymentResponse::from(payment))))
}

/// Release an authorised payment without taking money (staff, or the payment's owner): the
/// payment becomes VOIDED, the order CANCELLED, the hold is released at the provider.
#[utoipa::path(post, path = "/api/v1/payments/{id}/void/", tag = "payments", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Payment id"), IdempotencyHeader),
    responses(
        (status = 200, description = "The payment, VOIDED", body = PaymentResponse),
        (status = 404, description = "No such payment, or another user's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not AUTHORIZED, or a capture of it is under way", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider could not be reached; the void is finished automatically", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn void_payment(
    State(s): State<AppState>,
    Auth(caller): Auth,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
) -> Result<Json<PaymentResponse>, ApiError> {
    let id: PaymentId = path_id(&id, "payment")?;
    Ok(Json(s.som.void_payment(caller, id).maybe_idempotency_key(key.as_deref()).await?.into()))
}
