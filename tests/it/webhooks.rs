//! Webhook endpoints over HTTP with a real receiver on loopback: staff manage endpoints
//! (customers get 403), each endpoint gets the events it subscribed to as signed CloudEvents,
//! a rotated secret signs beside the new one for its overlap, every attempt is in the delivery
//! log, redelivery sends an event again, a redirect is never followed, and an endpoint failing
//! continuously is disabled with staff told. Private addresses are refused by the API without
//! anything being sent (the address checks themselves are unit tests in som-core).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::IntoResponse;
use reqwest::StatusCode;
use serde_json::{Value, json};
use som_core::domain::{Caller, EventKind, NotificationStatus};
use som_core::notify::verify_signature;
use som_core::testing::Backend;

use super::http::{App, assert_problem, read, spawn_app_with};

som_core::on_both_backends!(
    staff_manage_endpoints_that_receive_signed_filtered_events,
    failing_and_redirecting_endpoints_are_logged_and_a_failing_one_is_disabled,
    the_console_makes_endpoints_shows_their_log_and_redelivers,
);

/// One call the receiver got.
#[derive(Debug, Clone)]
struct Call {
    signature: String,
    body: Vec<u8>,
    event: Value,
}

#[derive(Debug, Clone, Default)]
struct Receiver {
    calls: Arc<Mutex<HashMap<String, Vec<Call>>>>,
}

impl Receiver {
    fn calls(&self, path: &str) -> Vec<Call> {
        self.calls.lock().unwrap().get(path).cloned().unwrap_or_default()
    }
}

async fn hook(
    State(r): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let signature = headers.get("som-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.calls.lock().unwrap().entry(path.clone()).or_default().push(Call { signature, body: body.to_vec(), event });
    match path.as_str() {
        "fail" => (AxumStatus::INTERNAL_SERVER_ERROR, HeaderMap::new(), "broken".to_owned()),
        "redirect" => {
            let mut h = HeaderMap::new();
            h.insert("location", "/hooks/ok".parse().unwrap());
            (AxumStatus::FOUND, h, String::new())
        }
        _ => (AxumStatus::OK, HeaderMap::new(), format!("thanks from {path}")),
    }
}

async fn receiver() -> (Receiver, String) {
    let r = Receiver::default();
    let app = axum::Router::new().route("/hooks/{path}", axum::routing::post(hook)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, base)
}

async fn webhook_app(backend: Backend, disable_after: Duration) -> App {
    spawn_app_with(backend, |c| {
        c.notifiers = vec!["log".into(), "webhook".into()];
        // The receiver is on loopback; nothing in these tests goes anywhere else.
        c.webhook_allow_private = true;
        c.webhook_disable_after = disable_after;
        c.outbox.poll_interval = Duration::from_millis(20);
        c.outbox.backoff_base = Duration::from_millis(100);
        c.outbox.backoff_cap = Duration::from_millis(400);
        c.outbox.max_attempts = 50;
    })
    .await
}

async fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn call(
    app: &App,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    read(req.send().await.unwrap()).await
}

fn verifies(secret: &str, call: &Call) -> bool {
    verify_signature(secret.as_bytes(), &call.signature, &call.body, Duration::from_secs(300)).is_ok()
}

async fn staff_manage_endpoints_that_receive_signed_filtered_events(backend: Backend) {
    let (r, hooks) = receiver().await;
    let app = webhook_app(backend, Duration::from_secs(3 * 86_400)).await;
    let alice = app.user("alice").await;
    let staff = app.staff("root").await;
    let post = reqwest::Method::POST;

    // Only staff manage endpoints; bad URLs and unknown types are named.
    let a_body = json!({"url": format!("{hooks}/a"), "events": ["som.order.created"], "description": "orders"});
    let (status, body) = call(&app, post.clone(), "/webhook-endpoints/", Some(&alice), Some(a_body.clone())).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = call(&app, post.clone(), "/webhook-endpoints/", None, Some(a_body.clone())).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    for (bad, field) in [
        (json!({"url": "ftp://example.com/x", "events": ["*"]}), "url"),
        (json!({"url": "http://example.com/x", "events": ["*"]}), "url"),
        (json!({"url": format!("{hooks}/a"), "events": ["order_created"]}), "events"),
        (json!({"url": format!("{hooks}/a"), "events": []}), "events"),
        (json!({"url": format!("{hooks}/a"), "events": ["*", "som.order.created"]}), "events"),
    ] {
        let (status, body) = call(&app, post.clone(), "/webhook-endpoints/", Some(&staff), Some(bad.clone())).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST);
        assert!(body["errors"][field].is_array(), "{bad}: {body}");
    }
    let (status, a) = call(&app, post.clone(), "/webhook-endpoints/", Some(&staff), Some(a_body)).await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    let a_secret = a["secret"].as_str().unwrap().to_owned();
    assert!(a_secret.starts_with("whsec_") && a_secret.len() > 40, "{a}");
    assert_eq!(a["events"], json!(["som.order.created"]));
    let (status, b) = call(
        &app,
        post.clone(),
        "/webhook-endpoints/",
        Some(&staff),
        Some(json!({"url": format!("{hooks}/b"), "events": ["*"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let b_secret = b["secret"].as_str().unwrap().to_owned();
    let (a_id, b_id) = (a["id"].as_i64().unwrap(), b["id"].as_i64().unwrap());

    // Secrets are shown once.
    let (status, list) = app.get("/webhook-endpoints/", Some(&staff)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(list[0].get("secret").is_none() && list[1].get("secret").is_none(), "{list}");
    let (status, one) = app.get(&format!("/webhook-endpoints/{a_id}/"), Some(&staff)).await;
    assert_eq!((status, one["url"].as_str()), (StatusCode::OK, Some(format!("{hooks}/a").as_str())), "{one}");
    assert!(one.get("secret").is_none());
    let (status, body) = app.get(&format!("/webhook-endpoints/{a_id}/"), Some(&alice)).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = app.get("/webhook-endpoints/999999/", Some(&staff)).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);

    // A paid order: A (orders only) gets one event, B (everything) two.
    let dispatcher = app.som.spawn_dispatcher();
    let (order, payment) = app.paid(&alice, "mock_success").await;
    wait_until(|| r.calls("a").len() == 1 && r.calls("b").len() == 2, "the first events").await;
    let a_call = &r.calls("a")[0];
    assert!(verifies(&a_secret, a_call), "A's calls are signed with A's secret");
    assert!(!verifies(&b_secret, a_call), "and not with B's");
    let event = &a_call.event;
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "som.order.created");
    assert_eq!(event["source"], "/som");
    assert_eq!(event["id"], format!("order_created:order:{order}"));
    assert_eq!(event["subject"], format!("orders/{order}"));
    assert_eq!(event["data"]["order_id"], order);
    assert_eq!(event["data"]["amount"], "250.00");
    assert!(event["data"].get("email").is_none(), "no personal data beyond the username: {event}");
    let b_types: Vec<String> = r.calls("b").iter().map(|c| c.event["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(b_types, vec!["som.order.created", "som.payment.succeeded"]);
    assert!(r.calls("b").iter().all(|c| verifies(&b_secret, c)));
    assert_eq!(r.calls("b")[1].event["data"]["payment_id"], payment);

    // Each attempt is logged.
    let deliveries = format!("/webhook-endpoints/{a_id}/deliveries/");
    let (status, log) = app.get(&deliveries, Some(&staff)).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    let d = &log[0];
    assert_eq!((d["status"].as_str(), d["response_status"].as_i64()), (Some("succeeded"), Some(200)), "{d}");
    assert_eq!(d["response_body"], "thanks from a");
    assert_eq!((d["event_type"].as_str(), d["attempt"].as_i64()), (Some("som.order.created"), Some(1)));
    assert!(d["latency_ms"].is_u64() && d["error"].is_null(), "{d}");
    let (status, log) = app.get(&format!("{deliveries}?status=failed"), Some(&staff)).await;
    assert_eq!((status, log.as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{log}");
    let (status, log) =
        app.get(&format!("/webhook-endpoints/{b_id}/deliveries/?event_type=som.payment.succeeded"), Some(&staff)).await;
    assert_eq!((status, log.as_array().map(Vec::len)), (StatusCode::OK, Some(1)), "{log}");
    for bad in ["?status=maybe", "?event_type=som.nope", "?limit=0", "?cursor=x"] {
        let (status, body) = app.get(&format!("{deliveries}{bad}"), Some(&staff)).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST);
    }
    let (status, body) = app.get(&deliveries, Some(&alice)).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);

    // Rotation: during the overlap both secrets verify; the new one is shown once.
    let rotate = format!("/webhook-endpoints/{b_id}/rotate-secret/");
    let (status, body) = call(&app, post.clone(), &rotate, Some(&staff), Some(json!({"overlap": 604801}))).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    let (status, rotated) = call(&app, post.clone(), &rotate, Some(&staff), Some(json!({"overlap": 3600}))).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let b_new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(b_new, b_secret);
    assert!(rotated["previous_secret_expires_at"].is_string(), "{rotated}");
    app.order(&alice).await;
    wait_until(|| r.calls("b").len() == 3, "an event after the rotation").await;
    let after = &r.calls("b")[2];
    assert!(
        verifies(&b_new, after) && verifies(&b_secret, after),
        "both secrets sign during the overlap: {}",
        after.signature
    );
    assert_eq!(after.signature.matches("v1=").count(), 2);
    // A second rotation while the first one's overlap runs would cut it short: refused,
    // unless it drops every old secret at once.
    let (status, body) = call(&app, post.clone(), &rotate, Some(&staff), Some(json!({"overlap": 60}))).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    // With no overlap the old secret stops at once.
    let (status, rotated) = call(&app, post.clone(), &rotate, Some(&staff), Some(json!({"overlap": 0}))).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let b_last = rotated["secret"].as_str().unwrap().to_owned();
    app.order(&alice).await;
    wait_until(|| r.calls("b").len() == 4, "an event after the second rotation").await;
    let last = &r.calls("b")[3];
    assert!(verifies(&b_last, last) && !verifies(&b_new, last), "{}", last.signature);

    // Redelivery: staff only; to one endpoint or every subscribed one; unknown events are 404.
    let first_event = format!("order_created:order:{order}");
    let redeliver = format!("/events/{first_event}/redeliver/");
    let (status, body) = call(&app, post.clone(), &redeliver, Some(&alice), None).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (status, body) =
        call(&app, post.clone(), "/events/order_created:order:999999/redeliver/", Some(&staff), None).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = call(&app, post.clone(), &redeliver, Some(&staff), Some(json!({"endpoint_id": 999999}))).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let paid_event = format!("/events/payment_succeeded:payment:{payment}/redeliver/");
    let (status, body) = call(&app, post.clone(), &paid_event, Some(&staff), Some(json!({"endpoint_id": a_id}))).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    assert!(body["detail"].as_str().unwrap().contains("does not receive"), "A is not subscribed: {body}");
    let (status, queued) = call(&app, post.clone(), &redeliver, Some(&staff), Some(json!({"endpoint_id": a_id}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["endpoints"], json!([a_id]));
    // A had the three orders' events; the fourth call is the first event again.
    wait_until(|| r.calls("a").len() == 4, "the redelivery to A").await;
    assert_eq!(r.calls("a")[3].event["id"], first_event, "the same event, recognisable by its id");
    assert_eq!(r.calls("a")[3].event["time"], r.calls("a")[0].event["time"], "and its original time");
    assert!(verifies(&a_secret, &r.calls("a")[3]));
    let (status, queued) = call(&app, post.clone(), &redeliver, Some(&staff), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["endpoints"], json!([a_id, b_id]), "every endpoint subscribed to its type");
    wait_until(|| r.calls("a").len() == 5 && r.calls("b").len() == 5, "the redelivery to both").await;

    // PATCH: a new filter, disabling (nothing arrives), enabling again.
    let endpoint = format!("/webhook-endpoints/{a_id}/");
    let patch = reqwest::Method::PATCH;
    let (status, body) =
        call(&app, patch.clone(), &endpoint, Some(&staff), Some(json!({"events": ["som.nope"]}))).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) =
        call(&app, patch.clone(), &endpoint, Some(&staff), Some(json!({"enabled": false, "description": null}))).await;
    assert_eq!(
        (status, body["enabled"].as_bool(), &body["description"]),
        (StatusCode::OK, Some(false), &Value::Null),
        "{body}"
    );
    app.order(&alice).await;
    wait_until(|| r.calls("b").len() == 6, "B's event").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.calls("a").len(), 5, "a disabled endpoint receives nothing");
    let (status, body) = call(&app, post.clone(), &redeliver, Some(&staff), Some(json!({"endpoint_id": a_id}))).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    let (status, body) = call(&app, patch.clone(), &endpoint, Some(&staff), Some(json!({"enabled": true}))).await;
    assert_eq!((status, body["enabled"].as_bool()), (StatusCode::OK, Some(true)), "{body}");

    // DELETE: gone, with its log.
    let b_endpoint = format!("/webhook-endpoints/{b_id}/");
    let (status, body) = call(&app, reqwest::Method::DELETE, &b_endpoint, Some(&alice), None).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (status, _) = call(&app, reqwest::Method::DELETE, &b_endpoint, Some(&staff), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get(&b_endpoint, Some(&staff)).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = call(&app, reqwest::Method::DELETE, &b_endpoint, Some(&staff), None).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    dispatcher.shutdown().await;
}

async fn failing_and_redirecting_endpoints_are_logged_and_a_failing_one_is_disabled(backend: Backend) {
    let (r, hooks) = receiver().await;
    let app = webhook_app(backend, Duration::from_secs(1)).await;
    let alice = app.user("alice").await;
    let staff = app.staff("root").await;
    let post = reqwest::Method::POST;
    let make = |path: &str| json!({"url": format!("{hooks}/{path}"), "events": ["som.order.created"]});
    let (_, fail) = call(&app, post.clone(), "/webhook-endpoints/", Some(&staff), Some(make("fail"))).await;
    let (_, redirect) = call(&app, post.clone(), "/webhook-endpoints/", Some(&staff), Some(make("redirect"))).await;
    let (fail_id, redirect_id) = (fail["id"].as_i64().unwrap(), redirect["id"].as_i64().unwrap());

    let dispatcher = app.som.spawn_dispatcher();
    app.order(&alice).await;
    // The redirect is an answer, never followed: /ok is not called, and it is not retried.
    wait_until(|| r.calls("redirect").len() == 1, "the redirecting endpoint's call").await;
    // The failing endpoint is retried until it has failed for a second, then disabled.
    let endpoint = format!("/webhook-endpoints/{fail_id}/");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let disabled = loop {
        let (_, e) = app.get(&endpoint, Some(&staff)).await;
        if e["enabled"] == false {
            break e;
        }
        assert!(tokio::time::Instant::now() < deadline, "the failing endpoint was never disabled: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(disabled["disabled_reason"].as_str().unwrap().contains("failing continuously"), "{disabled}");
    assert!(disabled["failing_since"].is_string(), "{disabled}");
    let attempts = r.calls("fail").len();
    assert!(attempts >= 2, "retried before being disabled: {attempts}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.calls("fail").len(), attempts, "nothing is sent to a disabled endpoint");
    assert!(r.calls("ok").is_empty(), "no redirect was followed");

    let (status, log) = app.get(&format!("{endpoint}deliveries/?status=failed"), Some(&staff)).await;
    assert_eq!(status, StatusCode::OK);
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), attempts, "every attempt is logged");
    assert_eq!((log[0]["response_status"].as_i64(), log[0]["response_body"].as_str()), (Some(500), Some("broken")));
    assert!(log[0]["attempt"].as_i64().unwrap() > log[log.len() - 1]["attempt"].as_i64().unwrap(), "newest first");
    let (_, log) = app.get(&format!("/webhook-endpoints/{redirect_id}/deliveries/"), Some(&staff)).await;
    assert_eq!(log.as_array().unwrap().len(), 1, "a redirect is permanent: {log}");
    assert_eq!(log[0]["response_status"], 302);
    assert!(log[0]["error"].as_str().unwrap().contains("redirects are not followed"), "{log}");

    // Staff are told, once, on their own channels.
    let rows = app.som.notifications(Caller::System, None, None, 1000).await.unwrap();
    let alerts: Vec<_> = rows.iter().filter(|n| n.kind == EventKind::StaffAlert).collect();
    assert_eq!(alerts.len(), 1, "one alert for the one staff account on the log channel: {alerts:?}");
    assert_eq!(alerts[0].channel, "log");
    assert!(alerts[0].message.text.contains(&format!("webhook endpoint {fail_id}")), "{}", alerts[0].message.text);
    assert!(rows.iter().all(|n| n.status != NotificationStatus::Pending || n.channel.starts_with("webhook:")));

    // Enabling it again forgets the failures.
    let (status, e) = call(&app, reqwest::Method::PATCH, &endpoint, Some(&staff), Some(json!({"enabled": true}))).await;
    assert_eq!(
        (status, &e["failing_since"], &e["disabled_reason"]),
        (StatusCode::OK, &Value::Null, &Value::Null),
        "{e}"
    );
    dispatcher.shutdown().await;
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed_and_delivery_can_be_off() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.notifiers = vec!["log".into(), "webhook".into()]).await;
    let staff = app.staff("root").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[fd00::1]/hook",
        "http://localhost:9/hook",
    ] {
        let (status, body) = app.post("/webhook-endpoints/", Some(&staff), json!({"url": url, "events": ["*"]})).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST);
        assert!(
            body["errors"]["url"][0].as_str().unwrap().contains("refused") || url.starts_with("http:"),
            "{url}: {body}"
        );
    }
    // Without the webhook channel, endpoints would receive nothing: refused with the reason.
    let off = spawn_app_with(Backend::Sqlite, |c| c.notifiers = vec!["log".into()]).await;
    let staff = off.staff("root").await;
    let (status, body) = off
        .post("/webhook-endpoints/", Some(&staff), json!({"url": "https://hooks.example.com/som", "events": ["*"]}))
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    assert!(body["detail"].as_str().unwrap().contains("SOM_NOTIFIER"), "{body}");
}

async fn the_console_makes_endpoints_shows_their_log_and_redelivers(backend: Backend) {
    use super::console::{get, post, sign_in, with};
    use reqwest::header::LOCATION;
    let (r, hooks) = receiver().await;
    let app = webhook_app(backend, Duration::from_secs(3 * 86_400)).await;
    app.staff("boss").await;
    let alice = app.user("alice").await;
    let boss = sign_in(&app, "boss").await.1.unwrap();
    let csrf = som_server::console::csrf_token(&boss);

    // Without the form's token nothing is made.
    let url = format!("{hooks}/console");
    let fields =
        [("url", url.as_str()), ("events", "som.order.created, som.payment.succeeded"), ("description", "shop")];
    let forged = post(&app, "/console/webhooks", Some(&boss), &fields).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(app.som.webhook_endpoints(Caller::System, None, None).await.unwrap().items.is_empty());

    // Made: the secret is on the answer's page, once.
    let made = post(&app, "/console/webhooks", Some(&boss), &with(&fields, &csrf)).await;
    assert_eq!(made.status(), StatusCode::OK);
    let page = made.text().await.unwrap();
    let endpoints = app.som.webhook_endpoints(Caller::System, None, None).await.unwrap().items;
    assert_eq!(endpoints.len(), 1);
    let e = &endpoints[0];
    assert!(page.contains(&e.secret), "the secret is shown: {page}");
    assert_eq!(e.events.names(), vec!["som.order.created", "som.payment.succeeded"]);
    let list = get(&app, "/console/webhooks", Some(&boss)).await.text().await.unwrap();
    assert!(list.contains(&url) && !list.contains(&e.secret), "listed without its secret: {list}");
    // A refused URL comes back as a message.
    let bad = post(&app, "/console/webhooks", Some(&boss), &with(&[("url", "ftp://x"), ("events", "*")], &csrf)).await;
    assert_eq!(bad.status(), StatusCode::SEE_OTHER);

    // Its log, and a redelivery from it.
    let dispatcher = app.som.spawn_dispatcher();
    let order = app.order(&alice).await["id"].as_i64().unwrap();
    wait_until(|| r.calls("console").len() == 1, "the console endpoint's event").await;
    let path = format!("/console/webhooks/{}", e.id);
    let mut log = String::new();
    for _ in 0..100 {
        log = get(&app, &path, Some(&boss)).await.text().await.unwrap();
        if log.contains("thanks from console") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log.contains(&format!("order_created:order:{order}")) && log.contains("thanks from console"), "{log}");
    let event = format!("order_created:order:{order}");
    let resp =
        post(&app, &format!("{path}/redeliver"), Some(&boss), &with(&[("event_id", event.as_str())], &csrf)).await;
    assert_eq!((resp.status(), resp.headers()[LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, path.as_str()));
    wait_until(|| r.calls("console").len() == 2, "the redelivered event").await;

    // Disable, rotate (the new secret on the answer), delete.
    let resp = post(&app, &format!("{path}/enabled"), Some(&boss), &with(&[("value", "disable")], &csrf)).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(!app.som.webhook_endpoint(Caller::System, e.id).await.unwrap().enabled);
    let rotated = post(&app, &format!("{path}/rotate"), Some(&boss), &with(&[], &csrf)).await.text().await.unwrap();
    let now = app.som.webhook_endpoint(Caller::System, e.id).await.unwrap();
    assert!(now.secret != e.secret && rotated.contains(&now.secret), "{rotated}");
    let resp = post(&app, &format!("{path}/delete"), Some(&boss), &with(&[], &csrf)).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(app.som.webhook_endpoints(Caller::System, None, None).await.unwrap().items.is_empty());
    dispatcher.shutdown().await;
}
