//! Notifications: what is pending, failing or dead-lettered, and retrying it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use som_core::NotificationListQuery;
use som_core::domain::{NotificationId, NotificationStatus, OutboxEntry};

use super::layout::{self, Section, badge, csrf, next_page, refused, when};
use super::session::{Checked, Flash, FlashKind, IncomingFlash, Staff, redirect_with};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::path_id;

/// A table of outbox rows; dead ones get a retry button that comes back to `back`.
pub(super) fn notification_rows(staff: &Staff, rows: &[OutboxEntry], back: &str) -> Markup {
    html! {
        div.scroll {
            table {
                thead { tr {
                    th scope="col" { "#" } th scope="col" { "Event" } th scope="col" { "Channel" } th scope="col" { "To" }
                    th scope="col" { "Order" } th scope="col" { "Status" } th.num scope="col" { "Attempts" }
                    th scope="col" { "Next attempt" } th scope="col" { "Last error" } th scope="col" { span.sr { "Actions" } }
                } }
                tbody {
                    @for n in rows {
                        tr {
                            td { (n.id) }
                            td { (n.kind.as_str()) }
                            td { (n.channel) }
                            td.name { (n.recipient.as_deref().unwrap_or("—")) }
                            td { a href={ "/console/orders/" (n.message.order_id) } { "#" (n.message.order_id) } }
                            td {
                                (badge(n.status.as_str()))
                                @if n.status == NotificationStatus::Pending && n.attempts > 0 { " " (badge("FAILING")) }
                            }
                            td.num { (n.attempts) }
                            td.nowrap { @if n.status == NotificationStatus::Pending { (when(n.next_attempt_at)) } }
                            td.name { (n.last_error.as_deref().unwrap_or("")) }
                            td {
                                @if n.status == NotificationStatus::Dead {
                                    form.inline method="post" action={ "/console/notifications/" (n.id) "/retry" } {
                                        (csrf(staff))
                                        input type="hidden" name="back" value=(back);
                                        button type="submit" { "Retry" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct Filter {
    #[serde(default)]
    status: String,
    #[serde(default)]
    cursor: String,
}

/// `GET /console/notifications`: dead letters by default.
pub(super) async fn notifications(
    State(s): State<AppState>,
    staff: Staff,
    Query(f): Query<Filter>,
    IncomingFlash(flash): IncomingFlash,
) -> Response {
    let chosen = if f.status.is_empty() { "dead" } else { f.status.as_str() };
    let status = match chosen {
        "all" => Ok(None),
        s => NotificationStatus::parse(s).map(Some).ok_or_else(|| format!("status: {s} is not a notification status")),
    };
    let cursor = match f.cursor.trim() {
        "" => Ok(None),
        c => c.parse::<NotificationId>().map(Some).map_err(|_| "cursor: is not a valid cursor".to_owned()),
    };
    let result = match (status, cursor) {
        (Err(m), _) | (_, Err(m)) => Err((StatusCode::BAD_REQUEST, m)),
        (Ok(status), Ok(cursor)) => {
            let query = NotificationListQuery { status, order: None, cursor, limit: None };
            s.som.notifications_page(staff.caller, query).await.map_err(|e| {
                let e = ApiError::from(e);
                (e.status(), e.detail().to_owned())
            })
        }
    };
    let code = result.as_ref().err().map_or(StatusCode::OK, |(c, _)| *c);
    let tabs: Vec<(&str, &str)> = NotificationStatus::ALL
        .iter()
        .map(|s| (s.as_str(), s.as_str()))
        .chain(std::iter::once(("all", "all")))
        .collect();
    let back = format!("/console/notifications?status={chosen}");
    // The channels with dead letters on this page, each retried in one go.
    let mut channels: Vec<&str> = match &result {
        Ok(page) if chosen == "dead" => page.items.iter().map(|n| n.channel.as_str()).collect(),
        _ => Vec::new(),
    };
    channels.sort_unstable();
    channels.dedup();
    let body = html! {
        nav.tabs aria-label="Delivery state" {
            @for (value, label) in &tabs {
                @if *value == chosen {
                    a href={ "/console/notifications?status=" (value) } aria-current="page" { (label) }
                } @else {
                    a href={ "/console/notifications?status=" (value) } { (label) }
                }
            }
        }
        @match &result {
            Err((_, message)) => { div.flash.error role="alert" { (message) } }
            Ok(page) => {
                @if !channels.is_empty() {
                    div.bulk {
                        @for channel in &channels {
                            form.inline method="post" action="/console/notifications/retry-dead" data-confirm="Retry every dead notification of this channel?" {
                                (csrf(&staff))
                                input type="hidden" name="channel" value=(channel);
                                button type="submit" { "Retry all dead " (channel) " notifications" }
                            }
                        }
                    }
                }
                @if page.items.is_empty() { p.empty { "Nothing here." } } @else {
                    (notification_rows(&staff, &page.items, &back))
                    (next_page("/console/notifications", &[("status", chosen.to_owned())], page.next_cursor.as_deref()))
                }
            }
        }
    };
    layout::page(code, Some(&staff), Section::Notifications, flash.as_ref(), "Notifications", body)
}

#[derive(Debug, Deserialize)]
pub(super) struct Retry {
    #[serde(default)]
    back: String,
}

/// Where to return after an action: a console page named by the form, or the list.
fn back_to(raw: &str) -> &str {
    super::session::console_path(raw, "/console/notifications")
}

/// `POST /console/notifications/{id}/retry`.
pub(super) async fn retry(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, form: f }: Checked<Retry>,
) -> Response {
    let back = back_to(&f.back);
    let id = match path_id::<NotificationId>(&raw, "notification") {
        Ok(id) => id,
        Err(e) => return layout::error_page(Some(&staff), &e),
    };
    match s.som.retry_notification(staff.caller, id).await {
        Ok(n) => redirect_with(back, Flash(FlashKind::Done, format!("Notification #{} is queued again.", n.id))),
        Err(e) => redirect_with(back, refused(e)),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RetryDead {
    #[serde(default)]
    channel: String,
}

/// `POST /console/notifications/retry-dead`: every dead letter of one channel.
pub(super) async fn retry_dead(State(s): State<AppState>, Checked { staff, form: f }: Checked<RetryDead>) -> Response {
    let back = "/console/notifications?status=dead";
    match s.som.retry_dead_notifications(staff.caller, &f.channel).await {
        Ok(n) => redirect_with(
            back,
            Flash(FlashKind::Done, format!("{n} dead {} notifications queued again.", f.channel.trim())),
        ),
        Err(e) => redirect_with(back, refused(e)),
    }
}
