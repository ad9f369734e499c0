//! [`Detached`]: storage whose operations cannot be cancelled halfway.
//!
//! A front end's future is dropped whenever its caller stops waiting — an HTTP client that
//! hangs up, a timeout, a `select!` that picks another branch. If that future is inside a
//! storage operation, the operation stops at whatever `.await` it had reached: on PostgreSQL a
//! transaction can be left open on a pooled connection (sqlx 0.9.0 does not roll back a
//! `BEGIN` whose future is dropped while it is in flight), and everything the next borrower
//! of that connection writes is lost with it.
//!
//! The other places where SOM's own code can be cancelled were checked the same way:
//!
//! - the outbox dispatcher: a graceful shutdown finishes the delivery in progress and releases
//!   the rest of its batch; an abort (dropping its handle) can stop it only between storage
//!   calls, which are detached, and its claimed rows come back when their lease runs out;
//! - the PostgreSQL `LISTEN` connection is its own task and holds no transaction;
//! - migrations run while the storage is opened, before anything else uses the pool; if that is
//!   abandoned, the pool is dropped with it and its connections (and the advisory lock sqlx holds
//!   on one of them) are closed, so the server rolls back;
//! - SQLite's writer runs each transaction as one blocking call, which cannot be interrupted once
//!   started; a caller that stops waiting for the writer's turn leaves nothing behind.
//!
//! Beyond that, the PostgreSQL pool checks every connection handed back to it and closes any
//! that is still inside a transaction (see `postgres::outside_transaction`).
//!
//! `Detached` runs each write (every operation that opens a transaction) as its own tokio task
//! and awaits its handle. Dropping the caller's future drops only the handle: the operation runs
//! to its commit or rollback, and its result is discarded. Reads are single statements outside
//! any transaction (or, on SQLite, blocking calls that finish anyway); they are called directly,
//! since abandoning one leaves nothing behind. [`crate::OrderSystem`] wraps every storage it is given in one, so
//! no front end can cancel a write halfway, whichever backend it uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    Credentials, DynStorage, IdempotencyBegin, IdempotencyKey, IdempotencySlot, IdempotencyStore, NewPaymentRecord,
    NewRefundRecord, NewUserRecord, NotificationQuery, NotificationStatus, OrderNotify, OrderQuery, OrderStore,
    OutboxEntry, OutboxStore, PaymentInsert, PaymentNotify, PaymentOutcome, PaymentStore, RefreshTokenRecord,
    RefundNotify, RefundOutcome, RefundReserve, RefundStore, RotateOutcome, SessionState, SessionStore, Storage,
    Transition, UserInsert, UserQuery, UserStore,
};
use crate::domain::{
    Actor, NewOrder, NotificationId, Order, OrderEvent, OrderId, Payment, PaymentId, Refund, RefundId, User, UserId,
};
use crate::error::{Error, Result};

/// Wraps a storage so that each write runs to completion as its own task, whether or not its
/// caller is still waiting. Operations need a tokio runtime (they are spawned on the
/// current one).
#[derive(Debug, Clone)]
pub struct Detached {
    inner: DynStorage,
}

impl Detached {
    /// Wraps `inner`.
    pub fn wrap(inner: DynStorage) -> DynStorage {
        Arc::new(Detached { inner })
    }
}

/// Runs `f(storage)` as its own task and waits for it. A panic inside the operation is an
/// internal error for the caller, as it would be without the task.
async fn detached<T, F, Fut>(storage: &DynStorage, f: F) -> Result<T>
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

#[async_trait]
impl Storage for Detached {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn schema_version(&self) -> Result<i64> {
        self.inner.schema_version().await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn backup(&self, destination: &Path) -> Result<()> {
        let destination: PathBuf = destination.to_owned();
        detached(&self.inner, |s| async move { s.backup(&destination).await }).await
    }

    fn subscribe_outbox(&self, wake: Arc<tokio::sync::Notify>) {
        self.inner.subscribe_outbox(wake);
    }

    async fn get_or_init_setting(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>> {
        let name = name.to_owned();
        detached(&self.inner, |s| async move { s.get_or_init_setting(&name, candidate).await }).await
    }
}

#[async_trait]
impl UserStore for Detached {
    async fn insert_user(&self, user: NewUserRecord) -> Result<UserInsert> {
        detached(&self.inner, |s| async move { s.insert_user(user).await }).await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        self.inner.user_by_id(id).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        self.inner.user_by_username(username).await
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<Credentials>> {
        self.inner.user_credentials(username).await
    }

    async fn list_users(&self, query: UserQuery) -> Result<Vec<User>> {
        self.inner.list_users(query).await
    }

    async fn set_staff(&self, id: UserId, is_staff: bool) -> Result<Option<Transition<User>>> {
        detached(&self.inner, |s| async move { s.set_staff(id, is_staff).await }).await
    }

    async fn set_active(&self, id: UserId, is_active: bool, at: DateTime<Utc>) -> Result<Option<Transition<User>>> {
        detached(&self.inner, |s| async move { s.set_active(id, is_active, at).await }).await
    }
}

#[async_trait]
impl SessionStore for Detached {
    async fn insert_refresh_token(&self, token: RefreshTokenRecord) -> Result<bool> {
        detached(&self.inner, |s| async move { s.insert_refresh_token(token).await }).await
    }

    async fn rotate_refresh_token(
        &self,
        user_id: UserId,
        family: &str,
        old_jti: &str,
        new: RefreshTokenRecord,
        now: DateTime<Utc>,
    ) -> Result<RotateOutcome> {
        let (family, old_jti) = (family.to_owned(), old_jti.to_owned());
        detached(&self.inner, |s| async move { s.rotate_refresh_token(user_id, &family, &old_jti, new, now).await })
            .await
    }

    async fn session_state(&self, user_id: UserId, session: &str) -> Result<Option<SessionState>> {
        self.inner.session_state(user_id, session).await
    }

    async fn revoke_session(&self, user_id: UserId, session: &str, at: DateTime<Utc>) -> Result<bool> {
        let session = session.to_owned();
        detached(&self.inner, |s| async move { s.revoke_session(user_id, &session, at).await }).await
    }

    async fn end_sessions(
        &self,
        user_id: UserId,
        keep: Option<&str>,
        password_hash: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let keep = keep.map(str::to_owned);
        detached(&self.inner, |s| async move { s.end_sessions(user_id, keep.as_deref(), password_hash, at).await })
            .await
    }

    async fn prune_sessions(
        &self,
        tokens_expired_before: DateTime<Utc>,
        sessions_started_before: DateTime<Utc>,
    ) -> Result<u64> {
        detached(&self.inner, |s| async move { s.prune_sessions(tokens_expired_before, sessions_started_before).await })
            .await
    }
}

mod commerce;
