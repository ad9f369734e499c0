//! Refunds: money returned on a captured payment, in full or in part.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Actor, Money, OrderId, PaymentId, RefundId, UserId};

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

/// A stored refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(with = "money_text")]
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

/// `{"amount": "1.00", "currency": "USD"}` inside a refund's JSON.
mod money_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::domain::{Currency, Money};

    #[derive(Serialize, Deserialize)]
    struct Wire {
        amount: String,
        currency: Currency,
    }

    pub fn serialize<S: Serializer>(m: &Money, s: S) -> Result<S::Ok, S::Error> {
        Wire { amount: m.amount_string(), currency: m.currency() }.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        let w = Wire::deserialize(d)?;
        Money::parse(&w.amount, w.currency).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

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
        assert_eq!(json["amount"]["amount"], "1.50");
        assert_eq!(json["status"], "PENDING");
        assert_eq!(serde_json::from_value::<Refund>(json).unwrap(), r);
        assert_eq!(r.provider_idempotency_key(), "som-refund-5");
        assert_eq!(RefundStatus::parse("succeeded"), Some(RefundStatus::Succeeded));
    }
}
