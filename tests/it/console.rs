//! The staff console over real HTTP on both backends: who may sign in, and every action's
//! refusals (no cookie, a customer's cookie, a revoked or expired session, a missing or wrong
//! CSRF token, a post from another site) — each checked to have changed nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::json;
use som_core::domain::{Caller, NotificationStatus, OrderId, OrderStatus, PaymentId, PaymentStatus, UserId};
use som_core::testing::Backend;
use som_server::console::{SESSION_COOKIE, csrf_token};

use crate::http::{App, spawn_app_on, spawn_app_with};

som_core::on_both_backends!(
    every_console_action_is_refused_without_a_live_staff_session_and_its_token,
    staff_sign_in_act_and_sign_out_while_customers_are_turned_away,
    the_console_searches_renders_safely_and_sets_its_headers,
    the_overview_search_and_dead_letter_retries_are_in_the_api_too,
    staff_capture_part_and_void_from_the_order_page,
);

/// A client that shows redirects instead of following them.
fn browser() -> Client {
    Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The console session cookie set by a response, if any.
fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
        let (pair, attributes) = c.split_once(';')?;
        let value = pair.strip_prefix(&format!("{SESSION_COOKIE}="))?;
        assert!(attributes.contains("HttpOnly") && attributes.contains("Secure"), "{c}");
        assert!(attributes.contains("SameSite=Strict") && attributes.contains("Path=/"), "{c}");
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// Signs in through the console's form: the response and the session cookie it set.
pub(super) async fn sign_in(app: &App, username: &str) -> (StatusCode, Option<String>, String) {
    let resp = browser()
        .post(format!("{}/console/sign-in", app.base))
        .form(&[("username", username), ("password", "correct horse battery"), ("next", "/console/orders")])
        .send()
        .await
        .unwrap();
    let (status, cookie) = (resp.status(), session_cookie(&resp));
    (status, cookie, resp.text().await.unwrap())
}

/// `fields` and a CSRF token.
pub(super) fn with<'a>(fields: &[(&'a str, &'a str)], csrf: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut all = fields.to_vec();
    all.push(("csrf", csrf));
    all
}

/// Posts a console form with `cookie` (when given).
pub(super) async fn post(app: &App, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> reqwest::Response {
    let mut req = browser().post(format!("{}{path}", app.base)).form(form);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("{SESSION_COOKIE}={c}"));
    }
    req.send().await.unwrap()
}

pub(super) async fn get(app: &App, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = browser().get(format!("{}{path}", app.base));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("{SESSION_COOKIE}={c}"));
    }
    req.send().await.unwrap()
}

/// What the actions could change, read through the library.
#[derive(Debug, PartialEq, Eq)]
struct World {
    created: OrderStatus,
    paid: OrderStatus,
    refunds: usize,
    customer_active: bool,
    customer_staff: bool,
    customer_sessions: u64,
    dead: u64,
}

async fn world(app: &App, created: i64, paid: i64, payment: i64, customer: i64) -> World {
    let som = &app.som;
    let user = som.account(Caller::System, UserId::new(customer)).await.unwrap();
    let dead = som.notification_counts(Caller::System).await.unwrap();
    World {
        created: som.order(Caller::System, OrderId::new(created)).await.unwrap().status,
        paid: som.order(Caller::System, OrderId::new(paid)).await.unwrap().status,
        refunds: som.payment_refunds(Caller::System, PaymentId::new(payment)).await.unwrap().len(),
        customer_active: user.is_active,
        customer_staff: user.is_staff,
        customer_sessions: som.live_sessions(Caller::System, UserId::new(customer)).await.unwrap(),
        dead: dead.iter().find(|(s, _)| *s == NotificationStatus::Dead).map_or(0, |(_, n)| *n),
    }
}

async fn every_console_action_is_refused_without_a_live_staff_session_and_its_token(backend: Backend) {
    let clock = som_core::clock::ManualClock::starting_now();
    let app = spawn_app_on(backend, clock.clone(), |_| {}).await;
    app.staff("boss").await;
    app.staff("deputy").await;
    let customer = app.register("carol").await["id"].as_i64().unwrap();
    let (carol, carol_refresh) = app.login("carol").await;
    let created = app.order(&carol).await["id"].as_i64().unwrap();
    let (paid, payment) = app.paid(&carol, "mock_success").await;
    let before = world(&app, created, paid, payment, customer).await;
    assert_eq!((before.created, before.paid, before.refunds), (OrderStatus::Created, OrderStatus::Paid, 0));

    let (status, boss, _) = sign_in(&app, "boss").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let boss = boss.expect("a session cookie");
    let (_, deputy, _) = sign_in(&app, "deputy").await;
    let deputy = deputy.unwrap();
    let (token, other_token) = (csrf_token(&boss), csrf_token(&deputy));

    let (created_s, paid_s, payment_s, customer_s) =
        (created.to_string(), paid.to_string(), payment.to_string(), customer.to_string());
    let actions: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("/console/orders/{created_s}/cancel"), vec![("idempotency_key", "c-1")]),
        (
            format!("/console/orders/{paid_s}/refund"),
            vec![("payment_id", &payment_s), ("amount", "1.00"), ("reason", "x"), ("idempotency_key", "r-1")],
        ),
        (format!("/console/users/{customer_s}/staff"), vec![("value", "grant")]),
        (format!("/console/users/{customer_s}/active"), vec![("value", "disable")]),
        (format!("/console/users/{customer_s}/sessions/end"), vec![]),
        ("/console/notifications/1/retry".to_owned(), vec![("back", "/console/notifications")]),
        ("/console/notifications/retry-dead".to_owned(), vec![("channel", "log")]),
    ];
    let (token, other_token, carol_token) = (token.as_str(), other_token.as_str(), csrf_token(&carol_refresh));
    for (path, fields) in &actions {
        // No cookie: 401, and told to sign in.
        let resp = post(&app, path, None, &with(fields, token)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path} without a cookie");
        assert!(resp.text().await.unwrap().contains("/console/sign-in"));
        // A customer's own live session: 403.
        let resp = post(&app, path, Some(&carol_refresh), &with(fields, &carol_token)).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path} with a customer's session");
        // Staff without the token, or with another session's: 403.
        let resp = post(&app, path, Some(&boss), fields).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path} without a CSRF token");
        let resp = post(&app, path, Some(&boss), &with(fields, other_token)).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path} with another session's CSRF token");
        let resp = post(&app, path, Some(&boss), &with(fields, "")).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path} with an empty CSRF token");
        // The right token, posted by another site: 403.
        let resp = browser()
            .post(format!("{}{path}", app.base))
            .header("cookie", format!("{SESSION_COOKIE}={boss}"))
            .header("origin", "https://evil.example")
            .form(&with(fields, token))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path} from another origin");
        // Garbage in the cookie: 401.
        let resp = post(&app, path, Some("not-a-token"), &with(fields, token)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path} with a forged cookie");
    }
    assert_eq!(world(&app, created, paid, payment, customer).await, before, "a refused action changed something");

    // A revoked session (revoke-all through the API) is refused at once, token and all.
    let (deputy_access, _) = app.login("deputy").await;
    let (status, _) = app.post("/token/revoke-all/", Some(&deputy_access), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (path, fields) in &actions {
        let resp = post(&app, path, Some(&deputy), &with(fields, other_token)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path} with a revoked session");
    }
    let resp = get(&app, "/console/orders", Some(&deputy)).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/console/sign-in?next=/console/orders");

    // An expired session: past the refresh token's lifetime nothing works either.
    clock.advance(app.som.config().refresh_token_ttl + Duration::from_secs(600));
    for (path, fields) in &actions {
        let resp = post(&app, path, Some(&boss), &with(fields, token)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path} with an expired session");
    }
    assert_eq!(get(&app, "/console/", Some(&boss)).await.status(), StatusCode::SEE_OTHER);
    let after = world(&app, created, paid, payment, customer).await;
    assert_eq!(after.refunds, 0);
    assert_eq!(
        (after.created, after.paid, after.customer_active, after.customer_staff),
        (before.created, before.paid, true, false)
    );
}

async fn staff_sign_in_act_and_sign_out_while_customers_are_turned_away(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.staff("boss").await;
    let customer = app.register("carol").await["id"].as_i64().unwrap();
    let (carol, _) = app.login("carol").await;
    let (order, payment) = app.paid(&carol, "mock_success").await;

    // A customer gets "staff only", no cookie, and the session just started is ended.
    let sessions = app.som.live_sessions(Caller::System, UserId::new(customer)).await.unwrap();
    let (status, cookie, body) = sign_in(&app, "carol").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(cookie.is_none());
    assert!(body.contains("Staff only"), "{body}");
    assert_eq!(app.som.live_sessions(Caller::System, UserId::new(customer)).await.unwrap(), sessions);
    // A wrong password: the API's answer, no cookie.
    let resp = browser()
        .post(format!("{}/console/sign-in", app.base))
        .form(&[("username", "boss"), ("password", "wrong password!")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(session_cookie(&resp).is_none());

    // Staff sign in and land where they were going.
    let resp = browser()
        .post(format!("{}/console/sign-in", app.base))
        .form(&[("username", "boss"), ("password", "correct horse battery"), ("next", "//evil.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()[LOCATION], "/console/", "an outside destination is not followed");
    let (status, cookie, _) = sign_in(&app, "boss").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let boss = cookie.unwrap();
    let csrf = csrf_token(&boss);

    // A partial refund with the form's idempotency key: sent twice, refunded once.
    let path = format!("/console/orders/{order}/refund");
    let form = [
        ("csrf", csrf.as_str()),
        ("payment_id", &payment.to_string()),
        ("amount", "2.50"),
        ("reason", "scratched"),
        ("idempotency_key", "form-1"),
    ];
    for _ in 0..2 {
        let resp = post(&app, &path, Some(&boss), &form).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()[LOCATION], format!("/console/orders/{order}"));
    }
    let refunds = app.som.payment_refunds(Caller::System, PaymentId::new(payment)).await.unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        app.som.order(Caller::System, OrderId::new(order)).await.unwrap().status,
        OrderStatus::PartiallyRefunded
    );
    // Too much: the API's conflict, shown as a flash on the order page; nothing refunded.
    let too_much = [
        ("csrf", csrf.as_str()),
        ("payment_id", &payment.to_string()),
        ("amount", "9999.00"),
        ("reason", "x"),
        ("idempotency_key", "form-2"),
    ];
    let resp = post(&app, &path, Some(&boss), &too_much).await;
    let flash = resp.headers().get_all(SET_COOKIE).iter().any(|c| c.to_str().unwrap().starts_with("__Host-som_flash="));
    assert!(flash);
    assert_eq!(app.som.payment_refunds(Caller::System, PaymentId::new(payment)).await.unwrap().len(), 1);

    // Self-lockout is refused as over the API.
    let me = app.som.find_user(Caller::System, "boss").await.unwrap().id.to_string();
    let resp =
        post(&app, &format!("/console/users/{me}/active"), Some(&boss), &[("csrf", &csrf), ("value", "disable")]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(app.som.find_user(Caller::System, "boss").await.unwrap().is_active);

    // Disabling the customer ends their API sessions.
    let resp =
        post(&app, &format!("/console/users/{customer}/active"), Some(&boss), &[("csrf", &csrf), ("value", "disable")])
            .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (status, _) = app.get("/accounts/me/", Some(&carol)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Signing out ends the session: the cookie no longer works.
    let resp = post(&app, "/console/sign-out", Some(&boss), &[("csrf", &csrf)]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(get(&app, "/console/", Some(&boss)).await.status(), StatusCode::SEE_OTHER);
}

async fn the_console_searches_renders_safely_and_sets_its_headers(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.trusted_proxies = vec!["127.0.0.1/32".into()];
    })
    .await;
    app.staff("boss").await;
    let carol = app.user("carol").await;
    let (status, order) = app
        .post(
            "/orders/",
            Some(&carol),
            json!({"items": [{"name": "<script>alert(1)</script>", "quantity": 1, "price": "3.00"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let order = order["id"].as_i64().unwrap();
    let dave = app.user("dave").await;
    let other = app.order(&dave).await["id"].as_i64().unwrap();
    let (_, cookie, _) = sign_in(&app, "boss").await;
    let boss = cookie.unwrap();

    // Text search: by username, email, and order id.
    for (q, expect, not) in
        [("caro", order, other), ("CAROL@EXAMPLE", order, other), (&*other.to_string(), other, order)]
    {
        let resp = get(&app, &format!("/console/orders?q={q}"), Some(&boss)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let html = resp.text().await.unwrap();
        assert!(html.contains(&format!("/console/orders/{expect}\"")), "{q}");
        assert!(!html.contains(&format!("/console/orders/{not}\"")), "{q}");
    }
    let resp = get(&app, "/console/orders?status=NOPE", Some(&boss)).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // The item name is text, never markup; the page forbids inline script and framing.
    let resp = get(&app, &format!("/console/orders/{order}"), Some(&boss)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let html = resp.text().await.unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>alert"));
    assert!(!html.contains("<script>") && !html.contains("onclick"), "no inline script");

    // Every page answers staff, and sends anyone else to sign in.
    let me = app.som.find_user(Caller::System, "boss").await.unwrap().id;
    for page in
        ["/console/", "/console/orders", "/console/users", "/console/notifications", &format!("/console/users/{me}")]
    {
        assert_eq!(get(&app, page, Some(&boss)).await.status(), StatusCode::OK, "{page}");
        let resp = get(&app, page, None).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{page}");
        assert!(resp.headers()[LOCATION].to_str().unwrap().starts_with("/console/sign-in"));
    }
    assert_eq!(get(&app, "/console/orders/999999", Some(&boss)).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/console/orders/abc", Some(&boss)).await.status(), StatusCode::NOT_FOUND);
    // Where the original's admin was.
    let resp = get(&app, "/admin/orders/order/", None).await;
    assert!(resp.status().is_redirection());
    assert_eq!(resp.headers()[LOCATION], "/console/");

    // Signing in from another machine over plain HTTP is refused (the cookie is Secure).
    let resp = browser()
        .post(format!("{}/console/sign-in", app.base))
        .header("x-forwarded-for", "203.0.113.9")
        .form(&[("username", "boss"), ("password", "correct horse battery")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(session_cookie(&resp).is_none());
    let resp = browser()
        .post(format!("{}/console/sign-in", app.base))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .form(&[("username", "boss"), ("password", "correct horse battery")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_console_can_be_turned_off_and_sign_in_is_rate_limited() {
    let off = spawn_app_with(Backend::Sqlite, |c| c.console = false).await;
    assert_eq!(get(&off, "/console/", None).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&off, "/console/sign-in", None).await.status(), StatusCode::NOT_FOUND);

    let app = spawn_app_with(Backend::Sqlite, |c| c.auth_rate_limit = 2).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let resp = browser()
            .post(format!("{}/console/sign-in", app.base))
            .form(&[("username", "nobody"), ("password", "whatever it is")])
            .send()
            .await
            .unwrap();
        statuses.push(resp.status());
    }
    assert_eq!(statuses, [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS]);
}

async fn the_overview_search_and_dead_letter_retries_are_in_the_api_too(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let boss = app.staff("boss").await;
    let carol = app.user("carol").await;
    let (paid, _) = app.paid(&carol, "mock_success").await;
    app.order(&carol).await;

    let (status, o) = app.get("/overview/", Some(&boss)).await;
    assert_eq!(status, StatusCode::OK, "{o}");
    assert_eq!((o["today"]["orders"]["PAID"].as_u64(), o["today"]["orders"]["CREATED"].as_u64()), (Some(1), Some(1)));
    assert_eq!(o["today"]["money"][0]["currency"], "USD");
    assert_eq!(o["last_7_days"]["orders"]["PAID"], 1);
    let (status, _) = app.get("/overview/", Some(&carol)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Staff search everyone's orders by the owner's name; customers may not search.
    let (status, found) = app.get("/orders/?all=true&q=CAROL", Some(&boss)).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found.as_array().unwrap().len(), 2);
    let (status, found) = app.get(&format!("/orders/?all=true&q={paid}"), Some(&boss)).await;
    assert_eq!((status, found[0]["id"].as_i64()), (StatusCode::OK, Some(paid)));
    let (status, _) = app.get("/orders/?q=carol", Some(&carol)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = app.post("/notifications/retry-dead/", Some(&boss), json!({"channel": "log"})).await;
    assert_eq!((status, body["requeued"].as_u64()), (StatusCode::OK, Some(0)), "{body}");
    let (status, _) = app.post("/notifications/retry-dead/", Some(&carol), json!({"channel": "log"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.post("/notifications/retry-dead/", Some(&boss), json!({"channel": ""})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// An order of carol's paid with manual capture and confirmed: (order, payment).
async fn authorised(app: &App, token: &str) -> (i64, i64) {
    let order = app.order(token).await["id"].as_i64().unwrap();
    let (_, p) = app.post("/payments/initiate/", Some(token), json!({"order_id": order, "capture": "manual"})).await;
    let (_, p) = app.post("/payments/confirm/", Some(token), json!({"payment_id": p["id"]})).await;
    assert_eq!(p["status"], "AUTHORIZED", "{p}");
    (order, p["id"].as_i64().unwrap())
}

async fn staff_capture_part_and_void_from_the_order_page(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.staff("boss").await;
    let carol = app.user("carol").await;
    let (order, payment) = authorised(&app, &carol).await;
    let (other, other_payment) = authorised(&app, &carol).await;
    let boss = sign_in(&app, "boss").await.1.unwrap();
    let csrf = csrf_token(&boss);

    // The overview lists what is held and for how long; the order page offers both actions.
    let overview = get(&app, "/console/", Some(&boss)).await.text().await.unwrap();
    assert!(overview.contains("Authorised, not captured"), "{overview}");
    assert!(overview.contains(&format!("href=\"/console/orders/{order}\"")), "{overview}");
    assert!(overview.contains("6d 23h"), "a week's hold, just made: {overview}");
    let page = get(&app, &format!("/console/orders/{order}"), Some(&boss)).await.text().await.unwrap();
    assert!(page.contains(&format!("action=\"/console/orders/{order}/capture\"")), "{page}");
    assert!(page.contains(&format!("action=\"/console/orders/{order}/void\"")), "{page}");

    // Without the form's token nothing happens.
    let path = format!("/console/orders/{order}/capture");
    let pid = payment.to_string();
    let forged = post(&app, &path, Some(&boss), &[("payment_id", pid.as_str()), ("amount", "100.00")]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let held = app.som.payment(Caller::System, PaymentId::new(payment)).await.unwrap();
    assert_eq!(held.status, PaymentStatus::Authorized);

    // Part of it, sent twice with the form's key: captured once.
    let form = with(&[("payment_id", pid.as_str()), ("amount", "100.00"), ("idempotency_key", "cap-form")], &csrf);
    for _ in 0..2 {
        let resp = post(&app, &path, Some(&boss), &form).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()[LOCATION], format!("/console/orders/{order}"));
    }
    let captured = app.som.payment(Caller::System, PaymentId::new(payment)).await.unwrap();
    assert_eq!((captured.status, captured.captured.amount_string()), (PaymentStatus::Success, "100.00".into()));
    assert_eq!(app.som.order(Caller::System, OrderId::new(order)).await.unwrap().status, OrderStatus::Paid);
    let page = get(&app, &format!("/console/orders/{order}"), Some(&boss)).await.text().await.unwrap();
    assert!(!page.contains("/capture\""), "no capture form once captured: {page}");
    // A payment of another order is refused.
    let opid = other_payment.to_string();
    let wrong = with(&[("payment_id", opid.as_str()), ("idempotency_key", "x")], &csrf);
    post(&app, &path, Some(&boss), &wrong).await;
    assert_eq!(
        app.som.payment(Caller::System, PaymentId::new(other_payment)).await.unwrap().status,
        PaymentStatus::Authorized
    );

    // The other is released, and its order cancelled.
    let void = with(&[("payment_id", opid.as_str()), ("idempotency_key", "void-form")], &csrf);
    let resp = post(&app, &format!("/console/orders/{other}/void"), Some(&boss), &void).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.som.payment(Caller::System, PaymentId::new(other_payment)).await.unwrap().status,
        PaymentStatus::Voided
    );
    assert_eq!(app.som.order(Caller::System, OrderId::new(other)).await.unwrap().status, OrderStatus::Cancelled);
}
