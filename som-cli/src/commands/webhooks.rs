//! `som webhooks …` and `som events redeliver`: endpoints that receive SOM's events, their
//! delivery log, and redelivery.

use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;
use som_core::domain::{DeliveryId, EndpointId, WebhookDelivery, WebhookEndpoint};
use som_core::{DeliveryListQuery, EndpointInput, EndpointPatch};

use super::OPERATOR;
use crate::Ctx;
use crate::output::NONE;

/// An endpoint as printed; the secret only when it was just made or rotated.
#[derive(Debug, Serialize)]
struct EndpointView {
    id: i64,
    url: String,
    events: Vec<String>,
    description: Option<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    failing_since: Option<chrono::DateTime<chrono::Utc>>,
    from_config: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl EndpointView {
    fn of(e: WebhookEndpoint, with_secret: bool) -> EndpointView {
        EndpointView {
            id: e.id.get(),
            events: e.events.names(),
            description: e.description,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since,
            from_config: e.from_config,
            secret: with_secret.then_some(e.secret),
            created_at: e.created_at,
            url: e.url,
        }
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("id", self.id.to_string()),
            ("url", self.url.clone()),
            ("events", self.events.join(", ")),
            ("description", self.description.clone().unwrap_or_else(|| NONE.into())),
            ("enabled", self.enabled.to_string()),
            ("disabled because", self.disabled_reason.clone().unwrap_or_else(|| NONE.into())),
            ("failing since", self.failing_since.map_or_else(|| NONE.into(), |t| t.to_rfc3339())),
        ];
        if let Some(secret) = &self.secret {
            fields.push(("secret", format!("{secret}   (shown once: keep it now)")));
        }
        fields
    }
}

/// Manage webhook endpoints.
#[derive(Debug, Subcommand)]
pub enum Webhooks {
    /// Make an endpoint; prints its signing secret once.
    Create {
        /// Where events are POSTed (https; http only to this machine).
        url: String,
        /// An event type it receives (repeatable; `som.order.created`, …); every type when left
        /// out.
        #[arg(long = "event")]
        events: Vec<String>,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
    },
    /// List endpoints.
    List {
        /// Continue after this cursor (printed with the previous page).
        #[arg(long)]
        cursor: Option<EndpointId>,
    },
    /// Show one endpoint.
    Show {
        /// Endpoint id.
        id: EndpointId,
    },
    /// Change an endpoint's URL or events, or disable or enable it.
    Update {
        /// Endpoint id.
        id: EndpointId,
        /// A new URL.
        #[arg(long)]
        url: Option<String>,
        /// The event types it receives from now (repeatable; `*` for every type).
        #[arg(long = "event")]
        events: Vec<String>,
        /// A new description (empty clears it).
        #[arg(long)]
        description: Option<String>,
        /// Resume deliveries (also after SOM disabled a failing endpoint).
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Stop deliveries.
        #[arg(long)]
        disable: bool,
    },
    /// Delete an endpoint and its delivery log.
    Delete {
        /// Endpoint id.
        id: EndpointId,
    },
    /// Give an endpoint a new secret; the old one keeps signing beside it for the overlap.
    RotateSecret {
        /// Endpoint id.
        id: EndpointId,
        /// How long the old secret keeps signing (90s, 15m, 2h, 1d; at most 7d; 0 drops it).
        #[arg(long, value_parser = duration)]
        overlap: Option<Duration>,
    },
    /// An endpoint's delivery log, newest first.
    Deliveries {
        /// Endpoint id.
        id: EndpointId,
        /// Only `succeeded` or `failed` attempts.
        #[arg(long)]
        status: Option<String>,
        /// Only events of this type.
        #[arg(long)]
        event_type: Option<String>,
        /// Continue after this cursor (printed with the previous page).
        #[arg(long)]
        cursor: Option<DeliveryId>,
    },
}

fn duration(raw: &str) -> Result<Duration, String> {
    som_core::config::parse_duration(raw).ok_or_else(|| "expected a duration such as 90s, 15m, 2h or 1d".to_owned())
}

impl Webhooks {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let som = &ctx.som;
        let (endpoint, with_secret) = match self {
            Webhooks::Create { url, events, description } => {
                let events = if events.is_empty() { vec!["*".to_owned()] } else { events };
                let e = som.create_webhook_endpoint(OPERATOR, EndpointInput { url, events, description }).await?;
                (e, true)
            }
            Webhooks::Show { id } => (som.webhook_endpoint(OPERATOR, id).await?, false),
            Webhooks::Update { id, url, events, description, enable, disable } => {
                let patch = EndpointPatch {
                    url,
                    events: (!events.is_empty()).then_some(events),
                    description: description.map(|d| Some(d).filter(|d| !d.trim().is_empty())),
                    enabled: if enable {
                        Some(true)
                    } else if disable {
                        Some(false)
                    } else {
                        None
                    },
                };
                (som.update_webhook_endpoint(OPERATOR, id, patch).await?, false)
            }
            Webhooks::Delete { id } => {
                som.delete_webhook_endpoint(OPERATOR, id).await?;
                ctx.out.note(&format!("deleted webhook endpoint {id}"));
                return Ok(());
            }
            Webhooks::RotateSecret { id, overlap } => (som.rotate_webhook_secret(OPERATOR, id, overlap).await?, true),
            Webhooks::List { cursor } => {
                let page = som.webhook_endpoints(OPERATOR, cursor, None).await?;
                let views: Vec<EndpointView> = page.items.into_iter().map(|e| EndpointView::of(e, false)).collect();
                let rows = views
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.to_string(),
                            e.url.clone(),
                            e.events.join(", "),
                            if e.enabled { "enabled".into() } else { "disabled".into() },
                            e.failing_since.map_or_else(|| NONE.into(), |t| t.to_rfc3339()),
                        ]
                    })
                    .collect();
                return ctx.out.table(
                    &views,
                    page.next_cursor,
                    &["id", "url", "events", "state", "failing since"],
                    rows,
                );
            }
            Webhooks::Deliveries { id, status, event_type, cursor } => {
                let query = DeliveryListQuery { status, event_type, event_id: None, cursor, limit: None };
                let page = som.webhook_deliveries(OPERATOR, id, query).await?;
                let rows = page
                    .items
                    .iter()
                    .map(|d: &WebhookDelivery| {
                        vec![
                            d.id.to_string(),
                            d.created_at.to_rfc3339(),
                            d.event_id.clone(),
                            d.attempt.to_string(),
                            d.response_status.map_or_else(|| NONE.into(), |s| s.to_string()),
                            format!("{} ms", d.latency_ms),
                            d.error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                return ctx.out.table(
                    &page.items,
                    page.next_cursor,
                    &["id", "at", "event", "attempt", "status", "latency", "error"],
                    rows,
                );
            }
        };
        let view = EndpointView::of(endpoint, with_secret);
        ctx.out.record(&view, &view.fields())
    }
}

/// Events other systems receive.
#[derive(Debug, Subcommand)]
pub enum Events {
    /// Deliver an event again to webhook endpoints.
    Redeliver {
        /// The event's id (`order_created:order:42`, as in the delivery log).
        id: String,
        /// Only to this endpoint (default: every enabled endpoint subscribed to its type).
        #[arg(long)]
        endpoint: Option<EndpointId>,
    },
}

impl Events {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Events::Redeliver { id, endpoint } => {
                let queued = ctx.som.redeliver_event(OPERATOR, &id, endpoint).await?;
                let to: Vec<String> = queued.endpoints.iter().map(ToString::to_string).collect();
                let fields = [
                    ("event", queued.event_id.clone()),
                    ("type", queued.event_type.clone()),
                    ("queued for endpoints", if to.is_empty() { NONE.to_owned() } else { to.join(", ") }),
                ];
                ctx.out.record(&queued, &fields)
            }
        }
    }
}
