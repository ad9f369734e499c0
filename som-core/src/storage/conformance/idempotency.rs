//! Conformance checks: Idempotency keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use super::*;

pub async fn idempotency_keys_replay_mismatch_and_progress(s: DynStorage) {
    let now = Utc::now();
    let key = IdempotencyKey { scope: "user:1".into(), operation: "create_order", key: "k1".into() };
    let exp = now + Duration::hours(24);
    let stale = now - Duration::minutes(2);
    let begin = |k: &IdempotencyKey, h: &'static str, at: chrono::DateTime<Utc>| {
        let (s, k) = (Arc::clone(&s), k.clone());
        async move { s.begin_idempotency(&k, h, at, at + Duration::hours(24), at - Duration::minutes(2)).await.unwrap() }
    };
    assert_eq!(s.begin_idempotency(&key, "h1", now, exp, stale).await.unwrap(), IdempotencyBegin::Started);
    assert_eq!(begin(&key, "h1", now).await, IdempotencyBegin::InProgress);
    assert_eq!(begin(&key, "h2", now).await, IdempotencyBegin::Mismatch);
    s.finish_idempotency(&key, "{\"id\":1}").await.unwrap();
    s.finish_idempotency(&key, "{\"id\":2}").await.unwrap();
    assert_eq!(begin(&key, "h1", now).await, IdempotencyBegin::Replay("{\"id\":1}".into()));
    let other_scope = IdempotencyKey { scope: "user:2".into(), ..key.clone() };
    assert_eq!(begin(&other_scope, "h9", now).await, IdempotencyBegin::Started);
    let other_op = IdempotencyKey { operation: "cancel_order", ..key.clone() };
    assert_eq!(begin(&other_op, "h9", now).await, IdempotencyBegin::Started);
    s.abandon_idempotency(&other_op).await.unwrap();
    assert_eq!(begin(&other_op, "h8", now).await, IdempotencyBegin::Started);
    let later = now + Duration::minutes(5);
    assert_eq!(
        begin(&other_op, "h8", later).await,
        IdempotencyBegin::Started,
        "a key held by a dead request is taken over"
    );
    let expired = now + Duration::hours(25);
    assert_eq!(begin(&key, "h2", expired).await, IdempotencyBegin::Started, "expired keys start afresh");
    assert!(s.prune_idempotency(now + Duration::hours(100)).await.unwrap() >= 2);
    assert_eq!(begin(&other_scope, "h0", now).await, IdempotencyBegin::Started);
}

pub async fn idempotency_results_are_written_with_the_effect(s: DynStorage) {
    let u = user(&s, "alice").await;
    let now = Utc::now();
    let key = IdempotencyKey { scope: format!("user:{}", u.id), operation: "create_order", key: "order-1".into() };
    let exp = now + Duration::hours(24);
    assert_eq!(s.begin_idempotency(&key, "h", now, exp, now).await.unwrap(), IdempotencyBegin::Started);
    let slot = Some(IdempotencySlot { key: key.clone() });
    let o =
        s.insert_order(u.id, Actor::User(u.id), new_order(&[("A", 1, "1.00")]), now, no_notify(), slot).await.unwrap();
    let IdempotencyBegin::Replay(json) = s.begin_idempotency(&key, "h", now, exp, now).await.unwrap() else {
        panic!("the result is recorded with the order")
    };
    assert_eq!(serde_json::from_str::<Order>(&json).unwrap(), o);
}
