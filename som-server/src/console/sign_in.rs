//! Signing in and out: the same login as `POST /api/v1/token/` (its per-address and
//! per-username limits), ending in the same kind of session, kept in a cookie.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{self, Section};
use super::session::{
    self, Checked, Flash, FlashKind, IncomingFlash, NoFields, SESSION_COOKIE, clear_cookie, set_cookie,
};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::ClientIp;

#[derive(Debug, Deserialize, Default)]
pub(super) struct Next {
    #[serde(default)]
    next: String,
}

/// Where to go after signing in: a console page, never another site.
fn destination(next: &str) -> &str {
    session::console_path(next, "/console/")
}

fn form_page(status: StatusCode, flash: Option<&Flash>, next: &str, username: &str) -> Response {
    let body = html! {
        form.card.signin method="post" action="/console/sign-in" {
            input type="hidden" name="next" value=(next);
            label for="username" { "Username" }
            input #username name="username" type="text" autocomplete="username" required autofocus value=(username);
            label for="password" { "Password" }
            input #password name="password" type="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
        p.hint { "Staff accounts only." }
    };
    layout::page(status, None, Section::None, flash, "Sign in", body)
}

/// `GET /console/sign-in`.
pub(super) async fn form(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Next>,
    IncomingFlash(flash): IncomingFlash,
) -> Response {
    // Already signed in: straight on.
    if let Some(token) = session::cookie(&headers, SESSION_COOKIE)
        && s.som.session_user(token).await.is_ok_and(|u| u.is_staff)
    {
        return Redirect::to(destination(&q.next)).into_response();
    }
    form_page(StatusCode::OK, flash.as_ref(), destination(&q.next), "")
}

#[derive(Debug, Deserialize)]
pub(super) struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// `POST /console/sign-in`.
pub(super) async fn submit(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(c): Form<Credentials>,
) -> Response {
    if let Some(refused) = session::same_origin(&headers) {
        return refused;
    }
    let next = destination(&c.next).to_owned();
    let secure = ip.is_loopback()
        || headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    if !secure {
        let flash = Flash(
            FlashKind::Error,
            "The console signs in over HTTPS only (plain HTTP only from this machine): its session cookie is \
             Secure, and a browser would not keep it."
                .into(),
        );
        return form_page(StatusCode::FORBIDDEN, Some(&flash), &next, &c.username);
    }
    if let Err(wait) = s.limiter.check(ip) {
        let secs = wait.as_secs().max(1);
        let flash =
            Flash(FlashKind::Error, format!("Too many sign-in attempts from this address; try again in {secs} s."));
        let mut r = form_page(StatusCode::TOO_MANY_REQUESTS, Some(&flash), &next, &c.username);
        r.headers_mut().insert(header::RETRY_AFTER, secs.into());
        return r;
    }
    let pair = match s.som.login(&c.username, &c.password).await {
        Ok(pair) => pair,
        Err(e) => {
            let e = ApiError::from(e);
            let flash = Flash(FlashKind::Error, format!("{}: {}", e.title(), e.detail()));
            let mut r = form_page(e.status(), Some(&flash), &next, &c.username);
            for (name, value) in e.headers() {
                if name == header::RETRY_AFTER {
                    r.headers_mut().insert(name.clone(), value.clone());
                }
            }
            return r;
        }
    };
    match s.som.session_user(&pair.refresh).await {
        Ok(user) if user.is_staff => {
            tracing::info!(user = %user.id, "signed in to the console");
            let mut r = Redirect::to(&next).into_response();
            r.headers_mut()
                .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &pair.refresh, pair.refresh_expires_in));
            r
        }
        Ok(_) => {
            // Not staff: the session just started ends at once.
            let _ = s.som.logout(&pair.refresh).await;
            session::staff_only()
        }
        Err(e) => layout::error_page(None, &e.into()),
    }
}

/// `POST /console/sign-out`: ends the session (its API tokens too).
pub(super) async fn sign_out(State(s): State<AppState>, Checked { staff, .. }: Checked<NoFields>) -> Response {
    if let Err(e) = s.som.logout(&staff.token).await {
        return layout::error_page(Some(&staff), &e.into());
    }
    let mut r = session::redirect_with("/console/sign-in", Flash(FlashKind::Done, "Signed out.".into()));
    r.headers_mut().append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE));
    r
}
