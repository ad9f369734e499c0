//! Events for other systems: the CloudEvents 1.0 envelope SOM sends to webhook endpoints and
//! publishes to the event stream, built from an outbox row; and webhook endpoints with their
//! event filters and delivery records.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{
    DeliveryId, EndpointId, EventKind, FulfillmentId, Message, MessageItem, OrderId, OutboxEntry, PaymentId, RefundId,
    ReturnId, Tracking, UserId,
};
use crate::error::{Error, Result};

/// The version of the events' `data` schemas (the `somversion` extension attribute). It
/// changes only when a field is removed or changes meaning; fields may be added within one.
pub const EVENT_DATA_VERSION: &str = "1";

/// The CloudEvents `source` of every SOM event.
pub const EVENT_SOURCE: &str = "/som";

/// The media type of a CloudEvent in structured JSON mode.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// One event in the CloudEvents 1.0 JSON format (structured mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// The event's id, stable across re-deliveries and channels (`order_created:order:42`).
    pub id: String,
    /// Always `/som`.
    pub source: String,
    /// `som.order.created`, … ([`EventKind::type_name`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// What the event is about: `orders/42`.
    pub subject: String,
    /// When it happened (RFC 3339, UTC).
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The version of `data`'s schema ([`EVENT_DATA_VERSION`]).
    pub somversion: String,
    /// The event's details.
    pub data: EventData,
}

/// The `data` of an event: the order it concerns, and the payment, refund, fulfilment or
/// return for events about one. Amounts are decimal strings with the currency's digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    /// The order.
    pub order_id: OrderId,
    /// The order's owner.
    pub user_id: UserId,
    /// The owner's username.
    pub username: String,
    /// The amount the event is about: the order's total; the payment's amount (the amount
    /// captured for `som.payment.captured`); the refund's; the return's refund.
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The items concerned: the order's, or the parcel's or return's lines.
    pub items: Vec<MessageItem>,
    /// The payment, for payment and refund events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<PaymentId>,
    /// The refund, for `som.refund.issued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<RefundId>,
    /// The fulfilment, for fulfilment events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfillment_id: Option<FulfillmentId>,
    /// Where the parcel can be followed, for fulfilment events that have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Tracking>,
    /// The return, for return events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_id: Option<ReturnId>,
    /// Why: a decline's reason, a cancellation's, a refund's, a rejected return's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl EventKind {
    /// The `data` fields events of this kind always carry (beside the ones every event has).
    pub fn data_fields(self) -> &'static [&'static str] {
        match self {
            EventKind::OrderCreated | EventKind::OrderCancelled | EventKind::StaffAlert => &[],
            EventKind::PaymentAuthorized
            | EventKind::PaymentSucceeded
            | EventKind::PaymentFailed
            | EventKind::PaymentCaptured
            | EventKind::PaymentVoided => &["payment_id"],
            EventKind::RefundIssued => &["payment_id", "refund_id"],
            EventKind::FulfillmentShipped | EventKind::FulfillmentDelivered => &["fulfillment_id"],
            EventKind::ReturnRequested
            | EventKind::ReturnApproved
            | EventKind::ReturnRejected
            | EventKind::ReturnReceived => &["return_id"],
        }
    }
}

impl EventData {
    /// The data of an event described by `m`.
    pub fn of(m: &Message) -> EventData {
        EventData {
            order_id: m.order_id,
            user_id: m.user_id,
            username: m.username.clone(),
            amount: m.amount.clone(),
            currency: m.currency.clone(),
            items: m.items.clone(),
            payment_id: m.payment_id,
            refund_id: m.refund_id,
            fulfillment_id: m.fulfillment_id,
            tracking: m.tracking.clone(),
            return_id: m.return_id,
            reason: m.reason.clone(),
        }
    }
}

impl CloudEvent {
    /// The event an outbox row carries: its id is the row's dedupe key (the same on every
    /// channel and every re-delivery), its time the row's creation.
    pub fn of(entry: &OutboxEntry) -> CloudEvent {
        CloudEvent::from_message(&entry.dedupe_key, &entry.message, entry.created_at)
    }

    /// The event with id `id` that `message` describes, which happened at `at`.
    pub fn from_message(id: &str, message: &Message, at: DateTime<Utc>) -> CloudEvent {
        CloudEvent {
            specversion: "1.0".to_owned(),
            id: id.to_owned(),
            source: EVENT_SOURCE.to_owned(),
            kind: message.kind.type_name().to_owned(),
            subject: format!("orders/{}", message.order_id),
            time: at.to_rfc3339_opts(SecondsFormat::Micros, true),
            datacontenttype: "application/json".to_owned(),
            somversion: EVENT_DATA_VERSION.to_owned(),
            data: EventData::of(message),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, ids and vectors of them always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Which events an endpoint receives: every public one (`*`), or the types named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventFilter {
    /// Every event other systems receive.
    All,
    /// Only these kinds.
    Only(Vec<EventKind>),
}

impl EventFilter {
    /// Most types an endpoint may name.
    pub const MAX_TYPES: usize = 32;

    /// Parses `["*"]` or a list of type names (`som.order.created`, …); duplicates are dropped.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<EventFilter> {
        if names.is_empty() {
            return Err(Error::invalid("events", "must name at least one event type, or \"*\" for all"));
        }
        if names.len() > Self::MAX_TYPES {
            return Err(Error::invalid("events", format!("at most {} types", Self::MAX_TYPES)));
        }
        let mut kinds = Vec::new();
        for name in names {
            let name = name.as_ref().trim();
            if name == "*" {
                return if names.len() == 1 {
                    Ok(EventFilter::All)
                } else {
                    Err(Error::invalid("events", "\"*\" stands alone: it already means every type"))
                };
            }
            let kind = EventKind::parse_type(name).filter(|k| k.is_public()).ok_or_else(|| {
                Error::invalid("events", format!("{name:?} is not an event type; see the API's documentation"))
            })?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(EventFilter::Only(kinds))
    }

    /// Whether events of `kind` pass.
    pub fn matches(&self, kind: EventKind) -> bool {
        kind.is_public()
            && match self {
                EventFilter::All => true,
                EventFilter::Only(kinds) => kinds.contains(&kind),
            }
    }

    /// The names as stored and shown: `["*"]` or the type names.
    pub fn names(&self) -> Vec<String> {
        match self {
            EventFilter::All => vec!["*".to_owned()],
            EventFilter::Only(kinds) => kinds.iter().map(|k| k.type_name().to_owned()).collect(),
        }
    }
}

/// A URL that receives SOM's events, signed with its own secret. Its `Debug` shows neither
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// Its id.
    pub id: EndpointId,
    /// Where events are POSTed.
    pub url: String,
    /// Which events it receives.
    pub events: EventFilter,
    /// What it is for.
    pub description: Option<String>,
    /// Whether events are sent to it.
    pub enabled: bool,
    /// Why it was disabled by SOM (after failing continuously), if it was.
    pub disabled_reason: Option<String>,
    /// The signing secret (`whsec_…`).
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_secret_until`.
    pub previous_secret: Option<String>,
    /// When the previous secret stops being sent.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Since when every delivery to it has failed (none while its last delivery succeeded).
    pub failing_since: Option<DateTime<Utc>>,
    /// Made from `SOM_WEBHOOK_URLS` by the operator (not over the API): its address is
    /// trusted as configured.
    pub from_config: bool,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("url", &crate::util::redact_url(&self.url))
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .field("disabled_reason", &self.disabled_reason)
            .field("failing_since", &self.failing_since)
            .field("from_config", &self.from_config)
            .finish_non_exhaustive()
    }
}

impl WebhookEndpoint {
    /// The outbox channel of this endpoint's deliveries: `webhook:<id>`.
    pub fn channel(&self) -> String {
        endpoint_channel(self.id)
    }

    /// The secrets that sign a call made at `now`: the current one, and the previous one
    /// while its overlap lasts.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(_)) = (&self.previous_secret, self.previous_signs_until(now)) {
            secrets.push(previous);
        }
        secrets
    }

    /// Until when the previous secret signs beside the current one, if it still does at `now`.
    pub fn previous_signs_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.previous_secret.as_ref().and(self.previous_secret_until).filter(|until| now < *until)
    }

    /// The endpoint as it stands at `now`: a previous secret whose overlap has ended is gone.
    pub fn at(mut self, now: DateTime<Utc>) -> WebhookEndpoint {
        if self.previous_signs_until(now).is_none() {
            self.previous_secret = None;
            self.previous_secret_until = None;
        }
        self
    }
}

/// The outbox channel of endpoint `id`'s deliveries.
pub fn endpoint_channel(id: EndpointId) -> String {
    format!("{WEBHOOK_CHANNEL}:{id}")
}

/// The endpoint an outbox channel delivers to (`webhook:7` → 7).
pub fn channel_endpoint(channel: &str) -> Option<EndpointId> {
    let id = channel.strip_prefix(WEBHOOK_CHANNEL)?.strip_prefix(':')?;
    id.parse().ok()
}

/// The channel whose rows are fanned out to the endpoints subscribed to them.
pub const WEBHOOK_CHANNEL: &str = "webhook";

/// A new signing secret: `whsec_` and 32 random bytes in hex.
pub fn new_endpoint_secret() -> String {
    format!("whsec_{}", crate::util::random_token(32))
}

/// One attempt to deliver an event to an endpoint, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// Its id.
    pub id: DeliveryId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// The event's id.
    pub event_id: String,
    /// The event's type (`som.order.created`).
    pub event_type: String,
    /// Which attempt this was for this endpoint (1 for the first).
    pub attempt: u32,
    /// Whether the endpoint answered 2xx.
    pub succeeded: bool,
    /// The HTTP status the endpoint answered, if it answered.
    pub response_status: Option<u16>,
    /// How long the call took, in milliseconds.
    pub latency_ms: u64,
    /// The first 2 KB of the response's body.
    pub response_body: Option<String>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// When the attempt was made.
    pub created_at: DateTime<Utc>,
}

impl WebhookDelivery {
    /// How much of a response's body is kept, in bytes.
    pub const BODY_LIMIT: usize = 2048;
}

/// Checks an endpoint's description: at most 500 characters, no control characters.
pub fn endpoint_description(raw: Option<&str>) -> Result<Option<String>> {
    let Some(text) = raw.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    if text.chars().count() > 500 {
        return Err(Error::invalid("description", "must be at most 500 characters"));
    }
    if text.chars().any(super::is_disallowed_in_text) {
        return Err(Error::invalid("description", "must not contain control characters"));
    }
    Ok(Some(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_secret_signs_until_its_overlap_ends_and_then_is_gone() {
        let t = |s: i64| DateTime::from_timestamp(1_796_000_000 + s, 0).unwrap();
        let endpoint = WebhookEndpoint {
            id: EndpointId::new(1),
            url: "https://example.com/hook".into(),
            events: EventFilter::All,
            description: None,
            enabled: true,
            disabled_reason: None,
            secret: "whsec_new".into(),
            previous_secret: Some("whsec_old".into()),
            previous_secret_until: Some(t(60)),
            failing_since: None,
            from_config: false,
            created_at: t(0),
            updated_at: t(0),
        };
        assert_eq!(endpoint.signing_secrets(t(59)), ["whsec_new", "whsec_old"]);
        assert_eq!(endpoint.previous_signs_until(t(59)), Some(t(60)));
        assert_eq!(endpoint.signing_secrets(t(60)), ["whsec_new"]);
        assert_eq!(endpoint.previous_signs_until(t(60)), None);
        let during = endpoint.clone().at(t(59));
        assert_eq!((during.previous_secret.as_deref(), during.previous_secret_until), (Some("whsec_old"), Some(t(60))));
        let after = endpoint.at(t(61));
        assert_eq!((after.previous_secret, after.previous_secret_until), (None, None));
    }

    #[test]
    fn filters_parse_type_names_or_a_lone_star() {
        assert_eq!(EventFilter::parse(&["*"]).unwrap(), EventFilter::All);
        let only = EventFilter::parse(&["som.order.created", "som.payment.succeeded", "som.order.created"]).unwrap();
        assert_eq!(only, EventFilter::Only(vec![EventKind::OrderCreated, EventKind::PaymentSucceeded]));
        assert!(only.matches(EventKind::OrderCreated) && !only.matches(EventKind::RefundIssued));
        assert!(EventFilter::All.matches(EventKind::ReturnReceived));
        assert!(!EventFilter::All.matches(EventKind::StaffAlert), "staff alerts stay with staff");
        for bad in [&[][..], &["order_created"], &["*", "som.order.created"], &["som.staff.alert"], &["som.nope"]] {
            assert!(EventFilter::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(only.names(), vec!["som.order.created", "som.payment.succeeded"]);
    }

    #[test]
    fn every_kind_has_a_distinct_type_name_that_parses_back() {
        let names: std::collections::HashSet<_> = EventKind::ALL.iter().map(|k| k.type_name()).collect();
        assert_eq!(names.len(), EventKind::ALL.len());
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse_type(k.type_name()), Some(k));
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert!(k.type_name().starts_with("som."));
        }
    }

    #[test]
    fn channels_name_their_endpoint() {
        assert_eq!(endpoint_channel(EndpointId::new(7)), "webhook:7");
        assert_eq!(channel_endpoint("webhook:7"), Some(EndpointId::new(7)));
        for other in ["webhook", "webhook:", "webhook:x", "webhooks:7", "smtp"] {
            assert_eq!(channel_endpoint(other), None, "{other}");
        }
    }
}
