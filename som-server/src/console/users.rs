//! Users: search, a user's page, and what staff change about an account.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use som_core::domain::UserId;
use som_core::{OrderListQuery, UserListQuery};

use super::layout::{self, Section, badge, csrf, next_page, refused, when};
use super::orders::order_rows;
use super::session::{Checked, Flash, FlashKind, IncomingFlash, NoFields, Staff, redirect_with};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::path_id;

#[derive(Debug, Deserialize, Default)]
pub(super) struct Search {
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: String,
}

/// `GET /console/users`.
pub(super) async fn list(
    State(s): State<AppState>,
    staff: Staff,
    Query(f): Query<Search>,
    IncomingFlash(flash): IncomingFlash,
) -> Response {
    let cursor = match f.cursor.trim() {
        "" => Ok(None),
        c => c.parse::<UserId>().map(Some).map_err(|_| "cursor: is not a valid cursor".to_owned()),
    };
    let result = match cursor {
        Err(message) => Err((StatusCode::BAD_REQUEST, message)),
        Ok(cursor) => {
            let query = UserListQuery { search: Some(f.q.clone()), cursor, limit: None };
            s.som.users_page(staff.caller, query).await.map_err(|e| {
                let e = ApiError::from(e);
                (e.status(), e.detail().to_owned())
            })
        }
    };
    let status = result.as_ref().err().map_or(StatusCode::OK, |(status, _)| *status);
    let body = html! {
        form.filters method="get" action="/console/users" role="search" {
            div {
                label for="q" { "Username or email starts with" }
                input #q name="q" type="search" value=(f.q) maxlength="254";
            }
            div.actions { button type="submit" { "Search" } a href="/console/users" { "Clear" } }
        }
        @match &result {
            Err((_, message)) => { div.flash.error role="alert" { (message) } }
            Ok(page) => {
                @if page.items.is_empty() { p.empty { "No users match." } } @else {
                    div.scroll {
                        table {
                            thead { tr {
                                th scope="col" { "User" } th scope="col" { "Email" } th scope="col" { "Role" }
                                th scope="col" { "Account" } th scope="col" { "Joined" }
                            } }
                            tbody {
                                @for u in &page.items {
                                    tr {
                                        td.name { a href={ "/console/users/" (u.id) } { (u.username.as_str()) } " #" (u.id) }
                                        td.name { (u.email.as_ref().map_or("—", |e| e.as_str())) }
                                        td { @if u.is_staff { "staff" } @else { "customer" } }
                                        td { @if u.is_active { "active" } @else { (badge("DISABLED")) } }
                                        td.nowrap { (when(u.created_at)) }
                                    }
                                }
                            }
                        }
                    }
                    (next_page("/console/users", &[("q", f.q.clone())], page.next_cursor.as_deref()))
                }
            }
        }
    };
    layout::page(status, Some(&staff), Section::Users, flash.as_ref(), "Users", body)
}

/// `GET /console/users/{id}`.
pub(super) async fn page(
    State(s): State<AppState>,
    staff: Staff,
    Path(raw): Path<String>,
    IncomingFlash(flash): IncomingFlash,
) -> Response {
    let id = match path_id::<UserId>(&raw, "user") {
        Ok(id) => id,
        Err(e) => return layout::error_page(Some(&staff), &e),
    };
    let orders = OrderListQuery { user: Some(id), limit: Some(20), ..Default::default() };
    let loaded = tokio::try_join!(
        s.som.account(staff.caller, id),
        s.som.live_sessions(staff.caller, id),
        s.som.list_orders(staff.caller, orders),
    );
    let (user, sessions, orders) = match loaded {
        Ok(found) => found,
        Err(e) => return layout::error_page(Some(&staff), &e.into()),
    };
    let own = user.id == staff.user.id;
    let base = format!("/console/users/{}", user.id);
    let body = html! {
        div.grid {
            section.card {
                h2 { "Account" }
                dl.facts {
                    dt { "Id" } dd { (user.id) }
                    dt { "Email" } dd { (user.email.as_ref().map_or("—", |e| e.as_str())) }
                    dt { "Role" } dd { @if user.is_staff { "staff" } @else { "customer" } }
                    dt { "Account" } dd { @if user.is_active { "active" } @else { (badge("DISABLED")) } }
                    dt { "Joined" } dd { (when(user.created_at)) }
                    dt { "Live sessions" } dd { (sessions) }
                }
            }
            section.card {
                h2 { "Actions" }
                @if own { p.hint { "This is your own account: you cannot revoke your own staff rights nor disable it." } }
                form.action method="post" action={ (base) "/staff" } data-confirm="Change this account's staff rights?" {
                    (csrf(&staff))
                    @if user.is_staff {
                        input type="hidden" name="value" value="revoke";
                        button.danger type="submit" disabled[own] { "Revoke staff" }
                    } @else {
                        input type="hidden" name="value" value="grant";
                        button type="submit" { "Grant staff" }
                    }
                }
                form.action method="post" action={ (base) "/active" } data-confirm="Change whether this account can sign in?" {
                    (csrf(&staff))
                    @if user.is_active {
                        input type="hidden" name="value" value="disable";
                        button.danger type="submit" disabled[own] { "Disable account" }
                    } @else {
                        input type="hidden" name="value" value="enable";
                        button type="submit" { "Enable account" }
                    }
                }
                form.action method="post" action={ (base) "/sessions/end" } data-confirm="Sign this account out everywhere?" {
                    (csrf(&staff))
                    button.danger type="submit" { "End all sessions" }
                }
            }
        }
        section.card {
            h2 { "Latest orders" }
            @if orders.items.is_empty() { p.empty { "No orders." } } @else {
                (order_rows(&orders.items))
                @if orders.next_cursor.is_some() {
                    p.pager { a href={ "/console/orders?user=" (user.id) } { "All of this user's orders →" } }
                }
            }
        }
    };
    layout::page(StatusCode::OK, Some(&staff), Section::Users, flash.as_ref(), user.username.as_str(), body)
}

#[derive(Debug, Deserialize)]
pub(super) struct Change {
    #[serde(default)]
    value: String,
}

fn user_of(raw: &str) -> Result<UserId, Box<Response>> {
    path_id::<UserId>(raw, "user").map_err(|e| Box::new(layout::error_page(None, &e)))
}

/// `POST /console/users/{id}/staff` (`value` = `grant` | `revoke`).
pub(super) async fn set_staff(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, form: f }: Checked<Change>,
) -> Response {
    let id = match user_of(&raw) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let back = format!("/console/users/{id}");
    let grant = match f.value.as_str() {
        "grant" => true,
        "revoke" => false,
        _ => return redirect_with(&back, Flash(FlashKind::Error, "value: must be grant or revoke".into())),
    };
    match s.som.set_staff(staff.caller, id, grant).await {
        Ok(u) => {
            let what = if u.is_staff { "is now staff" } else { "is no longer staff" };
            redirect_with(&back, Flash(FlashKind::Done, format!("{} {what}.", u.username.as_str())))
        }
        Err(e) => redirect_with(&back, refused(e)),
    }
}

/// `POST /console/users/{id}/active` (`value` = `enable` | `disable`). Disabling ends every
/// session of the account at once.
pub(super) async fn set_active(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, form: f }: Checked<Change>,
) -> Response {
    let id = match user_of(&raw) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let back = format!("/console/users/{id}");
    let active = match f.value.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return redirect_with(&back, Flash(FlashKind::Error, "value: must be enable or disable".into())),
    };
    match s.som.set_active(staff.caller, id, active).await {
        Ok(u) => {
            let what = if u.is_active { "is enabled" } else { "is disabled and signed out everywhere" };
            redirect_with(&back, Flash(FlashKind::Done, format!("{} {what}.", u.username.as_str())))
        }
        Err(e) => redirect_with(&back, refused(e)),
    }
}

/// `POST /console/users/{id}/sessions/end`.
pub(super) async fn end_sessions(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, .. }: Checked<NoFields>,
) -> Response {
    let id = match user_of(&raw) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match s.som.revoke_sessions(staff.caller, id).await {
        // Ending one's own sessions ends this one too.
        Ok(()) if id == staff.user.id => redirect_with(
            "/console/sign-in",
            Flash(FlashKind::Done, "Every session of your account ended; sign in again.".into()),
        ),
        Ok(()) => redirect_with(
            &format!("/console/users/{id}"),
            Flash(FlashKind::Done, format!("Every session of user #{id} ended.")),
        ),
        Err(e) => redirect_with(&format!("/console/users/{id}"), refused(e)),
    }
}
