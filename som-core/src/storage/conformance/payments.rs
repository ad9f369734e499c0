//! Conformance checks: Payments.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use super::*;

pub async fn one_live_payment_per_order(s: DynStorage) {
    let u = user(&s, "alice").await;
    let o = order(&s, &u).await;
    let p = inserted(&s, &o, "1").await;
    assert_eq!((p.status, p.amount, p.attempt), (PaymentStatus::Pending, o.total, 1));
    assert_eq!(s.insert_payment(payment_record(&o, "2"), None).await.unwrap(), PaymentInsert::Existing(p.clone()));
    assert_eq!(s.live_payment(o.id).await.unwrap(), Some(p.clone()));
    assert_eq!(s.payments_for_order(o.id).await.unwrap().len(), 1);
    assert_eq!(s.payments_for_order(o.id).await.unwrap(), vec![p]);
    let missing = Order { id: OrderId::new(999_999), ..o.clone() };
    assert!(matches!(s.insert_payment(payment_record(&missing, "3"), None).await, Err(Error::NotFound(_))));
}

pub async fn concurrent_payment_inserts_yield_one_payment(s: DynStorage) {
    let u = user(&s, "alice").await;
    let o = order(&s, &u).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (s, o) = (Arc::clone(&s), o.clone());
        tasks.push(tokio::spawn(
            async move { s.insert_payment(payment_record(&o, &i.to_string()), None).await.unwrap() },
        ));
    }
    let mut inserted = 0;
    let mut ids = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            PaymentInsert::Inserted(p) => {
                inserted += 1;
                ids.push(p.id);
            }
            PaymentInsert::Existing(p) => ids.push(p.id),
            other => panic!("unexpected {other:?}"),
        }
    }
    ids.dedup();
    assert_eq!((inserted, ids.len()), (1, 1));
    assert_eq!(s.payments_for_order(o.id).await.unwrap().len(), 1);
}

pub async fn completing_a_payment_is_conditional_and_pays_the_order(s: DynStorage) {
    let u = user(&s, "alice").await;
    let o = order(&s, &u).await;
    let p = inserted(&s, &o, "1").await;
    let Transition::Applied(paid) = complete(&s, &p, PaymentOutcome::Succeeded, &u).await else {
        panic!("expected the completion to apply")
    };
    assert_eq!(paid.status, PaymentStatus::Success);
    assert_eq!(s.order_by_id(o.id).await.unwrap().unwrap().status, OrderStatus::Paid);
    let again = complete(&s, &p, PaymentOutcome::Succeeded, &u).await;
    assert!(matches!(again, Transition::NotApplied(p) if p.status == PaymentStatus::Success));
    let late_failure = complete(&s, &p, PaymentOutcome::Failed { reason: "x".into() }, &u).await;
    assert!(matches!(late_failure, Transition::NotApplied(p) if p.status == PaymentStatus::Success));
    let events = s.order_events(o.id).await.unwrap();
    assert_eq!(events.iter().map(|e| e.to).collect::<Vec<_>>(), vec![OrderStatus::Created, OrderStatus::Paid]);
    let rows =
        s.list_notifications(NotificationQuery { status: None, order: None, after: None, limit: 10 }).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.kind).collect::<Vec<_>>(), vec![EventKind::PaymentSucceeded]);
    let late = s.insert_payment(payment_record(&o, "2"), None).await.unwrap();
    assert_eq!(late, PaymentInsert::OrderNotPayable(OrderStatus::Paid));
    let ghost = Payment { id: PaymentId::new(999_999), ..p.clone() };
    let missing = s
        .complete_payment(ghost.id, PaymentOutcome::Succeeded, Actor::System, Utc::now(), Box::new(|_, _| vec![]), None)
        .await;
    assert!(matches!(missing, Err(Error::NotFound(_))));
}

pub async fn concurrent_completions_apply_once(s: DynStorage) {
    let u = user(&s, "alice").await;
    let o = order(&s, &u).await;
    let p = inserted(&s, &o, "1").await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (s, u, p) = (Arc::clone(&s), u.clone(), p.clone());
        tasks.push(tokio::spawn(async move { complete(&s, &p, PaymentOutcome::Succeeded, &u).await }));
    }
    let mut applied = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Transition::Applied(_)) {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(s.order_events(o.id).await.unwrap().len(), 2);
    assert_eq!(
        s.list_notifications(NotificationQuery { status: None, order: None, after: None, limit: 100 })
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn declined_payments_fail_and_leave_the_order_payable(s: DynStorage) {
    let u = user(&s, "alice").await;
    let o = order(&s, &u).await;
    let p = inserted(&s, &o, "1").await;
    // Transient confirmation failures are counted while the payment is pending, and only then.
    assert_eq!(s.transient_failures(p.id).await.unwrap(), 0);
    s.record_transient_failure(p.id).await.unwrap();
    s.record_transient_failure(p.id).await.unwrap();
    assert_eq!(s.transient_failures(p.id).await.unwrap(), 2);
    assert_eq!(s.transient_failures(PaymentId::new(999_999)).await.unwrap(), 0);
    let failed = complete(&s, &p, PaymentOutcome::Failed { reason: "card declined".into() }, &u).await;
    let Transition::Applied(f) = failed else { panic!("expected the failure to apply") };
    assert_eq!((f.status, f.failure_reason.as_deref()), (PaymentStatus::Failed, Some("card declined")));
    assert_eq!(s.order_by_id(o.id).await.unwrap().unwrap().status, OrderStatus::Created);
    assert_eq!(s.live_payment(o.id).await.unwrap(), None);
    let retry = NewPaymentRecord { attempt: 2, ..payment_record(&o, "2") };
    assert!(matches!(s.insert_payment(retry, None).await.unwrap(), PaymentInsert::Inserted(p) if p.attempt == 2));
    assert_eq!(s.payments_for_order(o.id).await.unwrap().len(), 2);
    s.record_transient_failure(p.id).await.unwrap();
    assert_eq!(s.transient_failures(p.id).await.unwrap(), 2, "a failed payment counts no more");
}

pub async fn provider_ids_next_actions_and_inbound_events(s: DynStorage) {
    let u = user(&s, "alice").await;
    let o = order(&s, &u).await;
    let p = inserted(&s, &o, "pi").await;
    assert_eq!(p.client_secret.as_deref(), Some("pp_pi_secret"));
    assert_eq!(s.payment_by_provider_id("mock", "pp_pi").await.unwrap(), Some(p.clone()));
    assert_eq!(s.payment_by_provider_id("stripe", "pp_pi").await.unwrap(), None);
    assert_eq!(s.payment_by_provider_id("mock", "pp_other").await.unwrap(), None);

    let action = serde_json::json!({"type": "redirect_to_url", "redirect_to_url": {"url": "https://bank.example/3ds"}});
    let waiting = s.set_next_action(p.id, Some(action.to_string())).await.unwrap().unwrap();
    assert_eq!(waiting.next_action, Some(action.clone()));
    assert_eq!(s.payment_by_id(p.id).await.unwrap().unwrap().next_action, Some(action.clone()));
    // Once the payment is settled nothing waits for the payer any more, and it cannot be set.
    complete(&s, &p, PaymentOutcome::Succeeded, &u).await;
    assert_eq!(s.payment_by_id(p.id).await.unwrap().unwrap().next_action, None);
    let settled = s.set_next_action(p.id, Some(action.to_string())).await.unwrap().unwrap();
    assert_eq!((settled.status, settled.next_action), (PaymentStatus::Success, None));
    assert_eq!(s.set_next_action(PaymentId::new(999_999), None).await.unwrap(), None);

    assert!(!s.inbound_event_seen("stripe", "evt_1").await.unwrap());
    assert!(s.record_inbound_event("stripe", "evt_1", "payment_intent.succeeded", Utc::now()).await.unwrap());
    assert!(!s.record_inbound_event("stripe", "evt_1", "payment_intent.succeeded", Utc::now()).await.unwrap());
    assert!(s.inbound_event_seen("stripe", "evt_1").await.unwrap());
    assert!(!s.inbound_event_seen("other", "evt_1").await.unwrap());
    assert!(s.record_inbound_event("other", "evt_1", "x", Utc::now()).await.unwrap());
}
