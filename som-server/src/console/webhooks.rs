//! Webhooks: the endpoints that receive SOM's events, each with its delivery log; make,
//! disable, enable, rotate the secret, delete, redeliver an event.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use som_core::domain::{EndpointId, EventKind, WebhookEndpoint};
use som_core::{DeliveryListQuery, EndpointInput, EndpointPatch};

use super::layout::{self, Section, badge, csrf, next_page, refused, when};
use super::session::{Checked, Flash, FlashKind, IncomingFlash, NoFields, Staff, redirect_with};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::path_id;

const BASE: &str = "/console/webhooks";

fn state(e: &WebhookEndpoint) -> Markup {
    html! {
        @if e.enabled {
            @if e.failing_since.is_some() { (badge("FAILING")) } @else { (badge("ENABLED")) }
        } @else { (badge("DISABLED")) }
    }
}

/// `GET /console/webhooks`: every endpoint and a form to make one.
pub(super) async fn list(State(s): State<AppState>, staff: Staff, IncomingFlash(flash): IncomingFlash) -> Response {
    let endpoints = match s.som.webhook_endpoints(staff.caller, None, Some(som_core::system::MAX_ENDPOINTS)).await {
        Ok(page) => page.items,
        Err(e) => return layout::error_page(Some(&staff), &e.into()),
    };
    let enabled = s.som.webhooks_enabled();
    let body = html! {
        @if !enabled {
            p.hint role="note" { "Webhook delivery is off on this server: add " code { "webhook" } " to SOM_NOTIFIER to deliver events to endpoints." }
        }
        section.card {
            h2 { "Endpoints" }
            @if endpoints.is_empty() { p.empty { "No endpoints yet." } } @else {
                div.scroll {
                    table {
                        thead { tr {
                            th scope="col" { "Endpoint" } th scope="col" { "URL" } th scope="col" { "Events" }
                            th scope="col" { "State" } th scope="col" { "Made" }
                        } }
                        tbody {
                            @for e in &endpoints {
                                tr {
                                    td { a href={ (BASE) "/" (e.id) } { "#" (e.id) } }
                                    td.name { (e.url) }
                                    td.name { (e.events.names().join(", ")) }
                                    td { (state(e)) }
                                    td.nowrap { (when(e.created_at)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "New endpoint" }
            form.action method="post" action=(BASE) { fieldset {
                legend { "Where and what" }
                (csrf(&staff))
                label for="url" { "URL (https)" }
                input #url name="url" type="url" required maxlength="2048" placeholder="https://hooks.example.com/som";
                label for="events" { "Event types, comma-separated, or * for all" }
                input #events name="events" type="text" required value="*" maxlength="1000"
                    list="event_types";
                datalist #event_types {
                    @for k in EventKind::ALL.into_iter().filter(|k| k.is_public()) { option value=(k.type_name()) {} }
                }
                label for="description" { "Description" }
                input #description name="description" type="text" maxlength="500";
                button type="submit" disabled[!enabled] { "Make endpoint" }
            } }
        }
    };
    layout::page(StatusCode::OK, Some(&staff), Section::Webhooks, flash.as_ref(), "Webhooks", body)
}

#[derive(Debug, Deserialize)]
pub(super) struct NewEndpoint {
    #[serde(default)]
    url: String,
    #[serde(default)]
    events: String,
    #[serde(default)]
    description: String,
}

fn split_events(raw: &str) -> Vec<String> {
    raw.split([',', ' ', '\n']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The page that shows a secret, once (it is not kept in a cookie or a redirect).
fn secret_page(staff: &Staff, e: &WebhookEndpoint, what: &str) -> Response {
    let body = html! {
        section.card {
            p { (what) }
            p { "Copy this signing secret now: it is not shown again. Receivers verify the " code { "SOM-Signature" } " header with it." }
            pre.secret { code #secret { (e.secret) } }
            p { a href={ (BASE) "/" (e.id) } { "Go to the endpoint →" } }
        }
    };
    layout::page(StatusCode::OK, Some(staff), Section::Webhooks, None, &format!("Endpoint #{}", e.id), body)
}

/// `POST /console/webhooks`.
pub(super) async fn create(State(s): State<AppState>, Checked { staff, form: f }: Checked<NewEndpoint>) -> Response {
    let description = Some(f.description).filter(|d| !d.trim().is_empty());
    let input = EndpointInput { url: f.url, events: split_events(&f.events), description };
    match s.som.create_webhook_endpoint(staff.caller, input).await {
        Ok(e) => secret_page(&staff, &e, &format!("Endpoint #{} for {} is made.", e.id, e.url)),
        Err(e) => redirect_with(BASE, refused(e)),
    }
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct LogFilter {
    #[serde(default)]
    status: String,
    #[serde(default)]
    cursor: String,
}

/// `GET /console/webhooks/{id}`: the endpoint, its actions, its delivery log.
pub(super) async fn page(
    State(s): State<AppState>,
    staff: Staff,
    Path(raw): Path<String>,
    Query(f): Query<LogFilter>,
    IncomingFlash(flash): IncomingFlash,
) -> Response {
    let id = match path_id::<EndpointId>(&raw, "endpoint") {
        Ok(id) => id,
        Err(e) => return layout::error_page(Some(&staff), &e),
    };
    let cursor = match f.cursor.trim() {
        "" => None,
        c => match c.parse() {
            Ok(c) => Some(c),
            Err(_) => return layout::error_page(Some(&staff), &ApiError::field("cursor", "is not a valid cursor")),
        },
    };
    let query = DeliveryListQuery {
        status: Some(f.status.clone()).filter(|s| !s.is_empty()),
        cursor,
        limit: Some(50),
        ..Default::default()
    };
    let loaded =
        tokio::try_join!(s.som.webhook_endpoint(staff.caller, id), s.som.webhook_deliveries(staff.caller, id, query));
    let (e, log) = match loaded {
        Ok(found) => found,
        Err(e) => return layout::error_page(Some(&staff), &e.into()),
    };
    let base = format!("{BASE}/{id}");
    let body = html! {
        div.grid {
            section.card {
                h2 { "Endpoint" }
                dl.facts {
                    dt { "URL" } dd.name { (e.url) }
                    dt { "Events" } dd { (e.events.names().join(", ")) }
                    dt { "Description" } dd { (e.description.as_deref().unwrap_or("—")) }
                    dt { "State" } dd { (state(&e)) }
                    @if let Some(why) = &e.disabled_reason { dt { "Disabled because" } dd { (why) } }
                    @if let Some(since) = e.failing_since { dt { "Failing since" } dd { (when(since)) } }
                    @if let Some(until) = e.previous_secret_until {
                        dt { "Old secret signs until" } dd { (when(until)) }
                    }
                    dt { "Made" } dd { (when(e.created_at)) @if e.from_config { " (from SOM_WEBHOOK_URLS)" } }
                }
            }
            section.card {
                h2 { "Actions" }
                form.action method="post" action={ (base) "/enabled" } {
                    (csrf(&staff))
                    @if e.enabled {
                        input type="hidden" name="value" value="disable";
                        button.danger type="submit" { "Disable" }
                    } @else {
                        input type="hidden" name="value" value="enable";
                        button type="submit" { "Enable" }
                    }
                }
                form.action method="post" action={ (base) "/rotate" } data-confirm="Make a new secret? The old one keeps signing for a day." {
                    (csrf(&staff))
                    button type="submit" { "Rotate secret" }
                }
                form.action method="post" action={ (base) "/delete" } data-confirm="Delete this endpoint and its delivery log?" {
                    (csrf(&staff))
                    button.danger type="submit" { "Delete endpoint" }
                }
            }
        }
        section.card {
            h2 { "Deliveries" }
            form.filters method="get" action=(base) {
                div {
                    label for="status" { "Outcome" }
                    select #status name="status" {
                        option value="" selected[f.status.is_empty()] { "any" }
                        option value="succeeded" selected[f.status == "succeeded"] { "succeeded" }
                        option value="failed" selected[f.status == "failed"] { "failed" }
                    }
                }
                div.actions { button type="submit" { "Filter" } }
            }
            @if log.items.is_empty() { p.empty { "No deliveries." } } @else {
                div.scroll {
                    table {
                        thead { tr {
                            th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "Attempt" }
                            th scope="col" { "Answer" } th scope="col" { "Latency" } th scope="col" { "Response or error" }
                            th scope="col" { span.visually-hidden { "Redeliver" } }
                        } }
                        tbody {
                            @for d in &log.items {
                                tr {
                                    td.nowrap { (when(d.created_at)) }
                                    td.name { (d.event_id) br; small { (d.event_type) } }
                                    td { (d.attempt) }
                                    td {
                                        @if d.succeeded { (badge("SUCCEEDED")) } @else { (badge("FAILED")) }
                                        " " (d.response_status.map_or_else(|| "—".to_owned(), |s| s.to_string()))
                                    }
                                    td.nowrap { (d.latency_ms) " ms" }
                                    td.name { (d.error.as_deref().or(d.response_body.as_deref()).unwrap_or("")) }
                                    td {
                                        form.inline method="post" action={ (base) "/redeliver" } {
                                            (csrf(&staff))
                                            input type="hidden" name="event_id" value=(d.event_id);
                                            button type="submit" { "Redeliver" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                (next_page(&base, &[("status", f.status.clone())], log.next_cursor.as_deref()))
            }
        }
    };
    layout::page(StatusCode::OK, Some(&staff), Section::Webhooks, flash.as_ref(), &format!("Endpoint #{id}"), body)
}

fn endpoint_of(raw: &str) -> Result<EndpointId, Box<Response>> {
    path_id::<EndpointId>(raw, "endpoint").map_err(|e| Box::new(layout::error_page(None, &e)))
}

#[derive(Debug, Deserialize)]
pub(super) struct Change {
    #[serde(default)]
    value: String,
}

/// `POST /console/webhooks/{id}/enabled` (`value` = `enable` | `disable`).
pub(super) async fn set_enabled(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, form: f }: Checked<Change>,
) -> Response {
    let id = match endpoint_of(&raw) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let back = format!("{BASE}/{id}");
    let enabled = match f.value.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return redirect_with(&back, Flash(FlashKind::Error, "value: must be enable or disable".into())),
    };
    let patch = EndpointPatch { enabled: Some(enabled), ..EndpointPatch::default() };
    match s.som.update_webhook_endpoint(staff.caller, id, patch).await {
        Ok(e) => {
            let what = if e.enabled { "is enabled: events are delivered to it again" } else { "is disabled" };
            redirect_with(&back, Flash(FlashKind::Done, format!("Endpoint #{id} {what}.")))
        }
        Err(e) => redirect_with(&back, refused(e)),
    }
}

/// `POST /console/webhooks/{id}/rotate`: shows the new secret once.
pub(super) async fn rotate(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, .. }: Checked<NoFields>,
) -> Response {
    let id = match endpoint_of(&raw) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match s.som.rotate_webhook_secret(staff.caller, id, None).await {
        Ok(e) => secret_page(&staff, &e, "A new secret signs from now on; the old one signs beside it for a day."),
        Err(e) => redirect_with(&format!("{BASE}/{id}"), refused(e)),
    }
}

/// `POST /console/webhooks/{id}/delete`.
pub(super) async fn delete(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, .. }: Checked<NoFields>,
) -> Response {
    let id = match endpoint_of(&raw) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match s.som.delete_webhook_endpoint(staff.caller, id).await {
        Ok(()) => redirect_with(BASE, Flash(FlashKind::Done, format!("Endpoint #{id} is deleted."))),
        Err(e) => redirect_with(&format!("{BASE}/{id}"), refused(e)),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Redeliver {
    #[serde(default)]
    event_id: String,
}

/// `POST /console/webhooks/{id}/redeliver` (`event_id`).
pub(super) async fn redeliver(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, form: f }: Checked<Redeliver>,
) -> Response {
    let id = match endpoint_of(&raw) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let back = format!("{BASE}/{id}");
    match s.som.redeliver_event(staff.caller, &f.event_id, Some(id)).await {
        Ok(r) => {
            redirect_with(&back, Flash(FlashKind::Done, format!("Event {} is queued for delivery again.", r.event_id)))
        }
        Err(e) => redirect_with(&back, refused(e)),
    }
}
