//! The embedded SQLite backend (rusqlite, bundled SQLite).
//!
//! One writer thread owns the write connection and commits the writes queued behind each
//! other together (group commit, see `writer`): one `BEGIN IMMEDIATE`, a savepoint per write,
//! one `COMMIT` and so one fsync per batch. A small pool of reader connections serves reads
//! concurrently thanks to WAL, so reads never wait behind the writer. Bounded reads through an
//! index run on the calling thread; reads that may scan run on tokio's blocking pool.

mod files;
mod fulfillments;
mod idempotency;
mod orders;
mod outbox;
mod payments;
mod rows;
mod sessions;
use crate::util::lock;
use sessions::end_sessions_in;
mod users;
mod webhooks;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use tokio::sync::Semaphore;

use super::{
    IdempotencyBegin, IdempotencyKey, IdempotencySlot, IdempotencyStore, NewNotification, NewPaymentRecord,
    NewUserRecord, NotificationQuery, NotificationStatus, OrderNotify, OrderQuery, OrderStore, OrderTotals,
    OutboxEntry, OutboxStore, PaymentInsert, PaymentNotify, PaymentOutcome, PaymentStore, RefreshTokenRecord,
    RefundStore, RotateOutcome, SessionState, SessionStore, Storage, Transition, UserQuery, UserStore,
};
use crate::domain::{
    Actor, Email, Money, NewOrder, NotificationId, Order, OrderEvent, OrderId, OrderStatus, Payment, PaymentId, Refund,
    User, UserId,
};
use crate::error::{Error, Result};
use crate::storage::rows::corrupt;
use crate::storage::rows::{like_prefix, recipient_of, response_json};
pub use files::database_file;
use files::*;
use rows::*;

mod refunds;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_sessions.sql")),
    (3, include_str!("migrations/0003_transient_failures.sql")),
    (4, include_str!("migrations/0004_refunds.sql")),
    (5, include_str!("migrations/0005_provider_events.sql")),
    (6, include_str!("migrations/0006_provider_close.sql")),
    (7, include_str!("migrations/0007_capture.sql")),
    (8, include_str!("migrations/0008_fulfilment.sql")),
    (9, include_str!("migrations/0009_webhook_endpoints.sql")),
    (10, include_str!("migrations/0010_items_in_orders.sql")),
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
    /// The write connection: the writer thread's, and for in-memory databases the readers' too.
    writer: Arc<Mutex<Connection>>,
    /// The writer thread's queue.
    queue: writer::Writer,
    /// Idle reader connections: opened as reads need them and kept, at most as many as
    /// `reader_permits` (a read holds its permit for as long as it holds its connection).
    readers: Mutex<Vec<Connection>>,
    reader_permits: Arc<Semaphore>,
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
        database_error(&e)
    }
}

/// SOM's error for a SQLite error: busy, locked, I/O and a full disk are `Unavailable`.
fn database_error(e: &rusqlite::Error) -> Error {
    match e {
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

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

fn configure(conn: &Connection, writer: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Every statement SOM runs stays prepared (rusqlite keeps 16 by default, fewer than SOM's
    // distinct statements, so a busy connection would parse SQL again and again).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // One plan per statement whatever its parameters' values: without this SQLite prepares a
    // statement again whenever a parameter it planned with is bound (every `LIMIT ?` is), which
    // took a fifth of a page of orders' time.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    if writer {
        // Each write in a batch runs in a savepoint, which keeps the pages it changes in a
        // statement journal until it is released; kept in memory, those copies cost no system
        // calls (on a file, they were half the writer's time). The journal holds one write's
        // pages at a time, a few dozen KiB.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            tracing::warn!(%mode, "sqlite did not switch to WAL");
        }
    } else {
        conn.pragma_update(None, "query_only", true)?;
    }
    Ok(())
}

/// A reader connection to the database file at `path`.
fn open_reader(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    configure(&conn, false)?;
    Ok(conn)
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
    // The check reads every row that holds a reference, so it runs only after migrations did:
    // on a database with a million orders it would fill a connection's page cache and delay
    // every start by the time a full scan takes.
    if current < latest {
        let broken: Option<String> =
            tx.query_row("SELECT \"table\" FROM pragma_foreign_key_check LIMIT 1", [], |r| r.get(0)).optional()?;
        if let Some(table) = broken {
            return Err(Error::Internal(format!("migration left a broken reference in table {table}")));
        }
    }
    tx.commit()?;
    Ok(latest)
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at a `sqlite:` URL, runs migrations, and reads
    /// with up to `readers` reader connections, opened as reads need them (at least 1; none for
    /// an in-memory database, whose reads go through the writer).
    pub async fn open(url: &str, readers: u32) -> Result<SqliteStorage> {
        let path = crate::config::sqlite_file(url)?;
        let location = path.as_ref().map_or_else(|| ":memory:".to_owned(), |p| p.display().to_string());
        if let Some(p) = path.as_ref().filter(|p| p.is_dir()) {
            return Err(Error::invalid(
                "SOM_DATABASE_URL",
                format!("{} is a directory, not a database file", p.display()),
            ));
        }
        let named = location.clone();
        tokio::task::spawn_blocking(move || -> Result<SqliteStorage> {
            let mut writer = match &path {
                Some(p) => {
                    // A directory that does not exist is SQLite's to report, with the rest.
                    let _ = create_private(p, false);
                    Connection::open(p)?
                }
                None => Connection::open_in_memory()?,
            };
            // A file that is there but is no SQLite database is the URL's mistake, not an outage.
            let opening = |e: rusqlite::Error| match &e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::NotADatabase => {
                    Error::invalid("SOM_DATABASE_URL", format!("{named} is not a SQLite database"))
                }
                _ => Error::from(e),
            };
            configure(&writer, true).map_err(opening)?;
            migrate(&mut writer)?;
            // Readers are opened as reads need them (the writer has opened the file already) and
            // kept, so that a server holds no reader's memory (about 190 KB each, most of it
            // SQLite's lookaside and page cache) until its reads need them.
            let has_readers = path.is_some();
            let permits = Arc::new(Semaphore::new(if has_readers { readers.max(1) as usize } else { 0 }));
            let writer = Arc::new(Mutex::new(writer));
            let queue = writer::Writer::start(Arc::clone(&writer))
                .map_err(|e| Error::Internal(format!("starting the sqlite writer: {e}")))?;
            Ok(SqliteStorage {
                inner: Arc::new(Inner {
                    location,
                    path,
                    writer,
                    queue,
                    readers: Mutex::new(Vec::new()),
                    reader_permits: permits,
                    has_readers,
                }),
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("opening sqlite: {e}")))?
    }

    /// Runs `f` in the writer's transaction, in a savepoint of its own: `Ok` is answered once
    /// the batch that contains it is committed (and synced); `Err` rolls back `f`'s changes
    /// only.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.inner.queue.write(f).await
    }

    /// Runs `f` on a reader connection (the writer for in-memory databases) in a read
    /// transaction of its own, so that its statements see one state of the database. For reads
    /// that may scan (staff lists, reports): they run on tokio's blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.read_in(Read { transaction: true, inline: false }, f).await
    }

    /// [`SqliteStorage::read`] for a bounded read through an index (a user, a session, a page of
    /// one user's orders): it runs on the calling thread.
    ///
    /// Such a read takes microseconds from SQLite's page cache, about what handing it to
    /// another thread and back costs (two wake-ups and two context switches); measured over
    /// HTTP, running it in place is what lets an authenticated read reach half of `/healthz`.
    /// The price is that a read which has to go to the disk holds the calling thread for that
    /// long, so only reads that touch a few pages through an index take this path.
    async fn read_indexed<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.read_in(Read { transaction: true, inline: true }, f).await
    }

    /// [`SqliteStorage::read_indexed`] for `f` that runs a single statement, which SQLite already
    /// reads from one state of the database: no `BEGIN` and `COMMIT` around it.
    async fn read_statement<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.read_in(Read { transaction: false, inline: true }, f).await
    }

    async fn read_in<T, F>(&self, how: Read, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        if !inner.has_readers {
            // In memory: the writer's connection, which the writer thread holds for a whole
            // batch, so never waited for on the calling thread.
            return tokio::task::spawn_blocking(move || f(&lock(&inner.writer)))
                .await
                .map_err(|e| Error::Internal(format!("sqlite read task: {e}")))?;
        }
        // Owned, and handed back by `run` with the connection: a read on the blocking pool goes on
        // after its caller stops waiting, and keeps its connection until then.
        let permit = Arc::clone(&inner.reader_permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("reader pool closed".into()))?;
        let run = move || {
            let _permit = permit;
            let idle = lock(&inner.readers).pop();
            let conn = match (idle, &inner.path) {
                (Some(conn), _) => conn,
                (None, Some(path)) => open_reader(path)?,
                (None, None) => return Err(Error::Internal("sqlite readers without a file".into())),
            };
            let result = if how.transaction { in_read_transaction(&conn, f) } else { f(&conn) };
            // One left inside its read transaction (its end failed) would go on reading an old
            // state and hold back checkpoints: it is closed instead, and another opened later.
            if conn.is_autocommit() {
                lock(&inner.readers).push(conn);
            }
            result
        };
        if how.inline {
            run()
        } else {
            tokio::task::spawn_blocking(run).await.map_err(|e| Error::Internal(format!("sqlite read task: {e}")))?
        }
    }
}

/// Where and how a read runs.
#[derive(Clone, Copy)]
struct Read {
    /// In a transaction of its own (several statements that must agree).
    transaction: bool,
    /// On the calling thread rather than tokio's blocking pool.
    inline: bool,
}

/// Runs `f` in a read transaction, so that, say, a page of orders and their items agree.
fn in_read_transaction<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.execute_batch("BEGIN DEFERRED")?;
    let value = f(conn);
    match conn.execute_batch("COMMIT") {
        Ok(()) => value,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            value.and(Err(e.into()))
        }
    }
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
}

#[cfg(test)]
mod tests;
