//! `som orders fulfil|ship|deliver|…` and `som returns …`: an order's goods after payment.

use clap::Subcommand;
use som_core::domain::{
    Fulfillment, FulfillmentId, FulfillmentStatus, ItemId, ItemQuantity, OrderId, Return, ReturnId, ReturnStatus,
};
use som_core::{FulfillmentInput, ReturnInput, ShipInput};

use super::OPERATOR;
use crate::Ctx;
use crate::output::NONE;

/// An order line as ITEM_ID:QUANTITY (`--item 7001:1`); the ids are the order's `items[].id`.
pub fn parse_line(raw: &str) -> Result<ItemQuantity, String> {
    let (id, quantity) = raw.split_once(':').ok_or("expected ITEM_ID:QUANTITY, e.g. 7001:1")?;
    let item_id = id.trim().parse::<i64>().map_err(|_| format!("item id {id:?} is not a whole number"))?;
    let quantity =
        quantity.trim().parse::<i64>().map_err(|_| format!("quantity {quantity:?} is not a whole number"))?;
    Ok(ItemQuantity { item_id: ItemId::new(item_id), quantity })
}

fn lines_text(lines: &[ItemQuantity]) -> String {
    lines.iter().map(|l| format!("{}:{}", l.item_id, l.quantity)).collect::<Vec<_>>().join(", ")
}

fn fulfillment_fields(f: &Fulfillment) -> Vec<(&'static str, String)> {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| NONE.into());
    vec![
        ("id", f.id.to_string()),
        ("order", f.order_id.to_string()),
        ("status", f.status.to_string()),
        ("items", lines_text(&f.items)),
        ("carrier", or_none(&f.tracking.carrier)),
        ("tracking", or_none(&f.tracking.number)),
        ("tracking url", or_none(&f.tracking.url)),
        ("shipped", f.shipped_at.map_or_else(|| NONE.into(), |t| t.to_rfc3339())),
        ("delivered", f.delivered_at.map_or_else(|| NONE.into(), |t| t.to_rfc3339())),
    ]
}

fn return_fields(r: &Return) -> Vec<(&'static str, String)> {
    vec![
        ("id", r.id.to_string()),
        ("order", r.order_id.to_string()),
        ("status", r.status.to_string()),
        ("items", lines_text(&r.items)),
        ("reason", r.reason.clone().unwrap_or_else(|| NONE.into())),
        ("note", r.note.clone().unwrap_or_else(|| NONE.into())),
        ("refund", r.refund_id.map_or_else(|| NONE.into(), |id| id.to_string())),
        ("refund amount", r.refund_amount.map_or_else(|| NONE.into(), |m| m.to_string())),
    ]
}

/// Fulfilment commands of `som orders`.
#[derive(Debug, Subcommand)]
pub enum FulfilmentCommand {
    /// Make a fulfilment (a parcel to ship) of a paid or authorised order's items.
    Fulfil {
        /// Order id.
        order: OrderId,
        /// An item as ITEM_ID:QUANTITY (repeatable; the ids are in `som orders show`);
        /// everything not yet in a fulfilment when left out.
        #[arg(long = "item", value_parser = parse_line)]
        items: Vec<ItemQuantity>,
        /// The carrier.
        #[arg(long)]
        carrier: Option<String>,
        /// The tracking number.
        #[arg(long)]
        tracking_number: Option<String>,
        /// The tracking page (http or https).
        #[arg(long)]
        tracking_url: Option<String>,
    },
    /// Ship a pending fulfilment (the owner is told, with the tracking).
    Ship {
        /// Fulfilment id.
        id: FulfillmentId,
        /// The carrier.
        #[arg(long)]
        carrier: Option<String>,
        /// The tracking number.
        #[arg(long)]
        tracking_number: Option<String>,
        /// The tracking page (http or https).
        #[arg(long)]
        tracking_url: Option<String>,
        /// For an authorised (manual capture) order: capture the shipped items' amount first.
        #[arg(long)]
        capture: bool,
    },
    /// Mark a shipped fulfilment delivered.
    Deliver {
        /// Fulfilment id.
        id: FulfillmentId,
    },
    /// Cancel a pending fulfilment (its items may be fulfilled again).
    CancelFulfilment {
        /// Fulfilment id.
        id: FulfillmentId,
    },
    /// List an order's fulfilments, or every fulfilment (by status: PENDING is what is to ship).
    Fulfilments {
        /// Only this order's.
        order: Option<OrderId>,
        /// Only those in this status.
        #[arg(long, value_parser = super::names_parser(FulfillmentStatus::ALL, FulfillmentStatus::as_str, FulfillmentStatus::parse))]
        status: Option<FulfillmentStatus>,
        /// Continue after this cursor (printed with the previous page).
        #[arg(long)]
        cursor: Option<FulfillmentId>,
    },
}

impl FulfilmentCommand {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let som = &ctx.som;
        let f = match self {
            FulfilmentCommand::Fulfil { order, items, carrier, tracking_number, tracking_url } => {
                let items = (!items.is_empty()).then_some(items);
                let input = FulfillmentInput { items, carrier, tracking_number, tracking_url };
                som.create_fulfillment(OPERATOR, order, input).await?
            }
            FulfilmentCommand::Ship { id, carrier, tracking_number, tracking_url, capture } => {
                let input = ShipInput { carrier, tracking_number, tracking_url, capture };
                som.ship_fulfillment(OPERATOR, id, input).await?
            }
            FulfilmentCommand::Deliver { id } => som.deliver_fulfillment(OPERATOR, id).await?,
            FulfilmentCommand::CancelFulfilment { id } => som.cancel_fulfillment(OPERATOR, id).await?,
            FulfilmentCommand::Fulfilments { order, status, cursor } => {
                let (items, next) = match order {
                    Some(order) => {
                        let all = som.order_fulfillments(OPERATOR, order).await?;
                        (all.into_iter().filter(|f| status.is_none_or(|s| f.status == s)).collect(), None)
                    }
                    None => {
                        let page = som.fulfillments_page(OPERATOR, status, cursor, None).await?;
                        (page.items, page.next_cursor)
                    }
                };
                let rows = items
                    .iter()
                    .map(|f: &Fulfillment| {
                        vec![
                            f.id.to_string(),
                            f.order_id.to_string(),
                            f.status.to_string(),
                            lines_text(&f.items),
                            f.tracking.describe(),
                        ]
                    })
                    .collect();
                return ctx.out.table(&items, next, &["id", "order", "status", "items", "tracking"], rows);
            }
        };
        ctx.out.record(&f, &fulfillment_fields(&f))
    }
}

/// Ask for, decide on and receive returns of delivered items.
#[derive(Debug, Subcommand)]
pub enum Returns {
    /// Ask for a return of delivered items on the owner's behalf.
    Request {
        /// Order id.
        order: OrderId,
        /// An item as ITEM_ID:QUANTITY (repeatable).
        #[arg(long = "item", required = true, value_parser = parse_line)]
        items: Vec<ItemQuantity>,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Approve a requested return.
    Approve {
        /// Return id.
        id: ReturnId,
    },
    /// Reject a requested or approved return, saying why.
    Reject {
        /// Return id.
        id: ReturnId,
        /// Why, for the customer.
        #[arg(long)]
        note: String,
    },
    /// Receive an approved return's items and refund them.
    Receive {
        /// Return id.
        id: ReturnId,
        /// How much to refund (default: the items' value, at most what is left to refund;
        /// 0 receives them without a refund).
        #[arg(long)]
        amount: Option<String>,
    },
    /// Show one return.
    Show {
        /// Return id.
        id: ReturnId,
    },
    /// List an order's returns, or every return (by status: REQUESTED and APPROVED are open).
    List {
        /// Only this order's.
        #[arg(long)]
        order: Option<OrderId>,
        /// Only those in this status.
        #[arg(long, value_parser = super::names_parser(ReturnStatus::ALL, ReturnStatus::as_str, ReturnStatus::parse))]
        status: Option<ReturnStatus>,
        /// Continue after this cursor (printed with the previous page).
        #[arg(long)]
        cursor: Option<ReturnId>,
    },
}

impl Returns {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let som = &ctx.som;
        let r = match self {
            Returns::Request { order, items, reason } => {
                som.request_return(OPERATOR, order, ReturnInput { items, reason }).await?
            }
            Returns::Approve { id } => som.approve_return(OPERATOR, id).await?,
            Returns::Reject { id, note } => som.reject_return(OPERATOR, id, &note).await?,
            Returns::Receive { id, amount } => som.receive_return(OPERATOR, id, amount.as_deref()).await?,
            Returns::Show { id } => som.get_return(OPERATOR, id).await?,
            Returns::List { order, status, cursor } => {
                let (items, next) = match order {
                    Some(order) => {
                        let all = som.order_returns(OPERATOR, order).await?;
                        (all.into_iter().filter(|r| status.is_none_or(|s| r.status == s)).collect(), None)
                    }
                    None => {
                        let page = som.returns_page(OPERATOR, status, cursor, None).await?;
                        (page.items, page.next_cursor)
                    }
                };
                let rows = items
                    .iter()
                    .map(|r: &Return| {
                        vec![
                            r.id.to_string(),
                            r.order_id.to_string(),
                            r.status.to_string(),
                            lines_text(&r.items),
                            r.refund_amount.map_or_else(|| NONE.into(), |m| m.to_string()),
                            r.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                return ctx.out.table(&items, next, &["id", "order", "status", "items", "refund", "reason"], rows);
            }
        };
        ctx.out.record(&r, &return_fields(&r))
    }
}
