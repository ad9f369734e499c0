//! Orders as JSON: [`OrderResponse`] documents the shape, [`OrderJson`] and [`OrderListJson`]
//! write it straight from som-core's `Order` into the response body, without a copy of each
//! amount, code and item as a `String` of its own first, and without serde's per-key escaping
//! and `Display` formatting. A page of up to 200 orders is the largest body the read path
//! renders; tests check both spell the same JSON.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use som_core::domain::{Money, Order};
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

/// An order, written as [`OrderResponse`].
#[derive(Debug)]
pub struct OrderJson(pub Order);

/// A page of orders, written as a JSON array of [`OrderResponse`].
#[derive(Debug)]
pub struct OrderListJson(pub Vec<Order>);

impl OrderJson {
    /// The order as JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(order_bytes(&self.0));
        write_order(&mut out, &self.0);
        out
    }
}

impl OrderListJson {
    /// The page as JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.0.iter().map(order_bytes).sum::<usize>());
        out.push(b'[');
        for (n, o) in self.0.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_order(&mut out, o);
        }
        out.push(b']');
        out
    }
}

/// Bytes a written order takes, give or take: the body's first allocation, so that a page is
/// written without growing its buffer again and again.
const ORDER_BYTES: usize = 256;
const ITEM_BYTES: usize = 80;

fn order_bytes(o: &Order) -> usize {
    ORDER_BYTES + ITEM_BYTES * o.items.len()
}

/// One order as [`OrderResponse`] spells it, field by field into `out`. Only the item names are
/// text from outside, escaped by serde_json; every other value is a number, an amount, a time
/// or a fixed ASCII name (a status, an ISO 4217 code), which JSON takes as it is. Keys are
/// written as constants: serde would escape each key and go through `Display` for every amount
/// and time, most of a page's cost after reading it.
fn write_order(out: &mut Vec<u8>, o: &Order) {
    out.extend_from_slice(b"{\"id\":");
    push_int(out, o.id.get());
    out.extend_from_slice(b",\"user\":");
    push_int(out, o.user_id.get());
    out.extend_from_slice(b",\"items\":[");
    for (n, (id, item)) in o.items_with_ids().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        push_int(out, id.get());
        out.extend_from_slice(b",\"name\":");
        push_text(out, &item.name);
        out.extend_from_slice(b",\"quantity\":");
        push_int(out, item.quantity);
        out.extend_from_slice(b",\"price\":");
        push_amount(out, item.price);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"total_amount\":");
    push_amount(out, o.total);
    out.extend_from_slice(b",\"currency\":");
    push_text(out, o.currency().code());
    out.extend_from_slice(b",\"refunded_amount\":");
    push_amount(out, o.refunded);
    out.extend_from_slice(b",\"status\":");
    push_text(out, o.status.as_str());
    out.extend_from_slice(b",\"fulfillment_status\":");
    push_text(out, o.fulfillment.as_str());
    out.extend_from_slice(b",\"created_at\":");
    push_time(out, &o.created_at);
    out.extend_from_slice(b",\"updated_at\":");
    push_time(out, &o.updated_at);
    out.push(b'}');
}

fn push_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A JSON string, escaped as serde_json escapes it.
fn push_text(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// `"250.00"`: the amount with its currency's digits, as `Money::amount_string` spells it.
fn push_amount(out: &mut Vec<u8>, money: Money) {
    out.push(b'"');
    if money.minor() < 0 {
        out.push(b'-');
    }
    let abs = money.minor().unsigned_abs();
    let exponent = u32::from(money.currency().exponent());
    if exponent == 0 {
        out.extend_from_slice(itoa::Buffer::new().format(abs).as_bytes());
    } else {
        let scale = 10u64.pow(exponent);
        out.extend_from_slice(itoa::Buffer::new().format(abs / scale).as_bytes());
        out.push(b'.');
        push_digits(out, abs % scale, exponent as usize);
    }
    out.push(b'"');
}

/// `value` in exactly `width` digits, zeros first.
fn push_digits(out: &mut Vec<u8>, value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    let mut v = value;
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// A time as chrono's serde writes it (RFC 3339, UTC as `Z`, the fraction in 0, 3, 6 or 9
/// digits as it needs), spelled directly. Years outside 0–9999 and leap seconds go through
/// chrono's own.
fn push_time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    // The calendar fields of the UTC time itself (each accessor of a `DateTime` converts anew).
    let t = t.naive_utc();
    let nano = t.nanosecond();
    let year = match u64::try_from(t.year()) {
        Ok(year) if year <= 9999 && nano < 1_000_000_000 => year,
        _ => {
            let _ = serde_json::to_writer(&mut *out, &t.and_utc());
            return;
        }
    };
    out.push(b'"');
    push_digits(out, year, 4);
    for (sep, value) in [(b'-', t.month()), (b'-', t.day()), (b'T', t.hour()), (b':', t.minute()), (b':', t.second())] {
        out.push(sep);
        push_digits(out, u64::from(value), 2);
    }
    if nano != 0 {
        let (value, width) = if nano.is_multiple_of(1_000_000) {
            (nano / 1_000_000, 3)
        } else if nano.is_multiple_of(1_000) {
            (nano / 1_000, 6)
        } else {
            (nano, 9)
        };
        out.push(b'.');
        push_digits(out, u64::from(value), width);
    }
    out.extend_from_slice(b"Z\"");
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

impl IntoResponse for OrderJson {
    fn into_response(self) -> Response {
        json_response(self.to_vec())
    }
}

impl IntoResponse for OrderListJson {
    fn into_response(self) -> Response {
        json_response(self.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use som_core::domain::{Currency, Money, OrderId, OrderItem, OrderStatus, UserId};

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
            let direct = String::from_utf8(OrderJson(o.clone()).to_vec()).unwrap();
            let plain = serde_json::to_string(&OrderResponse::from(o.clone())).unwrap();
            assert_eq!(direct, plain);
            let list = String::from_utf8(OrderListJson(vec![o.clone(), o.clone()]).to_vec()).unwrap();
            assert_eq!(list, format!("[{plain},{plain}]"));
        }
        assert_eq!(OrderListJson(Vec::new()).to_vec(), b"[]");
    }

    #[test]
    fn times_are_spelled_as_chrono_spells_them() {
        let mut times: Vec<DateTime<Utc>> = [
            "2026-12-03T10:00:00Z",
            "2026-12-03T10:00:00.5Z",
            "2026-12-03T10:00:00.123Z",
            "2026-12-03T10:00:00.000001Z",
            "2026-12-03T10:00:00.123456Z",
            "2026-12-03T10:00:00.000000001Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59.010Z",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        times.push(DateTime::from_timestamp(253_402_300_800, 0).unwrap()); // the year 10000
        times.push(DateTime::from_timestamp(-62_167_219_200 - 86_400, 0).unwrap()); // before year 0
        let mut micros: i64 = 1_796_000_000_123_456;
        for _ in 0..2000 {
            micros = micros.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let m = micros.rem_euclid(253_402_300_799_000_000);
            times.push(DateTime::from_timestamp_micros(m).unwrap());
            times.push(DateTime::from_timestamp_micros(m - m % 1000).unwrap());
        }
        for t in times {
            let mut out = Vec::new();
            push_time(&mut out, &t);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&t).unwrap());
        }
    }
}
