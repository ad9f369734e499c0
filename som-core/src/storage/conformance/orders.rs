//! Conformance checks: Orders.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use super::*;

pub async fn orders_are_stored_with_items_event_and_outbox_rows(s: DynStorage) {
    let u = user(&s, "alice").await;
    let items = new_order(&[("Widget", 2, "100.00"), ("Gadget", 1, "50.00")]);
    let o =
        s.insert_order(u.id, Actor::User(u.id), items, Utc::now(), notify(&["log", "smtp"], &u), None).await.unwrap();
    assert_eq!(o.total, Money::from_minor(25_000, Currency::USD));
    let stored = s.order_by_id(o.id).await.unwrap().unwrap();
    assert_eq!(stored, o);
    assert_eq!(stored.items.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), vec!["Widget", "Gadget"]);
    let events = s.order_events(o.id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].from, events[0].to, &events[0].actor), (None, OrderStatus::Created, &Actor::User(u.id)));
    let rows =
        s.list_notifications(NotificationQuery { status: None, order: None, after: None, limit: 10 }).await.unwrap();
    assert_eq!(rows.len(), 2, "one row per channel");
    assert!(rows.iter().all(|r| r.dedupe_key == format!("order_created:order:{}", o.id)));
    assert!(rows.iter().all(|r| r.status == NotificationStatus::Pending && r.attempts == 0));
    assert_eq!(rows[0].recipient.as_deref(), Some("alice@example.com"));
    assert_eq!(rows[0].message.amount, "250.00");
    assert_eq!(s.order_by_id(OrderId::new(999_999)).await.unwrap(), None);
}

pub async fn orders_list_newest_first_by_cursor_and_filter(s: DynStorage) {
    let a = user(&s, "alice").await;
    let b = user(&s, "bob").await;
    let mut mine = Vec::new();
    for i in 0..7 {
        mine.push(order(&s, &a).await.id);
        if i % 3 == 0 {
            order(&s, &b).await;
        }
    }
    mine.reverse();
    let q = |before, limit| OrderQuery {
        user_id: Some(a.id),
        status: None,
        before,
        search: None,
        limit,
        created_after: None,
        created_before: None,
    };
    let first = s.list_orders(q(None, 3)).await.unwrap();
    assert_eq!(first.iter().map(|o| o.id).collect::<Vec<_>>(), mine[..3]);
    let second = s.list_orders(q(Some(first[2].id), 3)).await.unwrap();
    assert_eq!(second.iter().map(|o| o.id).collect::<Vec<_>>(), mine[3..6]);
    let third = s.list_orders(q(Some(second[2].id), 3)).await.unwrap();
    assert_eq!(third.iter().map(|o| o.id).collect::<Vec<_>>(), mine[6..]);
    assert!(first.iter().all(|o| o.user_id == a.id && o.items.len() == 2));
    s.cancel_order(mine[1], Actor::System, Utc::now(), no_notify(), None).await.unwrap();
    let status = Some(OrderStatus::Cancelled);
    let cancelled = s
        .list_orders(OrderQuery {
            user_id: Some(a.id),
            status,
            before: None,
            search: None,
            limit: 10,
            created_after: None,
            created_before: None,
        })
        .await
        .unwrap();
    assert_eq!(cancelled.iter().map(|o| o.id).collect::<Vec<_>>(), vec![mine[1]]);
    let everyone = s
        .list_orders(OrderQuery {
            user_id: None,
            status: None,
            before: None,
            search: None,
            limit: 100,
            created_after: None,
            created_before: None,
        })
        .await
        .unwrap();
    assert_eq!(everyone.len(), 10);
    assert!(everyone.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(s.latest_order(a.id).await.unwrap().map(|o| o.id), Some(mine[0]));
    let nobody = user(&s, "carol").await;
    assert_eq!(s.latest_order(nobody.id).await.unwrap(), None);
}

pub async fn cancelling_is_conditional_and_voids_the_pending_payment(s: DynStorage) {
    let u = user(&s, "alice").await;
    let o = order(&s, &u).await;
    let p = inserted(&s, &o, "1").await;
    let cancelled = s.cancel_order(o.id, Actor::User(u.id), Utc::now(), notify(&["log"], &u), None).await.unwrap();
    let Transition::Applied(c) = cancelled else { panic!("expected the cancel to apply") };
    assert_eq!(c.status, OrderStatus::Cancelled);
    assert_eq!(s.payment_by_id(p.id).await.unwrap().unwrap().status, PaymentStatus::Cancelled);
    let again = s.cancel_order(o.id, Actor::User(u.id), Utc::now(), no_notify(), None).await.unwrap();
    assert!(matches!(again, Transition::NotApplied(o) if o.status == OrderStatus::Cancelled));
    let events = s.order_events(o.id).await.unwrap();
    assert_eq!(events.iter().map(|e| e.to).collect::<Vec<_>>(), vec![OrderStatus::Created, OrderStatus::Cancelled]);
    let missing = s.cancel_order(OrderId::new(999_999), Actor::System, Utc::now(), no_notify(), None).await;
    assert!(matches!(missing, Err(Error::NotFound(_))));
    let late = s.insert_payment(payment_record(&o, "2"), None).await.unwrap();
    assert_eq!(late, PaymentInsert::OrderNotPayable(OrderStatus::Cancelled));
}
