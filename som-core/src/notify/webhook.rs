//! Signed webhooks: each notification is POSTed as JSON to the configured URLs with a
//! `SOM-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">` header, in the style of Stripe's.
//! Receivers check it with [`verify_signature`]. 2xx is delivered, 5xx / timeouts / connection
//! failures are retried through the outbox, other statuses are permanent.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use super::{Notification, Notifier, NotifyError};
use crate::domain::Message;
use crate::error::{Error, Result};
pub use crate::signature::{SignatureError, sign, verify_signature};
use crate::util::Secret;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "SOM-Signature";

/// Posts notifications to configured URLs.
#[derive(Clone)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    urls: Vec<reqwest::Url>,
    secret: Secret,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.urls.iter().map(reqwest::Url::as_str).collect();
        f.debug_struct("WebhookNotifier").field("urls", &urls).field("secret", &"<redacted>").finish()
    }
}

/// The JSON body of a webhook call.
#[derive(Debug, Serialize)]
pub struct WebhookEvent<'a> {
    /// The event's stable id (its dedupe key): the same event always has the same id.
    pub id: &'a str,
    /// `order_created`, `payment_succeeded`, …
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The event's details.
    pub data: &'a Message,
}

impl WebhookNotifier {
    /// A notifier posting to `urls` (http or https only, from configuration) signed with
    /// `secret`, giving up on a call after `timeout`.
    pub fn new(urls: &[String], secret: Secret, timeout: Duration) -> Result<WebhookNotifier> {
        if urls.is_empty() {
            return Err(Error::invalid("SOM_WEBHOOK_URLS", "must name at least one URL for the webhook channel"));
        }
        if secret.expose().len() < 16 {
            return Err(Error::invalid("SOM_WEBHOOK_SECRET", "must be at least 16 bytes"));
        }
        let urls = urls
            .iter()
            .map(|u| {
                let url =
                    reqwest::Url::parse(u).map_err(|e| Error::invalid("SOM_WEBHOOK_URLS", format!("{u}: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(Error::invalid("SOM_WEBHOOK_URLS", format!("{u}: only http and https URLs")));
                }
                Ok(url)
            })
            .collect::<Result<Vec<_>>>()?;
        // reqwest is built without a bundled crypto provider; use ring, as the rest of SOM does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(format!("building the webhook client: {e}")))?;
        Ok(WebhookNotifier { client, urls, secret })
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn channel(&self) -> &str {
        "webhook"
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let event = WebhookEvent { id: &n.dedupe_key, kind: n.kind.as_str(), data: &n.message };
        let body = serde_json::to_vec(&event).map_err(|e| NotifyError::Permanent(format!("serializing: {e}")))?;
        for url in &self.urls {
            let signature = sign(self.secret.expose().as_bytes(), chrono::Utc::now().timestamp(), &body);
            let sent = self
                .client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature)
                .header("SOM-Event-Id", &n.dedupe_key)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) if resp.status().is_server_error() || resp.status().as_u16() == 429 => {
                    return Err(NotifyError::Transient(format!("{url} answered {}", resp.status())));
                }
                Ok(resp) => return Err(NotifyError::Permanent(format!("{url} answered {}", resp.status()))),
                Err(e) => return Err(NotifyError::Transient(format!("{url}: {e}"))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_from_configuration_are_accepted() {
        let secret = || Secret::new("0123456789abcdef");
        assert!(WebhookNotifier::new(&["ftp://x".into()], secret(), Duration::from_secs(1)).is_err());
        assert!(WebhookNotifier::new(&[], secret(), Duration::from_secs(1)).is_err());
        assert!(
            WebhookNotifier::new(&["http://127.0.0.1:9/hook".into()], Secret::new("short"), Duration::from_secs(1))
                .is_err()
        );
        assert!(
            WebhookNotifier::new(&["https://hooks.example.com/som".into()], secret(), Duration::from_secs(1)).is_ok()
        );
    }
}
