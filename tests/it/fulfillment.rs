//! Fulfilment and returns over HTTP: every route with the owner, a stranger (404) and staff;
//! over-fulfilment and over-return refused; shipping with tracking and capture on shipment;
//! a received return refunded once; a declined refund left to try again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use som_core::testing::Backend;

use super::http::{App, assert_problem, read, spawn_app_with};

som_core::on_both_backends!(
    fulfilment_over_http_ships_delivers_and_refuses_what_it_must,
    returns_over_http_end_in_one_refund,
    shipping_an_authorised_order_can_capture_what_it_ships,
);

fn item(order: &Value, index: usize) -> i64 {
    order["items"][index]["id"].as_i64().unwrap()
}

async fn order_json(app: &App, token: &str, order: i64) -> Value {
    let (status, body) = app.get(&format!("/orders/{order}/"), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// POST without a body.
async fn post_empty(app: &App, path: &str, token: &str) -> (StatusCode, Value) {
    read(app.client.post(app.url(path)).bearer_auth(token).send().await.unwrap()).await
}

async fn fulfilment_over_http_ships_delivers_and_refuses_what_it_must(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let staff = app.staff("root").await;

    // Items have ids in every order representation; a new order is UNFULFILLED.
    let unpaid = app.order(&alice).await;
    assert_eq!(unpaid["fulfillment_status"], "UNFULFILLED", "{unpaid}");
    let (widget, gadget) = (item(&unpaid, 0), item(&unpaid, 1));
    assert!(widget > 0 && gadget > widget, "{unpaid}");
    let fulfil_unpaid = format!("/orders/{}/fulfillments/", unpaid["id"]);
    let (status, body) = app.post(&fulfil_unpaid, Some(&staff), json!({})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);

    let (order, _) = app.paid(&alice, "mock_success").await;
    let o = order_json(&app, &alice, order).await;
    let (widget, gadget) = (item(&o, 0), item(&o, 1));
    let (_, list) = app.get("/orders/", Some(&alice)).await;
    assert_eq!(list[0]["items"][0]["id"], widget, "{list}");
    let fulfil = format!("/orders/{order}/fulfillments/");

    // Who may: staff fulfil; the owner is told no; a stranger does not learn the order exists.
    let one_widget = json!({"items": [{"item_id": widget, "quantity": 1}], "carrier": "UPS"});
    let (status, body) = app.post(&fulfil, Some(&alice), one_widget.clone()).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = app.post(&fulfil, Some(&mallory), one_widget.clone()).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app.post(&fulfil, None, one_widget.clone()).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    // Lines that are not the order's, or bad quantities, name their field; too many is 409.
    let (status, body) =
        app.post(&fulfil, Some(&staff), json!({"items": [{"item_id": item(&unpaid, 0), "quantity": 1}]})).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["errors"]["items[0].item_id"].is_array(), "another order's item: {body}");
    for (bad, field) in [
        (json!({"items": [{"item_id": widget, "quantity": 0}]}), "items[0].quantity"),
        (json!({"items": []}), "items"),
        (json!({"tracking_url": "javascript:alert(1)"}), "tracking_url"),
    ] {
        let (status, body) = app.post(&fulfil, Some(&staff), bad.clone()).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST);
        assert!(body["errors"][field].is_array(), "{bad}: {body}");
    }
    let (status, body) = app.post(&fulfil, Some(&staff), json!({"items": [{"item_id": widget, "quantity": 3}]})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    let (status, body) = app.post(&fulfil, Some(&staff), json!({"items": [{"item_id": "x", "quantity": 1}]})).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);

    let (status, first) = app.post(&fulfil, Some(&staff), one_widget).await;
    assert_eq!((status, first["status"].as_str()), (StatusCode::CREATED, Some("PENDING")), "{first}");
    assert_eq!((first["carrier"].as_str(), first["items"][0]["item_id"].as_i64()), (Some("UPS"), Some(widget)));
    // Everything left, with no body at all.
    let (status, rest) = post_empty(&app, &fulfil, &staff).await;
    assert_eq!(status, StatusCode::CREATED, "{rest}");
    assert_eq!(rest["items"], json!([{"item_id": widget, "quantity": 1}, {"item_id": gadget, "quantity": 1}]));
    let (status, body) = post_empty(&app, &fulfil, &staff).await;
    assert_problem(status, &body, StatusCode::CONFLICT);

    // The owner follows them; a stranger cannot.
    let (status, mine) = app.get(&fulfil, Some(&alice)).await;
    assert_eq!((status, mine.as_array().map(Vec::len)), (StatusCode::OK, Some(2)), "{mine}");
    let (status, body) = app.get(&fulfil, Some(&mallory)).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let one = format!("/fulfillments/{}/", first["id"]);
    assert_eq!(app.get(&one, Some(&alice)).await.0, StatusCode::OK);
    let (status, body) = app.get(&one, Some(&mallory)).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    // Staff see what is to ship.
    let (status, to_ship) = app.get("/fulfillments/?status=PENDING", Some(&staff)).await;
    assert_eq!((status, to_ship.as_array().map(Vec::len)), (StatusCode::OK, Some(2)), "{to_ship}");
    let (status, body) = app.get("/fulfillments/", Some(&alice)).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = app.get("/fulfillments/?status=LOST", Some(&staff)).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);

    // Ship with tracking; the owner is told with it.
    let ship = format!("/fulfillments/{}/ship/", first["id"]);
    let (status, body) = app.post(&ship, Some(&alice), json!({})).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let tracking = json!({"tracking_number": "1Z999", "tracking_url": "https://ups.example/track/1Z999"});
    let (status, shipped) = app.post(&ship, Some(&staff), tracking.clone()).await;
    assert_eq!((status, shipped["status"].as_str()), (StatusCode::OK, Some("SHIPPED")), "{shipped}");
    assert_eq!((shipped["carrier"].as_str(), shipped["tracking_number"].as_str()), (Some("UPS"), Some("1Z999")));
    assert!(shipped["shipped_at"].is_string());
    let (status, body) = app.post(&ship, Some(&staff), tracking).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    let o = order_json(&app, &alice, order).await;
    assert_eq!((o["status"].as_str(), o["fulfillment_status"].as_str()), (Some("PAID"), Some("PARTIALLY_FULFILLED")));
    let (status, body) = post_empty(&app, &format!("/fulfillments/{}/cancel/", first["id"]), &staff).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    let deliver = format!("/fulfillments/{}/deliver/", rest["id"]);
    let (status, body) = post_empty(&app, &deliver, &staff).await;
    assert_problem(status, &body, StatusCode::CONFLICT);

    // The rest is cancelled, fulfilled again, shipped and everything delivered.
    let (status, cancelled) = post_empty(&app, &format!("/fulfillments/{}/cancel/", rest["id"]), &staff).await;
    assert_eq!((status, cancelled["status"].as_str()), (StatusCode::OK, Some("CANCELLED")), "{cancelled}");
    let (_, again) = post_empty(&app, &fulfil, &staff).await;
    post_empty(&app, &format!("/fulfillments/{}/ship/", again["id"]), &staff).await;
    assert_eq!(order_json(&app, &alice, order).await["fulfillment_status"], "FULFILLED");
    for f in [&first, &again] {
        let (status, done) = post_empty(&app, &format!("/fulfillments/{}/deliver/", f["id"]), &staff).await;
        assert_eq!((status, done["status"].as_str()), (StatusCode::OK, Some("DELIVERED")), "{done}");
    }
    assert_eq!(order_json(&app, &alice, order).await["fulfillment_status"], "DELIVERED");
    let (status, body) = post_empty(&app, "/fulfillments/999999/deliver/", &staff).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);

    // Every change is in the order's trail; shipping and delivery were notified.
    let (_, history) = app.get(&format!("/orders/{order}/history/"), Some(&alice)).await;
    let reasons: Vec<&str> = history.as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("shipped") && r.contains("1Z999")), "{reasons:?}");
    let (_, sent) = app.get(&format!("/notifications/?order={order}"), Some(&staff)).await;
    let kinds: Vec<&str> = sent.as_array().unwrap().iter().filter_map(|n| n["kind"].as_str()).collect();
    assert!(kinds.contains(&"fulfillment_shipped") && kinds.contains(&"fulfillment_delivered"), "{kinds:?}");

    // The document describes every route with its answers.
    let (_, doc) = read(app.client.get(format!("{}/api/openapi.json", app.base)).send().await.unwrap()).await;
    let create = &doc["paths"]["/api/v1/orders/{id}/fulfillments/"]["post"]["responses"];
    for code in ["201", "400", "401", "403", "404", "409"] {
        assert!(create[code].is_object(), "create {code}");
    }
    for path in ["/api/v1/fulfillments/{id}/ship/", "/api/v1/returns/{id}/receive/", "/api/v1/orders/{id}/returns/"] {
        assert!(doc["paths"][path]["post"].is_object(), "{path}");
    }
    assert!(doc["components"]["schemas"]["OrderItemResponse"]["properties"]["id"].is_object());
}

/// A paid order of `token`'s user, all of it delivered: (order JSON, payment id).
async fn delivered(app: &App, token: &str, staff: &str, method: &str) -> (Value, i64) {
    let (order, payment) = app.paid(token, method).await;
    let (status, f) = post_empty(app, &format!("/orders/{order}/fulfillments/"), staff).await;
    assert_eq!(status, StatusCode::CREATED, "{f}");
    post_empty(app, &format!("/fulfillments/{}/ship/", f["id"]), staff).await;
    post_empty(app, &format!("/fulfillments/{}/deliver/", f["id"]), staff).await;
    (order_json(app, token, order).await, payment)
}

async fn returns_over_http_end_in_one_refund(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let staff = app.staff("root").await;

    // Nothing delivered, nothing to return.
    let (early, _) = app.paid(&alice, "mock_success").await;
    let widget = item(&order_json(&app, &alice, early).await, 0);
    let body = json!({"items": [{"item_id": widget, "quantity": 1}]});
    let (status, problem) = app.post(&format!("/orders/{early}/returns/"), Some(&alice), body).await;
    assert_problem(status, &problem, StatusCode::CONFLICT);

    let (o, payment) = delivered(&app, &alice, &staff, "mock_success").await;
    let (widget, gadget) = (item(&o, 0), item(&o, 1));
    let returns = format!("/orders/{}/returns/", o["id"]);
    let ask = json!({"items": [{"item_id": widget, "quantity": 1}], "reason": "Too small"});
    let (status, problem) = app.post(&returns, Some(&mallory), ask.clone()).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND);
    let (status, problem) =
        app.post(&returns, Some(&alice), json!({"items": [{"item_id": widget, "quantity": 3}]})).await;
    assert_problem(status, &problem, StatusCode::CONFLICT);
    let (status, problem) = app.post(&returns, Some(&alice), json!({"reason": "no items"})).await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST);
    let (status, r) = app.post(&returns, Some(&alice), ask).await;
    assert_eq!(
        (status, r["status"].as_str(), r["reason"].as_str()),
        (StatusCode::CREATED, Some("REQUESTED"), Some("Too small"))
    );
    let one = format!("/returns/{}/", r["id"]);
    assert_eq!(app.get(&one, Some(&alice)).await.0, StatusCode::OK);
    assert_problem(
        app.get(&one, Some(&mallory)).await.0,
        &app.get(&one, Some(&mallory)).await.1,
        StatusCode::NOT_FOUND,
    );
    let (status, mine) = app.get(&returns, Some(&alice)).await;
    assert_eq!((status, mine.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let (status, open) = app.get("/returns/?status=REQUESTED", Some(&staff)).await;
    assert_eq!((status, open[0]["id"].clone()), (StatusCode::OK, r["id"].clone()), "{open}");
    let (status, problem) = app.get("/returns/", Some(&alice)).await;
    assert_problem(status, &problem, StatusCode::FORBIDDEN);

    // Staff decide: the owner cannot approve or receive; receiving needs an approval.
    let approve = format!("/returns/{}/approve/", r["id"]);
    let receive = format!("/returns/{}/receive/", r["id"]);
    let (status, problem) = post_empty(&app, &approve, &alice).await;
    assert_problem(status, &problem, StatusCode::FORBIDDEN);
    let (status, problem) = post_empty(&app, &receive, &staff).await;
    assert_problem(status, &problem, StatusCode::CONFLICT);
    let (status, approved) = post_empty(&app, &approve, &staff).await;
    assert_eq!((status, approved["status"].as_str()), (StatusCode::OK, Some("APPROVED")), "{approved}");
    let (status, problem) = post_empty(&app, &receive, &alice).await;
    assert_problem(status, &problem, StatusCode::FORBIDDEN);
    let (status, problem) = app.post(&receive, Some(&staff), json!({"amount": "250.01"})).await;
    assert_problem(status, &problem, StatusCode::CONFLICT);
    let (status, problem) = app.post(&receive, Some(&staff), json!({"amount": "-1"})).await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST);

    // Received: the widget's price is refunded, once.
    let (status, refunded) = post_empty(&app, &receive, &staff).await;
    assert_eq!((status, refunded["status"].as_str()), (StatusCode::OK, Some("REFUNDED")), "{refunded}");
    assert_eq!(refunded["refund_amount"], "100.00");
    let (status, problem) = post_empty(&app, &receive, &staff).await;
    assert_problem(status, &problem, StatusCode::CONFLICT);
    let (_, refunds) = app.get(&format!("/payments/{payment}/refunds/"), Some(&staff)).await;
    assert_eq!(refunds.as_array().map(Vec::len), Some(1), "{refunds}");
    assert_eq!(refunds[0]["id"], refunded["refund"]);
    let o2 = order_json(&app, &alice, o["id"].as_i64().unwrap()).await;
    assert_eq!(
        (o2["status"].as_str(), o2["fulfillment_status"].as_str()),
        (Some("PARTIALLY_REFUNDED"), Some("PARTIALLY_RETURNED"))
    );
    assert_eq!(o2["refunded_amount"], "100.00");

    // A second return is rejected with a note (a blank one is refused).
    let (_, second) = app.post(&returns, Some(&alice), json!({"items": [{"item_id": gadget, "quantity": 1}]})).await;
    let reject = format!("/returns/{}/reject/", second["id"]);
    let (status, problem) = app.post(&reject, Some(&staff), json!({"note": "  "})).await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST);
    let (status, rejected) = app.post(&reject, Some(&staff), json!({"note": "Opened and used"})).await;
    assert_eq!(
        (status, rejected["status"].as_str(), rejected["note"].as_str()),
        (StatusCode::OK, Some("REJECTED"), Some("Opened and used"))
    );
    let (status, problem) = post_empty(&app, &format!("/returns/{}/approve/", second["id"]), &staff).await;
    assert_problem(status, &problem, StatusCode::CONFLICT);
    let (_, sent) = app.get(&format!("/notifications/?order={}", o["id"]), Some(&staff)).await;
    let kinds: Vec<&str> = sent.as_array().unwrap().iter().filter_map(|n| n["kind"].as_str()).collect();
    for kind in ["return_requested", "return_approved", "return_received", "refund_issued", "return_rejected"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }

    // A declined refund is 402 and leaves the return RECEIVED, to be received again (here
    // without a refund, amount 0).
    let (o, _) = delivered(&app, &alice, &staff, "mock_refund_decline").await;
    let (_, r) = app
        .post(
            &format!("/orders/{}/returns/", o["id"]),
            Some(&alice),
            json!({"items": [{"item_id": item(&o, 1), "quantity": 1}]}),
        )
        .await;
    post_empty(&app, &format!("/returns/{}/approve/", r["id"]), &staff).await;
    let receive = format!("/returns/{}/receive/", r["id"]);
    let (status, problem) = post_empty(&app, &receive, &staff).await;
    assert_problem(status, &problem, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(app.get(&format!("/returns/{}/", r["id"]), Some(&alice)).await.1["status"], "RECEIVED");
    let (status, kept) = app.post(&receive, Some(&staff), json!({"amount": "0"})).await;
    assert_eq!(
        (status, kept["status"].as_str(), &kept["refund"]),
        (StatusCode::OK, Some("RECEIVED"), &Value::Null),
        "{kept}"
    );
}

async fn shipping_an_authorised_order_can_capture_what_it_ships(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let alice = app.user("alice").await;
    let staff = app.staff("root").await;
    let order = app.order(&alice).await;
    let id = order["id"].as_i64().unwrap();
    let (_, p) = app.post("/payments/initiate/", Some(&alice), json!({"order_id": id, "capture": "manual"})).await;
    let (_, p) = app.post("/payments/confirm/", Some(&alice), json!({"payment_id": p["id"]})).await;
    assert_eq!(p["status"], "AUTHORIZED", "{p}");

    let one_widget = json!({"items": [{"item_id": item(&order, 0), "quantity": 1}]});
    let (status, f) = app.post(&format!("/orders/{id}/fulfillments/"), Some(&staff), one_widget).await;
    assert_eq!(status, StatusCode::CREATED, "{f}");
    // Once fulfilment started, only staff may release the payment.
    let (status, problem) = post_empty(&app, &format!("/payments/{}/void/", p["id"]), &alice).await;
    assert_problem(status, &problem, StatusCode::CONFLICT);
    // Goods do not leave on a hold alone: shipping without capturing is refused.
    let ship = format!("/fulfillments/{}/ship/", f["id"]);
    let (status, problem) = app.post(&ship, Some(&staff), json!({"carrier": "DHL"})).await;
    assert_problem(status, &problem, StatusCode::CONFLICT);
    let (status, shipped) = app.post(&ship, Some(&staff), json!({"capture": true, "carrier": "DHL"})).await;
    assert_eq!((status, shipped["status"].as_str()), (StatusCode::OK, Some("SHIPPED")), "{shipped}");
    let (_, paid) = app.get(&format!("/payments/{}/", p["id"]), Some(&alice)).await;
    assert_eq!(
        (paid["status"].as_str(), paid["captured_amount"].as_str()),
        (Some("SUCCESS"), Some("100.00")),
        "{paid}"
    );
    let o = order_json(&app, &alice, id).await;
    assert_eq!((o["status"].as_str(), o["fulfillment_status"].as_str()), (Some("PAID"), Some("PARTIALLY_FULFILLED")));
    // The rest of the hold was released with that capture: the other items may be packed, but
    // they do not ship on money that was not taken.
    let (status, rest) = post_empty(&app, &format!("/orders/{id}/fulfillments/"), &staff).await;
    assert_eq!(status, StatusCode::CREATED, "{rest}");
    let (status, problem) = post_empty(&app, &format!("/fulfillments/{}/ship/", rest["id"]), &staff).await;
    assert_problem(status, &problem, StatusCode::CONFLICT);
    assert!(problem["detail"].as_str().unwrap().contains("captured 100.00 USD"), "{problem}");
}
