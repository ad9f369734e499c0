//! After payment: fulfilments (parcels of an order's items, shipped and delivered) and returns
//! (delivered items sent back, ending in a refund), their state machines, and the order's
//! fulfilment status that follows from them. Both name an order's lines by [`ItemId`] with a
//! quantity, never more than was ordered (fulfilments) or delivered (returns).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Actor, FulfillmentId, ItemId, Money, Order, OrderId, OrderStatus, RefundId, ReturnId, UserId};
use crate::error::{Error, ValidationErrors};

/// How many of one order line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemQuantity {
    /// The order line ([`Order::item_id`]).
    pub item_id: ItemId,
    /// How many of it; at least 1.
    pub quantity: i64,
}

/// Where a fulfilment is: `PENDING → SHIPPED → DELIVERED`, or `PENDING → CANCELLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FulfillmentStatus {
    /// Items set aside to be shipped.
    Pending,
    /// Handed to the carrier.
    Shipped,
    /// Arrived.
    Delivered,
    /// Withdrawn before shipping; its items may be fulfilled again.
    Cancelled,
}

/// A step in a fulfilment's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FulfillmentStep {
    /// `PENDING → SHIPPED`, with the tracking known now (merged over what was given before).
    Ship(Tracking),
    /// `SHIPPED → DELIVERED`.
    Deliver,
    /// `PENDING → CANCELLED`.
    Cancel,
}

impl FulfillmentStep {
    /// The verb, as the API names the step.
    pub fn verb(&self) -> &'static str {
        match self {
            FulfillmentStep::Ship(_) => "shipped",
            FulfillmentStep::Deliver => "delivered",
            FulfillmentStep::Cancel => "cancelled",
        }
    }
}

impl FulfillmentStatus {
    /// All statuses, in lifecycle order.
    pub const ALL: [FulfillmentStatus; 4] = [
        FulfillmentStatus::Pending,
        FulfillmentStatus::Shipped,
        FulfillmentStatus::Delivered,
        FulfillmentStatus::Cancelled,
    ];

    /// The upper-case name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FulfillmentStatus::Pending => "PENDING",
            FulfillmentStatus::Shipped => "SHIPPED",
            FulfillmentStatus::Delivered => "DELIVERED",
            FulfillmentStatus::Cancelled => "CANCELLED",
        }
    }

    /// Parses a status name, case-insensitively.
    pub fn parse(raw: &str) -> Option<FulfillmentStatus> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(raw.trim()))
    }

    /// The transition table: the status `step` leads to from this one, or why not.
    pub fn apply(self, step: &FulfillmentStep) -> Result<FulfillmentStatus, Error> {
        use FulfillmentStatus::*;
        match (self, step) {
            (Pending, FulfillmentStep::Ship(_)) => Ok(Shipped),
            (Shipped, FulfillmentStep::Deliver) => Ok(Delivered),
            (Pending, FulfillmentStep::Cancel) => Ok(Cancelled),
            (from, step) => Err(Error::Conflict(format!("fulfilment is {from}; it cannot be {}", step.verb()))),
        }
    }

    /// Whether its items count against what is left to fulfil (all but CANCELLED).
    pub fn holds_items(self) -> bool {
        self != FulfillmentStatus::Cancelled
    }

    /// Whether its items left the shop (SHIPPED or DELIVERED).
    pub fn shipped(self) -> bool {
        matches!(self, FulfillmentStatus::Shipped | FulfillmentStatus::Delivered)
    }
}

impl fmt::Display for FulfillmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a parcel can be followed: each part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracking {
    /// The carrier ("UPS").
    pub carrier: Option<String>,
    /// The carrier's tracking number.
    pub number: Option<String>,
    /// A page where the parcel can be followed (http or https).
    pub url: Option<String>,
}

impl Tracking {
    /// Longest carrier name and tracking number, in characters.
    pub const MAX_CHARS: usize = 100;
    /// Longest tracking URL, in characters.
    pub const MAX_URL_CHARS: usize = 2000;

    /// Checks and trims what a caller gave (blank parts are absent).
    pub fn parse(carrier: Option<&str>, number: Option<&str>, url: Option<&str>) -> Result<Tracking, Error> {
        let mut errors = ValidationErrors::new();
        let mut text = |field: &str, raw: Option<&str>, max: usize| -> Option<String> {
            let value = raw.map(str::trim).filter(|v| !v.is_empty())?;
            if value.chars().count() > max {
                errors.add(field, format!("must be at most {max} characters"));
            } else if value.chars().any(super::is_disallowed_in_text) {
                errors.add(field, "must not contain control characters or bidirectional controls");
            }
            Some(value.to_owned())
        };
        let tracking = Tracking {
            carrier: text("carrier", carrier, Self::MAX_CHARS),
            number: text("tracking_number", number, Self::MAX_CHARS),
            url: text("tracking_url", url, Self::MAX_URL_CHARS),
        };
        if let Some(url) = &tracking.url {
            let lower = url.to_ascii_lowercase();
            let host = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
            if host.is_none_or(|h| h.is_empty() || h.starts_with('/') || url.contains(char::is_whitespace)) {
                errors.add("tracking_url", "must be an http:// or https:// address");
            }
        }
        errors.into_result()?;
        Ok(tracking)
    }

    /// This tracking with `later`'s parts where it has them.
    pub fn merged(&self, later: &Tracking) -> Tracking {
        Tracking {
            carrier: later.carrier.clone().or_else(|| self.carrier.clone()),
            number: later.number.clone().or_else(|| self.number.clone()),
            url: later.url.clone().or_else(|| self.url.clone()),
        }
    }

    /// "UPS 1Z999" or "" — for messages.
    pub fn describe(&self) -> String {
        let parts: Vec<&str> = [self.carrier.as_deref(), self.number.as_deref()].into_iter().flatten().collect();
        let mut s = parts.join(" ");
        if let Some(url) = &self.url {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(url);
        }
        s
    }
}

/// A stored fulfilment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfillment {
    /// Its id.
    pub id: FulfillmentId,
    /// The order.
    pub order_id: OrderId,
    /// The order's owner.
    pub user_id: UserId,
    /// Where it is.
    pub status: FulfillmentStatus,
    /// What is in it.
    pub items: Vec<ItemQuantity>,
    /// Where it can be followed.
    pub tracking: Tracking,
    /// Who made it.
    pub actor: Actor,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was shipped.
    pub shipped_at: Option<DateTime<Utc>>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

/// Where a return is: `REQUESTED → APPROVED → RECEIVED → REFUNDED`, or `REQUESTED | APPROVED →
/// REJECTED`. A return received without a refund (staff chose none) stays RECEIVED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReturnStatus {
    /// Asked for; staff have not decided.
    Requested,
    /// Staff agreed; the items may be sent back.
    Approved,
    /// The items came back; their refund is under way (or none was due).
    Received,
    /// The items came back and their refund succeeded.
    Refunded,
    /// Staff refused (with a note).
    Rejected,
}

/// A step in a return's life, as staff take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnStep {
    /// `REQUESTED → APPROVED`.
    Approve,
    /// `REQUESTED | APPROVED → REJECTED`, with why.
    Reject {
        /// Why, for the customer.
        note: String,
    },
    /// `APPROVED → RECEIVED`, refunding `refund` (none: nothing is refunded). Taken again on a
    /// RECEIVED return whose refund was declined, it asks for the refund again.
    Receive {
        /// The refund to make.
        refund: Option<ReturnRefund>,
    },
}

/// The refund of a received return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnRefund {
    /// How much; `None`: the returned items' value, at most what is left to refund.
    pub amount: Option<Money>,
}

impl ReturnStep {
    /// The verb, as the API names the step.
    pub fn verb(&self) -> &'static str {
        match self {
            ReturnStep::Approve => "approved",
            ReturnStep::Reject { .. } => "rejected",
            ReturnStep::Receive { .. } => "received",
        }
    }
}

impl ReturnStatus {
    /// All statuses, in lifecycle order.
    pub const ALL: [ReturnStatus; 5] = [
        ReturnStatus::Requested,
        ReturnStatus::Approved,
        ReturnStatus::Received,
        ReturnStatus::Refunded,
        ReturnStatus::Rejected,
    ];

    /// The upper-case name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ReturnStatus::Requested => "REQUESTED",
            ReturnStatus::Approved => "APPROVED",
            ReturnStatus::Received => "RECEIVED",
            ReturnStatus::Refunded => "REFUNDED",
            ReturnStatus::Rejected => "REJECTED",
        }
    }

    /// Parses a status name, case-insensitively.
    pub fn parse(raw: &str) -> Option<ReturnStatus> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(raw.trim()))
    }

    /// The transition table for staff's steps: the status `step` leads to from this one, or
    /// why not. (`RECEIVED → REFUNDED` follows the refund's success, not a step.)
    pub fn apply(self, step: &ReturnStep) -> Result<ReturnStatus, Error> {
        use ReturnStatus::*;
        match (self, step) {
            (Requested, ReturnStep::Approve) => Ok(Approved),
            (Requested | Approved, ReturnStep::Reject { .. }) => Ok(Rejected),
            (Approved | Received, ReturnStep::Receive { .. }) => Ok(Received),
            (from, step) => Err(Error::Conflict(format!("return is {from}; it cannot be {}", step.verb()))),
        }
    }

    /// `RECEIVED → REFUNDED`: its refund succeeded.
    pub fn refunded(self) -> Option<ReturnStatus> {
        (self == ReturnStatus::Received).then_some(ReturnStatus::Refunded)
    }

    /// `REFUNDED → RECEIVED`: its refund failed at the provider after all (no money went
    /// back); it may be received again.
    pub fn refund_reversed(self) -> Option<ReturnStatus> {
        (self == ReturnStatus::Refunded).then_some(ReturnStatus::Received)
    }

    /// Whether its items count against what may still be returned (all but REJECTED).
    pub fn holds_items(self) -> bool {
        self != ReturnStatus::Rejected
    }

    /// Whether its items are back (RECEIVED or REFUNDED).
    pub fn came_back(self) -> bool {
        matches!(self, ReturnStatus::Received | ReturnStatus::Refunded)
    }

    /// Whether staff still have to act on it (REQUESTED or APPROVED).
    pub fn is_open(self) -> bool {
        matches!(self, ReturnStatus::Requested | ReturnStatus::Approved)
    }
}

impl fmt::Display for ReturnStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Return {
    /// Its id.
    pub id: ReturnId,
    /// The order.
    pub order_id: OrderId,
    /// The order's owner.
    pub user_id: UserId,
    /// Where it is.
    pub status: ReturnStatus,
    /// What is sent back.
    pub items: Vec<ItemQuantity>,
    /// Why, in the customer's words.
    pub reason: Option<String>,
    /// Staff's note (why it was rejected).
    pub note: Option<String>,
    /// Its refund, once it was received.
    pub refund_id: Option<RefundId>,
    /// How much its refund returns.
    pub refund_amount: Option<Money>,
    /// Who asked for it.
    pub actor: Actor,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

/// Where an order's goods are, beside its payment status: `UNFULFILLED → PARTIALLY_FULFILLED →
/// FULFILLED → DELIVERED`, and `PARTIALLY_RETURNED` / `RETURNED` once items came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FulfillmentState {
    /// Nothing shipped yet.
    #[default]
    Unfulfilled,
    /// Some items shipped.
    PartiallyFulfilled,
    /// Every item shipped.
    Fulfilled,
    /// Every item delivered.
    Delivered,
    /// Some items came back.
    PartiallyReturned,
    /// Every item came back.
    Returned,
}

impl FulfillmentState {
    /// All states.
    pub const ALL: [FulfillmentState; 6] = [
        FulfillmentState::Unfulfilled,
        FulfillmentState::PartiallyFulfilled,
        FulfillmentState::Fulfilled,
        FulfillmentState::Delivered,
        FulfillmentState::PartiallyReturned,
        FulfillmentState::Returned,
    ];

    /// The upper-case name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FulfillmentState::Unfulfilled => "UNFULFILLED",
            FulfillmentState::PartiallyFulfilled => "PARTIALLY_FULFILLED",
            FulfillmentState::Fulfilled => "FULFILLED",
            FulfillmentState::Delivered => "DELIVERED",
            FulfillmentState::PartiallyReturned => "PARTIALLY_RETURNED",
            FulfillmentState::Returned => "RETURNED",
        }
    }

    /// Parses a name, case-insensitively.
    pub fn parse(raw: &str) -> Option<FulfillmentState> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(raw.trim()))
    }

    /// The order's state given all its fulfilments and returns.
    pub fn of(order: &Order, fulfillments: &[Fulfillment], returns: &[Return]) -> FulfillmentState {
        let shipped = quantities(order, fulfillments.iter().filter(|f| f.status.shipped()).map(|f| &f.items[..]));
        let delivered = quantities(
            order,
            fulfillments.iter().filter(|f| f.status == FulfillmentStatus::Delivered).map(|f| &f.items[..]),
        );
        let back = quantities(order, returns.iter().filter(|r| r.status.came_back()).map(|r| &r.items[..]));
        let ordered: Vec<i64> = order.items.iter().map(|i| i.quantity).collect();
        let all = |got: &[i64]| got.iter().zip(&ordered).all(|(g, o)| g >= o);
        let any = |got: &[i64]| got.iter().any(|g| *g > 0);
        if all(&back) {
            FulfillmentState::Returned
        } else if any(&back) {
            FulfillmentState::PartiallyReturned
        } else if all(&delivered) {
            FulfillmentState::Delivered
        } else if all(&shipped) {
            FulfillmentState::Fulfilled
        } else if any(&shipped) {
            FulfillmentState::PartiallyFulfilled
        } else {
            FulfillmentState::Unfulfilled
        }
    }
}

impl fmt::Display for FulfillmentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per order line (by position), the quantities named in `sets`.
fn quantities<'a>(order: &Order, sets: impl Iterator<Item = &'a [ItemQuantity]>) -> Vec<i64> {
    let mut got = vec![0i64; order.items.len()];
    for line in sets.flatten() {
        if let Some(i) = order.item_index(line.item_id) {
            got[i] = got[i].saturating_add(line.quantity);
        }
    }
    got
}

/// Which order statuses may have their goods fulfilled: the money is held or taken and not all
/// returned (`AUTHORIZED`, `PAID`, `PARTIALLY_REFUNDED`).
pub fn may_fulfil(status: OrderStatus) -> bool {
    matches!(status, OrderStatus::Authorized | OrderStatus::Paid | OrderStatus::PartiallyRefunded)
}

/// Lines as a caller names them: checked against the order's items. A malformed list (empty,
/// a quantity below 1) is `Validation`; a well-formed one naming an item that is not the
/// order's, or one item twice, is `Unprocessable`. Errors are named `items[i].item_id` /
/// `items[i].quantity`.
pub fn parse_lines(order: &Order, lines: &[ItemQuantity]) -> Result<Vec<ItemQuantity>, Error> {
    let mut errors = ValidationErrors::new();
    let mut foreign = ValidationErrors::new();
    if lines.is_empty() {
        errors.add("items", "must name at least one item");
    } else if lines.len() > super::OrderItem::MAX_ITEMS {
        errors.add("items", format!("must name at most {} items", super::OrderItem::MAX_ITEMS));
    }
    let mut seen = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        if order.item_index(line.item_id).is_none() {
            foreign.add(format!("items[{i}].item_id"), format!("is not an item of order {}", order.id));
        } else if seen.insert(line.item_id, i).is_some() {
            foreign.add(format!("items[{i}].item_id"), "is named more than once");
        }
        if !(1..=super::OrderItem::MAX_QUANTITY).contains(&line.quantity) {
            errors.add(
                format!("items[{i}].quantity"),
                format!("must be between 1 and {}", super::OrderItem::MAX_QUANTITY),
            );
        }
    }
    errors.into_result()?;
    if !foreign.is_empty() {
        return Err(Error::Unprocessable(foreign));
    }
    Ok(lines.to_vec())
}

/// The lines of a new fulfilment, checked against what the order's other fulfilments hold:
/// `None` asks for everything not yet in one. `Conflict` when a line asks for more than is
/// left of it (or nothing is left), naming what is.
pub fn fulfillment_lines(
    order: &Order,
    asked: Option<&[ItemQuantity]>,
    others: &[Fulfillment],
) -> Result<Vec<ItemQuantity>, Error> {
    let held = quantities(order, others.iter().filter(|f| f.status.holds_items()).map(|f| &f.items[..]));
    let limit: Vec<i64> = order.items.iter().map(|i| i.quantity).collect();
    within(order, asked, &held, &limit, "ordered", "in fulfilments")
}

/// The lines of a new return, checked against what was delivered and what other returns hold.
pub fn return_lines(
    order: &Order,
    asked: &[ItemQuantity],
    fulfillments: &[Fulfillment],
    others: &[Return],
) -> Result<Vec<ItemQuantity>, Error> {
    let (held, delivered) = return_room(order, fulfillments, others);
    within(order, Some(asked), &held, &delivered, "delivered", "in returns")
}

/// Per order line: what returns hold, and what was delivered.
fn return_room(order: &Order, fulfillments: &[Fulfillment], returns: &[Return]) -> (Vec<i64>, Vec<i64>) {
    let delivered = quantities(
        order,
        fulfillments.iter().filter(|f| f.status == FulfillmentStatus::Delivered).map(|f| &f.items[..]),
    );
    let held = quantities(order, returns.iter().filter(|r| r.status.holds_items()).map(|r| &r.items[..]));
    (held, delivered)
}

/// What is left to fulfil of each order line (lines with nothing left are left out).
pub fn unfulfilled(order: &Order, fulfillments: &[Fulfillment]) -> Vec<ItemQuantity> {
    fulfillment_lines(order, None, fulfillments).unwrap_or_default()
}

/// What may still be returned of each order line: delivered and not in another return.
pub fn returnable(order: &Order, fulfillments: &[Fulfillment], returns: &[Return]) -> Vec<ItemQuantity> {
    let (held, delivered) = return_room(order, fulfillments, returns);
    within(order, None, &held, &delivered, "delivered", "in returns").unwrap_or_default()
}

fn within(
    order: &Order,
    asked: Option<&[ItemQuantity]>,
    held: &[i64],
    limit: &[i64],
    limit_word: &str,
    held_word: &str,
) -> Result<Vec<ItemQuantity>, Error> {
    let lines = match asked {
        Some(lines) => parse_lines(order, lines)?,
        None => (0..order.items.len())
            .filter(|i| limit[*i] > held[*i])
            .map(|i| ItemQuantity { item_id: order.item_id(i), quantity: limit[i] - held[i] })
            .collect(),
    };
    if lines.is_empty() {
        return Err(Error::Conflict(format!(
            "order {} has no items left that are {limit_word} and not {held_word}",
            order.id
        )));
    }
    for line in &lines {
        let i = order.item_index(line.item_id).unwrap_or_default();
        let left = limit[i] - held[i];
        if line.quantity > left {
            return Err(Error::Conflict(format!(
                "item {}: {} {limit_word}, {} already {held_word}; at most {} more",
                line.item_id,
                limit[i],
                held[i],
                left.max(0)
            )));
        }
    }
    Ok(lines)
}

/// "2 × Widget, 1 × Gadget": `lines` named by the order's items (a line that is not the
/// order's shows its id).
pub fn describe_lines(order: &Order, lines: &[ItemQuantity]) -> String {
    let named: Vec<String> = lines
        .iter()
        .map(|l| match order.item_index(l.item_id) {
            Some(i) => format!("{} × {}", l.quantity, order.items[i].name),
            None => format!("{} × item {}", l.quantity, l.item_id),
        })
        .collect();
    named.join(", ")
}

/// The value of `lines` at the order's prices.
pub fn lines_value(order: &Order, lines: &[ItemQuantity]) -> Money {
    let minor = lines
        .iter()
        .filter_map(|l| order.item_index(l.item_id).map(|i| order.items[i].price.minor().saturating_mul(l.quantity)))
        .fold(0i64, i64::saturating_add);
    Money::from_minor(minor, order.currency())
}

/// What a received return refunds: `asked` (checked by the caller to be positive) or the
/// returned items' value, never more than `refundable` — `Conflict` when an asked amount is
/// more, or nothing is left to refund.
pub fn return_refund(value: Money, asked: Option<Money>, refundable: Money) -> Result<Money, Error> {
    if !refundable.is_positive() {
        return Err(Error::Conflict(
            "the order's payment has nothing left to refund; receive the return with amount 0 to record the items without a refund".into(),
        ));
    }
    match asked {
        Some(a) if a.minor() > refundable.minor() => {
            Err(Error::Conflict(format!("only {refundable} of the order's payment is left to refund, less than {a}")))
        }
        Some(a) => Ok(a),
        None => Ok(Money::from_minor(value.minor().min(refundable.minor()), value.currency())),
    }
}

#[cfg(test)]
mod tests;
