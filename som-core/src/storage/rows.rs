//! Driver-neutral rows. Each backend reads its driver's rows into these structs (sqlx's
//! `FromRow` on PostgreSQL, column by column on SQLite) and each struct has one conversion to
//! its domain type, so a stored value is decoded — and a corrupt one reported — the same way
//! whichever backend holds it.

use chrono::{DateTime, Utc};

use crate::domain::{
    Actor, Currency, Email, EventKind, Fulfillment, FulfillmentId, FulfillmentState, FulfillmentStatus, ItemQuantity,
    Message, Money, NotificationId, NotificationStatus, Order, OrderId, OrderStatus, OutboxEntry, Payment, PaymentId,
    PaymentStatus, Refund, RefundId, RefundStatus, Return, ReturnId, ReturnStatus, Tracking, User, UserId, Username,
};
use serde::Serialize;

use super::NewNotification;
use crate::error::{Error, Result};

/// The error for a stored value that no valid write could have produced.
pub(crate) fn corrupt(what: &str) -> Error {
    Error::Internal(format!("unexpected value in the database: {what}"))
}

fn currency(code: &str) -> Result<Currency> {
    Currency::parse(code).map_err(|_| corrupt("currency"))
}

/// A `users` row.
#[derive(Debug)]
#[cfg_attr(feature = "postgres", derive(sqlx::FromRow))]
pub(crate) struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub is_staff: bool,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
}

impl UserRow {
    pub fn into_user(self) -> Result<User> {
        Ok(User {
            id: UserId::new(self.id),
            username: Username::parse(&self.username).map_err(|_| corrupt("username"))?,
            email: self.email.map(|e| Email::parse(&e).map_err(|_| corrupt("email"))).transpose()?,
            is_staff: self.is_staff,
            is_active: self.is_active,
            created_at: self.created_at,
        })
    }
}

/// An `orders` row, without its items.
#[derive(Debug)]
#[cfg_attr(feature = "postgres", derive(sqlx::FromRow))]
pub(crate) struct OrderRow {
    pub id: i64,
    pub user_id: i64,
    pub status: String,
    pub currency: String,
    pub total_minor: i64,
    pub refunded_minor: i64,
    pub fulfillment_status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The order of an `orders` row, its items left to the caller.
pub(crate) fn order_without_items(row: OrderRow) -> Result<Order> {
    let currency = currency(&row.currency)?;
    Ok(Order {
        id: OrderId::new(row.id),
        user_id: UserId::new(row.user_id),
        status: OrderStatus::parse(&row.status).ok_or_else(|| corrupt("order status"))?,
        items: Vec::new(),
        total: Money::from_minor(row.total_minor, currency),
        refunded: Money::from_minor(row.refunded_minor, currency),
        fulfillment: FulfillmentState::parse(&row.fulfillment_status).ok_or_else(|| corrupt("fulfilment status"))?,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A `payments` row.
#[derive(Debug)]
#[cfg_attr(feature = "postgres", derive(sqlx::FromRow))]
pub(crate) struct PaymentRow {
    pub id: i64,
    pub order_id: i64,
    pub user_id: i64,
    pub provider: String,
    pub provider_payment_id: String,
    pub transaction_id: String,
    pub method: String,
    #[cfg_attr(feature = "postgres", sqlx(try_from = "i32"))]
    pub attempt: i64,
    pub amount_minor: i64,
    pub refunded_minor: i64,
    pub refund_reserved_minor: i64,
    pub currency: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub client_secret: Option<String>,
    pub next_action: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub capture_method: String,
    pub captured_minor: i64,
    pub authorization_expires_at: Option<DateTime<Utc>>,
    pub settle_action: Option<String>,
    pub settle_minor: Option<i64>,
    pub settle_started_at: Option<DateTime<Utc>>,
}

impl PaymentRow {
    pub fn into_payment(self) -> Result<Payment> {
        let currency = currency(&self.currency)?;
        let status = PaymentStatus::parse(&self.status).ok_or_else(|| corrupt("payment status"))?;
        // What lets a payer finish paying is served only while the payment can still be paid.
        let waiting = status.awaits_payer();
        let capture_method =
            crate::domain::CaptureMethod::parse(&self.capture_method).ok_or_else(|| corrupt("capture method"))?;
        let settlement = match (self.settle_action, self.settle_started_at) {
            (Some(action), Some(started_at)) => Some(crate::domain::Settlement {
                action: crate::domain::SettleAction::parse(&action).ok_or_else(|| corrupt("settlement"))?,
                amount: Money::from_minor(self.settle_minor.unwrap_or(0), currency),
                started_at,
            }),
            _ => None,
        };
        let authorized = status == PaymentStatus::Authorized;
        Ok(Payment {
            id: PaymentId::new(self.id),
            order_id: OrderId::new(self.order_id),
            user_id: UserId::new(self.user_id),
            provider: self.provider,
            provider_payment_id: self.provider_payment_id,
            transaction_id: self.transaction_id,
            method: self.method,
            attempt: u32::try_from(self.attempt).map_err(|_| corrupt("attempt"))?,
            amount: Money::from_minor(self.amount_minor, currency),
            capture_method,
            captured: Money::from_minor(self.captured_minor, currency),
            authorization_expires_at: self.authorization_expires_at.filter(|_| authorized),
            settlement: settlement.filter(|_| authorized),
            refunded: Money::from_minor(self.refunded_minor, currency),
            refund_pending: Money::from_minor(self.refund_reserved_minor - self.refunded_minor, currency),
            status,
            failure_reason: self.failure_reason,
            client_secret: self.client_secret.filter(|_| waiting),
            next_action: match self.next_action {
                Some(json) if waiting => Some(serde_json::from_str(&json).map_err(|_| corrupt("payment next action"))?),
                _ => None,
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A `refunds` row.
#[derive(Debug)]
#[cfg_attr(feature = "postgres", derive(sqlx::FromRow))]
pub(crate) struct RefundRow {
    pub id: i64,
    pub payment_id: i64,
    pub order_id: i64,
    pub user_id: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub provider_refund_id: Option<String>,
    pub reason: Option<String>,
    pub failure_reason: Option<String>,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RefundRow {
    pub fn into_refund(self) -> Result<Refund> {
        Ok(Refund {
            id: RefundId::new(self.id),
            payment_id: PaymentId::new(self.payment_id),
            order_id: OrderId::new(self.order_id),
            user_id: UserId::new(self.user_id),
            amount: Money::from_minor(self.amount_minor, currency(&self.currency)?),
            status: RefundStatus::parse(&self.status).ok_or_else(|| corrupt("refund status"))?,
            provider_refund_id: self.provider_refund_id,
            reason: self.reason,
            failure_reason: self.failure_reason,
            actor: Actor::try_from(self.actor).map_err(|_| corrupt("refund actor"))?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A `fulfillments` row.
#[derive(Debug)]
#[cfg_attr(feature = "postgres", derive(sqlx::FromRow))]
pub(crate) struct FulfillmentRow {
    pub id: i64,
    pub order_id: i64,
    pub user_id: i64,
    pub status: String,
    pub items: String,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl FulfillmentRow {
    pub fn into_fulfillment(self) -> Result<Fulfillment> {
        Ok(Fulfillment {
            id: FulfillmentId::new(self.id),
            order_id: OrderId::new(self.order_id),
            user_id: UserId::new(self.user_id),
            status: FulfillmentStatus::parse(&self.status).ok_or_else(|| corrupt("fulfilment status"))?,
            items: lines(&self.items)?,
            tracking: Tracking { carrier: self.carrier, number: self.tracking_number, url: self.tracking_url },
            actor: Actor::try_from(self.actor).map_err(|_| corrupt("fulfilment actor"))?,
            created_at: self.created_at,
            shipped_at: self.shipped_at,
            delivered_at: self.delivered_at,
            updated_at: self.updated_at,
        })
    }
}

/// A `returns` row; `currency` is its order's.
#[derive(Debug)]
#[cfg_attr(feature = "postgres", derive(sqlx::FromRow))]
pub(crate) struct ReturnRow {
    pub id: i64,
    pub order_id: i64,
    pub user_id: i64,
    pub status: String,
    pub items: String,
    pub reason: Option<String>,
    pub note: Option<String>,
    pub refund_id: Option<i64>,
    pub refund_minor: Option<i64>,
    pub currency: String,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ReturnRow {
    pub fn into_return(self) -> Result<Return> {
        let currency = currency(&self.currency)?;
        Ok(Return {
            id: ReturnId::new(self.id),
            order_id: OrderId::new(self.order_id),
            user_id: UserId::new(self.user_id),
            status: ReturnStatus::parse(&self.status).ok_or_else(|| corrupt("return status"))?,
            items: lines(&self.items)?,
            reason: self.reason,
            note: self.note,
            refund_id: self.refund_id.map(RefundId::new),
            refund_amount: self.refund_minor.map(|m| Money::from_minor(m, currency)),
            actor: Actor::try_from(self.actor).map_err(|_| corrupt("return actor"))?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Lines as stored: `[{"item_id": 7001, "quantity": 1}]`.
pub(crate) fn lines_json(lines: &[ItemQuantity]) -> Result<String> {
    response_json(&lines)
}

fn lines(json: &str) -> Result<Vec<ItemQuantity>> {
    serde_json::from_str(json).map_err(|_| corrupt("item lines"))
}

/// An `outbox` row.
#[derive(Debug)]
#[cfg_attr(feature = "postgres", derive(sqlx::FromRow))]
pub(crate) struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub dedupe_key: String,
    pub channel: String,
    pub recipient: Option<String>,
    pub payload: String,
    pub status: String,
    #[cfg_attr(feature = "postgres", sqlx(try_from = "i32"))]
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl OutboxRow {
    pub fn into_entry(self) -> Result<OutboxEntry> {
        Ok(OutboxEntry {
            id: NotificationId::new(self.id),
            kind: EventKind::parse(&self.kind).ok_or_else(|| corrupt("event kind"))?,
            dedupe_key: self.dedupe_key,
            channel: self.channel,
            recipient: self.recipient,
            message: serde_json::from_str::<Message>(&self.payload).map_err(|_| corrupt("outbox payload"))?,
            status: NotificationStatus::parse(&self.status).ok_or_else(|| corrupt("notification status"))?,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            next_attempt_at: self.next_attempt_at,
            last_error: self.last_error,
            created_at: self.created_at,
            sent_at: self.sent_at,
        })
    }
}

/// The idempotency result written with an effect.
pub(crate) fn response_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("serializing idempotent response: {e}")))
}

/// A LIKE pattern matching text that starts with `prefix` (lower-cased;
/// `\\` escapes).
pub(crate) fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Shared by backends: the outbox row's recipient for a message.
pub(crate) fn recipient_of(n: &NewNotification) -> Option<String> {
    n.message.email.clone()
}

/// A `webhook_endpoints` row (no `Debug`: it holds secrets).
#[cfg_attr(feature = "postgres", derive(sqlx::FromRow))]
#[allow(missing_debug_implementations)]
pub(crate) struct EndpointRow {
    pub id: i64,
    pub url: String,
    pub events: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub from_config: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of an [`EndpointRow`], in order.
pub(crate) const ENDPOINT_COLUMNS: &str = "id, url, events, description, enabled, disabled_reason, secret, \
     previous_secret, previous_secret_until, failing_since, from_config, created_at, updated_at";

/// An endpoint's filter as stored: a JSON array of type names or `["*"]`.
pub(crate) fn events_json(filter: &crate::domain::EventFilter) -> String {
    serde_json::to_string(&filter.names()).unwrap_or_else(|_| "[\"*\"]".to_owned())
}

impl EndpointRow {
    pub fn into_endpoint(self) -> Result<crate::domain::WebhookEndpoint> {
        let names: Vec<String> = serde_json::from_str(&self.events).map_err(|_| corrupt("endpoint events"))?;
        Ok(crate::domain::WebhookEndpoint {
            id: crate::domain::EndpointId::new(self.id),
            url: self.url,
            events: crate::domain::EventFilter::parse(&names).map_err(|_| corrupt("endpoint events"))?,
            description: self.description,
            enabled: self.enabled,
            disabled_reason: self.disabled_reason,
            secret: self.secret,
            previous_secret: self.previous_secret,
            previous_secret_until: self.previous_secret_until,
            failing_since: self.failing_since,
            from_config: self.from_config,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A `webhook_deliveries` row.
#[derive(Debug)]
#[cfg_attr(feature = "postgres", derive(sqlx::FromRow))]
pub(crate) struct DeliveryRow {
    pub id: i64,
    pub endpoint_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub attempt: i64,
    pub succeeded: bool,
    pub response_status: Option<i32>,
    pub latency_ms: i64,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The columns of a [`DeliveryRow`], in order.
pub(crate) const DELIVERY_COLUMNS: &str = "id, endpoint_id, event_id, event_type, attempt, succeeded, \
     response_status, latency_ms, response_body, error, created_at";

impl DeliveryRow {
    pub fn into_delivery(self) -> crate::domain::WebhookDelivery {
        crate::domain::WebhookDelivery {
            id: crate::domain::DeliveryId::new(self.id),
            endpoint_id: crate::domain::EndpointId::new(self.endpoint_id),
            event_id: self.event_id,
            event_type: self.event_type,
            attempt: u32::try_from(self.attempt).unwrap_or(0),
            succeeded: self.succeeded,
            response_status: self.response_status.and_then(|s| u16::try_from(s).ok()),
            latency_ms: u64::try_from(self.latency_ms).unwrap_or(0),
            response_body: self.response_body,
            error: self.error,
            created_at: self.created_at,
        }
    }
}
