//! Conformance checks: List filters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use super::*;

pub async fn lists_filter_users_by_prefix_orders_by_time_and_notifications_by_order(s: DynStorage) {
    let alice = user(&s, "alice").await;
    user(&s, "alicia").await;
    user(&s, "bob").await;
    let names = |users: Vec<crate::domain::User>| users.into_iter().map(|u| u.username.to_string()).collect::<Vec<_>>();
    let q = |prefix: &str| UserQuery { after: None, prefix: Some(prefix.to_owned()), active_staff: false, limit: 10 };
    assert_eq!(names(s.list_users(q("ALI")).await.unwrap()), vec!["alice", "alicia"]);
    assert_eq!(names(s.list_users(q("bob@example")).await.unwrap()), vec!["bob"]);
    assert!(s.list_users(q("%")).await.unwrap().is_empty(), "LIKE wildcards match themselves");
    assert!(s.list_users(q("a_ice")).await.unwrap().is_empty());
    let first = s
        .insert_order(
            alice.id,
            Actor::System,
            new_order(&[("A", 1, "1.00")]),
            Utc::now() - Duration::hours(2),
            notify(&["log"], &alice),
            None,
        )
        .await
        .unwrap();
    let second = s
        .insert_order(
            alice.id,
            Actor::System,
            new_order(&[("B", 1, "1.00")]),
            Utc::now(),
            notify(&["log"], &alice),
            None,
        )
        .await
        .unwrap();
    let window = |after: Option<chrono::DateTime<Utc>>, before: Option<chrono::DateTime<Utc>>| OrderQuery {
        user_id: None,
        status: None,
        before: None,
        created_after: after,
        created_before: before,
        search: None,
        limit: 10,
    };
    let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_orders(window(Some(Utc::now() - Duration::hours(1)), None)).await.unwrap()), vec![second.id]);
    assert_eq!(ids(s.list_orders(window(None, Some(Utc::now() - Duration::hours(1)))).await.unwrap()), vec![first.id]);
    assert_eq!(ids(s.list_orders(window(None, None)).await.unwrap()), vec![second.id, first.id]);
    let about = |order: OrderId| NotificationQuery { status: None, order: Some(order), after: None, limit: 10 };
    let rows = s.list_notifications(about(first.id)).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].message.order_id, first.id);
    let pending = NotificationQuery { status: Some(NotificationStatus::Sent), ..about(second.id) };
    assert!(s.list_notifications(pending).await.unwrap().is_empty());
}

pub async fn staff_reads_search_orders_total_them_and_count_open_work(s: DynStorage) {
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let now = Utc::now();
    let place = |u: &crate::domain::User, at: chrono::DateTime<Utc>| {
        let (s, u) = (Arc::clone(&s), u.clone());
        async move { s.insert_order(u.id, Actor::System, new_order(&[("A", 1, "10.00")]), at, no_notify(), None).await }
    };
    let old = place(&alice, now - Duration::days(3)).await.unwrap();
    let a2 = place(&alice, now).await.unwrap();
    let b1 = place(&bob, now).await.unwrap();

    // Search: the owner's username or email contains the text, or the order has the id.
    let search = |id: Option<OrderId>, text: &str| OrderQuery {
        search: Some(OrderSearch { id, text: text.to_owned() }),
        ..OrderQuery { limit: 10, ..Default::default() }
    };
    let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_orders(search(None, "lic")).await.unwrap()), vec![a2.id, old.id]);
    assert_eq!(ids(s.list_orders(search(None, "bob@example.c")).await.unwrap()), vec![b1.id]);
    assert_eq!(ids(s.list_orders(search(Some(b1.id), "zzz")).await.unwrap()), vec![b1.id]);
    assert!(s.list_orders(search(None, "%")).await.unwrap().is_empty(), "wildcards match themselves");
    assert!(s.list_orders(search(None, "_")).await.unwrap().is_empty());
    let narrowed = OrderQuery { created_after: Some(now - Duration::days(1)), ..search(None, "alice") };
    assert_eq!(ids(s.list_orders(narrowed).await.unwrap()), vec![a2.id]);
    let paged = OrderQuery { before: Some(a2.id), ..search(None, "example.com") };
    assert_eq!(ids(s.list_orders(paged).await.unwrap()), vec![old.id]);
    let mine = OrderQuery { user_id: Some(bob.id), ..search(None, "example") };
    assert_eq!(ids(s.list_orders(mine).await.unwrap()), vec![b1.id]);

    // Totals per status and currency over a window; a paid order counts its money.
    let p = inserted(&s, &b1, "t").await;
    assert_eq!(s.count_payments(PaymentStatus::Pending).await.unwrap(), 1);
    complete(&s, &p, PaymentOutcome::Succeeded, &bob).await;
    assert_eq!(s.count_payments(PaymentStatus::Pending).await.unwrap(), 0);
    assert_eq!(s.count_payments(PaymentStatus::Success).await.unwrap(), 1);
    assert_eq!(s.count_refunds(RefundStatus::Pending).await.unwrap(), 0);
    let mut totals = s.order_totals(now - Duration::days(1)).await.unwrap();
    totals.sort_by_key(|t| t.status.as_str());
    let summary: Vec<(OrderStatus, &str, u64, i64)> =
        totals.iter().map(|t| (t.status, t.currency.as_str(), t.orders, t.total_minor)).collect();
    assert_eq!(summary, vec![(OrderStatus::Created, "USD", 1, 1000), (OrderStatus::Paid, "USD", 1, 1000)]);
    let all: u64 = s.order_totals(now - Duration::days(7)).await.unwrap().iter().map(|t| t.orders).sum();
    assert_eq!(all, 3);

    // Live sessions: revoked ones and ones older than the window do not count.
    let session = |family: &str, started: chrono::DateTime<Utc>| RefreshTokenRecord {
        jti: format!("{family}-1"),
        family: family.into(),
        user_id: alice.id,
        expires_at: now + Duration::days(1),
        session_started_at: started,
        checked_version: None,
    };
    assert!(s.insert_refresh_token(session("s1", now)).await.unwrap());
    assert!(s.insert_refresh_token(session("s2", now)).await.unwrap());
    assert!(s.insert_refresh_token(session("s3", now - Duration::days(40))).await.unwrap());
    assert_eq!(s.live_sessions(alice.id, now - Duration::days(30)).await.unwrap(), 2);
    assert!(s.revoke_session(alice.id, "s1", now).await.unwrap());
    assert_eq!(s.live_sessions(alice.id, now - Duration::days(30)).await.unwrap(), 1);
    assert_eq!(s.live_sessions(bob.id, now - Duration::days(30)).await.unwrap(), 0);

    // Dead letters of one channel go back to pending together; other channels stay dead.
    // (A row is unique per message and channel: the two email rows are about two orders.)
    let rows = [("email", &a2), ("email", &old), ("webhook", &a2)]
        .into_iter()
        .map(|(c, o)| NewNotification {
            channel: c.to_owned(),
            message: Message::new(EventKind::OrderCreated, &alice, o, None, None),
        })
        .collect::<Vec<_>>();
    s.enqueue_notifications(rows, now).await.unwrap();
    for claimed in s.claim_notifications(now, now + Duration::seconds(30), 10, "w").await.unwrap() {
        assert!(s.mark_notification_failed(claimed.id, "w", "down", None, now).await.unwrap());
    }
    let dead = |status| NotificationQuery { status: Some(status), order: None, after: None, limit: 10 };
    assert_eq!(s.list_notifications(dead(NotificationStatus::Dead)).await.unwrap().len(), 3);
    assert_eq!(s.requeue_dead_notifications("email", now).await.unwrap(), 2);
    assert_eq!(s.requeue_dead_notifications("email", now).await.unwrap(), 0);
    let left = s.list_notifications(dead(NotificationStatus::Dead)).await.unwrap();
    assert_eq!(left.iter().map(|n| n.channel.as_str()).collect::<Vec<_>>(), vec!["webhook"]);
    let pending = s.list_notifications(dead(NotificationStatus::Pending)).await.unwrap();
    let email: Vec<u32> = pending.iter().filter(|n| n.channel == "email").map(|n| n.attempts).collect();
    assert_eq!(email, vec![0, 0]);
}
