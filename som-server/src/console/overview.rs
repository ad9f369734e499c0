//! `GET /console/`: the shop at a glance, with links into each list.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use som_core::Activity;
use som_core::domain::NotificationStatus;

use super::layout::{self, Section, badge, when};
use super::session::{IncomingFlash, Staff};
use crate::AppState;

fn activity(title: &str, from: &str, a: &Activity) -> Markup {
    html! {
        section.card {
            h2 { (title) }
            p.hint { "Placed since " (when(a.since)) }
            table.compact {
                caption.sr { (title) ": orders by status" }
                thead { tr { th scope="col" { "Status" } th.num scope="col" { "Orders" } } }
                tbody {
                    @for (status, n) in &a.orders {
                        tr {
                            td {
                                a href={ "/console/orders?status=" (status.as_str()) "&from=" (from) } { (badge(status.as_str())) }
                            }
                            td.num { (n) }
                        }
                    }
                }
            }
            @if a.money.is_empty() {
                p.hint { "No orders in this window." }
            } @else {
                table.compact {
                    caption.sr { (title) ": money per currency" }
                    thead { tr { th scope="col" { "Currency" } th.num scope="col" { "Paid" } th.num scope="col" { "Refunded" } } }
                    tbody {
                        @for m in &a.money {
                            tr { td { (m.currency) } td.num { (m.paid) } td.num { (m.refunded) } }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/`.
pub(super) async fn page(State(s): State<AppState>, staff: Staff, IncomingFlash(flash): IncomingFlash) -> Response {
    let o = match s.som.overview(staff.caller).await {
        Ok(o) => o,
        Err(e) => return layout::error_page(Some(&staff), &e.into()),
    };
    let count = |status: NotificationStatus| o.notifications.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
    let stamp = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (today, week) = (stamp(o.today.since), stamp(o.last_7_days.since));
    let body = html! {
        p.hint { "As of " (when(o.at)) }
        div.grid {
            (activity("Today", &today, &o.today))
            (activity("Last 7 days", &week, &o.last_7_days))
            section.card {
                h2 { "Waiting" }
                ul.figures {
                    li { a href="/console/orders?status=CREATED" { strong { (o.payments_pending) } " payments waiting for the payer" } }
                    li { strong { (o.refunds_pending) } " refunds pending at the provider" }
                    li { a href="/console/notifications?status=pending" { strong { (count(NotificationStatus::Pending)) } " notifications pending" } }
                    li { a href="/console/notifications?status=dead" { strong { (count(NotificationStatus::Dead)) } " notifications dead-lettered" } }
                }
            }
        }
    };
    layout::page(StatusCode::OK, Some(&staff), Section::Overview, flash.as_ref(), "Overview", body)
}
