//! Payments and their state machine.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Currency, Money, OrderId, PaymentId, UserId};

/// Where a payment is in its life.
///
/// `PENDING → SUCCESS | FAILED | CANCELLED` (automatic capture), `PENDING → AUTHORIZED →
/// SUCCESS | VOIDED | EXPIRED` (manual capture), `SUCCESS → PARTIALLY_REFUNDED → REFUNDED` (or
/// `SUCCESS → REFUNDED` at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Initiated with the provider, awaiting confirmation.
    Pending,
    /// Manual capture: the payer's money is held (authorised), nothing is captured yet.
    Authorized,
    /// The provider captured the money; the order is paid.
    Success,
    /// The provider declined; a new attempt may be made.
    Failed,
    /// Voided because its order was cancelled.
    Cancelled,
    /// Captured, then part of it was returned to the payer.
    PartiallyRefunded,
    /// Captured, then all of it was returned to the payer.
    Refunded,
    /// Manual capture: the authorisation was released without capturing anything.
    Voided,
    /// Manual capture: the authorisation ran out before it was captured, and was released.
    Expired,
}

impl PaymentStatus {
    /// All statuses.
    pub const ALL: [PaymentStatus; 9] = [
        PaymentStatus::Pending,
        PaymentStatus::Authorized,
        PaymentStatus::Success,
        PaymentStatus::Failed,
        PaymentStatus::Cancelled,
        PaymentStatus::PartiallyRefunded,
        PaymentStatus::Refunded,
        PaymentStatus::Voided,
        PaymentStatus::Expired,
    ];

    /// The statuses at which SOM has ended a payment that took no money (declined, voided with
    /// its order, an authorisation released or run out): its provider side is closed so that
    /// it cannot take money later, and money that arrives anyway is returned.
    pub const ENDED_UNCAPTURED: [PaymentStatus; 4] =
        [PaymentStatus::Failed, PaymentStatus::Cancelled, PaymentStatus::Voided, PaymentStatus::Expired];

    /// The upper-case name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "PENDING",
            PaymentStatus::Authorized => "AUTHORIZED",
            PaymentStatus::Success => "SUCCESS",
            PaymentStatus::Failed => "FAILED",
            PaymentStatus::Cancelled => "CANCELLED",
            PaymentStatus::PartiallyRefunded => "PARTIALLY_REFUNDED",
            PaymentStatus::Refunded => "REFUNDED",
            PaymentStatus::Voided => "VOIDED",
            PaymentStatus::Expired => "EXPIRED",
        }
    }

    /// Parses a status name, case-insensitively.
    pub fn parse(raw: &str) -> Option<PaymentStatus> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(raw.trim()))
    }

    /// PENDING, AUTHORIZED and SUCCESS: at most one such payment exists per order.
    pub const LIVE: [PaymentStatus; 3] = [PaymentStatus::Pending, PaymentStatus::Authorized, PaymentStatus::Success];

    /// True for the [`PaymentStatus::LIVE`] statuses.
    pub fn is_live(self) -> bool {
        Self::LIVE.contains(&self)
    }

    /// Names of `statuses` as stored, to bind as a list parameter.
    pub fn names(statuses: &[PaymentStatus]) -> Vec<&'static str> {
        statuses.iter().map(|s| s.as_str()).collect()
    }

    /// `PENDING → SUCCESS` (captured) or `PENDING → FAILED` (declined). `None` from any other
    /// status.
    pub fn complete(self, captured: bool) -> Option<PaymentStatus> {
        (self == PaymentStatus::Pending).then_some(if captured {
            PaymentStatus::Success
        } else {
            PaymentStatus::Failed
        })
    }

    /// `PENDING → AUTHORIZED`: manual capture, the money is held. `None` from any other status.
    pub fn authorize(self) -> Option<PaymentStatus> {
        (self == PaymentStatus::Pending).then_some(PaymentStatus::Authorized)
    }

    /// `AUTHORIZED → SUCCESS`: all or part of the authorisation was captured. `None` from any
    /// other status.
    pub fn capture(self) -> Option<PaymentStatus> {
        (self == PaymentStatus::Authorized).then_some(PaymentStatus::Success)
    }

    /// `AUTHORIZED → VOIDED` (released on request) or `AUTHORIZED → EXPIRED` (released because
    /// it ran out). `None` from any other status.
    pub fn release(self, expired: bool) -> Option<PaymentStatus> {
        (self == PaymentStatus::Authorized).then_some(if expired {
            PaymentStatus::Expired
        } else {
            PaymentStatus::Voided
        })
    }

    /// `PENDING → CANCELLED`: voided with its order. `None` from any other status.
    pub fn void(self) -> Option<PaymentStatus> {
        (self == PaymentStatus::Pending).then_some(PaymentStatus::Cancelled)
    }

    /// True once money was captured (whatever has been refunded of it since).
    pub fn was_captured(self) -> bool {
        matches!(self, PaymentStatus::Success | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded)
    }

    /// True only while the payer may still finish paying (PENDING): the payment's
    /// `client_secret` and `next_action` are served only then, so that a payment SOM has ended
    /// cannot be completed with them.
    pub fn awaits_payer(self) -> bool {
        self == PaymentStatus::Pending
    }

    /// `REFUNDED | PARTIALLY_REFUNDED → PARTIALLY_REFUNDED | SUCCESS`: a refund that had
    /// succeeded failed at the provider after all; `still_refunded` when other refunds remain.
    /// `None` from any other status.
    pub fn refund_reversed(self, still_refunded: bool) -> Option<PaymentStatus> {
        matches!(self, PaymentStatus::Refunded | PaymentStatus::PartiallyRefunded).then_some(if still_refunded {
            PaymentStatus::PartiallyRefunded
        } else {
            PaymentStatus::Success
        })
    }

    /// The statuses a payment may be refunded from: captured ones, or — for money the provider
    /// captured after SOM had ended the payment (`late_capture`) — the ended ones.
    pub fn refundable_from(late_capture: bool) -> &'static [PaymentStatus] {
        if late_capture { &Self::ENDED_UNCAPTURED } else { &[PaymentStatus::Success, PaymentStatus::PartiallyRefunded] }
    }

    /// True when money was captured and some of it may still be returned.
    pub fn is_refundable(self) -> bool {
        matches!(self, PaymentStatus::Success | PaymentStatus::PartiallyRefunded)
    }

    /// `SUCCESS | PARTIALLY_REFUNDED → PARTIALLY_REFUNDED | REFUNDED`: a refund succeeded;
    /// `fully` when nothing of the payment is left. `None` from any other status.
    pub fn refund(self, fully: bool) -> Option<PaymentStatus> {
        self.is_refundable().then_some(if fully { PaymentStatus::Refunded } else { PaymentStatus::PartiallyRefunded })
    }
}

/// When a payment's money moves: at confirmation (`automatic`, the default) or when staff
/// capture it later (`manual`: confirmation only authorises).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    /// Confirmation captures the whole amount.
    #[default]
    Automatic,
    /// Confirmation authorises; a capture (of all or part) or a void follows.
    Manual,
}

impl CaptureMethod {
    /// `automatic` or `manual`, as stored and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMethod::Automatic => "automatic",
            CaptureMethod::Manual => "manual",
        }
    }

    /// Parses `automatic` or `manual`, case-insensitively.
    pub fn parse(raw: &str) -> Option<CaptureMethod> {
        [CaptureMethod::Automatic, CaptureMethod::Manual]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(raw.trim()))
    }
}

impl fmt::Display for CaptureMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an AUTHORIZED payment is being ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SettleAction {
    /// Capturing all or part of it.
    Capture,
    /// Releasing it on request.
    Void,
    /// Releasing it because its authorisation ran out.
    Expire,
}

impl SettleAction {
    /// `capture`, `void` or `expire`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            SettleAction::Capture => "capture",
            SettleAction::Void => "void",
            SettleAction::Expire => "expire",
        }
    }

    /// Parses a name as written by [`SettleAction::as_str`].
    pub fn parse(raw: &str) -> Option<SettleAction> {
        [SettleAction::Capture, SettleAction::Void, SettleAction::Expire].into_iter().find(|a| a.as_str() == raw)
    }

    /// `captured`, `voided`, `expired`: for messages.
    pub fn past(self) -> &'static str {
        match self {
            SettleAction::Capture => "captured",
            SettleAction::Void => "voided",
            SettleAction::Expire => "expired",
        }
    }
}

/// A settlement of an AUTHORIZED payment that was claimed and has not finished yet: the
/// provider is being (or was, before a crash) asked, with the key
/// [`Payment::capture_idempotency_key`] for a capture. Exactly one settlement is claimed per
/// payment; the dispatcher finishes one left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// What is being done.
    pub action: SettleAction,
    /// For a capture: how much.
    pub amount: Money,
    /// When it was claimed.
    pub started_at: DateTime<Utc>,
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored payment attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "PaymentWire", try_from = "PaymentWire")]
pub struct Payment {
    /// The payment id.
    pub id: PaymentId,
    /// The order it pays.
    pub order_id: OrderId,
    /// The order's owner.
    pub user_id: UserId,
    /// Which provider handled it (`mock`, `stripe`).
    pub provider: String,
    /// The provider's id for it (a PaymentIntent id, say).
    pub provider_payment_id: String,
    /// SOM's own unique reference for this attempt.
    pub transaction_id: String,
    /// The payment method asked for (`mock_success`, a card token).
    pub method: String,
    /// 1 for the first attempt on the order, 2 after one failure, …
    pub attempt: u32,
    /// Always the order's total: what was authorised (and, with automatic capture, captured).
    pub amount: Money,
    /// `automatic` (confirmation captures) or `manual` (confirmation authorises).
    pub capture_method: CaptureMethod,
    /// How much was captured: the whole amount once an automatic payment succeeded; what a
    /// manual capture took (perhaps less than authorised); zero before. Refunds apply to it.
    pub captured: Money,
    /// While AUTHORIZED: when the authorisation runs out (it is then voided and EXPIRED).
    pub authorization_expires_at: Option<DateTime<Utc>>,
    /// A capture, void or expiry claimed and not finished yet (not part of the JSON).
    pub settlement: Option<Settlement>,
    /// How much of it has been returned by succeeded refunds.
    pub refunded: Money,
    /// How much refunds still in flight (PENDING) have set aside.
    pub refund_pending: Money,
    /// Where it is in its life.
    pub status: PaymentStatus,
    /// Why it failed, when it did.
    pub failure_reason: Option<String>,
    /// The secret a front end passes to the provider's client library to finish the payment
    /// itself (Stripe's `client_secret`); `None` for providers without one.
    pub client_secret: Option<String>,
    /// While PENDING: what the payer must do before the payment can complete (3-D Secure, a
    /// redirect), in the provider's own words (Stripe's `next_action` object).
    pub next_action: Option<serde_json::Value>,
    /// When it was initiated.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct PaymentWire {
    id: PaymentId,
    order: OrderId,
    user: UserId,
    provider: String,
    transaction_id: String,
    provider_payment_id: String,
    method: String,
    attempt: u32,
    amount: String,
    #[serde(default)]
    capture_method: CaptureMethod,
    #[serde(default)]
    captured_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    authorization_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    refunded_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refund_pending_amount: Option<String>,
    currency: Currency,
    status: PaymentStatus,
    failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_action: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Payment> for PaymentWire {
    fn from(p: Payment) -> Self {
        PaymentWire {
            id: p.id,
            order: p.order_id,
            user: p.user_id,
            provider: p.provider,
            transaction_id: p.transaction_id,
            provider_payment_id: p.provider_payment_id,
            method: p.method,
            attempt: p.attempt,
            amount: p.amount.amount_string(),
            capture_method: p.capture_method,
            captured_amount: Some(p.captured.amount_string()),
            authorization_expires_at: p.authorization_expires_at,
            refunded_amount: Some(p.refunded.amount_string()),
            refund_pending_amount: p.refund_pending.is_positive().then(|| p.refund_pending.amount_string()),
            currency: p.amount.currency(),
            status: p.status,
            failure_reason: p.failure_reason,
            client_secret: p.client_secret,
            next_action: p.next_action,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

impl TryFrom<PaymentWire> for Payment {
    type Error = super::MoneyError;
    fn try_from(w: PaymentWire) -> Result<Self, Self::Error> {
        Ok(Payment {
            id: w.id,
            order_id: w.order,
            user_id: w.user,
            provider: w.provider,
            provider_payment_id: w.provider_payment_id,
            transaction_id: w.transaction_id,
            method: w.method,
            attempt: w.attempt,
            amount: Money::parse(&w.amount, w.currency)?,
            capture_method: w.capture_method,
            // Written before partial capture existed: a captured payment took its amount.
            captured: match w.captured_amount.as_deref() {
                Some(text) => Money::parse(text, w.currency)?,
                None if w.status.was_captured() => Money::parse(&w.amount, w.currency)?,
                None => Money::zero(w.currency),
            },
            authorization_expires_at: w.authorization_expires_at,
            settlement: None,
            refunded: optional_money(w.refunded_amount.as_deref(), w.currency)?,
            refund_pending: optional_money(w.refund_pending_amount.as_deref(), w.currency)?,
            status: w.status,
            failure_reason: w.failure_reason,
            client_secret: w.client_secret,
            next_action: w.next_action,
            created_at: w.created_at,
            updated_at: w.updated_at,
        })
    }
}

fn optional_money(text: Option<&str>, currency: Currency) -> Result<Money, super::MoneyError> {
    text.map_or(Ok(Money::zero(currency)), |t| Money::parse(t, currency))
}

impl Payment {
    /// What may still be refunded: what was captured less what succeeded and what is in flight.
    pub fn refundable(&self) -> Money {
        Money::from_minor(
            self.captured.minor() - self.refunded.minor() - self.refund_pending.minor(),
            self.amount.currency(),
        )
    }

    /// `som-capture-{id}-{claim}`: every try of one claimed capture (a retry after a timeout,
    /// the dispatcher after a crash) sends the same key, so the provider captures once; a new
    /// claim after a declined one sends a new key, so the provider does not replay the decline.
    pub fn capture_idempotency_key(&self, claim: &Settlement) -> String {
        format!("som-capture-{}-{}", self.id, claim.started_at.timestamp_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_and_success_are_live() {
        let live: Vec<_> = PaymentStatus::ALL.into_iter().filter(|s| s.is_live()).collect();
        assert_eq!(live, vec![PaymentStatus::Pending, PaymentStatus::Authorized, PaymentStatus::Success]);
        assert_eq!(PaymentStatus::Pending.authorize(), Some(PaymentStatus::Authorized));
        assert_eq!(PaymentStatus::Authorized.capture(), Some(PaymentStatus::Success));
        assert_eq!(PaymentStatus::Authorized.release(false), Some(PaymentStatus::Voided));
        assert_eq!(PaymentStatus::Authorized.release(true), Some(PaymentStatus::Expired));
        for s in PaymentStatus::ALL.into_iter().filter(|s| *s != PaymentStatus::Authorized) {
            assert_eq!((s.capture(), s.release(false)), (None, None), "{s}");
        }
        assert_eq!(PaymentStatus::Authorized.refund(false), None);
        assert_eq!(CaptureMethod::parse(" Manual"), Some(CaptureMethod::Manual));
        assert_eq!(CaptureMethod::parse("later"), None);
        assert_eq!(PaymentStatus::parse("success"), Some(PaymentStatus::Success));
        assert_eq!(PaymentStatus::parse("paid"), None);
        assert_eq!(PaymentStatus::Pending.complete(true), Some(PaymentStatus::Success));
        assert_eq!(PaymentStatus::Pending.complete(false), Some(PaymentStatus::Failed));
        assert_eq!(PaymentStatus::Pending.void(), Some(PaymentStatus::Cancelled));
        assert_eq!(PaymentStatus::Success.complete(true), None);
        let waiting: Vec<_> = PaymentStatus::ALL.into_iter().filter(|s| s.awaits_payer()).collect();
        assert_eq!(waiting, vec![PaymentStatus::Pending]);
        assert_eq!(PaymentStatus::Failed.void(), None);
        assert_eq!(PaymentStatus::Success.refund(false), Some(PaymentStatus::PartiallyRefunded));
        assert_eq!(PaymentStatus::PartiallyRefunded.refund(true), Some(PaymentStatus::Refunded));
        for s in [PaymentStatus::Pending, PaymentStatus::Failed, PaymentStatus::Cancelled, PaymentStatus::Refunded] {
            assert_eq!(s.refund(true), None);
        }
        assert_eq!(PaymentStatus::Refunded.refund_reversed(false), Some(PaymentStatus::Success));
        assert_eq!(PaymentStatus::Refunded.refund_reversed(true), Some(PaymentStatus::PartiallyRefunded));
        assert_eq!(PaymentStatus::Success.refund_reversed(false), None);
    }

    #[test]
    fn payments_round_trip_through_json() {
        let p = Payment {
            id: PaymentId::new(3),
            order_id: OrderId::new(1),
            user_id: UserId::new(2),
            provider: "mock".into(),
            provider_payment_id: "mock_pi_1".into(),
            transaction_id: "txn_1".into(),
            method: "mock_success".into(),
            attempt: 1,
            amount: Money::from_minor(25000, Currency::USD),
            capture_method: CaptureMethod::Manual,
            captured: Money::zero(Currency::USD),
            authorization_expires_at: Some(Utc::now()),
            settlement: None,
            refunded: Money::zero(Currency::USD),
            refund_pending: Money::zero(Currency::USD),
            status: PaymentStatus::Pending,
            failure_reason: None,
            client_secret: Some("pi_1_secret_x".into()),
            next_action: Some(serde_json::json!({"type": "use_stripe_sdk"})),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["amount"], "250.00");
        assert_eq!(json["order"], 1);
        assert_eq!(serde_json::from_value::<Payment>(json).unwrap(), p);
    }
}
