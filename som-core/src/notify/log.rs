//! The default channel: writes each notification through `tracing`.

use async_trait::async_trait;

use super::{Notification, Notifier, NotifyError};

/// Logs each notification at INFO level (target `som::notify`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    fn channel(&self) -> &str {
        "log"
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        tracing::info!(
            target: "som::notify",
            id = %n.id,
            dedupe_key = %n.dedupe_key,
            to = n.recipient.as_deref().unwrap_or("-"),
            subject = %n.message.subject,
            "{}",
            n.message.text
        );
        Ok(())
    }
}
