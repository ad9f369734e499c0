//! The outbox dispatcher: claims due rows with a lease, delivers them, and marks them sent (a
//! batch's delivered rows together), reschedules them with exponential backoff and jitter, or
//! dead-letters them.
//!
//! Rows are claimed, not locked: a dispatcher that dies mid-batch leaves its rows leased, and
//! they become claimable again when the lease runs out. Delivery is therefore at least once;
//! the dedupe key lets receivers recognise a repeat.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::{Notifier, NotifyError};
use crate::error::Result;
use crate::storage::DynStorage;

/// How often, at most, delivered rows wait for the end of their batch to be marked sent.
const MARK_EVERY: Duration = Duration::from_secs(1);

/// How long a dispatcher that just delivered a part batch waits before claiming again.
const GATHER: Duration = Duration::from_millis(20);

pub use crate::config::DispatchConfig;

/// The delay before retrying after `attempts` failed attempts (1-based): "equal jitter", a
/// uniformly random value in `[d/2, d]` where `d = min(cap, base × 2^(attempts-1))`. Delays
/// never shrink from one attempt to the next while below the cap.
pub fn backoff_delay(attempts: u32, base: Duration, cap: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).min(31);
    let full = base.saturating_mul(1u32 << exp).min(cap);
    let half = full / 2;
    let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let jitter = if jitter_nanos == 0 { 0 } else { rand::random_range(0..=jitter_nanos) };
    half + Duration::from_nanos(jitter)
}

/// Delivers outbox rows through the configured notifiers.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    storage: DynStorage,
    notifiers: Arc<HashMap<String, Arc<dyn Notifier>>>,
    config: DispatchConfig,
    session_retention: Option<Duration>,
    delivery_retention: Option<Duration>,
    clock: crate::clock::DynClock,
}

impl Dispatcher {
    /// A dispatcher over `storage`, delivering each row through the notifier of its channel.
    pub fn new(storage: DynStorage, notifiers: &[Arc<dyn Notifier>], config: DispatchConfig) -> Self {
        let notifiers = notifiers.iter().map(|n| (n.channel().to_owned(), Arc::clone(n))).collect();
        let clock = crate::clock::SystemClock::shared();
        Dispatcher {
            storage,
            notifiers: Arc::new(notifiers),
            config,
            session_retention: None,
            delivery_retention: None,
            clock,
        }
    }

    /// Reads the time (claims, leases, retry times) from `clock`.
    pub fn with_clock(mut self, clock: crate::clock::DynClock) -> Self {
        self.clock = clock;
        self
    }

    /// Also forgets, in its periodic upkeep, expired refresh tokens and sessions that started
    /// more than `retention` ago.
    pub fn with_session_retention(mut self, retention: Duration) -> Self {
        self.session_retention = Some(retention);
        self
    }

    /// Also forgets, in its periodic upkeep, webhook delivery records older than `retention`.
    pub fn with_delivery_retention(mut self, retention: Duration) -> Self {
        self.delivery_retention = Some(retention);
        self
    }

    /// The notifier of rows on `channel`.
    fn notifier_for(&self, channel: &str) -> Option<&Arc<dyn Notifier>> {
        self.notifiers.get(channel).or_else(|| self.notifiers.values().find(|n| n.serves(channel)))
    }

    /// One round: claims up to a batch of due rows, delivers them one by one, and marks those
    /// delivered sent together, in one write (every second, when deliveries are slow). Returns
    /// how many rows it handled (delivered, rescheduled or dead-lettered). When `stop` turns
    /// true mid-batch, the rows not yet attempted are released for others.
    pub async fn run_once(&self, stop: Option<&watch::Receiver<bool>>) -> Result<usize> {
        let token = crate::util::random_token(16);
        let now = self.clock.now();
        let lease = chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::seconds(60));
        let (until, batch, claim) = (now + lease, self.config.batch_size, token.clone());
        let rows = self.write(move |s| async move { s.claim_notifications(now, until, batch, &claim).await }).await?;
        let mut delivered = Vec::with_capacity(rows.len());
        // No delivery starts in the last quarter of the lease: one that did could outlast it
        // (a slow webhook, a slow mail server), and another dispatcher would claim the rest of
        // the batch and deliver it too. What is left is released for the next round.
        let start_before = until - lease / 4;
        let handled = self.deliver(rows, &token, stop, start_before, &mut delivered).await;
        // Also when recording another row's outcome failed: these were delivered.
        self.mark_sent(&mut delivered, &token).await?;
        handled
    }

    /// Marks `delivered` sent (and empties it); a row whose claim was lost meanwhile is left
    /// to its new claimant, which will deliver it again.
    async fn mark_sent(&self, delivered: &mut Vec<crate::domain::NotificationId>, token: &str) -> Result<()> {
        if delivered.is_empty() {
            return Ok(());
        }
        let (ids, token, at) = (delivered.clone(), token.to_owned(), self.clock.now());
        let marked = self.write(move |s| async move { s.mark_notifications_sent(&ids, &token, at).await }).await?;
        if marked < delivered.len() as u64 {
            tracing::warn!(
                delivered = delivered.len(),
                marked,
                "claims lost (expired, or taken back by a redelivery) before delivered notifications were marked sent"
            );
        }
        delivered.clear();
        Ok(())
    }

    /// Delivers claimed `rows`, recording failures and skips as they happen and collecting the
    /// delivered rows' ids in `delivered`. Rows of a notifier that sends in batches (the event
    /// stream: publish all, then wait for every acknowledgement) go first, one batch per
    /// channel; the others one by one, in order.
    async fn deliver(
        &self,
        rows: Vec<crate::domain::OutboxEntry>,
        token: &str,
        stop: Option<&watch::Receiver<bool>>,
        start_before: chrono::DateTime<Utc>,
        delivered: &mut Vec<crate::domain::NotificationId>,
    ) -> Result<usize> {
        let mut handled = 0;
        let mut marked_at = tokio::time::Instant::now();
        let (batched, single): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|r| self.notifier_for(&r.channel).is_some_and(|n| n.sends_batches()));
        let mut groups: Vec<(Arc<dyn Notifier>, Vec<crate::domain::OutboxEntry>)> = Vec::new();
        for row in batched {
            match groups.iter_mut().find(|(_, g)| g[0].channel == row.channel) {
                Some((_, group)) => group.push(row),
                None => {
                    if let Some(n) = self.notifier_for(&row.channel) {
                        groups.push((Arc::clone(n), vec![row]));
                    }
                }
            }
        }
        let mut pending_groups = groups.into_iter();
        for (notifier, group) in pending_groups.by_ref() {
            if stop.is_some_and(|s| *s.borrow()) || self.clock.now() >= start_before {
                for row in group {
                    self.release(row.id, token).await?;
                }
                break;
            }
            let outcomes = notifier.send_batch(&group).await;
            for (row, outcome) in group.into_iter().zip(outcomes) {
                self.settle(&row, outcome, token, delivered, &mut marked_at).await?;
                handled += 1;
            }
        }
        for (_, rest) in pending_groups {
            for row in rest {
                self.release(row.id, token).await?;
            }
        }
        let mut rows = single.into_iter();
        for row in rows.by_ref() {
            if stop.is_some_and(|s| *s.borrow()) || self.clock.now() >= start_before {
                self.release(row.id, token).await?;
                break;
            }
            let outcome = match self.notifier_for(&row.channel) {
                Some(n) => n.send(&row).await,
                None => Err(NotifyError::Transient(format!("no notifier configured for channel {:?}", row.channel))),
            };
            self.settle(&row, outcome, token, delivered, &mut marked_at).await?;
            handled += 1;
        }
        for rest in rows {
            self.release(rest.id, token).await?;
        }
        Ok(handled)
    }

    /// Records one row's outcome: delivered (marked with the batch, or at once every second
    /// while deliveries are slow), to retry, skipped, or dead.
    async fn settle(
        &self,
        row: &crate::domain::OutboxEntry,
        outcome: Result<(), NotifyError>,
        token: &str,
        delivered: &mut Vec<crate::domain::NotificationId>,
        marked_at: &mut tokio::time::Instant,
    ) -> Result<()> {
        match outcome {
            Ok(()) => {
                delivered.push(row.id);
                tracing::debug!(id = %row.id, key = %row.dedupe_key, channel = %row.channel, "notification delivered");
                // Slow deliveries (mail, webhooks) are marked as they go, so that a crash or an
                // expiring lease repeats at most the last second's worth.
                if marked_at.elapsed() >= MARK_EVERY {
                    self.mark_sent(delivered, token).await?;
                    *marked_at = tokio::time::Instant::now();
                }
            }
            Err(NotifyError::Transient(error)) if row.attempts < self.config.max_attempts => {
                let delay = backoff_delay(row.attempts, self.config.backoff_base, self.config.backoff_cap);
                let retry_at = self.clock.now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
                tracing::warn!(id = %row.id, attempts = row.attempts, ?delay, %error, "notification failed; will retry");
                self.failed(row.id, token, error, Some(retry_at)).await?;
            }
            Err(NotifyError::Skipped(reason)) => {
                tracing::info!(id = %row.id, channel = %row.channel, %reason, "notification skipped");
                let (id, token, at) = (row.id, token.to_owned(), self.clock.now());
                self.write(move |s| async move { s.mark_notification_skipped(id, &token, &reason, at).await }).await?;
            }
            Err(NotifyError::Transient(error) | NotifyError::Permanent(error)) => {
                tracing::error!(id = %row.id, attempts = row.attempts, %error, "notification dead-lettered");
                self.failed(row.id, token, error, None).await?;
            }
        }
        Ok(())
    }

    /// Runs a storage write to its end even if the dispatcher is stopped meanwhile.
    async fn write<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(crate::storage::DynStorage) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        crate::storage::complete(&self.storage, f).await
    }

    /// Hands a claimed row back for the next round.
    async fn release(&self, id: crate::domain::NotificationId, token: &str) -> Result<bool> {
        let token = token.to_owned();
        self.write(move |s| async move { s.release_notification(id, &token).await }).await
    }

    /// Records a failed delivery: retried at `retry_at`, or dead without one.
    async fn failed(
        &self,
        id: crate::domain::NotificationId,
        token: &str,
        error: String,
        retry_at: Option<chrono::DateTime<Utc>>,
    ) -> Result<bool> {
        let (token, at) = (token.to_owned(), self.clock.now());
        self.write(move |s| async move { s.mark_notification_failed(id, &token, &error, retry_at, at).await }).await
    }

    /// Runs rounds until stopped: immediately when `wake` is notified (after a commit that wrote
    /// outbox rows), otherwise every poll interval. Also prunes expired idempotency keys.
    pub fn spawn(self, wake: Arc<Notify>) -> DispatcherHandle {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut last_prune = tokio::time::Instant::now();
            loop {
                if *stop_rx.borrow() {
                    break;
                }
                match self.run_once(Some(&stop_rx)).await {
                    Ok(n) if n > 0 => {
                        // More may be waiting. Unless the batch was full, let a few more rows
                        // arrive first: under a steady stream of orders each round then takes
                        // several, and the storage writes per notification (claim, mark sent)
                        // fall accordingly.
                        if n < self.config.batch_size as usize {
                            tokio::select! {
                                () = tokio::time::sleep(GATHER) => {}
                                _ = stop_rx.changed() => {}
                            }
                        } else {
                            tokio::task::yield_now().await;
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "outbox round failed"),
                }
                if last_prune.elapsed() > Duration::from_secs(60) {
                    last_prune = tokio::time::Instant::now();
                    let now = self.clock.now();
                    if let Err(e) = self.write(move |s| async move { s.prune_idempotency(now).await }).await {
                        tracing::warn!(error = %e, "pruning idempotency keys failed");
                    }
                    if let Some(before) = self.delivery_retention.and_then(|r| ago(self.clock.now(), r)) {
                        match self.write(move |s| async move { s.prune_deliveries(before).await }).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(records = n, "pruned old webhook delivery records"),
                            Err(e) => tracing::warn!(error = %e, "pruning webhook delivery records failed"),
                        }
                    }
                    if let Some(retention) = self.session_retention {
                        let now = self.clock.now();
                        let before = chrono::Duration::from_std(retention)
                            .ok()
                            .and_then(|d| now.checked_sub_signed(d))
                            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
                        if let Err(e) = self.write(move |s| async move { s.prune_sessions(now, before).await }).await {
                            tracing::warn!(error = %e, "pruning sessions failed");
                        }
                    }
                }
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                    _ = stop_rx.changed() => {}
                }
            }
        });
        DispatcherHandle { stop: stop_tx, task: Some(task), companions: Vec::new() }
    }
}

/// `now - d`, unless that is out of range.
fn ago(now: chrono::DateTime<Utc>, d: Duration) -> Option<chrono::DateTime<Utc>> {
    chrono::Duration::from_std(d).ok().and_then(|d| now.checked_sub_signed(d))
}

/// A running dispatcher. [`DispatcherHandle::shutdown`] stops it gracefully; dropping the
/// handle aborts it at once (its claimed rows come back when their lease expires).
#[derive(Debug)]
pub struct DispatcherHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// Background chores that live and stop with the dispatcher (finishing pending refunds).
    companions: Vec<JoinHandle<()>>,
}

impl DispatcherHandle {
    /// Runs `chore` alongside the dispatcher; it is told to stop (its receiver changes to
    /// `true`) when the dispatcher is shut down, and aborted when the handle is dropped.
    pub(crate) fn with_companion<F, Fut>(mut self, chore: F) -> Self
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.companions.push(tokio::spawn(chore(self.stop.subscribe())));
        self
    }

    /// Finishes the delivery in progress, releases the rest of the batch, and waits for the
    /// dispatcher to stop.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "dispatcher task ended abnormally");
        }
        for chore in std::mem::take(&mut self.companions) {
            let _ = chore.await;
        }
    }
}

impl Drop for DispatcherHandle {
    fn drop(&mut self) {
        for chore in &self.companions {
            chore.abort();
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_bounds_and_respects_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        let mut previous_max = Duration::ZERO;
        for attempt in 1..=10 {
            let d = backoff_delay(attempt, base, cap);
            let full = base.saturating_mul(1 << (attempt - 1)).min(cap);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?} not in [{:?}, {full:?}]", full / 2);
            assert!(full / 2 >= previous_max / 2);
            previous_max = full;
        }
        assert!(backoff_delay(u32::MAX, base, cap) <= cap);
        assert_eq!(backoff_delay(1, Duration::ZERO, cap), Duration::ZERO);
    }
}
