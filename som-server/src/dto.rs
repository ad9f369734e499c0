//! The JSON shapes of the HTTP API (field names of the original service), with their
//! OpenAPI schemas.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use som_core::domain::OutboxEntry;
use som_core::domain::{Currency, OrderEvent, OrderItem, Payment, Refund, User};
use utoipa::ToSchema;

pub mod fulfillment;
mod payments;
pub mod webhooks;
pub use payments::*;

/// A decimal amount given as a JSON string (`"100.00"`, exact) or number (`100.5`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Decimal {
    /// `"100.00"`.
    Text(String),
    /// `100.5`.
    Number(serde_json::Number),
}

/// A unit price as text: above zero, at most [`OrderItem::MAX_UNIT_PRICE`], with at most as
/// many decimals as the currency with the most minor digits has — no more than the order's
/// own currency has (two for most, none for JPY, three for KWD, BHD, OMR, JOD, TND) is a rule
/// between two fields that the schema states in words. Built from som-core's limits.
pub fn price_pattern() -> String {
    let max = OrderItem::MAX_UNIT_PRICE;
    let digits = max.to_string().len();
    let decimals = usize::from(Currency::all().map(Currency::exponent).max().unwrap_or(2));
    // 0.001 … 0.999: k leading zeros, then a non-zero digit and up to decimals-1-k more.
    let fractions: Vec<String> =
        (0..decimals).map(|k| format!("{}[1-9][0-9]{{0,{}}}", "0".repeat(k), decimals - 1 - k)).collect();
    format!(
        r"^({max}(\.0{{1,{decimals}}})?|[1-9][0-9]{{0,{}}}(\.[0-9]{{1,{decimals}}})?|0\.({}))$",
        digits - 2,
        fractions.join("|")
    )
}

impl utoipa::PartialSchema for Decimal {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::String))
                    .pattern(Some(price_pattern()))
                    .examples([serde_json::json!("100.00")]),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Number))
                    .exclusive_minimum(Some(0))
                    .maximum(Some(OrderItem::MAX_UNIT_PRICE))
                    .multiple_of(Some(
                        10f64.powi(-i32::from(Currency::all().map(Currency::exponent).max().unwrap_or(2))),
                    )),
            )
            .description(Some(
                "Unit price as a decimal string (exact) or a JSON number: above zero, at most 10000000, with no more \
                 decimals than the order's currency has (2 for most; 0 for JPY, KRW and the like; 3 for KWD, BHD, \
                 OMR, JOD, TND)",
            ))
            .into()
    }
}

impl ToSchema for Decimal {}

impl Decimal {
    /// The amount's decimal text. A JSON number's trailing fractional zeros carry no meaning in
    /// JSON (`2.50` and `2.5` are one number) and are dropped; a string is taken as written.
    pub fn into_text(self) -> String {
        match self {
            Decimal::Text(s) => s,
            Decimal::Number(n) => {
                let text = n.to_string();
                match text.split_once('.') {
                    Some((whole, fraction)) if !text.contains(['e', 'E']) => {
                        let fraction = fraction.trim_end_matches('0');
                        if fraction.is_empty() { whole.to_owned() } else { format!("{whole}.{fraction}") }
                    }
                    _ => text,
                }
            }
        }
    }
}

/// A JSON integer, also written with a zero fraction (`2.0` is the integer 2 in JSON Schema).
pub(crate) fn integral<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    integral_value(&n).ok_or_else(|| serde::de::Error::custom(format!("invalid type: {n}, expected an integer")))
}

/// [`integral`] for an optional field (`null` or absent is `None`).
pub(crate) fn optional_integral<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => integral_value(&n)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid type: {n}, expected an integer"))),
    }
}

fn integral_value(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15).map(|f| {
            #[allow(clippy::cast_possible_truncation)]
            let i = f as i64;
            i
        })
    })
}

/// An id given as a JSON integer or a string of digits.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdInput {
    /// `42` (or `42.0`).
    Number(#[serde(deserialize_with = "integral")] i64),
    /// `"42"`.
    Text(String),
}

impl utoipa::PartialSchema for IdInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Integer))
                    .minimum(Some(1))
                    .maximum(Some(i64::MAX)),
            )
            .item(ObjectBuilder::new().schema_type(SchemaType::new(Type::String)).pattern(Some("^[1-9][0-9]{0,17}$")))
            .description(Some("A positive id, as a JSON integer or a string of digits"))
            .into()
    }
}

impl ToSchema for IdInput {}

impl IdInput {
    /// The id, or `None` when it is not a positive integer.
    pub fn get(&self) -> Option<i64> {
        match self {
            IdInput::Number(n) => Some(*n),
            IdInput::Text(s) => s.trim().parse().ok(),
        }
        .filter(|n| *n > 0)
    }
}

/// `POST /accounts/register/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// 1-150 characters: letters, digits and `@ . + - _`.
    #[schema(example = "alice", min_length = 1, max_length = 150, pattern = "^[A-Za-z0-9@.+_-]+$")]
    pub username: String,
    /// Email address, where notifications go. Required (an absent, null or blank one is a
    /// field error); unique, case-insensitively.
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "alice@example.com", min_length = 3, max_length = 254)]
    pub email: Option<String>,
    /// 8-128 characters, not entirely numeric, not a common password, not the username.
    #[schema(example = "correct horse battery", min_length = 8, max_length = 128, pattern = "[^0-9]")]
    pub password: String,
}

/// An account.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    /// Account id.
    #[schema(example = 42)]
    pub id: i64,
    /// Username.
    #[schema(example = "alice")]
    pub username: String,
    /// Email address; empty when none was given.
    #[schema(example = "alice@example.com")]
    pub email: String,
    /// Staff may read every user's orders.
    #[schema(example = false)]
    pub is_staff: bool,
    /// `false` for a disabled account; absent for an active one (the original API's user has
    /// four fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        UserResponse {
            id: u.id.get(),
            username: u.username.to_string(),
            email: u.email.map(|e| e.to_string()).unwrap_or_default(),
            is_staff: u.is_staff,
            is_active: (!u.is_active).then_some(false),
        }
    }
}

/// `POST /token/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Username.
    #[schema(example = "alice")]
    pub username: String,
    /// Password.
    #[schema(example = "correct horse battery")]
    pub password: String,
}

/// `POST /token/refresh/` and `POST /token/revoke/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// A refresh token; each works once.
    #[schema(example = "eyJhbGciOiJIUzI1NiJ9.eyJ0eXAiOiJyZWZyZXNoIn0.c2lnbmF0dXJl")]
    pub refresh: String,
}

/// `POST /accounts/password/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordChangeRequest {
    /// The account's password now.
    #[schema(example = "correct horse battery")]
    pub current_password: String,
    /// At least 8 characters, not entirely numeric, not a common password, not the username.
    #[schema(example = "staple battery horse correct")]
    pub new_password: String,
}

/// A token pair.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Bearer token for API calls.
    #[schema(example = "eyJhbGciOiJIUzI1NiJ9.eyJ0eXAiOiJhY2Nlc3MifQ.c2lnbmF0dXJl")]
    pub access: String,
    /// Single-use token for `POST /token/refresh/`.
    #[schema(example = "eyJhbGciOiJIUzI1NiJ9.eyJ0eXAiOiJyZWZyZXNoIn0.c2lnbmF0dXJl")]
    pub refresh: String,
}

/// One line of a new order.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OrderItemRequest {
    /// 1-255 characters, not blank, no control characters.
    #[schema(
        example = "Widget",
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: String,
    /// 1 to 1,000,000.
    #[schema(example = 2, minimum = 1, maximum = 1000000)]
    #[serde(deserialize_with = "integral")]
    pub quantity: i64,
    /// Unit price above zero, at most 10,000,000, with at most the currency's minor digits.
    pub price: Decimal,
}

/// `POST /orders/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateOrderRequest {
    /// 1 to 100 items.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<OrderItemRequest>,
    /// ISO 4217 code; the server's default when absent.
    #[serde(default)]
    #[schema(value_type = Option<CurrencyCode>)]
    pub currency: Option<String>,
}

pub use crate::order_json::{OrderItemResponse, OrderResponse};

/// One recorded status change of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderEventResponse {
    /// Status before (null for the creation).
    pub from: Option<String>,
    /// Status after.
    #[schema(example = "PAID")]
    pub to: String,
    /// `user:<id>` or `system`.
    #[schema(example = "user:42")]
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// When.
    #[schema(example = "2026-11-30T09:16:30Z")]
    pub at: DateTime<Utc>,
}

impl From<OrderEvent> for OrderEventResponse {
    fn from(e: OrderEvent) -> Self {
        OrderEventResponse {
            from: e.from.map(|s| s.as_str().to_owned()),
            to: e.to.as_str().to_owned(),
            actor: e.actor.to_string(),
            reason: e.reason,
            at: e.at,
        }
    }
}

/// A payment status (documentation).
#[derive(Debug, ToSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms, dead_code)]
pub enum PaymentStatusSchema {
    /// Initiated, awaiting confirmation.
    PENDING,
    /// Captured; its order is paid.
    SUCCESS,
    /// Declined.
    FAILED,
    /// Voided with its order.
    CANCELLED,
    /// Captured, then partly refunded.
    PARTIALLY_REFUNDED,
    /// Captured, then fully refunded.
    REFUNDED,
}

/// Liveness / readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// What an operator must know while it holds (e.g. payments go through the mock provider).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `/readyz` with read replicas (`SOM_DATABASE_READ_URLS`): each as last checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaHealth>,
}

/// A read replica as last checked.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaHealth {
    /// Its URL without credentials.
    pub location: String,
    /// `streaming` (serving reads), or skipped: `lagging` (further behind than
    /// `SOM_REPLICA_MAX_LAG`), `promoted` (no longer a replica), `down` or `starting`.
    pub state: String,
    /// How far behind the primary it was, in seconds.
    pub lag_seconds: Option<f64>,
    /// Reads it has served since this process started.
    pub reads: u64,
    /// Why it is `down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<som_core::storage::ReplicaStatus> for ReplicaHealth {
    fn from(r: som_core::storage::ReplicaStatus) -> Self {
        ReplicaHealth {
            location: r.location,
            state: r.state.to_owned(),
            lag_seconds: r.lag.map(|l| l.as_secs_f64()),
            reads: r.reads,
            error: r.error,
        }
    }
}

/// `PATCH /users/{id}/`: the fields to change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatchRequest {
    /// Grant or revoke staff.
    #[serde(default)]
    pub is_staff: Option<bool>,
    /// Enable or disable the account; disabling ends every session of it at once.
    #[serde(default)]
    pub is_active: Option<bool>,
}

/// An account as staff see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaffUserResponse {
    /// Account id.
    #[schema(example = 42)]
    pub id: i64,
    /// Username.
    #[schema(example = "alice")]
    pub username: String,
    /// Email address; empty when none was given.
    #[schema(example = "alice@example.com")]
    pub email: String,
    /// Staff flag.
    pub is_staff: bool,
    /// False for a disabled account.
    pub is_active: bool,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

impl From<User> for StaffUserResponse {
    fn from(u: User) -> Self {
        StaffUserResponse {
            id: u.id.get(),
            username: u.username.to_string(),
            email: u.email.map(|e| e.to_string()).unwrap_or_default(),
            is_staff: u.is_staff,
            is_active: u.is_active,
            created_at: u.created_at,
        }
    }
}

/// One notification (a row of the outbox) and its delivery state.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationResponse {
    /// Notification id.
    #[schema(example = 12)]
    pub id: i64,
    /// What happened: order_created, payment_succeeded, payment_failed, order_cancelled,
    /// refund_issued, or staff_alert (money matters sent to staff).
    #[schema(example = "order_created")]
    pub kind: String,
    /// The order it is about.
    #[schema(example = 1001)]
    pub order: i64,
    /// Delivery channel: log, smtp or webhook.
    #[schema(example = "smtp")]
    pub channel: String,
    /// Where it goes, when known.
    pub recipient: Option<String>,
    /// The message's subject.
    #[schema(example = "Order Created Successfully")]
    pub subject: String,
    /// pending, sent, dead or skipped.
    #[schema(example = "sent")]
    pub status: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Not attempted again before this time.
    pub next_attempt_at: DateTime<Utc>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it was delivered.
    pub sent_at: Option<DateTime<Utc>>,
}

impl From<OutboxEntry> for NotificationResponse {
    fn from(n: OutboxEntry) -> Self {
        NotificationResponse {
            id: n.id.get(),
            kind: n.kind.as_str().to_owned(),
            order: n.message.order_id.get(),
            channel: n.channel,
            recipient: n.recipient,
            subject: n.message.subject,
            status: n.status.as_str().to_owned(),
            attempts: n.attempts,
            next_attempt_at: n.next_attempt_at,
            last_error: n.last_error,
            created_at: n.created_at,
            sent_at: n.sent_at,
        }
    }
}

/// How many notifications are in each delivery state.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct NotificationCounts {
    /// Waiting for (another) delivery attempt.
    pub pending: u64,
    /// Delivered.
    pub sent: u64,
    /// Given up on; may be retried.
    pub dead: u64,
    /// Nothing to deliver on their channel.
    pub skipped: u64,
}
