//! Backend-specific tests (the conformance suite covers the behaviour every backend shares).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::task::Poll;
use std::time::Duration;

use sqlx::Connection as _;

use super::{loopback_without_tls, pool_options};
use crate::storage::postgres::testing::{TestDatabase, admin_url};

/// sqlx 0.9.0 leaves a connection inside a transaction when a `pool.begin()` future is
/// dropped while its `BEGIN` is in flight, and hands it to the next borrower, whose
/// autocommit writes then vanish with the never-committed transaction. The pool's release
/// check must close such a connection instead.
#[tokio::test]
async fn a_begin_dropped_in_flight_never_swallows_the_next_borrowers_writes() {
    let Some(admin) = admin_url() else {
        eprintln!("SOM_TEST_POSTGRES_URL is not set: skipping");
        return;
    };
    let db = TestDatabase::create(&admin).await.expect("SOM_TEST_POSTGRES_URL is set but unreachable");
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
