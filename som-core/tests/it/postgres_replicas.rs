//! A real streaming replica (`pg_basebackup -R` from a private primary, see
//! `som_core::testing::Cluster`): reads that may lag are served by it, a caller never reads
//! older than their own writes, a replica that stops or falls behind is skipped without an
//! error, and the primary restarting under load costs retries (503) but no acknowledged write.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use som_core::domain::Caller;
use som_core::testing::{Cluster, customer, seed_order, until};
use som_core::{Config, Error, OrderListQuery, OrderSystem};
use sqlx::Connection as _;

async fn system(cluster: &Cluster, max_lag: Duration) -> OrderSystem {
    let config = Config {
        database_url: cluster.primary_url(),
        database_read_urls: vec![cluster.replica_url()],
        replica_max_lag: max_lag,
        database_pool_size: 8,
        ..Config::default()
    };
    OrderSystem::builder().config(config).build().await.unwrap()
}

/// The same database without replicas: writes made here are not this process's to remember,
/// as if another process made them.
async fn elsewhere(cluster: &Cluster) -> OrderSystem {
    let config = Config { database_url: cluster.primary_url(), ..Config::default() };
    OrderSystem::builder().config(config).build().await.unwrap()
}

fn state(som: &OrderSystem) -> &'static str {
    som.replicas()[0].state
}

fn replica_reads(som: &OrderSystem) -> u64 {
    som.replicas()[0].reads
}

async fn replica_sql(cluster: &Cluster, sql: &'static str) {
    let mut conn = sqlx::PgConnection::connect(&cluster.replica_url()).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
}

async fn list(som: &OrderSystem, caller: Caller) -> Vec<som_core::domain::OrderId> {
    let page = som.list_orders(caller, OrderListQuery { limit: Some(200), ..Default::default() }).await.unwrap();
    page.items.iter().map(|o| o.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_go_to_the_replica_but_never_older_than_the_callers_own_writes() {
    let Some(cluster) = Cluster::start() else { return };
    let som = system(&cluster, Duration::from_secs(30)).await;
    let other = elsewhere(&cluster).await;
    until("the replica is in use", Duration::from_secs(20), async || state(&som) == "streaming").await;

    // Carol's order, placed through another process, reaches the replica and is read from it.
    let carol = customer(&other, "carol").await;
    let first = other.create_order(carol, seed_order()).await.unwrap();
    until("the replica serves carol's order", Duration::from_secs(20), async || {
        list(&som, carol).await.contains(&first.id)
    })
    .await;
    assert!(replica_reads(&som) > 0, "the lists were read from the replica");

    // The replica stops replaying: what reaches the primary now is not on it.
    let writers: Vec<Caller> = {
        let mut v = Vec::new();
        for i in 0..64 {
            v.push(customer(&other, &format!("writer{i}")).await);
        }
        v
    };
    replica_sql(&cluster, "SELECT pg_wal_replay_pause()").await;
    let second = other.create_order(carol, seed_order()).await.unwrap();
    let before = replica_reads(&som);
    assert_eq!(
        list(&som, carol).await,
        vec![first.id],
        "carol did not write through this process, so her read may lag: the paused replica answers"
    );
    assert!(replica_reads(&som) > before);

    // 64 clients at once each place an order and read it back at once, every way: the paused
    // replica lacks all of them, so every one of these reads must go to the primary.
    let mut tasks = Vec::new();
    for caller in writers {
        let som = som.clone();
        tasks.push(tokio::spawn(async move {
            let mut stale = 0;
            for _ in 0..3 {
                let placed = som.create_order(caller, seed_order()).await.unwrap();
                stale += usize::from(som.order(caller, placed.id).await.is_err());
                stale += usize::from(som.latest_order(caller, None).await.map(|o| o.id).ok() != Some(placed.id));
                stale += usize::from(!list(&som, caller).await.contains(&placed.id));
                stale += usize::from(som.order_history(caller, placed.id).await.map(|h| h.len()).ok() != Some(1));
            }
            stale
        }));
    }
    let mut stale = 0;
    for t in tasks {
        stale += t.await.unwrap();
    }
    assert_eq!(stale, 0, "a caller read older than their own write");

    // Replaying again, the replica catches up and serves carol's newer order too.
    replica_sql(&cluster, "SELECT pg_wal_replay_resume()").await;
    until("the replica serves carol's second order", Duration::from_secs(20), async || {
        list(&som, carol).await.contains(&second.id)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_lags_or_stops_is_skipped_and_reads_go_to_the_primary_without_error() {
    let Some(cluster) = Cluster::start() else { return };
    let som = system(&cluster, Duration::from_millis(1500)).await;
    let other = elsewhere(&cluster).await;
    until("the replica is in use", Duration::from_secs(20), async || state(&som) == "streaming").await;
    let dave = customer(&other, "dave").await;
    let first = other.create_order(dave, seed_order()).await.unwrap();
    until("the replica serves dave's order", Duration::from_secs(20), async || {
        list(&som, dave).await.contains(&first.id)
    })
    .await;

    // Paused beyond SOM_REPLICA_MAX_LAG while the primary moves on: skipped as lagging, and
    // reads that may lag see the primary's newer state.
    replica_sql(&cluster, "SELECT pg_wal_replay_pause()").await;
    let second = other.create_order(dave, seed_order()).await.unwrap();
    until("the paused replica counts as lagging", Duration::from_secs(20), async || {
        // Writes keep the primary's position moving, so the lag is measurable.
        let _ = other.create_order(dave, seed_order()).await;
        state(&som) == "lagging"
    })
    .await;
    assert!(list(&som, dave).await.contains(&second.id), "a lagging replica is not read");
    replica_sql(&cluster, "SELECT pg_wal_replay_resume()").await;
    until("the replica is in use again", Duration::from_secs(20), async || state(&som) == "streaming").await;

    // Stopped: every read still answers, from the primary, and the replica shows as down.
    cluster.stop_replica();
    for _ in 0..50 {
        assert!(list(&som, dave).await.contains(&second.id));
        assert_eq!(som.order(dave, first.id).await.unwrap().id, first.id);
    }
    until("the stopped replica shows as down", Duration::from_secs(10), async || state(&som) == "down").await;
    assert!(som.replicas()[0].error.is_some());

    // Back: used again.
    cluster.start_replica();
    until("the restarted replica is in use", Duration::from_secs(20), async || state(&som) == "streaming").await;
    let before = replica_reads(&som);
    assert!(list(&som, dave).await.contains(&second.id));
    assert!(replica_reads(&som) > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_restarting_under_load_costs_retries_but_no_acknowledged_write() {
    let Some(cluster) = Cluster::start() else { return };
    let som = system(&cluster, Duration::from_secs(5)).await;
    let erin = customer(&som, "erin").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (som, stop) = (som.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut acknowledged, mut refused) = (Vec::new(), 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match som.create_order(erin, seed_order()).await {
                    Ok(order) => acknowledged.push(order.id),
                    Err(Error::Unavailable(_)) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("a write failed with something other than 'unavailable': {e}"),
                }
            }
            (acknowledged, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.stop_primary("immediate");
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.start_primary();
    // Recovery: writes are acknowledged again.
    let after_restart = Instant::now();
    until("writes succeed after the restart", Duration::from_secs(30), async || {
        som.create_order(erin, seed_order()).await.is_ok()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acknowledged, mut refused) = (Vec::new(), 0);
    for t in tasks {
        let (a, r) = t.await.unwrap();
        acknowledged.extend(a);
        refused += r;
    }
    assert!(refused > 0, "the outage was noticed as 503s");
    assert!(after_restart.elapsed() < Duration::from_secs(30));
    for id in &acknowledged {
        assert_eq!(som.order(Caller::System, *id).await.unwrap().id, *id, "acknowledged order {id} lost");
    }
}
