//! The [`Storage`] trait: every method is one unit of atomicity ("insert this order with its
//! items, its first audit event and its outbox rows"), never a bare table operation.
//!
//! Backends: [`sqlite`] (embedded default) and [`postgres`] (many processes, one database). The conformance suite in [`conformance`] (feature
//! `test-support`) is written once and run against every backend.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    Actor, EndpointId, Fulfillment, FulfillmentId, FulfillmentStatus, FulfillmentStep, Message, Money, NewOrder,
    NotificationId, Order, OrderEvent, OrderId, Payment, PaymentId, PaymentStatus, Refund, RefundId, RefundStatus,
    Return, ReturnId, ReturnStatus, ReturnStep, SettleAction, User, UserId, WebhookDelivery, WebhookEndpoint,
};
pub use crate::domain::{NotificationStatus, OutboxEntry};
use crate::error::{Error, Result};
pub use complete::complete;
pub use types::*;

mod complete;
#[cfg(feature = "test-support")]
pub mod conformance;
pub mod freshness;
pub mod policy;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) mod rows;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod types;

/// Persistence for everything SOM keeps. Implementations must be safe to share across tasks
/// and must not block the async runtime.
#[async_trait]
pub trait Storage:
    UserStore
    + SessionStore
    + OrderStore
    + PaymentStore
    + RefundStore
    + FulfillmentStore
    + OutboxStore
    + WebhookStore
    + IdempotencyStore
    + Send
    + Sync
    + fmt::Debug
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// The schema version the database is at (migrations run when the storage is opened).
    async fn schema_version(&self) -> Result<i64>;

    /// `Ok` when the database answers.
    async fn ping(&self) -> Result<()>;

    /// The read replicas reads that may lag are served from (see [`freshness`]), as last
    /// checked; empty for a backend without any.
    fn replicas(&self) -> Vec<ReplicaStatus> {
        Vec::new()
    }

    /// Writes a consistent copy of the whole database to a new file at `destination` while the
    /// database stays in use. Backends whose servers have their own tools (PostgreSQL:
    /// `pg_dump`) refuse.
    async fn backup(&self, destination: &std::path::Path) -> Result<()> {
        let _ = destination;
        Err(Error::invalid("backup", format!("{} databases are backed up with their own tools", self.backend())))
    }

    /// Arranges for `wake` to be notified whenever another process commits outbox rows (for
    /// backends shared between processes). The default does nothing: in-process commits wake
    /// the dispatcher directly.
    fn subscribe_outbox(&self, wake: Arc<tokio::sync::Notify>) {
        let _ = wake;
    }

    /// The value stored under `name`, or — if none yet — stores `candidate` and returns it.
    /// Concurrent callers all get the same value.
    async fn get_or_init_setting(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>>;
}

/// Accounts: insert, look up, list, change roles and whether they are active.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Inserts a user, or reports which of its username and email another account has.
    async fn insert_user(&self, user: NewUserRecord) -> Result<UserInsert>;

    /// The user by id.
    async fn user_by_id(&self, id: UserId) -> Result<Option<User>>;

    /// The user by exact username.
    async fn user_by_username(&self, username: &str) -> Result<Option<User>>;

    /// The user, their password hash and session version, for login.
    async fn user_credentials(&self, username: &str) -> Result<Option<Credentials>>;

    /// Users matching `query`, by ascending id.
    async fn list_users(&self, query: UserQuery) -> Result<Vec<User>>;

    /// Sets the staff flag; `None` if there is no such user. Revoking it is `NotApplied` (with
    /// the user unchanged) when it would leave no active staff account: checked and made in
    /// one step that concurrent changes cannot interleave with.
    async fn set_staff(&self, id: UserId, is_staff: bool) -> Result<Option<Transition<User>>>;

    /// Enables or disables an account; disabling also ends every session of it, in the same
    /// transaction. `None` if there is no such user; disabling is `NotApplied` when it would
    /// leave no active staff account, checked as [`UserStore::set_staff`] does.
    async fn set_active(&self, id: UserId, is_active: bool, at: DateTime<Utc>) -> Result<Option<Transition<User>>>;
}

/// Login sessions and their refresh tokens.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Starts a session: remembers its first refresh token and records the session (id
    /// `token.family`) at the user's current session version — only while the account is
    /// active and, when `token.checked_version` is given, that version is still current, in
    /// one statement. False (nothing written) otherwise.
    async fn insert_refresh_token(&self, token: RefreshTokenRecord) -> Result<bool>;

    /// Atomically uses `old_jti` (which must belong to `user_id` and `family`, be unexpired,
    /// unused and unrevoked, in a live session of an active user) and stores `new` in the same
    /// family. A second use of a token revokes its whole session (`ReuseDetected`).
    async fn rotate_refresh_token(
        &self,
        user_id: UserId,
        family: &str,
        old_jti: &str,
        new: RefreshTokenRecord,
        now: DateTime<Utc>,
    ) -> Result<RotateOutcome>;

    /// The user of session `session` and whether the session is live; `None` when there is no
    /// such user or no such session of theirs.
    async fn session_state(&self, user_id: UserId, session: &str) -> Result<Option<SessionState>>;

    /// How many live sessions `user_id` has that started at or after `started_after`.
    async fn live_sessions(&self, user_id: UserId, started_after: DateTime<Utc>) -> Result<u64>;

    /// Revokes one session of `user_id` (and its refresh tokens) at `at`. False when there is
    /// no such live session.
    async fn revoke_session(&self, user_id: UserId, session: &str, at: DateTime<Utc>) -> Result<bool>;

    /// Ends every session of `user_id` except `keep`: moves the user's session version on (so
    /// that access tokens of the others stop working), revokes their refresh tokens, and keeps
    /// `keep` live at the new version. When `password_hash` is given, it becomes the user's
    /// password in the same transaction. False when there is no such user.
    async fn end_sessions(
        &self,
        user_id: UserId,
        keep: Option<&str>,
        password_hash: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    /// Forgets refresh tokens that expired before `tokens_expired_before`, and sessions that
    /// started before `sessions_started_before` and have no refresh token left; how many rows.
    async fn prune_sessions(
        &self,
        tokens_expired_before: DateTime<Utc>,
        sessions_started_before: DateTime<Utc>,
    ) -> Result<u64>;
}

/// Orders with their items, audit events and outbox rows.
#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Inserts the order, its items, its creation event and its outbox rows in one
    /// transaction, recording `idempotency`'s result in the same transaction.
    async fn insert_order(
        &self,
        user_id: UserId,
        actor: Actor,
        order: NewOrder,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Order>;

    /// The order with its items.
    async fn order_by_id(&self, id: OrderId) -> Result<Option<Order>>;

    /// Orders matching `query`, newest (highest id) first.
    async fn list_orders(&self, query: OrderQuery) -> Result<Vec<Order>>;

    /// Orders placed at or after `since`, counted and summed per status and currency.
    async fn order_totals(&self, since: DateTime<Utc>) -> Result<Vec<OrderTotals>>;

    /// The user's newest order.
    async fn latest_order(&self, user_id: UserId) -> Result<Option<Order>>;

    /// The order's audit trail, oldest first.
    async fn order_events(&self, id: OrderId) -> Result<Vec<OrderEvent>>;

    /// `CREATED → CANCELLED` if the order is CREATED (a conditional update), voiding its PENDING
    /// payment, recording the event and the outbox rows. `NotApplied` with the current order
    /// otherwise; `NotFound` if there is no such order.
    async fn cancel_order(
        &self,
        id: OrderId,
        actor: Actor,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Order>>;
}

/// Payments: at most one live payment per order, conditional completion.
#[async_trait]
pub trait PaymentStore: Send + Sync {
    /// The order's PENDING, AUTHORIZED or SUCCESS payment, if any.
    async fn live_payment(&self, order_id: OrderId) -> Result<Option<Payment>>;

    /// Inserts a PENDING payment if the order is CREATED and has no live payment (the database
    /// enforces one live payment per order; a lost race returns the winner).
    async fn insert_payment(
        &self,
        payment: NewPaymentRecord,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<PaymentInsert>;

    /// The payment by id.
    async fn payment_by_id(&self, id: PaymentId) -> Result<Option<Payment>>;

    /// The payment a provider knows by this id (its events name payments so).
    async fn payment_by_provider_id(&self, provider: &str, provider_payment_id: &str) -> Result<Option<Payment>>;

    /// Records what the payer must do next (JSON), or clears it with `None`, while the payment
    /// is PENDING; the payment as stored now (`None` when there is no such payment).
    async fn set_next_action(&self, id: PaymentId, next_action: Option<String>) -> Result<Option<Payment>>;

    /// True when this provider event has been applied before.
    async fn inbound_event_seen(&self, provider: &str, event_id: &str) -> Result<bool>;

    /// Records a provider event as applied; false when it already was.
    async fn record_inbound_event(&self, provider: &str, event_id: &str, kind: &str, at: DateTime<Utc>)
    -> Result<bool>;

    /// How many confirmations of the payment failed transiently so far (0 when there is no
    /// such payment). Stored, so that every process sees the same count.
    async fn transient_failures(&self, id: PaymentId) -> Result<u32>;

    /// Counts one more transient confirmation failure of a PENDING payment.
    async fn record_transient_failure(&self, id: PaymentId) -> Result<()>;

    /// The order's payments, oldest first.
    async fn payments_for_order(&self, order_id: OrderId) -> Result<Vec<Payment>>;

    /// How many payments are in `status`.
    async fn count_payments(&self, status: PaymentStatus) -> Result<u64>;

    /// Payments in one of `statuses` (the ended ones, as the domain names them) whose
    /// provider-side payment is not yet recorded as closed, oldest first.
    async fn payments_open_at_provider(&self, statuses: &[PaymentStatus], limit: u32) -> Result<Vec<Payment>>;

    /// Records that the provider-side payment of `id` is closed (cancelled there, or found
    /// already finished); false when it already was recorded or there is no such payment.
    async fn mark_closed_at_provider(&self, id: PaymentId, at: DateTime<Utc>) -> Result<bool>;

    /// Ends a PENDING payment (conditional update). On success the order goes CREATED → PAID
    /// (or, authorised, CREATED → AUTHORIZED) with its event in the same transaction. Outbox rows and the idempotency result are
    /// written in the same transaction. `NotApplied` with the current payment when it was not
    /// PENDING.
    async fn complete_payment(
        &self,
        id: PaymentId,
        outcome: PaymentOutcome,
        actor: Actor,
        at: DateTime<Utc>,
        notify: PaymentNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Payment>>;

    /// Claims an AUTHORIZED payment for `action` (a capture of `amount`, a void, an expiry):
    /// a conditional update that holds only while it is AUTHORIZED, no other settlement is
    /// claimed, and — for an expiry — its authorisation ran out by `at`. Exactly one claim
    /// wins; `NotApplied` with the current payment for the others.
    async fn begin_settlement(
        &self,
        id: PaymentId,
        action: SettleAction,
        amount: Money,
        at: DateTime<Utc>,
    ) -> Result<Transition<Payment>>;

    /// Gives up the settlement claimed at `started_at` that the provider refused (a declined
    /// capture): the payment stays AUTHORIZED and may be captured or voided again. False when
    /// that claim is not the payment's (finished, or another claim since).
    async fn abandon_settlement(&self, id: PaymentId, action: SettleAction, started_at: DateTime<Utc>) -> Result<bool>;

    /// Ends an AUTHORIZED payment (conditional update): captured (SUCCESS with the captured
    /// amount, order AUTHORIZED → PAID) or released (VOIDED or EXPIRED, order AUTHORIZED →
    /// CANCELLED, provider side closed), with the order's event, the outbox rows and the
    /// idempotency result in one transaction; any claimed settlement is cleared. `NotApplied`
    /// with the current payment when it was not AUTHORIZED.
    async fn finish_settlement(
        &self,
        id: PaymentId,
        outcome: SettlementOutcome,
        actor: Actor,
        at: DateTime<Utc>,
        notify: PaymentNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Payment>>;

    /// AUTHORIZED payments whose settlement was claimed before `started_before` and has not
    /// finished (its request died), oldest claim first.
    async fn stalled_settlements(&self, started_before: DateTime<Utc>, limit: u32) -> Result<Vec<Payment>>;

    /// AUTHORIZED payments with no settlement claimed whose authorisation runs out at or
    /// before `before`, soonest first; with `unwarned`, only those staff were not yet told of.
    async fn expiring_authorizations(&self, before: DateTime<Utc>, unwarned: bool, limit: u32) -> Result<Vec<Payment>>;

    /// Records that staff were told the authorisation of `id` is about to run out; false when
    /// it already was.
    async fn mark_expiry_warned(&self, id: PaymentId, at: DateTime<Utc>) -> Result<bool>;
}

/// Refunds: set aside within the captured amount, then finished or released.
#[async_trait]
pub trait RefundStore: Send + Sync {
    /// Sets a refund aside: in one transaction, adds its amount to the payment's reserved
    /// amount — a conditional update that holds only while the payment is refundable and the
    /// reserved amount stays within the captured amount — and inserts the PENDING refund.
    async fn reserve_refund(&self, refund: NewRefundRecord) -> Result<RefundReserve>;

    /// Ends a PENDING refund (conditional update). Succeeded: the payment's and order's
    /// refunded amounts grow and their statuses move on as [`crate::domain::PaymentStatus::refund`]
    /// and [`OrderStatus::refund`] say, with the order's event and the outbox rows, in one
    /// transaction. Failed: the amount is released. `NotApplied` with the current refund when
    /// it was not PENDING.
    async fn finish_refund(
        &self,
        id: RefundId,
        outcome: RefundOutcome,
        at: DateTime<Utc>,
        notify: RefundNotify,
    ) -> Result<Transition<Refund>>;

    /// Records the provider's id of a refund it is still returning (the refund stays PENDING),
    /// so that SOM asks about that refund later instead of making it again. No-op when the
    /// refund is not PENDING or already has one.
    async fn note_provider_refund(&self, id: RefundId, provider_refund_id: &str) -> Result<()>;

    /// A SUCCEEDED refund the provider reports failed after all (no money went back):
    /// SUCCEEDED → FAILED with `reason`, and in the same transaction the payment's and order's
    /// refunded amounts shrink by it and their statuses move back as
    /// [`crate::domain::PaymentStatus::refund_reversed`] and
    /// [`crate::domain::OrderStatus::refund_reversed`] say, with the order's event.
    /// `NotApplied` with the current refund when it was not SUCCEEDED.
    async fn reverse_refund(&self, id: RefundId, reason: &str, at: DateTime<Utc>) -> Result<Transition<Refund>>;

    /// The refund by id.
    async fn refund_by_id(&self, id: RefundId) -> Result<Option<Refund>>;

    /// The payment's refunds, oldest first.
    async fn refunds_for_payment(&self, payment_id: PaymentId) -> Result<Vec<Refund>>;

    /// How many refunds are in `status`.
    async fn count_refunds(&self, status: RefundStatus) -> Result<u64>;

    /// PENDING refunds created before `created_before`, oldest first (left behind by a crash
    /// or a provider outage).
    async fn pending_refunds(&self, created_before: DateTime<Utc>, limit: u32) -> Result<Vec<Refund>>;
}

/// Fulfilments and returns of an order's items. Every write locks the order (its row, or the
/// single writer), checks quantities against the order's other fulfilments and returns with
/// [`crate::domain::fulfillment_lines`] / [`crate::domain::return_lines`], applies the step the
/// domain's tables allow, updates the order's fulfilment status, and records the order's event
/// and the outbox rows, in one transaction.
#[async_trait]
pub trait FulfillmentStore: Send + Sync {
    /// Makes a PENDING fulfilment. `NotFound` without the order; `Conflict` when the order's
    /// goods may not be fulfilled or a line asks for more than is left; `Validation` for lines
    /// that are not the order's.
    async fn create_fulfillment(&self, record: NewFulfillmentRecord, notify: FulfillmentNotify) -> Result<Fulfillment>;

    /// Takes `step` on a fulfilment. `NotApplied` with the fulfilment as it is when its status
    /// does not allow the step; `Conflict` when the order's goods may no longer be shipped.
    async fn advance_fulfillment(
        &self,
        id: FulfillmentId,
        step: FulfillmentStep,
        actor: Actor,
        at: DateTime<Utc>,
        notify: FulfillmentNotify,
    ) -> Result<Transition<Fulfillment>>;

    /// The fulfilment by id.
    async fn fulfillment_by_id(&self, id: FulfillmentId) -> Result<Option<Fulfillment>>;

    /// The order's fulfilments, oldest first.
    async fn fulfillments_for_order(&self, order_id: OrderId) -> Result<Vec<Fulfillment>>;

    /// Fulfilments matching `query`, by ascending id.
    async fn list_fulfillments(&self, query: AfterPaymentQuery<FulfillmentStatus>) -> Result<Vec<Fulfillment>>;

    /// Asks for a REQUESTED return of delivered items. `NotFound` without the order; `Conflict`
    /// when a line asks for more than was delivered and is not in another return.
    async fn request_return(&self, record: NewReturnRecord, notify: ReturnNotify) -> Result<Return>;

    /// Takes `step` on a return. Receiving it with a refund sets the refund aside on the
    /// order's captured payment ([`RefundStore::reserve_refund`]'s rules) in the same
    /// transaction; a refund that cannot be set aside is `Conflict` and nothing changes. The
    /// refund's success moves the return to REFUNDED ([`RefundStore::finish_refund`]).
    /// `NotApplied` with the return as it is when its status does not allow the step.
    async fn advance_return(
        &self,
        id: ReturnId,
        step: ReturnStep,
        actor: Actor,
        at: DateTime<Utc>,
        notify: ReturnNotify,
    ) -> Result<Transition<ReturnChange>>;

    /// The return by id.
    async fn return_by_id(&self, id: ReturnId) -> Result<Option<Return>>;

    /// The order's returns, oldest first.
    async fn returns_for_order(&self, order_id: OrderId) -> Result<Vec<Return>>;

    /// Returns matching `query`, by ascending id.
    async fn list_returns(&self, query: AfterPaymentQuery<ReturnStatus>) -> Result<Vec<Return>>;
}

/// The notification outbox: claims with leases, delivery bookkeeping, operator views.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Claims up to `limit` due, unleased pending rows for `lease_until`, tagging them with
    /// `claim_token` and counting an attempt on each.
    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        claim_token: &str,
    ) -> Result<Vec<OutboxEntry>>;

    /// Marks claimed rows delivered, in one write; how many were marked. A row whose claim was
    /// lost (its lease expired and it was claimed again) is left alone.
    async fn mark_notifications_sent(
        &self,
        ids: &[NotificationId],
        claim_token: &str,
        at: DateTime<Utc>,
    ) -> Result<u64>;

    /// Records a failed attempt at `at`: pending again at `retry_at`, or dead when `retry_at` is
    /// `None`.
    async fn mark_notification_failed(
        &self,
        id: NotificationId,
        claim_token: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    /// Marks a claimed row skipped at `at` (nothing to deliver on its channel), recording why.
    async fn mark_notification_skipped(
        &self,
        id: NotificationId,
        claim_token: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    /// Gives a claimed row back without counting the attempt (graceful shutdown).
    async fn release_notification(&self, id: NotificationId, claim_token: &str) -> Result<bool>;

    /// Outbox rows matching `query`, by ascending id.
    async fn list_notifications(&self, query: NotificationQuery) -> Result<Vec<OutboxEntry>>;

    /// Puts a dead row back to pending with zero attempts, due at `now`. `None` if there is no
    /// such row; `NotApplied` if it was not dead.
    async fn requeue_notification(
        &self,
        id: NotificationId,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition<OutboxEntry>>>;

    /// Puts every dead row of `channel` back to pending with zero attempts, due at `now`; how
    /// many.
    async fn requeue_dead_notifications(&self, channel: &str, now: DateTime<Utc>) -> Result<u64>;

    /// Row counts per status.
    async fn notification_counts(&self) -> Result<Vec<(NotificationStatus, u64)>>;

    /// Writes outbox rows of their own (staff alerts), in one transaction; a row whose
    /// `(dedupe_key, channel)` is already there is skipped.
    async fn enqueue_notifications(&self, rows: Vec<NewNotification>, at: DateTime<Utc>) -> Result<()>;
}

/// Why an endpoint made from `SOM_WEBHOOK_URLS` is disabled once its URL is no longer listed;
/// listing it again enables it.
pub const UNLISTED_CONFIG_ENDPOINT: &str = "no longer in SOM_WEBHOOK_URLS";

/// Webhook endpoints, their delivery records, and events looked up again to redeliver them.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a new endpoint.
    async fn insert_endpoint(&self, record: NewEndpointRecord) -> Result<WebhookEndpoint>;

    /// The endpoint made from `SOM_WEBHOOK_URLS` for `url`, made now (with `secret`) if there
    /// is none, its secret set to `secret` (and enabled again if it was disabled for being
    /// unlisted, [`UNLISTED_CONFIG_ENDPOINT`]) if there is; in one transaction.
    async fn upsert_config_endpoint(&self, url: &str, secret: &str, at: DateTime<Utc>) -> Result<WebhookEndpoint>;

    /// One endpoint.
    async fn endpoint_by_id(&self, id: EndpointId) -> Result<Option<WebhookEndpoint>>;

    /// Endpoints by ascending id, after `after`, at most `limit`.
    async fn list_endpoints(&self, after: Option<EndpointId>, limit: u32) -> Result<Vec<WebhookEndpoint>>;

    /// Applies `change` at `at`; `None` if there is no such endpoint.
    async fn update_endpoint(
        &self,
        id: EndpointId,
        change: EndpointChange,
        at: DateTime<Utc>,
    ) -> Result<Option<WebhookEndpoint>>;

    /// Deletes an endpoint with its delivery records; its deliveries still pending are
    /// skipped. Whether it existed.
    async fn delete_endpoint(&self, id: EndpointId, at: DateTime<Utc>) -> Result<bool>;

    /// Records a delivery attempt and the endpoint's health in one transaction: a success
    /// clears `failing_since`, a failure sets it if unset, and disables the endpoint as
    /// `record.disable_failing_since` says. Whether this disabled it.
    async fn record_delivery(&self, record: NewDeliveryRecord) -> Result<bool>;

    /// Delivery records matching `query`, newest first.
    async fn list_deliveries(&self, query: DeliveryQuery) -> Result<Vec<WebhookDelivery>>;

    /// Forgets delivery records made before `before`; how many.
    async fn prune_deliveries(&self, before: DateTime<Utc>) -> Result<u64>;

    /// The message of event `event_id` (an outbox dedupe key) and when it was written.
    async fn event_message(&self, event_id: &str) -> Result<Option<(Message, DateTime<Utc>)>>;

    /// Queues `rows` of an event that happened at `event_at` for delivery again at `now`, in
    /// one transaction: a row not yet there is written (dated `event_at`), one already
    /// delivered, skipped or dead, or being delivered right now (its claim is taken back, so it
    /// goes out once more), is pending again with no attempts; one waiting for its delivery is
    /// left as it is. How many rows were queued.
    async fn redeliver(&self, rows: Vec<NewNotification>, event_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64>;
}

/// Idempotency keys: begin, record, forget, prune.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Starts an idempotent request (see [`IdempotencyBegin`]). A key whose first request has
    /// held it without finishing since before `stale_before` is taken over.
    async fn begin_idempotency(
        &self,
        key: &IdempotencyKey,
        request_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<IdempotencyBegin>;

    /// Records the result of a request that had no storage effect of its own (a replayed
    /// lookup). No-op when the result was already recorded with the effect.
    async fn finish_idempotency(&self, key: &IdempotencyKey, response: &str) -> Result<()>;

    /// Forgets a key whose request failed before any effect, so that it may be retried.
    async fn abandon_idempotency(&self, key: &IdempotencyKey) -> Result<()>;

    /// Deletes keys expired before `now`; how many.
    async fn prune_idempotency(&self, now: DateTime<Utc>) -> Result<u64>;
}

/// Every storage trait, for callers of a [`DynStorage`]: `use som_core::storage::prelude::*;`.
pub mod prelude {
    pub use super::{
        FulfillmentStore, IdempotencyStore, OrderStore, OutboxStore, PaymentStore, RefundStore, SessionStore, Storage,
        UserStore, WebhookStore,
    };
}

/// A shareable storage handle.
pub type DynStorage = Arc<dyn Storage>;

/// Opens the backend `config.database_url` names, with `config`'s read replicas (PostgreSQL),
/// running migrations.
pub async fn open_config(config: &crate::config::Config) -> Result<DynStorage> {
    if config.database_read_urls.is_empty() {
        return open(&config.database_url, config.database_pool_size).await;
    }
    #[cfg(feature = "postgres")]
    return Ok(Arc::new(
        postgres::PostgresStorage::open_with_replicas(
            &config.database_url,
            config.database_pool_size,
            &config.database_read_urls,
            config.replica_max_lag,
        )
        .await?,
    ));
    #[cfg(not(feature = "postgres"))]
    Err(Error::invalid("SOM_DATABASE_READ_URLS", "this build has no PostgreSQL support (cargo feature `postgres`)"))
}

/// Opens the backend named by the URL scheme (`sqlite://…`, `sqlite::memory:`), running
/// migrations. This is the one place that chooses a backend.
pub async fn open(url: &str, pool_size: u32) -> Result<DynStorage> {
    let _ = pool_size;
    if url.starts_with("sqlite:") {
        #[cfg(feature = "sqlite")]
        return Ok(Arc::new(sqlite::SqliteStorage::open(url, pool_size).await?));
        #[cfg(not(feature = "sqlite"))]
        return Err(Error::invalid("SOM_DATABASE_URL", "this build has no SQLite support (cargo feature `sqlite`)"));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(postgres::PostgresStorage::open(url, pool_size).await?));
        #[cfg(not(feature = "postgres"))]
        return Err(Error::invalid(
            "SOM_DATABASE_URL",
            "this build has no PostgreSQL support (cargo feature `postgres`)",
        ));
    }
    Err(Error::invalid("SOM_DATABASE_URL", "must start with sqlite:// or postgres://"))
}
