//! Signed webhooks: each notification is POSTed as JSON to the configured URLs with a
//! `SOM-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">` header, in the style of Stripe's.
//! Receivers check it with [`verify_signature`]. 2xx is delivered, 5xx / timeouts / connection
//! failures are retried through the outbox, other statuses are permanent.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::{Notification, Notifier, NotifyError};
use crate::domain::Message;
use crate::error::{Error, Result};
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

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<unix>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", crate::util::hex(&mac(secret, timestamp, body).finalize().into_bytes()))
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=…,v1=…`.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is further from now than the tolerance (either way).
    #[error("timestamp outside the tolerance")]
    Stale,
    /// No `v1` signature matches the body.
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a `SOM-Signature` header against the raw request body: the timestamp must be within
/// `tolerance` of now (in the past or the future) and one `v1` value must equal the HMAC,
/// compared in constant time.
pub fn verify_signature(secret: &[u8], header: &str, body: &[u8], tolerance: Duration) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => signatures.push(decode_hex(v).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age = chrono::Utc::now().timestamp().checked_sub(timestamp).map(i64::unsigned_abs);
    if age.is_none_or(|age| age > tolerance.as_secs()) {
        return Err(SignatureError::Stale);
    }
    if signatures.iter().any(|sig| mac(secret, timestamp, body).verify_slice(sig).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
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
    fn signatures_verify_and_reject_tampering_and_old_timestamps() {
        let secret = b"whsec_0123456789abcdef";
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"id":"order_created:order:1"}"#;
        let header = sign(secret, now, body);
        let tol = Duration::from_secs(300);
        assert_eq!(verify_signature(secret, &header, body, tol), Ok(()));
        assert_eq!(verify_signature(secret, &header, b"{\"id\":\"tampered\"}", tol), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(b"other secret", &header, body, tol), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(secret, &sign(secret, now - 600, body), body, tol), Err(SignatureError::Stale));
        assert_eq!(verify_signature(secret, &sign(secret, now + 600, body), body, tol), Err(SignatureError::Stale));
        assert_eq!(verify_signature(secret, "v1=abcd", body, tol), Err(SignatureError::Malformed));
        assert_eq!(verify_signature(secret, "t=1", body, tol), Err(SignatureError::Malformed));
        assert_eq!(verify_signature(secret, "t=x,v1=zz", body, tol), Err(SignatureError::Malformed));
        // Timestamps at the ends of the range are stale, never an arithmetic overflow.
        for t in [i64::MIN, i64::MIN + 1, i64::MAX] {
            assert_eq!(
                verify_signature(secret, &format!("t={t},v1=abcd"), body, tol),
                Err(SignatureError::Stale),
                "t={t}"
            );
        }
        let rotated = format!("{header},v1={}", "00".repeat(32));
        assert_eq!(verify_signature(secret, &rotated, body, tol), Ok(()), "any matching v1 is accepted");
    }

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
