//! Backend-specific tests (the conformance suite covers the behaviour every backend shares).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::task::Poll;
use std::time::Duration;

use sqlx::Connection as _;

use super::{loopback_without_tls, pool_options};
use crate::error::Error;
use crate::storage::postgres::testing::{TestDatabase, admin_url};

/// A new database on the test server, or `None` (after saying what is skipped) when PostgreSQL
/// tests are not wanted; panics when they are required but cannot run.
async fn fresh_database(skipped: &str) -> Option<TestDatabase> {
    let Some(admin) = admin_url() else {
        eprintln!("SOM_TEST_POSTGRES_URL is not set: skipping {skipped}");
        return None;
    };
    Some(TestDatabase::create(&admin).await.expect("SOM_TEST_POSTGRES_URL is set but unreachable"))
}

/// sqlx 0.9.0 leaves a connection inside a transaction when a `pool.begin()` future is
/// dropped while its `BEGIN` is in flight, and hands it to the next borrower, whose
/// autocommit writes then vanish with the never-committed transaction. The pool's release
/// check must close such a connection instead.
#[tokio::test]
async fn a_begin_dropped_in_flight_never_swallows_the_next_borrowers_writes() {
    let Some(db) = fresh_database("this test").await else {
        return;
    };
    // One connection, so that every borrower gets the one the dropped future used.
    let pool = pool_options(1).connect(db.url()).await.unwrap();
    sqlx::query("CREATE TABLE written (n integer)").execute(&pool).await.unwrap();
    let mut other = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let rounds = 200;
    for n in 0..rounds {
        // Let the connection come back, start a transaction, poll it a few times with
        // pauses (so that `BEGIN` goes out and its answer comes in unread), and drop it.
        tokio::time::sleep(Duration::from_millis(1)).await;
        {
            let mut begin = std::pin::pin!(pool.begin());
            for _ in 0..=(n % 4) {
                let done = std::future::poll_fn(|cx| Poll::Ready(begin.as_mut().poll(cx).is_ready())).await;
                if done {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // An autocommit write is visible to everyone as soon as it returns.
        sqlx::query("INSERT INTO written VALUES ($1)").bind(n).execute(&pool).await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM written WHERE n = $1")
            .bind(n)
            .fetch_one(&mut other)
            .await
            .unwrap();
        assert_eq!(seen, 1, "round {n}: the write ran inside a transaction left open by a dropped BEGIN");
    }
}

#[test]
fn loopback_servers_are_reached_without_tls_unless_asked() {
    use sqlx::postgres::PgSslMode;
    let mode = |url: &str| loopback_without_tls(url.parse().unwrap(), url).get_ssl_mode();
    if std::env::var_os("PGSSLMODE").is_some() {
        return;
    }
    assert!(matches!(mode("postgres://u@127.0.0.1:5432/db"), PgSslMode::Disable));
    assert!(matches!(mode("postgres://u@localhost/db"), PgSslMode::Disable));
    assert!(matches!(mode("postgres://u@[::1]:5432/db"), PgSslMode::Disable));
    assert!(matches!(mode("postgres://u@127.0.0.1/db?sslmode=require"), PgSslMode::Require));
    assert!(matches!(mode("postgres://u@db.example.com/db"), PgSslMode::Prefer));
    assert!(matches!(mode("postgres://u@10.0.0.7/db"), PgSslMode::Prefer));
}

/// A reader connection is lent again only after its statement was answered: one whose read
/// was dropped before the answer, or failed, is closed, and the next read gets a new one.
#[tokio::test]
async fn a_reader_connection_is_lent_again_only_after_an_answer() {
    let Some(db) = fresh_database("this test").await else {
        return;
    };
    let readers = super::statements::Statements::new(db.url().parse().unwrap(), 1, Duration::from_secs(5));
    let backend = || async {
        let mut conn = readers.get().await.unwrap();
        let pid = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()").fetch_one(&mut *conn).await;
        conn.finish(pid).unwrap()
    };
    let first = backend().await;
    assert_eq!(backend().await, first, "an answered read keeps its connection");

    {
        let mut conn = readers.get().await.unwrap();
        let slow = sqlx::query("SELECT pg_sleep(5)").execute(&mut *conn);
        assert!(tokio::time::timeout(Duration::from_millis(100), slow).await.is_err());
    }
    let second = backend().await;
    assert_ne!(second, first, "a read dropped before its answer must not be lent again");

    {
        let mut conn = readers.get().await.unwrap();
        let failed = sqlx::query("SELECT no_such_column FROM pg_class").execute(&mut *conn).await;
        assert!(conn.finish(failed).is_err());
    }
    assert_ne!(backend().await, second, "a failed read's connection is closed");
}

/// A statement waits for a connection no longer than the pool would: when every connection is
/// lent, or when the server accepts the connection but never answers, it fails as "database
/// unavailable" (a 503 with Retry-After over HTTP) instead of holding its caller indefinitely.
#[tokio::test]
async fn a_statement_waits_for_a_connection_no_longer_than_the_acquire_timeout() {
    use super::statements::Statements;

    // A server that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("postgres://som@{}/som", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let unanswered = Statements::new(silent_url.parse().unwrap(), 1, Duration::from_millis(200));
    let got = tokio::time::timeout(Duration::from_secs(10), unanswered.get()).await.expect("the wait is bounded");
    assert!(matches!(got, Err(Error::Unavailable(_))), "a silent server is unavailable, got {:?}", got.err());
    held.abort();

    let Some(db) = fresh_database("the busy half").await else {
        return;
    };
    let readers = Statements::new(db.url().parse().unwrap(), 1, Duration::from_millis(200));
    let mut lent = readers.get().await.unwrap();
    let one = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut *lent).await;
    assert_eq!(lent.finish(one).unwrap(), 1);
    let busy = tokio::time::timeout(Duration::from_secs(10), readers.get()).await.expect("the wait is bounded");
    assert!(matches!(busy, Err(Error::Unavailable(_))), "all connections lent: unavailable, got {:?}", busy.err());
    drop(lent);
    let mut again = readers.get().await.expect("a connection handed back is lent again");
    let one = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut *again).await;
    assert_eq!(again.finish(one).unwrap(), 1);
}

/// A process (storage with `pool_size` connections) whose outbox dispatcher is woken through
/// the returned handle, once the database has `listeners` listening connections in all (this
/// one's included), so that what is committed from now on reaches it.
async fn listening(
    url: &str,
    pool_size: u32,
    listeners: i64,
) -> (super::PostgresStorage, std::sync::Arc<tokio::sync::Notify>) {
    use crate::storage::Storage as _;

    let storage = super::PostgresStorage::open(url, pool_size).await.unwrap();
    let woken = std::sync::Arc::new(tokio::sync::Notify::new());
    storage.subscribe_outbox(std::sync::Arc::clone(&woken));
    let mut probe = sqlx::PgConnection::connect(url).await.unwrap();
    let query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sqlx::query_scalar::<_, i64>(query).fetch_one(&mut probe).await.unwrap() < listeners {
        assert!(tokio::time::Instant::now() < deadline, "the listeners did not start within 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (storage, woken)
}

/// Notifications committed by one process wake the dispatchers of the others (one `NOTIFY`
/// sent after the commit), while a process's own announcements do not come back to it (it woke
/// its dispatcher itself).
#[tokio::test]
async fn committed_notifications_wake_other_processes_and_not_their_own() {
    use std::sync::Arc;

    use chrono::Utc;
    use tokio::sync::Notify;

    use crate::domain::Actor;
    use crate::storage::DynStorage;
    use crate::storage::conformance::{new_order, notify, user};

    let Some(db) = fresh_database("this test").await else {
        return;
    };
    let (here, woken_here) = listening(db.url(), 2, 1).await;
    let (_there, woken_there) = listening(db.url(), 2, 2).await;

    let storage: DynStorage = Arc::new(here);
    let ann = user(&storage, "ann").await;
    let place = || {
        storage.insert_order(
            ann.id,
            Actor::User(ann.id),
            new_order(&[("Widget", 2, "3.50")]),
            Utc::now(),
            notify(&["log"], &ann),
            None,
        )
    };
    let woken = |wake: Arc<Notify>| async move { tokio::time::timeout(Duration::from_secs(10), wake.notified()).await };

    place().await.unwrap();
    woken(Arc::clone(&woken_there))
        .await
        .expect("the other process's dispatcher is woken by the committed notification");
    // At once again: within the pace of the first NOTIFY, announced by the coalesced one.
    place().await.unwrap();
    woken(Arc::clone(&woken_there)).await.expect("a second order right after the first wakes the other process too");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), woken_here.notified()).await.is_err(),
        "a process's own announcement must not wake it a second time"
    );
    // A process that ends right after placing an order (a CLI command) has announced it: after
    // a quiet moment an order's NOTIFY is sent before the write returns.
    let url = db.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let cli: DynStorage = Arc::new(super::PostgresStorage::open(&url, 1).await.unwrap());
            let bob = user(&cli, "bob").await;
            let order = new_order(&[("Gadget", 1, "9.99")]);
            cli.insert_order(bob.id, Actor::User(bob.id), order, Utc::now(), notify(&["log"], &bob), None)
                .await
                .unwrap();
        });
    })
    .await
    .unwrap();
    woken(woken_there).await.expect("an order placed just before its process ended is announced");
}

/// A database whose orders kept their items in `order_items` (schema 9) keeps every item, in
/// its position, when the items move into the orders' rows; `order_items` reads as before.
#[tokio::test]
async fn items_move_into_their_orders_with_their_positions() {
    use crate::domain::{OrderId, OrderStatus};
    use crate::storage::OrderStore;
    let Some(db) = fresh_database("this test").await else {
        return;
    };
    {
        let pool = pool_options(1).connect(db.url()).await.unwrap();
        super::MIGRATOR.run_to(9, &pool).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO users (id, username, password_hash, created_at) OVERRIDING SYSTEM VALUE \
                 VALUES (1, 'alice', 'x', now())",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO orders (id, user_id, status, currency, total_minor, created_at, updated_at) \
                 OVERRIDING SYSTEM VALUE VALUES (7, 1, $1, 'USD', 1000, now(), now()), (8, 1, $2, 'USD', 300, now(), now())",
        )
        .bind(OrderStatus::Paid.as_str())
        .bind(OrderStatus::Created.as_str())
        .execute(&pool)
        .await
        .unwrap();
        sqlx::raw_sql(
            "INSERT INTO order_items VALUES (7, 1, 'Gadget', 2, 250), (7, 0, 'Widget', 1, 500), (8, 0, 'Bolt', 3, 100)",
        )
        .execute(&pool)
        .await
        .unwrap();
    }
    let storage = super::PostgresStorage::open(db.url(), 2).await.unwrap();
    let items = |id: i64| {
        let storage = storage.clone();
        async move {
            let order = storage.order_by_id(OrderId::new(id)).await.unwrap().unwrap();
            order.items.iter().map(|i| (i.name.clone(), i.quantity, i.price.minor())).collect::<Vec<_>>()
        }
    };
    assert_eq!(items(7).await, [("Widget".to_owned(), 1, 500), ("Gadget".to_owned(), 2, 250)]);
    assert_eq!(items(8).await, [("Bolt".to_owned(), 3, 100)]);
    let pool = pool_options(1).connect(db.url()).await.unwrap();
    let viewed: Vec<(i64, i32, String, i64, i64)> = sqlx::query_as(
        "SELECT order_id, position, name, quantity, unit_price_minor FROM order_items ORDER BY order_id, position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = [(7, 0, "Widget", 1, 500), (7, 1, "Gadget", 2, 250), (8, 0, "Bolt", 3, 100)];
    let expected: Vec<_> = expected.into_iter().map(|(o, p, n, q, m)| (o, p, n.to_owned(), q, m)).collect();
    assert_eq!(viewed, expected, "order_items reads as it did, from the orders");
    let refused =
        sqlx::query("UPDATE orders SET item_quantities = '{0}', item_names = '{x}', item_prices = '{1}' WHERE id = 8")
            .execute(&pool)
            .await;
    assert!(refused.is_err(), "an item's quantity is checked as before");
}

/// A process with a single writer connection announces a completed payment to the others: the
/// announcement borrows that connection once the completion has handed it back.
#[tokio::test]
async fn a_payment_completed_with_one_writer_connection_is_announced() {
    use std::sync::Arc;

    use crate::storage::conformance::{complete, inserted, order, user};
    use crate::storage::{DynStorage, PaymentOutcome, Transition};

    let Some(db) = fresh_database("this test").await else {
        return;
    };
    let (_there, woken_there) = listening(db.url(), 2, 1).await;

    let here: DynStorage = Arc::new(super::PostgresStorage::open(db.url(), 1).await.unwrap());
    let ann = user(&here, "ann").await;
    let placed = order(&here, &ann).await;
    let payment = inserted(&here, &placed, "one-writer").await;
    // What placing the order announced has arrived (or never will); then a quiet moment, so that
    // the completion's announcement is sent at once rather than coalesced with it.
    let _ = tokio::time::timeout(Duration::from_secs(2), woken_there.notified()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let done = complete(&here, &payment, PaymentOutcome::Succeeded, &ann).await;
    assert!(matches!(done, Transition::Applied(_)), "{done:?}");
    tokio::time::timeout(Duration::from_secs(10), woken_there.notified())
        .await
        .expect("the other process's dispatcher is woken by the payment's notification");
}

/// A transaction on the writers' connections that ends without a commit or a rollback (an
/// early return that drops it) has ended, its locks released, before its connection is lent
/// again; that connection, like one whose work was refused, is kept rather than reopened.
#[tokio::test]
async fn a_writers_transaction_dropped_unended_is_rolled_back_before_its_connection_is_lent() {
    let Some(db) = fresh_database("this test").await else {
        return;
    };
    let storage = super::PostgresStorage::open(db.url(), 1).await.unwrap();
    fn backend(conn: &mut sqlx::PgConnection) -> super::BoxFuture<'_, crate::error::Result<i32>> {
        Box::pin(async move { Ok(sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()").fetch_one(conn).await?) })
    }
    let first = storage.transaction_on_writers(backend).await.unwrap();

    let dropped = storage
        .transaction_on_writers(|conn| {
            Box::pin(async move {
                let mut tx = conn.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(4242)").execute(&mut *tx).await?;
                Ok(()) // `tx` is dropped here, neither committed nor rolled back
            })
        })
        .await;
    dropped.unwrap();
    let mut other = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(4242)").fetch_one(&mut other).await.unwrap();
    assert!(free, "the dropped transaction's lock is released before the connection goes back");
    assert_eq!(storage.transaction_on_writers(backend).await.unwrap(), first, "and the connection is kept");

    let refused = storage
        .transaction_on_writers(|conn| {
            Box::pin(async move {
                let _tx = conn.begin().await?;
                Err::<(), _>(Error::NotFound("the thing".into()))
            })
        })
        .await;
    assert!(matches!(refused, Err(Error::NotFound(_))), "{refused:?}");
    assert_eq!(storage.transaction_on_writers(backend).await.unwrap(), first, "a refusal keeps the connection too");
}

/// A writers' transaction waits for its permit and then for a connection within one acquire
/// timeout in all, not one for each: when the permit came late, what is left of the timeout
/// is all it waits for a connection.
#[tokio::test]
async fn a_writers_transaction_waits_for_its_permit_and_connection_within_one_timeout() {
    use std::sync::Arc;

    use crate::testing::until;

    let Some(db) = fresh_database("this test").await else {
        return;
    };
    // Two writer connections, one transaction at a time.
    let storage = Arc::new(super::PostgresStorage::open(db.url(), 2).await.unwrap());
    let hold = super::ACQUIRE_TIMEOUT + Duration::from_secs(2);
    // Both connections busy for longer than the timeout…
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let storage = Arc::clone(&storage);
            let sleep = sqlx::query("SELECT pg_sleep($1)").bind(hold.as_secs_f64());
            tokio::spawn(async move { storage.write(sleep).await.map(drop) })
        })
        .collect();
    let mut watcher = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                    AND query LIKE 'SELECT pg_sleep%' AND state = 'active'";
    until("both writer connections are busy", Duration::from_secs(5), async || {
        sqlx::query_scalar::<_, i64>(sleeping).fetch_one(&mut watcher).await.unwrap() == 2
    })
    .await;
    // …so the first transaction holds the permit until its wait for a connection times out,
    let first = {
        let storage = Arc::clone(&storage);
        tokio::spawn(async move { storage.transaction_on_writers(|_| Box::pin(async { Ok(()) })).await })
    };
    until("the first transaction has the permit", Duration::from_secs(5), async || {
        storage.transactions.available_permits() == 0
    })
    .await;
    // and the second gets the permit then, with next to nothing of its timeout left: not
    // enough to wait until a connection is free (about 2 s later), which a timeout of its own
    // would be.
    let second = storage.transaction_on_writers(|_| Box::pin(async { Ok(()) })).await;
    assert!(matches!(second, Err(Error::Unavailable(_))), "{second:?}");
    let first = first.await.unwrap();
    assert!(matches!(first, Err(Error::Unavailable(_))), "{first:?}");
    for b in busy {
        b.await.unwrap().unwrap();
    }
}
