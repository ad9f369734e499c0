//! Fulfilment and returns in the console over real HTTP: a parcel made, shipped with tracking
//! and delivered, a return asked for on the customer's behalf, approved and received for a
//! refund — each form checked to need the session's token and to change what it says.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::StatusCode;
use reqwest::header::LOCATION;
use som_core::domain::{Caller, FulfillmentState, OrderId, ReturnStatus};
use som_core::testing::Backend;
use som_server::console::csrf_token;

use crate::console::{get, post, sign_in, with};
use crate::http::spawn_app_with;

som_core::on_both_backends!(staff_ship_deliver_and_take_a_return_from_the_order_page);

async fn staff_ship_deliver_and_take_a_return_from_the_order_page(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.staff("boss").await;
    let carol = app.user("carol").await;
    let (order, payment) = app.paid(&carol, "mock_success").await;
    let boss = sign_in(&app, "boss").await.1.unwrap();
    let csrf = csrf_token(&boss);
    let som = &app.som;
    let o = som.order(Caller::System, OrderId::new(order)).await.unwrap();
    let (widget, gadget) = (o.item_id(0).to_string(), o.item_id(1).to_string());

    // The order page offers a parcel of everything left; the form needs the session's token.
    let page = get(&app, &format!("/console/orders/{order}"), Some(&boss)).await.text().await.unwrap();
    assert!(page.contains(&format!("name=\"qty_{widget}\"")) && page.contains("UNFULFILLED"), "{page}");
    let fulfil = format!("/console/orders/{order}/fulfil");
    let qty = format!("qty_{widget}");
    let forged = post(&app, &fulfil, Some(&boss), &[(qty.as_str(), "2")]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(som.order_fulfillments(Caller::System, OrderId::new(order)).await.unwrap().is_empty());
    let resp = post(&app, &fulfil, Some(&boss), &with(&[(qty.as_str(), "2"), ("carrier", "UPS")], &csrf)).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], format!("/console/orders/{order}#fulfilment"));
    // More than is left is refused with the reason, and nothing is made.
    let too_many = post(&app, &fulfil, Some(&boss), &with(&[(qty.as_str(), "1")], &csrf)).await;
    assert_eq!(too_many.status(), StatusCode::SEE_OTHER);
    let parcels = som.order_fulfillments(Caller::System, OrderId::new(order)).await.unwrap();
    assert_eq!(parcels.len(), 1);
    let parcel = parcels[0].id;

    // It is on the "to ship" list, shipped with tracking, then delivered.
    let to_ship = get(&app, "/console/fulfilment", Some(&boss)).await.text().await.unwrap();
    assert!(to_ship.contains(&format!("/console/orders/{order}#fulfilment")), "{to_ship}");
    let ship = format!("/console/fulfilments/{parcel}/ship");
    let fields = [("tracking_number", "1Z999"), ("tracking_url", "https://ups.example/t/1Z999")];
    assert_eq!(post(&app, &ship, Some(&boss), &with(&fields, &csrf)).await.status(), StatusCode::SEE_OTHER);
    let page = get(&app, &format!("/console/orders/{order}"), Some(&boss)).await.text().await.unwrap();
    assert!(page.contains("1Z999") && page.contains("PARTIALLY_FULFILLED"), "{page}");
    let deliver = format!("/console/fulfilments/{parcel}/deliver");
    assert_eq!(post(&app, &deliver, Some(&boss), &with(&[], &csrf)).await.status(), StatusCode::SEE_OTHER);
    let unknown = post(&app, &format!("/console/fulfilments/{parcel}/lose"), Some(&boss), &with(&[], &csrf)).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // A return of the delivered widgets, asked for on carol's behalf, approved and received.
    let page = get(&app, &format!("/console/orders/{order}"), Some(&boss)).await.text().await.unwrap();
    assert!(page.contains("Return for the customer") && !page.contains(&format!("id=\"return-{gadget}\"")), "{page}");
    let ask = with(&[(qty.as_str(), "1"), ("reason", "Too small")], &csrf);
    let resp = post(&app, &format!("/console/orders/{order}/returns"), Some(&boss), &ask).await;
    assert_eq!(resp.headers()[LOCATION], format!("/console/orders/{order}#returns"));
    let r = som.order_returns(Caller::System, OrderId::new(order)).await.unwrap().remove(0);
    let open = get(&app, "/console/fulfilment", Some(&boss)).await.text().await.unwrap();
    assert!(open.contains("Too small"), "{open}");
    for action in ["approve", "receive"] {
        let resp = post(&app, &format!("/console/returns/{}/{action}", r.id), Some(&boss), &with(&[], &csrf)).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    }
    let r = som.get_return(Caller::System, r.id).await.unwrap();
    assert_eq!((r.status, r.refund_amount.map(|m| m.amount_string())), (ReturnStatus::Refunded, Some("100.00".into())));
    let refunds = som.payment_refunds(Caller::System, som_core::domain::PaymentId::new(payment)).await.unwrap();
    assert_eq!(refunds.len(), 1);
    let o = som.order(Caller::System, OrderId::new(order)).await.unwrap();
    assert_eq!(o.fulfillment, FulfillmentState::PartiallyReturned);
    let page = get(&app, &format!("/console/orders/{order}"), Some(&boss)).await.text().await.unwrap();
    assert!(
        page.contains("return 1 refunded")
            || page.contains(&format!("return {} refunded", r.id))
            || page.contains("received"),
        "{page}"
    );
}
