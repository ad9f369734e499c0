//! Group commit: one thread owns the write connection and commits many writes at once.
//!
//! Writes queue on a channel. The writer takes the first and every write already waiting
//! behind it (at most [`MAX_BATCH`]), opens one `BEGIN IMMEDIATE` transaction, runs each write
//! inside its own `SAVEPOINT` — a write that fails (a constraint, a conflict, a check in SQL, a
//! panic) is rolled back to its savepoint and gets its own error, the others are unaffected —
//! then `COMMIT`s once and only then answers every caller in the batch. With
//! `synchronous=FULL` that is one fsync per batch instead of one per write, and no caller hears
//! of a write before the commit that contains it is on disk. A lone write never waits for
//! company: the writer takes whatever is queued when it is free, which is nothing but that
//! write when the system is idle.
//!
//! The batch is bounded by count; each write's size is bounded by what produced it (a request
//! body, SOM's own limits on items and names), so a batch holds at most
//! `MAX_BATCH` × the largest write.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::{database_error, lock};
use crate::error::{Error, Result};

/// Most writes committed together.
pub(super) const MAX_BATCH: usize = 128;

/// A write waiting for the writer.
pub(super) trait WriteJob: Send {
    /// Runs the write inside the batch's transaction (in its own savepoint); what to tell its
    /// caller once the batch's commit is known.
    fn run(self: Box<Self>, tx: &Transaction<'_>) -> Box<dyn Reply>;
    /// The batch could not start: tell the caller why.
    fn refuse(self: Box<Self>, error: Error);
}

/// A write's answer, held until its batch is committed (or not).
pub(super) trait Reply: Send {
    fn send(self: Box<Self>, commit: std::result::Result<(), &rusqlite::Error>);
}

struct Job<T, F> {
    write: F,
    reply: oneshot::Sender<Result<T>>,
}

struct Held<T> {
    value: Result<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, tx: &Transaction<'_>) -> Box<dyn Reply> {
        let Job { write, reply } = *self;
        Box::new(Held { value: in_savepoint(tx, write), reply })
    }

    fn refuse(self: Box<Self>, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

impl<T: Send> Reply for Held<T> {
    fn send(self: Box<Self>, commit: std::result::Result<(), &rusqlite::Error>) {
        let answer = match (self.value, commit) {
            (Ok(value), Ok(())) => Ok(value),
            (Ok(_), Err(e)) => Err(database_error(e)),
            // A write that failed was rolled back to its savepoint whatever the commit did.
            (Err(own), _) => Err(own),
        };
        // The caller may have stopped waiting; its write stands (or not) all the same.
        let _ = self.reply.send(answer);
    }
}

/// Runs `write` in a savepoint of `tx`: released when it succeeds, rolled back when it fails
/// or panics.
fn in_savepoint<T>(tx: &Transaction<'_>, write: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
    // Prepared once per connection, like every statement of a write.
    let run = |sql: &str| tx.prepare_cached(sql).and_then(|mut stmt| stmt.execute([])).map(drop);
    run("SAVEPOINT som_write")?;
    let outcome = catch_unwind(AssertUnwindSafe(|| write(tx)))
        .unwrap_or_else(|_| Err(Error::Internal("a database write panicked".into())));
    let close = match &outcome {
        Ok(_) => run("RELEASE som_write"),
        Err(_) => run("ROLLBACK TO som_write").and_then(|()| run("RELEASE som_write")),
    };
    match close {
        Ok(()) => outcome,
        // The savepoint could not be closed: the transaction is in an unknown state; the
        // batch's commit will report it to everyone else.
        Err(e) => outcome.and(Err(e.into())),
    }
}

/// The queue in front of the writer thread.
pub(super) struct Writer {
    jobs: Sender<Box<dyn WriteJob>>,
    #[cfg_attr(not(test), allow(dead_code))]
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread on `conn`; it stops when the `Writer` is dropped.
    pub(super) fn start(conn: Arc<Mutex<Connection>>) -> std::io::Result<Writer> {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn WriteJob>>();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&commits);
        std::thread::Builder::new().name("som-sqlite-writer".into()).spawn(move || run(&conn, &queue, &counted))?;
        Ok(Writer { jobs, commits })
    }

    /// Transactions committed so far (each holds one batch).
    #[cfg(test)]
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Queues `write` and waits for the commit of the batch that contains it.
    pub(super) async fn write<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(Job { write, reply }))
            .map_err(|_| Error::Internal("the sqlite writer has stopped".into()))?;
        answer.await.map_err(|_| Error::Internal("the sqlite writer dropped a write".into()))?
    }
}

fn run(conn: &Mutex<Connection>, queue: &Receiver<Box<dyn WriteJob>>, commits: &AtomicU64) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<Box<dyn Reply>> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut conn = lock(conn);
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                for job in batch.drain(..) {
                    job.refuse(database_error(&e));
                }
                continue;
            }
        };
        replies.extend(batch.drain(..).map(|job| job.run(&tx)));
        metrics::histogram!("som_sqlite_commit_batch").record(replies.len() as f64);
        let committed = tx.commit();
        drop(conn);
        commits.fetch_add(1, Ordering::Relaxed);
        for reply in replies.drain(..) {
            reply.send(committed.as_ref().map(|_| ()));
        }
    }
}
