//! Taking real payments: `som serve` with the Stripe provider against localstripe, a stateful
//! Stripe-compatible server that sends signed webhooks (`.ci/run` installs it; without it these
//! tests are skipped with a message, unless `SOM_TEST_REQUIRE_LOCALSTRIPE` is set).
//!
//! Where localstripe differs from Stripe (it sends no refund events; its declines carry no
//! `decline_code`), the unit tests of `som_core::payment::stripe` check Stripe's documented JSON.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use som_core::config::Secret;
use som_core::testing::{LocalStripe, TEST_SECRET_KEY, until};

use super::http::{App, assert_problem, read, spawn_app_with};
use som_core::testing::Backend;

const WEBHOOK_SECRET: &str = "whsec_som_test_0123456789abcdef";

struct Shop {
    app: App,
    stripe: LocalStripe,
}

async fn shop(backend: Backend) -> Option<Shop> {
    let stripe = LocalStripe::start()?;
    let api_base = stripe.api_base();
    let app = spawn_app_with(backend, |c| {
        c.payment_provider = "stripe".into();
        c.stripe_secret_key = Some(Secret::new(TEST_SECRET_KEY));
        c.stripe_webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
        c.stripe_api_base = api_base;
        c.stripe_timeout = Duration::from_secs(5);
    })
    .await;
    stripe.register_webhook(&app.url("/payments/webhooks/stripe/"), WEBHOOK_SECRET).await;
    Some(Shop { app, stripe })
}

impl Shop {
    /// An order of 250.00 by `token`'s user, and its payment initiated with `method`.
    async fn initiated(&self, token: &str, method: &str) -> (i64, Value) {
        let order = self.app.order(token).await["id"].as_i64().unwrap();
        let (status, p) =
            self.app.post("/payments/initiate/", Some(token), json!({"order_id": order, "method": method})).await;
        assert_eq!(status, StatusCode::OK, "{p}");
        (order, p)
    }

    async fn confirm(&self, token: &str, payment: &Value) -> (StatusCode, Value) {
        self.app.post("/payments/confirm/", Some(token), json!({"payment_id": payment["id"]})).await
    }

    async fn order_status(&self, token: &str, order: i64) -> String {
        self.app.get(&format!("/orders/{order}/"), Some(token)).await.1["status"].as_str().unwrap().to_owned()
    }

    /// How often the order moved to `to`.
    async fn transitions_to(&self, token: &str, order: i64, to: &str) -> usize {
        let (status, history) = self.app.get(&format!("/orders/{order}/history/"), Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{history}");
        history.as_array().unwrap().iter().filter(|e| e["to"] == to).count()
    }

    /// `kind` notifications about the order (one per channel).
    async fn notifications(&self, staff: &str, order: i64, kind: &str) -> usize {
        let (status, list) = self.app.get(&format!("/notifications/?order={order}"), Some(staff)).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list.as_array().unwrap().iter().filter(|n| n["kind"] == kind).count()
    }

    /// Posts `body` to the webhook endpoint with `signature` (none when `None`).
    async fn deliver(&self, body: &str, signature: Option<String>) -> (StatusCode, Value) {
        let mut request = self.app.client.post(self.app.url("/payments/webhooks/stripe/")).body(body.to_owned());
        request = request.header("content-type", "application/json");
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        read(request.send().await.unwrap()).await
    }

    /// Posts `event` signed with the endpoint's secret, as Stripe would.
    async fn deliver_signed(&self, event: &Value) -> (StatusCode, Value) {
        let body = event.to_string();
        self.deliver(&body, Some(sign(WEBHOOK_SECRET, now(), &body))).await
    }

    /// Waits until localstripe has recorded a `kind` event for the intent, then long enough for
    /// its delivery (localstripe sends each a second after the change); the event.
    async fn delivered_event(&self, kind: &str, intent: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.stripe.events(kind).await;
            if let Some(event) = events.into_iter().find(|e| e["data"]["object"]["id"] == intent) {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                return event;
            }
            assert!(Instant::now() < deadline, "localstripe recorded no {kind} for {intent}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sign(secret: &str, t: i64, body: &str) -> String {
    som_core::signature::sign(secret.as_bytes(), t, body.as_bytes())
}

som_core::on_both_backends!(
    a_card_payment_is_captured_once_and_the_later_webhook_changes_nothing,
    a_cancelled_three_d_secure_payment_cannot_be_finished_at_stripe,
    staff_refund_in_part_and_in_full_at_stripe,
    forged_stale_and_replayed_events_change_nothing,
);

async fn a_card_payment_is_captured_once_and_the_later_webhook_changes_nothing(backend: Backend) {
    let Some(shop) = shop(backend).await else { return };
    let alice = shop.app.user("alice").await;
    let staff = shop.app.staff("root").await;
    let (order, p) = shop.initiated(&alice, "pm_card_visa").await;
    assert_eq!((p["provider"].as_str(), p["status"].as_str()), (Some("stripe"), Some("PENDING")), "{p}");
    let intent = p["provider_payment_id"].as_str().unwrap();
    assert!(intent.starts_with("pi_"), "{p}");
    assert!(p["client_secret"].as_str().is_some_and(|s| s.starts_with(intent)), "{p}");

    // Stripe holds the order's amount in minor units, the currency, and SOM's references.
    let (status, pi) = shop.stripe.call(Method::GET, &format!("/v1/payment_intents/{intent}"), &[]).await;
    assert_eq!(status, 200, "{pi}");
    assert_eq!((pi["amount"].as_i64(), pi["currency"].as_str()), (Some(25000), Some("usd")), "{pi}");
    assert_eq!(pi["metadata"]["som_order_id"], order.to_string(), "{pi}");
    assert_eq!(pi["metadata"]["som_reference"], p["transaction_id"], "{pi}");

    let (status, paid) = shop.confirm(&alice, &p).await;
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("SUCCESS")), "{paid}");
    assert_eq!(paid["next_action"], Value::Null);
    assert_eq!(shop.order_status(&alice, order).await, "PAID");

    // localstripe's payment_intent.succeeded arrives after SOM's own confirmation: it was
    // verified and recorded (a redelivery is a duplicate) and changed nothing.
    let event = shop.delivered_event("payment_intent.succeeded", intent).await;
    let (status, receipt) = shop.deliver_signed(&event).await;
    assert_eq!((status, receipt["outcome"].as_str()), (StatusCode::OK, Some("duplicate")), "{receipt}");
    assert_eq!(shop.transitions_to(&alice, order, "PAID").await, 1);
    assert_eq!(shop.notifications(&staff, order, "payment_succeeded").await, 1);
    // Confirming again returns the captured payment unchanged.
    let (status, again) = shop.confirm(&alice, &p).await;
    assert_eq!((status, again["status"].as_str()), (StatusCode::OK, Some("SUCCESS")), "{again}");
    assert_eq!(shop.transitions_to(&alice, order, "PAID").await, 1);
}

#[tokio::test]
async fn three_d_secure_leaves_the_payment_pending_until_stripe_reports_it() {
    let Some(shop) = shop(Backend::Sqlite).await else { return };
    let alice = shop.app.user("alice").await;
    let card = shop.stripe.card("4000002500003155").await;
    let (order, p) = shop.initiated(&alice, &card).await;
    let (status, waiting) = shop.confirm(&alice, &p).await;
    assert_eq!((status, waiting["status"].as_str()), (StatusCode::ACCEPTED, Some("PENDING")), "{waiting}");
    assert_eq!(waiting["next_action"]["type"], "use_stripe_sdk", "{waiting}");
    let client_secret = waiting["client_secret"].as_str().unwrap().to_owned();
    let (_, shown) = shop.app.get(&format!("/payments/{}/", p["id"]), Some(&alice)).await;
    assert_eq!(shown["next_action"], waiting["next_action"], "{shown}");
    assert_eq!(shop.order_status(&alice, order).await, "CREATED");

    // The payer finishes 3-D Secure with Stripe (what Stripe.js does with the client secret);
    // Stripe's webhook completes the payment without SOM being asked.
    let intent = p["provider_payment_id"].as_str().unwrap();
    let path = format!("/v1/payment_intents/{intent}/_authenticate");
    let (status, pi) =
        shop.stripe.call(Method::POST, &path, &[("client_secret", &client_secret), ("success", "true")]).await;
    assert_eq!((status, pi["status"].as_str()), (200, Some("succeeded")), "{pi}");
    until("the webhook to mark the order paid", Duration::from_secs(10), async || {
        shop.order_status(&alice, order).await == "PAID"
    })
    .await;
    let (_, paid) = shop.app.get(&format!("/payments/{}/", p["id"]), Some(&alice)).await;
    assert_eq!((paid["status"].as_str(), &paid["next_action"]), (Some("SUCCESS"), &Value::Null), "{paid}");

    // The front end confirming afterwards gets the captured payment; the order moved once.
    let (status, again) = shop.confirm(&alice, &p).await;
    assert_eq!((status, again["status"].as_str()), (StatusCode::OK, Some("SUCCESS")), "{again}");
    assert_eq!(shop.transitions_to(&alice, order, "PAID").await, 1);
}

async fn a_cancelled_three_d_secure_payment_cannot_be_finished_at_stripe(backend: Backend) {
    let Some(shop) = shop(backend).await else { return };
    let alice = shop.app.user("alice").await;
    let card = shop.stripe.card("4000002500003155").await;
    let (order, p) = shop.initiated(&alice, &card).await;
    let (status, waiting) = shop.confirm(&alice, &p).await;
    assert_eq!((status, waiting["status"].as_str()), (StatusCode::ACCEPTED, Some("PENDING")), "{waiting}");
    let client_secret = waiting["client_secret"].as_str().unwrap().to_owned();

    let (status, cancelled) = shop.app.post(&format!("/orders/{order}/cancel/"), Some(&alice), json!({})).await;
    assert_eq!((status, cancelled["status"].as_str()), (StatusCode::OK, Some("CANCELLED")), "{cancelled}");
    // Nothing to finish the payment with is served any more…
    let (_, ended) = shop.app.get(&format!("/payments/{}/", p["id"]), Some(&alice)).await;
    assert_eq!(ended["status"], "CANCELLED", "{ended}");
    assert!(ended.get("client_secret").is_none_or(Value::is_null), "{ended}");
    assert!(ended.get("next_action").is_none_or(Value::is_null), "{ended}");
    // …and the PaymentIntent is cancelled at Stripe, so the secret the payer holds takes no money.
    let intent = p["provider_payment_id"].as_str().unwrap();
    let (status, pi) = shop.stripe.call(Method::GET, &format!("/v1/payment_intents/{intent}"), &[]).await;
    assert_eq!((status, pi["status"].as_str()), (200, Some("canceled")), "{pi}");
    let path = format!("/v1/payment_intents/{intent}/_authenticate");
    let (_, pi) =
        shop.stripe.call(Method::POST, &path, &[("client_secret", &client_secret), ("success", "true")]).await;
    assert_ne!(pi["status"].as_str(), Some("succeeded"), "{pi}");
    let (_, pi) = shop.stripe.call(Method::GET, &format!("/v1/payment_intents/{intent}"), &[]).await;
    assert_eq!(pi["status"].as_str(), Some("canceled"), "{pi}");
    assert_eq!(shop.order_status(&alice, order).await, "CANCELLED");
}

#[tokio::test]
async fn closing_an_intent_at_stripe_reports_whether_it_took_the_money() {
    use som_core::payment::{Cancellation, PaymentProvider, StripeConfig, StripeProvider};
    let Some(stripe) = LocalStripe::start() else { return };
    let provider = StripeProvider::new(StripeConfig {
        secret_key: Secret::new(TEST_SECRET_KEY),
        webhook_secret: None,
        api_base: stripe.api_base(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let intent = |confirm: &'static str| {
        let stripe = &stripe;
        async move {
            let form =
                [("amount", "2500"), ("currency", "usd"), ("payment_method", "pm_card_visa"), ("confirm", confirm)];
            let (status, pi) = stripe.call(Method::POST, "/v1/payment_intents", &form).await;
            assert_eq!(status, 200, "{pi}");
            pi["id"].as_str().unwrap().to_owned()
        }
    };
    // Waiting for confirmation: cancelled, and cancelling again says so again.
    let waiting = intent("false").await;
    assert_eq!(provider.cancel(&waiting).await, Ok(Cancellation::Cancelled));
    assert_eq!(provider.cancel(&waiting).await, Ok(Cancellation::Cancelled));
    let (_, pi) = stripe.call(Method::GET, &format!("/v1/payment_intents/{waiting}"), &[]).await;
    assert_eq!(pi["status"], "canceled", "{pi}");
    // Already captured: Stripe refuses to cancel, and the intent says the money was taken.
    let captured = intent("true").await;
    assert_eq!(provider.cancel(&captured).await, Ok(Cancellation::Captured));
}

#[tokio::test]
async fn a_declined_card_fails_and_a_new_attempt_succeeds() {
    let Some(shop) = shop(Backend::Sqlite).await else { return };
    let alice = shop.app.user("alice").await;
    let (order, first) = shop.initiated(&alice, "pm_card_chargeCustomerFail").await;
    let (status, problem) = shop.confirm(&alice, &first).await;
    assert_problem(status, &problem, StatusCode::PAYMENT_REQUIRED);
    let (_, failed) = shop.app.get(&format!("/payments/{}/", first["id"]), Some(&alice)).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["failure_reason"], "Your card was declined.", "{failed}");
    assert_eq!(shop.order_status(&alice, order).await, "CREATED");
    // The declined intent is cancelled at Stripe: the payer cannot retry it outside SOM.
    let declined_intent = first["provider_payment_id"].as_str().unwrap();
    let (_, pi) = shop.stripe.call(Method::GET, &format!("/v1/payment_intents/{declined_intent}"), &[]).await;
    assert_eq!(pi["status"].as_str(), Some("canceled"), "{pi}");

    let (status, second) =
        shop.app.post("/payments/initiate/", Some(&alice), json!({"order_id": order, "method": "pm_card_visa"})).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["id"], first["id"], "a second attempt");
    assert_ne!(second["provider_payment_id"], first["provider_payment_id"], "a new PaymentIntent");
    let (status, paid) = shop.confirm(&alice, &second).await;
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("SUCCESS")), "{paid}");
    assert_eq!(shop.order_status(&alice, order).await, "PAID");

    // Stripe's payment_failed for the first intent arrives late and changes nothing.
    let intent = first["provider_payment_id"].as_str().unwrap();
    let event = shop.delivered_event("payment_intent.payment_failed", intent).await;
    let (status, receipt) = shop.deliver_signed(&event).await;
    assert_eq!((status, receipt["outcome"].as_str()), (StatusCode::OK, Some("duplicate")), "{receipt}");
    assert_eq!(shop.order_status(&alice, order).await, "PAID");

    // A method that is not a Stripe PaymentMethod is refused before Stripe is asked.
    let other = shop.app.order(&alice).await["id"].as_i64().unwrap();
    let (status, problem) =
        shop.app.post("/payments/initiate/", Some(&alice), json!({"order_id": other, "method": "mock_success"})).await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST);
}

async fn staff_refund_in_part_and_in_full_at_stripe(backend: Backend) {
    let Some(shop) = shop(backend).await else { return };
    let alice = shop.app.user("alice").await;
    let staff = shop.app.staff("root").await;
    let (order, p) = shop.initiated(&alice, "pm_card_visa").await;
    assert_eq!(shop.confirm(&alice, &p).await.0, StatusCode::OK);
    let refunds = format!("/payments/{}/refunds/", p["id"]);

    let (status, part) = shop.app.post(&refunds, Some(&staff), json!({"amount": "50.00", "reason": "damaged"})).await;
    assert_eq!((status, part["status"].as_str()), (StatusCode::CREATED, Some("SUCCEEDED")), "{part}");
    assert!(part["provider_refund_id"].as_str().is_some_and(|id| id.starts_with("re_")), "{part}");
    assert_eq!(shop.order_status(&alice, order).await, "PARTIALLY_REFUNDED");
    let (status, rest) = shop.app.post(&refunds, Some(&staff), json!({})).await;
    assert_eq!((status, rest["amount"].as_str()), (StatusCode::CREATED, Some("200.00")), "{rest}");
    assert_eq!(shop.order_status(&alice, order).await, "REFUNDED");
    let (_, payment) = shop.app.get(&format!("/payments/{}/", p["id"]), Some(&alice)).await;
    assert_eq!((payment["status"].as_str(), payment["refunded_amount"].as_str()), (Some("REFUNDED"), Some("250.00")));

    // Stripe has exactly these two refunds, marked as SOM's.
    let intent = p["provider_payment_id"].as_str().unwrap();
    let (_, list) = shop.stripe.call(Method::GET, &format!("/v1/refunds?payment_intent={intent}"), &[]).await;
    let mut amounts: Vec<i64> =
        list["data"].as_array().unwrap().iter().map(|r| r["amount"].as_i64().unwrap()).collect();
    amounts.sort_unstable();
    assert_eq!(amounts, vec![5000, 20000], "{list}");
    assert!(list["data"].as_array().unwrap().iter().all(|r| r["metadata"]["som_refund"].is_string()), "{list}");
    assert_eq!(shop.notifications(&staff, order, "refund_issued").await, 2);
}

async fn forged_stale_and_replayed_events_change_nothing(backend: Backend) {
    let Some(shop) = shop(backend).await else { return };
    let alice = shop.app.user("alice").await;
    let staff = shop.app.staff("root").await;
    let (order, p) = shop.initiated(&alice, "pm_card_visa").await;
    let intent = p["provider_payment_id"].as_str().unwrap().to_owned();
    let event = json!({"id": "evt_forged_1", "object": "event", "type": "payment_intent.succeeded",
        "data": {"object": {"id": intent, "object": "payment_intent", "status": "succeeded",
            "amount": 25000, "amount_received": 25000, "currency": "usd"}}});
    let body = event.to_string();

    // Signed, but not what SOM asked for (another amount and currency, an intent that is not
    // succeeded): recorded as a mismatch, nothing changes.
    for (id, object) in [
        ("evt_wrong_1", json!({"id": intent, "status": "requires_payment_method", "amount": 1, "currency": "jpy"})),
        (
            "evt_wrong_2",
            json!({"id": intent, "status": "succeeded", "amount": 1, "amount_received": 1, "currency": "jpy"}),
        ),
        (
            "evt_wrong_3",
            json!({"id": intent, "status": "succeeded", "amount": 25000, "amount_received": 25000, "currency": "eur"}),
        ),
    ] {
        let wrong =
            json!({"id": id, "object": "event", "type": "payment_intent.succeeded", "data": {"object": object}});
        let (status, receipt) = shop.deliver_signed(&wrong).await;
        assert_eq!((status, receipt["outcome"].as_str()), (StatusCode::OK, Some("mismatch")), "{receipt}");
        assert_eq!(shop.order_status(&alice, order).await, "CREATED", "{id}");
    }
    let (_, still) = shop.app.get(&format!("/payments/{}/", p["id"]), Some(&alice)).await;
    assert_eq!(still["status"], "PENDING", "{still}");

    let rejected = [
        None,
        Some(sign("whsec_not_the_endpoint_secret_at_all", now(), &body)),
        Some(sign(WEBHOOK_SECRET, now() - 600, &body)),
        Some(sign(WEBHOOK_SECRET, now() + 600, &body)),
        Some("t=abc,v1=zz".to_owned()),
        Some(format!("t={}", now())),
    ];
    for signature in rejected {
        let (status, problem) = shop.deliver(&body, signature.clone()).await;
        assert_problem(status, &problem, StatusCode::BAD_REQUEST);
        assert_eq!(shop.order_status(&alice, order).await, "CREATED", "{signature:?}");
    }
    // The right signature over a tampered body is refused too.
    let tampered = body.replace("succeeded", "SUCCEEDED");
    let (status, _) = shop.deliver(&tampered, Some(sign(WEBHOOK_SECRET, now(), &body))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, receipt) = shop.deliver_signed(&event).await;
    assert_eq!((status, receipt["outcome"].as_str()), (StatusCode::OK, Some("applied")), "{receipt}");
    assert_eq!(shop.order_status(&alice, order).await, "PAID");
    for _ in 0..3 {
        let (status, receipt) = shop.deliver_signed(&event).await;
        assert_eq!((status, receipt["outcome"].as_str()), (StatusCode::OK, Some("duplicate")), "{receipt}");
    }
    assert_eq!(shop.transitions_to(&alice, order, "PAID").await, 1);
    assert_eq!(shop.notifications(&staff, order, "payment_succeeded").await, 1);

    // A refund made in Stripe's dashboard (localstripe sends no refund events, so the event is
    // built as Stripe documents refund.created around localstripe's own refund object).
    // (SOM already holds the payment as captured; capture it at localstripe too.)
    let confirm = format!("/v1/payment_intents/{intent}/confirm");
    let (status, pi) = shop.stripe.call(Method::POST, &confirm, &[]).await;
    assert_eq!((status, pi["status"].as_str()), (200, Some("succeeded")), "{pi}");
    let (status, refund) =
        shop.stripe.call(Method::POST, "/v1/refunds", &[("payment_intent", intent.as_str()), ("amount", "3000")]).await;
    assert_eq!(status, 200, "{refund}");
    let refund_event = json!({"id": "evt_dashboard_refund", "object": "event", "type": "refund.created",
        "data": {"object": refund}});
    let (status, receipt) = shop.deliver_signed(&refund_event).await;
    assert_eq!((status, receipt["outcome"].as_str()), (StatusCode::OK, Some("applied")), "{receipt}");
    let (_, payment) = shop.app.get(&format!("/payments/{}/", p["id"]), Some(&alice)).await;
    assert_eq!(
        (payment["status"].as_str(), payment["refunded_amount"].as_str()),
        (Some("PARTIALLY_REFUNDED"), Some("30.00")),
        "{payment}"
    );
    let (_, refunds) = shop.app.get(&format!("/payments/{}/refunds/", p["id"]), Some(&staff)).await;
    let refunds = refunds.as_array().unwrap();
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(
        (refunds[0]["provider_refund_id"].as_str(), refunds[0]["status"].as_str()),
        (refund["id"].as_str(), Some("SUCCEEDED"))
    );
    // The same refund reported again under another event id is not recorded twice.
    let updated = json!({"id": "evt_dashboard_refund_2", "object": "event", "type": "refund.updated",
        "data": {"object": refund}});
    let (status, receipt) = shop.deliver_signed(&updated).await;
    assert_eq!((status, receipt["outcome"].as_str()), (StatusCode::OK, Some("ignored")), "{receipt}");
    let (status, receipt) = shop.deliver_signed(&refund_event).await;
    assert_eq!((status, receipt["outcome"].as_str()), (StatusCode::OK, Some("duplicate")), "{receipt}");
    assert_eq!(shop.notifications(&staff, order, "refund_issued").await, 1);

    // Events SOM does not act on, and events for intents it does not know, are acknowledged.
    let other = json!({"id": "evt_other", "type": "customer.created", "data": {"object": {"id": "cus_1"}}});
    let (status, receipt) = shop.deliver_signed(&other).await;
    assert_eq!((status, receipt["outcome"].as_str()), (StatusCode::OK, Some("ignored")), "{receipt}");
    let unknown =
        json!({"id": "evt_unknown", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_unknown"}}});
    let (status, receipt) = shop.deliver_signed(&unknown).await;
    assert_eq!((status, receipt["outcome"].as_str()), (StatusCode::OK, Some("ignored")), "{receipt}");
    let (status, problem) = shop.deliver("[]", Some(sign(WEBHOOK_SECRET, now(), "[]"))).await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn stripe_down_is_503_and_nothing_is_half_written() {
    let Some(mut shop) = shop(Backend::Sqlite).await else { return };
    let alice = shop.app.user("alice").await;
    let (order, p) = shop.initiated(&alice, "pm_card_visa").await;
    let other = shop.app.order(&alice).await["id"].as_i64().unwrap();
    shop.stripe.stop();

    let (status, problem) = shop.confirm(&alice, &p).await;
    assert_problem(status, &problem, StatusCode::SERVICE_UNAVAILABLE);
    let (_, pending) = shop.app.get(&format!("/payments/{}/", p["id"]), Some(&alice)).await;
    assert_eq!(pending["status"], "PENDING", "{pending}");
    assert_eq!(shop.order_status(&alice, order).await, "CREATED");

    let (status, problem) =
        shop.app.post("/payments/initiate/", Some(&alice), json!({"order_id": other, "method": "pm_card_visa"})).await;
    assert_problem(status, &problem, StatusCode::SERVICE_UNAVAILABLE);
    let caller = som_core::Caller::System;
    let payments = shop.app.som.order_payments(caller, som_core::domain::OrderId::new(other)).await.unwrap();
    assert!(payments.is_empty(), "no payment is recorded for an intent Stripe never created: {payments:?}");

    // Stripe back (empty: localstripe keeps nothing): a new payment goes through.
    shop.stripe.restart();
    let (status, retry) =
        shop.app.post("/payments/initiate/", Some(&alice), json!({"order_id": other, "method": "pm_card_visa"})).await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    let (status, paid) = shop.confirm(&alice, &retry).await;
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("SUCCESS")), "{paid}");
}

#[tokio::test]
async fn without_stripe_configured_its_webhook_is_not_found() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let body =
        json!({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}}).to_string();
    let response = app
        .client
        .post(app.url("/payments/webhooks/stripe/"))
        .header("Stripe-Signature", sign(WEBHOOK_SECRET, now(), &body))
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, problem) = read(response).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND);
}
