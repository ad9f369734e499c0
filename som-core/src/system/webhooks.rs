//! Webhook endpoints managed by staff: make, list, change, delete, rotate the secret, read the
//! delivery log, and redeliver an event.

use std::time::Duration;

use super::*;
use crate::domain::{
    DeliveryId, EndpointId, EventFilter, EventKind, WEBHOOK_CHANNEL, WebhookDelivery, WebhookEndpoint,
    endpoint_description, new_endpoint_secret,
};
use crate::notify::check_endpoint_url;
use crate::storage::{DeliveryQuery, EndpointChange, NewEndpointRecord};

/// Longest overlap a rotated secret may keep signing.
pub const MAX_SECRET_OVERLAP: Duration = Duration::from_secs(7 * 86_400);

/// The overlap of a rotation that names none.
pub const DEFAULT_SECRET_OVERLAP: Duration = Duration::from_secs(86_400);

/// Longest event id looked up.
pub const MAX_EVENT_ID_CHARS: usize = 300;

/// Most endpoints one system keeps.
pub const MAX_ENDPOINTS: u32 = 100;

/// A new endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointInput {
    /// Where events are POSTed: `https://…` (`http://` to this machine only).
    pub url: String,
    /// Event types (`som.order.created`) or `["*"]`.
    pub events: Vec<String>,
    /// What it is for.
    pub description: Option<String>,
}

/// A change to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPatch {
    /// A new URL.
    pub url: Option<String>,
    /// A new filter.
    pub events: Option<Vec<String>>,
    /// A new description (`Some(None)` or an empty one clears it).
    pub description: Option<Option<String>>,
    /// Enable (again, after SOM disabled it) or disable.
    pub enabled: Option<bool>,
}

/// Which delivery records to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryListQuery {
    /// `succeeded` or `failed`.
    pub status: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only this event.
    pub event_id: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<DeliveryId>,
    /// Page size (default 50, at most 1000).
    pub limit: Option<u32>,
}

/// What a redelivery queued.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Redelivery {
    /// The event.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// The endpoints it was queued for (again); one whose delivery is still waiting for its
    /// turn is not sent it twice.
    pub endpoints: Vec<EndpointId>,
}

impl OrderSystem {
    fn staff_only(caller: Caller, what: &str) -> Result<()> {
        if caller.is_staff() { Ok(()) } else { Err(Error::Forbidden(format!("only staff may {what}"))) }
    }

    /// Whether events are delivered to webhook endpoints (`webhook` in `SOM_NOTIFIER`).
    pub fn webhooks_enabled(&self) -> bool {
        self.inner.channels.iter().any(|c| c == WEBHOOK_CHANNEL)
    }

    fn allow_private(&self) -> bool {
        self.inner.config.webhook_allow_private
    }

    /// Makes an endpoint; it receives the events that happen from now on. Its secret is in
    /// the result, and never shown again (rotate it if it is lost). Staff only.
    pub async fn create_webhook_endpoint(&self, caller: Caller, input: EndpointInput) -> Result<WebhookEndpoint> {
        Self::staff_only(caller, "manage webhook endpoints")?;
        let mut errors = ValidationErrors::default();
        let url = check_endpoint_url(&input.url, self.allow_private()).map_err(|e| errors.take(e)).ok();
        let events = EventFilter::parse(&input.events).map_err(|e| errors.take(e)).ok();
        let description = endpoint_description(input.description.as_deref()).map_err(|e| errors.take(e)).ok();
        errors.into_result()?;
        let (Some(url), Some(events), Some(description)) = (url, events, description) else {
            return Err(Error::Internal("validated endpoint fields missing".into()));
        };
        if !self.webhooks_enabled() {
            return Err(Error::Conflict(
                "webhook delivery is off on this server: add `webhook` to SOM_NOTIFIER to deliver to endpoints".into(),
            ));
        }
        if self.inner.storage.list_endpoints(None, MAX_ENDPOINTS).await?.len() >= MAX_ENDPOINTS as usize {
            return Err(Error::Conflict(format!("at most {MAX_ENDPOINTS} webhook endpoints; delete one first")));
        }
        let record = NewEndpointRecord {
            url,
            events,
            description,
            secret: new_endpoint_secret(),
            from_config: false,
            at: self.now(),
        };
        self.write(move |s| async move { s.insert_endpoint(record).await }).await
    }

    /// Endpoints by ascending id. Staff only.
    pub async fn webhook_endpoints(
        &self,
        caller: Caller,
        cursor: Option<EndpointId>,
        limit: Option<u32>,
    ) -> Result<Page<WebhookEndpoint>> {
        Self::staff_only(caller, "manage webhook endpoints")?;
        let limit = admin_page_size(limit.unwrap_or(DEFAULT_PAGE_SIZE))?;
        let now = self.now();
        let endpoints = self.inner.storage.list_endpoints(cursor, limit + 1).await?;
        Ok(Page::of(endpoints.into_iter().map(|e| e.at(now)).collect(), limit, |e| e.id.to_string()))
    }

    /// One endpoint. Staff only.
    pub async fn webhook_endpoint(&self, caller: Caller, id: EndpointId) -> Result<WebhookEndpoint> {
        Self::staff_only(caller, "manage webhook endpoints")?;
        let endpoint = self.inner.storage.endpoint_by_id(id).await?;
        endpoint.map(|e| e.at(self.now())).ok_or_else(|| Error::NotFound(format!("webhook endpoint {id}")))
    }

    /// Changes an endpoint's URL, events, description, or whether it is enabled (enabling it
    /// again forgets since when it failed). Staff only.
    pub async fn update_webhook_endpoint(
        &self,
        caller: Caller,
        id: EndpointId,
        patch: EndpointPatch,
    ) -> Result<WebhookEndpoint> {
        Self::staff_only(caller, "manage webhook endpoints")?;
        let mut errors = ValidationErrors::default();
        let url = patch.url.as_deref().map(|u| check_endpoint_url(u, self.allow_private()).map_err(|e| errors.take(e)));
        let events = patch.events.as_deref().map(|e| EventFilter::parse(e).map_err(|e| errors.take(e)));
        let description =
            patch.description.as_ref().map(|d| endpoint_description(d.as_deref()).map_err(|e| errors.take(e)));
        errors.into_result()?;
        if patch.url.is_some() && self.webhook_endpoint(caller, id).await?.from_config {
            return Err(Error::Conflict(format!(
                "webhook endpoint {id} is made from SOM_WEBHOOK_URLS: change its URL there"
            )));
        }
        let change = EndpointChange {
            url: url.and_then(Result::ok),
            events: events.and_then(Result::ok),
            description: description.map(|d| d.ok().flatten()),
            enabled: patch.enabled,
            ..EndpointChange::default()
        };
        let at = self.now();
        self.write(move |s| async move { s.update_endpoint(id, change, at).await })
            .await?
            .map(|e| e.at(at))
            .ok_or_else(|| Error::NotFound(format!("webhook endpoint {id}")))
    }

    /// Deletes an endpoint and its delivery records; what was still to be delivered to it is
    /// dropped. Staff only.
    pub async fn delete_webhook_endpoint(&self, caller: Caller, id: EndpointId) -> Result<()> {
        Self::staff_only(caller, "manage webhook endpoints")?;
        let at = self.now();
        if self.write(move |s| async move { s.delete_endpoint(id, at).await }).await? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("webhook endpoint {id}")))
        }
    }

    /// Gives an endpoint a new secret (in the result, shown once). The old one keeps signing
    /// beside it for `overlap` (default a day, at most 7 days; 0 drops it at once), so that
    /// receivers can switch without missing an event. Staff only.
    pub async fn rotate_webhook_secret(
        &self,
        caller: Caller,
        id: EndpointId,
        overlap: Option<Duration>,
    ) -> Result<WebhookEndpoint> {
        Self::staff_only(caller, "manage webhook endpoints")?;
        let overlap = overlap.unwrap_or(DEFAULT_SECRET_OVERLAP);
        if overlap > MAX_SECRET_OVERLAP {
            return Err(Error::invalid("overlap", "must be at most 7 days (604800 seconds)"));
        }
        let at = self.now();
        let endpoint = self.webhook_endpoint(caller, id).await?;
        if endpoint.from_config {
            return Err(Error::Conflict(format!(
                "webhook endpoint {id} is signed with SOM_WEBHOOK_SECRET: change the secret there"
            )));
        }
        if let Some(running) = endpoint.previous_signs_until(at).filter(|_| !overlap.is_zero()) {
            return Err(Error::Conflict(format!(
                "the last rotation's old secret signs until {}; rotate with an overlap of 0 to drop both old secrets now",
                running.format("%Y-%m-%d %H:%M:%S UTC")
            )));
        }
        let until = at + chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::zero());
        let change = EndpointChange { rotate: Some((new_endpoint_secret(), until)), ..EndpointChange::default() };
        self.write(move |s| async move { s.update_endpoint(id, change, at).await })
            .await?
            .map(|e| e.at(at))
            .ok_or_else(|| Error::NotFound(format!("webhook endpoint {id}")))
    }

    /// An endpoint's delivery attempts, newest first. Staff only.
    pub async fn webhook_deliveries(
        &self,
        caller: Caller,
        id: EndpointId,
        query: DeliveryListQuery,
    ) -> Result<Page<WebhookDelivery>> {
        Self::staff_only(caller, "read webhook deliveries")?;
        let limit = admin_page_size(query.limit.unwrap_or(DEFAULT_PAGE_SIZE))?;
        let succeeded = match query.status.as_deref().map(str::trim) {
            None => None,
            Some("succeeded") => Some(true),
            Some("failed") => Some(false),
            Some(_) => return Err(Error::invalid("status", "must be succeeded or failed")),
        };
        let event_type = match query.event_type.as_deref().map(str::trim) {
            None => None,
            Some(t) => Some(
                EventKind::parse_type(t)
                    .ok_or_else(|| Error::invalid("event_type", format!("{t:?} is not an event type")))?
                    .type_name()
                    .to_owned(),
            ),
        };
        if query.event_id.as_ref().is_some_and(|e| e.chars().count() > MAX_EVENT_ID_CHARS) {
            return Err(Error::invalid("event_id", format!("must be at most {MAX_EVENT_ID_CHARS} characters")));
        }
        self.webhook_endpoint(caller, id).await?;
        let q = DeliveryQuery {
            endpoint_id: id,
            succeeded,
            event_type,
            event_id: query.event_id.filter(|e| !e.is_empty()),
            before: query.cursor,
            limit: limit + 1,
        };
        let records = self.inner.storage.list_deliveries(q).await?;
        Ok(Page::of(records, limit, |d| d.id.to_string()))
    }

    /// Queues event `event_id` again for `endpoint`, or for every enabled endpoint subscribed
    /// to its type. A delivery already made, or under way when this is asked, is made again
    /// (receivers recognise it by the event's id); one waiting for its next try is left to it.
    /// Staff only.
    pub async fn redeliver_event(
        &self,
        caller: Caller,
        event_id: &str,
        endpoint: Option<EndpointId>,
    ) -> Result<Redelivery> {
        self.writing(caller, async {
            Self::staff_only(caller, "redeliver events")?;
            if !self.webhooks_enabled() {
                return Err(Error::Conflict(
                    "webhook delivery is off on this server: add `webhook` to SOM_NOTIFIER to deliver to endpoints"
                        .into(),
                ));
            }
            if event_id.is_empty() || event_id.chars().count() > MAX_EVENT_ID_CHARS {
                return Err(Error::NotFound("no such event".into()));
            }
            let (message, event_at) = self
                .inner
                .storage
                .event_message(event_id)
                .await?
                .filter(|(m, _)| m.kind.is_public() && m.dedupe_key() == event_id)
                .ok_or_else(|| Error::NotFound(format!("event {event_id}")))?;
            let targets: Vec<WebhookEndpoint> = match endpoint {
                Some(id) => {
                    let e = self.webhook_endpoint(caller, id).await?;
                    if !e.enabled {
                        return Err(Error::Conflict(format!("webhook endpoint {id} is disabled; enable it first")));
                    }
                    if !e.events.matches(message.kind) {
                        return Err(Error::Conflict(format!(
                            "webhook endpoint {id} does not receive {} events",
                            message.kind.type_name()
                        )));
                    }
                    vec![e]
                }
                None => self
                    .inner
                    .storage
                    .list_endpoints(None, MAX_ENDPOINTS)
                    .await?
                    .into_iter()
                    .filter(|e| e.enabled && e.events.matches(message.kind))
                    .collect(),
            };
            let redelivery = Redelivery {
                event_id: event_id.to_owned(),
                event_type: message.kind.type_name().to_owned(),
                endpoints: targets.iter().map(|e| e.id).collect(),
            };
            let rows: Vec<NewNotification> =
                targets.iter().map(|e| NewNotification { channel: e.channel(), message: message.clone() }).collect();
            let now = self.now();
            if !rows.is_empty() {
                self.write(move |s| async move { s.redeliver(rows, event_at, now).await }).await?;
                self.inner.wake.notify_one();
            }
            Ok(redelivery)
        })
        .await
    }

    /// Makes (or keeps) an endpoint for each URL of `SOM_WEBHOOK_URLS`, signed with
    /// `SOM_WEBHOOK_SECRET`. Run when the system is built.
    pub(super) async fn configure_webhook_endpoints(&self) -> Result<()> {
        let config = &self.inner.config;
        if !self.webhooks_enabled() || config.webhook_urls.is_empty() {
            return Ok(());
        }
        let secret = match &config.webhook_secret {
            Some(s) if s.expose().len() >= 16 => s.expose().to_owned(),
            Some(_) => return Err(Error::invalid("SOM_WEBHOOK_SECRET", "must be at least 16 bytes")),
            None => {
                return Err(Error::invalid("SOM_WEBHOOK_SECRET", "is required by the endpoints of SOM_WEBHOOK_URLS"));
            }
        };
        for url in Self::configured_urls(config)? {
            let (secret, at) = (secret.clone(), self.now());
            self.write(move |s| async move { s.upsert_config_endpoint(&url, &secret, at).await }).await?;
        }
        Ok(())
    }

    fn configured_urls(config: &Config) -> Result<Vec<String>> {
        config
            .webhook_urls
            .iter()
            .map(|url| {
                let parsed =
                    reqwest::Url::parse(url).map_err(|e| Error::invalid("SOM_WEBHOOK_URLS", format!("{url}: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(Error::invalid("SOM_WEBHOOK_URLS", format!("{url}: only http and https URLs")));
                }
                Ok(parsed.to_string())
            })
            .collect()
    }

    /// Disables the endpoints made from a `SOM_WEBHOOK_URLS` URL that this process's
    /// configuration no longer lists (listing it again enables it). `som serve` and `som
    /// worker` run it at start; other commands leave endpoints alone.
    pub async fn retire_unlisted_webhook_endpoints(&self) -> Result<u64> {
        if !self.webhooks_enabled() {
            return Ok(0);
        }
        let listed = Self::configured_urls(&self.inner.config)?;
        let mut retired = 0;
        for e in self.inner.storage.list_endpoints(None, MAX_ENDPOINTS).await? {
            if e.from_config && e.enabled && !listed.contains(&e.url) {
                let (id, at) = (e.id, self.now());
                let change = EndpointChange {
                    enabled: Some(false),
                    disabled_reason: Some(crate::storage::UNLISTED_CONFIG_ENDPOINT.to_owned()),
                    ..EndpointChange::default()
                };
                self.write(move |s| async move { s.update_endpoint(id, change, at).await }).await?;
                tracing::info!(endpoint = %id, "webhook endpoint disabled: {}", crate::storage::UNLISTED_CONFIG_ENDPOINT);
                retired += 1;
            }
        }
        Ok(retired)
    }
}
