//! The staff console: server-rendered HTML at `/console/` over the same [`OrderSystem`] as the
//! API. Pages only translate, as the API's handlers do: read the session, call the facade,
//! render. Every page is staff only; every form that changes something carries the session's
//! CSRF token; every response forbids framing, inline script and caching.
//!
//! [`OrderSystem`]: som_core::OrderSystem

mod capture;
mod fulfilment;
mod layout;
mod orders;
mod overview;
mod session;
pub(crate) use session::cookie;
mod sign_in;
mod users;
mod webhooks;
mod work;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::AppState;

pub use session::{CSRF_FIELD, FLASH_COOKIE, SESSION_COOKIE, csrf_token};

/// Where the console lives.
pub const BASE: &str = "/console/";

/// The console's policy: its own stylesheet and script only, never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

const STYLESHEET: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// The console's routes, for [`crate::app`] to merge when `SOM_CONSOLE` is on.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent(BASE) }))
        .route("/console/", get(overview::page))
        .route("/console/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/console/sign-out", post(sign_in::sign_out))
        .route("/console/orders", get(orders::list))
        .route("/console/orders/export", get(orders::export))
        .route("/console/orders/{id}", get(orders::page))
        .route("/console/orders/{id}/cancel", post(orders::cancel))
        .route("/console/orders/{id}/refund", post(orders::refund))
        .route("/console/orders/{id}/capture", post(capture::capture))
        .route("/console/orders/{id}/void", post(capture::void))
        .route("/console/orders/{id}/fulfil", post(fulfilment::fulfil))
        .route("/console/orders/{id}/returns", post(fulfilment::request))
        .route("/console/fulfilment", get(fulfilment::page))
        .route("/console/fulfilments/{id}/{action}", post(fulfilment::step))
        .route("/console/returns/{id}/{action}", post(fulfilment::decide))
        .route("/console/users", get(users::list))
        .route("/console/users/{id}", get(users::page))
        .route("/console/users/{id}/staff", post(users::set_staff))
        .route("/console/users/{id}/active", post(users::set_active))
        .route("/console/users/{id}/sessions/end", post(users::end_sessions))
        .route("/console/notifications", get(work::notifications))
        .route("/console/notifications/{id}/retry", post(work::retry))
        .route("/console/notifications/retry-dead", post(work::retry_dead))
        .route("/console/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/console/webhooks/{id}", get(webhooks::page))
        .route("/console/webhooks/{id}/enabled", post(webhooks::set_enabled))
        .route("/console/webhooks/{id}/rotate", post(webhooks::rotate))
        .route("/console/webhooks/{id}/delete", post(webhooks::delete))
        .route("/console/webhooks/{id}/redeliver", post(webhooks::redeliver))
        .route("/console/assets/console.css", get(|| async { asset("text/css; charset=utf-8", STYLESHEET) }))
        .route("/console/assets/console.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        // Where the original service's admin lived.
        .route("/admin", get(|| async { Redirect::permanent(BASE) }))
        .route("/admin/", get(|| async { Redirect::permanent(BASE) }))
        .route("/admin/{*rest}", get(|| async { Redirect::permanent(BASE) }))
        .layer(from_fn(headers))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// The console's security headers on every response of its own (assets may be cached).
async fn headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
