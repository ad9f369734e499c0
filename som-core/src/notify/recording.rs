//! A notifier for tests: records every delivery and fails on demand.

use crate::util::lock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::{Notification, Notifier, NotifyError};

/// One call to [`RecordingNotifier::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The notification as delivered.
    pub notification: Notification,
    /// When the attempt was made.
    pub at: DateTime<Utc>,
    /// Whether it was reported delivered.
    pub delivered: bool,
}

/// Records deliveries; scripted failures come first, then `fail_always`, then success.
#[derive(Debug)]
pub struct RecordingNotifier {
    channel: String,
    attempts: Mutex<Vec<Delivery>>,
    script: Mutex<VecDeque<NotifyError>>,
    always: Mutex<Option<NotifyError>>,
    changed: Notify,
}

impl Default for RecordingNotifier {
    fn default() -> Self {
        RecordingNotifier::new("log")
    }
}

impl RecordingNotifier {
    /// A recorder for `channel`.
    pub fn new(channel: &str) -> Self {
        RecordingNotifier {
            channel: channel.to_owned(),
            attempts: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            always: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    /// The next `n` sends fail with `error`.
    pub fn fail_next(&self, n: usize, error: NotifyError) {
        lock(&self.script).extend(std::iter::repeat_n(error, n));
    }

    /// Every send fails with `error` until called again with `None`.
    pub fn fail_always(&self, error: Option<NotifyError>) {
        *lock(&self.always) = error;
    }

    /// Every attempt so far, in order.
    pub fn attempts(&self) -> Vec<Delivery> {
        lock(&self.attempts).clone()
    }

    /// The successful deliveries so far, in order.
    pub fn delivered(&self) -> Vec<Notification> {
        lock(&self.attempts).iter().filter(|d| d.delivered).map(|d| d.notification.clone()).collect()
    }

    /// Waits until at least `count` deliveries succeeded, or `timeout` passed; the count reached.
    pub async fn wait_for_deliveries(&self, count: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let seen = self.delivered().len();
            if seen >= count {
                return seen;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.delivered().len();
            }
        }
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    fn channel(&self) -> &str {
        &self.channel
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let failure = lock(&self.script).pop_front().or_else(|| lock(&self.always).clone());
        lock(&self.attempts).push(Delivery { notification: n.clone(), at: Utc::now(), delivered: failure.is_none() });
        self.changed.notify_waiters();
        failure.map_or(Ok(()), Err)
    }
}
