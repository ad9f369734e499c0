//! `som notifications …`

use clap::Subcommand;
use serde::Serialize;
use som_core::domain::NotificationId;
use som_core::storage::{NotificationStatus, OutboxEntry};

use super::OPERATOR;
use crate::Ctx;

/// Inspect and retry notifications in the outbox.
#[derive(Debug, Subcommand)]
pub enum Notifications {
    /// List notifications, oldest first.
    List {
        /// Only this status: pending, sent or dead.
        #[arg(long, value_parser = parse_status)]
        status: Option<NotificationStatus>,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Re-queue a dead notification for delivery.
    Retry {
        /// Notification id.
        id: NotificationId,
    },
}

fn parse_status(raw: &str) -> Result<NotificationStatus, String> {
    NotificationStatus::parse(raw).ok_or_else(|| "expected pending, sent or dead".into())
}

/// A notification as printed.
#[derive(Debug, Serialize)]
struct Row {
    id: i64,
    kind: String,
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
            dedupe_key: n.dedupe_key,
            channel: n.channel,
            recipient: n.recipient,
            subject: n.message.subject,
            status: n.status.to_string(),
            attempts: n.attempts,
            next_attempt_at: n.next_attempt_at.to_rfc3339(),
            last_error: n.last_error,
            created_at: n.created_at.to_rfc3339(),
            sent_at: n.sent_at.map(|t| t.to_rfc3339()),
        }
    }
}

impl Notifications {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Notifications::List { status, limit } => {
                let rows: Vec<Row> =
                    ctx.som.notifications(OPERATOR, status, None, limit).await?.into_iter().map(Into::into).collect();
                let table = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            r.kind.clone(),
                            r.channel.clone(),
                            r.recipient.clone().unwrap_or_else(|| "-".into()),
                            r.status.clone(),
                            r.attempts.to_string(),
                            r.last_error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                ctx.out.table(&rows, &["id", "kind", "channel", "to", "status", "attempts", "last error"], table)
            }
            Notifications::Retry { id } => {
                let row = Row::from(ctx.som.retry_notification(OPERATOR, id).await?);
                let fields = [("id", row.id.to_string()), ("status", row.status.clone()), ("kind", row.kind.clone())];
                ctx.out.record(&row, &fields)
            }
        }
    }
}
