//! Orders as JSON: [`OrderResponse`] documents the shape, [`OrderJson`] and [`OrderListJson`]
//! write it straight from som-core's `Order` into the response body, without a copy of each
//! amount, code and item as a `String` of its own first. A list page of 50 orders is the
//! largest body the read path renders; a test checks both spell the same JSON.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use som_core::domain::{ItemId, Order, OrderItem};
use utoipa::ToSchema;

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemResponse {
    /// The line's id, unique across orders; fulfilments and returns name items by it.
    #[schema(example = 1001)]
    pub id: i64,
    /// Item name.
    #[schema(example = "Widget")]
    pub name: String,
    /// How many.
    #[schema(example = 2)]
    pub quantity: i64,
    /// Unit price with the currency's digits.
    #[schema(example = "100.00")]
    pub price: String,
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderResponse {
    /// Order id.
    #[schema(example = 1001)]
    pub id: i64,
    /// Owner's user id.
    #[schema(example = 42)]
    pub user: i64,
    /// Items in submitted order.
    pub items: Vec<OrderItemResponse>,
    /// Σ quantity × price, exact, with the currency's digits.
    #[schema(example = "250.00")]
    pub total_amount: String,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
    /// How much of the payment has been refunded.
    #[schema(example = "0.00")]
    pub refunded_amount: String,
    /// CREATED, PAID, CANCELLED, PARTIALLY_REFUNDED or REFUNDED.
    #[schema(value_type = crate::schema::StatusParam, example = "CREATED")]
    pub status: String,
    /// Where its goods are, beside its (payment) status: UNFULFILLED, PARTIALLY_FULFILLED,
    /// FULFILLED, DELIVERED, PARTIALLY_RETURNED or RETURNED.
    #[schema(value_type = crate::schema::FulfillmentStateSchema, example = "UNFULFILLED")]
    pub fulfillment_status: String,
    /// When it was placed.
    #[schema(example = "2026-11-30T09:15:00Z")]
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    #[schema(example = "2026-11-30T09:16:30Z")]
    pub updated_at: DateTime<Utc>,
}

/// The documented shape built field by field (a `String` per amount, code and item price);
/// [`OrderJson`] writes the same JSON without them.
impl From<Order> for OrderResponse {
    fn from(o: Order) -> Self {
        OrderResponse {
            id: o.id.get(),
            user: o.user_id.get(),
            total_amount: o.total.amount_string(),
            refunded_amount: o.refunded.amount_string(),
            currency: o.currency().code().to_owned(),
            items: o
                .items_with_ids()
                .map(|(id, i)| OrderItemResponse {
                    id: id.get(),
                    price: i.price.amount_string(),
                    name: i.name.clone(),
                    quantity: i.quantity,
                })
                .collect(),
            status: o.status.as_str().to_owned(),
            fulfillment_status: o.fulfillment.as_str().to_owned(),
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// An order, serialized as [`OrderResponse`].
#[derive(Debug)]
pub struct OrderJson(pub Order);

/// A page of orders, serialized as a JSON array of [`OrderResponse`].
#[derive(Debug)]
pub struct OrderListJson(pub Vec<Order>);

impl Serialize for OrderJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        OrderRef(&self.0).serialize(s)
    }
}

impl Serialize for OrderListJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(OrderRef))
    }
}

struct OrderRef<'a>(&'a Order);

impl Serialize for OrderRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = self.0;
        let mut m = s.serialize_struct("OrderResponse", 10)?;
        m.serialize_field("id", &o.id.get())?;
        m.serialize_field("user", &o.user_id.get())?;
        m.serialize_field("items", &Items(o))?;
        m.serialize_field("total_amount", &Text(o.total.amount()))?;
        m.serialize_field("currency", o.currency().code())?;
        m.serialize_field("refunded_amount", &Text(o.refunded.amount()))?;
        m.serialize_field("status", o.status.as_str())?;
        m.serialize_field("fulfillment_status", o.fulfillment.as_str())?;
        m.serialize_field("created_at", &o.created_at)?;
        m.serialize_field("updated_at", &o.updated_at)?;
        m.end()
    }
}

struct Items<'a>(&'a Order);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.items_with_ids().map(|(id, item)| ItemRef(id, item)))
    }
}

struct ItemRef<'a>(ItemId, &'a OrderItem);

impl Serialize for ItemRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.1;
        let mut m = s.serialize_struct("OrderItemResponse", 4)?;
        m.serialize_field("id", &self.0.get())?;
        m.serialize_field("name", &i.name)?;
        m.serialize_field("quantity", &i.quantity)?;
        m.serialize_field("price", &Text(i.price.amount()))?;
        m.end()
    }
}

/// A value written as a JSON string through its `Display` (serde_json escapes it in place).
struct Text<D>(D);

impl<D: std::fmt::Display> Serialize for Text<D> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Bytes a serialized order takes, give or take: the body's first allocation, so that a page
/// is written without growing its buffer again and again.
const ORDER_BYTES: usize = 256;
const ITEM_BYTES: usize = 64;

fn json_response(value: &impl Serialize, capacity: usize) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response(),
        // Orders are plain data; serde_json fails only on a map with non-string keys.
        Err(e) => {
            crate::error::ApiError::from(som_core::Error::Internal(format!("rendering JSON: {e}"))).into_response()
        }
    }
}

fn order_bytes(o: &Order) -> usize {
    ORDER_BYTES + ITEM_BYTES * o.items.len()
}

impl IntoResponse for OrderJson {
    fn into_response(self) -> Response {
        json_response(&self, order_bytes(&self.0))
    }
}

impl IntoResponse for OrderListJson {
    fn into_response(self) -> Response {
        json_response(&self, 2 + self.0.iter().map(order_bytes).sum::<usize>())
    }
}

#[cfg(test)]
mod tests {
    use som_core::domain::{Currency, Money, OrderId, OrderStatus, UserId};

    use super::*;

    fn order(currency: Currency, prices: &[i64], refunded: i64) -> Order {
        let items: Vec<OrderItem> = prices
            .iter()
            .enumerate()
            .map(|(n, p)| OrderItem {
                name: format!("Item \"{n}\" \u{e9} \\ </script>"),
                quantity: 3,
                price: Money::from_minor(*p, currency),
            })
            .collect();
        let total = Money::from_minor(items.iter().map(|i| i.price.minor() * i.quantity).sum(), currency);
        let at = DateTime::from_timestamp_micros(1_796_000_000_123_456).unwrap();
        Order {
            id: OrderId::new(7),
            user_id: UserId::new(42),
            status: OrderStatus::PartiallyRefunded,
            items,
            total,
            refunded: Money::from_minor(refunded, currency),
            fulfillment: som_core::domain::FulfillmentState::PartiallyReturned,
            created_at: at,
            updated_at: at + chrono::Duration::seconds(90),
        }
    }

    #[test]
    fn an_order_is_written_as_the_documented_response_spells_it() {
        for (currency, prices) in [("USD", &[10_000, 5][..]), ("JPY", &[250][..]), ("KWD", &[1_250, 1][..])] {
            let currency = Currency::parse(currency).unwrap();
            let o = order(currency, prices, 1);
            let direct = serde_json::to_string(&OrderJson(o.clone())).unwrap();
            let plain = serde_json::to_string(&OrderResponse::from(o.clone())).unwrap();
            assert_eq!(direct, plain);
            let list = serde_json::to_string(&OrderListJson(vec![o.clone(), o.clone()])).unwrap();
            assert_eq!(list, format!("[{plain},{plain}]"));
        }
        assert_eq!(serde_json::to_string(&OrderListJson(Vec::new())).unwrap(), "[]");
    }
}
