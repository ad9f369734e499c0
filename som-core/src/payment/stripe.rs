//! Stripe: PaymentIntents, Refunds and signed events, over Stripe's HTTP API.
//!
//! | SOM | Stripe |
//! |---|---|
//! | initiate | `POST /v1/payment_intents` (amount in minor units, currency, `payment_method` when given, `capture_method=manual` for manual capture, `payment_method_types[]=card`, metadata `som_order_id`, `som_attempt`, `som_reference`), `Idempotency-Key: som-order-<id>-attempt-<n>` |
//! | confirm | `POST /v1/payment_intents/<id>/confirm`; on a state error, `GET` the intent and report its state |
//! | capture | `POST /v1/payment_intents/<id>/capture` (`amount_to_capture`), `Idempotency-Key: som-capture-<payment>`; on a state error, `GET` the intent: `succeeded` is captured already |
//! | cancel | `POST /v1/payment_intents/<id>/cancel`, `Idempotency-Key: som-cancel-<id>`; on a state error, `GET` the intent: `canceled` is done, `succeeded` means the money was taken |
//! | refund | `POST /v1/refunds` (`payment_intent`, `amount`, metadata `som_refund` and `som_reason`), `Idempotency-Key: som-refund-<id>` |
//! | events | `Stripe-Signature` checked (HMAC-SHA256 over `t.payload`, five minutes' tolerance, any `v1`), then `payment_intent.succeeded`, `payment_intent.amount_capturable_updated`, `payment_intent.canceled`, `payment_intent.payment_failed`, `charge.refunded`, `refund.created`, `refund.updated`, `charge.refund.updated` |
//!
//! Outcomes: an intent that `succeeded` is captured; `requires_capture` is authorised (manual
//! capture); `requires_action` (3-D Secure) and
//! `processing` leave the payment PENDING with Stripe's `next_action`, and the front end
//! finishes it with the payment's `client_secret` (Stripe.js); HTTP 402 (a card error) is a
//! decline with Stripe's `decline_code` (or `code`) and message; 429, 5xx, timeouts and
//! connection failures are transient (nothing changed; retry); 401/403 (a wrong key) are
//! reported as transient too, so that nothing is recorded as declined while the operator fixes
//! the key; other 4xx are invalid requests.
//!
//! This is a thin client on reqwest (already built for webhook notifications) rather than the
//! `async-stripe` crate, for four endpoints. Measured on a 2-core build machine (release
//! builds of a minimal program creating one PaymentIntent, from an empty target directory, one
//! after the other under the same background load): `async-stripe` 0.37
//! (`runtime-tokio-hyper-rustls`) took 555 s and made a 16.3 MB binary; reqwest 0.13 with the
//! features used here took 98 s and made 4.8 MB. `async-stripe` 0.37 also brings hyper 0.14,
//! http 0.2 and rustls 0.21 — second major versions beside the hyper 1, http 1 and rustls 0.23
//! SOM already builds — and its 1.0 line is still alpha.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{
    Cancellation, CaptureRequest, Confirmation, EventEffect, EventError, PaymentProvider, PaymentRequest,
    ProviderCapture, ProviderError, ProviderEvent, ProviderPayment, ProviderRefund, RefundReport, RefundRequest,
};
use crate::error::{Error, Result};
use crate::util::Secret;

/// Stripe's own API, the default base URL.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";
/// The signature header Stripe sends with events.
pub const SIGNATURE_HEADER: &str = "Stripe-Signature";
/// How far an event's signed timestamp may be from now.
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);

/// How to reach Stripe.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// `sk_live_…` or `sk_test_…` (a restricted key with PaymentIntents and Refunds write
    /// access is enough).
    pub secret_key: Secret,
    /// The endpoint's signing secret (`whsec_…`); without it no events are accepted.
    pub webhook_secret: Option<Secret>,
    /// `https://api.stripe.com`, or a Stripe-compatible server for tests.
    pub api_base: String,
    /// Longest time one API call may take before it counts as a transient failure.
    pub timeout: Duration,
}

/// The Stripe payment provider.
#[derive(Clone)]
pub struct StripeProvider {
    client: reqwest::Client,
    base: reqwest::Url,
    key: Secret,
    webhook_secret: Option<Secret>,
}

impl std::fmt::Debug for StripeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeProvider")
            .field("api_base", &self.base.as_str())
            .field("secret_key", &"<redacted>")
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Stripe's error object (`{"error": {...}}`).
#[derive(Debug, Default, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ApiError,
}

/// A failed call: Stripe's answer, or no answer.
#[derive(Debug)]
enum Failure {
    Api { status: u16, error: ApiError },
    Transport(String),
}

impl Failure {
    fn message(&self) -> String {
        match self {
            Failure::Api { status, error } => {
                format!("Stripe answered {status}: {}", error.message.as_deref().unwrap_or("no message"))
            }
            Failure::Transport(m) => m.clone(),
        }
    }

    fn into_provider_error(self) -> ProviderError {
        match &self {
            Failure::Api { status: 402, error } => ProviderError::Declined {
                code: error
                    .decline_code
                    .clone()
                    .or_else(|| error.code.clone())
                    .unwrap_or_else(|| "card_declined".into()),
                message: error.message.clone().unwrap_or_else(|| "the card was declined".into()),
            },
            Failure::Api { status: 401 | 403, .. } => {
                ProviderError::Transient(format!("{} (check SOM_STRIPE_SECRET_KEY)", self.message()))
            }
            // 409: a request with the same idempotency key is still running at Stripe.
            Failure::Api { status: 409 | 429, .. } => ProviderError::Transient(self.message()),
            Failure::Api { status, .. } if *status >= 500 => ProviderError::Transient(self.message()),
            Failure::Api { error, .. } => ProviderError::InvalidRequest(
                error.message.clone().unwrap_or_else(|| "Stripe refused the request".into()),
            ),
            Failure::Transport(m) => ProviderError::Transient(m.clone()),
        }
    }
}

impl StripeProvider {
    /// The provider name recorded on payments.
    pub const NAME: &'static str = "stripe";

    /// A provider calling `config.api_base` with `config.secret_key`.
    pub fn new(config: StripeConfig) -> Result<StripeProvider> {
        let key = config.secret_key.expose().trim();
        if key.is_empty() || !(key.starts_with("sk_") || key.starts_with("rk_")) {
            return Err(Error::invalid("SOM_STRIPE_SECRET_KEY", "must be a Stripe secret key (sk_… or rk_…)"));
        }
        let mut base = reqwest::Url::parse(config.api_base.trim())
            .map_err(|e| Error::invalid("SOM_STRIPE_API_BASE", format!("not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::invalid("SOM_STRIPE_API_BASE", "must be an http(s) URL"));
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        if let Some(secret) = &config.webhook_secret
            && secret.expose().len() < 16
        {
            return Err(Error::invalid("SOM_STRIPE_WEBHOOK_SECRET", "must be the endpoint's signing secret (whsec_…)"));
        }
        // reqwest is built without a bundled crypto provider; use ring, as the rest of SOM does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("som/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("building the Stripe client: {e}")))?;
        Ok(StripeProvider { client, base, key: Secret::new(key), webhook_secret: config.webhook_secret })
    }

    fn url(&self, path: &str) -> std::result::Result<reqwest::Url, Failure> {
        self.base.join(path).map_err(|e| Failure::Transport(format!("bad Stripe URL {path}: {e}")))
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        idempotency_key: Option<&str>,
    ) -> std::result::Result<Value, Failure> {
        let mut request = request.bearer_auth(self.key.expose()).header("Stripe-Version", API_VERSION);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.map_err(|e| Failure::Transport(format!("Stripe: {e}")))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| Failure::Transport(format!("Stripe: {e}")))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body)
                .map_err(|e| Failure::Transport(format!("Stripe answered {status} with unreadable JSON: {e}")));
        }
        let error = serde_json::from_slice::<ErrorBody>(&body).map(|b| b.error).unwrap_or_default();
        Err(Failure::Api { status, error })
    }

    async fn post(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> std::result::Result<Value, Failure> {
        self.call(self.client.post(self.url(path)?).form(form), idempotency_key).await
    }

    async fn get(&self, path: &str) -> std::result::Result<Value, Failure> {
        self.call(self.client.get(self.url(path)?), None).await
    }
}

/// The API version SOM's requests are written against (events keep the account's version;
/// the fields SOM reads are the same in both).
const API_VERSION: &str = "2024-06-20";

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A string id, or the `id` of an expanded object (`latest_charge` is either).
fn id_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        object => text(object, "id"),
    }
}

/// What a PaymentIntent's state means for SOM; `None` when it is not settled one way or the
/// other (it still needs confirming).
fn intent_outcome(intent: &Value) -> Option<std::result::Result<Confirmation, ProviderError>> {
    let id = text(intent, "id").unwrap_or_default();
    match intent.get("status").and_then(Value::as_str)? {
        "succeeded" => Some(Ok(Confirmation::Captured(ProviderCapture {
            capture_id: id_of(intent.get("latest_charge")).unwrap_or(id),
        }))),
        "requires_action" => {
            Some(Ok(Confirmation::Pending { next_action: intent.get("next_action").filter(|v| !v.is_null()).cloned() }))
        }
        "processing" => Some(Ok(Confirmation::Pending { next_action: None })),
        "requires_capture" => Some(Ok(Confirmation::Authorized)),
        "requires_payment_method" => {
            let error = intent.get("last_payment_error").filter(|e| !e.is_null())?;
            Some(Err(ProviderError::Declined {
                code: text(error, "decline_code")
                    .or_else(|| text(error, "code"))
                    .unwrap_or_else(|| "card_declined".into()),
                message: text(error, "message").unwrap_or_else(|| "the payment was declined".into()),
            }))
        }
        "canceled" => Some(Err(ProviderError::Declined {
            code: "canceled".into(),
            message: "the payment was canceled at Stripe".into(),
        })),
        _ => None,
    }
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    fn name(&self) -> &str {
        StripeProvider::NAME
    }

    fn check_method(&self, method: &str) -> std::result::Result<(), String> {
        // PaymentMethod ids and Stripe's test aliases (pm_card_visa); cards and sources.
        let ok = ["pm_", "card_", "src_"].iter().any(|p| method.starts_with(p))
            && method.len() <= 100
            && method.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok { Ok(()) } else { Err("must be a Stripe PaymentMethod id (pm_…)".into()) }
    }

    async fn initiate(&self, request: &PaymentRequest) -> std::result::Result<ProviderPayment, ProviderError> {
        let mut form = vec![
            ("amount".to_owned(), request.amount.minor().to_string()),
            ("currency".to_owned(), request.amount.currency().code().to_ascii_lowercase()),
            ("payment_method_types[]".to_owned(), "card".to_owned()),
            ("metadata[som_order_id]".to_owned(), request.order_id.to_string()),
            ("metadata[som_attempt]".to_owned(), request.attempt.to_string()),
            ("metadata[som_reference]".to_owned(), request.reference.clone()),
        ];
        if let Some(method) = &request.method {
            form.push(("payment_method".to_owned(), method.clone()));
        }
        if request.capture == crate::domain::CaptureMethod::Manual {
            form.push(("capture_method".to_owned(), "manual".to_owned()));
        }
        let intent = self
            .post("v1/payment_intents", &form, Some(&request.idempotency_key))
            .await
            .map_err(Failure::into_provider_error)?;
        let provider_payment_id =
            text(&intent, "id").ok_or_else(|| ProviderError::Transient("Stripe's PaymentIntent has no id".into()))?;
        Ok(ProviderPayment { provider_payment_id, client_secret: text(&intent, "client_secret") })
    }

    async fn confirm(&self, provider_payment_id: &str) -> std::result::Result<Confirmation, ProviderError> {
        let path = format!("v1/payment_intents/{provider_payment_id}");
        match self.post(&format!("{path}/confirm"), &[], None).await {
            Ok(intent) => intent_outcome(&intent).unwrap_or_else(|| {
                Err(ProviderError::InvalidRequest(format!(
                    "the PaymentIntent is {}",
                    intent.get("status").and_then(Value::as_str).unwrap_or("in an unknown state")
                )))
            }),
            // Already captured, waiting for the payer, declined before: the intent says which.
            Err(Failure::Api { status: 400, error }) => {
                let intent = self.get(&path).await.map_err(Failure::into_provider_error)?;
                intent_outcome(&intent).unwrap_or_else(|| {
                    Err(ProviderError::InvalidRequest(
                        error.message.unwrap_or_else(|| "Stripe refused the confirmation".into()),
                    ))
                })
            }
            Err(e) => Err(e.into_provider_error()),
        }
    }

    async fn cancel(&self, provider_payment_id: &str) -> std::result::Result<Cancellation, ProviderError> {
        let path = format!("v1/payment_intents/{provider_payment_id}");
        match self.post(&format!("{path}/cancel"), &[], Some(&format!("som-cancel-{provider_payment_id}"))).await {
            Ok(_) => Ok(Cancellation::Cancelled),
            // Already canceled, or finished: the intent says which.
            Err(Failure::Api { status: 400, error }) => {
                let intent = self.get(&path).await.map_err(Failure::into_provider_error)?;
                match intent.get("status").and_then(Value::as_str) {
                    Some("canceled") => Ok(Cancellation::Cancelled),
                    Some("succeeded") => Ok(Cancellation::Captured),
                    // Not final yet (`processing`): it may still take the money, so ask again
                    // later rather than count it closed.
                    other => Err(ProviderError::Transient(format!(
                        "the PaymentIntent is {} and Stripe refused to cancel it now: {}",
                        other.unwrap_or("in an unknown state"),
                        error.message.unwrap_or_default()
                    ))),
                }
            }
            Err(e) => Err(e.into_provider_error()),
        }
    }

    fn supports_manual_capture(&self) -> bool {
        true
    }

    async fn capture(&self, request: &CaptureRequest) -> std::result::Result<ProviderCapture, ProviderError> {
        let path = format!("v1/payment_intents/{}", request.provider_payment_id);
        let form = [("amount_to_capture".to_owned(), request.amount.minor().to_string())];
        let intent = match self.post(&format!("{path}/capture"), &form, Some(&request.idempotency_key)).await {
            Ok(intent) => intent,
            // Captured before (by a try whose answer was lost, or outside SOM), released, or
            // expired: the intent says which.
            Err(Failure::Api { status: 400, error }) => {
                let intent = self.get(&path).await.map_err(Failure::into_provider_error)?;
                if intent.get("status").and_then(Value::as_str) != Some("succeeded") {
                    return Err(ProviderError::InvalidRequest(format!(
                        "the PaymentIntent is {} and cannot be captured: {}",
                        intent.get("status").and_then(Value::as_str).unwrap_or("in an unknown state"),
                        error.message.unwrap_or_default()
                    )));
                }
                intent
            }
            Err(e) => return Err(e.into_provider_error()),
        };
        match intent.get("status").and_then(Value::as_str) {
            Some("succeeded") => Ok(ProviderCapture {
                capture_id: id_of(intent.get("latest_charge")).unwrap_or_else(|| request.provider_payment_id.clone()),
            }),
            // Not final yet: asked again later with the same key.
            other => Err(ProviderError::Transient(format!(
                "the PaymentIntent is {} after the capture",
                other.unwrap_or("in an unknown state")
            ))),
        }
    }

    async fn refund(&self, request: &RefundRequest) -> std::result::Result<ProviderRefund, ProviderError> {
        let mut form = vec![
            ("payment_intent".to_owned(), request.provider_payment_id.clone()),
            ("amount".to_owned(), request.amount.minor().to_string()),
            ("metadata[som_refund]".to_owned(), request.idempotency_key.clone()),
        ];
        if let Some(reason) = &request.reason {
            // Stripe's `reason` is an enum; SOM's free text goes in the metadata (500 characters).
            form.push(("metadata[som_reason]".to_owned(), reason.chars().take(500).collect()));
        }
        let refund = self
            .post("v1/refunds", &form, Some(&request.idempotency_key))
            .await
            .map_err(Failure::into_provider_error)?;
        refund_answer(&refund)
    }

    async fn refund_status(&self, provider_refund_id: &str) -> std::result::Result<ProviderRefund, ProviderError> {
        let refund =
            self.get(&format!("v1/refunds/{provider_refund_id}")).await.map_err(Failure::into_provider_error)?;
        refund_answer(&refund)
    }

    fn parse_event(&self, payload: &[u8], signature: &str) -> std::result::Result<ProviderEvent, EventError> {
        let secret = self.webhook_secret.as_ref().ok_or_else(|| {
            EventError::Unsupported("stripe (SOM_STRIPE_WEBHOOK_SECRET is not set, so no event can be verified)".into())
        })?;
        crate::signature::verify_signature(secret.expose().as_bytes(), signature, payload, SIGNATURE_TOLERANCE)
            .map_err(|e| EventError::Rejected(format!("Stripe-Signature: {e}")))?;
        parse_event_json(payload)
    }
}

/// Reads a verified Stripe event (the `Event` object's JSON) into what it means for SOM.
pub fn parse_event_json(payload: &[u8]) -> std::result::Result<ProviderEvent, EventError> {
    let event: Value =
        serde_json::from_slice(payload).map_err(|e| EventError::Rejected(format!("not a Stripe event: {e}")))?;
    let id = text(&event, "id").filter(|id| !id.is_empty() && id.len() <= 255);
    let kind = text(&event, "type").filter(|k| !k.is_empty() && k.len() <= 255);
    let (Some(id), Some(kind)) = (id, kind) else {
        return Err(EventError::Rejected("not a Stripe event: no id or type".into()));
    };
    let object = event.pointer("/data/object").cloned().unwrap_or(Value::Null);
    let effect = match kind.as_str() {
        "payment_intent.succeeded" => match text(&object, "id") {
            Some(provider_payment_id) => succeeded_intent(provider_payment_id, &object),
            None => EventEffect::Ignored,
        },
        // A manual-capture intent now holds the money (`requires_capture`).
        "payment_intent.amount_capturable_updated" => match text(&object, "id") {
            Some(provider_payment_id) => {
                let amount = object.get("amount_capturable").and_then(Value::as_i64).filter(|a| *a > 0);
                match (amount, text(&object, "currency")) {
                    (Some(amount_minor), Some(currency)) => EventEffect::PaymentAuthorized {
                        provider_payment_id,
                        amount_minor,
                        currency: currency.to_ascii_uppercase(),
                    },
                    _ => EventEffect::Ignored,
                }
            }
            None => EventEffect::Ignored,
        },
        // Stripe cancels an uncaptured intent itself when its authorisation runs out
        // (`cancellation_reason` `automatic`).
        "payment_intent.canceled" => match text(&object, "id") {
            Some(provider_payment_id) => EventEffect::PaymentCanceled {
                provider_payment_id,
                expired: text(&object, "cancellation_reason").as_deref() == Some("automatic"),
            },
            None => EventEffect::Ignored,
        },
        "payment_intent.payment_failed" => match text(&object, "id") {
            Some(provider_payment_id) => {
                let error = object.get("last_payment_error").cloned().unwrap_or(Value::Null);
                EventEffect::PaymentFailed {
                    provider_payment_id,
                    message: text(&error, "message").unwrap_or_else(|| "the payment was declined".into()),
                }
            }
            None => EventEffect::Ignored,
        },
        // A Charge; its refunds are listed in API versions before 2022-11-15 (later ones send
        // the refund.* events below instead).
        "charge.refunded" => {
            let refunds = object.pointer("/refunds/data").and_then(Value::as_array).cloned().unwrap_or_default();
            match text(&object, "payment_intent") {
                Some(provider_payment_id) => EventEffect::Refunded {
                    provider_payment_id,
                    refunds: refunds.iter().filter_map(refund_report).collect(),
                },
                None => EventEffect::Ignored,
            }
        }
        "refund.created" | "refund.updated" | "charge.refund.updated" => {
            match (text(&object, "payment_intent"), refund_report(&object)) {
                (Some(provider_payment_id), Some(report)) => {
                    EventEffect::Refunded { provider_payment_id, refunds: vec![report] }
                }
                _ => EventEffect::Ignored,
            }
        }
        _ => EventEffect::Ignored,
    };
    Ok(ProviderEvent { provider: StripeProvider::NAME.to_owned(), id, kind, effect })
}

/// What a Refund object says: `succeeded`; `pending` or `requires_action` (Stripe is still
/// returning the money); `failed` or `canceled` (a decline, with Stripe's `failure_reason`).
fn refund_answer(refund: &Value) -> std::result::Result<ProviderRefund, ProviderError> {
    let id = text(refund, "id").ok_or_else(|| ProviderError::Transient("Stripe's Refund has no id".into()))?;
    match refund.get("status").and_then(Value::as_str) {
        Some("failed" | "canceled") => Err(ProviderError::Declined {
            code: text(refund, "failure_reason").unwrap_or_else(|| "refund_failed".into()),
            message: format!("Stripe could not refund: {}", text(refund, "failure_reason").unwrap_or_default()),
        }),
        Some("succeeded") => Ok(ProviderRefund { provider_refund_id: id, pending: false }),
        // pending, requires_action, or a status newer than this client: not finished yet.
        _ => Ok(ProviderRefund { provider_refund_id: id, pending: true }),
    }
}

/// A `payment_intent.succeeded` event's intent, read as Stripe documents it: `status`
/// `succeeded`, the captured `amount_received` (or `amount`) and `currency`.
fn succeeded_intent(provider_payment_id: String, intent: &Value) -> EventEffect {
    let status = intent.get("status").and_then(Value::as_str).unwrap_or("missing");
    if status != "succeeded" {
        return EventEffect::Contradictory {
            provider_payment_id,
            problem: format!("a payment_intent.succeeded event whose intent is {status}"),
        };
    }
    let amount = intent.get("amount_received").or_else(|| intent.get("amount")).and_then(Value::as_i64);
    match (amount, text(intent, "currency")) {
        (Some(amount_minor), Some(currency)) => {
            EventEffect::PaymentSucceeded { provider_payment_id, amount_minor, currency: currency.to_ascii_uppercase() }
        }
        _ => EventEffect::Contradictory {
            provider_payment_id,
            problem: "a payment_intent.succeeded event without an amount or currency".into(),
        },
    }
}

fn refund_report(refund: &Value) -> Option<RefundReport> {
    Some(RefundReport {
        provider_refund_id: text(refund, "id")?,
        amount_minor: refund.get("amount").and_then(Value::as_i64).filter(|a| *a > 0)?,
        currency: text(refund, "currency")?.to_ascii_uppercase(),
        succeeded: refund.get("status").and_then(Value::as_str) == Some("succeeded"),
        failed: matches!(refund.get("status").and_then(Value::as_str), Some("failed" | "canceled")),
        som_key: refund.pointer("/metadata/som_refund").and_then(Value::as_str).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests;
