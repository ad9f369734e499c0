//! The PostgreSQL backend (sqlx), for deployments where several `som serve` and `som worker`
//! processes share one database.
//!
//! Concurrency the Postgres way: state changes are conditional updates, an order's row is
//! locked while a payment is inserted for it, the database holds at most one live payment per
//! order (a unique partial index), outbox rows are claimed with `FOR UPDATE SKIP LOCKED` and a
//! lease, and commits that write outbox rows are followed by `NOTIFY som_outbox` (see
//! `announce`) so dispatchers in other processes wake at once.

mod announce;
mod driver;
mod fulfillments;
mod health;
mod refunds;
#[cfg(feature = "test-support")]
pub mod testing;

mod idempotency;
mod order_batches;
mod orders;
mod outbox;
mod payments;
mod replicas;
mod rows;
mod sessions;
mod statements;
mod users;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::types::Oid;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgQueryResult, PgRow,
};
use sqlx::{Postgres, Row, Transaction as SqlxTx};
use tokio::sync::Notify;

use super::{
    IdempotencyBegin, IdempotencyKey, IdempotencySlot, IdempotencyStore, NewNotification, NewPaymentRecord,
    NewUserRecord, NotificationQuery, NotificationStatus, OrderNotify, OrderQuery, OrderStore, OrderTotals,
    OutboxEntry, OutboxStore, PaymentInsert, PaymentNotify, PaymentOutcome, PaymentStore, RefreshTokenRecord,
    RefundStore, RotateOutcome, SessionState, SessionStore, Storage, Transition, UserQuery, UserStore,
};
use crate::domain::{
    Actor, Money, NewOrder, NotificationId, Order, OrderEvent, OrderId, OrderStatus, Payment, PaymentId, Refund, User,
    UserId,
};
use crate::error::{Error, Result};
use crate::storage::rows::corrupt;
use crate::storage::rows::{like_prefix, recipient_of, response_json};
use rows::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/storage/postgres/migrations");

/// The channel `NOTIFY` is sent on after a commit that wrote outbox rows (see `announce`).
const OUTBOX_CHANNEL: &str = "som_outbox";

type Tx<'c> = SqlxTx<'c, Postgres>;

/// The work of a transaction on a borrowed connection (see `transaction_on_writers`).
type BoxFuture<'c, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// PostgreSQL storage; cheap to clone.
#[derive(Clone)]
pub struct PostgresStorage {
    /// Transactions other than the writers' (see `begin`).
    pool: PgPool,
    /// Connections for single-statement reads (see `statements`).
    readers: Arc<statements::Statements>,
    /// The writers' connections, for single statements and the transactions of
    /// `transaction_on_writers` (see `statements`).
    writers: Arc<statements::Statements>,
    /// How many of the writers' connections may be in transactions at once.
    transactions: Arc<tokio::sync::Semaphore>,
    /// Orders waiting to be written, together (see `order_batches`).
    order_batches: Arc<order_batches::OrderBatches>,
    /// Wakes other processes' dispatchers after outbox rows are committed.
    announcer: Arc<announce::Announcer>,
    /// Streaming replicas for the reads that may lag (see `replicas`).
    replicas: Option<Arc<replicas::Replicas>>,
    /// How to connect: the outbox listener has a connection of its own.
    options: PgConnectOptions,
    location: Arc<str>,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage").field("location", &self.location).finish_non_exhaustive()
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        let code = match &e {
            sqlx::Error::Database(db) => db.code(),
            _ => None,
        };
        // The connection or the server went away (connection exceptions, shutdowns).
        let connection_lost = matches!(
            e,
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed
        ) || code.as_deref().is_some_and(|c| c.starts_with("08") || c.starts_with("57P"));
        if connection_lost {
            health::connection_lost();
        }
        // Those, an exhausted pool, too many connections, serialization and deadlock failures:
        // all worth a retry.
        let unavailable = connection_lost
            || matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
            || code.as_deref().is_some_and(|c| c == "53300" || c == "40001" || c == "40P01");
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

fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

impl PostgresStorage {
    /// Connects to a `postgres://` URL and runs the embedded migrations (serialised across
    /// processes by an advisory lock). Single-statement reads, single-statement writes and
    /// transactions each use up to `pool_size` connections (see `statements`).
    pub async fn open(url: &str, pool_size: u32) -> Result<PostgresStorage> {
        PostgresStorage::open_with_replicas(url, pool_size, &[], DEFAULT_REPLICA_MAX_LAG).await
    }

    /// [`PostgresStorage::open`], with streaming replicas at `read_urls` serving the reads that
    /// may lag (see [`crate::storage::freshness`]) while they are at most `max_lag` behind.
    pub async fn open_with_replicas(
        url: &str,
        pool_size: u32,
        read_urls: &[String],
        max_lag: Duration,
    ) -> Result<PostgresStorage> {
        let options = connect_options(url, "SOM_DATABASE_URL")?;
        // Reads and writes (placing an order, the outbox's bookkeeping, the transactions of
        // payments, cancellations and refunds) each have connections of their own, so that
        // reads running flat out do not queue writes and the other way round; other
        // transactions use the pool.
        let readers = Arc::new(statements::Statements::new(options.clone(), pool_size.max(1), ACQUIRE_TIMEOUT));
        let writers = Arc::new(statements::Statements::driven(
            options.clone(),
            pool_size.max(1),
            ACQUIRE_TIMEOUT,
            "som-pg-writes",
        )?);
        let announcer = Arc::new(announce::Announcer::new(Arc::downgrade(&writers)));
        let pool = pool_options(pool_size.max(1)).connect_with(options.clone()).await?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => Error::from(inner),
            sqlx::migrate::MigrateError::VersionMissing(version) => Error::Incompatible(format!(
                "the database's schema has migration {version}, which this build of SOM does not know; run the SOM \
                 version that migrated it, or a newer one"
            )),
            other => Error::Internal(format!("postgres migration: {other}")),
        })?;
        // The sequence that numbers orders (of the identity column `orders.id`), looked up once.
        let order_ids: Oid =
            sqlx::query_scalar("SELECT pg_get_serial_sequence('orders', 'id')::regclass::oid").fetch_one(&pool).await?;
        let order_batches = Arc::new(order_batches::OrderBatches::start(&writers, order_ids));
        let replicas = if read_urls.is_empty() {
            None
        } else {
            let members = read_urls
                .iter()
                .map(|u| Ok((crate::util::redact_url(u), connect_options(u, "SOM_DATABASE_READ_URLS")?)))
                .collect::<Result<Vec<_>>>()?;
            Some(replicas::Replicas::start(members, options.clone(), pool_size.max(1), max_lag))
        };
        Ok(PostgresStorage {
            pool,
            readers,
            writers,
            transactions: Arc::new(tokio::sync::Semaphore::new(pool_size.saturating_sub(1).max(1) as usize)),
            order_batches,
            announcer,
            replicas,
            options,
            location: crate::util::redact_url(url).into(),
        })
    }

    // The ways in: every read goes through `read` (or its shorthands `rows` and `row`), every
    // single-statement write through `write_with` (or `write`, `write_returning`), the
    // transactions of payments (initiations with a key, completions), cancellations and
    // refunds (reserved and finished) through `transaction_on_writers`, and other transactions
    // through `begin`.

    /// Starts a transaction on a connection of the application's pool (not on the writers'
    /// thread, whose work uses the writers' own connections).
    async fn begin(&self) -> Result<Tx<'static>> {
        debug_assert!(!driver::on_a_driver(), "a transaction on the writers' thread belongs on their connections");
        Ok(self.pool.begin().await?)
    }

    /// Runs `work` — a transaction it begins on the connection it is given — on one of the
    /// writers' own connections, on their thread, where its answers are read as they arrive
    /// (not after the application's queue of ready tasks) and it runs to its end even if the
    /// caller stops waiting.
    ///
    /// `work` commits or rolls back before it returns. A transaction it dropped instead (on an
    /// early return, or an error of its own) queued its rollback, which is sent here before the
    /// connection is lent again; when the connection itself failed (the server went away, or
    /// an error no one expected), it is closed, which ends any transaction on the server.
    ///
    /// At most all but one of the writers' connections are in such transactions at once (with
    /// `SOM_DATABASE_POOL_SIZE=1`, the one connection is shared): a transaction can wait for a
    /// row lock, and the orders' batches and single statements keep a connection. Waiting for
    /// that permit and then for a connection takes at most [`ACQUIRE_TIMEOUT`] in all.
    async fn transaction_on_writers<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        // One wait for both the permit and the connection.
        let deadline = tokio::time::Instant::now() + ACQUIRE_TIMEOUT;
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.transactions).acquire_owned())
            .await
            .map_err(|_| Error::from(sqlx::Error::PoolTimedOut))?
            .map_err(|_| Error::Internal("postgres writers closed".into()))?;
        self.writers
            .run_by(Some(deadline), move |mut conn| async move {
                let done = work(&mut conn).await;
                if !matches!(done, Err(Error::Unavailable(_) | Error::Internal(_)))
                    && sqlx::Connection::flush(&mut *conn).await.is_ok()
                    && !sqlx::Connection::is_in_transaction(&*conn)
                {
                    conn.settled();
                }
                drop(permit);
                done
            })
            .await
    }

    /// `done`, once the notifications its change queued (if it applied one) are announced to
    /// other processes. Called after the commit, holding no writer connection (announcing may
    /// borrow one).
    async fn announced<T>(&self, done: Transition<T>) -> Transition<T> {
        if matches!(done, Transition::Applied(_)) {
            self.announcer.announce().await;
        }
        done
    }

    /// Runs `work` — statements outside any transaction that change nothing — on a reader
    /// connection, handed back when `work` [`Lent::finish`](statements::Lent::finish)es its
    /// last statement.
    async fn read<T, F, Fut>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(statements::Lent) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send,
    {
        self.readers.run(work).await
    }

    /// Every row `query` reads (on a replica when the read may lag; see `replicas`).
    async fn rows(&self, query: Statement) -> Result<Vec<PgRow>> {
        self.read_may_lag(query, |query, mut conn| async move {
            let rows = query.fetch_all(&mut *conn).await;
            conn.finish(rows)
        })
        .await
    }

    /// The row `query` reads, if any (on a replica when the read may lag; see `replicas`).
    async fn row(&self, query: Statement) -> Result<Option<PgRow>> {
        self.read_may_lag(query, |query, mut conn| async move {
            let row = query.fetch_optional(&mut *conn).await;
            conn.finish(row)
        })
        .await
    }

    /// Runs the single statement `query` with `run`: on a replica that has caught up with the
    /// caller when the read may lag (see [`crate::storage::freshness`]) and there is one, and
    /// again on the primary if that replica turns out to be gone; otherwise on the primary.
    async fn read_may_lag<T, F, Fut>(&self, mut query: Statement, run: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Statement, statements::Lent) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<T>> + Send,
    {
        use sqlx::Execute as _;
        let replica = match (crate::storage::freshness::lag_allowed(), &self.replicas) {
            (Some(written_at), Some(replicas)) => replicas.choose(written_at),
            _ => None,
        };
        if let Some(replica) = replica {
            // The statement is sent at most twice: its text and arguments are kept to build it
            // again for the primary.
            let arguments = query.take_arguments().map_err(|e| Error::Internal(format!("postgres arguments: {e}")))?;
            let sql = query.sql();
            let again = move || match arguments.clone() {
                Some(arguments) => sqlx::query_with(sql.clone(), arguments),
                None => sqlx::query(sql.clone()),
            };
            let (first, on_replica) = (again(), run.clone());
            match replica.statements.run(move |conn| on_replica(first, conn)).await {
                Ok(value) => {
                    replica.served();
                    return Ok(value);
                }
                Err(e @ Error::Unavailable(_)) => replica.failed(&e),
                Err(e) => return Err(e),
            }
            query = again();
        }
        self.read(move |conn| run(query, conn)).await
    }

    /// Runs `work` — single write statements outside any transaction — on a writer connection,
    /// on the writers' own thread, where it runs to its end even if the caller stops waiting.
    async fn write_with<T, F, Fut>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(statements::Lent) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send,
    {
        self.writers.run(work).await
    }

    /// Runs one write statement outside any transaction.
    async fn write(&self, query: Statement) -> Result<PgQueryResult> {
        self.write_with(|mut conn| async move {
            let done = query.execute(&mut *conn).await;
            conn.finish(done)
        })
        .await
    }

    /// Runs one write statement that returns rows outside any transaction.
    async fn write_returning(&self, query: Statement) -> Result<Vec<PgRow>> {
        self.write_with(|mut conn| async move {
            let rows = query.fetch_all(&mut *conn).await;
            conn.finish(rows)
        })
        .await
    }
}

/// A statement with its arguments bound, ready to be sent.
type Statement = sqlx::query::Query<'static, Postgres, PgArguments>;

/// A server on this machine (a loopback address or a Unix socket) is reached without TLS
/// unless the URL or `PGSSLMODE` asks for it: traffic that never leaves the host gains nothing
/// from encryption, and the handshake costs about 100 ms per connection (most of start-up).
/// Every other server keeps the driver's default (`prefer`: TLS when the server offers it).
fn loopback_without_tls(options: PgConnectOptions, url: &str) -> PgConnectOptions {
    let chosen = url.to_ascii_lowercase().contains("sslmode=") || std::env::var_os("PGSSLMODE").is_some();
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if local && !chosen { options.ssl_mode(sqlx::postgres::PgSslMode::Disable) } else { options }
}

/// How far behind the primary a read replica may be and still serve reads, unless configured
/// (`SOM_REPLICA_MAX_LAG`).
pub const DEFAULT_REPLICA_MAX_LAG: Duration = Duration::from_secs(5);

/// Connection options for the `postgres://` URL of setting `name`.
fn connect_options(url: &str, name: &str) -> Result<PgConnectOptions> {
    let options: PgConnectOptions =
        url.parse().map_err(|e| Error::invalid(name, format!("not a valid postgres URL: {e}")))?;
    // Notices such as "relation _sqlx_migrations already exists, skipping" on every start are
    // not worth an operator's attention; warnings and errors still are.
    Ok(loopback_without_tls(options, url).options([("client_min_messages", "warning")]))
}

/// Longest a statement waits for a connection (all in use, or a new one not answered) before
/// it fails as "database unavailable" (503, retry); a writers' transaction waits this long for
/// its permit and its connection together.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How SOM's pools are built: at most `size` connections, each checked when it comes back.
fn pool_options(size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // Every connection is checked when it comes back (below), so a borrower gets one that
        // was healthy when it was last used, without a ping round trip per borrow; only one
        // that has been idle since a connection to the server was last lost is pinged first.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| Box::pin(health::usable(conn, meta.idle_for)))
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
async fn session_live(tx: &mut Tx<'_>, user_id: UserId, id: &str) -> Result<bool> {
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
async fn end_sessions_in(tx: &mut Tx<'_>, user_id: UserId, keep: Option<&str>, at: DateTime<Utc>) -> Result<bool> {
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

#[async_trait]
impl Storage for PostgresStorage {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn schema_version(&self) -> Result<i64> {
        let row = self.row(sqlx::query("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")).await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.unwrap_or(0))
    }

    async fn ping(&self) -> Result<()> {
        self.read(|mut conn| async move {
            let done = sqlx::query("SELECT 1").execute(&mut *conn).await;
            conn.finish(done)
        })
        .await?;
        Ok(())
    }

    fn replicas(&self) -> Vec<crate::storage::ReplicaStatus> {
        self.replicas.as_ref().map(|r| r.status()).unwrap_or_default()
    }

    async fn backup(&self, _destination: &std::path::Path) -> Result<()> {
        Err(Error::invalid("backup", "back up PostgreSQL with pg_dump (see docs/operations.md)"))
    }

    fn subscribe_outbox(&self, wake: Arc<Notify>) {
        let pool = self.pool.clone();
        // A connection of its own, so that listening never takes one from the transactions.
        let own = PgPoolOptions::new().max_connections(1).connect_lazy_with(self.options.clone());
        let origin = self.announcer.origin.clone();
        let weak = Arc::downgrade(&wake);
        drop(wake);
        tokio::spawn(async move {
            loop {
                let listener = async {
                    let mut l = PgListener::connect_with(&own).await?;
                    l.listen(OUTBOX_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(l)
                };
                match listener.await {
                    Ok(mut l) => loop {
                        match l.recv().await {
                            // This process woke its own dispatcher when it committed.
                            Ok(n) if n.payload() == origin => {}
                            Ok(_) => match weak.upgrade() {
                                Some(w) => w.notify_one(),
                                None => return,
                            },
                            Err(e) => {
                                health::connection_lost();
                                tracing::warn!(error = %e, "outbox listener lost its connection");
                                break;
                            }
                        }
                    },
                    Err(e) => {
                        health::connection_lost();
                        tracing::warn!(error = %e, "outbox listener cannot connect");
                    }
                }
                if weak.strong_count() == 0 || pool.is_closed() {
                    own.close().await;
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn get_or_init_setting(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>> {
        self.write(
            sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(name.to_owned())
                .bind(candidate),
        )
        .await?;
        let row = self.row(sqlx::query("SELECT value FROM settings WHERE name = $1").bind(name.to_owned())).await?;
        Ok(row.ok_or_else(|| corrupt("setting"))?.try_get(0)?)
    }
}

#[cfg(test)]
mod tests;
