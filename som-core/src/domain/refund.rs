//! Refunds: money returned on a captured payment, in full or in part.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Actor, Currency, Money, OrderId, PaymentId, RefundId, UserId};

/// Where a refund is in its life: `PENDING → SUCCEEDED | FAILED`.
///
/// A PENDING refund has set its amount aside on the payment (so that concurrent refunds can
/// never return more than was captured) and is waiting for the provider's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    /// Amount set aside; the provider has not answered yet.
    Pending,
    /// The provider returned the money.
    Succeeded,
    /// The provider refused; the amount is available again.
    Failed,
}

impl RefundStatus {
    /// All statuses.
    pub const ALL: [RefundStatus; 3] = [RefundStatus::Pending, RefundStatus::Succeeded, RefundStatus::Failed];

    /// The upper-case name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "PENDING",
            RefundStatus::Succeeded => "SUCCEEDED",
            RefundStatus::Failed => "FAILED",
        }
    }

    /// Parses a status name, case-insensitively.
    pub fn parse(raw: &str) -> Option<RefundStatus> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(raw.trim()))
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refund as a caller asks for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundInput {
    /// How much, as a decimal string in the payment's currency; everything not yet refunded
    /// (nor being refunded) when `None`.
    pub amount: Option<String>,
    /// Why, for the record and the customer's message (at most 500 characters).
    pub reason: Option<String>,
}

impl RefundInput {
    /// Longest reason, in characters.
    pub const MAX_REASON_CHARS: usize = 500;
}

/// A stored refund. Its JSON has the HTTP API's field names (`payment`, `order`, `amount` as a
/// decimal string with `currency`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RefundWire", try_from = "RefundWire")]
pub struct Refund {
    /// The refund id.
    pub id: RefundId,
    /// The payment it returns money from.
    pub payment_id: PaymentId,
    /// The payment's order.
    pub order_id: OrderId,
    /// The order's owner.
    pub user_id: UserId,
    /// How much, in the payment's currency.
    pub amount: Money,
    /// Where it is in its life.
    pub status: RefundStatus,
    /// The provider's id for it, once the provider accepted it.
    pub provider_refund_id: Option<String>,
    /// Why it was made.
    pub reason: Option<String>,
    /// Why the provider refused it, when it did.
    pub failure_reason: Option<String>,
    /// Who asked for it.
    pub actor: Actor,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

impl Refund {
    /// The key sent to the provider: the same refund always sends the same key, so a retry
    /// (by the caller or by the worker after a crash) can never return the money twice.
    pub fn provider_idempotency_key(&self) -> String {
        format!("som-refund-{}", self.id)
    }
}

#[derive(Serialize, Deserialize)]
struct RefundWire {
    id: RefundId,
    payment: PaymentId,
    order: OrderId,
    user: UserId,
    amount: String,
    currency: Currency,
    status: RefundStatus,
    provider_refund_id: Option<String>,
    reason: Option<String>,
    failure_reason: Option<String>,
    actor: Actor,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Refund> for RefundWire {
    fn from(r: Refund) -> Self {
        RefundWire {
            id: r.id,
            payment: r.payment_id,
            order: r.order_id,
            user: r.user_id,
            amount: r.amount.amount_string(),
            currency: r.amount.currency(),
            status: r.status,
            provider_refund_id: r.provider_refund_id,
            reason: r.reason,
            failure_reason: r.failure_reason,
            actor: r.actor,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl TryFrom<RefundWire> for Refund {
    type Error = super::MoneyError;
    fn try_from(w: RefundWire) -> Result<Self, Self::Error> {
        Ok(Refund {
            id: w.id,
            payment_id: w.payment,
            order_id: w.order,
            user_id: w.user,
            amount: Money::parse(&w.amount, w.currency)?,
            status: w.status,
            provider_refund_id: w.provider_refund_id,
            reason: w.reason,
            failure_reason: w.failure_reason,
            actor: w.actor,
            created_at: w.created_at,
            updated_at: w.updated_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refunds_round_trip_through_json() {
        let r = Refund {
            id: RefundId::new(5),
            payment_id: PaymentId::new(3),
            order_id: OrderId::new(1),
            user_id: UserId::new(2),
            amount: Money::from_minor(150, Currency::USD),
            status: RefundStatus::Pending,
            provider_refund_id: None,
            reason: Some("damaged".into()),
            failure_reason: None,
            actor: Actor::System,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!((json["amount"].as_str(), json["currency"].as_str()), (Some("1.50"), Some("USD")));
        assert_eq!((json["payment"].as_i64(), json["order"].as_i64()), (Some(3), Some(1)));
        assert_eq!(json["status"], "PENDING");
        assert_eq!(serde_json::from_value::<Refund>(json).unwrap(), r);
        assert_eq!(r.provider_idempotency_key(), "som-refund-5");
        assert_eq!(RefundStatus::parse("succeeded"), Some(RefundStatus::Succeeded));
    }
}
