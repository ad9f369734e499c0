//! Several OrderSystem instances (separate pools, as separate processes would have) sharing one
//! PostgreSQL database; and the database going away under load. Runs when
//! `SOM_TEST_POSTGRES_URL` is set (CI sets it); fails when it is set and unreachable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use som_core::domain::NotificationStatus;
use som_core::domain::{Caller, OrderStatus, PaymentStatus};
use som_core::notify::RecordingNotifier;
use som_core::payment::MockProvider;
use som_core::testing::{TestDatabase, admin_url};
use som_core::{Config, Error, OrderSystem};

struct Node {
    som: OrderSystem,
    notes: Arc<RecordingNotifier>,
    mock: Arc<MockProvider>,
}

async fn node(url: &str) -> Node {
    let mut config = Config { database_url: url.to_owned(), database_pool_size: 8, ..Config::default() };
    config.outbox.poll_interval = Duration::from_secs(5); // wake-ups must come from NOTIFY, not polling
    config.outbox.batch_size = 16;
    let notes = Arc::new(RecordingNotifier::new("log"));
    let mock = Arc::new(MockProvider::new(0));
    let som =
        OrderSystem::builder().config(config).notifier(notes.clone()).provider(mock.clone()).build().await.unwrap();
    Node { som, notes, mock }
}

async fn database() -> Option<TestDatabase> {
    let Some(admin) = admin_url() else {
        eprintln!("SOM_TEST_POSTGRES_URL is not set: skipping the multi-process Postgres checks");
        return None;
    };
    Some(TestDatabase::create(&admin).await.expect("SOM_TEST_POSTGRES_URL is set but the server is unreachable"))
}

use som_core::testing::seed_order as order;

use som_core::testing::customer as user;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_deliver_every_notification_exactly_once() {
    let Some(db) = database().await else { return };
    let a = node(db.url()).await;
    let b = node(db.url()).await;
    let da = a.som.spawn_dispatcher();
    let db_ = b.som.spawn_dispatcher();
    let alice = user(&a.som, "alice").await;
    let mut tasks = Vec::new();
    for i in 0..500 {
        let som = if i % 2 == 0 { a.som.clone() } else { b.som.clone() };
        tasks.push(tokio::spawn(async move { som.create_order(alice, order()).await.unwrap() }));
        if tasks.len() >= 32 {
            for t in tasks.drain(..) {
                t.await.unwrap();
            }
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let delivered = a.notes.delivered().len() + b.notes.delivered().len();
        if delivered >= 500 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {delivered} of 500 delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    da.shutdown().await;
    db_.shutdown().await;
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for n in a.notes.delivered().into_iter().chain(b.notes.delivered()) {
        *per_key.entry(n.dedupe_key).or_default() += 1;
    }
    assert_eq!(per_key.len(), 500);
    assert!(per_key.values().all(|n| *n == 1), "every notification delivered exactly once");
    assert!(!a.notes.delivered().is_empty() && !b.notes.delivered().is_empty(), "both dispatchers took part");
    let counts = a.som.notification_counts(Caller::System).await.unwrap();
    assert!(
        counts.contains(&(NotificationStatus::Sent, 500)) && counts.contains(&(NotificationStatus::Pending, 0)),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_initiates_and_confirms_across_processes_act_once() {
    let Some(db) = database().await else { return };
    let a = node(db.url()).await;
    let b = node(db.url()).await;
    let alice = user(&a.som, "alice").await;
    let o = a.som.create_order(alice, order()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let som = if i % 2 == 0 { a.som.clone() } else { b.som.clone() };
        tasks.push(tokio::spawn(async move { som.initiate_payment(alice, o.id).await.unwrap().id }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one payment");
    assert_eq!(a.som.order_payments(alice, o.id).await.unwrap().len(), 1);
    assert!(a.mock.initiate_calls() <= 1 && b.mock.initiate_calls() <= 1, "at most one provider call per process");
    let mut tasks = Vec::new();
    for i in 0..32 {
        let som = if i % 2 == 0 { a.som.clone() } else { b.som.clone() };
        let id = ids[0];
        tasks.push(tokio::spawn(async move { som.confirm_payment(alice, id).await.unwrap().status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), PaymentStatus::Success);
    }
    assert_eq!(a.som.order(alice, o.id).await.unwrap().status, OrderStatus::Paid);
    let history = a.som.order_history(alice, o.id).await.unwrap();
    assert_eq!(history.iter().filter(|h| h.to == OrderStatus::Paid).count(), 1);
    let rows = a.som.notifications(Caller::System, None, None, 100).await.unwrap();
    assert_eq!(rows.iter().filter(|r| r.kind.as_str() == "payment_succeeded").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_database_is_a_retryable_error_and_service_recovers() {
    let Some(db) = database().await else { return };
    let a = node(db.url()).await;
    let alice = user(&a.som, "alice").await;
    a.som.create_order(alice, order()).await.unwrap();
    for _ in 0..3 {
        db.terminate_connections().await.unwrap();
        for _ in 0..5 {
            match a.som.list_orders(alice, Default::default()).await {
                Ok(_) => {}
                Err(e) => assert!(matches!(e, Error::Unavailable(_)), "only retryable errors: {e:?}"),
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match a.som.create_order(alice, order()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                assert!(tokio::time::Instant::now() < deadline, "did not recover: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(a.som.list_orders(alice, Default::default()).await.unwrap().items.len(), 2);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_not_a_crash() {
    let err = OrderSystem::builder()
        .config(Config { database_url: "postgres://postgres@127.0.0.1:1/som".into(), ..Config::default() })
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
}
