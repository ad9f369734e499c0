//! Fulfilment and returns in the console: the order page's parcels and returns with their
//! actions, the "to ship" and "open returns" page, and the posts behind them. What is left to
//! fulfil or return is the domain's answer ([`unfulfilled`], [`returnable`]).

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use som_core::domain::{
    Fulfillment, FulfillmentId, FulfillmentStatus, ItemId, ItemQuantity, Order, OrderId, OrderStatus, Return, ReturnId,
    ReturnStatus, describe_lines, may_fulfil, returnable, unfulfilled,
};
use som_core::{FulfillmentInput, ReturnInput, ShipInput};

use super::layout::{self, Section, badge, csrf, refused, when};
use super::session::{Checked, Flash, FlashKind, IncomingFlash, Staff, redirect_with};
use crate::AppState;
use crate::extract::path_id;

/// One quantity input per line of `lines` (named `qty_<item id>`, at most its quantity).
fn quantity_inputs(order: &Order, lines: &[ItemQuantity], prefix: &str, start_full: bool) -> Markup {
    html! {
        @for l in lines {
            @let name = order.item_index(l.item_id).map_or("", |i| order.items[i].name.as_str());
            @let id = format!("{prefix}-{}", l.item_id);
            label for=(id) { (name) " (item " (l.item_id) ", up to " (l.quantity) ")" }
            input id=(id) name={ "qty_" (l.item_id) } type="number" min="0" max=(l.quantity)
                value=(if start_full { l.quantity } else { 0 });
        }
    }
}

/// The lines a form's `qty_<item id>` fields name (zero and empty ones left out).
fn form_lines(form: &HashMap<String, String>) -> Result<Vec<ItemQuantity>, String> {
    let mut lines = Vec::new();
    for (key, value) in form {
        let Some(id) = key.strip_prefix("qty_") else { continue };
        let value = value.trim();
        if value.is_empty() || value == "0" {
            continue;
        }
        let item_id = id.parse::<i64>().map_err(|_| format!("{key} is not an item"))?;
        let quantity = value.parse::<i64>().map_err(|_| format!("quantity {value:?} is not a whole number"))?;
        lines.push(ItemQuantity { item_id: ItemId::new(item_id), quantity });
    }
    lines.sort_by_key(|l| l.item_id);
    Ok(lines)
}

fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// The order page's fulfilment and returns sections.
pub(super) fn sections(staff: &Staff, order: &Order, fulfillments: &[Fulfillment], returns: &[Return]) -> Markup {
    let left = unfulfilled(order, fulfillments);
    let back_returnable = returnable(order, fulfillments, returns);
    html! {
        section.card #fulfilment {
            h2 { "Fulfilment " (badge(order.fulfillment.as_str())) }
            @if fulfillments.is_empty() { p.empty { "Nothing fulfilled yet." } } @else {
                div.scroll {
                    table.compact {
                        thead { tr {
                            th scope="col" { "Parcel" } th scope="col" { "Status" } th scope="col" { "Items" }
                            th scope="col" { "Tracking" } th scope="col" { "Shipped" } th scope="col" { "Delivered" }
                            th scope="col" { span.sr { "Actions" } }
                        } }
                        tbody {
                            @for f in fulfillments {
                                tr {
                                    td { "#" (f.id) } td { (badge(f.status.as_str())) }
                                    td.name { (describe_lines(order, &f.items)) }
                                    td.name {
                                        (f.tracking.carrier.as_deref().unwrap_or("")) " " (f.tracking.number.as_deref().unwrap_or(""))
                                        @if let Some(url) = &f.tracking.url { " " a href=(url) rel="noopener noreferrer" { "track" } }
                                    }
                                    td.nowrap { (f.shipped_at.map(when).unwrap_or_default()) }
                                    td.nowrap { (f.delivered_at.map(when).unwrap_or_default()) }
                                    td { (fulfillment_actions(staff, order, f)) }
                                }
                            }
                        }
                    }
                }
            }
            @if may_fulfil(order.status) && !left.is_empty() {
                form.action method="post" action={ "/console/orders/" (order.id) "/fulfil" } {
                    (csrf(staff))
                    fieldset {
                        legend { "New parcel" }
                        (quantity_inputs(order, &left, "fulfil", true))
                        label for="carrier-new" { "Carrier (optional)" }
                        input #carrier-new name="carrier" type="text" maxlength="100";
                        label for="tracking-new" { "Tracking number (optional)" }
                        input #tracking-new name="tracking_number" type="text" maxlength="100";
                        button type="submit" { "Create parcel" }
                    }
                }
            }
        }
        section.card #returns {
            h2 { "Returns" }
            @if returns.is_empty() { p.empty { "No returns." } } @else {
                div.scroll {
                    table.compact {
                        thead { tr {
                            th scope="col" { "Return" } th scope="col" { "Status" } th scope="col" { "Items" }
                            th scope="col" { "Reason" } th.num scope="col" { "Refund" } th scope="col" { "Asked" }
                            th scope="col" { span.sr { "Actions" } }
                        } }
                        tbody {
                            @for r in returns {
                                tr {
                                    td { "#" (r.id) } td { (badge(r.status.as_str())) }
                                    td.name { (describe_lines(order, &r.items)) }
                                    td.name { (r.reason.as_deref().unwrap_or("")) @if let Some(n) = &r.note { br; small { "Note: " (n) } } }
                                    td.num.nowrap { (r.refund_amount.map(|m| m.to_string()).unwrap_or_default()) }
                                    td.nowrap { (when(r.created_at)) }
                                    td { (return_actions(staff, r)) }
                                }
                            }
                        }
                    }
                }
            }
            @if !back_returnable.is_empty() {
                form.action method="post" action={ "/console/orders/" (order.id) "/returns" } {
                    (csrf(staff))
                    fieldset {
                        legend { "Return for the customer" }
                        (quantity_inputs(order, &back_returnable, "return", false))
                        label for="return-reason" { "Reason" }
                        input #return-reason name="reason" type="text" maxlength="500";
                        button type="submit" { "Request return" }
                    }
                }
            }
        }
    }
}

fn fulfillment_actions(staff: &Staff, order: &Order, f: &Fulfillment) -> Markup {
    let path = format!("/console/fulfilments/{}", f.id);
    html! {
        @match f.status {
            FulfillmentStatus::Pending => {
                form.action method="post" action={ (path) "/ship" } {
                    (csrf(staff))
                    label for={ "carrier-" (f.id) } { "Carrier" }
                    input id={ "carrier-" (f.id) } name="carrier" type="text" maxlength="100" value=(f.tracking.carrier.as_deref().unwrap_or(""));
                    label for={ "tracking-" (f.id) } { "Tracking number" }
                    input id={ "tracking-" (f.id) } name="tracking_number" type="text" maxlength="100" value=(f.tracking.number.as_deref().unwrap_or(""));
                    label for={ "url-" (f.id) } { "Tracking URL" }
                    input id={ "url-" (f.id) } name="tracking_url" type="url" maxlength="2000" value=(f.tracking.url.as_deref().unwrap_or(""));
                    @if order.status == OrderStatus::Authorized {
                        label.check { input type="checkbox" name="capture" value="true" checked; " Capture these items' amount first" }
                    }
                    button type="submit" { "Ship" }
                }
                form.inline method="post" action={ (path) "/cancel" } data-confirm="Cancel this parcel?" {
                    (csrf(staff))
                    button.danger type="submit" { "Cancel parcel" }
                }
            }
            FulfillmentStatus::Shipped => {
                form.inline method="post" action={ (path) "/deliver" } {
                    (csrf(staff))
                    button type="submit" { "Mark delivered" }
                }
            }
            _ => {}
        }
    }
}

fn return_actions(staff: &Staff, r: &Return) -> Markup {
    let path = format!("/console/returns/{}", r.id);
    html! {
        @if r.status == ReturnStatus::Requested {
            form.inline method="post" action={ (path) "/approve" } {
                (csrf(staff))
                button type="submit" { "Approve" }
            }
        }
        @if matches!(r.status, ReturnStatus::Approved | ReturnStatus::Received) {
            form.action method="post" action={ (path) "/receive" } data-confirm="Record the items as received and refund them?" {
                (csrf(staff))
                label for={ "refund-" (r.id) } { "Refund (empty: the items' value; 0: none)" }
                input id={ "refund-" (r.id) } name="amount" type="text" inputmode="decimal";
                button type="submit" { "Receive and refund" }
            }
        }
        @if r.status.is_open() {
            form.action method="post" action={ (path) "/reject" } {
                (csrf(staff))
                label for={ "note-" (r.id) } { "Why not" }
                input id={ "note-" (r.id) } name="note" type="text" maxlength="500" required;
                button.danger type="submit" { "Reject" }
            }
        }
    }
}

/// `GET /console/fulfilment`: parcels to ship and returns to act on, oldest first.
pub(super) async fn page(State(s): State<AppState>, staff: Staff, IncomingFlash(flash): IncomingFlash) -> Response {
    let som = &s.som;
    let loaded = tokio::try_join!(
        som.fulfillments_page(staff.caller, Some(FulfillmentStatus::Pending), None, Some(200)),
        som.returns_page(staff.caller, Some(ReturnStatus::Requested), None, Some(200)),
        som.returns_page(staff.caller, Some(ReturnStatus::Approved), None, Some(200)),
    );
    let (to_ship, requested, approved) = match loaded {
        Ok(v) => v,
        Err(e) => return layout::error_page(Some(&staff), &e.into()),
    };
    let open: Vec<&Return> = requested.items.iter().chain(&approved.items).collect();
    let body = html! {
        section.card {
            h2 { "To ship (" (to_ship.items.len()) ")" }
            @if to_ship.items.is_empty() { p.empty { "Nothing waiting to ship." } } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Parcel" } th scope="col" { "Order" } th.num scope="col" { "Lines" } th scope="col" { "Tracking" } th scope="col" { "Created" } } }
                    tbody {
                        @for f in &to_ship.items {
                            tr {
                                td { "#" (f.id) }
                                td { a href={ "/console/orders/" (f.order_id) "#fulfilment" } { "#" (f.order_id) } }
                                td.num { (f.items.iter().map(|l| l.quantity).sum::<i64>()) }
                                td.name { (f.tracking.describe()) }
                                td.nowrap { (when(f.created_at)) }
                            }
                        }
                    }
                } }
            }
        }
        section.card {
            h2 { "Open returns (" (open.len()) ")" }
            @if open.is_empty() { p.empty { "No returns waiting." } } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Return" } th scope="col" { "Order" } th scope="col" { "Status" } th scope="col" { "Reason" } th scope="col" { "Asked" } } }
                    tbody {
                        @for r in &open {
                            tr {
                                td { "#" (r.id) }
                                td { a href={ "/console/orders/" (r.order_id) "#returns" } { "#" (r.order_id) } }
                                td { (badge(r.status.as_str())) }
                                td.name { (r.reason.as_deref().unwrap_or("")) }
                                td.nowrap { (when(r.created_at)) }
                            }
                        }
                    }
                } }
            }
        }
    };
    layout::page(StatusCode::OK, Some(&staff), Section::Fulfilment, flash.as_ref(), "Fulfilment", body)
}

type Form = HashMap<String, String>;

fn order_back(id: OrderId, anchor: &str) -> String {
    format!("/console/orders/{id}#{anchor}")
}

/// `POST /console/orders/{id}/fulfil`.
pub(super) async fn fulfil(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, form }: Checked<Form>,
) -> Response {
    let id = match path_id::<OrderId>(&raw, "order") {
        Ok(id) => id,
        Err(e) => return layout::error_page(Some(&staff), &e),
    };
    let back = order_back(id, "fulfilment");
    let lines = match form_lines(&form) {
        Ok(lines) => lines,
        Err(message) => return redirect_with(&back, Flash(FlashKind::Error, message)),
    };
    let input = FulfillmentInput {
        items: Some(lines),
        carrier: field(&form, "carrier").map(str::to_owned),
        tracking_number: field(&form, "tracking_number").map(str::to_owned),
        tracking_url: field(&form, "tracking_url").map(str::to_owned),
    };
    match s.som.create_fulfillment(staff.caller, id, input).await {
        Ok(f) => redirect_with(&back, Flash(FlashKind::Done, format!("Parcel #{} is ready to ship.", f.id))),
        Err(e) => redirect_with(&back, refused(e)),
    }
}

/// `POST /console/fulfilments/{id}/{ship|deliver|cancel}`.
pub(super) async fn step(
    State(s): State<AppState>,
    Path((raw, action)): Path<(String, String)>,
    Checked { staff, form }: Checked<Form>,
) -> Response {
    let id = match path_id::<FulfillmentId>(&raw, "fulfillment") {
        Ok(id) => id,
        Err(e) => return layout::error_page(Some(&staff), &e),
    };
    let som = &s.som;
    let f = match som.fulfillment(staff.caller, id).await {
        Ok(f) => f,
        Err(e) => return layout::error_page(Some(&staff), &e.into()),
    };
    let back = order_back(f.order_id, "fulfilment");
    let result = match action.as_str() {
        "ship" => {
            let input = ShipInput {
                carrier: field(&form, "carrier").map(str::to_owned),
                tracking_number: field(&form, "tracking_number").map(str::to_owned),
                tracking_url: field(&form, "tracking_url").map(str::to_owned),
                capture: field(&form, "capture") == Some("true"),
            };
            som.ship_fulfillment(staff.caller, id, input).await
        }
        "deliver" => som.deliver_fulfillment(staff.caller, id).await,
        "cancel" => som.cancel_fulfillment(staff.caller, id).await,
        _ => return layout::error_page(Some(&staff), &crate::error::ApiError::not_found("no such action")),
    };
    match result {
        Ok(f) => redirect_with(&back, Flash(FlashKind::Done, format!("Parcel #{} is {}.", f.id, f.status))),
        Err(e) => redirect_with(&back, refused(e)),
    }
}

/// `POST /console/orders/{id}/returns`: a return asked for on the customer's behalf.
pub(super) async fn request(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, form }: Checked<Form>,
) -> Response {
    let id = match path_id::<OrderId>(&raw, "order") {
        Ok(id) => id,
        Err(e) => return layout::error_page(Some(&staff), &e),
    };
    let back = order_back(id, "returns");
    let items = match form_lines(&form) {
        Ok(lines) => lines,
        Err(message) => return redirect_with(&back, Flash(FlashKind::Error, message)),
    };
    let input = ReturnInput { items, reason: field(&form, "reason").map(str::to_owned) };
    match s.som.request_return(staff.caller, id, input).await {
        Ok(r) => redirect_with(&back, Flash(FlashKind::Done, format!("Return #{} is {}.", r.id, r.status))),
        Err(e) => redirect_with(&back, refused(e)),
    }
}

/// `POST /console/returns/{id}/{approve|reject|receive}`.
pub(super) async fn decide(
    State(s): State<AppState>,
    Path((raw, action)): Path<(String, String)>,
    Checked { staff, form }: Checked<Form>,
) -> Response {
    let id = match path_id::<ReturnId>(&raw, "return") {
        Ok(id) => id,
        Err(e) => return layout::error_page(Some(&staff), &e),
    };
    let som = &s.som;
    let r = match som.get_return(staff.caller, id).await {
        Ok(r) => r,
        Err(e) => return layout::error_page(Some(&staff), &e.into()),
    };
    let back = order_back(r.order_id, "returns");
    let result = match action.as_str() {
        "approve" => som.approve_return(staff.caller, id).await,
        "reject" => som.reject_return(staff.caller, id, field(&form, "note").unwrap_or("")).await,
        "receive" => som.receive_return(staff.caller, id, field(&form, "amount")).await,
        _ => return layout::error_page(Some(&staff), &crate::error::ApiError::not_found("no such action")),
    };
    match result {
        Ok(r) => {
            let refund = r.refund_amount.map(|m| format!(" (refund of {m})")).unwrap_or_default();
            redirect_with(&back, Flash(FlashKind::Done, format!("Return #{} is {}{refund}.", r.id, r.status)))
        }
        Err(e) => redirect_with(&back, refused(e)),
    }
}
