//! Conformance checks: Refunds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use super::*;

/// A paid order (total 250.00 USD) and its SUCCESS payment.
pub(super) async fn paid(s: &DynStorage, u: &crate::domain::User) -> (Order, Payment) {
    let o = order(s, u).await;
    let p = inserted(s, &o, &crate::util::random_token(6)).await;
    let Transition::Applied(p) = complete(s, &p, PaymentOutcome::Succeeded, u).await else { panic!("not applied") };
    (o, p)
}

pub(super) fn refund_record(p: &Payment, minor: i64, key: Option<&str>) -> NewRefundRecord {
    NewRefundRecord {
        late_capture: false,
        payment_id: p.id,
        amount: Money::from_minor(minor, Currency::USD),
        reason: Some("damaged".into()),
        actor: Actor::System,
        request_key: key.map(str::to_owned),
        provider_refund_id: None,
        created_at: Utc::now(),
    }
}

pub(super) fn refund_notify(user: &crate::domain::User) -> RefundNotify {
    let user = user.clone();
    Box::new(move |o, p, r| vec![NewNotification { channel: "log".into(), message: Message::refund(&user, o, p, r) }])
}

pub(super) async fn reserved(s: &DynStorage, p: &Payment, minor: i64) -> Refund {
    match s.reserve_refund(refund_record(p, minor, None)).await.unwrap() {
        RefundReserve::Reserved(r) => r,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

pub(super) async fn succeed(s: &DynStorage, r: &Refund, u: &crate::domain::User) -> Transition<Refund> {
    let outcome = RefundOutcome::Succeeded { provider_refund_id: format!("re_{}", r.id) };
    s.finish_refund(r.id, outcome, Utc::now(), refund_notify(u)).await.unwrap()
}

pub async fn refunds_reserve_within_the_captured_amount_and_finish_once(s: DynStorage) {
    let u = user(&s, "alice").await;
    // Only captured payments can be refunded.
    let o = order(&s, &u).await;
    let pending = inserted(&s, &o, "pending").await;
    assert!(
        matches!(s.reserve_refund(refund_record(&pending, 100, None)).await.unwrap(), RefundReserve::Refused(p) if p.status == PaymentStatus::Pending)
    );
    let (o, p) = paid(&s, &u).await;
    assert_eq!(p.amount.minor(), 25000);
    // More than was captured, or nothing, is refused; the payment is unchanged.
    assert!(matches!(s.reserve_refund(refund_record(&p, 25001, None)).await.unwrap(), RefundReserve::Refused(_)));
    assert!(matches!(s.reserve_refund(refund_record(&p, 0, None)).await.unwrap(), RefundReserve::Refused(_)));
    let first = reserved(&s, &p, 10000).await;
    assert_eq!((first.status, first.amount.minor(), first.order_id), (RefundStatus::Pending, 10000, o.id));
    let now = s.payment_by_id(p.id).await.unwrap().unwrap();
    assert_eq!((now.refund_pending.minor(), now.refunded.minor(), now.refundable().minor()), (10000, 0, 15000));
    // A pending refund's amount is not available to another one.
    assert!(matches!(s.reserve_refund(refund_record(&p, 15001, None)).await.unwrap(), RefundReserve::Refused(_)));
    // Succeeding moves payment and order to PARTIALLY_REFUNDED, with an event and an outbox row.
    assert!(
        matches!(succeed(&s, &first, &u).await, Transition::Applied(r) if r.status == RefundStatus::Succeeded && r.provider_refund_id.as_deref() == Some(&*format!("re_{}", first.id)))
    );
    assert!(matches!(succeed(&s, &first, &u).await, Transition::NotApplied(r) if r.status == RefundStatus::Succeeded));
    let now = s.payment_by_id(p.id).await.unwrap().unwrap();
    assert_eq!(
        (now.status, now.refunded.minor(), now.refund_pending.minor()),
        (PaymentStatus::PartiallyRefunded, 10000, 0)
    );
    let order_now = s.order_by_id(o.id).await.unwrap().unwrap();
    assert_eq!((order_now.status, order_now.refunded.minor()), (OrderStatus::PartiallyRefunded, 10000));
    let events = s.order_events(o.id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!((last.from, last.to), (Some(OrderStatus::Paid), OrderStatus::PartiallyRefunded));
    let rows = s
        .list_notifications(NotificationQuery {
            order: Some(o.id),
            ..NotificationQuery { limit: 100, ..Default::default() }
        })
        .await
        .unwrap();
    assert!(
        rows.iter()
            .any(|r| r.dedupe_key == format!("refund_issued:refund:{}", first.id) && r.message.amount == "100.00")
    );
    // A failed refund releases its amount.
    let second = reserved(&s, &p, 15000).await;
    let failed = s
        .finish_refund(second.id, RefundOutcome::Failed { reason: "refused".into() }, Utc::now(), refund_notify(&u))
        .await
        .unwrap();
    assert!(
        matches!(failed, Transition::Applied(r) if r.status == RefundStatus::Failed && r.failure_reason.as_deref() == Some("refused"))
    );
    assert_eq!(s.payment_by_id(p.id).await.unwrap().unwrap().refundable().minor(), 15000);
    // The rest, with a request key: a second reservation with the key returns the first.
    let keyed = match s.reserve_refund(refund_record(&p, 15000, Some("user:1|refund|k"))).await.unwrap() {
        RefundReserve::Reserved(r) => r,
        other => panic!("{other:?}"),
    };
    assert!(
        matches!(s.reserve_refund(refund_record(&p, 15000, Some("user:1|refund|k"))).await.unwrap(), RefundReserve::Existing(r) if r.id == keyed.id)
    );
    let pending_list = s.pending_refunds(Utc::now() + Duration::seconds(1), 10).await.unwrap();
    assert_eq!(pending_list.iter().map(|r| r.id).collect::<Vec<_>>(), vec![keyed.id]);
    assert!(s.pending_refunds(Utc::now() - Duration::seconds(60), 10).await.unwrap().is_empty());
    succeed(&s, &keyed, &u).await;
    let now = s.payment_by_id(p.id).await.unwrap().unwrap();
    assert_eq!((now.status, now.refunded.minor()), (PaymentStatus::Refunded, 25000));
    let order_now = s.order_by_id(o.id).await.unwrap().unwrap();
    assert_eq!((order_now.status, order_now.refunded.minor()), (OrderStatus::Refunded, 25000));
    assert!(
        matches!(s.reserve_refund(refund_record(&p, 1, None)).await.unwrap(), RefundReserve::Refused(p) if p.status == PaymentStatus::Refunded)
    );
    let all = s.refunds_for_payment(p.id).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![RefundStatus::Succeeded, RefundStatus::Failed, RefundStatus::Succeeded]
    );
    assert_eq!(s.refund_by_id(keyed.id).await.unwrap().unwrap().amount.minor(), 15000);
}

pub async fn concurrent_partial_refunds_never_exceed_the_payment(s: DynStorage) {
    let u = user(&s, "alice").await;
    let o = s
        .insert_order(u.id, Actor::User(u.id), new_order(&[("Widget", 1, "10.00")]), Utc::now(), no_notify(), None)
        .await
        .unwrap();
    let p = inserted(&s, &o, "1").await;
    let Transition::Applied(p) = complete(&s, &p, PaymentOutcome::Succeeded, &u).await else { panic!() };
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (s, u, p) = (Arc::clone(&s), u.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            match s.reserve_refund(refund_record(&p, 100, None)).await.unwrap() {
                RefundReserve::Reserved(r) => {
                    assert!(matches!(succeed(&s, &r, &u).await, Transition::Applied(_)));
                    true
                }
                RefundReserve::Refused(_) => false,
                RefundReserve::Existing(r) => panic!("no key was given, yet {r:?}"),
            }
        }));
    }
    let mut succeeded = 0;
    for t in tasks {
        if t.await.unwrap() {
            succeeded += 1;
        }
    }
    assert_eq!(succeeded, 10);
    let now = s.payment_by_id(p.id).await.unwrap().unwrap();
    assert_eq!((now.status, now.refunded.minor(), now.refund_pending.minor()), (PaymentStatus::Refunded, 1000, 0));
    let order_now = s.order_by_id(o.id).await.unwrap().unwrap();
    assert_eq!((order_now.status, order_now.refunded.minor()), (OrderStatus::Refunded, 1000));
    let events = s.order_events(o.id).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.reason.as_deref().is_some_and(|r| r.starts_with("refund "))).count(), 10);
}
