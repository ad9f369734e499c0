//! A thread of their own for the writer connections.
//!
//! A statement's answer is read only when the task waiting for it is next polled. On the
//! application's runtime that task waits its turn behind every other ready task: with 64
//! clients reading pages of orders flat out on two cores, each answer waited about 4 ms to be
//! read, a writer connection was held 8 ms for an order's two statements, and the eight writer
//! connections then carried at most 1,000 orders a second — orders queued 100 ms and more for a
//! connection while the database itself sat idle.
//!
//! So writer statements run on a runtime of their own, driven by one thread that the operating
//! system schedules beside the application's workers: their answers are read as they arrive,
//! and a connection is held for its round trips, not for the application's queue. The writes
//! themselves are short (a statement or two each, or a transaction of a few, the rows built
//! before they are sent), so one thread drives many connections. A write sent to the thread runs to its end even if its
//! caller stops waiting, as every write does (see `storage::complete`).

use std::cell::Cell;
use std::future::Future;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

thread_local! {
    /// Whether this thread is a driver's.
    static ON_A_DRIVER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the caller runs on a driver's thread (where connections opened are served by the
/// driver's runtime).
pub(super) fn on_a_driver() -> bool {
    ON_A_DRIVER.with(Cell::get)
}

/// The runtime writes are driven on; stops (dropping any task left) when dropped.
pub(super) struct Driver {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl Driver {
    /// Starts the thread, named `name`.
    pub(super) fn start(name: &str) -> Result<Driver> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("starting the {name} runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                ON_A_DRIVER.with(|on| on.set(true));
                runtime.block_on(async {
                    // Ends when the driver is dropped (its sender with it).
                    let _ = stopped.await;
                });
            })
            .map_err(|e| Error::Internal(format!("starting the {name} thread: {e}")))?;
        Ok(Driver { handle, _stop: stop })
    }

    /// Runs `task` on the thread in the background, for as long as the driver lives.
    pub(super) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.handle.spawn(task));
    }

    /// Runs `work` on the thread and waits for its result. If the caller stops waiting,
    /// `work` still runs to its end.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        match self.handle.spawn(work).await {
            Ok(result) => result,
            Err(e) => Err(Error::Internal(format!("postgres write task failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn work_runs_on_the_drivers_thread_and_returns_its_result() {
        let driver = Driver::start("som-test-driver").unwrap();
        let name = driver.run(async { Ok(std::thread::current().name().map(str::to_owned)) }).await.unwrap();
        assert_eq!(name.as_deref(), Some("som-test-driver"));
        let failed = driver.run(async { Err::<(), _>(Error::Conflict("no".into())) }).await;
        assert!(matches!(failed, Err(Error::Conflict(_))), "{failed:?}");
    }

    #[tokio::test]
    async fn work_runs_to_its_end_when_the_caller_stops_waiting() {
        let driver = Arc::new(Driver::start("som-test-driver").unwrap());
        let (started_tx, started) = oneshot::channel();
        let (release, released) = oneshot::channel::<()>();
        let (finished_tx, finished) = oneshot::channel();
        let work = async move {
            let _ = started_tx.send(());
            let _ = released.await;
            let _ = finished_tx.send(());
            Ok(())
        };
        // The caller gives up once the work has started.
        let caller = tokio::spawn({
            let driver = Arc::clone(&driver);
            async move { driver.run(work).await }
        });
        started.await.unwrap();
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        release.send(()).expect("the abandoned work is still waiting");
        // Dropped work would drop its sender, and this would fail rather than wait.
        tokio::time::timeout(Duration::from_secs(10), finished)
            .await
            .expect("the abandoned work finishes")
            .expect("the abandoned work ran to its end");
    }
}
