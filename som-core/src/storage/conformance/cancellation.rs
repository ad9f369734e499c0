//! Conformance checks: writes whose callers stop waiting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use super::*;

const WRITES: usize = 40;

/// Runs `write` as the `i`th caller that gives up would: every other one after exactly one
/// poll, the rest after up to a few milliseconds, so that the drops land at every stage of a
/// write. `Some` with the result when it finished first.
async fn abandoned<F: Future>(i: usize, write: F) -> Option<F::Output> {
    if i % 2 == 1 {
        return tokio::time::timeout(Duration::from_micros((i % 10) as u64 * 300), write).await.ok();
    }
    let mut write = std::pin::pin!(write);
    std::future::poll_fn(|cx| match write.as_mut().poll(cx) {
        std::task::Poll::Ready(done) => std::task::Poll::Ready(Some(done)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// Waits (up to a deadline) until `count` says `want`.
async fn settles<F, Fut>(what: &str, want: usize, count: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = usize>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let have = count().await;
        if have == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {have} of {want} after 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn all_orders(user: crate::domain::UserId) -> OrderQuery {
    OrderQuery {
        user_id: Some(user),
        status: None,
        before: None,
        search: None,
        limit: 1000,
        created_after: None,
        created_before: None,
    }
}

/// Writes run through [`crate::storage::complete`] reach their end when the caller's future is
/// dropped at any point after its first poll: every order, payment and completion whose caller
/// gave up is there in full. Writes called on the backend directly and abandoned halfway leave
/// nothing behind that breaks later writes: every acknowledged one is kept, and the storage
/// goes on committing (no connection is left inside a transaction).
pub async fn writes_run_to_completion_when_their_callers_stop_waiting(s: DynStorage) {
    let u = user(&s, "alice").await;
    let orders = |s: DynStorage| async move { s.list_orders(all_orders(u.id)).await.unwrap() };

    // Orders, each caller giving up at once or soon after. Each write first yields, as a backend
    // would that waits for a connection, so that none has reached the database by the first
    // poll: what finishes it is `complete`, not the backend.
    for i in 0..WRITES {
        let (items, notify) = (new_order(&[("Widget", 2, "100.00"), ("Gadget", 1, "50.00")]), notify(&["log"], &u));
        let write = crate::storage::complete(&s, move |s| async move {
            tokio::task::yield_now().await;
            s.insert_order(u.id, Actor::User(u.id), items, Utc::now(), notify, None).await
        });
        let _ = abandoned(i, write).await;
    }
    settles("orders written", WRITES, || async { orders(Arc::clone(&s)).await.len() }).await;
    let placed = orders(Arc::clone(&s)).await;
    for o in &placed {
        assert_eq!(o.items.len(), 2, "order {} was written whole", o.id);
        assert_eq!(s.order_events(o.id).await.unwrap().len(), 1);
    }
    let query = NotificationQuery { status: None, order: None, after: None, limit: 1000 };
    assert_eq!(s.list_notifications(query).await.unwrap().len(), WRITES, "one outbox row per order");

    // A payment for each, then its completion, both abandoned.
    for (i, o) in placed.iter().enumerate() {
        let record = payment_record(o, &format!("drop{i}"));
        let write = crate::storage::complete(&s, move |s| async move {
            tokio::task::yield_now().await;
            s.insert_payment(record, None).await
        });
        let _ = abandoned(i, write).await;
    }
    let live = |s: DynStorage, ids: Vec<OrderId>| async move {
        let mut n = 0;
        for id in ids {
            n += usize::from(s.live_payment(id).await.unwrap().is_some());
        }
        n
    };
    let ids: Vec<OrderId> = placed.iter().map(|o| o.id).collect();
    settles("payments written", WRITES, || live(Arc::clone(&s), ids.clone())).await;
    for (i, o) in placed.iter().enumerate() {
        let p = s.live_payment(o.id).await.unwrap().unwrap();
        let notify = pay_notify(EventKind::PaymentSucceeded, &u);
        let write = crate::storage::complete(&s, move |s| async move {
            tokio::task::yield_now().await;
            s.complete_payment(p.id, PaymentOutcome::Succeeded, Actor::User(u.id), Utc::now(), notify, None).await
        });
        let _ = abandoned(i, write).await;
    }
    let paid = |s: DynStorage| async move {
        let query = OrderQuery { status: Some(OrderStatus::Paid), ..all_orders(u.id) };
        s.list_orders(query).await.unwrap().len()
    };
    settles("payments completed", WRITES, || paid(Arc::clone(&s))).await;
    settles("outbox rows written", 2 * WRITES, || {
        let (s, query) = (Arc::clone(&s), query);
        async move { s.list_notifications(query).await.unwrap().len() }
    })
    .await;

    // The same writes called on the backend directly and abandoned at the same points.
    let mut acknowledged = Vec::new();
    for i in 0..WRITES {
        let items = new_order(&[("Widget", 1, "1.00")]);
        let write = s.insert_order(u.id, Actor::User(u.id), items, Utc::now(), notify(&["log"], &u), None);
        if let Some(written) = abandoned(i, write).await {
            acknowledged.push(written.unwrap().id);
        }
    }
    // Then every write still commits for every reader: one that landed on a connection left
    // inside an abandoned transaction would be acknowledged but seen by nobody else.
    for _ in 0..WRITES {
        acknowledged.push(order(&s, &u).await.id);
    }
    let after = orders(Arc::clone(&s)).await;
    for id in acknowledged {
        assert!(after.iter().any(|o| o.id == id), "acknowledged order {id} is kept and seen");
        assert!(s.order_by_id(id).await.unwrap().is_some(), "acknowledged order {id} is seen by id");
    }
}
