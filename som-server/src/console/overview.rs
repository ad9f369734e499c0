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
                    li { a href="/console/orders?status=AUTHORIZED" { strong { (o.payments_authorized) } " payments authorised, not captured" } }
                    li { strong { (o.refunds_pending) } " refunds pending at the provider" }
                    li { a href="/console/notifications?status=pending" { strong { (count(NotificationStatus::Pending)) } " notifications pending" } }
                    li { a href="/console/notifications?status=dead" { strong { (count(NotificationStatus::Dead)) } " notifications dead-lettered" } }
                }
            }
            @if !o.authorizations_expiring.is_empty() {
                section.card {
                    h2 { "Authorised, not captured" }
                    p.hint { "Capture or void each before its hold runs out; an expired one is released and its order cancelled." }
                    div.scroll { table.compact {
                        caption.sr { "Authorisations that run out soonest" }
                        thead { tr { th scope="col" { "Order" } th.num scope="col" { "Held" } th scope="col" { "Time left" } } }
                        tbody {
                            @for h in &o.authorizations_expiring {
                                tr {
                                    td { a href={ "/console/orders/" (h.order_id) } { "#" (h.order_id) } }
                                    td.num.nowrap { (h.amount) }
                                    @if let Some(t) = h.expires_at {
                                        td.nowrap title={ "runs out " (t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) } { (time_left(t - o.at)) }
                                    } @else { td {} }
                                }
                            }
                        }
                    } }
                }
            }
        }
    };
    layout::page(StatusCode::OK, Some(&staff), Section::Overview, flash.as_ref(), "Overview", body)
}

/// `3d 4h`, `5h 12m`, `12m`, or `expired`.
fn time_left(left: chrono::Duration) -> String {
    let minutes = left.num_minutes();
    if minutes <= 0 {
        return "expired".to_owned();
    }
    let (days, hours, mins) = (minutes / 1440, minutes % 1440 / 60, minutes % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else {
        format!("{mins}m")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_left_reads_in_the_largest_units() {
        let t = |m| super::time_left(chrono::Duration::minutes(m));
        assert_eq!([t(0), t(-5), t(12), t(312), t(4560)], ["expired", "expired", "12m", "5h 12m", "3d 4h"]);
    }
}
