//! In-process benchmarks of the OrderSystem on SQLite (a file, WAL, synchronous=FULL) and, when
//! `SOM_TEST_POSTGRES_URL` is set, on PostgreSQL; beside each write, the "limit": the same rows
//! written with plain prepared statements in one transaction per order, without SOM.
//!
//!     cargo bench -p som-core --bench core
//!
//! Figures and their interpretation are in BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use som_core::domain::{Caller, OrderId};
use som_core::notify::{Notification, Notifier, NotifyError};
use som_core::storage::postgres::testing::{TestDatabase, admin_url};
use som_core::{Config, OrderListQuery, OrderSystem, Registration};
use tokio::runtime::Runtime;

#[derive(Debug)]
struct Noop;

#[async_trait]
impl Notifier for Noop {
    fn channel(&self) -> &str {
        "log"
    }
    async fn send(&self, _: &Notification) -> Result<(), NotifyError> {
        Ok(())
    }
}

use som_core::testing::seed_order as order;

async fn system(url: &str) -> (OrderSystem, Caller, String) {
    let som = OrderSystem::builder()
        .config(Config { database_url: url.to_owned(), database_pool_size: 8, ..Config::default() })
        .notifier(Arc::new(Noop))
        .build()
        .await
        .unwrap();
    som.register(Registration {
        username: "bench".into(),
        email: Some("bench@example.com".into()),
        password: "correct horse battery".into(),
    })
    .await
    .unwrap();
    let tokens = som.login("bench", "correct horse battery").await.unwrap();
    let caller = som.authenticate(&tokens.access).await.unwrap();
    (som, caller, tokens.access)
}

/// Runs `per_task` operations on each of `concurrency` tasks; operations per second.
async fn throughput<F, Fut>(concurrency: usize, per_task: usize, f: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                f().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (concurrency * per_task) as f64 / start.elapsed().as_secs_f64()
}

/// A payload of the size SOM writes (the raw rows are marked sent so no dispatcher reads them).
const PAYLOAD: &str = r#"{"kind":"order_created","user_id":1,"username":"bench","email":"bench@example.com","order_id":1,"payment_id":null,"amount":"250.00","currency":"USD","items":[{"name":"Widget","quantity":2,"price":"100.00"},{"name":"Gadget","quantity":1,"price":"50.00"}],"reason":null,"subject":"Order Created Successfully","text":"Your order #1 has been created successfully. Total amount: 250.00 USD."}"#;

fn raw_sqlite_order(conn: &mut rusqlite::Connection, user: i64) {
    raw_sqlite_orders(conn, user, 1);
}

/// `n` orders' rows in one transaction.
fn raw_sqlite_orders(conn: &mut rusqlite::Connection, user: i64, n: usize) {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
    for _ in 0..n {
        raw_sqlite_rows(&tx, user);
    }
    tx.commit().unwrap();
}

fn raw_sqlite_rows(tx: &rusqlite::Transaction<'_>, user: i64) {
    let now = chrono::Utc::now().timestamp_micros();
    tx.prepare_cached("INSERT INTO orders (user_id, status, currency, total_minor, created_at, updated_at, items) VALUES (?1, 'CREATED', 'USD', 25000, ?2, ?2, '[[\"Widget\",2,10000],[\"Gadget\",1,5000]]')")
        .unwrap()
        .execute(rusqlite::params![user, now])
        .unwrap();
    let id = tx.last_insert_rowid();
    tx.prepare_cached("INSERT INTO order_events (order_id, from_status, to_status, actor, reason, at) VALUES (?1, NULL, 'CREATED', 'user:1', 'order placed', ?2)")
        .unwrap()
        .execute(rusqlite::params![id, now])
        .unwrap();
    tx.prepare_cached("INSERT INTO outbox (kind, dedupe_key, channel, recipient, payload, status, attempts, next_attempt_at, created_at, updated_at) VALUES ('order_created', ?1, 'log', 'bench@example.com', ?3, 'sent', 0, ?2, ?2, ?2)")
        .unwrap()
        .execute(rusqlite::params![format!("order_created:order:{id}"), now, PAYLOAD])
        .unwrap();
}

/// The benchmarks both backends run the same way: reads, the payment pair, the dispatcher.
fn shared(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    som: &OrderSystem,
    caller: Caller,
    access: &str,
    seeded: OrderId,
) {
    g.bench_function("authenticate (JWT verify + user lookup)", |b| b.to_async(rt).iter(|| som.authenticate(access)));
    g.bench_function("order by id", |b| b.to_async(rt).iter(|| som.order(caller, seeded)));
    g.bench_function("latest order", |b| b.to_async(rt).iter(|| som.latest_order(caller, None)));
    g.bench_function("list page of 50", |b| {
        b.to_async(rt).iter(|| som.list_orders(caller, OrderListQuery { limit: Some(50), ..OrderListQuery::default() }))
    });
    g.bench_function("initiate + confirm", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut orders = Vec::new();
                for _ in 0..iters {
                    orders.push(som.create_order(caller, order()).await.unwrap().id);
                }
                let start = Instant::now();
                for id in orders {
                    let p = som.initiate_payment(caller, id).await.unwrap();
                    som.confirm_payment(caller, p.id).await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("dispatch 32 notifications (no-op notifier)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    while som.dispatch_once().await.unwrap() > 0 {}
                    for _ in 0..32 {
                        som.create_order(caller, order()).await.unwrap();
                    }
                    let start = Instant::now();
                    while som.dispatch_once().await.unwrap() > 0 {}
                    total += start.elapsed();
                }
                total
            })
        })
    });
}

fn report(name: &str, ops: f64) {
    println!("{name:<60} {ops:>10.0} ops/s");
}

fn sqlite(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let url = format!("sqlite://{}", path.display());
    let (som, caller, access) = rt.block_on(system(&url));
    let seeded = rt.block_on(async {
        let mut last = None;
        for _ in 0..200 {
            last = Some(som.create_order(caller, order()).await.unwrap().id);
        }
        last.unwrap()
    });
    let mut g = c.benchmark_group("sqlite");
    g.measurement_time(Duration::from_secs(4)).sample_size(20);
    g.bench_function("create_order (2 items)", |b| {
        b.to_async(&rt).iter(|| som.create_order(caller, order()).into_future())
    });
    let mut raw = rusqlite::Connection::open(&path).unwrap();
    raw.pragma_update(None, "synchronous", "FULL").unwrap();
    raw.busy_timeout(Duration::from_secs(5)).unwrap();
    g.bench_function("limit: raw rusqlite, one transaction per order", |b| b.iter(|| raw_sqlite_order(&mut raw, 1)));
    shared(&mut g, &rt, &som, caller, &access, seeded);
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("login (argon2id, meant to be slow)", |b| {
        b.to_async(&rt).iter(|| som.login("bench", "correct horse battery"))
    });
    g.finish();

    // Concurrency 64: SOM's create_order (group commit) against one connection writing the
    // same rows with one transaction — one fsync — per order, and against the fsync-batching
    // ceiling (128 orders per transaction), all in the same run on the same disk.
    let som64 = som.clone();
    let som_rate = rt.block_on(throughput(64, 200, move || {
        let som = som64.clone();
        async move {
            som.create_order(caller, order()).await.unwrap();
        }
    }));
    let start = Instant::now();
    for _ in 0..1000 {
        raw_sqlite_order(&mut raw, 1);
    }
    let raw_rate = 1000.0 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..40 {
        raw_sqlite_orders(&mut raw, 1, 128);
    }
    let batched_rate = (40 * 128) as f64 / start.elapsed().as_secs_f64();
    report("sqlite create_order, 64 concurrent tasks (SOM, group commit)", som_rate);
    report("sqlite raw, one connection, one transaction per order", raw_rate);
    report("sqlite raw, one connection, 128 orders per transaction", batched_rate);
    println!("sqlite create_order c=64 / raw one-transaction-per-order: {:.2}", som_rate / raw_rate);
    println!("sqlite create_order c=64 / raw 128 per transaction: {:.2}", som_rate / batched_rate);
}

fn postgres(c: &mut Criterion) {
    let Some(admin) = admin_url() else {
        eprintln!("SOM_TEST_POSTGRES_URL is not set: skipping the PostgreSQL benchmarks");
        return;
    };
    let rt = Runtime::new().unwrap();
    let db = rt.block_on(TestDatabase::create(&admin)).unwrap();
    let (som, caller, access) = rt.block_on(system(db.url()));
    let seeded = rt.block_on(async {
        let mut last = None;
        for _ in 0..200 {
            last = Some(som.create_order(caller, order()).await.unwrap().id);
        }
        last.unwrap()
    });
    let pool = rt.block_on(sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(db.url())).unwrap();
    let mut g = c.benchmark_group("postgres");
    g.measurement_time(Duration::from_secs(4)).sample_size(20);
    g.bench_function("create_order (2 items)", |b| {
        b.to_async(&rt).iter(|| som.create_order(caller, order()).into_future())
    });
    g.bench_function("limit: raw sqlx, one transaction per order", |b| {
        b.to_async(&rt).iter(|| async {
            let mut tx = pool.begin().await.unwrap();
            raw_pg_rows(&mut tx).await;
            tx.commit().await.unwrap();
        })
    });
    shared(&mut g, &rt, &som, caller, &access, seeded);
    g.finish();
    let som64 = som.clone();
    let rate = rt.block_on(throughput(64, 50, move || {
        let som = som64.clone();
        async move {
            som.create_order(caller, order()).await.unwrap();
        }
    }));
    // Whether batching concurrent writes into one transaction would pay on PostgreSQL, which
    // already lets concurrent commits share a WAL flush: the same rows from 64 tasks, one
    // transaction per order, against one task writing 64 orders per transaction.
    let raw_pool = pool.clone();
    let raw_rate = rt.block_on(throughput(64, 20, move || {
        let pool = raw_pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            raw_pg_rows(&mut tx).await;
            tx.commit().await.unwrap();
        }
    }));
    let batched_rate = rt.block_on(async {
        let start = Instant::now();
        for _ in 0..20 {
            let mut tx = pool.begin().await.unwrap();
            for _ in 0..64 {
                raw_pg_rows(&mut tx).await;
            }
            tx.commit().await.unwrap();
        }
        (20 * 64) as f64 / start.elapsed().as_secs_f64()
    });
    report("postgres create_order, 64 concurrent tasks (SOM)", rate);
    report("postgres raw, 64 concurrent tasks, one transaction per order", raw_rate);
    report("postgres raw, one task, 64 orders per transaction", batched_rate);
    drop(pool);
    drop(som);
    drop(db);
}

/// The rows of one order as SOM writes them, with plain statements.
async fn raw_pg_rows(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>) {
    let now = chrono::Utc::now();
    let id: i64 = sqlx::query_scalar("INSERT INTO orders (user_id, status, currency, total_minor, created_at, updated_at, item_names, item_quantities, item_prices) VALUES (1, 'CREATED', 'USD', 25000, $1, $1, '{Widget,Gadget}', '{2,1}', '{10000,5000}') RETURNING id")
        .bind(now)
        .fetch_one(&mut **tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO order_events (order_id, from_status, to_status, actor, reason, at) VALUES ($1, NULL, 'CREATED', 'user:1', 'order placed', $2)")
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO outbox (kind, dedupe_key, channel, recipient, payload, status, attempts, next_attempt_at, created_at, updated_at) VALUES ('order_created', $1, 'log', 'bench@example.com', $3, 'sent', 0, $2, $2, $2)")
        .bind(format!("order_created:order:{id}"))
        .bind(now)
        .bind(PAYLOAD)
        .execute(&mut **tx)
        .await
        .unwrap();
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
