//! Authorise now, capture later over HTTP: the capture and void endpoints with every refusal,
//! and the whole flow against localstripe (manual capture, `amount_to_capture`, cancel).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use som_core::config::Secret;
use som_core::testing::{Backend, LocalStripe, TEST_SECRET_KEY};

use super::http::{App, assert_problem, read, spawn_app_with};

som_core::on_both_backends!(
    capture_and_void_over_http_refuse_what_they_must,
    manual_capture_at_stripe_takes_part_and_void_cancels,
);

/// An order of 250.00 by `token`'s user paid with manual capture and confirmed: (order, payment).
async fn authorised(app: &App, token: &str, method: &str) -> (i64, Value) {
    let order = app.order(token).await["id"].as_i64().unwrap();
    let body = json!({"order_id": order, "method": method, "capture": "manual"});
    let (status, p) = app.post("/payments/initiate/", Some(token), body).await;
    assert_eq!((status, p["capture_method"].as_str()), (StatusCode::OK, Some("manual")), "{p}");
    let (status, p) = app.post("/payments/confirm/", Some(token), json!({"payment_id": p["id"]})).await;
    assert_eq!((status, p["status"].as_str()), (StatusCode::OK, Some("AUTHORIZED")), "{p}");
    (order, p)
}

async fn order_status(app: &App, token: &str, order: i64) -> String {
    app.get(&format!("/orders/{order}/"), Some(token)).await.1["status"].as_str().unwrap().to_owned()
}

/// POST without any body (capture everything), with an optional Idempotency-Key.
async fn post_empty(app: &App, path: &str, token: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = app.client.post(app.url(path)).bearer_auth(token);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    read(request.send().await.unwrap()).await
}

async fn capture_and_void_over_http_refuse_what_they_must(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let staff = app.staff("root").await;

    // The capture method is checked like any field.
    let order = app.order(&alice).await["id"].as_i64().unwrap();
    let (status, p) =
        app.post("/payments/initiate/", Some(&alice), json!({"order_id": order, "capture": "later"})).await;
    assert_problem(status, &p, StatusCode::BAD_REQUEST);
    assert!(p["errors"]["capture"].is_array(), "{p}");

    let (order, p) = authorised(&app, &alice, "mock_success").await;
    assert_eq!(order_status(&app, &alice, order).await, "AUTHORIZED");
    assert_eq!((p["authorized_amount"].as_str(), p["captured_amount"].as_str()), (Some("250.00"), Some("0.00")));
    assert!(p["authorization_expires_at"].is_string(), "{p}");
    let capture = format!("/payments/{}/capture/", p["id"]);
    let void = format!("/payments/{}/void/", p["id"]);

    // Who may: staff capture; the owner is told no; anyone else does not learn it exists.
    let (status, body) = app.post(&capture, Some(&alice), json!({})).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = app.post(&capture, Some(&mallory), json!({})).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app.post(&void, Some(&mallory), json!({})).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app.post(&capture, None, json!({})).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    let (status, body) = app.post("/payments/999999/capture/", Some(&staff), json!({})).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    // Bad amounts and bodies name the field.
    for bad in [json!({"amount": "250.01"}), json!({"amount": "0"}), json!({"amount": "x"})] {
        let (status, body) = app.post(&capture, Some(&staff), bad.clone()).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST);
        assert!(body["errors"]["amount"].is_array(), "{bad}: {body}");
    }
    let (status, body) = app.post(&capture, Some(&staff), json!({"amount": "1.00", "surprise": 1})).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);

    // Part of it, once; the same key replays.
    let keyed = |body: Value| {
        app.client.post(app.url(&capture)).bearer_auth(&staff).header("Idempotency-Key", "cap-1").json(&body).send()
    };
    let (status, done) = read(keyed(json!({"amount": 80})).await.unwrap()).await;
    assert_eq!((status, done["status"].as_str()), (StatusCode::OK, Some("SUCCESS")), "{done}");
    assert_eq!((done["captured_amount"].as_str(), done["amount"].as_str()), (Some("80.00"), Some("250.00")));
    assert!(done["authorization_expires_at"].is_null(), "{done}");
    let (status, again) = read(keyed(json!({"amount": 80})).await.unwrap()).await;
    assert_eq!((status, &again["captured_amount"]), (StatusCode::OK, &done["captured_amount"]));
    let (status, body) = post_empty(&app, &capture, &staff, None).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    let (status, body) = app.post(&void, Some(&staff), json!({})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    assert_eq!(order_status(&app, &alice, order).await, "PAID");
    // Refunds are bounded by what was captured.
    let refunds = format!("/payments/{}/refunds/", p["id"]);
    let (status, body) = app.post(&refunds, Some(&staff), json!({"amount": "80.01"})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    let (status, body) = app.post(&refunds, Some(&staff), json!({})).await;
    assert_eq!((status, body["amount"].as_str()), (StatusCode::CREATED, Some("80.00")), "{body}");
    assert_eq!(order_status(&app, &alice, order).await, "REFUNDED");

    // Everything, with no body at all.
    let (_, q) = authorised(&app, &alice, "mock_success").await;
    let (status, all) = post_empty(&app, &format!("/payments/{}/capture/", q["id"]), &staff, None).await;
    assert_eq!((status, all["captured_amount"].as_str()), (StatusCode::OK, Some("250.00")), "{all}");

    // A declined capture is 402 and leaves the authorisation; its owner may then release it.
    let (order, d) = authorised(&app, &alice, "mock_capture_decline").await;
    let (status, body) = app.post(&format!("/payments/{}/capture/", d["id"]), Some(&staff), json!({})).await;
    assert_problem(status, &body, StatusCode::PAYMENT_REQUIRED);
    let void = format!("/payments/{}/void/", d["id"]);
    let (status, voided) = post_empty(&app, &void, &alice, Some("void-1")).await;
    assert_eq!((status, voided["status"].as_str()), (StatusCode::OK, Some("VOIDED")), "{voided}");
    assert_eq!(order_status(&app, &alice, order).await, "CANCELLED");
    let (status, again) = post_empty(&app, &void, &alice, Some("void-1")).await;
    assert_eq!((status, again["status"].as_str()), (StatusCode::OK, Some("VOIDED")));
    let (status, body) = post_empty(&app, &void, &alice, None).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    let (status, body) = app.post(&format!("/payments/{}/capture/", d["id"]), Some(&staff), json!({})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);

    // Staff see what is held and for how long.
    let (_, held) = authorised(&app, &alice, "mock_success").await;
    let (status, overview) = app.get("/overview/", Some(&staff)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(overview["payments_authorized"], 1, "{overview}");
    assert_eq!(overview["authorizations_expiring"][0]["payment"], held["id"], "{overview}");

    // The document describes both endpoints with every answer.
    let (_, doc) = read(app.client.get(format!("{}/api/openapi.json", app.base)).send().await.unwrap()).await;
    let capture = &doc["paths"]["/api/v1/payments/{id}/capture/"]["post"]["responses"];
    for code in ["200", "400", "402", "403", "404", "409", "503"] {
        assert!(capture[code].is_object(), "capture {code}");
    }
    assert!(doc["paths"]["/api/v1/payments/{id}/void/"]["post"]["responses"]["409"].is_object());
}

async fn manual_capture_at_stripe_takes_part_and_void_cancels(backend: Backend) {
    let Some(stripe) = LocalStripe::start() else { return };
    let api_base = stripe.api_base();
    let app = spawn_app_with(backend, |c| {
        c.payment_provider = "stripe".into();
        c.stripe_secret_key = Some(Secret::new(TEST_SECRET_KEY));
        c.stripe_api_base = api_base;
        c.stripe_timeout = Duration::from_secs(5);
    })
    .await;
    let alice = app.user("alice").await;
    let staff = app.staff("root").await;

    let (order, p) = authorised(&app, &alice, "pm_card_visa").await;
    let intent = p["provider_payment_id"].as_str().unwrap().to_owned();
    let (_, pi) = stripe.call(Method::GET, &format!("/v1/payment_intents/{intent}"), &[]).await;
    assert_eq!(
        (pi["status"].as_str(), pi["capture_method"].as_str()),
        (Some("requires_capture"), Some("manual")),
        "{pi}"
    );

    let (status, done) =
        app.post(&format!("/payments/{}/capture/", p["id"]), Some(&staff), json!({"amount": "180.00"})).await;
    assert_eq!((status, done["captured_amount"].as_str()), (StatusCode::OK, Some("180.00")), "{done}");
    assert_eq!(order_status(&app, &alice, order).await, "PAID");
    let (_, pi) = stripe.call(Method::GET, &format!("/v1/payment_intents/{intent}"), &[]).await;
    assert_eq!(pi["status"].as_str(), Some("succeeded"), "{pi}");
    // Stripe reports `amount_received`; localstripe captures the whole charge and refunds
    // what was not captured, so the money it kept is the charge less that.
    let received = pi["amount_received"].as_i64().unwrap_or_else(|| {
        let charge = &pi["latest_charge"];
        charge["amount"].as_i64().unwrap() - charge["amount_refunded"].as_i64().unwrap()
    });
    assert_eq!(received, 18000, "{pi}");

    // Refunded, within what was captured.
    let refunds = format!("/payments/{}/refunds/", p["id"]);
    let (status, body) = app.post(&refunds, Some(&staff), json!({"amount": "180.01"})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    let (status, refund) = app.post(&refunds, Some(&staff), json!({})).await;
    assert_eq!((status, refund["amount"].as_str()), (StatusCode::CREATED, Some("180.00")), "{refund}");
    let (_, list) = stripe.call(Method::GET, &format!("/v1/refunds?payment_intent={intent}"), &[]).await;
    // SOM's refund; localstripe lists its release of the uncaptured 70.00 as a refund too.
    let amounts: Vec<i64> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["metadata"]["som_refund"].is_string())
        .map(|r| r["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![18000], "{list}");
    assert_eq!(order_status(&app, &alice, order).await, "REFUNDED");

    // Another is released: canceled at Stripe, the order cancelled here.
    let (order, v) = authorised(&app, &alice, "pm_card_visa").await;
    let (status, voided) = app.post(&format!("/payments/{}/void/", v["id"]), Some(&staff), json!({})).await;
    assert_eq!((status, voided["status"].as_str()), (StatusCode::OK, Some("VOIDED")), "{voided}");
    let (_, pi) = stripe
        .call(Method::GET, &format!("/v1/payment_intents/{}", v["provider_payment_id"].as_str().unwrap()), &[])
        .await;
    assert_eq!(pi["status"].as_str(), Some("canceled"), "{pi}");
    assert_eq!(order_status(&app, &alice, order).await, "CANCELLED");
    let (status, body) = app.post(&format!("/payments/{}/capture/", v["id"]), Some(&staff), json!({})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
}
