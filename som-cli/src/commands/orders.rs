//! `som orders …`

use clap::Subcommand;
use som_core::OrderListQuery;
use som_core::domain::{ItemInput, Order, OrderId, OrderInput, OrderStatus};

use super::{OPERATOR, resolve_user_id};
use crate::Ctx;

/// Create, inspect, cancel and fulfil orders.
#[derive(Debug, Subcommand)]
pub enum Orders {
    /// Place an order for a user.
    Create {
        /// Owner: username or id.
        #[arg(long)]
        user: String,
        /// An item as NAME:QUANTITY:PRICE (repeatable), e.g. --item "Widget:2:100.00".
        #[arg(long = "item", required = true, value_parser = parse_item)]
        items: Vec<ItemInput>,
        /// ISO 4217 currency (default: SOM_CURRENCY).
        #[arg(long)]
        currency: Option<String>,
        /// Idempotency key: repeating the command with it has no second effect.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List orders, newest first.
    List {
        #[command(flatten)]
        filters: OrderFilters,
        /// Only the order with this id, or orders whose owner's username or email contains this
        /// text (case-insensitively).
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = som_core::system::DEFAULT_PAGE_SIZE,
            help = format!("Page size (1-{})", som_core::system::MAX_PAGE_SIZE))]
        limit: u32,
        /// Continue after this cursor (printed with the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Write every order the filters select, newest first, as CSV or NDJSON (to stdout, or a
    /// file), reading a batch at a time.
    Export {
        /// csv (one line per order, items flattened) or ndjson (one order per line, as the API
        /// shows it).
        #[arg(long, default_value = "csv", value_parser = super::names_parser(som_core::ExportFormat::ALL, som_core::ExportFormat::as_str, som_core::ExportFormat::parse))]
        format: som_core::ExportFormat,
        #[command(flatten)]
        filters: OrderFilters,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Show one order.
    Show {
        /// Order id.
        id: OrderId,
    },
    /// Show a user's newest order.
    Latest {
        /// Username or id.
        #[arg(long)]
        user: String,
    },
    /// Cancel an unpaid order.
    Cancel {
        /// Order id.
        id: OrderId,
    },
    /// Show an order's status changes.
    History {
        /// Order id.
        id: OrderId,
    },
    #[command(flatten)]
    Fulfilment(super::returns::FulfilmentCommand),
}

fn parse_item(raw: &str) -> Result<ItemInput, String> {
    let mut parts = raw.rsplitn(3, ':');
    let (Some(price), Some(quantity), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected NAME:QUANTITY:PRICE".into());
    };
    // Either half that is not a number at all is a usage error; numbers out of range or with
    // more decimals than the currency has are the order's validation errors.
    let quantity =
        quantity.trim().parse::<i64>().map_err(|_| format!("quantity {quantity:?} is not a whole number"))?;
    let price = price.trim();
    // A sign is the order's business (a negative price is refused there, like a zero quantity).
    let unsigned = price.strip_prefix('-').unwrap_or(price);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(whole) && digits(fraction)) {
        return Err(format!("price {price:?} is not a decimal number such as 12.50"));
    }
    Ok(ItemInput { name: name.to_owned(), quantity, price: price.to_owned() })
}

/// The filters a list and an export share.
#[derive(Debug, clap::Args)]
pub struct OrderFilters {
    /// Only this user's orders (username or id); everyone's otherwise.
    #[arg(long)]
    user: Option<String>,
    /// Only orders in this status.
    #[arg(long, value_parser = super::names_parser(OrderStatus::ALL, OrderStatus::as_str, OrderStatus::parse))]
    status: Option<OrderStatus>,
    /// Only orders placed at or after this time (RFC 3339, e.g. 2026-11-30T00:00:00Z).
    #[arg(long, value_parser = parse_time)]
    created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Only orders placed before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    created_before: Option<chrono::DateTime<chrono::Utc>>,
}

impl OrderFilters {
    /// The filters with the user resolved to an id.
    async fn query(self, ctx: &Ctx) -> anyhow::Result<som_core::OrderExportQuery> {
        let user = match self.user {
            Some(u) => Some(resolve_user_id(ctx, &u).await?),
            None => None,
        };
        Ok(som_core::OrderExportQuery {
            user,
            status: self.status,
            created_after: self.created_after,
            created_before: self.created_before,
        })
    }
}

fn parse_time(raw: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| "expected an RFC 3339 time such as 2026-11-30T09:00:00Z".into())
}

/// `key: value` lines of an order.
pub fn order_fields(o: &Order) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("id", o.id.to_string()),
        ("user", o.user_id.to_string()),
        ("status", o.status.to_string()),
        ("fulfilment", o.fulfillment.to_string()),
        ("total", o.total.to_string()),
        ("refunded", o.refunded.to_string()),
        ("created", o.created_at.to_rfc3339()),
    ];
    for (id, item) in o.items_with_ids() {
        fields.push(("item", format!("{id}: {} x {} @ {}", item.quantity, item.name, item.price)));
    }
    fields
}

impl Orders {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Orders::Create { user, items, currency, idempotency_key } => {
                let owner = resolve_user_id(ctx, &user).await?;
                let input = OrderInput { items, currency };
                let order = ctx
                    .som
                    .create_order(OPERATOR, input)
                    .on_behalf_of(owner)
                    .maybe_idempotency_key(idempotency_key.as_deref())
                    .await?;
                ctx.out.record(&order, &order_fields(&order))
            }
            Orders::Export { format, filters, output } => {
                if ctx.out.json && output.is_none() {
                    return Err(crate::UsageError(
                        "`som orders export` writes its own format (--format csv|ndjson) to stdout; \
                         --json applies only with --output, where it prints what was written"
                            .into(),
                    )
                    .into());
                }
                let query = filters.query(ctx).await?;
                let mut export = ctx.som.export_orders(super::OPERATOR, query).await?;
                let sink: Box<dyn std::io::Write> = match &output {
                    Some(path) => Box::new(std::fs::File::create(path)?),
                    None => Box::new(std::io::stdout().lock()),
                };
                let mut out = std::io::BufWriter::with_capacity(256 * 1024, sink);
                let mut text = String::from(format.header());
                let mut written = 0u64;
                while let Some(batch) = export.next_batch().await? {
                    for order in &batch {
                        format.write(order, &mut text);
                    }
                    written += batch.len() as u64;
                    std::io::Write::write_all(&mut out, text.as_bytes())?;
                    text.clear();
                }
                std::io::Write::write_all(&mut out, text.as_bytes())?;
                std::io::Write::flush(&mut out)?;
                match output {
                    Some(path) if ctx.out.json => {
                        let summary = serde_json::json!({ "exported": written, "path": path });
                        println!("{}", serde_json::to_string_pretty(&summary)?);
                    }
                    Some(path) => ctx.out.note(&format!("exported {written} orders to {}", path.display())),
                    None => {}
                }
                Ok(())
            }
            Orders::List { filters, search, limit, cursor } => {
                let filters = filters.query(ctx).await?;
                let query = OrderListQuery {
                    user: filters.user,
                    status: filters.status,
                    cursor,
                    limit: Some(limit),
                    created_after: filters.created_after,
                    created_before: filters.created_before,
                    search,
                    ..OrderListQuery::default()
                };
                let page = ctx.som.list_orders(OPERATOR, query).await?;
                let orders = page.items;
                // Usernames beside user ids: one lookup per distinct user on the page.
                let mut names = std::collections::HashMap::new();
                for o in &orders {
                    if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(o.user_id) {
                        let name =
                            ctx.som.find_user(OPERATOR, &o.user_id.to_string()).await.map(|u| u.username.to_string());
                        slot.insert(name.unwrap_or_default());
                    }
                }
                let rows = orders
                    .iter()
                    .map(|o| {
                        vec![
                            o.id.to_string(),
                            format!("{} ({})", o.user_id, names.get(&o.user_id).map_or("", String::as_str)),
                            o.status.to_string(),
                            o.total.to_string(),
                            o.items.len().to_string(),
                            o.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        ]
                    })
                    .collect();
                ctx.out.table(&orders, page.next_cursor, &["id", "user", "status", "total", "items", "created"], rows)
            }
            Orders::Show { id } => {
                let order = ctx.som.order(OPERATOR, id).await?;
                ctx.out.record(&order, &order_fields(&order))
            }
            Orders::Latest { user } => {
                let owner = resolve_user_id(ctx, &user).await?;
                let order = ctx.som.latest_order(OPERATOR, Some(owner)).await?;
                ctx.out.record(&order, &order_fields(&order))
            }
            Orders::Cancel { id } => {
                let order = ctx.som.cancel_order(OPERATOR, id).await?;
                ctx.out.record(&order, &order_fields(&order))
            }
            Orders::History { id } => {
                let events = ctx.som.order_history(OPERATOR, id).await?;
                let rows = events
                    .iter()
                    .map(|e| {
                        vec![
                            e.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                            e.from.map_or_else(|| crate::output::NONE.into(), |s| s.to_string()),
                            e.to.to_string(),
                            e.actor.to_string(),
                            e.reason.clone().unwrap_or_else(|| crate::output::NONE.into()),
                        ]
                    })
                    .collect();
                ctx.out.table(&events, None, &["at", "from", "to", "actor", "reason"], rows)
            }
            Orders::Fulfilment(c) => c.run(ctx).await,
        }
    }
}
