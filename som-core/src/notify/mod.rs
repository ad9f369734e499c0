//! Notifications: the [`Notifier`] trait, its implementations (log, SMTP, signed webhooks),
//! and the outbox [`Dispatcher`]
//! that delivers what storage wrote in the same transaction as each change.

#[cfg(feature = "webhook")]
pub mod address;
mod log;
pub mod outbox;
#[cfg(any(test, feature = "test-support"))]
mod recording;
#[cfg(feature = "smtp")]
mod smtp;
#[cfg(any(feature = "nats", feature = "amqp"))]
pub mod stream;
#[cfg(feature = "webhook")]
pub mod webhook;

use async_trait::async_trait;

pub use self::log::LogNotifier;
pub use outbox::{DispatchConfig, Dispatcher, DispatcherHandle, backoff_delay};
#[cfg(any(test, feature = "test-support"))]
pub use recording::{Delivery, RecordingNotifier};
#[cfg(feature = "smtp")]
pub use smtp::SmtpNotifier;
#[cfg(any(feature = "nats", feature = "amqp"))]
pub use stream::{STREAM_CHANNEL, StreamNotifier};
#[cfg(feature = "webhook")]
pub use webhook::{WebhookNotifier, WebhookSettings, check_endpoint_url, verify_signature};

/// What a notifier delivers: one outbox row.
pub use crate::storage::OutboxEntry as Notification;

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Worth retrying later (connection refused, SMTP 4xx, HTTP 5xx, timeout).
    #[error("{0}")]
    Transient(String),
    /// Will never succeed as it is (recipient rejected, HTTP 4xx): dead-lettered at once.
    #[error("{0}")]
    Permanent(String),
    /// Nothing to deliver on this channel (a user without an email address): recorded as
    /// skipped with the reason, not retried.
    #[error("{0}")]
    Skipped(String),
}

/// A delivery channel. Each channel has its own delivery state per event in the outbox.
#[async_trait]
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// The channel name this notifier delivers (`log`, `smtp`, `webhook`, `stream`).
    fn channel(&self) -> &str;

    /// Whether this notifier delivers rows of `channel`: its own, and for the webhook
    /// notifier also each endpoint's (`webhook:<id>`).
    fn serves(&self, channel: &str) -> bool {
        channel == self.channel()
    }

    /// Delivers one notification. Must be safe to call again for the same notification (the
    /// outbox delivers at least once); [`Notification::dedupe_key`] identifies repeats.
    async fn send(&self, notification: &Notification) -> Result<(), NotifyError>;

    /// Whether the dispatcher should hand this notifier its rows together
    /// ([`Notifier::send_batch`]) rather than one by one.
    fn sends_batches(&self) -> bool {
        false
    }

    /// Delivers several notifications of one channel; one outcome per notification, in order.
    /// By default one after the other with [`Notifier::send`].
    async fn send_batch(&self, notifications: &[Notification]) -> Vec<Result<(), NotifyError>> {
        let mut outcomes = Vec::with_capacity(notifications.len());
        for n in notifications {
            outcomes.push(self.send(n).await);
        }
        outcomes
    }
}
