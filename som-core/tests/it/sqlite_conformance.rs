//! The storage conformance suite on SQLite: each test on its own database file, and again on
//! a private in-memory database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use som_core::storage::DynStorage;
use som_core::storage::sqlite::SqliteStorage;

async fn fresh() -> (DynStorage, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("som.db").display());
    (Arc::new(SqliteStorage::open(&url, 4).await.unwrap()), dir)
}

som_core::storage_conformance_tests!(fresh());

mod in_memory {
    use super::*;

    async fn memory() -> (DynStorage, ()) {
        (Arc::new(SqliteStorage::open("sqlite::memory:", 4).await.unwrap()), ())
    }

    som_core::storage_conformance_tests!(memory());
}

#[tokio::test]
async fn an_undecodable_outbox_row_is_dead_lettered_without_blocking_the_others() {
    use chrono::Utc;
    let (storage, dir) = fresh().await;
    let raw = rusqlite::Connection::open(dir.path().join("som.db")).unwrap();
    let now = Utc::now().timestamp_micros();
    for (key, payload) in [("bad:1", "not json"), ("bad:2", "{\"also\": \"not a message\"}")] {
        raw.execute(
            "INSERT INTO outbox (kind, dedupe_key, channel, payload, status, attempts, next_attempt_at, created_at, \
             updated_at) VALUES ('order_created', ?1, 'log', ?2, 'pending', 0, ?3, ?3, ?3)",
            rusqlite::params![key, payload, now],
        )
        .unwrap();
    }
    let claimed = storage.claim_notifications(Utc::now(), Utc::now() + chrono::Duration::seconds(30), 10, "t").await;
    assert!(claimed.unwrap().is_empty(), "nothing decodable, and no error for the whole batch");
    let pending: i64 = raw.query_row("SELECT COUNT(*) FROM outbox WHERE status = 'pending'", [], |r| r.get(0)).unwrap();
    let dead_rows: i64 = raw.query_row("SELECT COUNT(*) FROM outbox WHERE status = 'dead'", [], |r| r.get(0)).unwrap();
    assert_eq!((pending, dead_rows), (0, 2), "dead-lettered, so the dispatcher moves on");
    let again = storage.claim_notifications(Utc::now(), Utc::now() + chrono::Duration::seconds(30), 10, "u").await;
    assert!(again.unwrap().is_empty());
}
