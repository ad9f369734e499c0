//! The storage conformance suite: one set of async checks, written once, that every
//! [`Storage`] backend must pass. Each check takes a fresh, empty, migrated storage.
//!
//! Use [`storage_conformance_tests!`](crate::storage_conformance_tests) to generate one test
//! per check for a backend:
//!
//! ```ignore
//! som_core::storage_conformance_tests!(async { (my_fresh_storage().await, ()) });
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use chrono::{Duration, Utc};

use super::*;
use crate::domain::{Currency, EventKind, ItemInput, Money, NewOrder, OrderInput, PaymentStatus, RefundStatus};

/// Generates a `#[tokio::test]` per conformance check, each on storage from `$make`: an
/// expression evaluating to a future of `(DynStorage, guard)`, where the guard (a temporary
/// directory, a throwaway database) lives as long as the test.
#[macro_export]
macro_rules! storage_conformance_tests {
    ($make:expr) => {
        $crate::storage_conformance_tests!(@each $make;
            settings_are_initialised_once,
            users_are_unique_by_username_and_email,
            users_list_in_id_order_and_staff_can_be_set,
            refresh_tokens_rotate_once_and_reuse_revokes_the_family,
            sessions_end_by_revocation_version_and_disabling,
            orders_are_stored_with_items_event_and_outbox_rows,
            orders_list_newest_first_by_cursor_and_filter,
            cancelling_is_conditional_and_voids_the_pending_payment,
            one_live_payment_per_order,
            concurrent_payment_inserts_yield_one_payment,
            completing_a_payment_is_conditional_and_pays_the_order,
            concurrent_completions_apply_once,
            declined_payments_fail_and_leave_the_order_payable,
            outbox_claims_lease_and_deliver,
            concurrent_claims_never_overlap,
            outbox_failures_reschedule_dead_letter_and_requeue,
            idempotency_keys_replay_mismatch_and_progress,
            idempotency_results_are_written_with_the_effect,
            refunds_reserve_within_the_captured_amount_and_finish_once,
            concurrent_partial_refunds_never_exceed_the_payment,
            lists_filter_users_by_prefix_orders_by_time_and_notifications_by_order,
        );
    };
    (@each $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (storage, guard): ($crate::storage::DynStorage, _) = $make.await;
                $crate::storage::conformance::$name(storage).await;
                drop(guard);
            }
        )+
    };
}

async fn user(s: &DynStorage, name: &str) -> crate::domain::User {
    s.insert_user(NewUserRecord {
        username: Username::parse(name).unwrap(),
        email: Some(Email::parse(&format!("{name}@example.com")).unwrap()),
        password_hash: "$argon2id$not-a-real-hash".into(),
        is_staff: false,
        created_at: Utc::now(),
    })
    .await
    .unwrap()
}

fn new_order(prices: &[(&str, i64, &str)]) -> NewOrder {
    let input = OrderInput {
        items: prices
            .iter()
            .map(|(n, q, p)| ItemInput { name: (*n).into(), quantity: *q, price: (*p).into() })
            .collect(),
        currency: None,
    };
    NewOrder::parse(&input, Currency::USD).unwrap()
}

fn notify(channels: &[&str], user: &crate::domain::User) -> OrderNotify {
    let channels: Vec<String> = channels.iter().map(|c| (*c).to_owned()).collect();
    let user = user.clone();
    Box::new(move |o| {
        channels
            .iter()
            .map(|c| NewNotification {
                channel: c.clone(),
                message: Message::new(EventKind::OrderCreated, &user, o, None, None),
            })
            .collect()
    })
}

fn pay_notify(kind: EventKind, user: &crate::domain::User) -> PaymentNotify {
    let user = user.clone();
    Box::new(move |o, p| {
        vec![NewNotification { channel: "log".into(), message: Message::new(kind, &user, o, Some(p), None) }]
    })
}

fn no_notify() -> OrderNotify {
    Box::new(|_| Vec::new())
}

async fn order(s: &DynStorage, u: &crate::domain::User) -> Order {
    let items = new_order(&[("Widget", 2, "100.00"), ("Gadget", 1, "50.00")]);
    s.insert_order(u.id, Actor::User(u.id), items, Utc::now(), no_notify(), None).await.unwrap()
}

fn payment_record(o: &Order, tag: &str) -> NewPaymentRecord {
    NewPaymentRecord {
        order_id: o.id,
        user_id: o.user_id,
        provider: "mock".into(),
        provider_payment_id: format!("pp_{tag}"),
        transaction_id: format!("txn_{tag}_{}", crate::random_token(6)),
        method: "mock_success".into(),
        attempt: 1,
        amount: o.total,
        created_at: Utc::now(),
    }
}

async fn inserted(s: &DynStorage, o: &Order, tag: &str) -> Payment {
    match s.insert_payment(payment_record(o, tag), None).await.unwrap() {
        PaymentInsert::Inserted(p) => p,
        other => panic!("expected an inserted payment, got {other:?}"),
    }
}

async fn complete(
    s: &DynStorage,
    p: &Payment,
    outcome: PaymentOutcome,
    u: &crate::domain::User,
) -> Transition<Payment> {
    let kind =
        if outcome == PaymentOutcome::Succeeded { EventKind::PaymentSucceeded } else { EventKind::PaymentFailed };
    s.complete_payment(p.id, outcome, Actor::User(u.id), Utc::now(), pay_notify(kind, u), None).await.unwrap()
}

pub async fn settings_are_initialised_once(s: DynStorage) {
    assert!(s.schema_version().await.unwrap() >= 1);
    s.ping().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move { s.get_or_init_setting("secret", vec![i; 4]).await.unwrap() }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.unwrap());
    }
    values.dedup();
    assert_eq!(values.len(), 1, "every caller sees the same value");
    assert_eq!(s.get_or_init_setting("secret", vec![9]).await.unwrap(), values[0]);
}

pub async fn users_are_unique_by_username_and_email(s: DynStorage) {
    let alice = user(&s, "alice").await;
    assert_eq!(s.user_by_id(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(s.user_by_username("alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(s.user_by_username("ALICE").await.unwrap(), None, "usernames are case-sensitive");
    let (found, hash) = s.user_credentials("alice").await.unwrap().unwrap();
    assert_eq!((found, hash.as_str()), (alice.clone(), "$argon2id$not-a-real-hash"));
    let dup = |name: &str, email: &str| NewUserRecord {
        username: Username::parse(name).unwrap(),
        email: Some(Email::parse(email).unwrap()),
        password_hash: "x".into(),
        is_staff: false,
        created_at: Utc::now(),
    };
    let err = s.insert_user(dup("alice", "other@example.com")).await.unwrap_err();
    assert!(err.validation_errors().is_some_and(|e| e.fields().contains_key("username")), "{err:?}");
    let err = s.insert_user(dup("alice2", "ALICE@example.com")).await.unwrap_err();
    assert!(err.validation_errors().is_some_and(|e| e.fields().contains_key("email")), "{err:?}");
    let no_email = |name: &str| NewUserRecord { email: None, ..dup(name, "x@example.com") };
    s.insert_user(no_email("bob")).await.unwrap();
    s.insert_user(no_email("carol")).await.unwrap();
    assert_eq!(s.user_by_id(UserId::new(999_999)).await.unwrap(), None);
}

pub async fn users_list_in_id_order_and_staff_can_be_set(s: DynStorage) {
    let a = user(&s, "a").await;
    let b = user(&s, "b").await;
    let c = user(&s, "c").await;
    let all = s.list_users(UserQuery { after: None, prefix: None, limit: 10 }).await.unwrap();
    assert_eq!(all.iter().map(|u| u.id).collect::<Vec<_>>(), vec![a.id, b.id, c.id]);
    let after = s.list_users(UserQuery { after: Some(a.id), prefix: None, limit: 1 }).await.unwrap();
    assert_eq!(after.iter().map(|u| u.id).collect::<Vec<_>>(), vec![b.id]);
    let staff = s.set_staff(b.id, true).await.unwrap().unwrap();
    assert!(staff.is_staff);
    assert!(s.user_by_id(b.id).await.unwrap().unwrap().is_staff);
    assert_eq!(s.set_staff(UserId::new(999_999), true).await.unwrap(), None);
}

pub async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family(s: DynStorage) {
    let u = user(&s, "alice").await;
    let now = Utc::now();
    let rec = |jti: &str, family: &str| RefreshTokenRecord {
        jti: jti.into(),
        family: family.into(),
        user_id: u.id,
        expires_at: now + Duration::days(1),
        session_started_at: now,
    };
    let rotate = |uid: UserId, fam: &'static str, old: &'static str, new: &'static str, at| {
        let s = Arc::clone(&s);
        let r = rec(new, fam);
        async move { s.rotate_refresh_token(uid, fam, old, r, at).await.unwrap() }
    };
    s.insert_refresh_token(rec("t1", "f")).await.unwrap();
    assert_eq!(rotate(u.id, "f", "t1", "t2", now).await, RotateOutcome::Rotated);
    assert_eq!(rotate(u.id, "f", "t1", "t3", now).await, RotateOutcome::ReuseDetected);
    assert_eq!(rotate(u.id, "f", "t2", "t4", now).await, RotateOutcome::Rejected, "the family is revoked after reuse");
    s.insert_refresh_token(rec("g1", "g")).await.unwrap();
    assert_eq!(rotate(u.id, "other", "g1", "g2", now).await, RotateOutcome::Rejected);
    assert_eq!(rotate(UserId::new(u.id.get() + 1), "g", "g1", "g2", now).await, RotateOutcome::Rejected);
    assert_eq!(rotate(u.id, "g", "g1", "g2", now + Duration::days(2)).await, RotateOutcome::Rejected, "expired");
    assert_eq!(rotate(u.id, "g", "nope", "g2", now).await, RotateOutcome::Rejected);
    assert_eq!(rotate(u.id, "g", "g1", "g2", now).await, RotateOutcome::Rotated);
}

pub async fn sessions_end_by_revocation_version_and_disabling(s: DynStorage) {
    let u = user(&s, "alice").await;
    let now = Utc::now();
    let record = |jti: &str, family: &str| RefreshTokenRecord {
        jti: jti.into(),
        family: family.into(),
        user_id: u.id,
        expires_at: now + Duration::days(1),
        session_started_at: now,
    };
    let start = |jti: &str, family: &str| {
        let (s, rec) = (Arc::clone(&s), record(jti, family));
        async move { s.insert_refresh_token(rec).await.unwrap() }
    };
    let live = |family: &'static str| {
        let s = Arc::clone(&s);
        async move { s.session_state(u.id, family).await.unwrap().map(|state| state.live) }
    };
    for (jti, family) in [("a1", "a"), ("b1", "b"), ("c1", "c"), ("d1", "d")] {
        start(jti, family).await;
    }
    assert_eq!(live("a").await, Some(true));
    assert_eq!(live("nope").await, None, "an unknown session");
    assert_eq!(s.session_state(UserId::new(999_999), "a").await.unwrap(), None, "an unknown user");

    // Logging out ends one session and its refresh tokens.
    assert!(s.revoke_session(u.id, "a", now).await.unwrap());
    assert!(!s.revoke_session(u.id, "a", now).await.unwrap(), "already ended");
    assert_eq!(live("a").await, Some(false));
    assert_eq!(live("b").await, Some(true));
    let next = record("a2", "a");
    assert_eq!(s.rotate_refresh_token(u.id, "a", "a1", next, now).await.unwrap(), RotateOutcome::Rejected);

    // A password change ends every session but the one that made it, in one transaction.
    assert!(s.end_sessions(u.id, Some("b"), Some("new-hash".into()), now).await.unwrap());
    assert_eq!((live("b").await, live("c").await, live("d").await), (Some(true), Some(false), Some(false)));
    assert_eq!(s.user_credentials("alice").await.unwrap().map(|(_, h)| h), Some("new-hash".to_owned()));
    let next = record("b2", "b");
    assert_eq!(s.rotate_refresh_token(u.id, "b", "b1", next, now).await.unwrap(), RotateOutcome::Rotated);
    assert!(!s.end_sessions(UserId::new(999_999), None, None, now).await.unwrap());

    // A session started after the change is live; disabling ends it and every other.
    start("e1", "e").await;
    assert_eq!(live("e").await, Some(true));
    let disabled = s.set_active(u.id, false, now).await.unwrap().unwrap();
    assert!(!disabled.is_active);
    assert_eq!((live("b").await, live("e").await), (Some(false), Some(false)));
    let enabled = s.set_active(u.id, true, now).await.unwrap().unwrap();
    assert!(enabled.is_active);
    assert_eq!(live("e").await, Some(false), "enabling does not bring ended sessions back");
    start("f1", "f").await;
    assert_eq!(live("f").await, Some(true));
    assert_eq!(s.set_active(UserId::new(999_999), false, now).await.unwrap(), None);

    // Expired tokens and old sessions without tokens are pruned; live ones stay.
    assert!(s.prune_sessions(now + Duration::days(2), now - Duration::days(1)).await.unwrap() > 0);
    assert_eq!(live("f").await, Some(true), "a session's row stays while it may have access tokens");
    s.prune_sessions(now + Duration::days(2), now + Duration::seconds(1)).await.unwrap();
    assert_eq!(live("f").await, None);
}

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

pub async fn one_live_payment_per_order(s: DynStorage) {
    let u = user(&s, "alice").await;
    let o = order(&s, &u).await;
    let p = inserted(&s, &o, "1").await;
    assert_eq!((p.status, p.amount, p.attempt), (PaymentStatus::Pending, o.total, 1));
    assert_eq!(s.insert_payment(payment_record(&o, "2"), None).await.unwrap(), PaymentInsert::Existing(p.clone()));
    assert_eq!(s.live_payment(o.id).await.unwrap(), Some(p.clone()));
    assert_eq!(s.payment_count(o.id).await.unwrap(), 1);
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
    assert_eq!(s.payment_count(o.id).await.unwrap(), 1);
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
    assert_eq!(s.payment_count(o.id).await.unwrap(), 2);
    s.record_transient_failure(p.id).await.unwrap();
    assert_eq!(s.transient_failures(p.id).await.unwrap(), 2, "a failed payment counts no more");
}

async fn outbox_with(s: &DynStorage, n: usize) -> Vec<Order> {
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
    assert!(s.mark_notification_sent(claimed[0].id, "a", now).await.unwrap());
    assert!(!s.mark_notification_sent(claimed[1].id, "wrong-token", now).await.unwrap());
    assert!(s.release_notification(rest[0].id, "b").await.unwrap());
    let later = now + Duration::seconds(31);
    let reclaimed = s.claim_notifications(later, later + Duration::seconds(30), 10, "d").await.unwrap();
    let mut ids: Vec<_> = reclaimed.iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(ids, vec![claimed[1].id, rest[0].id], "an expired lease and a released row come back");
    let released = reclaimed.iter().find(|r| r.id == rest[0].id).unwrap();
    assert_eq!(released.attempts, 1, "a released claim does not count as an attempt");
    assert!(!s.mark_notification_sent(claimed[1].id, "a", later).await.unwrap(), "the old claim is lost");
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
    assert!(s.mark_notification_failed(rows[0].id, "a", "smtp 451", Some(retry_at)).await.unwrap());
    assert!(s.mark_notification_failed(rows[1].id, "a", "smtp 550", None).await.unwrap());
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
    assert!(s.mark_notification_skipped(rows[1].id, "d", "no email address").await.unwrap());
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

/// A paid order (total 250.00 USD) and its SUCCESS payment.
async fn paid(s: &DynStorage, u: &crate::domain::User) -> (Order, Payment) {
    let o = order(s, u).await;
    let p = inserted(s, &o, &crate::random_token(6)).await;
    let Transition::Applied(p) = complete(s, &p, PaymentOutcome::Succeeded, u).await else { panic!("not applied") };
    (o, p)
}

fn refund_record(p: &Payment, minor: i64, key: Option<&str>) -> NewRefundRecord {
    NewRefundRecord {
        payment_id: p.id,
        amount: Money::from_minor(minor, Currency::USD),
        reason: Some("damaged".into()),
        actor: Actor::System,
        request_key: key.map(str::to_owned),
        created_at: Utc::now(),
    }
}

fn refund_notify(user: &crate::domain::User) -> RefundNotify {
    let user = user.clone();
    Box::new(move |o, p, r| vec![NewNotification { channel: "log".into(), message: Message::refund(&user, o, p, r) }])
}

async fn reserved(s: &DynStorage, p: &Payment, minor: i64) -> Refund {
    match s.reserve_refund(refund_record(p, minor, None)).await.unwrap() {
        RefundReserve::Reserved(r) => r,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

async fn succeed(s: &DynStorage, r: &Refund, u: &crate::domain::User) -> Transition<Refund> {
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

pub async fn lists_filter_users_by_prefix_orders_by_time_and_notifications_by_order(s: DynStorage) {
    let alice = user(&s, "alice").await;
    user(&s, "alicia").await;
    user(&s, "bob").await;
    let names = |users: Vec<crate::domain::User>| users.into_iter().map(|u| u.username.to_string()).collect::<Vec<_>>();
    let q = |prefix: &str| UserQuery { after: None, prefix: Some(prefix.to_owned()), limit: 10 };
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
