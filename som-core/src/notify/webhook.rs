//! Signed webhooks to endpoints managed over the API.
//!
//! Every event's outbox row on the `webhook` channel is *fanned out*: one outbox row per
//! enabled endpoint subscribed to its type, on the channel `webhook:<endpoint id>`, written in
//! one transaction (a repeat writes nothing new). Each of those rows is then delivered, retried
//! and dead-lettered on its own, so a slow or failing endpoint never holds back another, and
//! every attempt is recorded (status, latency, the start of the body, the error).
//!
//! A call is a `POST` of the event as a CloudEvent (structured JSON mode) with a
//! `SOM-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">` header in the style of
//! Stripe's; while a rotated secret's overlap lasts, a second `v1` made with the old secret is
//! sent too. Receivers check it with [`verify_signature`]. 2xx is delivered; 5xx, 408, 429,
//! timeouts and connection failures are retried through the outbox; other statuses (a redirect
//! included: they are never followed) are permanent. An endpoint failing continuously for
//! `SOM_WEBHOOK_DISABLE_AFTER` is disabled and staff are told.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::address::{CheckedResolver, check_ip, is_loopback_host};
use super::{Notification, Notifier, NotifyError};
use crate::clock::DynClock;
use crate::domain::{
    CLOUDEVENTS_JSON, CloudEvent, EndpointId, WEBHOOK_CHANNEL, WebhookDelivery, WebhookEndpoint, channel_endpoint,
};
use crate::error::{Error, Result};
pub use crate::signature::{SignatureError, sign, verify_signature};
use crate::storage::{DynStorage, NewDeliveryRecord, NewNotification};

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "SOM-Signature";

/// Longest endpoint URL, in characters.
pub const MAX_URL_CHARS: usize = 2048;

/// How the webhook channel behaves.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Longest time one call may take.
    pub timeout: Duration,
    /// Whether endpoints may be private, loopback or link-local addresses.
    pub allow_private: bool,
    /// An endpoint failing continuously this long is disabled.
    pub disable_after: Duration,
    /// Channels staff alerts go to (email, log) when an endpoint is disabled.
    pub alert_channels: Vec<String>,
}

/// Fans events out to webhook endpoints and delivers them.
#[derive(Clone)]
pub struct WebhookNotifier {
    storage: DynStorage,
    /// Calls only public addresses.
    strict: reqwest::Client,
    /// Calls any address (`SOM_WEBHOOK_ALLOW_PRIVATE`, or URLs the operator configured).
    open: reqwest::Client,
    settings: WebhookSettings,
    clock: DynClock,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Checks an endpoint URL: `https`, or `http` to this machine only; no private, loopback or
/// link-local address unless `allow_private`; at most [`MAX_URL_CHARS`]. A name is checked
/// again, by every address it resolves to, at each call.
pub fn check_endpoint_url(raw: &str, allow_private: bool) -> Result<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.chars().count() > MAX_URL_CHARS {
        return Err(Error::invalid("url", format!("must be 1 to {MAX_URL_CHARS} characters")));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| Error::invalid("url", format!("is not a URL: {e}")))?;
    let host = match url.host() {
        Some(h) => h,
        None => return Err(Error::invalid("url", "must name a host")),
    };
    let host_text = url.host_str().unwrap_or_default();
    let loopback = is_loopback_host(host_text);
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err(Error::invalid("url", "must be https (http is allowed to this machine only)")),
        other => return Err(Error::invalid("url", format!("must be https, not {other}"))),
    }
    if url.fragment().is_some() {
        return Err(Error::invalid("url", "must not have a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid("url", "must not carry credentials (user:password@); sign-in is by signature"));
    }
    let ip = match host {
        url::Host::Ipv4(v4) => Some(std::net::IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(std::net::IpAddr::V6(v6)),
        url::Host::Domain(_) if loopback => Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        url::Host::Domain(_) => None,
    };
    if let Some(ip) = ip {
        check_ip(ip, allow_private).map_err(|why| Error::invalid("url", why))?;
    }
    Ok(url.to_string())
}

impl WebhookNotifier {
    /// The webhook channel over `storage`.
    pub fn new(storage: DynStorage, settings: WebhookSettings, clock: DynClock) -> Result<WebhookNotifier> {
        // reqwest is built without a bundled crypto provider; use ring, as the rest of SOM does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = |allow_private: bool| {
            reqwest::Client::builder()
                .timeout(settings.timeout)
                .redirect(reqwest::redirect::Policy::none())
                // A proxy would resolve the endpoint's name itself, past the address check.
                .no_proxy()
                .user_agent(concat!("SOM-Webhooks/", env!("CARGO_PKG_VERSION")))
                .dns_resolver(CheckedResolver { allow_private })
                .build()
                .map_err(|e| Error::Internal(format!("building the webhook client: {e}")))
        };
        Ok(WebhookNotifier { strict: client(false)?, open: client(true)?, storage, settings, clock })
    }

    /// Writes one row per enabled endpoint subscribed to the event (that existed when it
    /// happened).
    async fn fan_out(&self, n: &Notification) -> Result<(), NotifyError> {
        if !n.kind.is_public() {
            return Err(NotifyError::Skipped("staff alerts are not sent to webhook endpoints".into()));
        }
        let mut rows = Vec::new();
        let mut after = None;
        loop {
            let page = self.storage.list_endpoints(after, 500).await.map_err(transient)?;
            after = page.last().map(|e| e.id);
            rows.extend(
                page.iter()
                    // An endpoint receives the events that happen once it exists; one made from
                    // SOM_WEBHOOK_URLS also those still waiting from before it was (an upgrade).
                    .filter(|e| {
                        e.enabled && e.events.matches(n.kind) && (e.from_config || e.created_at <= n.created_at)
                    })
                    .map(|e| NewNotification { channel: e.channel(), message: n.message.clone() }),
            );
            if page.len() < 500 {
                break;
            }
        }
        if rows.is_empty() {
            return Err(NotifyError::Skipped("no endpoint is subscribed to it".into()));
        }
        // Dated when the event happened: the CloudEvent's `time`, and due at once.
        let storage = self.storage.clone();
        let at = n.created_at;
        crate::storage::complete(&storage, move |s| async move { s.enqueue_notifications(rows, at).await })
            .await
            .map_err(transient)
    }

    async fn deliver(&self, id: EndpointId, n: &Notification) -> Result<(), NotifyError> {
        let endpoint = match self.storage.endpoint_by_id(id).await.map_err(transient)? {
            Some(e) if e.enabled => e,
            Some(_) => return Err(NotifyError::Skipped("the endpoint is disabled".into())),
            None => return Err(NotifyError::Skipped("the endpoint was deleted".into())),
        };
        let event = CloudEvent::of(n);
        let body = event.to_json();
        let now = self.clock.now();
        let allow_private = self.settings.allow_private || endpoint.from_config;
        let started = Instant::now();
        let outcome = self.call(&endpoint, &event, body, n.attempts, allow_private).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (succeeded, response_status, response_body, error) = match &outcome {
            Ok((status, body)) => (true, Some(*status), body.clone(), None),
            Err(Failure { status, body, error, .. }) => (false, *status, body.clone(), Some(error.clone())),
        };
        let disable = chrono::Duration::from_std(self.settings.disable_after)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .map(|since| {
                (since, format!("failing continuously for {}", crate::config::human(self.settings.disable_after)))
            });
        let record = NewDeliveryRecord {
            endpoint_id: endpoint.id,
            event_id: event.id.clone(),
            event_type: event.kind.clone(),
            attempt: n.attempts.max(1),
            succeeded,
            response_status,
            latency_ms,
            response_body,
            error,
            at: now,
            disable_failing_since: disable,
        };
        let storage = self.storage.clone();
        let disabled =
            match crate::storage::complete(&storage, move |s| async move { s.record_delivery(record).await }).await {
                Ok(disabled) => disabled,
                // Delivered is delivered: a record that could not be written does not make it a
                // failure to send again.
                Err(e) if outcome.is_ok() => {
                    tracing::warn!(endpoint = %endpoint.id, error = %e, "a delivery could not be recorded");
                    false
                }
                Err(e) => return Err(transient(e)),
            };
        if disabled {
            self.alert_disabled(&endpoint, n).await;
        }
        match outcome {
            Ok(_) => Ok(()),
            Err(Failure { retry: true, error, .. }) => Err(NotifyError::Transient(error)),
            Err(Failure { error, .. }) => Err(NotifyError::Permanent(error)),
        }
    }

    async fn call(
        &self,
        endpoint: &WebhookEndpoint,
        event: &CloudEvent,
        body: Vec<u8>,
        attempt: u32,
        allow_private: bool,
    ) -> Result<(u16, Option<String>), Failure> {
        let url = reqwest::Url::parse(&endpoint.url).map_err(|e| Failure::permanent(format!("bad URL: {e}")))?;
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(std::net::IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(std::net::IpAddr::V6(v6)),
            _ => None,
        };
        // Names are checked by the client's resolver; address literals never reach it.
        if let Some(ip) = literal {
            check_ip(ip, allow_private).map_err(Failure::permanent)?;
        }
        let timestamp = self.clock.now().timestamp();
        let signature = endpoint
            .signing_secrets(self.clock.now())
            .iter()
            .map(|secret| sign(secret.as_bytes(), timestamp, &body))
            .reduce(|first, other| format!("{first},{}", other.split_once(',').map_or("", |(_, v)| v)))
            .unwrap_or_default();
        let client = if allow_private { &self.open } else { &self.strict };
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, CLOUDEVENTS_JSON)
            .header(SIGNATURE_HEADER, signature)
            .header("SOM-Event-Id", &event.id)
            .header("SOM-Event-Type", &event.kind)
            .header("SOM-Delivery-Attempt", attempt.max(1).to_string())
            .body(body)
            .send()
            .await;
        let mut resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                // The resolver's refusal is several sources down the chain.
                let chain: Vec<String> = std::iter::successors(std::error::Error::source(&e), |s| s.source())
                    .map(ToString::to_string)
                    .collect();
                let refused = chain.iter().any(|why| why.contains(super::address::REFUSED));
                let error = match chain.last() {
                    Some(why) => format!("{e}: {why}"),
                    None => e.to_string(),
                };
                return Err(Failure { status: None, body: None, error, retry: !refused });
            }
        };
        let status = resp.status();
        let mut kept = Vec::new();
        while kept.len() < WebhookDelivery::BODY_LIMIT {
            match resp.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                _ => break,
            }
        }
        kept.truncate(WebhookDelivery::BODY_LIMIT);
        let text = (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned());
        if status.is_success() {
            return Ok((status.as_u16(), text));
        }
        let retry = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
        let mut error = format!("answered {status}");
        if status.is_redirection() {
            error.push_str(" (redirects are not followed; give the endpoint its final URL)");
        }
        Err(Failure { status: Some(status.as_u16()), body: text, error, retry })
    }

    /// Tells staff (by the alert channels) that `endpoint` was disabled.
    async fn alert_disabled(&self, endpoint: &WebhookEndpoint, n: &Notification) {
        let since = endpoint.failing_since.unwrap_or_else(|| self.clock.now());
        // The host only: receivers often carry a token in the path or query.
        let host =
            reqwest::Url::parse(&endpoint.url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
        let what = format!(
            "webhook endpoint {} (at {}) was disabled after failing continuously since {}; fix it, then enable it again \
             (PATCH /api/v1/webhook-endpoints/{}/ with enabled=true) and redeliver what it missed",
            endpoint.id,
            host,
            since.format("%Y-%m-%d %H:%M UTC"),
            endpoint.id
        );
        tracing::error!(endpoint = %endpoint.id, "{what}");
        metrics::counter!("som_webhook_endpoints_disabled_total").increment(1);
        let alert = format!("webhook_disabled:endpoint:{}:{}", endpoint.id, since.timestamp());
        let written = crate::system::write_staff_alert(
            &self.storage,
            &self.settings.alert_channels,
            n.message.order_id,
            None,
            &alert,
            &what,
            self.clock.now(),
        )
        .await;
        if let Err(e) = written {
            tracing::error!(endpoint = %endpoint.id, error = %e, "the staff alert could not be written to the outbox");
        }
    }
}

struct Failure {
    status: Option<u16>,
    body: Option<String>,
    error: String,
    retry: bool,
}

impl Failure {
    fn permanent(error: String) -> Failure {
        Failure { status: None, body: None, error, retry: false }
    }
}

fn transient(e: Error) -> NotifyError {
    NotifyError::Transient(e.to_string())
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn channel(&self) -> &str {
        WEBHOOK_CHANNEL
    }

    fn serves(&self, channel: &str) -> bool {
        channel == WEBHOOK_CHANNEL || channel_endpoint(channel).is_some()
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        match channel_endpoint(&n.channel) {
            Some(id) => self.deliver(id, n).await,
            None => self.fan_out(n).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_are_https_or_local_and_never_private_unless_allowed() {
        for ok in ["https://hooks.example.com/som", "https://93.184.216.34/x?y=1", "https://[2606:4700::1]/"] {
            assert!(check_endpoint_url(ok, false).is_ok(), "{ok}");
        }
        for refused in [
            "http://hooks.example.com/som",
            "ftp://hooks.example.com/",
            "https://10.0.0.1/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::ffff:192.168.0.1]/",
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "https://[fe80::1]/",
            "https://hooks.example.com/#frag",
            "https://user:pass@hooks.example.com/",
            "not a url",
            "",
        ] {
            assert!(check_endpoint_url(refused, false).is_err(), "{refused}");
        }
        assert!(check_endpoint_url("http://127.0.0.1:8080/hook", true).is_ok());
        assert!(check_endpoint_url("http://localhost:8080/hook", true).is_ok());
        assert!(check_endpoint_url("http://10.0.0.1/hook", true).is_err(), "http only to this machine");
        assert!(check_endpoint_url("https://10.0.0.1/hook", true).is_ok());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(check_endpoint_url(&long, false).is_err());
    }
}
