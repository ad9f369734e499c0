//! The staff export of orders over HTTP and from the console: CSV and NDJSON files with every
//! order the filters select, across several of the batches it is read in, newest first;
//! customers are refused, bad filters named.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::Value;
use som_core::domain::{Caller, ItemInput, OrderInput, UserId};
use som_core::testing::Backend;

use super::http::{assert_problem, read, spawn_app_with};

som_core::on_both_backends!(staff_export_every_order_as_csv_or_ndjson);

async fn staff_export_every_order_as_csv_or_ndjson(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let staff = app.staff("root").await;
    let alice = app.user("alice").await;
    app.paid(&alice, "mock_success").await;
    let bob_token = app.user("bob").await;
    let (_, me) = app.get("/accounts/me/", Some(&bob_token)).await;
    let bob = Caller::User { id: UserId::new(me["id"].as_i64().unwrap()), is_staff: false };
    // More than two of the batches the export is read in, with a name CSV must quote.
    let total = 2 * som_core::system::EXPORT_BATCH as usize + 7;
    for n in 0..total - 1 {
        let input = OrderInput {
            items: vec![
                ItemInput { name: format!("Widget \"{n}\", red"), quantity: 2, price: "1.25".into() },
                ItemInput { name: "Gadget".into(), quantity: 1, price: "3.00".into() },
            ],
            currency: None,
        };
        app.som.create_order(bob, input).await.unwrap();
    }

    // Customers may not; bad filters are named.
    let (status, body) = app.get("/orders/export/", Some(&alice)).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = app.get("/orders/export/", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    for (bad, field) in [
        ("?format=xml", "format"),
        ("?status=LOST", "status"),
        ("?user=x", "user"),
        ("?created_after=yesterday", "created_after"),
    ] {
        let (status, body) = app.get(&format!("/orders/export/{bad}"), Some(&staff)).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST);
        assert!(body["errors"][field].is_array(), "{bad}: {body}");
    }

    // CSV: a header, then one line per order, newest first.
    let resp = app.client.get(app.url("/orders/export/?format=csv")).bearer_auth(&staff).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    let disposition = resp.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"orders-") && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    let csv = resp.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "id,user,status,fulfillment_status,currency,total_amount,refunded_amount,created_at,updated_at,item_count,items"
    );
    assert_eq!(lines.len(), total + 1, "every order once");
    let ids: Vec<i64> = lines[1..].iter().map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, no repeats");
    let newest = lines[1];
    let expected_items = format!("\"2 x Widget \"\"{}\"\", red @ 1.25; 1 x Gadget @ 3.00\"", total - 2);
    assert!(newest.ends_with(&format!(",2,{expected_items}")), "{newest}");
    assert!(newest.contains(",CREATED,UNFULFILLED,USD,5.50,0.00,"), "{newest}");
    assert!(lines.iter().any(|l| l.contains(",PAID,UNFULFILLED,USD,250.00,0.00,")), "alice's paid order");

    // NDJSON, filtered: each line an order as the API shows it.
    let resp =
        app.client.get(app.url("/orders/export/?format=ndjson&status=PAID")).bearer_auth(&staff).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let orders: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(orders.len(), 1, "{text}");
    let (_, api) = app.get(&format!("/orders/{}/", orders[0]["id"]), Some(&staff)).await;
    assert_eq!(orders[0], api, "the same representation as the API's");
    let resp = app
        .client
        .get(app.url(&format!("/orders/export/?format=ndjson&user={}", me["id"])))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    let bobs: HashSet<i64> = resp
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(bobs.len(), total - 1, "bob's orders only");
    let (status, body) = read(
        app.client
            .get(app.url("/orders/export/?format=ndjson&created_after=2999-01-01T00:00:00Z"))
            .bearer_auth(&staff)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, Value::String(String::new())), "nothing selected: an empty file");

    // Compressed when the client asks (the compression layer reads the stream to its end).
    let resp = app
        .client
        .get(app.url("/orders/export/?format=ndjson"))
        .bearer_auth(&staff)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let gz = resp.bytes().await.unwrap();
    assert!(gz.len() > 100 && gz[..2] == [0x1f, 0x8b], "a whole gzip stream: {} bytes", gz.len());
    let (status, body) = read(
        app.client
            .get(app.url("/orders/export/?created_after=2026-12-02T00:00:00Z&created_before=2026-12-01T00:00:00Z"))
            .bearer_auth(&staff)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body.as_str().map(|b| b.lines().count())),
        (StatusCode::OK, Some(1)),
        "an empty window: the header only"
    );

    // The console's link gives the same file to a signed-in staff member.
    let cookie = super::console::sign_in(&app, "root").await.1.unwrap();
    let resp = super::console::get(&app, "/console/orders/export?format=csv&status=PAID", Some(&cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let csv = resp.text().await.unwrap();
    assert_eq!(csv.lines().count(), 2, "the header and alice's paid order: {csv}");
    let page = super::console::get(&app, "/console/orders?status=PAID", Some(&cookie)).await.text().await.unwrap();
    assert!(page.contains("/console/orders/export?format=csv&amp;status=PAID"), "the list links its export: {page}");
}
