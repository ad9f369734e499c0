//! The default channel: writes each notification through `tracing`.

use async_trait::async_trait;

use super::{Notification, Notifier, NotifyError};

/// `a***@example.com`: enough to tell recipients apart in a log, not enough to harvest them.
pub fn mask_email(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().map_or_else(String::new, |c| c.to_string());
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Logs each notification at INFO level (target `som::notify`), recipients masked.
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
            to = %n.recipient.as_deref().map_or_else(|| "-".to_owned(), mask_email),
            subject = %n.message.subject,
            "{}",
            n.message.text
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::mask_email;

    #[test]
    fn email_addresses_are_masked() {
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(mask_email("@example.com"), "***@example.com");
        assert_eq!(mask_email("not-an-address"), "***");
    }
}
