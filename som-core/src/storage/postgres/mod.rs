//! The PostgreSQL backend (sqlx), for deployments where several `som serve` and `som worker`
//! processes share one database.
//!
//! Concurrency the Postgres way: state changes are conditional updates, an order's row is
//! locked while a payment is inserted for it, the database holds at most one live payment per
//! order (a unique partial index), outbox rows are claimed with `FOR UPDATE SKIP LOCKED` and a
//! lease, and every commit that writes outbox rows sends `NOTIFY som_outbox` so dispatchers in
//! other processes wake at once.

mod refunds;
#[cfg(feature = "test-support")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction as SqlxTx};
use tokio::sync::Notify;

use super::{
    IdempotencyBegin, IdempotencyKey, IdempotencySlot, NewNotification, NewPaymentRecord, NewRefundRecord,
    NewUserRecord, NotificationQuery, NotificationStatus, OrderNotify, OrderQuery, OutboxEntry, PaymentInsert,
    PaymentNotify, PaymentOutcome, RefreshTokenRecord, RefundNotify, RefundOutcome, RefundReserve, RotateOutcome,
    SessionState, Storage, Transition, UserQuery, like_prefix, recipient_of, response_json,
};
use crate::domain::{
    Actor, Currency, Email, EventKind, Message, Money, NewOrder, NotificationId, Order, OrderEvent, OrderId, OrderItem,
    OrderStatus, Payment, PaymentId, PaymentStatus, Refund, RefundId, User, UserId, Username,
};
use crate::error::{Error, Result, ValidationErrors};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/storage/postgres/migrations");

/// The channel `NOTIFY` is sent on after a commit that wrote outbox rows.
const OUTBOX_CHANNEL: &str = "som_outbox";

type Tx = SqlxTx<'static, Postgres>;

/// PostgreSQL storage; cheap to clone.
#[derive(Clone)]
pub struct PostgresStorage {
    pool: PgPool,
    location: Arc<str>,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage").field("location", &self.location).finish_non_exhaustive()
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        let unavailable = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                // Connection exceptions, shutdowns, too many connections, serialization and
                // deadlock failures: all worth a retry.
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code == "53300"
                    || code == "40001"
                    || code == "40P01"
            }),
            _ => false,
        };
        if unavailable {
            tracing::warn!(error = %e, "postgres unavailable");
            Error::Unavailable("database".into())
        } else {
            Error::Internal(format!("postgres: {e}"))
        }
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn corrupt(what: &str) -> Error {
    Error::Internal(format!("unexpected value in the database: {what}"))
}

fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

impl PostgresStorage {
    /// Connects a pool of `pool_size` connections to a `postgres://` URL and runs the embedded
    /// migrations (serialised across processes by an advisory lock).
    pub async fn open(url: &str, pool_size: u32) -> Result<PostgresStorage> {
        let options: PgConnectOptions =
            url.parse().map_err(|e| Error::invalid("SOM_DATABASE_URL", format!("not a valid postgres URL: {e}")))?;
        let pool = pool_options(pool_size.max(2)).connect_with(options).await?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => Error::from(inner),
            sqlx::migrate::MigrateError::VersionMissing(version) => Error::Incompatible(format!(
                "the database's schema has migration {version}, which this build of SOM does not know; run the SOM \
                 version that migrated it, or a newer one"
            )),
            other => Error::Internal(format!("postgres migration: {other}")),
        })?;
        Ok(PostgresStorage { pool, location: crate::config::redact_url(url).into() })
    }

    async fn begin(&self) -> Result<Tx> {
        Ok(self.pool.begin().await?)
    }
}

/// How SOM's pools are built: at most `size` connections, each checked when it comes back.
fn pool_options(size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(true)
        .after_release(|conn, _| Box::pin(outside_transaction(conn)))
}

/// The pool's check on every connection handed back: `true` keeps it, `false` closes it (and
/// the server rolls back whatever it was in). A connection must never be reused inside a
/// transaction, or the next borrower's statements would run in it and vanish with it.
///
/// sqlx's own bookkeeping catches transactions it knows of. It does not know of one whose
/// `BEGIN` was in flight when its future was dropped (sqlx 0.9.0; storage futures are not
/// dropped since [`super::detached::Detached`], but this check does not rely on that), so the
/// server is asked too: during the first statement of a transaction `transaction_timestamp()`
/// equals `statement_timestamp()` exactly, while a statement run inside an open transaction
/// started later than it.
async fn outside_transaction(conn: &mut sqlx::PgConnection) -> std::result::Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    // The simple query protocol: the statement's start is then its transaction's start unless
    // a transaction was already open (with the extended protocol the two are taken apart).
    let clean = !conn.is_in_transaction()
        && sqlx::raw_sql("SELECT 1 WHERE transaction_timestamp() = statement_timestamp()")
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
    if !clean {
        tracing::warn!("a database connection came back to the pool inside a transaction; closing it");
    }
    Ok(clean)
}

/// Whether session `id` of `user_id` is live: not revoked, at its user's session version, and
/// the user active.
async fn session_live(tx: &mut Tx, user_id: UserId, id: &str) -> Result<bool> {
    let live: Option<bool> = sqlx::query_scalar(
        "SELECT s.revoked_at IS NULL AND s.version = u.session_version AND u.is_active \
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1 AND s.user_id = $2",
    )
    .bind(id)
    .bind(user_id.get())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(live.unwrap_or(false))
}

/// Revokes every live session of `user_id` but `keep` (and their refresh tokens), moves the
/// user's session version on and keeps `keep` at the new version. False when there is no such
/// user.
async fn end_sessions_in(tx: &mut Tx, user_id: UserId, keep: Option<&str>, at: DateTime<Utc>) -> Result<bool> {
    let version: Option<i64> = sqlx::query_scalar(
        "UPDATE users SET session_version = session_version + 1 WHERE id = $1 RETURNING session_version",
    )
    .bind(user_id.get())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(version) = version else { return Ok(false) };
    let keep = keep.unwrap_or("");
    sqlx::query("UPDATE refresh_tokens SET revoked = TRUE WHERE user_id = $1 AND family <> $2 AND NOT revoked")
        .bind(user_id.get())
        .bind(keep)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE sessions SET revoked_at = $3 WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL")
        .bind(user_id.get())
        .bind(keep)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE sessions SET version = $3 WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL")
        .bind(user_id.get())
        .bind(keep)
        .bind(version)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Row mapping

fn user_from(r: &PgRow) -> Result<User> {
    let username: String = r.try_get("username")?;
    let email: Option<String> = r.try_get("email")?;
    Ok(User {
        id: UserId::new(r.try_get("id")?),
        username: Username::parse(&username).map_err(|_| corrupt("username"))?,
        email: email.map(|e| Email::parse(&e).map_err(|_| corrupt("email"))).transpose()?,
        is_staff: r.try_get("is_staff")?,
        is_active: r.try_get("is_active")?,
        created_at: r.try_get("created_at")?,
    })
}

async fn user_where(exec: &mut sqlx::PgConnection, sql: &'static str, bind: UserKey<'_>) -> Result<Option<User>> {
    let q = sqlx::query(sql);
    let q = match bind {
        UserKey::Id(id) => q.bind(id),
        UserKey::Name(name) => q.bind(name.to_owned()),
    };
    q.fetch_optional(exec).await?.as_ref().map(user_from).transpose()
}

enum UserKey<'a> {
    Id(i64),
    Name(&'a str),
}

/// Orders with their items, in the order of `rows`.
async fn load_orders(conn: &mut sqlx::PgConnection, rows: Vec<PgRow>) -> Result<Vec<Order>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.try_get::<i64, _>("id")).collect::<Result<_, _>>()?;
    let item_rows = sqlx::query(
        "SELECT order_id, name, quantity, unit_price_minor FROM order_items WHERE order_id = ANY($1) \
         ORDER BY order_id, position",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut items: std::collections::HashMap<i64, Vec<(String, i64, i64)>> = std::collections::HashMap::new();
    for r in item_rows {
        items.entry(r.try_get("order_id")?).or_default().push((
            r.try_get("name")?,
            r.try_get("quantity")?,
            r.try_get("unit_price_minor")?,
        ));
    }
    rows.iter()
        .map(|row| {
            let id: i64 = row.try_get("id")?;
            let currency: String = row.try_get("currency")?;
            let currency = Currency::parse(&currency).map_err(|_| corrupt("currency"))?;
            let status: String = row.try_get("status")?;
            Ok(Order {
                id: OrderId::new(id),
                user_id: UserId::new(row.try_get("user_id")?),
                status: OrderStatus::parse(&status).ok_or_else(|| corrupt("order status"))?,
                items: items
                    .remove(&id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, quantity, price)| OrderItem {
                        name,
                        quantity,
                        price: Money::from_minor(price, currency),
                    })
                    .collect(),
                total: Money::from_minor(row.try_get("total_minor")?, currency),
                refunded: Money::from_minor(row.try_get("refunded_minor")?, currency),
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .collect()
}

async fn order_by_id(conn: &mut sqlx::PgConnection, id: OrderId) -> Result<Option<Order>> {
    let row = sqlx::query(
        "SELECT id, user_id, status, currency, total_minor, created_at, updated_at, refunded_minor FROM orders WHERE id = $1",
    )
    .bind(id.get())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(load_orders(conn, row.into_iter().collect()).await?.pop())
}

fn payment_from(r: &PgRow) -> Result<Payment> {
    let currency: String = r.try_get("currency")?;
    let currency = Currency::parse(&currency).map_err(|_| corrupt("currency"))?;
    let status: String = r.try_get("status")?;
    let attempt: i32 = r.try_get("attempt")?;
    Ok(Payment {
        id: PaymentId::new(r.try_get("id")?),
        order_id: OrderId::new(r.try_get("order_id")?),
        user_id: UserId::new(r.try_get("user_id")?),
        provider: r.try_get("provider")?,
        provider_payment_id: r.try_get("provider_payment_id")?,
        transaction_id: r.try_get("transaction_id")?,
        method: r.try_get("method")?,
        attempt: u32::try_from(attempt).map_err(|_| corrupt("attempt"))?,
        amount: Money::from_minor(r.try_get("amount_minor")?, currency),
        refunded: Money::from_minor(r.try_get("refunded_minor")?, currency),
        refund_pending: Money::from_minor(
            r.try_get::<i64, _>("refund_reserved_minor")? - r.try_get::<i64, _>("refunded_minor")?,
            currency,
        ),
        status: PaymentStatus::parse(&status).ok_or_else(|| corrupt("payment status"))?,
        failure_reason: r.try_get("failure_reason")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const PAYMENT_BY_ID: &str = "SELECT * FROM payments WHERE id = $1";
const LIVE_PAYMENT: &str = "SELECT * FROM payments WHERE order_id = $1 AND status IN ('PENDING', 'SUCCESS')";

async fn payment_where(conn: &mut sqlx::PgConnection, sql: &'static str, id: i64) -> Result<Option<Payment>> {
    sqlx::query(sql).bind(id).fetch_optional(conn).await?.as_ref().map(payment_from).transpose()
}

fn outbox_from(r: &PgRow) -> Result<OutboxEntry> {
    let kind: String = r.try_get("kind")?;
    let payload: String = r.try_get("payload")?;
    let status: String = r.try_get("status")?;
    let attempts: i32 = r.try_get("attempts")?;
    Ok(OutboxEntry {
        id: NotificationId::new(r.try_get("id")?),
        kind: EventKind::parse(&kind).ok_or_else(|| corrupt("event kind"))?,
        dedupe_key: r.try_get("dedupe_key")?,
        channel: r.try_get("channel")?,
        recipient: r.try_get("recipient")?,
        message: serde_json::from_str::<Message>(&payload).map_err(|_| corrupt("outbox payload"))?,
        status: NotificationStatus::parse(&status).ok_or_else(|| corrupt("notification status"))?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        sent_at: r.try_get("sent_at")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Writes shared by several operations

async fn insert_event(
    tx: &mut Tx,
    order: OrderId,
    from: Option<OrderStatus>,
    to: OrderStatus,
    actor: &Actor,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO order_events (order_id, from_status, to_status, actor, reason, at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(order.get())
    .bind(from.map(OrderStatus::as_str))
    .bind(to.as_str())
    .bind(actor.to_string())
    .bind(reason)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_outbox(tx: &mut Tx, rows: Vec<NewNotification>, at: DateTime<Utc>) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    for n in rows {
        let payload = serde_json::to_string(&n.message)
            .map_err(|e| Error::Internal(format!("serializing outbox payload: {e}")))?;
        sqlx::query(
            "INSERT INTO outbox (kind, dedupe_key, channel, recipient, payload, status, attempts, next_attempt_at, \
             created_at, updated_at, order_id) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6, $7) \
             ON CONFLICT (dedupe_key, channel) DO NOTHING",
        )
        .bind(n.message.kind.as_str())
        .bind(n.message.dedupe_key())
        .bind(&n.channel)
        .bind(recipient_of(&n))
        .bind(payload)
        .bind(at)
        .bind(n.message.order_id.get())
        .execute(&mut **tx)
        .await?;
    }
    // Delivered to listeners when (and only if) the transaction commits.
    sqlx::query("SELECT pg_notify($1, '')").bind(OUTBOX_CHANNEL).execute(&mut **tx).await?;
    Ok(())
}

async fn record_idempotency<T: serde::Serialize>(tx: &mut Tx, slot: Option<&IdempotencySlot>, value: &T) -> Result<()> {
    if let Some(slot) = slot {
        let k = &slot.key;
        sqlx::query(
            "UPDATE idempotency_keys SET response = $4, locked_at = NULL \
             WHERE scope = $1 AND operation = $2 AND key = $3 AND response IS NULL",
        )
        .bind(&k.scope)
        .bind(k.operation)
        .bind(&k.key)
        .bind(response_json(value)?)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Storage for PostgresStorage {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn schema_version(&self) -> Result<i64> {
        let v: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await?;
        Ok(v)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn backup(&self, _destination: &std::path::Path) -> Result<()> {
        Err(Error::invalid("backup", "back up PostgreSQL with pg_dump (see docs/operations.md)"))
    }

    fn subscribe_outbox(&self, wake: Arc<Notify>) {
        let pool = self.pool.clone();
        let weak = Arc::downgrade(&wake);
        drop(wake);
        tokio::spawn(async move {
            loop {
                let listener = async {
                    let mut l = PgListener::connect_with(&pool).await?;
                    l.listen(OUTBOX_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(l)
                };
                match listener.await {
                    Ok(mut l) => loop {
                        match l.recv().await {
                            Ok(_) => match weak.upgrade() {
                                Some(w) => w.notify_one(),
                                None => return,
                            },
                            Err(e) => {
                                tracing::warn!(error = %e, "outbox listener lost its connection");
                                break;
                            }
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "outbox listener cannot connect"),
                }
                if weak.strong_count() == 0 || pool.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn get_or_init_setting(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>> {
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(candidate)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE name = $1").bind(name).fetch_one(&self.pool).await?)
    }

    async fn insert_user(&self, user: NewUserRecord) -> Result<User> {
        let inserted = sqlx::query(
            "INSERT INTO users (username, email, password_hash, is_staff, created_at) VALUES ($1, $2, $3, $4, $5) \
             RETURNING id, username, email, is_staff, created_at, is_active",
        )
        .bind(user.username.as_str())
        .bind(user.email.as_ref().map(Email::as_str))
        .bind(&user.password_hash)
        .bind(user.is_staff)
        .bind(truncate(user.created_at))
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(row) => user_from(&row),
            Err(e) if is_unique_violation(&e) => {
                let mut errors = ValidationErrors::new();
                let taken_name: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)")
                    .bind(user.username.as_str())
                    .fetch_one(&self.pool)
                    .await?;
                if taken_name {
                    errors.add("username", "a user with that username already exists");
                }
                if let Some(email) = &user.email {
                    let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE email = $1)")
                        .bind(email.as_str())
                        .fetch_one(&self.pool)
                        .await?;
                    if taken {
                        errors.add("email", "a user with that email already exists");
                    }
                }
                Err(if errors.is_empty() { e.into() } else { Error::Validation(errors) })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        let mut conn = self.pool.acquire().await?;
        user_where(
            &mut conn,
            "SELECT id, username, email, is_staff, created_at, is_active FROM users WHERE id = $1",
            UserKey::Id(id.get()),
        )
        .await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let mut conn = self.pool.acquire().await?;
        user_where(
            &mut conn,
            "SELECT id, username, email, is_staff, created_at, is_active FROM users WHERE username = $1",
            UserKey::Name(username),
        )
        .await
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query(
            "SELECT id, username, email, is_staff, created_at, is_active, password_hash FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((user_from(&r)?, r.try_get("password_hash")?))).transpose()
    }

    async fn list_users(&self, q: UserQuery) -> Result<Vec<User>> {
        let rows = sqlx::query(
            "SELECT id, username, email, is_staff, created_at, is_active FROM users WHERE id > $1 \
             AND ($3::text IS NULL OR lower(username) LIKE $3 ESCAPE '\\' OR lower(email) LIKE $3 ESCAPE '\\') \
             ORDER BY id LIMIT $2",
        )
        .bind(q.after.map_or(0, UserId::get))
        .bind(i64::from(q.limit))
        .bind(q.prefix.as_deref().map(like_prefix))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from).collect()
    }

    async fn set_staff(&self, id: UserId, is_staff: bool) -> Result<Option<User>> {
        let row = sqlx::query(
            "UPDATE users SET is_staff = $2 WHERE id = $1 RETURNING id, username, email, is_staff, created_at, is_active",
        )
        .bind(id.get())
        .bind(is_staff)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn insert_refresh_token(&self, t: RefreshTokenRecord) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, version, started_at) \
             SELECT $1, id, session_version, $3 FROM users WHERE id = $2 ON CONFLICT (id) DO NOTHING",
        )
        .bind(&t.family)
        .bind(t.user_id.get())
        .bind(t.session_started_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO refresh_tokens (jti, family, user_id, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(&t.jti)
            .bind(&t.family)
            .bind(t.user_id.get())
            .bind(t.expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        user_id: UserId,
        family: &str,
        old_jti: &str,
        new: RefreshTokenRecord,
        now: DateTime<Utc>,
    ) -> Result<RotateOutcome> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT family, user_id, expires_at, used_at, revoked FROM refresh_tokens WHERE jti = $1 FOR UPDATE",
        )
        .bind(old_jti)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(RotateOutcome::Rejected) };
        let fam: String = row.try_get("family")?;
        let uid: i64 = row.try_get("user_id")?;
        let expires: DateTime<Utc> = row.try_get("expires_at")?;
        let used: Option<DateTime<Utc>> = row.try_get("used_at")?;
        let revoked: bool = row.try_get("revoked")?;
        if fam != family || uid != user_id.get() || revoked || expires <= now {
            return Ok(RotateOutcome::Rejected);
        }
        if !session_live(&mut tx, user_id, &fam).await? {
            return Ok(RotateOutcome::Rejected);
        }
        if used.is_some() {
            sqlx::query("UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1")
                .bind(&fam)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(&fam)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(RotateOutcome::ReuseDetected);
        }
        sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE jti = $1")
            .bind(old_jti)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO refresh_tokens (jti, family, user_id, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(&new.jti)
            .bind(&fam)
            .bind(new.user_id.get())
            .bind(new.expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RotateOutcome::Rotated)
    }

    async fn session_state(&self, user_id: UserId, session: &str) -> Result<Option<SessionState>> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.email, u.is_staff, u.created_at, u.is_active, \
             (SELECT s.revoked_at IS NULL AND s.version = u.session_version AND u.is_active \
              FROM sessions s WHERE s.id = $2 AND s.user_id = u.id) AS live \
             FROM users u WHERE u.id = $1",
        )
        .bind(user_id.get())
        .bind(session)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let live: Option<bool> = row.try_get("live")?;
        Ok(live.map(|live| user_from(&row).map(|user| SessionState { user, live })).transpose()?)
    }

    async fn revoke_session(&self, user_id: UserId, session: &str, at: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.begin().await?;
        let revoked =
            sqlx::query("UPDATE sessions SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL")
                .bind(session)
                .bind(user_id.get())
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        sqlx::query("UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1 AND user_id = $2")
            .bind(session)
            .bind(user_id.get())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revoked > 0)
    }

    async fn end_sessions(
        &self,
        user_id: UserId,
        keep: Option<&str>,
        password_hash: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        if let Some(hash) = &password_hash {
            sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                .bind(user_id.get())
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        let found = end_sessions_in(&mut tx, user_id, keep, at).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn set_active(&self, id: UserId, is_active: bool, at: DateTime<Utc>) -> Result<Option<User>> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE users SET is_active = $2 WHERE id = $1")
            .bind(id.get())
            .bind(is_active)
            .execute(&mut *tx)
            .await?;
        if !is_active {
            end_sessions_in(&mut tx, id, None, at).await?;
        }
        let user = user_where(
            &mut tx,
            "SELECT id, username, email, is_staff, created_at, is_active FROM users WHERE id = $1",
            UserKey::Id(id.get()),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn prune_sessions(
        &self,
        tokens_expired_before: DateTime<Utc>,
        sessions_started_before: DateTime<Utc>,
    ) -> Result<u64> {
        let tokens = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(tokens_expired_before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let sessions = sqlx::query(
            "DELETE FROM sessions WHERE started_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family = sessions.id)",
        )
        .bind(sessions_started_before)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(tokens + sessions)
    }

    async fn insert_order(
        &self,
        user_id: UserId,
        actor: Actor,
        order: NewOrder,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Order> {
        let at = truncate(at);
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO orders (user_id, status, currency, total_minor, created_at, updated_at) \
             VALUES ($1, 'CREATED', $2, $3, $4, $4) RETURNING id",
        )
        .bind(user_id.get())
        .bind(order.currency().code())
        .bind(order.total().minor())
        .bind(at)
        .fetch_one(&mut *tx)
        .await?;
        let items = order.items();
        let positions: Vec<i32> = (0..items.len()).map(|i| i32::try_from(i).unwrap_or(i32::MAX)).collect();
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        let quantities: Vec<i64> = items.iter().map(|i| i.quantity).collect();
        let prices: Vec<i64> = items.iter().map(|i| i.price.minor()).collect();
        sqlx::query(
            "INSERT INTO order_items (order_id, position, name, quantity, unit_price_minor) \
             SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::bigint[], $5::bigint[])",
        )
        .bind(id)
        .bind(&positions)
        .bind(&names)
        .bind(&quantities)
        .bind(&prices)
        .execute(&mut *tx)
        .await?;
        let id = OrderId::new(id);
        insert_event(&mut tx, id, None, OrderStatus::Created, &actor, "order placed", at).await?;
        let stored = Order {
            id,
            user_id,
            status: OrderStatus::Created,
            items: items.to_vec(),
            total: order.total(),
            refunded: Money::zero(order.currency()),
            created_at: at,
            updated_at: at,
        };
        insert_outbox(&mut tx, notify(&stored), at).await?;
        record_idempotency(&mut tx, idempotency.as_ref(), &stored).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn order_by_id(&self, id: OrderId) -> Result<Option<Order>> {
        let mut conn = self.pool.acquire().await?;
        order_by_id(&mut conn, id).await
    }

    async fn list_orders(&self, q: OrderQuery) -> Result<Vec<Order>> {
        let before = q.before.map_or(i64::MAX, OrderId::get);
        let limit = i64::from(q.limit);
        let status = q.status.map(OrderStatus::as_str);
        let mut conn = self.pool.acquire().await?;
        if q.created_after.is_some() || q.created_before.is_some() {
            // A time window (staff reports): one statement with every filter optional.
            let rows = sqlx::query(
                "SELECT id, user_id, status, currency, total_minor, created_at, updated_at, refunded_minor FROM orders \
                 WHERE ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR status = $2) AND id < $3 \
                 AND ($5::timestamptz IS NULL OR created_at >= $5) AND ($6::timestamptz IS NULL OR created_at < $6) \
                 ORDER BY id DESC LIMIT $4",
            )
            .bind(q.user_id.map(UserId::get))
            .bind(status)
            .bind(before)
            .bind(limit)
            .bind(q.created_after)
            .bind(q.created_before)
            .fetch_all(&mut *conn)
            .await?;
            return load_orders(&mut conn, rows).await;
        }
        // One static statement per filter combination, so each gets a plan that uses its index.
        let query = match (q.user_id, status) {
            (Some(u), Some(s)) => sqlx::query(
                "SELECT id, user_id, status, currency, total_minor, created_at, updated_at, refunded_minor FROM orders \
                 WHERE user_id = $1 AND status = $2 AND id < $3 ORDER BY id DESC LIMIT $4",
            )
            .bind(u.get())
            .bind(s),
            (Some(u), None) => sqlx::query(
                "SELECT id, user_id, status, currency, total_minor, created_at, updated_at, refunded_minor FROM orders \
                 WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(u.get()),
            (None, Some(s)) => sqlx::query(
                "SELECT id, user_id, status, currency, total_minor, created_at, updated_at, refunded_minor FROM orders \
                 WHERE status = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(s),
            (None, None) => sqlx::query(
                "SELECT id, user_id, status, currency, total_minor, created_at, updated_at, refunded_minor FROM orders \
                 WHERE id < $1 ORDER BY id DESC LIMIT $2",
            ),
        };
        let rows = query.bind(before).bind(limit).fetch_all(&mut *conn).await?;
        load_orders(&mut conn, rows).await
    }

    async fn latest_order(&self, user_id: UserId) -> Result<Option<Order>> {
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query(
            "SELECT id, user_id, status, currency, total_minor, created_at, updated_at, refunded_minor FROM orders \
             WHERE user_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(user_id.get())
        .fetch_optional(&mut *conn)
        .await?;
        Ok(load_orders(&mut conn, row.into_iter().collect()).await?.pop())
    }

    async fn order_events(&self, id: OrderId) -> Result<Vec<OrderEvent>> {
        let rows = sqlx::query(
            "SELECT from_status, to_status, actor, reason, at FROM order_events WHERE order_id = $1 ORDER BY id",
        )
        .bind(id.get())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let from: Option<String> = r.try_get("from_status")?;
                let to: String = r.try_get("to_status")?;
                let actor: String = r.try_get("actor")?;
                Ok(OrderEvent {
                    order_id: id,
                    from: from.map(|f| OrderStatus::parse(&f).ok_or_else(|| corrupt("event status"))).transpose()?,
                    to: OrderStatus::parse(&to).ok_or_else(|| corrupt("event status"))?,
                    actor: Actor::try_from(actor).map_err(|_| corrupt("actor"))?,
                    reason: r.try_get("reason")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    async fn cancel_order(
        &self,
        id: OrderId,
        actor: Actor,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Order>> {
        let at = truncate(at);
        let mut tx = self.begin().await?;
        let changed =
            sqlx::query("UPDATE orders SET status = 'CANCELLED', updated_at = $2 WHERE id = $1 AND status = 'CREATED'")
                .bind(id.get())
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if changed == 0 {
            return order_by_id(&mut tx, id)
                .await?
                .map(Transition::NotApplied)
                .ok_or_else(|| Error::NotFound(format!("order {id}")));
        }
        sqlx::query(
            "UPDATE payments SET status = 'CANCELLED', updated_at = $2 WHERE order_id = $1 AND status = 'PENDING'",
        )
        .bind(id.get())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        insert_event(&mut tx, id, Some(OrderStatus::Created), OrderStatus::Cancelled, &actor, "order cancelled", at)
            .await?;
        let order = order_by_id(&mut tx, id).await?.ok_or_else(|| corrupt("cancelled order"))?;
        insert_outbox(&mut tx, notify(&order), at).await?;
        record_idempotency(&mut tx, idempotency.as_ref(), &order).await?;
        tx.commit().await?;
        Ok(Transition::Applied(order))
    }

    async fn live_payment(&self, order_id: OrderId) -> Result<Option<Payment>> {
        let mut conn = self.pool.acquire().await?;
        payment_where(&mut conn, LIVE_PAYMENT, order_id.get()).await
    }

    async fn payment_count(&self, order_id: OrderId) -> Result<u32> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE order_id = $1")
            .bind(order_id.get())
            .fetch_one(&self.pool)
            .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn insert_payment(&self, p: NewPaymentRecord, idempotency: Option<IdempotencySlot>) -> Result<PaymentInsert> {
        let mut tx = self.begin().await?;
        // Locking the order serialises payment inserts for it and orders them after any cancel.
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1 FOR UPDATE")
            .bind(p.order_id.get())
            .fetch_optional(&mut *tx)
            .await?;
        let status = status.ok_or_else(|| Error::NotFound(format!("order {}", p.order_id)))?;
        let status = OrderStatus::parse(&status).ok_or_else(|| corrupt("order status"))?;
        if status != OrderStatus::Created {
            return Ok(PaymentInsert::OrderNotPayable(status));
        }
        if let Some(existing) = payment_where(&mut tx, LIVE_PAYMENT, p.order_id.get()).await? {
            return Ok(PaymentInsert::Existing(existing));
        }
        let inserted = sqlx::query(
            "INSERT INTO payments (order_id, user_id, provider, provider_payment_id, transaction_id, method, attempt, \
             amount_minor, currency, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'PENDING', $10, $10) RETURNING *",
        )
        .bind(p.order_id.get())
        .bind(p.user_id.get())
        .bind(&p.provider)
        .bind(&p.provider_payment_id)
        .bind(&p.transaction_id)
        .bind(&p.method)
        .bind(i32::try_from(p.attempt).unwrap_or(i32::MAX))
        .bind(p.amount.minor())
        .bind(p.amount.currency().code())
        .bind(truncate(p.created_at))
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                let mut conn = self.pool.acquire().await?;
                let winner = payment_where(&mut conn, LIVE_PAYMENT, p.order_id.get()).await?;
                return winner.map(PaymentInsert::Existing).ok_or_else(|| Error::from(e));
            }
            Err(e) => return Err(e.into()),
        };
        let payment = payment_from(&row)?;
        record_idempotency(&mut tx, idempotency.as_ref(), &payment).await?;
        tx.commit().await?;
        Ok(PaymentInsert::Inserted(payment))
    }

    async fn payment_by_id(&self, id: PaymentId) -> Result<Option<Payment>> {
        let mut conn = self.pool.acquire().await?;
        payment_where(&mut conn, PAYMENT_BY_ID, id.get()).await
    }

    async fn transient_failures(&self, id: PaymentId) -> Result<u32> {
        let n: Option<i32> = sqlx::query_scalar("SELECT transient_failures FROM payments WHERE id = $1")
            .bind(id.get())
            .fetch_optional(&self.pool)
            .await?;
        Ok(n.map_or(0, |n| u32::try_from(n).unwrap_or(0)))
    }

    async fn record_transient_failure(&self, id: PaymentId) -> Result<()> {
        sqlx::query(
            "UPDATE payments SET transient_failures = transient_failures + 1 WHERE id = $1 AND status = 'PENDING'",
        )
        .bind(id.get())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn payments_for_order(&self, order_id: OrderId) -> Result<Vec<Payment>> {
        let rows = sqlx::query("SELECT * FROM payments WHERE order_id = $1 ORDER BY id")
            .bind(order_id.get())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(payment_from).collect()
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
        let at = truncate(at);
        let mut tx = self.begin().await?;
        let updated = match &outcome {
            PaymentOutcome::Succeeded => sqlx::query(
                "UPDATE payments SET status = 'SUCCESS', updated_at = $2 WHERE id = $1 AND status = 'PENDING' RETURNING *",
            )
            .bind(id.get())
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?,
            PaymentOutcome::Failed { reason } => sqlx::query(
                "UPDATE payments SET status = 'FAILED', failure_reason = $3, updated_at = $2 \
                 WHERE id = $1 AND status = 'PENDING' RETURNING *",
            )
            .bind(id.get())
            .bind(at)
            .bind(reason)
            .fetch_optional(&mut *tx)
            .await?,
        };
        let Some(row) = updated else {
            let current = payment_where(&mut tx, PAYMENT_BY_ID, id.get()).await?;
            return current.map(Transition::NotApplied).ok_or_else(|| Error::NotFound(format!("payment {id}")));
        };
        let payment = payment_from(&row)?;
        if outcome == PaymentOutcome::Succeeded {
            let paid =
                sqlx::query("UPDATE orders SET status = 'PAID', updated_at = $2 WHERE id = $1 AND status = 'CREATED'")
                    .bind(payment.order_id.get())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if paid == 0 {
                tx.rollback().await?;
                return Err(Error::Conflict(format!("order {} is no longer awaiting payment", payment.order_id)));
            }
            let reason = format!("payment {id} succeeded");
            insert_event(&mut tx, payment.order_id, Some(OrderStatus::Created), OrderStatus::Paid, &actor, &reason, at)
                .await?;
        }
        let order = order_by_id(&mut tx, payment.order_id).await?.ok_or_else(|| corrupt("payment without order"))?;
        insert_outbox(&mut tx, notify(&order, &payment), at).await?;
        record_idempotency(&mut tx, idempotency.as_ref(), &payment).await?;
        tx.commit().await?;
        Ok(Transition::Applied(payment))
    }

    async fn reserve_refund(&self, refund: NewRefundRecord) -> Result<RefundReserve> {
        let refund = NewRefundRecord { created_at: truncate(refund.created_at), ..refund };
        refunds::reserve(&self.pool, &refund).await
    }

    async fn finish_refund(
        &self,
        id: RefundId,
        outcome: RefundOutcome,
        at: DateTime<Utc>,
        notify: RefundNotify,
    ) -> Result<Transition<Refund>> {
        let mut tx = self.begin().await?;
        let result = refunds::finish(&mut tx, id, &outcome, truncate(at), notify).await?;
        tx.commit().await?;
        Ok(result)
    }

    async fn refund_by_id(&self, id: RefundId) -> Result<Option<Refund>> {
        let mut conn = self.pool.acquire().await?;
        refunds::by_id(&mut conn, id).await
    }

    async fn refunds_for_payment(&self, payment_id: PaymentId) -> Result<Vec<Refund>> {
        refunds::for_payment(&self.pool, payment_id).await
    }

    async fn pending_refunds(&self, created_before: DateTime<Utc>, limit: u32) -> Result<Vec<Refund>> {
        refunds::pending(&self.pool, created_before, limit).await
    }

    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        claim_token: &str,
    ) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query(
            "UPDATE outbox SET lease_until = $2, claim_token = $3, attempts = attempts + 1, updated_at = $1 \
             WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $1 \
                          AND (lease_until IS NULL OR lease_until <= $1) \
                          ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind(now)
        .bind(lease_until)
        .bind(claim_token)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            match outbox_from(row) {
                Ok(entry) => claimed.push(entry),
                // A row nobody can read (written outside SOM) must not block the rest.
                Err(e) => {
                    let id: i64 = row.try_get("id")?;
                    tracing::error!(id, error = %e, "undecodable outbox row dead-lettered");
                    sqlx::query(
                        "UPDATE outbox SET status = 'dead', last_error = $2, lease_until = NULL, claim_token = NULL \
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(format!("cannot be decoded: {e}"))
                    .execute(&self.pool)
                    .await?;
                }
            }
        }
        claimed.sort_by_key(|e| (e.next_attempt_at, e.id));
        Ok(claimed)
    }

    async fn mark_notification_sent(&self, id: NotificationId, claim_token: &str, at: DateTime<Utc>) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE outbox SET status = 'sent', sent_at = $3, updated_at = $3, lease_until = NULL, claim_token = NULL \
             WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
        )
        .bind(id.get())
        .bind(claim_token)
        .bind(at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn mark_notification_failed(
        &self,
        id: NotificationId,
        claim_token: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let now = Utc::now();
        let n =
            match retry_at {
                Some(at) => sqlx::query(
                    "UPDATE outbox SET next_attempt_at = $3, last_error = $4, lease_until = NULL, claim_token = NULL, \
                 updated_at = $5 WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
                )
                .bind(id.get())
                .bind(claim_token)
                .bind(at)
                .bind(error)
                .bind(now)
                .execute(&self.pool)
                .await?,
                None => {
                    sqlx::query(
                        "UPDATE outbox SET status = 'dead', last_error = $3, lease_until = NULL, claim_token = NULL, \
                 updated_at = $4 WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
                    )
                    .bind(id.get())
                    .bind(claim_token)
                    .bind(error)
                    .bind(now)
                    .execute(&self.pool)
                    .await?
                }
            };
        Ok(n.rows_affected() == 1)
    }

    async fn mark_notification_skipped(&self, id: NotificationId, claim_token: &str, reason: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE outbox SET status = 'skipped', last_error = $3, updated_at = $4, lease_until = NULL, \
             claim_token = NULL WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
        )
        .bind(id.get())
        .bind(claim_token)
        .bind(reason)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn release_notification(&self, id: NotificationId, claim_token: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE outbox SET lease_until = NULL, claim_token = NULL, attempts = GREATEST(attempts - 1, 0) \
             WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
        )
        .bind(id.get())
        .bind(claim_token)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn list_notifications(&self, q: NotificationQuery) -> Result<Vec<OutboxEntry>> {
        let after = q.after.map_or(0, NotificationId::get);
        let rows = match (q.status, q.order) {
            (Some(s), None) => {
                sqlx::query("SELECT * FROM outbox WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3").bind(s.as_str())
            }
            (None, None) => sqlx::query("SELECT * FROM outbox WHERE id > $1 ORDER BY id LIMIT $2"),
            (status, Some(order)) => sqlx::query(
                "SELECT * FROM outbox WHERE order_id = $1 AND ($2::text IS NULL OR status = $2) AND id > $3 \
                 ORDER BY id LIMIT $4",
            )
            .bind(order.get())
            .bind(status.map(NotificationStatus::as_str)),
        }
        .bind(after)
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_from).collect()
    }

    async fn requeue_notification(
        &self,
        id: NotificationId,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition<OutboxEntry>>> {
        let updated = sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $2, updated_at = $2, \
             lease_until = NULL, claim_token = NULL WHERE id = $1 AND status = 'dead' RETURNING *",
        )
        .bind(id.get())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = updated {
            sqlx::query("SELECT pg_notify($1, '')").bind(OUTBOX_CHANNEL).execute(&self.pool).await?;
            return Ok(Some(Transition::Applied(outbox_from(&row)?)));
        }
        let current =
            sqlx::query("SELECT * FROM outbox WHERE id = $1").bind(id.get()).fetch_optional(&self.pool).await?;
        current.as_ref().map(|r| Ok(Transition::NotApplied(outbox_from(r)?))).transpose()
    }

    async fn notification_counts(&self) -> Result<Vec<(NotificationStatus, u64)>> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status").fetch_all(&self.pool).await?;
        let mut counts: Vec<(NotificationStatus, u64)> = NotificationStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for r in rows {
            let status: String = r.try_get("status")?;
            let n: i64 = r.try_get("n")?;
            let status = NotificationStatus::parse(&status).ok_or_else(|| corrupt("notification status"))?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    async fn begin_idempotency(
        &self,
        key: &IdempotencyKey,
        request_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<IdempotencyBegin> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, operation, key, request_hash, response, locked_at, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, NULL, $5, $5, $6) ON CONFLICT (scope, operation, key) DO NOTHING",
        )
        .bind(&key.scope)
        .bind(key.operation)
        .bind(&key.key)
        .bind(request_hash)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            tx.commit().await?;
            return Ok(IdempotencyBegin::Started);
        }
        let row = sqlx::query(
            "SELECT request_hash, response, locked_at, expires_at FROM idempotency_keys \
             WHERE scope = $1 AND operation = $2 AND key = $3 FOR UPDATE",
        )
        .bind(&key.scope)
        .bind(key.operation)
        .bind(&key.key)
        .fetch_one(&mut *tx)
        .await?;
        let stored_hash: String = row.try_get("request_hash")?;
        let response: Option<String> = row.try_get("response")?;
        let locked: Option<DateTime<Utc>> = row.try_get("locked_at")?;
        let expires: DateTime<Utc> = row.try_get("expires_at")?;
        let take_over = expires <= now
            || (stored_hash == request_hash && response.is_none() && locked.is_none_or(|l| l < stale_before));
        let outcome = if take_over {
            sqlx::query(
                "UPDATE idempotency_keys SET request_hash = $4, response = NULL, locked_at = $5, created_at = $5, \
                 expires_at = $6 WHERE scope = $1 AND operation = $2 AND key = $3",
            )
            .bind(&key.scope)
            .bind(key.operation)
            .bind(&key.key)
            .bind(request_hash)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            IdempotencyBegin::Started
        } else if stored_hash != request_hash {
            IdempotencyBegin::Mismatch
        } else if let Some(response) = response {
            IdempotencyBegin::Replay(response)
        } else {
            IdempotencyBegin::InProgress
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn finish_idempotency(&self, key: &IdempotencyKey, response: &str) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET response = $4, locked_at = NULL \
             WHERE scope = $1 AND operation = $2 AND key = $3 AND response IS NULL",
        )
        .bind(&key.scope)
        .bind(key.operation)
        .bind(&key.key)
        .bind(response)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn abandon_idempotency(&self, key: &IdempotencyKey) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND operation = $2 AND key = $3 AND response IS NULL",
        )
        .bind(&key.scope)
        .bind(key.operation)
        .bind(&key.key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn prune_idempotency(&self, now: DateTime<Utc>) -> Result<u64> {
        let n =
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
        Ok(n.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::task::Poll;
    use std::time::Duration;

    use sqlx::Connection as _;

    use super::pool_options;
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
}
