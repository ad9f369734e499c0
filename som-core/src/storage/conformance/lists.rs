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
