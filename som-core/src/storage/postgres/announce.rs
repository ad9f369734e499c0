//! Telling other processes' dispatchers that outbox rows were committed (this process's own
//! are woken directly by `OrderSystem`).
//!
//! `NOTIFY` inside the transaction that writes the rows would be exact, but PostgreSQL makes
//! every transaction that notifies take one database-wide lock from its commit until it has
//! ended, WAL flush included: concurrent orders would then commit one flush at a time instead
//! of sharing flushes. So the rows are announced after their commit instead, by one `NOTIFY`
//! sent on a connection of its own. Announcements coalesce: while a `NOTIFY` is waiting to be
//! sent, a further announcement adds nothing (the waiting one is sent after both commits), and
//! one is sent at most every [`PACE`], so that a steady stream of orders costs the server and
//! every listener a few `NOTIFY`s a second rather than one per order. A `NOTIFY` that cannot be
//! sent is logged; other processes then find the rows at their next poll.
//!
//! Each process notifies with a payload of its own, so that its listener can ignore its own
//! announcements.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::mpsc;

use super::OUTBOX_CHANNEL;
use super::statements::Statements;

/// The shortest time between two `NOTIFY`s: what an announcement may wait at most.
const PACE: Duration = Duration::from_millis(20);

pub(super) struct Announcer {
    /// Asks the sending task for one `NOTIFY`; holds at most one request.
    remote: mpsc::Sender<()>,
    /// The payload this process notifies with.
    pub(super) origin: String,
}

impl Announcer {
    /// An announcer that sends its `NOTIFY`s on `writers` (from a task that ends when the
    /// announcer is dropped).
    pub(super) fn new(writers: Weak<Statements>) -> Announcer {
        let (remote, requests) = mpsc::channel(1);
        let origin = crate::util::random_token(12);
        tokio::spawn(send_notifies(requests, writers, origin.clone()));
        Announcer { remote, origin }
    }

    /// Announces outbox rows just committed.
    pub(super) fn announce(&self) {
        // Full: a NOTIFY is already waiting to be sent, and it is sent after this commit too.
        let _ = self.remote.try_send(());
    }
}

async fn send_notifies(mut requests: mpsc::Receiver<()>, writers: Weak<Statements>, origin: String) {
    while requests.recv().await.is_some() {
        let Some(writers) = writers.upgrade() else { return };
        let sent = async {
            let mut conn = writers.get().await?;
            let done =
                sqlx::query("SELECT pg_notify($1, $2)").bind(OUTBOX_CHANNEL).bind(&origin).execute(&mut *conn).await;
            conn.finish(done)
        };
        if let Err(e) = sent.await {
            tracing::warn!(error = %e, "could not announce new notifications to other processes; they poll for them");
        }
        drop(writers);
        tokio::time::sleep(PACE).await;
    }
}
