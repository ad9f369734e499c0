//! The events SOM tells people about, and the messages it writes for them.

use std::fmt;

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use super::{NotificationId, Order, OrderId, Payment, PaymentId, Refund, RefundId, User, UserId};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An order was placed.
    OrderCreated,
    /// A payment succeeded and its order is paid.
    PaymentSucceeded,
    /// A payment was declined.
    PaymentFailed,
    /// A payment was authorised (manual capture): the money is held, not yet taken.
    PaymentAuthorized,
    /// An authorised payment was captured (all or part) and its order is paid.
    PaymentCaptured,
    /// An authorised payment was released without taking money (voided, or it expired).
    PaymentVoided,
    /// An order was cancelled.
    OrderCancelled,
    /// Money was returned on a payment.
    RefundIssued,
    /// Something about money that staff must look at (money taken for an ended payment, a
    /// provider event that contradicts SOM, a refund that failed at the provider); sent to
    /// every active staff account.
    StaffAlert,
}

impl EventKind {
    /// The snake_case name used in storage, JSON and dedupe keys.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OrderCreated => "order_created",
            EventKind::PaymentSucceeded => "payment_succeeded",
            EventKind::PaymentFailed => "payment_failed",
            EventKind::PaymentAuthorized => "payment_authorized",
            EventKind::PaymentCaptured => "payment_captured",
            EventKind::PaymentVoided => "payment_voided",
            EventKind::OrderCancelled => "order_cancelled",
            EventKind::RefundIssued => "refund_issued",
            EventKind::StaffAlert => "staff_alert",
        }
    }

    /// Parses a name as written by [`EventKind::as_str`].
    pub fn parse(raw: &str) -> Option<EventKind> {
        [
            EventKind::OrderCreated,
            EventKind::PaymentSucceeded,
            EventKind::PaymentFailed,
            EventKind::PaymentAuthorized,
            EventKind::PaymentCaptured,
            EventKind::PaymentVoided,
            EventKind::OrderCancelled,
            EventKind::RefundIssued,
            EventKind::StaffAlert,
        ]
        .into_iter()
        .find(|k| k.as_str() == raw)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An item line as it appears in a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageItem {
    /// Item name.
    pub name: String,
    /// How many.
    pub quantity: i64,
    /// Unit price, with the currency's digits.
    pub price: String,
}

/// Everything a notifier needs to tell the user about one event; stored as the outbox payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// What happened.
    pub kind: EventKind,
    /// The user it concerns.
    pub user_id: UserId,
    /// Their username.
    pub username: String,
    /// Their email, when they have one.
    pub email: Option<String>,
    /// The order.
    pub order_id: OrderId,
    /// The payment, for payment and refund events.
    pub payment_id: Option<PaymentId>,
    /// The refund, for refund events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<RefundId>,
    /// For staff alerts: what happened, once (`late_capture:payment:7`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// The amount, with the currency's digits.
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The order's items.
    pub items: Vec<MessageItem>,
    /// Why, for failures and cancellations.
    pub reason: Option<String>,
    /// One-line subject.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
}

impl Message {
    /// The message for `kind` about `order` (and `payment` when there is one).
    pub fn new(
        kind: EventKind,
        user: &User,
        order: &Order,
        payment: Option<&Payment>,
        reason: Option<&str>,
    ) -> Message {
        let amount = match payment {
            Some(p) if kind == EventKind::PaymentCaptured => p.captured,
            Some(p) => p.amount,
            None => order.total,
        };
        let money = amount.to_string();
        let id = order.id;
        let (subject, text) = match kind {
            EventKind::OrderCreated => (
                "Order Created Successfully".to_owned(),
                format!("Your order #{id} has been created successfully. Total amount: {money}."),
            ),
            EventKind::PaymentSucceeded => (
                "Payment Successful".to_owned(),
                format!("Payment for your order #{id} was successful. Amount paid: {money}."),
            ),
            EventKind::PaymentFailed => (
                "Payment Failed".to_owned(),
                format!(
                    "Payment for your order #{id} of {money} failed: {}. You can try again.",
                    reason.unwrap_or("declined")
                ),
            ),
            EventKind::PaymentAuthorized => (
                "Payment Authorised".to_owned(),
                format!(
                    "Payment for your order #{id} was authorised: {money} is held on your payment method and will be charged when the order is fulfilled."
                ),
            ),
            EventKind::PaymentCaptured => {
                let released = payment
                    .map(|p| p.amount.minor() - p.captured.minor())
                    .filter(|r| *r > 0)
                    .map(|r| format!(" The remaining {} was released.", super::Money::from_minor(r, amount.currency())))
                    .unwrap_or_default();
                (
                    "Payment Captured".to_owned(),
                    format!("Payment for your order #{id} was captured. Amount charged: {money}.{released}"),
                )
            }
            EventKind::PaymentVoided => (
                "Payment Released".to_owned(),
                format!(
                    "The authorisation of {money} for your order #{id} was released ({}); nothing was charged.",
                    reason.unwrap_or("voided")
                ),
            ),
            EventKind::OrderCancelled => {
                ("Order Cancelled".to_owned(), format!("Your order #{id} of {money} has been cancelled."))
            }
            EventKind::RefundIssued => (
                "Refund Issued".to_owned(),
                format!("A refund of {money} for your order #{id} has been issued to your original payment method."),
            ),
            EventKind::StaffAlert => (
                format!("Action needed on order #{id}"),
                format!("Order #{id} ({money}): {}", reason.unwrap_or("see the log")),
            ),
        };
        Message {
            kind,
            user_id: user.id,
            username: user.username.to_string(),
            email: user.email.as_ref().map(ToString::to_string),
            order_id: id,
            payment_id: payment.map(|p| p.id),
            refund_id: None,
            alert: None,
            amount: amount.amount_string(),
            currency: amount.currency().code().to_owned(),
            items: order
                .items
                .iter()
                .map(|i| MessageItem { name: i.name.clone(), quantity: i.quantity, price: i.price.amount_string() })
                .collect(),
            reason: reason.map(str::to_owned),
            subject,
            text,
        }
    }

    /// The message for a succeeded refund: its amount, the order, the payment.
    pub fn refund(user: &User, order: &Order, payment: &Payment, refund: &Refund) -> Message {
        let mut with_amount = payment.clone();
        with_amount.amount = refund.amount;
        let mut m = Message::new(EventKind::RefundIssued, user, order, Some(&with_amount), refund.reason.as_deref());
        m.refund_id = Some(refund.id);
        m
    }

    /// A staff alert about `order` (and `payment`) for `staff`: `alert` names what happened
    /// once (the same alert is sent once per staff account), `what` says it in words.
    pub fn staff_alert(staff: &User, order: &Order, payment: Option<&Payment>, alert: &str, what: &str) -> Message {
        let mut m = Message::new(EventKind::StaffAlert, staff, order, payment, Some(what));
        m.alert = Some(alert.to_owned());
        m
    }

    /// `kind:entity` — the same event always has the same key, so a re-delivery is recognisable.
    pub fn dedupe_key(&self) -> String {
        if let (EventKind::StaffAlert, Some(alert)) = (self.kind, &self.alert) {
            return format!("{}:{alert}:staff:{}", self.kind, self.user_id);
        }
        if let (EventKind::RefundIssued, Some(r)) = (self.kind, self.refund_id) {
            return format!("{}:refund:{r}", self.kind);
        }
        match (self.kind, self.payment_id) {
            (
                EventKind::PaymentSucceeded
                | EventKind::PaymentFailed
                | EventKind::PaymentAuthorized
                | EventKind::PaymentCaptured
                | EventKind::PaymentVoided,
                Some(p),
            ) => format!("{}:payment:{p}", self.kind),
            _ => format!("{}:order:{}", self.kind, self.order_id),
        }
    }
}

/// Delivery state of an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    /// Waiting for (another) delivery attempt.
    Pending,
    /// Delivered.
    Sent,
    /// Given up on after the configured attempts or a permanent failure; an operator may
    /// re-queue it.
    Dead,
    /// Nothing to deliver on its channel (no email address); the reason is in `last_error`.
    Skipped,
}

impl NotificationStatus {
    /// All statuses.
    pub const ALL: [NotificationStatus; 4] =
        [NotificationStatus::Pending, NotificationStatus::Sent, NotificationStatus::Dead, NotificationStatus::Skipped];

    /// The lower-case name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Sent => "sent",
            NotificationStatus::Dead => "dead",
            NotificationStatus::Skipped => "skipped",
        }
    }

    /// Parses a status name, case-insensitively.
    pub fn parse(raw: &str) -> Option<NotificationStatus> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(raw.trim()))
    }
}

impl fmt::Display for NotificationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Row id.
    pub id: NotificationId,
    /// What happened.
    pub kind: EventKind,
    /// `kind:entity`; unique together with the channel.
    pub dedupe_key: String,
    /// Delivery channel.
    pub channel: String,
    /// Where it goes (an email address), when known.
    pub recipient: Option<String>,
    /// The message.
    pub message: Message,
    /// Delivery state.
    pub status: NotificationStatus,
    /// Delivery attempts started so far.
    pub attempts: u32,
    /// Not to be attempted before this time.
    pub next_attempt_at: DateTime<Utc>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it was delivered.
    pub sent_at: Option<DateTime<Utc>>,
}
