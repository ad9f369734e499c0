//! Telling other processes' dispatchers that outbox rows were committed (this process's own
//! are woken directly by `OrderSystem`).
//!
//! `NOTIFY` inside the transaction that writes the rows would be exact, but PostgreSQL makes
//! every transaction that notifies take one database-wide lock from its commit until it has
//! ended, WAL flush included: concurrent orders would then commit one flush at a time instead
//! of sharing flushes. So the rows are announced after their commit instead, by a `NOTIFY` on
//! a connection of its own, at most one every [`PACE`]:
//!
//! - the first announcement after a quiet [`PACE`] sends its `NOTIFY` itself, before the write
//!   that announces returns (so a one-off command, like the CLI's, never exits with its
//!   announcement unsent);
//! - announcements within [`PACE`] of a `NOTIFY` coalesce into one, sent by a background task
//!   when the pace allows, after every commit that asked for it.
//!
//! A steady stream of orders thus costs the server and every listener at most 50 `NOTIFY`s a
//! second rather than one per order. A `NOTIFY` that cannot be sent is logged; other processes
//! then find the rows at their next poll. Each process notifies with a payload of its own, so
//! that its listener can ignore its own announcements.

use crate::util::lock;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::OUTBOX_CHANNEL;
use super::statements::Statements;

/// The shortest time between two `NOTIFY`s: what an announcement may wait at most.
const PACE: Duration = Duration::from_millis(20);

pub(super) struct Announcer {
    state: Arc<Mutex<Pace>>,
    /// Wakes the background task for a coalesced `NOTIFY`.
    queue: mpsc::Sender<()>,
    writers: Weak<Statements>,
    /// The payload this process notifies with.
    pub(super) origin: String,
}

#[derive(Default)]
struct Pace {
    /// When the last `NOTIFY` was sent (or began to be).
    last: Option<Instant>,
    /// Whether a coalesced `NOTIFY` is waiting for the background task.
    queued: bool,
}

impl Announcer {
    /// An announcer that sends its `NOTIFY`s on `writers` (the background task ends when the
    /// announcer is dropped).
    pub(super) fn new(writers: Weak<Statements>) -> Announcer {
        let (queue, requests) = mpsc::channel(1);
        let origin = crate::util::random_token(12);
        let state = Arc::new(Mutex::new(Pace::default()));
        tokio::spawn(send_queued(requests, Arc::clone(&state), writers.clone(), origin.clone()));
        Announcer { state, queue, writers, origin }
    }

    /// Announces outbox rows just committed. May borrow a writer connection: call it holding
    /// none.
    pub(super) async fn announce(&self) {
        {
            let mut pace = lock(&self.state);
            if pace.queued {
                // The queued NOTIFY is sent after this commit too.
                return;
            }
            let now = Instant::now();
            if pace.last.is_some_and(|last| now.duration_since(last) < PACE) {
                pace.queued = true;
                let _ = self.queue.try_send(());
                return;
            }
            pace.last = Some(now);
        }
        notify(&self.writers, &self.origin).await;
    }
}

async fn send_queued(
    mut requests: mpsc::Receiver<()>,
    state: Arc<Mutex<Pace>>,
    writers: Weak<Statements>,
    origin: String,
) {
    while requests.recv().await.is_some() {
        let last = lock(&state).last;
        if let Some(last) = last {
            tokio::time::sleep_until((last + PACE).into()).await;
        }
        {
            let mut pace = lock(&state);
            pace.queued = false;
            pace.last = Some(Instant::now());
        }
        notify(&writers, &origin).await;
    }
}

/// Sends one `NOTIFY` on a writer connection.
async fn notify(writers: &Weak<Statements>, origin: &str) {
    let Some(writers) = writers.upgrade() else { return };
    let origin = origin.to_owned();
    let sent = writers.run(|mut conn| async move {
        let done = sqlx::query("SELECT pg_notify($1, $2)").bind(OUTBOX_CHANNEL).bind(origin).execute(&mut *conn).await;
        conn.finish(done)
    });
    if let Err(e) = sent.await {
        tracing::warn!(error = %e, "could not announce new notifications to other processes; they poll for them");
    }
}
