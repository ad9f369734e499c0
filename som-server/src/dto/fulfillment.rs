//! The JSON shapes of fulfilments and returns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use som_core::domain::{Fulfillment, ItemId, ItemQuantity, Return};
use utoipa::ToSchema;

use crate::dto::Decimal;
use crate::schema::{FulfillmentStatusSchema, ReturnStatusSchema};

/// How many of one order line (`item_id` from the order's `items[].id`).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemLine {
    /// The order line's id (`items[].id` of the order).
    #[schema(minimum = 1, example = 7001)]
    #[serde(deserialize_with = "crate::dto::integral")]
    pub item_id: i64,
    /// How many; at least 1.
    #[schema(minimum = 1, maximum = 1000000, example = 1)]
    #[serde(deserialize_with = "crate::dto::integral")]
    pub quantity: i64,
}

pub(crate) fn lines(items: Vec<ItemLine>) -> Vec<ItemQuantity> {
    items.into_iter().map(|l| ItemQuantity { item_id: ItemId::new(l.item_id), quantity: l.quantity }).collect()
}

pub(crate) fn wire(items: Vec<ItemQuantity>) -> Vec<ItemLine> {
    items.into_iter().map(|l| ItemLine { item_id: l.item_id.get(), quantity: l.quantity }).collect()
}

/// `POST /orders/{id}/fulfillments/`; the body may be left out to fulfil everything left.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFulfillmentBody {
    /// Which items and how many (each at most what was ordered less what other fulfilments
    /// hold); everything left when absent or `null`.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 100)]
    pub items: Option<Vec<ItemLine>>,
    /// The carrier, when already known.
    #[serde(default)]
    #[schema(
        max_length = 100,
        example = "UPS",
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    pub carrier: Option<String>,
    /// The tracking number, when already known.
    #[serde(default)]
    #[schema(
        max_length = 100,
        example = "1Z999AA10123456784",
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    pub tracking_number: Option<String>,
    /// The tracking page (http or https), when already known.
    #[serde(default)]
    #[schema(
        max_length = 2000,
        example = "https://www.ups.com/track?tracknum=1Z999AA10123456784",
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069][^\\s\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    pub tracking_url: Option<String>,
}

/// `POST /fulfillments/{id}/ship/`; the body may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipBody {
    /// The carrier (replaces one given before).
    #[serde(default)]
    #[schema(
        max_length = 100,
        example = "UPS",
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    pub carrier: Option<String>,
    /// The tracking number (replaces one given before).
    #[serde(default)]
    #[schema(
        max_length = 100,
        example = "1Z999AA10123456784",
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    pub tracking_number: Option<String>,
    /// The tracking page, http or https (replaces one given before).
    #[serde(default)]
    #[schema(
        max_length = 2000,
        example = "https://www.ups.com/track?tracknum=1Z999AA10123456784",
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069][^\\s\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    pub tracking_url: Option<String>,
    /// For an order whose payment is only authorised (manual capture): capture the shipped
    /// items' amount first; the rest of the authorisation is released. Nothing is shipped when
    /// the capture is declined.
    #[serde(default)]
    pub capture: Option<bool>,
}

/// A fulfilment: a parcel of an order's items.
#[derive(Debug, Serialize, ToSchema)]
pub struct FulfillmentResponse {
    /// Fulfilment id.
    #[schema(example = 3)]
    pub id: i64,
    /// The order.
    #[schema(example = 7)]
    pub order: i64,
    /// The order's owner.
    #[schema(example = 42)]
    pub user: i64,
    /// PENDING, SHIPPED, DELIVERED or CANCELLED.
    #[schema(value_type = FulfillmentStatusSchema, example = "SHIPPED")]
    pub status: String,
    /// What is in it.
    pub items: Vec<ItemLine>,
    /// The carrier.
    pub carrier: Option<String>,
    /// The tracking number.
    pub tracking_number: Option<String>,
    /// Where the parcel can be followed.
    pub tracking_url: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was shipped.
    pub shipped_at: Option<DateTime<Utc>>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Fulfillment> for FulfillmentResponse {
    fn from(f: Fulfillment) -> Self {
        FulfillmentResponse {
            id: f.id.get(),
            order: f.order_id.get(),
            user: f.user_id.get(),
            status: f.status.as_str().to_owned(),
            items: wire(f.items),
            carrier: f.tracking.carrier,
            tracking_number: f.tracking.number,
            tracking_url: f.tracking.url,
            created_at: f.created_at,
            shipped_at: f.shipped_at,
            delivered_at: f.delivered_at,
            updated_at: f.updated_at,
        }
    }
}

/// `POST /orders/{id}/returns/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReturnBody {
    /// Which delivered items and how many (each at most what was delivered less what other
    /// returns hold).
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ItemLine>,
    /// Why.
    #[serde(default)]
    #[schema(
        max_length = 500,
        example = "Too small",
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    pub reason: Option<String>,
}

/// `POST /returns/{id}/reject/`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    /// Why, for the customer (1 to 500 characters).
    #[schema(
        min_length = 1,
        max_length = 500,
        example = "Worn items cannot be returned",
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069][^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    pub note: String,
}

/// `POST /returns/{id}/receive/`; the body may be left out to refund the items' value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveBody {
    /// How much to refund, in the order's currency: at most what is left to refund of its
    /// payment; `"0"` records the items as received without a refund. Absent or `null`: the
    /// returned items' value at the order's prices, at most what is left to refund.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "20.00", pattern = "^[0-9]{1,15}(\\.[0-9]{1,3})?$")]
    pub amount: Option<Decimal>,
}

/// A return of delivered items.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReturnResponse {
    /// Return id.
    #[schema(example = 5)]
    pub id: i64,
    /// The order.
    #[schema(example = 7)]
    pub order: i64,
    /// The order's owner.
    #[schema(example = 42)]
    pub user: i64,
    /// REQUESTED, APPROVED, RECEIVED, REFUNDED or REJECTED.
    #[schema(value_type = ReturnStatusSchema, example = "REQUESTED")]
    pub status: String,
    /// What is sent back.
    pub items: Vec<ItemLine>,
    /// Why, in the customer's words.
    pub reason: Option<String>,
    /// Staff's note (why it was rejected).
    pub note: Option<String>,
    /// Its refund (`GET /payments/{id}/refunds/` lists it), once received.
    pub refund: Option<i64>,
    /// How much its refund returns.
    #[schema(example = "20.00")]
    pub refund_amount: Option<String>,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Return> for ReturnResponse {
    fn from(r: Return) -> Self {
        ReturnResponse {
            id: r.id.get(),
            order: r.order_id.get(),
            user: r.user_id.get(),
            status: r.status.as_str().to_owned(),
            items: wire(r.items),
            reason: r.reason,
            note: r.note,
            refund: r.refund_id.map(|id| id.get()),
            refund_amount: r.refund_amount.map(|m| m.amount_string()),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}
