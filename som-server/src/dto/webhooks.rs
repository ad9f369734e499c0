//! The JSON shapes of webhook endpoints, their delivery records, redelivery, and the events
//! themselves (documented in the OpenAPI document, one schema per event type).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use som_core::domain::{WebhookDelivery, WebhookEndpoint};
use utoipa::ToSchema;

/// `POST /webhook-endpoints/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointBody {
    /// Where events are POSTed: `https://…`; `http://` only to this machine. Private,
    /// loopback and link-local addresses are refused unless the server allows them.
    #[schema(max_length = 2048, example = "https://hooks.example.com/som", min_length = 1)]
    pub url: String,
    /// Event types (`som.order.created`, …), or `["*"]` for every one.
    #[schema(min_items = 1, max_items = 32, example = json!(["som.order.created", "som.payment.succeeded"]))]
    pub events: Vec<String>,
    /// What it is for.
    #[serde(default)]
    #[schema(
        max_length = 500,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    pub description: Option<String>,
}

/// `PATCH /webhook-endpoints/{id}/`: only the fields given change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchEndpointBody {
    /// A new URL (`null` leaves it as it is).
    #[serde(default)]
    #[schema(nullable, max_length = 2048, min_length = 1)]
    pub url: Option<String>,
    /// A new list of event types, or `["*"]` (`null` leaves it as it is).
    #[serde(default)]
    #[schema(min_items = 1, max_items = 32)]
    pub events: Option<Vec<String>>,
    /// A new description; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(
        max_length = 500,
        nullable,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    pub description: Option<Option<String>>,
    /// `false` stops deliveries; `true` resumes them (after SOM disabled a failing endpoint,
    /// too); `null` leaves it as it is.
    #[serde(default)]
    #[schema(nullable)]
    pub enabled: Option<bool>,
}

/// A field that may be given as `null`: absent → `None`, `null` → `Some(None)`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /webhook-endpoints/{id}/rotate-secret/`; the body may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretBody {
    /// Seconds the old secret keeps signing beside the new one (default 86400, at most
    /// 604800; 0 drops it at once).
    #[serde(default, deserialize_with = "crate::dto::optional_integral")]
    #[schema(minimum = 0, maximum = 604800, example = 86400)]
    pub overlap: Option<i64>,
}

/// `POST /events/{id}/redeliver/`; the body may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverBody {
    /// Only to this endpoint; otherwise to every enabled endpoint subscribed to the event's
    /// type.
    #[serde(default, deserialize_with = "crate::dto::optional_integral")]
    #[schema(minimum = 1)]
    pub endpoint_id: Option<i64>,
}

/// A webhook endpoint. `secret` appears only when it was made or its secret rotated.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointResponse {
    /// Its id.
    pub id: i64,
    /// Where events are POSTed.
    pub url: String,
    /// The event types it receives, or `["*"]`.
    pub events: Vec<String>,
    /// What it is for.
    pub description: Option<String>,
    /// Whether events are sent to it.
    pub enabled: bool,
    /// Why SOM disabled it, if it did.
    pub disabled_reason: Option<String>,
    /// Since when every delivery to it has failed.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the previous secret still signs beside the current one.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Made from `SOM_WEBHOOK_URLS` by the operator.
    pub from_config: bool,
    /// The signing secret (`whsec_…`): verify `SOM-Signature` with it. Shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl EndpointResponse {
    /// The endpoint without its secret.
    pub fn of(e: WebhookEndpoint) -> EndpointResponse {
        Self::build(e, false)
    }

    /// The endpoint with its secret (just made or rotated).
    pub fn with_secret(e: WebhookEndpoint) -> EndpointResponse {
        Self::build(e, true)
    }

    fn build(e: WebhookEndpoint, secret: bool) -> EndpointResponse {
        EndpointResponse {
            id: e.id.get(),
            events: e.events.names(),
            description: e.description,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since,
            // Cleared by som-core once the overlap has ended.
            previous_secret_expires_at: e.previous_secret_until,
            from_config: e.from_config,
            secret: secret.then_some(e.secret),
            created_at: e.created_at,
            updated_at: e.updated_at,
            url: e.url,
        }
    }
}

/// One attempt to deliver an event to an endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResponse {
    /// Its id.
    pub id: i64,
    /// The endpoint.
    pub endpoint_id: i64,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    #[schema(example = "som.order.created")]
    pub event_type: String,
    /// Which attempt this was (1 for the first).
    pub attempt: u32,
    /// `succeeded` (2xx) or `failed`.
    #[schema(example = "succeeded")]
    pub status: String,
    /// The HTTP status the endpoint answered, if it answered.
    pub response_status: Option<u16>,
    /// How long the call took, in milliseconds.
    pub latency_ms: u64,
    /// The first 2 KB of the response's body.
    pub response_body: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<WebhookDelivery> for DeliveryResponse {
    fn from(d: WebhookDelivery) -> Self {
        DeliveryResponse {
            id: d.id.get(),
            endpoint_id: d.endpoint_id.get(),
            event_id: d.event_id,
            event_type: d.event_type,
            attempt: d.attempt,
            status: if d.succeeded { "succeeded" } else { "failed" }.to_owned(),
            response_status: d.response_status,
            latency_ms: d.latency_ms,
            response_body: d.response_body,
            error: d.error,
            created_at: d.created_at,
        }
    }
}

/// What a redelivery queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedeliveryResponse {
    /// The event.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// The endpoints it is delivered to again.
    pub endpoints: Vec<i64>,
}

impl From<som_core::Redelivery> for RedeliveryResponse {
    fn from(r: som_core::Redelivery) -> Self {
        RedeliveryResponse {
            event_id: r.event_id,
            event_type: r.event_type,
            endpoints: r.endpoints.iter().map(|e| e.get()).collect(),
        }
    }
}

/// An item line in an event.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct EventItem {
    /// Item name.
    pub name: String,
    /// How many.
    pub quantity: i64,
    /// Unit price, with the currency's digits.
    #[schema(example = "12.50")]
    pub price: String,
}

/// Where a parcel can be followed.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct EventTracking {
    /// The carrier.
    pub carrier: Option<String>,
    /// The carrier's tracking number.
    pub number: Option<String>,
    /// A page where the parcel can be followed.
    pub url: Option<String>,
}

/// The `data` of an event. Every event has the order, its owner, an amount and items; events
/// about a payment, refund, fulfilment or return also name it (see each type's schema).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct EventData {
    /// The order.
    pub order_id: i64,
    /// The order's owner.
    pub user_id: i64,
    /// The owner's username.
    pub username: String,
    /// The amount the event is about: the order's total; the payment's (the amount captured
    /// for `som.payment.captured`); the refund's; the return's refund.
    #[schema(example = "250.00")]
    pub amount: String,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
    /// The order's items, or the parcel's or the return's lines.
    pub items: Vec<EventItem>,
    /// The payment (payment and refund events).
    pub payment_id: Option<i64>,
    /// The refund (`som.refund.issued`).
    pub refund_id: Option<i64>,
    /// The fulfilment (fulfilment events).
    pub fulfillment_id: Option<i64>,
    /// The parcel's tracking (fulfilment events that have it).
    pub tracking: Option<EventTracking>,
    /// The return (return events).
    pub return_id: Option<i64>,
    /// Why: a decline's reason, a cancellation's, a refund's, a rejected return's note.
    pub reason: Option<String>,
}
