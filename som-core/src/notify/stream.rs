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
            "amqp" | "amqps" => Broker::Amqp(Mutex::new(None)),
            #[cfg(not(all(feature = "nats", feature = "amqp")))]
            "nats" | "tls" | "amqp" | "amqps" => {
                return Err(Error::invalid(
                    "SOM_EVENT_STREAM",
                    format!("this build has no {scheme} support (cargo features `nats`, `amqp`)"),
                ));
            }
            _ => return Err(Error::invalid("SOM_EVENT_STREAM", "must be a nats:// or amqp:// URL")),
        };
        Ok(StreamNotifier { broker, name: name.to_owned(), url: url.clone(), dedupe_window })
    }

    /// Publishes one event and waits for the broker's confirmation.
    async fn publish(&self, event: &CloudEvent, body: Vec<u8>) -> Result<(), NotifyError> {
        match &self.broker {
            #[cfg(feature = "nats")]
            Broker::Nats(slot) => self.publish_nats(slot, event, body).await,
            #[cfg(feature = "amqp")]
            Broker::Amqp(slot) => self.publish_amqp(slot, event, body).await,
        }
    }

    #[cfg(feature = "nats")]
    async fn publish_nats(
        &self,
        slot: &Mutex<Option<async_nats::jetstream::Context>>,
        event: &CloudEvent,
        body: Vec<u8>,
    ) -> Result<(), NotifyError> {
        let context = {
            let mut guard = slot.lock().await;
            match guard.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = self.connect_nats().await?;
                    *guard = Some(c.clone());
                    c
                }
            }
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.as_str());
        headers.insert("Content-Type", crate::domain::CLOUDEVENTS_JSON);
        let sent = context.publish_with_headers(event.kind.clone(), headers, body.into()).await;
        let ack = match sent {
            Ok(ack) => ack.await,
            Err(e) => return Err(NotifyError::Transient(format!("publishing to NATS: {e}"))),
        };
        match ack {
            Ok(ack) => {
                if ack.duplicate {
                    metrics::counter!("som_stream_duplicates_dropped_total").increment(1);
                }
                Ok(())
            }
            Err(e) => Err(NotifyError::Transient(format!("JetStream did not acknowledge: {e}"))),
        }
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
        event: &CloudEvent,
        body: Vec<u8>,
    ) -> Result<(), NotifyError> {
        use lapin::options::BasicPublishOptions;
        let mut guard = slot.lock().await;
        if guard.as_ref().is_some_and(|(c, ch)| !c.status().connected() || !ch.status().connected()) {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.connect_amqp().await?);
        }
        let Some((_, channel)) = guard.as_ref() else { return Err(NotifyError::Transient("not connected".into())) };
        let properties = lapin::BasicProperties::default()
            .with_message_id(event.id.as_str().into())
            .with_content_type(crate::domain::CLOUDEVENTS_JSON.into())
            .with_type(event.kind.as_str().into())
            .with_delivery_mode(2);
        let confirm = channel
            .basic_publish(
                self.name.as_str().into(),
                event.kind.as_str().into(),
                // Mandatory: an event no queue is bound for comes back instead of vanishing.
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                &body,
                properties,
            )
            .await;
        let outcome = match confirm {
            Ok(confirm) => confirm.await.map_err(|e| format!("RabbitMQ did not confirm: {e}")),
            Err(e) => Err(format!("publishing to RabbitMQ: {e}")),
        };
        match outcome {
            Ok(c) if c.is_ack() => match c.take_message() {
                None => Ok(()),
                Some(_) => Err(NotifyError::Transient(format!(
                    "no queue is bound to the exchange {} for {}: the event was returned",
                    self.name, event.kind
                ))),
            },
            Ok(_) => Err(NotifyError::Transient("RabbitMQ refused the message (nack)".into())),
            Err(e) => {
                // The connection may be broken; the next event connects again.
                *guard = None;
                Err(NotifyError::Transient(e))
            }
        }
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
        if !n.kind.is_public() {
            return Err(NotifyError::Skipped("staff alerts are not published".into()));
        }
        let event = CloudEvent::of(n);
        let body = event.to_json();
        self.publish(&event, body).await
    }
}
