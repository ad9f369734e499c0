//! PostgreSQL at scale over HTTP: the API through PgBouncer, and reading one's own writes from
//! read replicas when the next request reaches another process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::StatusCode;
use serde_json::Value;
use som_core::testing::{Bouncer, Cluster, admin_url};
use sqlx::Connection as _;

use crate::http::{
    App, Backend, orders_follow_the_original_test_cases_on, payments_follow_the_original_test_cases_on, read,
    spawn_app_with,
};

/// The port of the server `SOM_TEST_POSTGRES_URL` names.
fn admin_port(admin: &str) -> u16 {
    let authority = admin.split_once("://").map_or(admin, |(_, rest)| rest);
    let authority = authority.split(['/', '?']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(5432)
}

/// An app on a fresh database reached through `bouncer`.
async fn through(bouncer: &Bouncer, upstream: u16) -> App {
    let port = bouncer.port();
    spawn_app_with(Backend::Postgres, |c| {
        c.database_url = c.database_url.replacen(&format!(":{upstream}/"), &format!(":{port}/"), 1);
        assert!(c.database_url.contains(&format!(":{port}/")), "{}", c.database_url);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_runs_through_pgbouncer_in_session_mode() {
    let Some(admin) = admin_url() else { return };
    let upstream = admin_port(&admin);
    let Some(bouncer) = Bouncer::start(upstream, "session") else { return };
    orders_follow_the_original_test_cases_on(&through(&bouncer, upstream).await).await;
    payments_follow_the_original_test_cases_on(&through(&bouncer, upstream).await).await;
}

/// An app over the cluster's primary reading from its replica.
async fn replicated(cluster: &Cluster) -> App {
    let (primary, replica) = (cluster.primary_url(), cluster.replica_url());
    spawn_app_with(Backend::Sqlite, move |c| {
        c.database_url = primary;
        c.database_read_urls = vec![replica];
    })
    .await
}

async fn wait_streaming(app: &App) {
    for _ in 0..400 {
        if app.som.replicas()[0].state == "streaming" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the replica never came into use");
}

async fn get_with(app: &App, path: &str, token: &str, last_write: Option<&str>) -> (StatusCode, Value) {
    let mut request = app.client.get(app.url(path)).bearer_auth(token);
    if let Some(at) = last_write {
        request = request.header("SOM-Last-Write", at);
    }
    read(request.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_process_is_read_through_another_that_is_told_of_it() {
    let Some(cluster) = Cluster::start() else { return };
    let a = replicated(&cluster).await;
    let b = replicated(&cluster).await;
    wait_streaming(&a).await;
    wait_streaming(&b).await;
    let alice = a.user("alice").await;
    // Make sure the account has reached the replica before it stops replaying.
    let mut replica = sqlx::PgConnection::connect(&cluster.replica_url()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut replica).await.unwrap();
        if n > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the account never reached the replica");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sqlx::query("SELECT pg_wal_replay_pause()").execute(&mut replica).await.unwrap();

    let response =
        a.client.post(a.url("/orders/")).bearer_auth(&alice).json(&crate::http::seed_order()).send().await.unwrap();
    let last_write = response.headers().get("som-last-write").map(|v| v.to_str().unwrap().to_owned());
    let (status, order) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let last_write = last_write.expect("a write's response says when the caller last wrote");
    let path = format!("/orders/{}/", order["id"]);

    // The process that took the write reads it back from the primary.
    assert_eq!(get_with(&a, &path, &alice, None).await.0, StatusCode::OK);
    // Another process, not told, may answer from the paused replica: the order is not there.
    assert_eq!(get_with(&b, &path, &alice, None).await.0, StatusCode::NOT_FOUND);
    // Told (the header, as a client passes it on), it reads from the primary.
    let (status, body) = get_with(&b, &path, &alice, Some(&last_write)).await;
    assert_eq!((status, &body["id"]), (StatusCode::OK, &order["id"]), "{body}");
    let (status, list) = get_with(&b, "/orders/", &alice, Some(&last_write)).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));

    // /readyz and /metrics show the replica.
    let (status, ready) = read(b.client.get(format!("{}/readyz", b.base)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["replicas"][0]["state"], "streaming", "{ready}");
    assert!(ready["replicas"][0]["reads"].as_u64().unwrap() >= 1, "{ready}");
    let metrics = b.client.get(format!("{}/metrics", b.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("som_replica_reads_total{replica="), "{metrics}");
    assert!(metrics.contains("som_replica_lag_seconds{replica="), "{metrics}");
    sqlx::query("SELECT pg_wal_replay_resume()").execute(&mut replica).await.unwrap();
}
