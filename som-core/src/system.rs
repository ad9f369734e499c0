//! [`OrderSystem`]: the facade every front end calls. Each method checks who is calling,
//! validates its input, and performs one unit of work through the three traits.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::auth::{LoginFailures, PasswordHasher, SessionCache, TokenKeys, TokenPair};
use crate::clock::{DynClock, SystemClock};
use crate::config::Config;
use crate::domain::{
    Caller, CaptureMethod, Email, EventKind, Message, NewOrder, NotificationId, Order, OrderEvent, OrderId, OrderInput,
    OrderStatus, Password, Payment, PaymentId, PaymentStatus, User, UserId, Username,
};
use crate::error::{Error, Result, ValidationErrors};
use crate::notify::{Dispatcher, DispatcherHandle, LogNotifier, Notifier};
use crate::payment::{Confirmation, MockProvider, PaymentProvider, PaymentRequest, ProviderError};
use crate::storage::{
    DynStorage, IdempotencyBegin, IdempotencyKey, IdempotencySlot, NewNotification, NewPaymentRecord, NewUserRecord,
    NotificationQuery, NotificationStatus, OrderNotify, OrderQuery, OrderSearch, OutboxEntry, PaymentInsert,
    PaymentNotify, PaymentOutcome, RefreshTokenRecord, RotateOutcome, Transition, UserInsert, UserQuery,
};
pub use events::{EventOutcome, EventReceipt};

mod accounts;
mod alerts;
mod builder;
mod capture;
mod closing;
mod events;
mod export;
mod fulfillments;
mod idempotency;
mod locks;
mod notifications;
mod orders;
mod overview;
mod payments;
mod queries;
mod refunds;
mod requests;
#[cfg(feature = "webhook")]
mod webhooks;

#[cfg(feature = "webhook")]
pub(crate) use alerts::write_staff_alert;
pub use builder::OrderSystemBuilder;
pub use export::{EXPORT_BATCH, ExportFormat, OrderExport, OrderExportQuery};
pub use fulfillments::{FulfillmentInput, MAX_RETURN_TEXT_CHARS, ReturnInput, ShipInput};
use locks::KeyedLocks;
use orders::*;
pub use overview::{Activity, CurrencyActivity, Hold, Overview};
pub use queries::{
    DEFAULT_PAGE_SIZE, MAX_ADMIN_PAGE_SIZE, MAX_IDEMPOTENCY_KEY_LEN, MAX_PAGE_SIZE, NotificationListQuery,
    OrderListQuery, Page, Registration, UserListQuery,
};
pub use requests::{
    CancelOrder, CapturePayment, ConfirmPayment, CreateOrder, InitiatePayment, RefundPayment, VoidPayment,
};
#[cfg(feature = "webhook")]
pub use webhooks::{
    DEFAULT_SECRET_OVERLAP, DeliveryListQuery, EndpointInput, EndpointPatch, MAX_ENDPOINTS, MAX_SECRET_OVERLAP,
    Redelivery,
};

/// The order system. Cheap to clone; all clones share storage, provider and notifiers.
#[derive(Debug, Clone)]
pub struct OrderSystem {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: DynStorage,
    provider: Arc<dyn PaymentProvider>,
    notifiers: Vec<Arc<dyn Notifier>>,
    channels: Vec<String>,
    keys: TokenKeys,
    /// Sessions seen live, trusted for `SOM_SESSION_CACHE_TTL`.
    sessions: SessionCache,
    hasher: PasswordHasher,
    login_failures: LoginFailures,
    /// Where every rule reads the time.
    clock: DynClock,
    config: Config,
    wake: Arc<Notify>,
    order_locks: KeyedLocks<OrderId>,
    payment_locks: KeyedLocks<PaymentId>,
    /// One settlement at a time per refund.
    refund_locks: KeyedLocks<crate::domain::RefundId>,
    /// When each user last wrote, for reads from replicas (only when storage has replicas).
    recent_writes: Option<crate::storage::freshness::RecentWrites>,
}

fn provider_error(e: ProviderError) -> Error {
    match e {
        ProviderError::Declined { message, .. } => Error::PaymentDeclined(message),
        ProviderError::InvalidRequest(message) => Error::invalid("method", message),
        ProviderError::Transient(message) => {
            tracing::warn!(%message, "payment provider failed transiently");
            Error::Unavailable("payment provider".into())
        }
    }
}

fn admin_page_size(limit: u32) -> Result<u32> {
    if (1..=MAX_ADMIN_PAGE_SIZE).contains(&limit) {
        Ok(limit)
    } else {
        Err(Error::invalid("limit", format!("must be between 1 and {MAX_ADMIN_PAGE_SIZE}")))
    }
}

impl OrderSystem {
    /// Starts building a system.
    pub fn builder() -> OrderSystemBuilder {
        OrderSystemBuilder::default()
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Warnings an operator must see while they hold, e.g. that payments go through the mock
    /// provider, with which any user can mark their own order paid. Empty when there are none.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.inner.provider.name() == crate::payment::MockProvider::NAME {
            warnings.push(
                "payments use the mock provider: any user can mark their own order paid; configure a real \
                 payment provider before taking orders"
                    .to_owned(),
            );
        }
        let config = &self.inner.config;
        if config.jwt_secret.is_none() {
            warnings.push(
                "SOM_JWT_SECRET is not set: tokens are signed with a key generated once and kept in the database, \
                 so anyone who can read the database (or a backup) can forge tokens; set SOM_JWT_SECRET to keep \
                 the key out of it"
                    .to_owned(),
            );
        }
        if self.inner.provider.name() == "stripe" && config.stripe_webhook_secret.is_none() {
            warnings.push(
                "SOM_STRIPE_WEBHOOK_SECRET is not set: Stripe's events (3-D Secure completions, late declines, \
                 refunds made in Stripe's dashboard) are refused"
                    .to_owned(),
            );
        }
        warnings
    }

    /// The payment methods the configured provider takes (empty when it cannot list them).
    pub fn payment_methods(&self) -> Vec<String> {
        self.inner.provider.methods()
    }

    /// Which database backend it runs on: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.inner.storage.backend()
    }

    /// The version of the database schema (migrations run when the system is built).
    pub async fn schema_version(&self) -> Result<i64> {
        self.inner.storage.schema_version().await
    }

    /// Writes a consistent copy of the whole database to a new file at `destination` while
    /// the system stays in use (SQLite; PostgreSQL databases are backed up with `pg_dump`).
    pub async fn backup(&self, destination: &std::path::Path) -> Result<()> {
        let destination = destination.to_owned();
        self.write(move |s| async move { s.backup(&destination).await }).await
    }

    /// `Ok` when storage answers (for readiness checks).
    pub async fn ping(&self) -> Result<()> {
        self.inner.storage.ping().await
    }

    /// Runs a storage write to its end even if the caller stops waiting; every write the facade
    /// makes goes through here (see [`crate::storage::complete`]).
    async fn write<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(DynStorage) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        crate::storage::complete(&self.inner.storage, f).await
    }

    /// Runs `call`, one of the facade's calls that write, and then remembers its end as
    /// `caller`'s last write (see [`OrderSystem::last_write`]), whatever its outcome: even a
    /// failed call may have committed part of its work (an answer lost on the way back). A call
    /// abandoned by its caller (a timeout, a client that hung up) may still be writing, on its
    /// own task: the caller's reads then wait as long as a replica may lag.
    async fn writing<T>(&self, caller: Caller, call: impl Future<Output = Result<T>>) -> Result<T> {
        /// Records the write when dropped: at the end of the call, or when it is abandoned.
        struct Wrote<'a> {
            writes: &'a crate::storage::freshness::RecentWrites,
            user: UserId,
            finished: bool,
            max_lag: Duration,
        }
        impl Drop for Wrote<'_> {
            fn drop(&mut self) {
                let now = crate::storage::freshness::wall_micros();
                let still_writing = i64::try_from(self.max_lag.as_micros()).unwrap_or(i64::MAX);
                let wait_for = if self.finished { now } else { now.saturating_add(still_writing) };
                self.writes.wrote(self.user, now, wait_for);
            }
        }
        let (Some(writes), Some(user)) = (&self.inner.recent_writes, caller.user_id()) else { return call.await };
        let mut guard = Wrote { writes, user, finished: false, max_lag: self.inner.config.replica_max_lag };
        let done = call.await;
        guard.finished = true;
        done
    }

    /// Runs `read`, a read that decides nothing, letting storage serve it from a read replica
    /// that has caught up with `caller`'s last write (see [`crate::storage::freshness`]). The
    /// system caller's reads (operators' tools, background work) always read the primary.
    async fn may_lag<T>(&self, caller: Caller, read: impl Future<Output = Result<T>>) -> Result<T> {
        match (&self.inner.recent_writes, caller.user_id()) {
            (Some(writes), Some(user)) => crate::storage::freshness::may_lag(writes.wait_for(user), read).await,
            _ => read.await,
        }
    }

    /// When `caller` last wrote, in microseconds since the Unix epoch, as this process knows
    /// (its own writes and those it was told of), while it still decides where their reads go
    /// (with read replicas only). A front end behind which several processes serve one user
    /// hands it to the client and back (see [`OrderSystem::note_write`]).
    pub fn last_write(&self, caller: Caller) -> Option<i64> {
        self.inner.recent_writes.as_ref()?.last(caller.user_id()?)
    }

    /// Tells this process that `caller` wrote at `at` (microseconds since the Unix epoch)
    /// through another process, as [`OrderSystem::last_write`] there said: their reads then
    /// wait for that write as for their own. Hosts' clocks may disagree by up to a second: reads
    /// wait for the primary as of a second after `at` (never later than now), while `at` itself
    /// is what is handed on.
    pub fn note_write(&self, caller: Caller, at: i64) {
        const CLOCK_SKEW: i64 = 1_000_000;
        if let (Some(writes), Some(user)) = (&self.inner.recent_writes, caller.user_id()) {
            let now = crate::storage::freshness::wall_micros();
            let at = at.min(now);
            writes.wrote(user, at, at.saturating_add(CLOCK_SKEW).min(now));
        }
    }

    /// The read replicas as last checked (empty without any).
    pub fn replicas(&self) -> Vec<crate::storage::ReplicaStatus> {
        self.inner.storage.replicas()
    }

    /// Now, to the microsecond (the precision every backend stores), by the system's clock
    /// (or the one it was built with).
    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn order_notify(&self, kind: EventKind, owner: User) -> OrderNotify {
        let channels = self.inner.channels.clone();
        Box::new(move |order| {
            channels
                .iter()
                .map(|channel| NewNotification {
                    channel: channel.clone(),
                    message: Message::new(kind, &owner, order, None, None),
                })
                .collect()
        })
    }

    /// The notification of a payment's completion: succeeded, or failed with its reason.
    fn completion_notify(&self, outcome: &crate::storage::PaymentOutcome, owner: User) -> PaymentNotify {
        match outcome {
            crate::storage::PaymentOutcome::Succeeded => self.payment_notify(EventKind::PaymentSucceeded, owner, None),
            crate::storage::PaymentOutcome::Authorized { .. } => {
                self.payment_notify(EventKind::PaymentAuthorized, owner, None)
            }
            crate::storage::PaymentOutcome::Failed { reason } => {
                self.payment_notify(EventKind::PaymentFailed, owner, Some(reason.clone()))
            }
        }
    }

    fn payment_notify(&self, kind: EventKind, owner: User, reason: Option<String>) -> PaymentNotify {
        let channels = self.inner.channels.clone();
        Box::new(move |order, payment| {
            channels
                .iter()
                .map(|channel| NewNotification {
                    channel: channel.clone(),
                    message: Message::new(kind, &owner, order, Some(payment), reason.as_deref()),
                })
                .collect()
        })
    }

    /// The user an order belongs to, for its notifications: as their live session was last
    /// seen (usernames and emails do not change), or from storage.
    async fn owner(&self, id: UserId) -> Result<User> {
        if let Some(user) = self.inner.sessions.user(id) {
            return Ok(user);
        }
        self.inner.storage.user_by_id(id).await?.ok_or_else(|| Error::NotFound(format!("user {id}")))
    }
}
