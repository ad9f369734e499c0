//! `som notifications …`

use clap::Subcommand;
use serde::Serialize;
use som_core::domain::NotificationId;
use som_core::domain::{NotificationStatus, OutboxEntry};

use super::OPERATOR;
use crate::Ctx;

/// Inspect and retry notifications in the outbox.
#[derive(Debug, Subcommand)]
pub enum Notifications {
    /// List notifications, oldest first.
    List {
        /// Only this status.
        #[arg(long, value_parser = super::names_parser(NotificationStatus::ALL, NotificationStatus::as_str, NotificationStatus::parse))]
        status: Option<NotificationStatus>,
        /// Only notifications about this order.
        #[arg(long)]
        order: Option<som_core::domain::OrderId>,
        #[arg(long, default_value_t = 100, help = format!("Show at most this many (1-{})", som_core::system::MAX_ADMIN_PAGE_SIZE), value_parser = clap::value_parser!(u32).range(1..=i64::from(som_core::system::MAX_ADMIN_PAGE_SIZE)))]
        limit: u32,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<NotificationId>,
    },
    /// Re-queue a dead notification for delivery.
    Retry {
        /// Notification id.
        id: NotificationId,
    },
    /// Re-queue every dead notification of one channel.
    RetryDead {
        /// The channel, as `som notifications list` shows it: smtp, webhook, log or stream.
        channel: String,
    },
}

/// A notification as printed.
#[derive(Debug, Serialize)]
struct Row {
    id: i64,
    kind: String,
    order: i64,
    dedupe_key: String,
    channel: String,
    recipient: Option<String>,
    subject: String,
    status: String,
    attempts: u32,
    next_attempt_at: String,
    last_error: Option<String>,
    created_at: String,
    sent_at: Option<String>,
}

impl From<OutboxEntry> for Row {
    fn from(n: OutboxEntry) -> Self {
        Row {
            id: n.id.get(),
            kind: n.kind.to_string(),
            order: n.message.order_id.get(),
            dedupe_key: n.dedupe_key,
            channel: n.channel,
            recipient: n.recipient,
            subject: n.message.subject,
            status: n.status.to_string(),
            attempts: n.attempts,
            next_attempt_at: rfc3339(n.next_attempt_at),
            last_error: n.last_error,
            created_at: rfc3339(n.created_at),
            sent_at: n.sent_at.map(rfc3339),
        }
    }
}

/// RFC 3339 in UTC with `Z`, as orders and payments are printed.
fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl Notifications {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Notifications::List { status, order, limit, cursor } => {
                let query = som_core::NotificationListQuery { status, order, cursor, limit: Some(limit) };
                let page = ctx.som.notifications_page(OPERATOR, query).await?;
                let next_cursor = page.next_cursor;
                let rows: Vec<Row> = page.items.into_iter().map(Into::into).collect();
                let table = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            r.kind.clone(),
                            r.order.to_string(),
                            r.channel.clone(),
                            r.recipient.clone().unwrap_or_else(|| crate::output::NONE.into()),
                            r.status.clone(),
                            r.attempts.to_string(),
                            r.last_error.clone().unwrap_or_else(|| crate::output::NONE.into()),
                        ]
                    })
                    .collect();
                ctx.out.table(
                    &rows,
                    next_cursor,
                    &["id", "kind", "order", "channel", "to", "status", "attempts", "last error"],
                    table,
                )
            }
            Notifications::Retry { id } => {
                let row = Row::from(ctx.som.retry_notification(OPERATOR, id).await?);
                let fields = [("id", row.id.to_string()), ("status", row.status.clone()), ("kind", row.kind.clone())];
                ctx.out.record(&row, &fields)
            }
            Notifications::RetryDead { channel } => {
                #[derive(Serialize)]
                struct Requeued {
                    channel: String,
                    requeued: u64,
                }
                let requeued = ctx.som.retry_dead_notifications(OPERATOR, &channel).await?;
                let fields = [("channel", channel.clone()), ("requeued", requeued.to_string())];
                ctx.out.record(&Requeued { channel, requeued }, &fields)
            }
        }
    }
}
