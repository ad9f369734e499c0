//! The storage conformance suite on PostgreSQL, each test on a freshly created database that is
//! dropped afterwards. Runs when `SOM_TEST_POSTGRES_URL` names a server (CI sets it); when it
//! is set and the server is unreachable, every test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use som_core::storage::DynStorage;
use som_core::storage::postgres::PostgresStorage;
use som_core::testing::{TestDatabase, admin_url};

async fn fresh() -> (DynStorage, Option<TestDatabase>) {
    let Some(admin) = admin_url() else {
        eprintln!("SOM_TEST_POSTGRES_URL is not set: running this check on SQLite instead");
        let url = format!("sqlite://{}", tempfile::tempdir().unwrap().keep().join("som.db").display());
        return (som_core::storage::open(&url, 4).await.unwrap(), None);
    };
    let db = TestDatabase::create(&admin).await.expect("SOM_TEST_POSTGRES_URL is set but the server is unreachable");
    let storage = PostgresStorage::open(db.url(), 8).await.unwrap();
    (Arc::new(storage), Some(db))
}

som_core::storage_conformance_tests!(fresh());
