//! Orders, their items and the order state machine. The total is computed here and only here.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Currency, FulfillmentState, ItemId, Money, OrderId, UserId};
use crate::error::ValidationErrors;

/// Where an order is in its life.
///
/// `CREATED → PAID`, `CREATED → AUTHORIZED → PAID` (manual capture), `CREATED | AUTHORIZED →
/// CANCELLED`, `PAID → PARTIALLY_REFUNDED → REFUNDED` (or `PAID → REFUNDED` at once); nothing
/// else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Placed and awaiting payment.
    Created,
    /// Its payment is authorised (manual capture): the money is held, not yet captured.
    Authorized,
    /// A payment succeeded.
    Paid,
    /// Cancelled before payment.
    Cancelled,
    /// Paid, then part of the payment was returned.
    PartiallyRefunded,
    /// Paid, then all of the payment was returned.
    Refunded,
}

/// An order status change that the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order is {from}; it cannot be {action}")]
pub struct IllegalTransition {
    /// The status the order is in.
    pub from: OrderStatus,
    /// What was attempted, as a past participle ("paid", "cancelled").
    pub action: &'static str,
}

impl OrderStatus {
    /// All statuses, in lifecycle order.
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Created,
        OrderStatus::Authorized,
        OrderStatus::Paid,
        OrderStatus::Cancelled,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
    ];

    /// The upper-case name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "CREATED",
            OrderStatus::Authorized => "AUTHORIZED",
            OrderStatus::Paid => "PAID",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::PartiallyRefunded => "PARTIALLY_REFUNDED",
            OrderStatus::Refunded => "REFUNDED",
        }
    }

    /// Parses a status name, case-insensitively.
    pub fn parse(raw: &str) -> Option<OrderStatus> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(raw.trim()))
    }

    /// Whether the order's money was taken (whatever has been refunded of it since).
    pub fn was_paid(self) -> bool {
        matches!(self, OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded)
    }

    /// `CREATED → AUTHORIZED`: its payment is authorised, to be captured later.
    pub fn authorize(self) -> Result<OrderStatus, IllegalTransition> {
        match self {
            OrderStatus::Created => Ok(OrderStatus::Authorized),
            from => Err(IllegalTransition { from, action: "authorised" }),
        }
    }

    /// `CREATED | AUTHORIZED → PAID`: a payment for the order succeeded, or its authorisation
    /// was captured.
    pub fn pay(self) -> Result<OrderStatus, IllegalTransition> {
        match self {
            OrderStatus::Created | OrderStatus::Authorized => Ok(OrderStatus::Paid),
            from => Err(IllegalTransition { from, action: "paid" }),
        }
    }

    /// `CREATED | AUTHORIZED → CANCELLED`: the order is withdrawn before money was captured
    /// (an authorisation is released with it).
    pub fn cancel(self) -> Result<OrderStatus, IllegalTransition> {
        match self {
            OrderStatus::Created | OrderStatus::Authorized => Ok(OrderStatus::Cancelled),
            from => Err(IllegalTransition { from, action: "cancelled" }),
        }
    }

    /// `PAID | PARTIALLY_REFUNDED → PARTIALLY_REFUNDED | REFUNDED`: money was returned;
    /// `fully` when nothing of the payment is left.
    pub fn refund(self, fully: bool) -> Result<OrderStatus, IllegalTransition> {
        match self {
            OrderStatus::Paid | OrderStatus::PartiallyRefunded => {
                Ok(if fully { OrderStatus::Refunded } else { OrderStatus::PartiallyRefunded })
            }
            from => Err(IllegalTransition { from, action: "refunded" }),
        }
    }

    /// `REFUNDED | PARTIALLY_REFUNDED → PARTIALLY_REFUNDED | PAID`: a refund that had succeeded
    /// failed at the provider after all (no money went back); `still_refunded` when other
    /// refunds remain. An error from any other status.
    pub fn refund_reversed(self, still_refunded: bool) -> Result<OrderStatus, IllegalTransition> {
        match self {
            OrderStatus::Refunded | OrderStatus::PartiallyRefunded => {
                Ok(if still_refunded { OrderStatus::PartiallyRefunded } else { OrderStatus::Paid })
            }
            from => Err(IllegalTransition { from, action: "un-refunded" }),
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an order: `quantity × price`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItem {
    /// 1 to 255 characters, no control characters.
    pub name: String,
    /// 1 to 1,000,000.
    pub quantity: i64,
    /// Above zero, in the order's currency.
    pub price: Money,
}

impl OrderItem {
    /// Most items per order.
    pub const MAX_ITEMS: usize = 100;
    /// Longest item name, in characters.
    pub const MAX_NAME_CHARS: usize = 255;
    /// Largest quantity of one item.
    pub const MAX_QUANTITY: i64 = 1_000_000;
    /// Largest unit price, in whole currency units: with the item and quantity limits it keeps
    /// every possible total within range.
    pub const MAX_UNIT_PRICE: i64 = 10_000_000;

    /// `quantity × price`, checked.
    pub fn line_total(&self) -> Result<Money, super::MoneyError> {
        self.price.checked_mul(self.quantity)
    }
}

/// An order item as a caller submits it: the price is text so that it is parsed exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemInput {
    /// Item name.
    pub name: String,
    /// How many.
    pub quantity: i64,
    /// Unit price as a decimal string ("100.00"); JSON numbers are accepted by front ends and
    /// passed here as their decimal text.
    pub price: String,
}

/// An order as a caller submits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderInput {
    /// 1 to 100 items.
    pub items: Vec<ItemInput>,
    /// ISO 4217 code; the configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// A validated order, ready to be stored: items checked, total computed exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    currency: Currency,
    items: Vec<OrderItem>,
    total: Money,
}

impl NewOrder {
    /// Validates `input` and computes the total. Every problem is reported against its field
    /// (`items`, `items[2].price`, `currency`).
    pub fn parse(input: &OrderInput, default_currency: Currency) -> Result<NewOrder, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let currency = match input.currency.as_deref() {
            None => default_currency,
            Some(code) => match Currency::parse(code) {
                Ok(c) => c,
                Err(e) => {
                    errors.add("currency", e.to_string());
                    return Err(errors);
                }
            },
        };
        if input.items.is_empty() {
            errors.add("items", "must contain at least one item");
        } else if input.items.len() > OrderItem::MAX_ITEMS {
            errors.add("items", format!("must contain at most {} items", OrderItem::MAX_ITEMS));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut items = Vec::with_capacity(input.items.len());
        for (i, item) in input.items.iter().enumerate() {
            let field = |name: &str| format!("items[{i}].{name}");
            let chars = item.name.chars().count();
            if item.name.trim().is_empty() {
                errors.add(field("name"), "must not be blank");
            } else if chars > OrderItem::MAX_NAME_CHARS {
                errors.add(field("name"), format!("must be at most {} characters", OrderItem::MAX_NAME_CHARS));
            } else if item.name.chars().any(is_disallowed_in_text) {
                errors.add(
                    field("name"),
                    "must not contain control characters, line or paragraph separators, or bidirectional controls",
                );
            }
            if !(1..=OrderItem::MAX_QUANTITY).contains(&item.quantity) {
                errors.add(field("quantity"), format!("must be between 1 and {}", OrderItem::MAX_QUANTITY));
            }
            match Money::parse(&item.price, currency) {
                Ok(price)
                    if price.minor()
                        > OrderItem::MAX_UNIT_PRICE.saturating_mul(10i64.pow(u32::from(currency.exponent()))) =>
                {
                    errors.add(field("price"), format!("must be at most {}", OrderItem::MAX_UNIT_PRICE));
                }
                Ok(price) if price.is_positive() => {
                    items.push(OrderItem { name: item.name.clone(), quantity: item.quantity, price });
                }
                Ok(_) => errors.add(field("price"), "must be greater than zero"),
                Err(e) => errors.add(field("price"), e.to_string()),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let total = items
            .iter()
            .try_fold(Money::zero(currency), |sum, item| sum.checked_add(item.line_total()?))
            .map_err(|_| ValidationErrors::single("items", "the order total is too large"))?;
        Ok(NewOrder { currency, items, total })
    }

    /// The order's currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The validated items, in submitted order.
    pub fn items(&self) -> &[OrderItem] {
        &self.items
    }

    /// Σ quantity × price, exact.
    pub fn total(&self) -> Money {
        self.total
    }

    /// The order as it is stored when placed: numbered `id`, for `user_id`, created at `at`.
    pub fn placed(&self, id: OrderId, user_id: UserId, at: DateTime<Utc>) -> Order {
        Order {
            id,
            user_id,
            status: OrderStatus::Created,
            items: self.items.clone(),
            total: self.total,
            refunded: Money::zero(self.currency),
            fulfillment: FulfillmentState::Unfulfilled,
            created_at: at,
            updated_at: at,
        }
    }
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "OrderWire", try_from = "OrderWire")]
pub struct Order {
    /// The order id.
    pub id: OrderId,
    /// The owner.
    pub user_id: UserId,
    /// Where it is in its life.
    pub status: OrderStatus,
    /// The items, in submitted order.
    pub items: Vec<OrderItem>,
    /// Σ quantity × price, in the order's currency.
    pub total: Money,
    /// How much of its payment has been returned (zero until a refund succeeds).
    pub refunded: Money,
    /// Where its goods are (shipped, delivered, returned), beside its payment status.
    pub fulfillment: FulfillmentState,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// The order's currency.
    pub fn currency(&self) -> Currency {
        self.total.currency()
    }

    /// The id of the item at `index` (0-based, in submitted order): `order id × 1000 + index +
    /// 1`, so that an item's id names its order too and is never another order's.
    pub fn item_id(&self, index: usize) -> ItemId {
        let index = i64::try_from(index).unwrap_or(i64::MAX);
        ItemId::new(self.id.get().saturating_mul(ITEMS_PER_ORDER_ID).saturating_add(index.saturating_add(1)))
    }

    /// Where the item `id` is in this order's items, if it is one of them.
    pub fn item_index(&self, id: ItemId) -> Option<usize> {
        let base = self.id.get().checked_mul(ITEMS_PER_ORDER_ID)?;
        let index = id.get().checked_sub(base)?.checked_sub(1)?;
        usize::try_from(index).ok().filter(|i| *i < self.items.len())
    }

    /// The items with their ids.
    pub fn items_with_ids(&self) -> impl Iterator<Item = (ItemId, &OrderItem)> {
        self.items.iter().enumerate().map(|(i, item)| (self.item_id(i), item))
    }
}

/// The span of item ids each order has (more than [`OrderItem::MAX_ITEMS`]).
const ITEMS_PER_ORDER_ID: i64 = 1000;

/// The JSON shape of an order (field names of the HTTP API).
#[derive(Serialize, Deserialize)]
struct OrderWire {
    id: OrderId,
    user: UserId,
    items: Vec<ItemWire>,
    total_amount: String,
    #[serde(default)]
    refunded_amount: Option<String>,
    currency: Currency,
    status: OrderStatus,
    #[serde(default)]
    fulfillment_status: FulfillmentState,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct ItemWire {
    #[serde(default, skip_deserializing)]
    id: Option<ItemId>,
    name: String,
    quantity: i64,
    price: String,
}

impl From<Order> for OrderWire {
    fn from(o: Order) -> Self {
        OrderWire {
            id: o.id,
            user: o.user_id,
            currency: o.total.currency(),
            total_amount: o.total.amount_string(),
            refunded_amount: Some(o.refunded.amount_string()),
            items: o
                .items_with_ids()
                .map(|(id, i)| ItemWire {
                    id: Some(id),
                    price: i.price.amount_string(),
                    name: i.name.clone(),
                    quantity: i.quantity,
                })
                .collect(),
            status: o.status,
            fulfillment_status: o.fulfillment,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

impl TryFrom<OrderWire> for Order {
    type Error = super::MoneyError;
    fn try_from(w: OrderWire) -> Result<Self, Self::Error> {
        let items = w
            .items
            .into_iter()
            .map(|i| Ok(OrderItem { price: Money::parse(&i.price, w.currency)?, name: i.name, quantity: i.quantity }))
            .collect::<Result<Vec<_>, super::MoneyError>>()?;
        Ok(Order {
            id: w.id,
            user_id: w.user,
            status: w.status,
            items,
            total: Money::parse(&w.total_amount, w.currency)?,
            refunded: match &w.refunded_amount {
                Some(r) => Money::parse(r, w.currency)?,
                None => Money::zero(w.currency),
            },
            fulfillment: w.fulfillment_status,
            created_at: w.created_at,
            updated_at: w.updated_at,
        })
    }
}

/// Who caused a recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Actor {
    /// A user, acting through the API.
    User(UserId),
    /// SOM itself or an operator (CLI, worker).
    System,
}

impl From<Actor> for String {
    fn from(a: Actor) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for Actor {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s == "system" {
            return Ok(Actor::System);
        }
        s.strip_prefix("user:")
            .and_then(|id| id.parse::<i64>().ok())
            .map(|id| Actor::User(UserId::new(id)))
            .ok_or_else(|| format!("unknown actor {s:?}"))
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// One recorded order status change (the audit trail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    /// The order.
    pub order_id: OrderId,
    /// The status before; `None` for the creation.
    pub from: Option<OrderStatus>,
    /// The status after.
    pub to: OrderStatus,
    /// Who did it.
    pub actor: Actor,
    /// Why, in words (e.g. "payment 12 succeeded").
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Characters that have no place in a one-line name shown in emails and tables: control
/// characters, the line and paragraph separators (U+2028, U+2029), and the bidirectional
/// controls (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) with which a name can be
/// made to display as something else.
pub fn is_disallowed_in_text(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{061C}' | '\u{200E}' | '\u{200F}')
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(name: &str, quantity: i64, price: &str) -> ItemInput {
        ItemInput { name: name.into(), quantity, price: price.into() }
    }

    fn order(items: Vec<ItemInput>) -> OrderInput {
        OrderInput { items, currency: None }
    }

    #[test]
    fn the_total_is_the_exact_sum_of_the_lines() {
        let new = NewOrder::parse(&order(vec![item("Widget", 2, "100.00"), item("Gadget", 1, "50.00")]), Currency::USD);
        assert_eq!(new.map(|o| o.total().amount_string()), Ok("250.00".to_owned()));
        let cents = NewOrder::parse(&order(vec![item("a", 3, "0.10"), item("b", 7, "0.20")]), Currency::USD);
        assert_eq!(cents.map(|o| o.total().minor()), Ok(170));
    }

    #[test]
    fn every_bad_field_is_named() {
        let err = NewOrder::parse(
            &order(vec![item("", 0, "-1"), item("ok", 1_000_001, "1.001"), item("bell\u{7}", 1, "0")]),
            Currency::USD,
        )
        .err()
        .unwrap_or_default();
        let fields: Vec<&str> = err.fields().keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            vec![
                "items[0].name",
                "items[0].price",
                "items[0].quantity",
                "items[1].price",
                "items[1].quantity",
                "items[2].name",
                "items[2].price"
            ]
        );
    }

    #[test]
    fn names_that_display_as_something_else_are_rejected() {
        for name in ["Widget\u{202E}dcba", "two\u{2028}lines", "para\u{2029}graph", "iso\u{2066}late", "mark\u{200F}"] {
            let err = NewOrder::parse(&order(vec![item(name, 1, "1.00")]), Currency::USD).err().unwrap_or_default();
            assert!(err.fields().contains_key("items[0].name"), "{name:?} was accepted");
        }
        assert!(NewOrder::parse(&order(vec![item("Café – “Deluxe” 日本", 1, "1.00")]), Currency::USD).is_ok());
    }

    #[test]
    fn item_count_and_currency_are_checked() {
        assert!(NewOrder::parse(&order(vec![]), Currency::USD).is_err_and(|e| e.fields().contains_key("items")));
        let many = (0..101).map(|i| item(&format!("i{i}"), 1, "1")).collect();
        assert!(NewOrder::parse(&order(many), Currency::USD).is_err());
        let bad_currency = OrderInput { items: vec![item("a", 1, "1")], currency: Some("ABC".into()) };
        assert!(NewOrder::parse(&bad_currency, Currency::USD).is_err_and(|e| e.fields().contains_key("currency")));
        let jpy = OrderInput { items: vec![item("a", 2, "150")], currency: Some("jpy".into()) };
        assert_eq!(NewOrder::parse(&jpy, Currency::USD).map(|o| o.total().to_string()), Ok("300 JPY".into()));
    }

    #[test]
    fn prices_above_the_limit_are_rejected_and_the_largest_order_fits() {
        let huge = order(vec![item("a", 1, "10000000.01"), item("b", 1, "92233720368547.75")]);
        let err = NewOrder::parse(&huge, Currency::USD).err().unwrap_or_default();
        assert_eq!(err.fields().keys().collect::<Vec<_>>(), vec!["items[0].price", "items[1].price"]);
        let kwd = Currency::parse("KWD").unwrap_or(Currency::USD);
        let largest = OrderInput {
            items: (0..100).map(|i| item(&format!("i{i}"), 1_000_000, "10000000.000")).collect(),
            currency: Some("KWD".into()),
        };
        let total = NewOrder::parse(&largest, kwd).map(|o| o.total().minor());
        assert_eq!(total, Ok(100 * 1_000_000 * 10_000_000_000), "the largest possible order's total fits");
    }

    #[test]
    fn only_the_designed_transitions_are_allowed() {
        use OrderStatus::*;
        assert_eq!(Created.pay(), Ok(Paid));
        assert_eq!(Created.cancel(), Ok(Cancelled));
        assert_eq!(Created.authorize(), Ok(Authorized));
        assert_eq!(Authorized.pay(), Ok(Paid));
        assert_eq!(Authorized.cancel(), Ok(Cancelled));
        assert!(Authorized.refund(true).is_err());
        assert!(Authorized.authorize().is_err());
        assert_eq!(Paid.refund(true), Ok(Refunded));
        assert_eq!(Paid.refund(false), Ok(PartiallyRefunded));
        assert_eq!(PartiallyRefunded.refund(false), Ok(PartiallyRefunded));
        assert_eq!(PartiallyRefunded.refund(true), Ok(Refunded));
        for s in [Paid, Cancelled, PartiallyRefunded, Refunded] {
            assert!(s.pay().is_err());
            assert!(s.cancel().is_err());
        }
        for s in [Created, Authorized, Cancelled, Refunded] {
            assert!(s.refund(false).is_err());
            assert!(s.refund(true).is_err());
        }
        assert_eq!(Paid.cancel().map_err(|e| e.to_string()), Err("order is PAID; it cannot be cancelled".into()));
    }

    #[test]
    fn orders_round_trip_through_json_with_api_field_names() {
        let new = NewOrder::parse(&order(vec![item("Widget", 2, "100.00")]), Currency::USD).unwrap();
        let o = Order {
            id: OrderId::new(1),
            user_id: UserId::new(2),
            status: OrderStatus::Created,
            items: new.items().to_vec(),
            total: new.total(),
            refunded: Money::zero(Currency::USD),
            fulfillment: FulfillmentState::Unfulfilled,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["total_amount"], "200.00");
        assert_eq!(json["items"][0]["price"], "100.00");
        assert_eq!(json["currency"], "USD");
        assert_eq!(json["status"], "CREATED");
        assert_eq!(json["items"][0]["id"], 1001);
        assert_eq!(json["fulfillment_status"], "UNFULFILLED");
        assert_eq!(serde_json::from_value::<Order>(json).unwrap(), o);
    }

    proptest! {
        #[test]
        fn total_equals_the_exact_sum_for_any_valid_items(
            lines in prop::collection::vec((1i64..=1_000_000, 1i64..=1_000_000_000), 1..=100)
        ) {
            let items = lines
                .iter()
                .enumerate()
                .map(|(i, (q, p))| item(&format!("item {i}"), *q, &Money::from_minor(*p, Currency::USD).amount_string()))
                .collect();
            let expected: i128 = lines.iter().map(|(q, p)| i128::from(*q) * i128::from(*p)).sum();
            match NewOrder::parse(&order(items), Currency::USD) {
                Ok(o) => prop_assert_eq!(i128::from(o.total().minor()), expected),
                Err(e) => {
                    prop_assert!(expected > i128::from(i64::MAX));
                    prop_assert!(e.fields().contains_key("items"));
                }
            }
        }

        #[test]
        fn parsing_any_input_never_panics(
            name in "\\PC{0,300}", quantity in any::<i64>(), price in "\\PC{0,30}", currency in "\\PC{0,4}"
        ) {
            let input = OrderInput { items: vec![item(&name, quantity, &price)], currency: Some(currency) };
            let _ = NewOrder::parse(&input, Currency::USD);
        }
    }
}
