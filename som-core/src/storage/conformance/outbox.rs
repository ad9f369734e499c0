//! Conformance checks: The notification outbox.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use super::*;

pub(super) async fn outbox_with(s: &DynStorage, n: usize) -> Vec<Order> {
    let u = user(s, "alice").await;
    let mut orders = Vec::new();
    for _ in 0..n {
        let items = new_order(&[("Widget", 1, "1.00")]);
        orders.push(
            s.insert_order(u.id, Actor::User(u.id), items, Utc::now(), notify(&["log"], &u), None).await.unwrap(),
        );
    }
    orders
}

pub async fn outbox_claims_lease_and_deliver(s: DynStorage) {
    outbox_with(&s, 3).await;
    let now = Utc::now();
    let lease = now + Duration::seconds(30);
    let claimed = s.claim_notifications(now, lease, 2, "a").await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|r| r.attempts == 1));
    let rest = s.claim_notifications(now, lease, 10, "b").await.unwrap();
    assert_eq!(rest.len(), 1, "leased rows are not claimed twice");
    assert!(s.claim_notifications(now, lease, 10, "c").await.unwrap().is_empty());
    assert_eq!(s.mark_notifications_sent(&[claimed[0].id], "a", now).await.unwrap(), 1);
    assert_eq!(s.mark_notifications_sent(&[claimed[1].id], "wrong-token", now).await.unwrap(), 0);
    assert!(s.release_notification(rest[0].id, "b").await.unwrap());
    let later = now + Duration::seconds(31);
    let reclaimed = s.claim_notifications(later, later + Duration::seconds(30), 10, "d").await.unwrap();
    let mut ids: Vec<_> = reclaimed.iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(ids, vec![claimed[1].id, rest[0].id], "an expired lease and a released row come back");
    let released = reclaimed.iter().find(|r| r.id == rest[0].id).unwrap();
    assert_eq!(released.attempts, 1, "a released claim does not count as an attempt");
    assert_eq!(s.mark_notifications_sent(&[claimed[1].id], "a", later).await.unwrap(), 0, "the old claim is lost");
    let counts = s.notification_counts().await.unwrap();
    assert!(counts.contains(&(NotificationStatus::Sent, 1)) && counts.contains(&(NotificationStatus::Pending, 2)));
    let sent = s
        .list_notifications(NotificationQuery {
            status: Some(NotificationStatus::Sent),
            order: None,
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].sent_at.is_some());
    // Several rows at once: those still claimed are marked, an already sent one is left alone.
    let batch = [claimed[0].id, claimed[1].id, rest[0].id];
    assert_eq!(s.mark_notifications_sent(&batch, "d", later).await.unwrap(), 2);
    assert_eq!(s.mark_notifications_sent(&batch, "d", later).await.unwrap(), 0, "sent rows stay sent once");
    let counts = s.notification_counts().await.unwrap();
    assert!(counts.contains(&(NotificationStatus::Sent, 3)) && counts.contains(&(NotificationStatus::Pending, 0)));
    assert_eq!(s.mark_notifications_sent(&[], "d", later).await.unwrap(), 0);
}

pub async fn concurrent_claims_never_overlap(s: DynStorage) {
    outbox_with(&s, 40).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let now = Utc::now();
            let mut mine = Vec::new();
            loop {
                let rows = s.claim_notifications(now, now + Duration::seconds(60), 3, &format!("t{i}")).await.unwrap();
                if rows.is_empty() {
                    break mine;
                }
                mine.extend(rows.into_iter().map(|r| r.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!((total, all.len()), (40, 40), "every row claimed exactly once");
}

pub async fn outbox_failures_reschedule_dead_letter_and_requeue(s: DynStorage) {
    outbox_with(&s, 2).await;
    let now = Utc::now();
    let rows = s.claim_notifications(now, now + Duration::seconds(30), 10, "a").await.unwrap();
    let retry_at = now + Duration::seconds(10);
    assert!(s.mark_notification_failed(rows[0].id, "a", "smtp 451", Some(retry_at), Utc::now()).await.unwrap());
    assert!(s.mark_notification_failed(rows[1].id, "a", "smtp 550", None, Utc::now()).await.unwrap());
    let early = now + Duration::seconds(5);
    assert!(s.claim_notifications(early, early + Duration::seconds(30), 10, "b").await.unwrap().is_empty());
    let due = s.claim_notifications(retry_at, retry_at + Duration::seconds(30), 10, "c").await.unwrap();
    assert_eq!(due.iter().map(|r| (r.id, r.attempts)).collect::<Vec<_>>(), vec![(rows[0].id, 2)]);
    assert_eq!(due[0].last_error.as_deref(), Some("smtp 451"));
    let dead = s
        .list_notifications(NotificationQuery {
            status: Some(NotificationStatus::Dead),
            order: None,
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(dead.iter().map(|r| r.id).collect::<Vec<_>>(), vec![rows[1].id]);
    assert_eq!(dead[0].last_error.as_deref(), Some("smtp 550"));
    let requeued = s.requeue_notification(rows[1].id, retry_at).await.unwrap();
    assert!(
        matches!(requeued, Some(Transition::Applied(ref r)) if r.status == NotificationStatus::Pending && r.attempts == 0)
    );
    assert!(matches!(s.requeue_notification(rows[1].id, retry_at).await.unwrap(), Some(Transition::NotApplied(_))));
    assert_eq!(s.requeue_notification(NotificationId::new(999_999), retry_at).await.unwrap(), None);
    let again = s.claim_notifications(retry_at, retry_at + Duration::seconds(30), 10, "d").await.unwrap();
    assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), vec![rows[1].id]);
    assert!(s.mark_notification_skipped(rows[1].id, "d", "no email address", Utc::now()).await.unwrap());
    let skipped = s
        .list_notifications(NotificationQuery {
            status: Some(NotificationStatus::Skipped),
            order: None,
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(skipped.iter().map(|r| r.last_error.as_deref()).collect::<Vec<_>>(), vec![Some("no email address")]);
    let later = retry_at + Duration::hours(1);
    assert!(s.claim_notifications(later, later, 10, "e").await.unwrap().iter().all(|r| r.id != rows[1].id));
    assert!(s.notification_counts().await.unwrap().contains(&(NotificationStatus::Skipped, 1)));
}

/// Redelivery queues a row again when it was delivered or is being delivered right now (the
/// delivery in flight loses its claim, so the row goes out once more after it); a row still
/// waiting for its delivery is left as it is.
pub async fn redelivery_requeues_delivered_and_in_flight_rows(s: DynStorage) {
    outbox_with(&s, 2).await;
    let now = Utc::now();
    let rows =
        s.list_notifications(NotificationQuery { status: None, order: None, after: None, limit: 10 }).await.unwrap();
    assert_eq!(rows.len(), 2);
    let mut again = Vec::new();
    for row in &rows {
        let (message, _) = s.event_message(&row.dedupe_key).await.unwrap().expect("the row's event");
        again.push(NewNotification { channel: row.channel.clone(), message });
    }
    assert_eq!(s.redeliver(again.clone(), now, now).await.unwrap(), 0, "rows waiting for delivery are left");

    let claimed = s.claim_notifications(now, now + Duration::seconds(30), 10, "a").await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(s.mark_notifications_sent(&[claimed[0].id], "a", now).await.unwrap(), 1);
    // One delivered, one in flight: both are queued again.
    assert_eq!(s.redeliver(again, now, now).await.unwrap(), 2);
    assert_eq!(
        s.mark_notifications_sent(&[claimed[1].id], "a", now).await.unwrap(),
        0,
        "the delivery in flight when the redelivery came does not count for it"
    );
    let reclaimed = s.claim_notifications(now, now + Duration::seconds(30), 10, "b").await.unwrap();
    assert_eq!(reclaimed.len(), 2, "both go out again");
    assert!(reclaimed.iter().all(|r| r.attempts == 1), "with their attempts counted afresh");
}
