//! Connections for statements run one at a time outside any transaction (reads, and writes
//! that are a single statement), lent without the pool's hand-back round trips; the writers'
//! connections also carry the transactions of `PostgresStorage::transaction_on_writers`.
//!
//! A pooled connection costs two round trips beyond its statement each time it comes back:
//! sqlx pings it, and the pool's check asks the server whether it was left inside a
//! transaction (`outside_transaction`). A single statement sent outside a transaction cannot
//! leave one open (the server commits or rolls it back before it answers), so these
//! connections skip both; what keeps them safe is that a connection goes back only when its
//! statement was answered. A [`Lent`] connection is returned by [`Lent::finish`]ing its result:
//! kept when the statement completed, closed when it failed or when the statement was dropped
//! before its answer arrived, so that no one inherits a half-read reply. A transaction's
//! connection goes back only once its transaction has ended (see [`Lent::settled`]).
//!
//! Connections are opened on first use, at most `size` at once; a borrower waits for one when
//! all are lent, as long as the pool would. Reads and writes each have a set of their own, so
//! that neither queues behind the other; the writers' set is driven by a thread of its own
//! (see `driver`), and used through [`Statements::run`] (or [`Statements::run_by`]).

use crate::util::lock;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::driver::Driver;
use crate::error::{Error, Result};

/// An idle connection and since when it has been idle.
type Idle = (PgConnection, Instant);

pub(super) struct Statements {
    idle: Arc<Mutex<Vec<Idle>>>,
    permits: Arc<Semaphore>,
    options: PgConnectOptions,
    /// Longest wait for a connection: a free one, or a new one being connected.
    acquire_timeout: Duration,
    /// Where statements on these connections run, when not on the caller's runtime.
    driver: Option<Driver>,
}

impl Statements {
    pub(super) fn new(options: PgConnectOptions, size: u32, acquire_timeout: Duration) -> Statements {
        Statements {
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(Semaphore::new(size.max(1) as usize)),
            options,
            acquire_timeout,
            driver: None,
        }
    }

    /// Connections whose statements all run on a thread of their own, named `name`: use them
    /// through [`Statements::run`] or [`Statements::run_by`] only (a connection's I/O belongs
    /// to the runtime it was opened on).
    pub(super) fn driven(
        options: PgConnectOptions,
        size: u32,
        acquire_timeout: Duration,
        name: &str,
    ) -> Result<Statements> {
        Ok(Statements { driver: Some(Driver::start(name)?), ..Statements::new(options, size, acquire_timeout) })
    }

    /// Borrows a connection and runs `work` with it: on the connections' own thread if they
    /// have one, where `work` runs to its end even if the caller stops waiting; otherwise in
    /// the caller's task.
    pub(super) async fn run<T, F, Fut>(self: &Arc<Self>, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Lent) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send,
    {
        self.run_by(None, work).await
    }

    /// [`Statements::run`], giving up waiting for a connection at `deadline` if there is one
    /// (for a caller that has already waited for something else) rather than after the acquire
    /// timeout counted from when the work starts on the connections' thread.
    pub(super) async fn run_by<T, F, Fut>(
        self: &Arc<Self>,
        deadline: Option<tokio::time::Instant>,
        work: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Lent) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send,
    {
        let this = Arc::clone(self);
        let task = async move {
            let lent = match deadline {
                Some(deadline) => this.get_by(deadline).await?,
                None => this.get().await?,
            };
            work(lent).await
        };
        match &self.driver {
            Some(driver) => driver.run(task).await,
            None => task.await,
        }
    }

    /// Runs `task` in the background on the connections' own thread (or, without one, on the
    /// caller's runtime); `task` borrows connections with [`Statements::get`].
    pub(super) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.driver {
            Some(driver) => driver.spawn(task),
            None => drop(tokio::spawn(task)),
        }
    }

    /// Closes every idle connection (their server went away: each would fail the next statement
    /// sent on it).
    pub(super) fn close_idle(&self) {
        lock(&self.idle).clear();
    }

    /// A connection for one or more single statements; see [`Lent::finish`]. Like the pool,
    /// gives up after the acquire timeout (all connections busy, or the server not answering
    /// a new one) with the pool's error, which callers see as the database being unavailable.
    pub(super) async fn get(&self) -> Result<Lent> {
        self.get_by(tokio::time::Instant::now() + self.acquire_timeout).await
    }

    /// [`Statements::get`], giving up at `deadline`.
    async fn get_by(&self, deadline: tokio::time::Instant) -> Result<Lent> {
        match tokio::time::timeout_at(deadline, self.acquire()).await {
            Ok(lent) => lent,
            Err(_) => Err(sqlx::Error::PoolTimedOut.into()),
        }
    }

    async fn acquire(&self) -> Result<Lent> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("postgres connections closed".into()))?;
        // Idle connections that may have died with a lost one are checked first (see `health`).
        let conn = loop {
            let idle = lock(&self.idle).pop();
            match idle {
                Some((mut conn, since)) => {
                    if super::health::usable(&mut conn, since.elapsed()).await? {
                        break conn;
                    }
                }
                None => break PgConnection::connect_with(&self.options).await?,
            }
        };
        Ok(Lent { conn: Some(conn), answered: false, idle: Arc::clone(&self.idle), _permit: permit })
    }
}

/// A lent connection: goes back to the idle set on drop only if the last statement run
/// on it was [`Lent::finish`]ed with an answer.
pub(super) struct Lent {
    conn: Option<PgConnection>,
    /// Whether the last statement's answer was read in full.
    answered: bool,
    idle: Arc<Mutex<Vec<Idle>>>,
    _permit: OwnedSemaphorePermit,
}

impl Lent {
    /// Records how the statement just run on this connection ended and passes its result on:
    /// answered, the connection can be lent again; failed, it is closed (a failure may have left
    /// the connection in trouble, and a new connection is cheap).
    pub(super) fn finish<T, E: Into<Error>>(&mut self, result: std::result::Result<T, E>) -> Result<T> {
        self.answered = result.is_ok();
        result.map_err(Into::into)
    }

    /// Records that the connection was left ready for the next statement, outside any
    /// transaction, whatever the work on it came to (see `transaction_on_writers`).
    pub(super) fn settled(&mut self) {
        self.answered = true;
    }
}

impl Deref for Lent {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().unwrap_or_else(|| unreachable!("a lent connection is present until dropped"))
    }
}

impl DerefMut for Lent {
    /// Taking the connection to run a statement: until that statement is finished, the
    /// connection is not fit to be lent again.
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.answered = false;
        self.conn.as_mut().unwrap_or_else(|| unreachable!("a lent connection is present until dropped"))
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // Unanswered, its state is unknown: dropped here, its socket closes and the server ends
        // the session.
        if let Some(conn) = self.conn.take()
            && self.answered
        {
            lock(&self.idle).push((conn, Instant::now()));
        }
    }
}
