//! The embedded SQLite backend (rusqlite, bundled SQLite).
//!
//! One writer connection serialises every write transaction (`BEGIN IMMEDIATE`); a small pool
//! of reader connections serves reads concurrently thanks to WAL, so reads never wait behind
//! the writer. All SQLite calls run on tokio's blocking pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use tokio::sync::Semaphore;

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
use crate::error::{Error, Result};

mod refunds;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_sessions.sql")),
    (3, include_str!("migrations/0003_transient_failures.sql")),
    (4, include_str!("migrations/0004_refunds.sql")),
];

/// SQLite storage; cheap to clone.
#[derive(Clone)]
pub struct SqliteStorage {
    inner: Arc<Inner>,
}

struct Inner {
    location: String,
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    reader_permits: Semaphore,
    /// Writers queue here, not on blocking threads: one blocking thread writes at a time and
    /// the rest of the blocking pool stays free for readers.
    writer_permit: Semaphore,
    /// False for in-memory databases, whose reads go through the writer.
    has_readers: bool,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage").field("location", &self.inner.location).finish_non_exhaustive()
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    ErrorCode::DatabaseBusy
                        | ErrorCode::DatabaseLocked
                        | ErrorCode::CannotOpen
                        | ErrorCode::SystemIoFailure
                        | ErrorCode::DiskFull
                ) =>
            {
                tracing::warn!(error = %e, "sqlite unavailable");
                Error::Unavailable("database".into())
            }
            _ => Error::Internal(format!("sqlite: {e}")),
        }
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn corrupt(what: &str) -> Error {
    Error::Internal(format!("unexpected value in the database: {what}"))
}

/// Where a `sqlite:` URL points: `sqlite://som.db` (relative), `sqlite:///abs/som.db`,
/// `sqlite::memory:` (private, in memory).
/// The database file a `sqlite:` URL names; `None` for an in-memory database or another kind
/// of URL.
pub fn database_file(url: &str) -> Option<PathBuf> {
    parse_url(url).ok().flatten()
}

fn parse_url(url: &str) -> Result<Option<PathBuf>> {
    let rest = url.strip_prefix("sqlite:").ok_or_else(|| Error::invalid("SOM_DATABASE_URL", "not a sqlite URL"))?;
    let rest = rest.split_once('?').map_or(rest, |(path, _)| path);
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path == ":memory:" || path.is_empty() && rest == ":memory:" {
        return Ok(None);
    }
    if path.is_empty() {
        return Err(Error::invalid("SOM_DATABASE_URL", "the sqlite URL names no file"));
    }
    Ok(Some(PathBuf::from(path)))
}

/// Creates the empty file `path` readable and writable by its owner only (0600), or — with
/// `exclusive` false — does nothing if it exists. The database holds password hashes and
/// possibly the token signing key; SQLite gives its `-wal`, `-shm` and `-journal` files the
/// main file's permissions, so they are private too. `create_new` never follows a symbolic
/// link.
fn create_private(path: &std::path::Path, exclusive: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if !exclusive && e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_shared(path);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Warns when an existing database file can be read by other local users.
fn warn_if_shared(path: &std::path::Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the database file is readable by other users; it holds password hashes (chmod 600 it and its -wal and -shm files)"
            );
        }
    }
}

fn configure(conn: &Connection, writer: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    if writer {
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            tracing::warn!(%mode, "sqlite did not switch to WAL");
        }
    } else {
        conn.pragma_update(None, "query_only", true)?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<i64> {
    // Migrations that rebuild a table (SQLite's way to change a constraint) run with foreign
    // keys off, as SQLite's documentation prescribes; every reference is checked before the
    // transaction commits, and foreign keys are on again afterwards whatever happened.
    conn.pragma_update(None, "foreign_keys", false)?;
    let result = migrate_in_transaction(conn);
    conn.pragma_update(None, "foreign_keys", true)?;
    result
}

fn migrate_in_transaction(conn: &mut Connection) -> Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let current: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
    let latest = MIGRATIONS.iter().map(|(v, _)| *v).max().unwrap_or(0);
    if current > latest {
        return Err(Error::Incompatible(format!(
            "the database's schema (version {current}) is newer than this build of SOM knows (version {latest}); \
             run the SOM version that migrated it, or a newer one"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, micros(Utc::now())],
        )?;
        tracing::info!(version, "applied sqlite migration");
    }
    let broken: Option<String> =
        tx.query_row("SELECT \"table\" FROM pragma_foreign_key_check LIMIT 1", [], |r| r.get(0)).optional()?;
    if let Some(table) = broken {
        return Err(Error::Internal(format!("migration left a broken reference in table {table}")));
    }
    tx.commit()?;
    Ok(latest)
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at a `sqlite:` URL, runs migrations, and opens
    /// `readers` reader connections (at least 1; none for an in-memory database, whose reads go
    /// through the writer).
    pub async fn open(url: &str, readers: u32) -> Result<SqliteStorage> {
        let path = parse_url(url)?;
        let location = path.as_ref().map_or_else(|| ":memory:".to_owned(), |p| p.display().to_string());
        tokio::task::spawn_blocking(move || -> Result<SqliteStorage> {
            let mut writer = match &path {
                Some(p) => {
                    // A directory that does not exist is SQLite's to report, with the rest.
                    let _ = create_private(p, false);
                    Connection::open(p)?
                }
                None => Connection::open_in_memory()?,
            };
            configure(&writer, true)?;
            migrate(&mut writer)?;
            let mut pool = Vec::new();
            if let Some(p) = &path {
                for _ in 0..readers.max(1) {
                    let conn = Connection::open_with_flags(
                        p,
                        OpenFlags::SQLITE_OPEN_READ_WRITE
                            | OpenFlags::SQLITE_OPEN_NO_MUTEX
                            | OpenFlags::SQLITE_OPEN_URI,
                    )?;
                    configure(&conn, false)?;
                    pool.push(conn);
                }
            }
            let permits = Semaphore::new(pool.len());
            let has_readers = !pool.is_empty();
            Ok(SqliteStorage {
                inner: Arc::new(Inner {
                    location,
                    path,
                    writer: Mutex::new(writer),
                    readers: Mutex::new(pool),
                    reader_permits: permits,
                    writer_permit: Semaphore::new(1),
                    has_readers,
                }),
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("opening sqlite: {e}")))?
    }

    /// Runs `f` in an immediate write transaction on the writer connection; commits on `Ok`.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let _permit = self.inner.writer_permit.acquire().await.map_err(|_| Error::Internal("writer closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let mut conn = lock(&inner.writer);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
        .await
        .map_err(|e| Error::Internal(format!("sqlite write task: {e}")))?
    }

    /// Runs `f` on a reader connection (the writer for in-memory databases).
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        if !inner.has_readers {
            return tokio::task::spawn_blocking(move || f(&lock(&inner.writer)))
                .await
                .map_err(|e| Error::Internal(format!("sqlite read task: {e}")))?;
        }
        let pool = Arc::clone(&inner);
        let permit = pool.reader_permits.acquire().await.map_err(|_| Error::Internal("reader pool closed".into()))?;
        let result = tokio::task::spawn_blocking(move || {
            let conn = lock(&inner.readers).pop().ok_or_else(|| Error::Internal("reader pool empty".into()))?;
            // A read is a single transaction so that an order and its items are consistent.
            let result = match conn.execute_batch("BEGIN DEFERRED") {
                Err(e) => Err(e.into()),
                Ok(()) => {
                    let value = f(&conn);
                    match conn.execute_batch("COMMIT") {
                        Ok(()) => value,
                        Err(e) => {
                            let _ = conn.execute_batch("ROLLBACK");
                            value.and(Err(e.into()))
                        }
                    }
                }
            };
            lock(&inner.readers).push(conn);
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("sqlite read task: {e}")))?;
        drop(permit);
        result
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether session `id` of `user_id` is live: not revoked, at its user's session version, and
/// the user active.
fn session_live(tx: &Transaction<'_>, user_id: UserId, id: &str) -> Result<bool> {
    let live: Option<bool> = tx
        .query_row(
            "SELECT s.revoked_at IS NULL AND s.version = u.session_version AND u.is_active \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?1 AND s.user_id = ?2",
            params![id, user_id.get()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(live.unwrap_or(false))
}

// ---------------------------------------------------------------------------------------------
// Row mapping

const USER_COLUMNS: &str = "id, username, email, is_staff, created_at, is_active";

type UserRow = (i64, String, Option<String>, bool, i64, bool);

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn build_user((id, username, email, is_staff, created_at, is_active): UserRow) -> Result<User> {
    Ok(User {
        id: UserId::new(id),
        username: Username::parse(&username).map_err(|_| corrupt("username"))?,
        email: email.map(|e| Email::parse(&e).map_err(|_| corrupt("email"))).transpose()?,
        is_staff,
        is_active,
        created_at: time(created_at),
    })
}

/// Revokes every live session of `user_id` but `keep` (and their refresh tokens), moves the
/// user's session version on and keeps `keep` at the new version. False when there is no such
/// user.
fn end_sessions_in(tx: &Transaction<'_>, user_id: UserId, keep: Option<&str>, at: DateTime<Utc>) -> Result<bool> {
    let bumped = tx.execute("UPDATE users SET session_version = session_version + 1 WHERE id = ?1", [user_id.get()])?;
    if bumped == 0 {
        return Ok(false);
    }
    let keep = keep.unwrap_or("");
    tx.execute(
        "UPDATE refresh_tokens SET revoked = 1 WHERE user_id = ?1 AND family <> ?2 AND revoked = 0",
        params![user_id.get(), keep],
    )?;
    tx.execute(
        "UPDATE sessions SET revoked_at = ?3 WHERE user_id = ?1 AND id <> ?2 AND revoked_at IS NULL",
        params![user_id.get(), keep, micros(at)],
    )?;
    tx.execute(
        "UPDATE sessions SET version = (SELECT session_version FROM users WHERE id = ?1) \
         WHERE user_id = ?1 AND id = ?2 AND revoked_at IS NULL",
        params![user_id.get(), keep],
    )?;
    Ok(true)
}

fn query_user(conn: &Connection, where_clause: &str, param: &dyn rusqlite::ToSql) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {where_clause}");
    conn.query_row(&sql, [param], user_from_row).optional()?.map(build_user).transpose()
}

struct OrderRow {
    id: i64,
    user_id: i64,
    status: String,
    currency: String,
    total_minor: i64,
    created_at: i64,
    updated_at: i64,
    refunded_minor: i64,
}

const ORDER_COLUMNS: &str = "id, user_id, status, currency, total_minor, created_at, updated_at, refunded_minor";

fn order_row(r: &Row<'_>) -> rusqlite::Result<OrderRow> {
    Ok(OrderRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        status: r.get(2)?,
        currency: r.get(3)?,
        total_minor: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        refunded_minor: r.get(7)?,
    })
}

/// Orders with their items, in the order of `rows`.
fn load_orders(conn: &Connection, rows: Vec<OrderRow>) -> Result<Vec<Order>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = vec!["?"; rows.len()].join(",");
    let sql = format!(
        "SELECT order_id, name, quantity, unit_price_minor FROM order_items WHERE order_id IN ({placeholders}) \
         ORDER BY order_id, position"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut items: std::collections::HashMap<i64, Vec<(String, i64, i64)>> = std::collections::HashMap::new();
    let mut q = stmt.query(rusqlite::params_from_iter(rows.iter().map(|r| r.id)))?;
    while let Some(r) = q.next()? {
        items.entry(r.get(0)?).or_default().push((r.get(1)?, r.get(2)?, r.get(3)?));
    }
    rows.into_iter()
        .map(|row| {
            let currency = Currency::parse(&row.currency).map_err(|_| corrupt("currency"))?;
            Ok(Order {
                id: OrderId::new(row.id),
                user_id: UserId::new(row.user_id),
                status: OrderStatus::parse(&row.status).ok_or_else(|| corrupt("order status"))?,
                items: items
                    .remove(&row.id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, quantity, price)| OrderItem {
                        name,
                        quantity,
                        price: Money::from_minor(price, currency),
                    })
                    .collect(),
                total: Money::from_minor(row.total_minor, currency),
                refunded: Money::from_minor(row.refunded_minor, currency),
                created_at: time(row.created_at),
                updated_at: time(row.updated_at),
            })
        })
        .collect()
}

fn order_by_id(conn: &Connection, id: OrderId) -> Result<Option<Order>> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1");
    let row = conn.query_row(&sql, [id.get()], order_row).optional()?;
    Ok(load_orders(conn, row.into_iter().collect())?.pop())
}

const PAYMENT_COLUMNS: &str = "id, order_id, user_id, provider, provider_payment_id, transaction_id, method, attempt, \
     amount_minor, currency, status, failure_reason, created_at, updated_at, refunded_minor, refund_reserved_minor";

fn payment_row(r: &Row<'_>) -> rusqlite::Result<Result<Payment>> {
    let currency: String = r.get(9)?;
    let status: String = r.get(10)?;
    let amount: i64 = r.get(8)?;
    let attempt: i64 = r.get(7)?;
    let refunded: i64 = r.get(14)?;
    let reserved: i64 = r.get(15)?;
    let build = |provider, provider_payment_id, transaction_id, method, failure_reason| -> Result<Payment> {
        let currency = Currency::parse(&currency).map_err(|_| corrupt("currency"))?;
        Ok(Payment {
            id: PaymentId::new(r.get(0)?),
            order_id: OrderId::new(r.get(1)?),
            user_id: UserId::new(r.get(2)?),
            provider,
            provider_payment_id,
            transaction_id,
            method,
            attempt: u32::try_from(attempt).map_err(|_| corrupt("attempt"))?,
            amount: Money::from_minor(amount, currency),
            refunded: Money::from_minor(refunded, currency),
            refund_pending: Money::from_minor(reserved - refunded, currency),
            status: PaymentStatus::parse(&status).ok_or_else(|| corrupt("payment status"))?,
            failure_reason,
            created_at: time(r.get(12)?),
            updated_at: time(r.get(13)?),
        })
    };
    Ok(build(r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(11)?))
}

fn query_payment(conn: &Connection, where_clause: &str, param: i64) -> Result<Option<Payment>> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE {where_clause}");
    conn.query_row(&sql, [param], payment_row).optional()?.transpose()
}

const OUTBOX_COLUMNS: &str = "id, kind, dedupe_key, channel, recipient, payload, status, attempts, next_attempt_at, \
     last_error, created_at, sent_at";

fn outbox_row(r: &Row<'_>) -> rusqlite::Result<Result<OutboxEntry>> {
    let kind: String = r.get(1)?;
    let payload: String = r.get(5)?;
    let status: String = r.get(6)?;
    let attempts: i64 = r.get(7)?;
    let sent_at: Option<i64> = r.get(11)?;
    let (id, dedupe_key, channel, recipient, next, last_error, created) =
        (r.get(0)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(8)?, r.get(9)?, r.get(10)?);
    Ok((|| {
        Ok(OutboxEntry {
            id: NotificationId::new(id),
            kind: EventKind::parse(&kind).ok_or_else(|| corrupt("event kind"))?,
            dedupe_key,
            channel,
            recipient,
            message: serde_json::from_str::<Message>(&payload).map_err(|_| corrupt("outbox payload"))?,
            status: NotificationStatus::parse(&status).ok_or_else(|| corrupt("notification status"))?,
            attempts: u32::try_from(attempts).unwrap_or(0),
            next_attempt_at: time(next),
            last_error,
            created_at: time(created),
            sent_at: sent_at.map(time),
        })
    })())
}

fn query_outbox(conn: &Connection, id: NotificationId) -> Result<Option<OutboxEntry>> {
    let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1");
    conn.query_row(&sql, [id.get()], outbox_row).optional()?.transpose()
}

// ---------------------------------------------------------------------------------------------
// Writes shared by several operations

fn insert_event(
    tx: &Transaction<'_>,
    order: OrderId,
    from: Option<OrderStatus>,
    to: OrderStatus,
    actor: &Actor,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO order_events (order_id, from_status, to_status, actor, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![order.get(), from.map(OrderStatus::as_str), to.as_str(), actor.to_string(), reason, micros(at)])?;
    Ok(())
}

fn insert_outbox(tx: &Transaction<'_>, rows: Vec<NewNotification>, at: DateTime<Utc>) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO outbox (kind, dedupe_key, channel, recipient, payload, status, attempts, next_attempt_at, \
         created_at, updated_at, order_id) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6, ?7) \
         ON CONFLICT (dedupe_key, channel) DO NOTHING",
    )?;
    for n in rows {
        let payload = serde_json::to_string(&n.message)
            .map_err(|e| Error::Internal(format!("serializing outbox payload: {e}")))?;
        stmt.execute(params![
            n.message.kind.as_str(),
            n.message.dedupe_key(),
            n.channel,
            recipient_of(&n),
            payload,
            micros(at),
            n.message.order_id.get()
        ])?;
    }
    Ok(())
}

fn record_idempotency<T: serde::Serialize>(
    tx: &Transaction<'_>,
    slot: Option<&IdempotencySlot>,
    value: &T,
) -> Result<()> {
    if let Some(slot) = slot {
        let k = &slot.key;
        tx.prepare_cached(
            "UPDATE idempotency_keys SET response = ?4, locked_at = NULL \
             WHERE scope = ?1 AND operation = ?2 AND key = ?3 AND response IS NULL",
        )?
        .execute(params![k.scope, k.operation, k.key, response_json(value)?])?;
    }
    Ok(())
}

#[async_trait]
impl Storage for SqliteStorage {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn schema_version(&self) -> Result<i64> {
        self.read(|c| Ok(c.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?))
            .await
    }

    async fn ping(&self) -> Result<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?)).await
    }

    async fn backup(&self, destination: &std::path::Path) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let destination = destination.to_owned();
        tokio::task::spawn_blocking(move || -> Result<()> {
            // Created here, new and private (0600), so that a backup never overwrites a file and
            // never writes through a symbolic link planted at its path.
            create_private(&destination, true).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    Error::invalid("backup", format!("{} already exists", destination.display()))
                }
                _ => Error::invalid("backup", format!("cannot create {}: {e}", destination.display())),
            })?;
            let mut target = Connection::open(&destination)?;
            // SQLite's online backup API: a consistent snapshot while writers carry on.
            let copy = |source: &Connection, target: &mut Connection| -> rusqlite::Result<()> {
                rusqlite::backup::Backup::new(source, target)?.run_to_completion(
                    512,
                    std::time::Duration::from_millis(1),
                    None,
                )
            };
            match &inner.path {
                Some(p) => copy(&Connection::open_with_flags(p, OpenFlags::SQLITE_OPEN_READ_ONLY)?, &mut target)?,
                None => copy(&lock(&inner.writer), &mut target)?,
            }
            target.pragma_update(None, "journal_mode", "DELETE")?;
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("sqlite backup task: {e}")))?
    }

    async fn get_or_init_setting(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>> {
        let name = name.to_owned();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![name, candidate],
            )?;
            Ok(tx.query_row("SELECT value FROM settings WHERE name = ?1", [&name], |r| r.get(0))?)
        })
        .await
    }

    async fn insert_user(&self, user: NewUserRecord) -> Result<User> {
        self.write(move |tx| {
            let inserted = tx.execute(
                "INSERT INTO users (username, email, password_hash, is_staff, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    user.username.as_str(),
                    user.email.as_ref().map(Email::as_str),
                    user.password_hash,
                    user.is_staff,
                    micros(user.created_at)
                ],
            );
            match inserted {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    let taken = |sql: &str, value: Option<&str>| -> Result<bool> {
                        Ok(value.is_some() && tx.query_row(sql, [value], |_| Ok(())).optional()?.is_some())
                    };
                    let mut errors = crate::error::ValidationErrors::new();
                    if taken("SELECT 1 FROM users WHERE username = ?1", Some(user.username.as_str()))? {
                        errors.add("username", "a user with that username already exists");
                    }
                    if taken("SELECT 1 FROM users WHERE email = ?1", user.email.as_ref().map(Email::as_str))? {
                        errors.add("email", "a user with that email already exists");
                    }
                    return Err(if errors.is_empty() { e.into() } else { Error::Validation(errors) });
                }
                Err(e) => return Err(e.into()),
            }
            query_user(tx, "id = ?1", &tx.last_insert_rowid())?.ok_or_else(|| corrupt("inserted user"))
        })
        .await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        self.read(move |c| query_user(c, "id = ?1", &id.get())).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let username = username.to_owned();
        self.read(move |c| query_user(c, "username = ?1", &username)).await
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<(User, String)>> {
        let username = username.to_owned();
        self.read(move |c| {
            let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = ?1");
            let row = c.query_row(&sql, [&username], |r| Ok((user_from_row(r)?, r.get::<_, String>(6)?))).optional()?;
            row.map(|(u, hash)| Ok((build_user(u)?, hash))).transpose()
        })
        .await
    }

    async fn list_users(&self, q: UserQuery) -> Result<Vec<User>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id > ?1 \
                 AND (?2 IS NULL OR lower(username) LIKE ?2 ESCAPE '\\' OR lower(email) LIKE ?2 ESCAPE '\\') \
                 ORDER BY id LIMIT ?3"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let pattern = q.prefix.as_deref().map(like_prefix);
            let rows = stmt.query_map(params![q.after.map_or(0, UserId::get), pattern, q.limit], user_from_row)?;
            rows.map(|r| build_user(r?)).collect()
        })
        .await
    }

    async fn set_staff(&self, id: UserId, is_staff: bool) -> Result<Option<User>> {
        self.write(move |tx| {
            tx.execute("UPDATE users SET is_staff = ?2 WHERE id = ?1", params![id.get(), is_staff])?;
            query_user(tx, "id = ?1", &id.get())
        })
        .await
    }

    async fn insert_refresh_token(&self, t: RefreshTokenRecord) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO sessions (id, user_id, version, started_at) \
                 SELECT ?1, id, session_version, ?3 FROM users WHERE id = ?2 ON CONFLICT (id) DO NOTHING",
                params![t.family, t.user_id.get(), micros(t.session_started_at)],
            )?;
            tx.execute(
                "INSERT INTO refresh_tokens (jti, family, user_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![t.jti, t.family, t.user_id.get(), micros(t.expires_at)],
            )?;
            Ok(())
        })
        .await
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
        self.write(move |tx| {
            let row = tx
                .query_row(
                    "SELECT family, user_id, expires_at, used_at, revoked FROM refresh_tokens WHERE jti = ?1",
                    [&old_jti],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, bool>(4)?,
                        ))
                    },
                )
                .optional()?;
            let Some((fam, uid, expires, used, revoked)) = row else { return Ok(RotateOutcome::Rejected) };
            if fam != family || uid != user_id.get() || revoked || expires <= micros(now) {
                return Ok(RotateOutcome::Rejected);
            }
            if !session_live(tx, user_id, &fam)? {
                return Ok(RotateOutcome::Rejected);
            }
            if used.is_some() {
                tx.execute("UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1", [&fam])?;
                tx.execute(
                    "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![fam, micros(now)],
                )?;
                return Ok(RotateOutcome::ReuseDetected);
            }
            tx.execute(
                "UPDATE refresh_tokens SET used_at = ?2 WHERE jti = ?1 AND used_at IS NULL",
                params![old_jti, micros(now)],
            )?;
            tx.execute(
                "INSERT INTO refresh_tokens (jti, family, user_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![new.jti, fam, new.user_id.get(), micros(new.expires_at)],
            )?;
            Ok(RotateOutcome::Rotated)
        })
        .await
    }

    async fn session_state(&self, user_id: UserId, session: &str) -> Result<Option<SessionState>> {
        let session = session.to_owned();
        self.read(move |c| {
            let Some(user) = query_user(c, "id = ?1", &user_id.get())? else { return Ok(None) };
            let live: Option<bool> = c
                .prepare_cached(
                    "SELECT s.revoked_at IS NULL AND s.version = u.session_version AND u.is_active \
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?1 AND s.user_id = ?2",
                )?
                .query_row(params![session, user_id.get()], |r| r.get(0))
                .optional()?;
            Ok(live.map(|live| SessionState { user, live }))
        })
        .await
    }

    async fn revoke_session(&self, user_id: UserId, session: &str, at: DateTime<Utc>) -> Result<bool> {
        let session = session.to_owned();
        self.write(move |tx| {
            let revoked = tx.execute(
                "UPDATE sessions SET revoked_at = ?3 WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL",
                params![session, user_id.get(), micros(at)],
            )?;
            tx.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1 AND user_id = ?2",
                params![session, user_id.get()],
            )?;
            Ok(revoked > 0)
        })
        .await
    }

    async fn end_sessions(
        &self,
        user_id: UserId,
        keep: Option<&str>,
        password_hash: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let keep = keep.map(str::to_owned);
        self.write(move |tx| {
            if let Some(hash) = &password_hash {
                tx.execute("UPDATE users SET password_hash = ?2 WHERE id = ?1", params![user_id.get(), hash])?;
            }
            end_sessions_in(tx, user_id, keep.as_deref(), at)
        })
        .await
    }

    async fn set_active(&self, id: UserId, is_active: bool, at: DateTime<Utc>) -> Result<Option<User>> {
        self.write(move |tx| {
            tx.execute("UPDATE users SET is_active = ?2 WHERE id = ?1", params![id.get(), is_active])?;
            if !is_active {
                end_sessions_in(tx, id, None, at)?;
            }
            query_user(tx, "id = ?1", &id.get())
        })
        .await
    }

    async fn prune_sessions(
        &self,
        tokens_expired_before: DateTime<Utc>,
        sessions_started_before: DateTime<Utc>,
    ) -> Result<u64> {
        self.write(move |tx| {
            let tokens =
                tx.execute("DELETE FROM refresh_tokens WHERE expires_at < ?1", [micros(tokens_expired_before)])?;
            let sessions = tx.execute(
                "DELETE FROM sessions WHERE started_at < ?1 \
                 AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family = sessions.id)",
                [micros(sessions_started_before)],
            )?;
            Ok(u64::try_from(tokens + sessions).unwrap_or(u64::MAX))
        })
        .await
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
        // Stored with microsecond precision; the returned order says exactly what was stored.
        let at = time(micros(at));
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO orders (user_id, status, currency, total_minor, created_at, updated_at) \
                 VALUES (?1, 'CREATED', ?2, ?3, ?4, ?4)",
            )?
            .execute(params![user_id.get(), order.currency().code(), order.total().minor(), micros(at)])?;
            let id = OrderId::new(tx.last_insert_rowid());
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO order_items (order_id, position, name, quantity, unit_price_minor) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (pos, item) in order.items().iter().enumerate() {
                    stmt.execute(params![id.get(), i64::try_from(pos).unwrap_or(i64::MAX), item.name, item.quantity, item.price.minor()])?;
                }
            }
            insert_event(tx, id, None, OrderStatus::Created, &actor, "order placed", at)?;
            let stored = Order {
                id,
                user_id,
                status: OrderStatus::Created,
                items: order.items().to_vec(),
                total: order.total(),
                refunded: Money::zero(order.currency()),
                created_at: at,
                updated_at: at,
            };
            insert_outbox(tx, notify(&stored), at)?;
            record_idempotency(tx, idempotency.as_ref(), &stored)?;
            Ok(stored)
        })
        .await
    }

    async fn order_by_id(&self, id: OrderId) -> Result<Option<Order>> {
        self.read(move |c| order_by_id(c, id)).await
    }

    async fn list_orders(&self, q: OrderQuery) -> Result<Vec<Order>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR status = ?2) \
                 AND id < ?3 AND (?5 IS NULL OR created_at >= ?5) AND (?6 IS NULL OR created_at < ?6) \
                 ORDER BY id DESC LIMIT ?4"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(
                    params![
                        q.user_id.map(UserId::get),
                        q.status.map(OrderStatus::as_str),
                        q.before.map_or(i64::MAX, OrderId::get),
                        q.limit,
                        q.created_after.map(micros),
                        q.created_before.map(micros)
                    ],
                    order_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            load_orders(c, rows)
        })
        .await
    }

    async fn latest_order(&self, user_id: UserId) -> Result<Option<Order>> {
        self.read(move |c| {
            let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = ?1 ORDER BY id DESC LIMIT 1");
            let row = c.query_row(&sql, [user_id.get()], order_row).optional()?;
            Ok(load_orders(c, row.into_iter().collect())?.pop())
        })
        .await
    }

    async fn order_events(&self, id: OrderId) -> Result<Vec<OrderEvent>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT from_status, to_status, actor, reason, at FROM order_events WHERE order_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([id.get()], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            rows.map(|r| {
                let (from, to, actor, reason, at) = r?;
                Ok(OrderEvent {
                    order_id: id,
                    from: from.map(|f| OrderStatus::parse(&f).ok_or_else(|| corrupt("event status"))).transpose()?,
                    to: OrderStatus::parse(&to).ok_or_else(|| corrupt("event status"))?,
                    actor: Actor::try_from(actor).map_err(|_| corrupt("actor"))?,
                    reason,
                    at: time(at),
                })
            })
            .collect()
        })
        .await
    }

    async fn cancel_order(
        &self,
        id: OrderId,
        actor: Actor,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Order>> {
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE orders SET status = 'CANCELLED', updated_at = ?2 WHERE id = ?1 AND status = 'CREATED'",
                params![id.get(), micros(at)],
            )?;
            if changed == 0 {
                return order_by_id(tx, id)?
                    .map(Transition::NotApplied)
                    .ok_or_else(|| Error::NotFound(format!("order {id}")));
            }
            tx.execute(
                "UPDATE payments SET status = 'CANCELLED', updated_at = ?2 WHERE order_id = ?1 AND status = 'PENDING'",
                params![id.get(), micros(at)],
            )?;
            insert_event(tx, id, Some(OrderStatus::Created), OrderStatus::Cancelled, &actor, "order cancelled", at)?;
            let order = order_by_id(tx, id)?.ok_or_else(|| corrupt("cancelled order"))?;
            insert_outbox(tx, notify(&order), at)?;
            record_idempotency(tx, idempotency.as_ref(), &order)?;
            Ok(Transition::Applied(order))
        })
        .await
    }

    async fn live_payment(&self, order_id: OrderId) -> Result<Option<Payment>> {
        self.read(move |c| query_payment(c, "order_id = ?1 AND status IN ('PENDING', 'SUCCESS')", order_id.get())).await
    }

    async fn payment_count(&self, order_id: OrderId) -> Result<u32> {
        self.read(move |c| {
            let n: i64 =
                c.query_row("SELECT COUNT(*) FROM payments WHERE order_id = ?1", [order_id.get()], |r| r.get(0))?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
        .await
    }

    async fn insert_payment(&self, p: NewPaymentRecord, idempotency: Option<IdempotencySlot>) -> Result<PaymentInsert> {
        self.write(move |tx| {
            let status: Option<String> =
                tx.query_row("SELECT status FROM orders WHERE id = ?1", [p.order_id.get()], |r| r.get(0)).optional()?;
            let status = status.ok_or_else(|| Error::NotFound(format!("order {}", p.order_id)))?;
            let status = OrderStatus::parse(&status).ok_or_else(|| corrupt("order status"))?;
            if status != OrderStatus::Created {
                return Ok(PaymentInsert::OrderNotPayable(status));
            }
            let live = "order_id = ?1 AND status IN ('PENDING', 'SUCCESS')";
            if let Some(existing) = query_payment(tx, live, p.order_id.get())? {
                return Ok(PaymentInsert::Existing(existing));
            }
            let inserted = tx.execute(
                "INSERT INTO payments (order_id, user_id, provider, provider_payment_id, transaction_id, method, attempt, \
                 amount_minor, currency, status, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'PENDING', ?10, ?10)",
                params![
                    p.order_id.get(),
                    p.user_id.get(),
                    p.provider,
                    p.provider_payment_id,
                    p.transaction_id,
                    p.method,
                    p.attempt,
                    p.amount.minor(),
                    p.amount.currency().code(),
                    micros(p.created_at)
                ],
            );
            match inserted {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    let winner = query_payment(tx, live, p.order_id.get())?;
                    return winner.map(PaymentInsert::Existing).ok_or_else(|| Error::from(e));
                }
                Err(e) => return Err(e.into()),
            }
            let payment = query_payment(tx, "id = ?1", tx.last_insert_rowid())?.ok_or_else(|| corrupt("inserted payment"))?;
            record_idempotency(tx, idempotency.as_ref(), &payment)?;
            Ok(PaymentInsert::Inserted(payment))
        })
        .await
    }

    async fn payment_by_id(&self, id: PaymentId) -> Result<Option<Payment>> {
        self.read(move |c| query_payment(c, "id = ?1", id.get())).await
    }

    async fn transient_failures(&self, id: PaymentId) -> Result<u32> {
        self.read(move |c| {
            let n: Option<i64> = c
                .query_row("SELECT transient_failures FROM payments WHERE id = ?1", [id.get()], |r| r.get(0))
                .optional()?;
            Ok(n.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)))
        })
        .await
    }

    async fn record_transient_failure(&self, id: PaymentId) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE payments SET transient_failures = transient_failures + 1 WHERE id = ?1 AND status = 'PENDING'",
                [id.get()],
            )?;
            Ok(())
        })
        .await
    }

    async fn payments_for_order(&self, order_id: OrderId) -> Result<Vec<Payment>> {
        self.read(move |c| {
            let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = ?1 ORDER BY id");
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map([order_id.get()], payment_row)?;
            rows.map(|r| r?).collect()
        })
        .await
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
        self.write(move |tx| {
            let changed = match &outcome {
                PaymentOutcome::Succeeded => tx.execute(
                    "UPDATE payments SET status = 'SUCCESS', updated_at = ?2 WHERE id = ?1 AND status = 'PENDING'",
                    params![id.get(), micros(at)],
                )?,
                PaymentOutcome::Failed { reason } => tx.execute(
                    "UPDATE payments SET status = 'FAILED', failure_reason = ?3, updated_at = ?2 \
                     WHERE id = ?1 AND status = 'PENDING'",
                    params![id.get(), micros(at), reason],
                )?,
            };
            let payment =
                query_payment(tx, "id = ?1", id.get())?.ok_or_else(|| Error::NotFound(format!("payment {id}")))?;
            if changed == 0 {
                return Ok(Transition::NotApplied(payment));
            }
            if outcome == PaymentOutcome::Succeeded {
                let paid = tx.execute(
                    "UPDATE orders SET status = 'PAID', updated_at = ?2 WHERE id = ?1 AND status = 'CREATED'",
                    params![payment.order_id.get(), micros(at)],
                )?;
                if paid == 0 {
                    // Rolls the payment update back with the transaction.
                    return Err(Error::Conflict(format!("order {} is no longer awaiting payment", payment.order_id)));
                }
                let reason = format!("payment {id} succeeded");
                insert_event(tx, payment.order_id, Some(OrderStatus::Created), OrderStatus::Paid, &actor, &reason, at)?;
            }
            let order = order_by_id(tx, payment.order_id)?.ok_or_else(|| corrupt("payment without order"))?;
            insert_outbox(tx, notify(&order, &payment), at)?;
            record_idempotency(tx, idempotency.as_ref(), &payment)?;
            Ok(Transition::Applied(payment))
        })
        .await
    }

    async fn reserve_refund(&self, refund: NewRefundRecord) -> Result<RefundReserve> {
        let refund = NewRefundRecord { created_at: time(micros(refund.created_at)), ..refund };
        self.write(move |tx| refunds::reserve(tx, &refund)).await
    }

    async fn finish_refund(
        &self,
        id: RefundId,
        outcome: RefundOutcome,
        at: DateTime<Utc>,
        notify: RefundNotify,
    ) -> Result<Transition<Refund>> {
        self.write(move |tx| refunds::finish(tx, id, &outcome, at, notify)).await
    }

    async fn refund_by_id(&self, id: RefundId) -> Result<Option<Refund>> {
        self.read(move |c| refunds::by_id(c, id)).await
    }

    async fn refunds_for_payment(&self, payment_id: PaymentId) -> Result<Vec<Refund>> {
        self.read(move |c| refunds::for_payment(c, payment_id)).await
    }

    async fn pending_refunds(&self, created_before: DateTime<Utc>, limit: u32) -> Result<Vec<Refund>> {
        self.read(move |c| refunds::pending(c, created_before, limit)).await
    }

    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        claim_token: &str,
    ) -> Result<Vec<OutboxEntry>> {
        let token = claim_token.to_owned();
        self.write(move |tx| {
            let ids: Vec<i64> = tx
                .prepare_cached(
                    "SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?1 \
                     AND (lease_until IS NULL OR lease_until <= ?1) ORDER BY next_attempt_at, id LIMIT ?2",
                )?
                .query_map(params![micros(now), limit], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut claimed = Vec::with_capacity(ids.len());
            let mut stmt = tx.prepare_cached(
                "UPDATE outbox SET lease_until = ?2, claim_token = ?3, attempts = attempts + 1, updated_at = ?4 WHERE id = ?1",
            )?;
            for id in ids {
                stmt.execute(params![id, micros(lease_until), token, micros(now)])?;
                match query_outbox(tx, NotificationId::new(id)) {
                    Ok(entry) => claimed.extend(entry),
                    // A row nobody can read (written outside SOM) must not block the rest.
                    Err(e) => {
                        tracing::error!(id, error = %e, "undecodable outbox row dead-lettered");
                        tx.execute(
                            "UPDATE outbox SET status = 'dead', last_error = ?2, lease_until = NULL, claim_token = NULL \
                             WHERE id = ?1",
                            params![id, format!("cannot be decoded: {e}")],
                        )?;
                    }
                }
            }
            Ok(claimed)
        })
        .await
    }

    async fn mark_notification_sent(&self, id: NotificationId, claim_token: &str, at: DateTime<Utc>) -> Result<bool> {
        let token = claim_token.to_owned();
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE outbox SET status = 'sent', sent_at = ?3, updated_at = ?3, lease_until = NULL, claim_token = NULL \
                 WHERE id = ?1 AND claim_token = ?2 AND status = 'pending'",
                params![id.get(), token, micros(at)],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn mark_notification_failed(
        &self,
        id: NotificationId,
        claim_token: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let (token, error) = (claim_token.to_owned(), error.to_owned());
        self.write(move |tx| {
            let now = micros(Utc::now());
            let n = match retry_at {
                Some(at) => tx.execute(
                    "UPDATE outbox SET next_attempt_at = ?3, last_error = ?4, lease_until = NULL, claim_token = NULL, \
                     updated_at = ?5 WHERE id = ?1 AND claim_token = ?2 AND status = 'pending'",
                    params![id.get(), token, micros(at), error, now],
                )?,
                None => tx.execute(
                    "UPDATE outbox SET status = 'dead', last_error = ?3, lease_until = NULL, claim_token = NULL, \
                     updated_at = ?4 WHERE id = ?1 AND claim_token = ?2 AND status = 'pending'",
                    params![id.get(), token, error, now],
                )?,
            };
            Ok(n == 1)
        })
        .await
    }

    async fn mark_notification_skipped(&self, id: NotificationId, claim_token: &str, reason: &str) -> Result<bool> {
        let (token, reason) = (claim_token.to_owned(), reason.to_owned());
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE outbox SET status = 'skipped', last_error = ?3, updated_at = ?4, lease_until = NULL, \
                 claim_token = NULL WHERE id = ?1 AND claim_token = ?2 AND status = 'pending'",
                params![id.get(), token, reason, micros(Utc::now())],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_notification(&self, id: NotificationId, claim_token: &str) -> Result<bool> {
        let token = claim_token.to_owned();
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE outbox SET lease_until = NULL, claim_token = NULL, attempts = MAX(attempts - 1, 0) \
                 WHERE id = ?1 AND claim_token = ?2 AND status = 'pending'",
                params![id.get(), token],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn list_notifications(&self, q: NotificationQuery) -> Result<Vec<OutboxEntry>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE (?1 IS NULL OR status = ?1) AND id > ?2 \
                 AND (?4 IS NULL OR order_id = ?4) ORDER BY id LIMIT ?3"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![
                    q.status.map(NotificationStatus::as_str),
                    q.after.map_or(0, NotificationId::get),
                    q.limit,
                    q.order.map(OrderId::get)
                ],
                outbox_row,
            )?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    async fn requeue_notification(
        &self,
        id: NotificationId,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition<OutboxEntry>>> {
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2, updated_at = ?2, \
                 lease_until = NULL, claim_token = NULL WHERE id = ?1 AND status = 'dead'",
                params![id.get(), micros(now)],
            )?;
            let entry = query_outbox(tx, id)?;
            Ok(entry.map(|e| if n == 1 { Transition::Applied(e) } else { Transition::NotApplied(e) }))
        })
        .await
    }

    async fn notification_counts(&self) -> Result<Vec<(NotificationStatus, u64)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT status, COUNT(*) FROM outbox GROUP BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut counts: Vec<(NotificationStatus, u64)> = NotificationStatus::ALL.iter().map(|s| (*s, 0)).collect();
            for row in rows {
                let (status, n) = row?;
                let status = NotificationStatus::parse(&status).ok_or_else(|| corrupt("notification status"))?;
                if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                    slot.1 = u64::try_from(n).unwrap_or(0);
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn begin_idempotency(
        &self,
        key: &IdempotencyKey,
        request_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<IdempotencyBegin> {
        let (k, hash) = (key.clone(), request_hash.to_owned());
        self.write(move |tx| {
            let row = tx
                .query_row(
                    "SELECT request_hash, response, locked_at, expires_at FROM idempotency_keys \
                     WHERE scope = ?1 AND operation = ?2 AND key = ?3",
                    params![k.scope, k.operation, k.key],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<i64>>(2)?, r.get::<_, i64>(3)?)),
                )
                .optional()?;
            let start = |tx: &Transaction<'_>| -> Result<IdempotencyBegin> {
                tx.execute(
                    "INSERT INTO idempotency_keys (scope, operation, key, request_hash, response, locked_at, created_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?5, ?6) \
                     ON CONFLICT (scope, operation, key) DO UPDATE SET request_hash = excluded.request_hash, \
                     response = NULL, locked_at = excluded.locked_at, created_at = excluded.created_at, \
                     expires_at = excluded.expires_at",
                    params![k.scope, k.operation, k.key, hash, micros(now), micros(expires_at)],
                )?;
                Ok(IdempotencyBegin::Started)
            };
            match row {
                None => start(tx),
                Some((_, _, _, expires)) if expires <= micros(now) => start(tx),
                Some((stored_hash, _, _, _)) if stored_hash != hash => Ok(IdempotencyBegin::Mismatch),
                Some((_, Some(response), _, _)) => Ok(IdempotencyBegin::Replay(response)),
                Some((_, None, locked, _)) if locked.is_none_or(|l| l < micros(stale_before)) => start(tx),
                Some(_) => Ok(IdempotencyBegin::InProgress),
            }
        })
        .await
    }

    async fn finish_idempotency(&self, key: &IdempotencyKey, response: &str) -> Result<()> {
        let (k, response) = (key.clone(), response.to_owned());
        self.write(move |tx| {
            tx.execute(
                "UPDATE idempotency_keys SET response = ?4, locked_at = NULL \
                 WHERE scope = ?1 AND operation = ?2 AND key = ?3 AND response IS NULL",
                params![k.scope, k.operation, k.key, response],
            )?;
            Ok(())
        })
        .await
    }

    async fn abandon_idempotency(&self, key: &IdempotencyKey) -> Result<()> {
        let k = key.clone();
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM idempotency_keys WHERE scope = ?1 AND operation = ?2 AND key = ?3 AND response IS NULL",
                params![k.scope, k.operation, k.key],
            )?;
            Ok(())
        })
        .await
    }

    async fn prune_idempotency(&self, now: DateTime<Utc>) -> Result<u64> {
        self.write(move |tx| {
            let n = tx.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?1", [micros(now)])?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database at schema 3 with a paid order keeps its rows, ids, references and
    /// AUTOINCREMENT sequences through the refunds migration (which rebuilds two tables).
    #[tokio::test]
    async fn a_version_3_database_is_migrated_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("som.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
            )
            .unwrap();
            for (version, sql) in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
                conn.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version]).unwrap();
            }
            conn.execute_batch(
                "INSERT INTO users (id, username, email, password_hash, created_at) VALUES (1, 'alice', 'a@example.com', 'x', 0);
                 INSERT INTO orders (id, user_id, status, currency, total_minor, created_at, updated_at)
                     VALUES (7, 1, 'PAID', 'USD', 1000, 0, 0);
                 INSERT INTO order_items VALUES (7, 0, 'Widget', 1, 1000);
                 INSERT INTO payments (id, order_id, user_id, provider, provider_payment_id, transaction_id, method,
                     attempt, amount_minor, currency, status, created_at, updated_at, transient_failures)
                     VALUES (3, 7, 1, 'mock', 'mock_pi_s_k', 'txn_1', 'mock_success', 1, 1000, 'USD', 'SUCCESS', 0, 0, 2);
                 INSERT INTO outbox (kind, dedupe_key, channel, payload, status, next_attempt_at, created_at, updated_at)
                     VALUES ('order_created', 'order_created:order:7', 'log', '{\"order_id\": 7}', 'sent', 0, 0, 0);",
            )
            .unwrap();
        }
        let storage = SqliteStorage::open(&format!("sqlite://{}", path.display()), 1).await.unwrap();
        assert_eq!(storage.schema_version().await.unwrap(), 4);
        let order = storage.order_by_id(OrderId::new(7)).await.unwrap().unwrap();
        assert_eq!((order.status, order.items.len(), order.refunded.minor()), (OrderStatus::Paid, 1, 0));
        let payment = storage.payment_by_id(PaymentId::new(3)).await.unwrap().unwrap();
        assert_eq!((payment.status, payment.refundable().minor()), (PaymentStatus::Success, 1000));
        assert_eq!(storage.transient_failures(PaymentId::new(3)).await.unwrap(), 2);
        let conn = Connection::open(&path).unwrap();
        let outbox_order: i64 = conn.query_row("SELECT order_id FROM outbox", [], |r| r.get(0)).unwrap();
        assert_eq!(outbox_order, 7, "existing notifications are found by their order");
        let next_order: i64 =
            conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'orders'", [], |r| r.get(0)).unwrap();
        assert_eq!(next_order, 7, "the order ids continue where they were");
        let writer_fk: bool = lock(&storage.inner.writer).query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
        assert!(writer_fk, "foreign keys are on again after migrating");
    }

    #[test]
    fn urls_name_relative_absolute_and_memory_databases() {
        assert_eq!(parse_url("sqlite://som.db").unwrap(), Some(PathBuf::from("som.db")));
        assert_eq!(parse_url("sqlite:///tmp/x/som.db").unwrap(), Some(PathBuf::from("/tmp/x/som.db")));
        assert_eq!(parse_url("sqlite:som.db?mode=rwc").unwrap(), Some(PathBuf::from("som.db")));
        assert_eq!(parse_url("sqlite::memory:").unwrap(), None);
        assert_eq!(parse_url("sqlite://:memory:").unwrap(), None);
        assert!(parse_url("sqlite://").is_err());
        assert!(parse_url("postgres://x").is_err());
    }

    #[cfg(unix)]
    fn mode(path: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn database_and_backup_files_are_private_and_backups_never_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("som.db");
        let storage = SqliteStorage::open(&format!("sqlite://{}", db.display()), 1).await.unwrap();
        storage.get_or_init_setting("probe", b"secret".to_vec()).await.unwrap();
        for file in ["som.db", "som.db-wal", "som.db-shm"] {
            assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
        }
        let backup = dir.path().join("backup.db");
        storage.backup(&backup).await.unwrap();
        assert_eq!(mode(&backup), 0o600);
        assert!(storage.backup(&backup).await.is_err(), "a backup overwrote an existing file");

        let elsewhere = dir.path().join("elsewhere.db");
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert!(storage.backup(&link).await.is_err(), "a backup followed a symbolic link");
        assert!(!elsewhere.exists(), "a backup wrote through a symbolic link");
    }
}
