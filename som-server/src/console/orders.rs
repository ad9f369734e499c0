//! Orders: the searchable list, an order's page, and what staff do to an order.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use som_core::domain::{CaptureMethod, Order, OrderId, OrderStatus, OutboxEntry, Payment, PaymentId, Refund, User};
use som_core::{NotificationListQuery, OrderListQuery};

use super::layout::{self, Section, badge, csrf, next_page, refused, when};
use super::session::{Checked, Flash, FlashKind, IncomingFlash, Staff, redirect_with};
use super::work::notification_rows;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::path_id;

/// The list's filters, as the form sends them.
#[derive(Debug, Deserialize, Default)]
pub(super) struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    cursor: String,
}

/// A date (`2026-12-01`, midnight UTC) or a time (RFC 3339); `Err` names the field.
fn time_filter(field: &str, raw: &str) -> Result<Option<DateTime<Utc>>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| format!("{field}: must be a date such as 2026-12-01 or a time such as 2026-12-01T09:30:00Z"))
}

impl Filters {
    fn query(&self) -> Result<OrderListQuery, String> {
        let status = match self.status.trim() {
            "" => None,
            s => Some(OrderStatus::parse(s).ok_or_else(|| format!("status: {s} is not an order status"))?),
        };
        let user = match self.user.trim() {
            "" => None,
            u => Some(u.parse().map_err(|_| format!("user: {u} is not a user id"))?),
        };
        Ok(OrderListQuery {
            user,
            status,
            cursor: Some(self.cursor.clone()).filter(|c| !c.is_empty()),
            limit: None,
            all_users: user.is_none(),
            created_after: time_filter("from", &self.from)?,
            created_before: time_filter("to", &self.to)?,
            search: Some(self.q.clone()).filter(|q| !q.trim().is_empty()),
        })
    }

    /// The filters an export keeps (not the search box nor the cursor), as `&key=value` pairs.
    fn export_pairs(&self) -> String {
        let mut out = String::new();
        for (key, value) in [("status", &self.status), ("user", &self.user), ("from", &self.from), ("to", &self.to)] {
            if !value.trim().is_empty() {
                out.push_str(&format!("&{key}={}", super::session::encode_query(value.trim())));
            }
        }
        out
    }

    fn pairs(&self) -> [(&'static str, String); 5] {
        [
            ("q", self.q.clone()),
            ("status", self.status.clone()),
            ("user", self.user.clone()),
            ("from", self.from.clone()),
            ("to", self.to.clone()),
        ]
    }
}

/// `GET /console/orders/export?format=csv|ndjson&…`: the orders the filters select (the
/// search box aside), as a file.
pub(super) async fn export(State(s): State<AppState>, staff: Staff, Query(f): Query<ExportFilters>) -> Response {
    let format = match som_core::ExportFormat::parse(&f.format) {
        Some(format) => format,
        None => return layout::error_page(Some(&staff), &ApiError::field("format", "must be csv or ndjson")),
    };
    let query = match f.filters.query() {
        Ok(q) => som_core::OrderExportQuery {
            user: q.user,
            status: q.status,
            created_after: q.created_after,
            created_before: q.created_before,
        },
        Err(message) => return layout::error_page(Some(&staff), &ApiError::field("filters", message)),
    };
    let started = match s.som.export_orders(staff.caller, query).await {
        Ok(export) => crate::export::stream(export, format).await,
        Err(e) => Err(e.into()),
    };
    match started {
        Ok(file) => file,
        Err(e) => layout::error_page(Some(&staff), &e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ExportFilters {
    #[serde(default)]
    format: String,
    #[serde(flatten)]
    filters: Filters,
}

/// The rows of a table of orders.
pub(super) fn order_rows(orders: &[Order]) -> Markup {
    html! {
        div.scroll {
            table {
                thead {
                    tr {
                        th scope="col" { "Order" } th scope="col" { "Placed" } th scope="col" { "Customer" }
                        th.num scope="col" { "Items" } th.num scope="col" { "Total" } th.num scope="col" { "Refunded" }
                        th scope="col" { "Status" } th scope="col" { "Goods" }
                    }
                }
                tbody {
                    @for o in orders {
                        tr {
                            td { a href={ "/console/orders/" (o.id) } { "#" (o.id) } }
                            td.nowrap { (when(o.created_at)) }
                            td { a href={ "/console/users/" (o.user_id) } { "user #" (o.user_id) } }
                            td.num { (o.items.len()) }
                            td.num.nowrap { (o.total) }
                            td.num.nowrap { (o.refunded) }
                            td { (badge(o.status.as_str())) }
                            td { (badge(o.fulfillment.as_str())) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/orders`.
pub(super) async fn list(
    State(s): State<AppState>,
    staff: Staff,
    Query(f): Query<Filters>,
    IncomingFlash(flash): IncomingFlash,
) -> Response {
    let (status, page, problem) = match f.query() {
        Err(message) => (StatusCode::BAD_REQUEST, None, Some(message)),
        Ok(query) => match s.som.list_orders(staff.caller, query).await {
            Ok(page) => (StatusCode::OK, Some(page), None),
            Err(e) => {
                let e = ApiError::from(e);
                (e.status(), None, Some(e.detail().to_owned()))
            }
        },
    };
    let body = html! {
        form.filters method="get" action="/console/orders" role="search" {
            div {
                label for="q" { "Search" }
                input #q name="q" type="search" value=(f.q) placeholder="order id, username or email" maxlength="254";
            }
            div {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" { "Any" }
                    @for st in OrderStatus::ALL {
                        option value=(st.as_str()) selected[f.status.eq_ignore_ascii_case(st.as_str())] { (st.as_str()) }
                    }
                }
            }
            div { label for="user" { "User id" } input #user name="user" type="text" inputmode="numeric" value=(f.user); }
            div { label for="from" { "Placed from (UTC)" } input #from name="from" type="text" placeholder="2026-12-01" value=(f.from); }
            div { label for="to" { "Placed before (UTC)" } input #to name="to" type="text" placeholder="2026-12-02" value=(f.to); }
            div.actions { button type="submit" { "Filter" } a href="/console/orders" { "Clear" } }
        }
        @if let Some(problem) = &problem {
            div.flash.error role="alert" { (problem) }
        }
        @if let Some(page) = &page {
            @if page.items.is_empty() {
                p.empty { "No orders match." }
            } @else {
                (order_rows(&page.items))
                (next_page("/console/orders", &f.pairs(), page.next_cursor.as_deref()))
                p.pager {
                    @let filters = f.export_pairs();
                    "Export these orders: "
                    a href={ "/console/orders/export?format=csv" (filters) } download { "CSV" }
                    " · "
                    a href={ "/console/orders/export?format=ndjson" (filters) } download { "NDJSON" }
                }
            }
        }
    };
    layout::page(status, Some(&staff), Section::Orders, flash.as_ref(), "Orders", body)
}

/// Everything an order's page shows.
struct OrderView {
    order: Order,
    owner: Option<User>,
    payments: Vec<(Payment, Vec<Refund>)>,
    events: Vec<som_core::domain::OrderEvent>,
    notifications: Vec<OutboxEntry>,
    fulfillments: Vec<som_core::domain::Fulfillment>,
    returns: Vec<som_core::domain::Return>,
}

async fn load(s: &AppState, staff: &Staff, id: OrderId) -> Result<OrderView, som_core::Error> {
    let som = &s.som;
    let order = som.order(staff.caller, id).await?;
    let notifications = NotificationListQuery { order: Some(id), limit: Some(100), ..Default::default() };
    let (owner, payments, events, notifications, fulfillments, returns) = tokio::try_join!(
        som.account(staff.caller, order.user_id),
        som.order_payments(staff.caller, id),
        som.order_history(staff.caller, id),
        som.notifications_page(staff.caller, notifications),
        som.order_fulfillments(staff.caller, id),
        som.order_returns(staff.caller, id),
    )?;
    let mut with_refunds = Vec::with_capacity(payments.len());
    for p in payments {
        let refunds = som.payment_refunds(staff.caller, p.id).await?;
        with_refunds.push((p, refunds));
    }
    Ok(OrderView {
        order,
        owner: Some(owner),
        payments: with_refunds,
        events,
        notifications: notifications.items,
        fulfillments,
        returns,
    })
}

/// The order's life, oldest first: status changes, payments, refunds, deliveries.
fn timeline(v: &OrderView) -> Vec<(DateTime<Utc>, String)> {
    let mut entries: Vec<(DateTime<Utc>, String)> = Vec::new();
    for e in &v.events {
        let change = match e.from {
            // Goods moved, money did not (a parcel, a return).
            Some(from) if from == e.to => String::new(),
            Some(from) => format!(" {from} → {}", e.to),
            None => format!(" placed: {}", e.to),
        };
        let reason = e.reason.as_deref().map(|r| format!(" — {r}")).unwrap_or_default();
        entries.push((e.at, format!("Order{change} by {}{reason}", e.actor)));
    }
    for (p, refunds) in &v.payments {
        entries
            .push((p.created_at, format!("Payment #{} started: {} by {} ({})", p.id, p.amount, p.method, p.provider)));
        if p.updated_at != p.created_at {
            let why = p.failure_reason.as_deref().map(|r| format!(" — {r}")).unwrap_or_default();
            entries.push((p.updated_at, format!("Payment #{} is {}{why}", p.id, p.status)));
        }
        for r in refunds {
            let reason = r.reason.as_deref().map(|x| format!(" — {x}")).unwrap_or_default();
            entries.push((r.created_at, format!("Refund #{} of {} requested by {}{reason}", r.id, r.amount, r.actor)));
            if r.updated_at != r.created_at {
                let why = r.failure_reason.as_deref().map(|x| format!(" — {x}")).unwrap_or_default();
                entries.push((r.updated_at, format!("Refund #{} is {}{why}", r.id, r.status)));
            }
        }
    }
    for n in &v.notifications {
        if let Some(sent) = n.sent_at {
            entries.push((sent, format!("Notification #{} ({}, {}) sent", n.id, n.kind.as_str(), n.channel)));
        }
    }
    entries.sort_by_key(|(at, _)| *at);
    entries
}

fn payment_section(staff: &Staff, order: &Order, p: &Payment, refunds: &[Refund]) -> Markup {
    let left = p.refundable();
    html! {
        section.card {
            h3 { "Payment #" (p.id) " " (badge(p.status.as_str())) }
            dl.facts {
                dt { "Amount" } dd { (p.amount) }
                dt { "Capture" } dd { (p.capture_method) }
                @if p.capture_method == CaptureMethod::Manual { dt { "Captured" } dd { (p.captured) } }
                @if let Some(until) = p.authorization_expires_at { dt { "Authorised until" } dd { (when(until)) } }
                dt { "Refunded" } dd { (p.refunded) }
                @if p.refund_pending.minor() > 0 { dt { "Refund pending" } dd { (p.refund_pending) } }
                dt { "Method" } dd { (p.method) }
                dt { "Provider" } dd { (p.provider) }
                dt { "Provider id" } dd.mono { (p.provider_payment_id) }
                dt { "Transaction" } dd.mono { (p.transaction_id) }
                dt { "Attempt" } dd { (p.attempt) }
                dt { "Started" } dd { (when(p.created_at)) }
                @if let Some(reason) = &p.failure_reason { dt { "Failure" } dd { (reason) } }
                @if p.status.awaits_payer() {
                    @if let Some(action) = &p.next_action {
                        dt { "Next action" } dd { pre.mono { (serde_json::to_string_pretty(action).unwrap_or_default()) } }
                    }
                }
            }
            @if !refunds.is_empty() {
                div.scroll {
                    table.compact {
                        caption { "Refunds" }
                        thead { tr {
                            th scope="col" { "Refund" } th.num scope="col" { "Amount" } th scope="col" { "Status" }
                            th scope="col" { "Reason" } th scope="col" { "Provider id" } th scope="col" { "By" } th scope="col" { "Requested" }
                        } }
                        tbody {
                            @for r in refunds {
                                tr {
                                    td { "#" (r.id) } td.num.nowrap { (r.amount) } td { (badge(r.status.as_str())) }
                                    td { (r.reason.as_deref().unwrap_or("")) @if let Some(f) = &r.failure_reason { br; small { (f) } } }
                                    td.mono { (r.provider_refund_id.as_deref().unwrap_or("")) }
                                    td { (r.actor) } td.nowrap { (when(r.created_at)) }
                                }
                            }
                        }
                    }
                }
            }
            (super::capture::forms(staff, order, p))
            @if p.status.is_refundable() && left.minor() > 0 {
                form.action method="post" action={ "/console/orders/" (order.id) "/refund" } data-confirm="Refund this payment?" {
                    (csrf(staff))
                    input type="hidden" name="payment_id" value=(p.id);
                    input type="hidden" name="idempotency_key" value=(som_core::util::random_token(16));
                    fieldset {
                        legend { "Refund (up to " (left) ")" }
                        label for={ "amount-" (p.id) } { "Amount in " (p.amount.currency().code()) " (empty: all " (left) ")" }
                        input id={ "amount-" (p.id) } name="amount" type="text" inputmode="decimal" placeholder=(left.amount_string());
                        label for={ "reason-" (p.id) } { "Reason" }
                        input id={ "reason-" (p.id) } name="reason" type="text" maxlength="500" required;
                        button.danger type="submit" { "Refund" }
                    }
                }
            }
        }
    }
}

/// `GET /console/orders/{id}`.
pub(super) async fn page(
    State(s): State<AppState>,
    staff: Staff,
    Path(raw): Path<String>,
    IncomingFlash(flash): IncomingFlash,
) -> Response {
    let id = match path_id::<OrderId>(&raw, "order") {
        Ok(id) => id,
        Err(e) => return layout::error_page(Some(&staff), &e),
    };
    let v = match load(&s, &staff, id).await {
        Ok(v) => v,
        Err(e) => return layout::error_page(Some(&staff), &e.into()),
    };
    let o = &v.order;
    let body = html! {
        p.status { (badge(o.status.as_str())) " " (badge(o.fulfillment.as_str())) " placed " (when(o.created_at)) ", updated " (when(o.updated_at)) }
        div.grid {
            section.card {
                h2 { "Customer" }
                @if let Some(u) = &v.owner {
                    dl.facts {
                        dt { "User" } dd { a href={ "/console/users/" (u.id) } { (u.username.as_str()) } " (#" (u.id) ")" }
                        dt { "Email" } dd { (u.email.as_ref().map_or("—", |e| e.as_str())) }
                        dt { "Account" } dd { @if u.is_active { "active" } @else { "disabled" } }
                    }
                }
            }
            section.card {
                h2 { "Totals" }
                dl.facts {
                    dt { "Total" } dd { strong { (o.total) } }
                    dt { "Refunded" } dd { (o.refunded) }
                }
                @if o.status.cancel().is_ok() {
                    form.action method="post" action={ "/console/orders/" (o.id) "/cancel" } data-confirm="Cancel this order?" {
                        (csrf(&staff))
                        input type="hidden" name="idempotency_key" value=(som_core::util::random_token(16));
                        button.danger type="submit" { "Cancel order" }
                    }
                }
            }
        }
        section.card {
            h2 { "Items" }
            div.scroll {
                table {
                    thead { tr { th scope="col" { "Item" } th scope="col" { "Item id" } th.num scope="col" { "Quantity" } th.num scope="col" { "Unit price" } th.num scope="col" { "Line total" } } }
                    tbody {
                        @for (item_id, item) in o.items_with_ids() {
                            tr {
                                td.name { (item.name) }
                                td.mono { (item_id) }
                                td.num { (item.quantity) }
                                td.num.nowrap { (item.price) }
                                td.num.nowrap { (item.line_total().map_or_else(|_| "—".to_owned(), |m| m.to_string())) }
                            }
                        }
                    }
                    tfoot { tr { th scope="row" colspan="4" { "Total" } td.num.nowrap { strong { (o.total) } } } }
                }
            }
        }
        h2 { "Payments" }
        @if v.payments.is_empty() { p.empty { "No payment yet." } }
        @for (p, refunds) in &v.payments { (payment_section(&staff, o, p, refunds)) }
        (super::fulfilment::sections(&staff, o, &v.fulfillments, &v.returns))
        section.card {
            h2 { "Notifications" }
            @if v.notifications.is_empty() { p.empty { "None." } } @else {
                (notification_rows(&staff, &v.notifications, &format!("/console/orders/{}", o.id)))
            }
        }
        section.card {
            h2 { "Timeline" }
            ol.timeline {
                @for (at, text) in timeline(&v) {
                    li { time datetime=(at.to_rfc3339()) { (when(at)) } " " span { (text) } }
                }
            }
        }
    };
    layout::page(StatusCode::OK, Some(&staff), Section::Orders, flash.as_ref(), &format!("Order #{}", o.id), body)
}

#[derive(Debug, Deserialize)]
pub(super) struct CancelForm {
    #[serde(default)]
    idempotency_key: String,
}

/// `POST /console/orders/{id}/cancel`.
pub(super) async fn cancel(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, form: f }: Checked<CancelForm>,
) -> Response {
    let id = match path_id::<OrderId>(&raw, "order") {
        Ok(id) => id,
        Err(e) => return layout::error_page(Some(&staff), &e),
    };
    let key = Some(f.idempotency_key.as_str()).filter(|k| !k.is_empty());
    let back = format!("/console/orders/{id}");
    match s.som.cancel_order(staff.caller, id).maybe_idempotency_key(key).await {
        Ok(order) => redirect_with(&back, Flash(FlashKind::Done, format!("Order #{} is {}.", order.id, order.status))),
        Err(e) => redirect_with(&back, refused(e)),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RefundForm {
    #[serde(default)]
    payment_id: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    idempotency_key: String,
}

/// `POST /console/orders/{id}/refund`: a refund of one of the order's payments. The form's
/// idempotency key makes a second click or a re-sent form return the first refund.
pub(super) async fn refund(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, form: f }: Checked<RefundForm>,
) -> Response {
    let id = match path_id::<OrderId>(&raw, "order") {
        Ok(id) => id,
        Err(e) => return layout::error_page(Some(&staff), &e),
    };
    let back = format!("/console/orders/{id}");
    let payment = match order_payment(&s, &staff, id, &f.payment_id).await {
        Ok(p) => p,
        Err(flash) => return redirect_with(&back, flash),
    };
    let mut request = s.som.refund_payment(staff.caller, payment);
    if !f.reason.trim().is_empty() {
        request = request.reason(f.reason.trim());
    }
    if !f.amount.trim().is_empty() {
        request = request.amount(f.amount.trim());
    }
    let key = Some(f.idempotency_key.as_str()).filter(|k| !k.is_empty());
    match request.maybe_idempotency_key(key).await {
        Ok(r) => {
            redirect_with(&back, Flash(FlashKind::Done, format!("Refund #{} of {} is {}.", r.id, r.amount, r.status)))
        }
        Err(e) => redirect_with(&back, refused(e)),
    }
}

/// The payment a form on order `id`'s page names, checked to be that order's (the form names
/// both); the flash to go back with otherwise.
pub(super) async fn order_payment(s: &AppState, staff: &Staff, id: OrderId, raw: &str) -> Result<PaymentId, Flash> {
    let payment =
        path_id::<PaymentId>(raw.trim(), "payment").map_err(|e| Flash(FlashKind::Error, e.detail().to_owned()))?;
    match s.som.payment(staff.caller, payment).await {
        Ok(p) if p.order_id == id => Ok(payment),
        Ok(_) => Err(Flash(FlashKind::Error, format!("payment {payment} is not this order's"))),
        Err(e) => Err(refused(e)),
    }
}
