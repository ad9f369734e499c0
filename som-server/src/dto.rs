//! The JSON shapes of the HTTP API (field names of the original service), with their
//! OpenAPI schemas.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use som_core::domain::{Order, OrderEvent, Payment, User};
use utoipa::ToSchema;

/// A decimal amount given as a JSON string (`"100.00"`, exact) or number (`100.5`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Decimal {
    /// `"100.00"`.
    Text(String),
    /// `100.5`.
    #[schema(value_type = f64)]
    Number(serde_json::Number),
}

impl Decimal {
    /// The amount's decimal text.
    pub fn into_text(self) -> String {
        match self {
            Decimal::Text(s) => s,
            Decimal::Number(n) => n.to_string(),
        }
    }
}

/// An id given as a JSON integer or a string of digits.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum IdInput {
    /// `42`.
    Number(i64),
    /// `"42"`.
    Text(String),
}

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
    #[schema(example = "alice")]
    pub username: String,
    /// Optional email address.
    #[serde(default)]
    #[schema(example = "alice@example.com")]
    pub email: Option<String>,
    /// At least 8 characters, not entirely numeric, not a common password.
    #[schema(example = "correct horse battery")]
    pub password: String,
}

/// An account.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    /// Account id.
    pub id: i64,
    /// Username.
    pub username: String,
    /// Email address; empty when none was given.
    pub email: String,
    /// Staff may read every user's orders.
    pub is_staff: bool,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        UserResponse {
            id: u.id.get(),
            username: u.username.to_string(),
            email: u.email.map(|e| e.to_string()).unwrap_or_default(),
            is_staff: u.is_staff,
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

/// `POST /token/refresh/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// A refresh token; each works once.
    pub refresh: String,
}

/// A token pair.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Bearer token for API calls.
    pub access: String,
    /// Single-use token for `POST /token/refresh/`.
    pub refresh: String,
}

/// One line of a new order.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OrderItemRequest {
    /// 1-255 characters.
    #[schema(example = "Widget")]
    pub name: String,
    /// 1 to 1,000,000.
    #[schema(example = 2, minimum = 1, maximum = 1000000)]
    pub quantity: i64,
    /// Unit price above zero, with at most the currency's minor digits.
    #[schema(example = "100.00")]
    pub price: Decimal,
}

/// `POST /orders/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateOrderRequest {
    /// 1 to 100 items.
    pub items: Vec<OrderItemRequest>,
    /// ISO 4217 code; the server's default when absent.
    #[serde(default)]
    #[schema(example = "USD")]
    pub currency: Option<String>,
}

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemResponse {
    /// Item name.
    pub name: String,
    /// How many.
    pub quantity: i64,
    /// Unit price with the currency's digits.
    #[schema(example = "100.00")]
    pub price: String,
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderResponse {
    /// Order id.
    pub id: i64,
    /// Owner's user id.
    pub user: i64,
    /// Items in submitted order.
    pub items: Vec<OrderItemResponse>,
    /// Σ quantity × price, exact, with the currency's digits.
    #[schema(example = "250.00")]
    pub total_amount: String,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
    /// CREATED, PAID, CANCELLED or REFUNDED.
    #[schema(example = "CREATED")]
    pub status: String,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Order> for OrderResponse {
    fn from(o: Order) -> Self {
        OrderResponse {
            id: o.id.get(),
            user: o.user_id.get(),
            total_amount: o.total.amount_string(),
            currency: o.currency().code().to_owned(),
            items: o
                .items
                .into_iter()
                .map(|i| OrderItemResponse { price: i.price.amount_string(), name: i.name, quantity: i.quantity })
                .collect(),
            status: o.status.as_str().to_owned(),
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// One recorded status change of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderEventResponse {
    /// Status before (null for the creation).
    pub from: Option<String>,
    /// Status after.
    pub to: String,
    /// `user:<id>` or `system`.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// When.
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

/// `POST /payments/initiate/` (and `POST /payments/`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct InitiatePaymentRequest {
    /// The order to pay.
    #[schema(value_type = i64, example = 1)]
    pub order_id: IdInput,
    /// Payment method; with the mock provider: mock_success (default), mock_decline,
    /// mock_insufficient_funds, mock_transient_error.
    #[serde(default)]
    #[schema(example = "mock_success")]
    pub method: Option<String>,
}

/// `POST /payments/confirm/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfirmPaymentRequest {
    /// The payment to confirm.
    #[schema(value_type = i64, example = 1)]
    pub payment_id: IdInput,
}

/// A payment.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentResponse {
    /// Payment id.
    pub id: i64,
    /// The order it pays.
    pub order: i64,
    /// Provider name.
    #[schema(example = "mock")]
    pub provider: String,
    /// SOM's unique reference for this attempt.
    pub transaction_id: String,
    /// The provider's id for the payment.
    pub provider_payment_id: String,
    /// The payment method asked for.
    pub method: String,
    /// The amount, equal to the order total.
    #[schema(example = "250.00")]
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// PENDING, SUCCESS, FAILED, CANCELLED or REFUNDED.
    #[schema(example = "PENDING")]
    pub status: String,
    /// Why it failed, when it did.
    pub failure_reason: Option<String>,
    /// When it was initiated.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
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
            currency: p.amount.currency().code().to_owned(),
            status: p.status.as_str().to_owned(),
            failure_reason: p.failure_reason,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// Liveness / readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
}
