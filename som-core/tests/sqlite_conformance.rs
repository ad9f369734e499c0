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
