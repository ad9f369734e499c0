//! The event stream: every event published to a message broker, from the outbox, marked sent
//! only once the broker confirmed it.
//!
//! - NATS JetStream (`nats://`, cargo feature `nats`): to the subject named by the event's type
//!   (`som.order.created`) on a stream SOM creates if missing (subjects `som.>`), with
//!   `Nats-Msg-Id` = the event's id, so that the stream's de-duplication window drops a
//!   re-publish after a crash or a lost acknowledgement.
//! - RabbitMQ (`amqp://`, cargo feature `amqp`): to a durable topic exchange with the event's
//!   type as routing key, persistent, `message_id` = the event's id, with publisher confirms.
//!   A message whose confirm was lost is published again, so a consumer may see an id twice
//!   and should de-duplicate by it.
//!
//! Both connect lazily and reconnect after a failure; an unreachable broker is a transient
//! failure, retried with the outbox's backoff.

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{Notification, Notifier, NotifyError};
use crate::domain::CloudEvent;
use crate::error::{Error, Result};
use crate::util::Secret;

/// The longest a publish or its confirmation may take: a client stuck reconnecting must not
/// hold the dispatcher.
const BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// The channel of the event stream.
pub const STREAM_CHANNEL: &str = "stream";

/// Publishes events to the configured broker.
pub struct StreamNotifier {
    broker: Broker,
    name: String,
    url: Secret,
    dedupe_window: std::time::Duration,
}

enum Broker {
    #[cfg(feature = "nats")]
    Nats(Mutex<Option<async_nats::jetstream::Context>>),
    #[cfg(feature = "amqp")]
    Amqp(Mutex<Option<(lapin::Connection, lapin::Channel)>>),
}

impl std::fmt::Debug for StreamNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamNotifier")
            .field("url", &crate::util::redact_url(self.url.expose()))
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl StreamNotifier {
    /// A notifier publishing to `url` (`nats://…` or `amqp://…`) on the stream or exchange
    /// `name`. Nothing is connected until the first event. A JetStream stream SOM makes drops a
    /// re-publish of an event within `dedupe_window`: make it longer than the longest time an
    /// event can wait for its next attempt (the outbox's backoff cap and lease).
    pub fn new(url: &Secret, name: &str, dedupe_window: std::time::Duration) -> Result<StreamNotifier> {
        let scheme = url.expose().split("://").next().unwrap_or_default().to_ascii_lowercase();
        let broker = match scheme.as_str() {
            #[cfg(feature = "nats")]
            "nats" | "tls" => Broker::Nats(Mutex::new(None)),
            #[cfg(feature = "amqp")]
            "amqp" => Broker::Amqp(Mutex::new(None)),
            "amqps" => {
                return Err(Error::invalid(
                    "SOM_EVENT_STREAM",
                    "amqps:// is not supported (RabbitMQ is reached over plain amqp://; keep it on a trusted network)",
                ));
            }
            #[cfg(not(all(feature = "nats", feature = "amqp")))]
            "nats" | "tls" | "amqp" => {
                return Err(Error::invalid(
                    "SOM_EVENT_STREAM",
                    format!("this build has no {scheme} support (cargo features `nats`, `amqp`)"),
                ));
            }
            _ => return Err(Error::invalid("SOM_EVENT_STREAM", "must be a nats:// or amqp:// URL")),
        };
        Ok(StreamNotifier { broker, name: name.to_owned(), url: url.clone(), dedupe_window })
    }

    /// Publishes `events` (with their bodies) and waits for the broker's confirmation of each:
    /// all are sent first, then every acknowledgement is awaited, so a batch costs about one
    /// round trip rather than one per event. One outcome per event, in order.
    async fn publish(&self, events: &[(CloudEvent, Vec<u8>)]) -> Vec<Result<(), NotifyError>> {
        match &self.broker {
            #[cfg(feature = "nats")]
            Broker::Nats(slot) => self.publish_nats(slot, events).await,
            #[cfg(feature = "amqp")]
            Broker::Amqp(slot) => self.publish_amqp(slot, events).await,
        }
    }

    #[cfg(feature = "nats")]
    async fn publish_nats(
        &self,
        slot: &Mutex<Option<async_nats::jetstream::Context>>,
        events: &[(CloudEvent, Vec<u8>)],
    ) -> Vec<Result<(), NotifyError>> {
        let context = {
            let mut guard = slot.lock().await;
            match guard.as_ref() {
                Some(c) => c.clone(),
                None => match self.connect_nats().await {
                    Ok(c) => {
                        *guard = Some(c.clone());
                        c
                    }
                    Err(e) => return events.iter().map(|_| Err(e.clone())).collect(),
                },
            }
        };
        let deadline = tokio::time::Instant::now() + BOUND;
        let mut acks = Vec::with_capacity(events.len());
        let mut broken = None;
        for (event, body) in events {
            if let Some(why) = &broken {
                acks.push(Err(format!("not published: {why}")));
                continue;
            }
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.id.as_str());
            headers.insert("Content-Type", crate::domain::CLOUDEVENTS_JSON);
            let sent = tokio::time::timeout_at(
                deadline,
                context.publish_with_headers(event.kind.clone(), headers, body.clone().into()),
            )
            .await;
            acks.push(match sent {
                Ok(Ok(pending)) => Ok(pending),
                Ok(Err(e)) => Err(format!("publishing to NATS: {e}")),
                Err(_) => Err("publishing to NATS timed out".to_owned()),
            });
            if let Some(Err(why)) = acks.last() {
                broken = Some(why.clone());
            }
        }
        // The acknowledgements come in together: one deadline for all of them.
        let deadline = tokio::time::Instant::now() + BOUND;
        let mut outcomes = Vec::with_capacity(events.len());
        let mut failed = false;
        for ack in acks {
            let outcome = match ack {
                Ok(pending) => match tokio::time::timeout_at(deadline, pending).await {
                    Ok(Ok(ack)) => {
                        if ack.duplicate {
                            metrics::counter!("som_stream_duplicates_dropped_total").increment(1);
                        }
                        Ok(())
                    }
                    Ok(Err(e)) => Err(format!("JetStream did not acknowledge: {e}")),
                    Err(_) => Err("JetStream's acknowledgement timed out".to_owned()),
                },
                Err(e) => Err(e),
            };
            failed |= outcome.is_err();
            outcomes.push(outcome.map_err(NotifyError::Transient));
        }
        if failed {
            // The next batch starts from a new connection rather than one that may be stuck.
            *slot.lock().await = None;
        }
        outcomes
    }

    #[cfg(feature = "nats")]
    async fn connect_nats(&self) -> Result<async_nats::jetstream::Context, NotifyError> {
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(std::time::Duration::from_secs(5))
            .request_timeout(Some(std::time::Duration::from_secs(5)));
        let client = options
            .connect(self.url.expose())
            .await
            .map_err(|e| NotifyError::Transient(format!("connecting to NATS: {e}")))?;
        let context = async_nats::jetstream::new(client);
        let config = async_nats::jetstream::stream::Config {
            name: self.name.clone(),
            subjects: vec!["som.>".to_owned()],
            duplicate_window: self.dedupe_window,
            ..Default::default()
        };
        context
            .get_or_create_stream(config)
            .await
            .map_err(|e| NotifyError::Transient(format!("creating the JetStream stream {}: {e}", self.name)))?;
        tracing::info!(stream = %self.name, "publishing events to NATS JetStream");
        Ok(context)
    }

    #[cfg(feature = "amqp")]
    async fn publish_amqp(
        &self,
        slot: &Mutex<Option<(lapin::Connection, lapin::Channel)>>,
        events: &[(CloudEvent, Vec<u8>)],
    ) -> Vec<Result<(), NotifyError>> {
        use lapin::options::BasicPublishOptions;
        let mut guard = slot.lock().await;
        if guard.as_ref().is_some_and(|(c, ch)| !c.status().connected() || !ch.status().connected()) {
            *guard = None;
        }
        if guard.is_none() {
            match self.connect_amqp().await {
                Ok(connected) => *guard = Some(connected),
                Err(e) => return events.iter().map(|_| Err(e.clone())).collect(),
            }
        }
        let Some((_, channel)) = guard.as_ref() else {
            return events.iter().map(|_| Err(NotifyError::Transient("not connected".into()))).collect();
        };
        let deadline = tokio::time::Instant::now() + BOUND;
        let mut confirms = Vec::with_capacity(events.len());
        for (event, body) in events {
            if let Some(Err(why)) = confirms.last() {
                let why: String = format!("not published: {why}");
                confirms.push(Err(why));
                continue;
            }
            let properties = lapin::BasicProperties::default()
                .with_message_id(event.id.as_str().into())
                .with_content_type(crate::domain::CLOUDEVENTS_JSON.into())
                .with_type(event.kind.as_str().into())
                .with_delivery_mode(2);
            let publish = channel.basic_publish(
                self.name.as_str().into(),
                event.kind.as_str().into(),
                // Mandatory: an event no queue is bound for comes back instead of vanishing.
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                body,
                properties,
            );
            confirms.push(match tokio::time::timeout_at(deadline, publish).await {
                Ok(Ok(confirm)) => Ok(confirm),
                Ok(Err(e)) => Err(format!("publishing to RabbitMQ: {e}")),
                Err(_) => Err("publishing to RabbitMQ timed out".to_owned()),
            });
        }
        let mut outcomes = Vec::with_capacity(events.len());
        let mut broken = false;
        let deadline = tokio::time::Instant::now() + BOUND;
        for ((event, _), confirm) in events.iter().zip(confirms) {
            let outcome = match confirm {
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Ok(confirmed) => confirmed.map_err(|e| format!("RabbitMQ did not confirm: {e}")),
                    Err(_) => Err("RabbitMQ's confirmation timed out".to_owned()),
                },
                Err(e) => Err(e),
            };
            outcomes.push(match outcome {
                Ok(c) if c.is_ack() => match c.take_message() {
                    None => Ok(()),
                    Some(_) => Err(NotifyError::Transient(format!(
                        "no queue is bound to the exchange {} for {}: the event was returned",
                        self.name, event.kind
                    ))),
                },
                Ok(_) => Err(NotifyError::Transient("RabbitMQ refused the message (nack)".into())),
                Err(e) => {
                    broken = true;
                    Err(NotifyError::Transient(e))
                }
            });
        }
        if broken {
            // The connection may be broken; the next batch connects again.
            *guard = None;
        }
        outcomes
    }

    #[cfg(feature = "amqp")]
    async fn connect_amqp(&self) -> Result<(lapin::Connection, lapin::Channel), NotifyError> {
        use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
        let fail = |what: &str, e: lapin::Error| NotifyError::Transient(format!("{what} RabbitMQ: {e}"));
        let connect = lapin::Connection::connect(self.url.expose(), lapin::ConnectionProperties::default());
        let connection = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
            .await
            .map_err(|_| NotifyError::Transient("connecting to RabbitMQ timed out".into()))?
            .map_err(|e| fail("connecting to", e))?;
        let channel = connection.create_channel().await.map_err(|e| fail("opening a channel on", e))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| fail("confirms on", e))?;
        channel
            .exchange_declare(
                self.name.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                lapin::types::FieldTable::default(),
            )
            .await
            .map_err(|e| fail("declaring the exchange on", e))?;
        tracing::info!(exchange = %self.name, "publishing events to RabbitMQ");
        Ok((connection, channel))
    }
}

#[async_trait]
impl Notifier for StreamNotifier {
    fn channel(&self) -> &str {
        STREAM_CHANNEL
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        self.send_batch(std::slice::from_ref(n)).await.pop().unwrap_or(Ok(()))
    }

    fn sends_batches(&self) -> bool {
        true
    }

    async fn send_batch(&self, rows: &[Notification]) -> Vec<Result<(), NotifyError>> {
        let events: Vec<(CloudEvent, Vec<u8>)> = rows
            .iter()
            .filter(|n| n.kind.is_public())
            .map(|n| {
                let event = CloudEvent::of(n);
                let body = event.to_json();
                (event, body)
            })
            .collect();
        let mut published = self.publish(&events).await.into_iter();
        rows.iter()
            .map(|n| {
                if n.kind.is_public() {
                    published.next().unwrap_or_else(|| Err(NotifyError::Transient("not published".into())))
                } else {
                    Err(NotifyError::Skipped("staff alerts are not published".into()))
                }
            })
            .collect()
    }
}
