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
    Caller, Email, EventKind, Message, NewOrder, NotificationId, Order, OrderEvent, OrderId, OrderInput, OrderStatus,
    Password, Payment, PaymentId, PaymentStatus, User, UserId, Username,
};
use crate::error::{Error, Result, ValidationErrors};
use crate::notify::{Dispatcher, DispatcherHandle, LogNotifier, Notifier};
use crate::payment::{Confirmation, MockProvider, PaymentProvider, PaymentRequest, ProviderError};
use crate::storage::{
    DynStorage, IdempotencyBegin, IdempotencyKey, IdempotencySlot, NewNotification, NewPaymentRecord, NewUserRecord,
    NotificationQuery, NotificationStatus, OrderNotify, OrderQuery, OutboxEntry, PaymentInsert, PaymentNotify,
    PaymentOutcome, RefreshTokenRecord, RotateOutcome, Transition, UserInsert, UserQuery,
};
pub use events::{EventOutcome, EventReceipt};

mod accounts;
mod alerts;
mod closing;
mod events;
mod payments;
mod refunds;
mod requests;

pub use requests::{CancelOrder, ConfirmPayment, CreateOrder, InitiatePayment, RefundPayment};

/// Default and largest page sizes for order lists.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size for order lists.
pub const MAX_PAGE_SIZE: u32 = 200;
/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// A request holding an idempotency key this long without finishing is presumed dead.
const IDEMPOTENCY_STALE_AFTER: chrono::Duration = chrono::Duration::seconds(120);

/// What a new account is made of, as submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Registration {
    /// 1-150 characters: letters, digits, `@ . + - _`.
    pub username: String,
    /// Required by [`OrderSystem::register`]; optional for accounts staff create. Must be a
    /// valid address when given (empty means none).
    #[serde(default)]
    pub email: Option<String>,
    /// At least 8 characters, not entirely numeric, not a common password.
    #[serde(skip_serializing)]
    pub password: String,
}

/// Which orders to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderListQuery {
    /// Staff only: whose orders. Ignored for other users (they always see their own). The
    /// system caller lists every user's orders when `None`.
    pub user: Option<UserId>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200; 50 when `None`.
    pub limit: Option<u32>,
    /// Staff and the system caller only: every user's orders (`user` is then ignored).
    /// `Forbidden` for other callers.
    pub all_users: bool,
    /// Only orders placed at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only orders placed before this time.
    pub created_before: Option<DateTime<Utc>>,
}

/// Which accounts to list (staff only), by ascending id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserListQuery {
    /// Only accounts whose username or email starts with this, case-insensitively.
    pub search: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<UserId>,
    /// Page size, 1 to [`MAX_ADMIN_PAGE_SIZE`]; 50 when `None`.
    pub limit: Option<u32>,
}

/// Which notifications (outbox rows) to list (staff only), by ascending id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotificationListQuery {
    /// Only rows in this delivery state.
    pub status: Option<NotificationStatus>,
    /// Only rows about this order.
    pub order: Option<OrderId>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<NotificationId>,
    /// Page size, 1 to [`MAX_ADMIN_PAGE_SIZE`]; 50 when `None`.
    pub limit: Option<u32>,
}

/// One page of a list, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The first `limit` of `items` (fetched with one more than `limit`), with the cursor of the
    /// last one when there were more.
    fn of(mut items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = if more { items.last().map(cursor) } else { None };
        Page { items, next_cursor }
    }
}

/// Largest page of users or notifications.
pub const MAX_ADMIN_PAGE_SIZE: u32 = 1000;

/// Builds an [`OrderSystem`] from a [`Config`] and, optionally, explicit parts.
#[derive(Debug, Default)]
pub struct OrderSystemBuilder {
    config: Option<Config>,
    storage: Option<DynStorage>,
    provider: Option<Arc<dyn PaymentProvider>>,
    notifiers: Vec<Arc<dyn Notifier>>,
    clock: Option<DynClock>,
}

impl OrderSystemBuilder {
    /// Reads time from `clock` instead of the system's clocks (tests move a
    /// [`crate::clock::ManualClock`] forward instead of sleeping).
    pub fn clock(mut self, clock: DynClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Uses `config` (otherwise [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Uses this storage instead of opening `config.database_url`.
    pub fn storage(mut self, storage: DynStorage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Uses this payment provider instead of the mock.
    pub fn provider(mut self, provider: Arc<dyn PaymentProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Adds a notifier; when any is added, `config.notifiers` is ignored and exactly the added
    /// notifiers' channels get outbox rows.
    pub fn notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifiers.push(notifier);
        self
    }

    /// Opens storage (running migrations), loads or creates the signing secret, and builds the
    /// system.
    pub async fn build(self) -> Result<OrderSystem> {
        let config = self.config.unwrap_or_default();
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        let storage = match self.storage {
            Some(s) => s,
            None => crate::storage::open(&config.database_url, config.database_pool_size).await?,
        };
        let provider = match self.provider {
            Some(provider) => provider,
            None => provider_from_config(&config)?,
        };
        let notifiers = if self.notifiers.is_empty() { notifiers_from_config(&config)? } else { self.notifiers };
        let secret = match &config.jwt_secret {
            Some(s) => {
                crate::config::check_jwt_secret(s.expose()).map_err(|m| Error::invalid("SOM_JWT_SECRET", m))?;
                s.expose().as_bytes().to_vec()
            }
            None => {
                let candidate = crate::util::random_token(32).into_bytes();
                crate::storage::complete(
                    &storage,
                    |s| async move { s.get_or_init_setting("jwt_secret", candidate).await },
                )
                .await?
            }
        };
        let ttl = |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let keys = TokenKeys::new(
            &secret,
            ttl(config.access_token_ttl),
            ttl(config.refresh_token_ttl),
            ttl(config.session_max_age),
        )?;
        let mut channels: Vec<String> = notifiers.iter().map(|n| n.channel().to_owned()).collect();
        channels.dedup();
        Ok(OrderSystem {
            inner: Arc::new(Inner {
                hasher: PasswordHasher::new(config.password_hash_concurrency),
                login_failures: LoginFailures::new(
                    config.login_failure_limit,
                    crate::config::LOGIN_FAILURE_WINDOW,
                    Arc::clone(&clock),
                ),
                storage,
                provider,
                notifiers,
                channels,
                keys,
                sessions: SessionCache::new(config.session_cache_ttl, Arc::clone(&clock)),
                clock,
                config,
                wake: Arc::new(Notify::new()),
                order_locks: KeyedLocks::default(),
                payment_locks: KeyedLocks::default(),
                refund_locks: KeyedLocks::default(),
            }),
        })
    }
}

fn provider_from_config(config: &Config) -> Result<Arc<dyn PaymentProvider>> {
    match config.payment_provider.as_str() {
        #[cfg(feature = "stripe")]
        "stripe" => {
            let secret_key = config
                .stripe_secret_key
                .clone()
                .ok_or_else(|| Error::invalid("SOM_STRIPE_SECRET_KEY", "is required by the stripe provider"))?;
            Ok(Arc::new(crate::payment::StripeProvider::new(crate::payment::StripeConfig {
                secret_key,
                webhook_secret: config.stripe_webhook_secret.clone(),
                api_base: config.stripe_api_base.clone(),
                timeout: config.stripe_timeout,
            })?))
        }
        #[cfg(not(feature = "stripe"))]
        "stripe" => {
            Err(Error::invalid("SOM_PAYMENT_PROVIDER", "this build has no Stripe support (cargo feature `stripe`)"))
        }
        _ => Ok(Arc::new(MockProvider::new(config.mock_transient_failures))),
    }
}

fn notifiers_from_config(config: &Config) -> Result<Vec<Arc<dyn Notifier>>> {
    config
        .notifiers
        .iter()
        .map(|name| -> Result<Arc<dyn Notifier>> {
            match name.as_str() {
                "log" => Ok(Arc::new(LogNotifier)),
                #[cfg(feature = "smtp")]
                "smtp" => {
                    let url = config
                        .smtp_url
                        .as_ref()
                        .ok_or_else(|| Error::invalid("SOM_SMTP_URL", "is required by the smtp channel"))?;
                    Ok(Arc::new(crate::notify::SmtpNotifier::new(
                        url.expose(),
                        &config.email_from,
                        config.smtp_timeout,
                    )?))
                }
                #[cfg(feature = "webhook")]
                "webhook" => {
                    let secret = config
                        .webhook_secret
                        .clone()
                        .ok_or_else(|| Error::invalid("SOM_WEBHOOK_SECRET", "is required by the webhook channel"))?;
                    Ok(Arc::new(crate::notify::WebhookNotifier::new(
                        &config.webhook_urls,
                        secret,
                        config.webhook_timeout,
                    )?))
                }
                #[cfg(not(feature = "smtp"))]
                "smtp" => Err(Error::invalid("SOM_NOTIFIER", "this build has no SMTP support (cargo feature `smtp`)")),
                #[cfg(not(feature = "webhook"))]
                "webhook" => {
                    Err(Error::invalid("SOM_NOTIFIER", "this build has no webhook support (cargo feature `webhook`)"))
                }
                other => Err(Error::invalid(
                    "SOM_NOTIFIER",
                    format!("unknown notification channel {other:?}; available: log, smtp, webhook"),
                )),
            }
        })
        .collect()
}

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
}

/// In-process mutual exclusion per key, so concurrent calls on one order reach the provider
/// once. Entries are dropped when no one holds them.
#[derive(Debug)]
struct KeyedLocks<K>(Mutex<HashMap<K, Weak<tokio::sync::Mutex<()>>>>);

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq + Copy> KeyedLocks<K> {
    async fn lock(&self, key: K) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.len() > 1024 {
                map.retain(|_, w| w.strong_count() > 0);
            }
            match map.get(&key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key, Arc::downgrade(&m));
                    m
                }
            }
        };
        mutex.lock_owned().await
    }
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

/// Checks a caller's idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] characters, no control
/// characters.
fn validate_idempotency_key(key: &str) -> Result<()> {
    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_LEN || key.chars().any(char::is_control) {
        return Err(Error::invalid(
            "idempotency_key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters without control characters"),
        ));
    }
    Ok(())
}

fn admin_page_size(limit: u32) -> Result<u32> {
    if (1..=MAX_ADMIN_PAGE_SIZE).contains(&limit) {
        Ok(limit)
    } else {
        Err(Error::invalid("limit", format!("must be between 1 and {MAX_ADMIN_PAGE_SIZE}")))
    }
}

fn request_hash<T: Serialize>(request: &T) -> Result<String> {
    let bytes = serde_json::to_vec(request).map_err(|e| Error::Internal(format!("hashing request: {e}")))?;
    Ok(crate::util::hex(&Sha256::digest(&bytes)))
}

fn not_found_order(id: OrderId) -> Error {
    Error::NotFound(format!("order {id}"))
}

fn cancel_conflict(id: OrderId, e: &crate::domain::IllegalTransition) -> Error {
    match e.from {
        OrderStatus::Paid | OrderStatus::PartiallyRefunded => {
            Error::Conflict(format!("order {id}: {e}; refund its payment instead"))
        }
        _ => Error::Conflict(format!("order {id}: {e}")),
    }
}

fn not_payable(id: OrderId, status: OrderStatus) -> Error {
    match status {
        OrderStatus::Paid => Error::Conflict(format!("order {id} is already paid")),
        other => Error::Conflict(format!("order {id} is {other} and cannot be paid")),
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

    /// Now, to the microsecond (the precision every backend stores), by the system's clock
    /// (or the one it was built with).
    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    // -----------------------------------------------------------------------------------------
    // Idempotency

    /// Runs `run` at most once per (caller, operation, key): a repeat with the same request
    /// gets the stored result, a repeat with another request `IdempotencyMismatch`, and a
    /// repeat while the first runs `IdempotencyInProgress`.
    async fn idempotent<T, R, F, Fut>(
        &self,
        caller: Caller,
        operation: &'static str,
        key: Option<&str>,
        request: &R,
        run: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize,
        F: FnOnce(Option<IdempotencySlot>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let Some(key) = key else { return run(None).await };
        validate_idempotency_key(key)?;
        let key = IdempotencyKey { scope: caller.scope(), operation, key: key.to_owned() };
        let hash = request_hash(request)?;
        let now = self.now();
        let ttl = chrono::Duration::from_std(self.inner.config.idempotency_ttl).unwrap_or(chrono::Duration::days(1));
        let begin = {
            let (key, hash) = (key.clone(), hash.clone());
            let (until, stale) = (now + ttl, now - IDEMPOTENCY_STALE_AFTER);
            self.write(move |s| async move { s.begin_idempotency(&key, &hash, now, until, stale).await }).await?
        };
        match begin {
            IdempotencyBegin::Replay(json) => {
                serde_json::from_str(&json).map_err(|e| Error::Internal(format!("stored idempotent response: {e}")))
            }
            IdempotencyBegin::Mismatch => Err(Error::IdempotencyMismatch),
            IdempotencyBegin::InProgress => Err(Error::IdempotencyInProgress),
            IdempotencyBegin::Started => {
                let result = run(Some(IdempotencySlot { key: key.clone() })).await;
                match &result {
                    Ok(value) => {
                        let json = crate::storage::rows::response_json(value)?;
                        self.write(move |s| async move { s.finish_idempotency(&key, &json).await }).await?
                    }
                    Err(_) => {
                        if let Err(e) = self.write(move |s| async move { s.abandon_idempotency(&key).await }).await {
                            tracing::warn!(error = %e, "could not release idempotency key");
                        }
                    }
                }
                result
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Orders

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

    /// Places an order for `owner`: the owner themself, or staff acting for them.
    async fn place_order(
        &self,
        caller: Caller,
        owner: UserId,
        input: OrderInput,
        idempotency_key: Option<&str>,
    ) -> Result<Order> {
        if !caller.can_access(owner) {
            return Err(Error::Forbidden("only staff may place orders for other users".into()));
        }
        let new = NewOrder::parse(&input, self.inner.config.currency).map_err(Error::Validation)?;
        let request = (owner, &input);
        self.idempotent(caller, "create_order", idempotency_key, &request, |slot| async move {
            let user = self.owner(owner).await?;
            let notify = self.order_notify(EventKind::OrderCreated, user);
            let (actor, at) = (caller.actor(), self.now());
            let order =
                self.write(move |s| async move { s.insert_order(owner, actor, new, at, notify, slot).await }).await?;
            self.inner.wake.notify_one();
            metrics::counter!("som_orders_created_total").increment(1);
            Ok(order)
        })
        .await
    }

    /// An order the caller may see (their own, or any for staff); `NotFound` otherwise.
    pub async fn order(&self, caller: Caller, id: OrderId) -> Result<Order> {
        let order = self.inner.storage.order_by_id(id).await?.ok_or_else(|| not_found_order(id))?;
        if caller.can_access(order.user_id) { Ok(order) } else { Err(not_found_order(id)) }
    }

    /// A page of orders, newest first (see [`OrderListQuery`] for whose).
    pub async fn list_orders(&self, caller: Caller, query: OrderListQuery) -> Result<Page<Order>> {
        let limit = query.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(Error::invalid("limit", format!("must be between 1 and {MAX_PAGE_SIZE}")));
        }
        let before = match query.cursor.as_deref() {
            None => None,
            Some(c) => Some(c.parse::<OrderId>().map_err(|_| Error::invalid("cursor", "is not a valid cursor"))?),
        };
        if query.all_users && !caller.is_staff() {
            return Err(Error::Forbidden("only staff may list every user's orders".into()));
        }
        let user_id = match caller {
            _ if query.all_users => None,
            Caller::User { id, is_staff } => Some(if is_staff { query.user.unwrap_or(id) } else { id }),
            Caller::System => query.user,
        };
        let items = self
            .inner
            .storage
            .list_orders(OrderQuery {
                user_id,
                status: query.status,
                before,
                created_after: query.created_after,
                created_before: query.created_before,
                limit: limit + 1,
            })
            .await?;
        Ok(Page::of(items, limit, |o| o.id.to_string()))
    }

    /// The newest order of the caller (or, for staff, of `user`). `NotFound` when there is none.
    pub async fn latest_order(&self, caller: Caller, user: Option<UserId>) -> Result<Order> {
        let target = match caller {
            Caller::User { id, is_staff } => {
                if is_staff {
                    user.unwrap_or(id)
                } else {
                    id
                }
            }
            Caller::System => user.ok_or_else(|| Error::invalid("user", "is required"))?,
        };
        self.inner.storage.latest_order(target).await?.ok_or_else(|| Error::NotFound("order".into()))
    }

    /// The order's status changes, oldest first.
    pub async fn order_history(&self, caller: Caller, id: OrderId) -> Result<Vec<OrderEvent>> {
        self.order(caller, id).await?;
        self.inner.storage.order_events(id).await
    }

    /// `CREATED → CANCELLED` (owner or staff), voiding a PENDING payment. `Conflict` from any
    /// other status.
    async fn cancel_order_now(&self, caller: Caller, id: OrderId, idempotency_key: Option<&str>) -> Result<Order> {
        self.idempotent(caller, "cancel_order", idempotency_key, &id, |slot| async move {
            let order = self.order(caller, id).await?;
            order.status.cancel().map_err(|e| cancel_conflict(id, &e))?;
            let _guard = self.inner.order_locks.lock(id).await;
            let owner = self.owner(order.user_id).await?;
            let notify = self.order_notify(EventKind::OrderCancelled, owner);
            let (actor, at) = (caller.actor(), self.now());
            match self.write(move |s| async move { s.cancel_order(id, actor, at, notify, slot).await }).await? {
                Transition::Applied(order) => {
                    self.inner.wake.notify_one();
                    for payment in self.inner.storage.payments_for_order(id).await? {
                        if payment.status == PaymentStatus::Cancelled {
                            self.close_now(&payment).await;
                        }
                    }
                    Ok(order)
                }
                Transition::NotApplied(current) => Err(match current.status.cancel() {
                    Err(e) => cancel_conflict(id, &e),
                    Ok(_) => Error::Conflict(format!("order {id}: changed concurrently")),
                }),
            }
        })
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Notifications

    /// Outbox rows by ascending id. Staff only.
    pub async fn notifications(
        &self,
        caller: Caller,
        status: Option<NotificationStatus>,
        after: Option<NotificationId>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may list notifications".into()));
        }
        let query = NotificationQuery { status, order: None, after, limit: limit.clamp(1, MAX_ADMIN_PAGE_SIZE) };
        self.inner.storage.list_notifications(query).await
    }

    /// A page of outbox rows by ascending id (optionally of one status, or about one order),
    /// after the previous page's `next_cursor`. Staff only; `limit` 1 to
    /// [`MAX_ADMIN_PAGE_SIZE`].
    pub async fn notifications_page(&self, caller: Caller, query: NotificationListQuery) -> Result<Page<OutboxEntry>> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may list notifications".into()));
        }
        let NotificationListQuery { status, order, cursor, limit } = query;
        let limit = admin_page_size(limit.unwrap_or(DEFAULT_PAGE_SIZE))?;
        let query = NotificationQuery { status, order, after: cursor, limit: limit + 1 };
        let rows = self.inner.storage.list_notifications(query).await?;
        Ok(Page::of(rows, limit, |r| r.id.to_string()))
    }

    /// Re-queues a dead notification for delivery. Staff only; `Conflict` if it is not dead.
    pub async fn retry_notification(&self, caller: Caller, id: NotificationId) -> Result<OutboxEntry> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may retry notifications".into()));
        }
        let at = self.now();
        match self.write(move |s| async move { s.requeue_notification(id, at).await }).await? {
            None => Err(Error::NotFound(format!("notification {id}"))),
            Some(Transition::Applied(entry)) => {
                self.inner.wake.notify_one();
                Ok(entry)
            }
            Some(Transition::NotApplied(entry)) => {
                Err(Error::Conflict(format!("notification {id} is {} and only dead ones can be retried", entry.status)))
            }
        }
    }

    /// Outbox row counts per status. Staff and the system caller (metrics, the CLI) only.
    pub async fn notification_counts(&self, caller: Caller) -> Result<Vec<(NotificationStatus, u64)>> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may count notifications".into()));
        }
        self.inner.storage.notification_counts().await
    }

    fn dispatcher(&self) -> Dispatcher {
        let config = &self.inner.config;
        // A session's rows are kept until its last access token has expired too.
        let retention = config.session_max_age.saturating_add(config.access_token_ttl);
        Dispatcher::new(Arc::clone(&self.inner.storage), &self.inner.notifiers, config.outbox.clone())
            .with_session_retention(retention)
            .with_clock(Arc::clone(&self.inner.clock))
    }

    /// One claim-and-deliver round; how many notifications it handled.
    pub async fn dispatch_once(&self) -> Result<usize> {
        self.dispatcher().run_once(None).await
    }

    /// Runs the dispatcher on the current tokio runtime until the handle is shut down. It is
    /// woken right after each commit that wrote notifications, and polls for the rest.
    pub fn spawn_dispatcher(&self) -> DispatcherHandle {
        self.inner.storage.subscribe_outbox(Arc::clone(&self.inner.wake));
        let system = self.clone();
        let after = self.inner.config.refund_recovery_after;
        self.dispatcher().spawn(Arc::clone(&self.inner.wake)).with_companion(move |mut stop| async move {
            // Refunds whose request died between reserving and finishing are finished here.
            let every = (after / 3).clamp(Duration::from_millis(100), Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    () = tokio::time::sleep(every) => {}
                }
                if *stop.borrow() {
                    break;
                }
                match system.recover_refunds(after).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(refunds = n, "finished pending refunds"),
                    Err(e) => tracing::warn!(error = %e, "finishing pending refunds failed"),
                }
                // Ended payments whose provider side could not be closed at once.
                match system.close_ended_payments().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(payments = n, "closed ended payments at the provider"),
                    Err(e) => tracing::warn!(error = %e, "closing ended payments at the provider failed"),
                }
            }
        })
    }
}
