//! [`complete`]: a storage write that cannot be cancelled halfway.
//!
//! A front end's future is dropped whenever its caller stops waiting — an HTTP client that
//! hangs up, a timeout, a `select!` that picks another branch. If that future is inside a
//! storage operation, the operation stops at whatever `.await` it had reached: on PostgreSQL a
//! transaction can be left open on a pooled connection (sqlx 0.9.0 does not roll back a
//! `BEGIN` whose future is dropped while it is in flight), and everything the next borrower
//! of that connection writes is lost with it.
//!
//! So every write the core makes goes through [`complete`], which runs it as its own tokio task
//! and awaits the handle: dropping the caller's future drops only the handle, and the write runs
//! to its commit or rollback. This is one rule in one place, whatever [`Storage`] an embedding
//! application plugs in — a backend does not have to be cancel safe itself, and adding a storage
//! method takes the trait and the backends only (the caller wraps its call, as every write call
//! does). Reads are called directly: abandoning one leaves nothing behind.
//!
//! The other places where SOM's own code can be cancelled were checked the same way:
//!
//! - the outbox dispatcher: a graceful shutdown finishes the delivery in progress and releases
//!   the rest of its batch; an abort (dropping its handle) can stop it only between storage
//!   writes, which complete, and its claimed rows come back when their lease runs out;
//! - the PostgreSQL `LISTEN` connection is its own task and holds no transaction;
//! - migrations run while the storage is opened, before anything else uses the pool; if that is
//!   abandoned, the pool is dropped with it and its connections (and the advisory lock sqlx holds
//!   on one of them) are closed, so the server rolls back;
//! - SQLite's writer runs each transaction as one blocking call, which cannot be interrupted once
//!   started; PostgreSQL's single-statement writes run on their own driver thread.
//!
//! Beyond that, the PostgreSQL pool checks every connection handed back to it and closes any
//! that is still inside a transaction (see `postgres::outside_transaction`).

use std::future::Future;
use std::sync::Arc;

use super::DynStorage;
use crate::error::{Error, Result};

/// Runs the write `f(storage)` as its own task on the current tokio runtime and waits for it.
/// If the caller stops waiting, the write still runs to its end (its result is discarded). A
/// panic inside the write is an internal error for the caller, as it would be without the task.
///
/// ```no_run
/// # async fn demo(storage: som_core::storage::DynStorage, id: som_core::domain::UserId) -> som_core::Result<()> {
/// use som_core::storage::prelude::*;
/// let changed = som_core::storage::complete(&storage, move |s| async move { s.set_staff(id, true).await }).await?;
/// # let _ = changed; Ok(()) }
/// ```
pub async fn complete<T, F, Fut>(storage: &DynStorage, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(DynStorage) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let task = tokio::spawn(f(Arc::clone(storage)));
    match task.await {
        Ok(result) => result,
        Err(e) => Err(Error::Internal(format!("storage task failed: {e}"))),
    }
}
