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
    DynStorage, IdempotencyBegin, IdempotencyKey, IdempotencySlot, IdempotencyStore, NewPaymentRecord, NewRefundRecord,
    NewUserRecord, NotificationQuery, NotificationStatus, OrderNotify, OrderQuery, OrderStore, OutboxEntry,
    OutboxStore, PaymentInsert, PaymentNotify, PaymentOutcome, PaymentStore, RefreshTokenRecord, RefundNotify,
    RefundOutcome, RefundReserve, RefundStore, RotateOutcome, SessionState, SessionStore, Storage, Transition,
    UserInsert, UserQuery, UserStore,
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

    async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>> {
        self.inner.user_credentials(username).await
    }

    async fn list_users(&self, query: UserQuery) -> Result<Vec<User>> {
        self.inner.list_users(query).await
    }

    async fn set_staff(&self, id: UserId, is_staff: bool) -> Result<Option<User>> {
        detached(&self.inner, |s| async move { s.set_staff(id, is_staff).await }).await
    }

    async fn set_active(&self, id: UserId, is_active: bool, at: DateTime<Utc>) -> Result<Option<User>> {
        detached(&self.inner, |s| async move { s.set_active(id, is_active, at).await }).await
    }
}

#[async_trait]
impl SessionStore for Detached {
    async fn insert_refresh_token(&self, token: RefreshTokenRecord) -> Result<()> {
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

#[async_trait]
impl OrderStore for Detached {
    async fn insert_order(
        &self,
        user_id: UserId,
        actor: Actor,
        order: NewOrder,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Order> {
        detached(&self.inner, |s| async move { s.insert_order(user_id, actor, order, at, notify, idempotency).await })
            .await
    }

    async fn order_by_id(&self, id: OrderId) -> Result<Option<Order>> {
        self.inner.order_by_id(id).await
    }

    async fn list_orders(&self, query: OrderQuery) -> Result<Vec<Order>> {
        self.inner.list_orders(query).await
    }

    async fn latest_order(&self, user_id: UserId) -> Result<Option<Order>> {
        self.inner.latest_order(user_id).await
    }

    async fn order_events(&self, id: OrderId) -> Result<Vec<OrderEvent>> {
        self.inner.order_events(id).await
    }

    async fn cancel_order(
        &self,
        id: OrderId,
        actor: Actor,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Order>> {
        detached(&self.inner, |s| async move { s.cancel_order(id, actor, at, notify, idempotency).await }).await
    }
}

#[async_trait]
impl PaymentStore for Detached {
    async fn live_payment(&self, order_id: OrderId) -> Result<Option<Payment>> {
        self.inner.live_payment(order_id).await
    }

    async fn payment_count(&self, order_id: OrderId) -> Result<u32> {
        self.inner.payment_count(order_id).await
    }

    async fn insert_payment(
        &self,
        payment: NewPaymentRecord,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<PaymentInsert> {
        detached(&self.inner, |s| async move { s.insert_payment(payment, idempotency).await }).await
    }

    async fn payment_by_id(&self, id: PaymentId) -> Result<Option<Payment>> {
        self.inner.payment_by_id(id).await
    }

    async fn transient_failures(&self, id: PaymentId) -> Result<u32> {
        self.inner.transient_failures(id).await
    }

    async fn record_transient_failure(&self, id: PaymentId) -> Result<()> {
        detached(&self.inner, |s| async move { s.record_transient_failure(id).await }).await
    }

    async fn payments_for_order(&self, order_id: OrderId) -> Result<Vec<Payment>> {
        self.inner.payments_for_order(order_id).await
    }

    async fn complete_payment(
        &self,
        id: PaymentId,
        outcome: PaymentOutcome,
        actor: Actor,
        at: DateTime<Utc>,
        notify: PaymentNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Payment>> {
        detached(&self.inner, |s| async move { s.complete_payment(id, outcome, actor, at, notify, idempotency).await })
            .await
    }
}

#[async_trait]
impl RefundStore for Detached {
    async fn reserve_refund(&self, refund: NewRefundRecord) -> Result<RefundReserve> {
        detached(&self.inner, |s| async move { s.reserve_refund(refund).await }).await
    }

    async fn finish_refund(
        &self,
        id: RefundId,
        outcome: RefundOutcome,
        at: DateTime<Utc>,
        notify: RefundNotify,
    ) -> Result<Transition<Refund>> {
        detached(&self.inner, |s| async move { s.finish_refund(id, outcome, at, notify).await }).await
    }

    async fn refund_by_id(&self, id: RefundId) -> Result<Option<Refund>> {
        self.inner.refund_by_id(id).await
    }

    async fn refunds_for_payment(&self, payment_id: PaymentId) -> Result<Vec<Refund>> {
        self.inner.refunds_for_payment(payment_id).await
    }

    async fn pending_refunds(&self, created_before: DateTime<Utc>, limit: u32) -> Result<Vec<Refund>> {
        self.inner.pending_refunds(created_before, limit).await
    }
}

#[async_trait]
impl OutboxStore for Detached {
    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        claim_token: &str,
    ) -> Result<Vec<OutboxEntry>> {
        let claim_token = claim_token.to_owned();
        detached(&self.inner, |s| async move { s.claim_notifications(now, lease_until, limit, &claim_token).await })
            .await
    }

    async fn mark_notification_sent(&self, id: NotificationId, claim_token: &str, at: DateTime<Utc>) -> Result<bool> {
        let claim_token = claim_token.to_owned();
        detached(&self.inner, |s| async move { s.mark_notification_sent(id, &claim_token, at).await }).await
    }

    async fn mark_notification_failed(
        &self,
        id: NotificationId,
        claim_token: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (claim_token, error) = (claim_token.to_owned(), error.to_owned());
        detached(
            &self.inner,
            |s| async move { s.mark_notification_failed(id, &claim_token, &error, retry_at, at).await },
        )
        .await
    }

    async fn mark_notification_skipped(
        &self,
        id: NotificationId,
        claim_token: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (claim_token, reason) = (claim_token.to_owned(), reason.to_owned());
        detached(&self.inner, |s| async move { s.mark_notification_skipped(id, &claim_token, &reason, at).await }).await
    }

    async fn release_notification(&self, id: NotificationId, claim_token: &str) -> Result<bool> {
        let claim_token = claim_token.to_owned();
        detached(&self.inner, |s| async move { s.release_notification(id, &claim_token).await }).await
    }

    async fn list_notifications(&self, query: NotificationQuery) -> Result<Vec<OutboxEntry>> {
        self.inner.list_notifications(query).await
    }

    async fn requeue_notification(
        &self,
        id: NotificationId,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition<OutboxEntry>>> {
        detached(&self.inner, |s| async move { s.requeue_notification(id, now).await }).await
    }

    async fn notification_counts(&self) -> Result<Vec<(NotificationStatus, u64)>> {
        self.inner.notification_counts().await
    }
}

#[async_trait]
impl IdempotencyStore for Detached {
    async fn begin_idempotency(
        &self,
        key: &IdempotencyKey,
        request_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<IdempotencyBegin> {
        let (key, request_hash) = (key.clone(), request_hash.to_owned());
        detached(&self.inner, |s| async move {
            s.begin_idempotency(&key, &request_hash, now, expires_at, stale_before).await
        })
        .await
    }

    async fn finish_idempotency(&self, key: &IdempotencyKey, response: &str) -> Result<()> {
        let (key, response) = (key.clone(), response.to_owned());
        detached(&self.inner, |s| async move { s.finish_idempotency(&key, &response).await }).await
    }

    async fn abandon_idempotency(&self, key: &IdempotencyKey) -> Result<()> {
        let key = key.clone();
        detached(&self.inner, |s| async move { s.abandon_idempotency(&key).await }).await
    }

    async fn prune_idempotency(&self, now: DateTime<Utc>) -> Result<u64> {
        detached(&self.inner, |s| async move { s.prune_idempotency(now).await }).await
    }
}
