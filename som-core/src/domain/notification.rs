//! The events SOM tells people about, and the messages it writes for them.

use std::fmt;

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use super::{
    Fulfillment, FulfillmentId, ItemQuantity, NotificationId, Order, OrderId, Payment, PaymentId, Refund, RefundId,
    Return, ReturnId, Tracking, User, UserId,
};

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
    /// A fulfilment of the order was handed to the carrier (with its tracking).
    FulfillmentShipped,
    /// A fulfilment of the order arrived.
    FulfillmentDelivered,
    /// A return of delivered items was asked for.
    ReturnRequested,
    /// Staff agreed to a return: the items may be sent back.
    ReturnApproved,
    /// Staff refused a return (with a note).
    ReturnRejected,
    /// The returned items arrived; their refund is under way.
    ReturnReceived,
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
            EventKind::FulfillmentShipped => "fulfillment_shipped",
            EventKind::FulfillmentDelivered => "fulfillment_delivered",
            EventKind::ReturnRequested => "return_requested",
            EventKind::ReturnApproved => "return_approved",
            EventKind::ReturnRejected => "return_rejected",
            EventKind::ReturnReceived => "return_received",
            EventKind::StaffAlert => "staff_alert",
        }
    }

    /// Every kind, in the order they are documented.
    pub const ALL: [EventKind; 15] = [
        EventKind::OrderCreated,
        EventKind::OrderCancelled,
        EventKind::PaymentAuthorized,
        EventKind::PaymentSucceeded,
        EventKind::PaymentFailed,
        EventKind::PaymentCaptured,
        EventKind::PaymentVoided,
        EventKind::RefundIssued,
        EventKind::FulfillmentShipped,
        EventKind::FulfillmentDelivered,
        EventKind::ReturnRequested,
        EventKind::ReturnApproved,
        EventKind::ReturnRejected,
        EventKind::ReturnReceived,
        EventKind::StaffAlert,
    ];

    /// Parses a name as written by [`EventKind::as_str`].
    pub fn parse(raw: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// The event's stable type name for other systems (`som.order.created`): the CloudEvents
    /// `type`, the NATS subject and the RabbitMQ routing key.
    pub fn type_name(self) -> &'static str {
        match self {
            EventKind::OrderCreated => "som.order.created",
            EventKind::OrderCancelled => "som.order.cancelled",
            EventKind::PaymentAuthorized => "som.payment.authorized",
            EventKind::PaymentSucceeded => "som.payment.succeeded",
            EventKind::PaymentFailed => "som.payment.failed",
            EventKind::PaymentCaptured => "som.payment.captured",
            EventKind::PaymentVoided => "som.payment.voided",
            EventKind::RefundIssued => "som.refund.issued",
            EventKind::FulfillmentShipped => "som.fulfillment.shipped",
            EventKind::FulfillmentDelivered => "som.fulfillment.delivered",
            EventKind::ReturnRequested => "som.return.requested",
            EventKind::ReturnApproved => "som.return.approved",
            EventKind::ReturnRejected => "som.return.rejected",
            EventKind::ReturnReceived => "som.return.received",
            EventKind::StaffAlert => "som.staff.alert",
        }
    }

    /// Parses a type name as written by [`EventKind::type_name`].
    pub fn parse_type(raw: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.type_name() == raw)
    }

    /// Whether other systems receive this kind (webhook endpoints, the event stream). Staff
    /// alerts are addressed to each staff account and go by email and the log only.
    pub fn is_public(self) -> bool {
        self != EventKind::StaffAlert
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
    /// The fulfilment, for fulfilment events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfillment_id: Option<FulfillmentId>,
    /// Where the parcel can be followed, for fulfilment events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Tracking>,
    /// The return, for return events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_id: Option<ReturnId>,
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
            // Fulfilment and return messages are written by their own constructors.
            EventKind::FulfillmentShipped => {
                ("Order Shipped".to_owned(), format!("Your order #{id} has been shipped."))
            }
            EventKind::FulfillmentDelivered => {
                ("Order Delivered".to_owned(), format!("Your order #{id} has been delivered."))
            }
            EventKind::ReturnRequested => {
                ("Return Requested".to_owned(), format!("A return for your order #{id} was requested."))
            }
            EventKind::ReturnApproved => {
                ("Return Approved".to_owned(), format!("Your return for order #{id} was approved."))
            }
            EventKind::ReturnRejected => {
                ("Return Rejected".to_owned(), format!("Your return for order #{id} was not accepted."))
            }
            EventKind::ReturnReceived => {
                ("Return Received".to_owned(), format!("We received the items you returned from order #{id}."))
            }
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
            fulfillment_id: None,
            tracking: None,
            return_id: None,
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

    /// The message for a fulfilment's step (shipped, delivered): the parcel's items and
    /// tracking.
    pub fn fulfillment(kind: EventKind, user: &User, order: &Order, f: &Fulfillment) -> Message {
        let mut m = Message::new(kind, user, order, None, None);
        let id = order.id;
        let tracking = f.tracking.describe();
        let follow = if tracking.is_empty() { String::new() } else { format!(" Tracking: {tracking}.") };
        let what = super::describe_lines(order, &f.items);
        m.text = match kind {
            EventKind::FulfillmentDelivered => format!("Your parcel from order #{id} ({what}) has been delivered."),
            _ => format!("Your parcel from order #{id} ({what}) is on its way.{follow}"),
        };
        m.items = message_lines(order, &f.items);
        m.fulfillment_id = Some(f.id);
        m.tracking = Some(f.tracking.clone()).filter(|t| *t != Tracking::default());
        m
    }

    /// The message for a return's step: its items, its note or refund.
    pub fn return_step(kind: EventKind, user: &User, order: &Order, r: &Return) -> Message {
        let mut m = Message::new(kind, user, order, None, r.note.as_deref());
        let (id, rid) = (order.id, r.id);
        let what = super::describe_lines(order, &r.items);
        m.text = match kind {
            EventKind::ReturnRequested => {
                format!(
                    "Return #{rid} of {what} from your order #{id} was requested. We will tell you when it is approved."
                )
            }
            EventKind::ReturnApproved => {
                format!("Return #{rid} of {what} from your order #{id} was approved. Please send the items back.")
            }
            EventKind::ReturnRejected => format!(
                "Return #{rid} of {what} from your order #{id} was not accepted: {}.",
                r.note.as_deref().unwrap_or("no reason given")
            ),
            _ => match r.refund_amount {
                Some(amount) => format!(
                    "We received return #{rid} ({what}) from your order #{id}. A refund of {amount} is on its way to your original payment method."
                ),
                None => format!("We received return #{rid} ({what}) from your order #{id}."),
            },
        };
        if let Some(amount) = r.refund_amount {
            m.amount = amount.amount_string();
        }
        m.items = message_lines(order, &r.items);
        m.return_id = Some(rid);
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
        if let Some(f) = self.fulfillment_id {
            return format!("{}:fulfillment:{f}", self.kind);
        }
        if let Some(r) = self.return_id {
            // A return may be received again after its refund failed: each receipt is news.
            let again =
                if self.kind == EventKind::ReturnReceived { format!(":{}", self.amount) } else { String::new() };
            return format!("{}:return:{r}{again}", self.kind);
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

fn message_lines(order: &Order, lines: &[ItemQuantity]) -> Vec<MessageItem> {
    lines
        .iter()
        .filter_map(|l| {
            let item = &order.items[order.item_index(l.item_id)?];
            Some(MessageItem { name: item.name.clone(), quantity: l.quantity, price: item.price.amount_string() })
        })
        .collect()
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
