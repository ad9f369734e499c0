//! `som orders fulfil|ship|deliver|fulfilments` and `som returns …`: an order shipped in two
//! parcels, delivered, and part of it returned and refunded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::cli::Som;

#[test]
fn an_order_is_shipped_delivered_and_partly_returned_for_a_refund() {
    let som = Som::new();
    som.user("alice");
    let order = som.json(&["orders", "create", "--user", "alice", "--item", "Widget:2:5.00", "--item", "Gadget:1:3"]);
    let id = order["id"].to_string();
    let (widget, gadget) = (order["items"][0]["id"].to_string(), order["items"][1]["id"].to_string());
    let shown = som.ok(&["orders", "show", &id]);
    assert!(shown.contains(&format!("{widget}: 2 x Widget")) && shown.contains("UNFULFILLED"), "{shown}");
    som.fails(&["orders", "fulfil", &id], 1, "only an authorised or paid order");
    let p = som.json(&["pay", "initiate", &id])["id"].to_string();
    som.json(&["pay", "confirm", &p]);

    let usage = som.run(&["orders", "fulfil", &id, "--item", "7"]);
    assert_eq!(usage.status.code(), Some(2), "ITEM_ID:QUANTITY is checked before anything runs");
    som.fails(&["orders", "fulfil", &id, "--item", &format!("{widget}:3")], 1, "at most 2 more");
    let first = som.json(&["orders", "fulfil", &id, "--item", &format!("{widget}:2"), "--carrier", "UPS"]);
    assert_eq!((first["status"].as_str(), first["items"][0]["quantity"].as_i64()), (Some("PENDING"), Some(2)));
    let rest = som.json(&["orders", "fulfil", &id]);
    assert_eq!(rest["items"][0]["item_id"].to_string(), gadget);
    let to_ship = som.json(&["orders", "fulfilments", "--status", "PENDING"]);
    assert_eq!(to_ship["items"].as_array().map(Vec::len), Some(2), "{to_ship}");

    let (f1, f2) = (first["id"].to_string(), rest["id"].to_string());
    som.fails(&["orders", "deliver", &f1], 1, "PENDING");
    let shipped = som.json(&["orders", "ship", &f1, "--tracking-number", "1Z999"]);
    assert_eq!((shipped["status"].as_str(), shipped["tracking"]["number"].as_str()), (Some("SHIPPED"), Some("1Z999")));
    assert_eq!(som.json(&["orders", "show", &id])["fulfillment_status"], "PARTIALLY_FULFILLED");
    som.json(&["orders", "ship", &f2]);
    som.json(&["orders", "deliver", &f1]);
    som.json(&["orders", "deliver", &f2]);
    assert_eq!(som.json(&["orders", "show", &id])["fulfillment_status"], "DELIVERED");
    let table = som.ok(&["orders", "fulfilments", &id]);
    assert!(table.contains("DELIVERED") && table.contains("UPS 1Z999"), "{table}");

    // One widget comes back; receiving it refunds its price, once.
    som.fails(&["returns", "request", &id, "--item", &format!("{widget}:3")], 1, "delivered");
    let r = som.json(&["returns", "request", &id, "--item", &format!("{widget}:1"), "--reason", "Too small"]);
    let rid = r["id"].to_string();
    som.fails(&["returns", "receive", &rid], 1, "REQUESTED");
    assert_eq!(som.json(&["returns", "approve", &rid])["status"], "APPROVED");
    let open = som.ok(&["returns", "list", "--status", "APPROVED"]);
    assert!(open.contains("Too small"), "{open}");
    let received = som.json(&["returns", "receive", &rid]);
    assert_eq!((received["status"].as_str(), received["refund_amount"].as_str()), (Some("REFUNDED"), Some("5.00")));
    som.fails(&["returns", "receive", &rid], 1, "REFUNDED");
    let o = som.json(&["orders", "show", &id]);
    assert_eq!((o["status"].as_str(), o["refunded_amount"].as_str()), (Some("PARTIALLY_REFUNDED"), Some("5.00")));
    assert_eq!(o["fulfillment_status"], "PARTIALLY_RETURNED");

    let other = som.json(&["returns", "request", &id, "--item", &format!("{gadget}:1")])["id"].to_string();
    let rejected = som.ok(&["returns", "reject", &other, "--note", "Opened"]);
    assert!(rejected.contains("REJECTED") && rejected.contains("Opened"), "{rejected}");
}
