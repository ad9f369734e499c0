//! Webhook endpoints, their delivery records, and redelivery. (PostgreSQL)

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::*;
use crate::domain::{EndpointId, Message, WebhookDelivery, WebhookEndpoint};
use crate::error::Result;
use crate::storage::rows::{DeliveryRow, EndpointRow, events_json};
use crate::storage::{DeliveryQuery, EndpointChange, NewDeliveryRecord, NewEndpointRecord, WebhookStore};

fn endpoint_from(row: &PgRow) -> Result<WebhookEndpoint> {
    EndpointRow::from_row(row)?.into_endpoint()
}

#[async_trait]
impl WebhookStore for PostgresStorage {
    async fn insert_endpoint(&self, e: NewEndpointRecord) -> Result<WebhookEndpoint> {
        let rows = self
            .write_returning(
                sqlx::query(
                    "INSERT INTO webhook_endpoints (url, events, description, secret, from_config, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING *",
                )
                .bind(e.url)
                .bind(events_json(&e.events))
                .bind(e.description)
                .bind(e.secret)
                .bind(e.from_config)
                .bind(truncate(e.at)),
            )
            .await?;
        rows.first().map(endpoint_from).ok_or_else(|| corrupt("endpoint just written"))?
    }

    async fn upsert_config_endpoint(&self, url: &str, secret: &str, at: DateTime<Utc>) -> Result<WebhookEndpoint> {
        let rows = self
            .write_returning(
                sqlx::query(
                    "INSERT INTO webhook_endpoints (url, events, description, secret, from_config, created_at, updated_at) \
                     VALUES ($1, '[\"*\"]', 'from SOM_WEBHOOK_URLS', $2, TRUE, $3, $3) \
                     ON CONFLICT (url) WHERE from_config DO UPDATE SET secret = EXCLUDED.secret, \
                     enabled = webhook_endpoints.enabled OR webhook_endpoints.disabled_reason = $4, \
                     disabled_reason = CASE WHEN webhook_endpoints.disabled_reason = $4 THEN NULL \
                         ELSE webhook_endpoints.disabled_reason END, \
                     updated_at = EXCLUDED.updated_at RETURNING *",
                )
                .bind(url.to_owned())
                .bind(secret.to_owned())
                .bind(truncate(at))
                .bind(crate::storage::UNLISTED_CONFIG_ENDPOINT),
            )
            .await?;
        rows.first().map(endpoint_from).ok_or_else(|| corrupt("endpoint just written"))?
    }

    async fn endpoint_by_id(&self, id: EndpointId) -> Result<Option<WebhookEndpoint>> {
        let row = self.row(sqlx::query("SELECT * FROM webhook_endpoints WHERE id = $1").bind(id.get())).await?;
        row.as_ref().map(endpoint_from).transpose()
    }

    async fn list_endpoints(&self, after: Option<EndpointId>, limit: u32) -> Result<Vec<WebhookEndpoint>> {
        let rows = self
            .rows(
                sqlx::query("SELECT * FROM webhook_endpoints WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(after.map_or(0, EndpointId::get))
                    .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(endpoint_from).collect()
    }

    async fn update_endpoint(
        &self,
        id: EndpointId,
        change: EndpointChange,
        at: DateTime<Utc>,
    ) -> Result<Option<WebhookEndpoint>> {
        let rows = self
            .write_returning(
                sqlx::query(
                    "UPDATE webhook_endpoints SET updated_at = $2, \
                     url = COALESCE($3, url), events = COALESCE($4, events), \
                     description = CASE WHEN $5 THEN $6 ELSE description END, \
                     enabled = COALESCE($7, enabled), \
                     disabled_reason = CASE WHEN $7::BOOLEAN IS NULL THEN disabled_reason ELSE $11 END, \
                     failing_since = CASE WHEN $7 THEN NULL ELSE failing_since END, \
                     previous_secret = CASE WHEN $8::TEXT IS NOT NULL THEN secret \
                         WHEN $10::TEXT IS NOT NULL THEN NULL ELSE previous_secret END, \
                     previous_secret_until = CASE WHEN $8::TEXT IS NOT NULL THEN $9 \
                         WHEN $10::TEXT IS NOT NULL THEN NULL ELSE previous_secret_until END, \
                     secret = COALESCE($8, $10, secret) \
                     WHERE id = $1 RETURNING *",
                )
                .bind(id.get())
                .bind(truncate(at))
                .bind(change.url)
                .bind(change.events.as_ref().map(events_json))
                .bind(change.description.is_some())
                .bind(change.description.flatten())
                .bind(change.enabled)
                .bind(change.rotate.as_ref().map(|(s, _)| s.clone()))
                .bind(change.rotate.as_ref().map(|(_, until)| truncate(*until)))
                .bind(change.secret)
                .bind(change.disabled_reason),
            )
            .await?;
        rows.first().map(endpoint_from).transpose()
    }

    async fn delete_endpoint(&self, id: EndpointId, at: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1").bind(id.get()).execute(&mut *tx).await?;
        let n = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(id.get()).execute(&mut *tx).await?;
        sqlx::query(
            "UPDATE outbox SET status = 'skipped', last_error = 'the endpoint was deleted', updated_at = $2, \
             lease_until = NULL, claim_token = NULL WHERE channel = $1 AND status = 'pending'",
        )
        .bind(crate::domain::endpoint_channel(id))
        .bind(truncate(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n.rows_affected() == 1)
    }

    async fn record_delivery(&self, d: NewDeliveryRecord) -> Result<bool> {
        let at = truncate(d.at);
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, attempt, succeeded, response_status, \
             latency_ms, response_body, error, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(d.endpoint_id.get())
        .bind(&d.event_id)
        .bind(&d.event_type)
        .bind(i64::from(d.attempt))
        .bind(d.succeeded)
        .bind(d.response_status.map(i32::from))
        .bind(i64::try_from(d.latency_ms).unwrap_or(i64::MAX))
        .bind(&d.response_body)
        .bind(&d.error)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        let disabled = if d.succeeded {
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
            )
            .bind(d.endpoint_id.get())
            .execute(&mut *tx)
            .await?;
            false
        } else {
            sqlx::query("UPDATE webhook_endpoints SET failing_since = $2 WHERE id = $1 AND failing_since IS NULL")
                .bind(d.endpoint_id.get())
                .bind(at)
                .execute(&mut *tx)
                .await?;
            match &d.disable_failing_since {
                Some((since, reason)) => {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $3, updated_at = $4 \
                         WHERE id = $1 AND enabled AND failing_since <= $2",
                    )
                    .bind(d.endpoint_id.get())
                    .bind(truncate(*since))
                    .bind(reason)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1
                }
                None => false,
            }
        };
        tx.commit().await?;
        Ok(disabled)
    }

    async fn list_deliveries(&self, q: DeliveryQuery) -> Result<Vec<WebhookDelivery>> {
        let rows = self
            .rows(
                sqlx::query(
                    "SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 AND id < $2 \
                     AND ($3::BOOLEAN IS NULL OR succeeded = $3) AND ($4::TEXT IS NULL OR event_type = $4) \
                     AND ($5::TEXT IS NULL OR event_id = $5) ORDER BY id DESC LIMIT $6",
                )
                .bind(q.endpoint_id.get())
                .bind(q.before.map_or(i64::MAX, crate::domain::DeliveryId::get))
                .bind(q.succeeded)
                .bind(q.event_type)
                .bind(q.event_id)
                .bind(i64::from(q.limit)),
            )
            .await?;
        rows.iter().map(|r| Ok(DeliveryRow::from_row(r)?.into_delivery())).collect()
    }

    async fn prune_deliveries(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = self.write(sqlx::query("DELETE FROM webhook_deliveries WHERE created_at < $1").bind(before)).await?;
        Ok(done.rows_affected())
    }

    async fn event_message(&self, event_id: &str) -> Result<Option<(Message, DateTime<Utc>)>> {
        let row = self
            .row(
                sqlx::query("SELECT payload, created_at FROM outbox WHERE dedupe_key = $1 ORDER BY id LIMIT 1")
                    .bind(event_id.to_owned()),
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let payload: String = row.try_get("payload")?;
        let at: DateTime<Utc> = row.try_get("created_at")?;
        let message: Message = serde_json::from_str(&payload).map_err(|_| corrupt("outbox payload"))?;
        Ok(Some((message, at)))
    }

    async fn redeliver(&self, rows: Vec<NewNotification>, event_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin().await?;
        let mut queued = 0;
        let mut fresh = Vec::new();
        for row in rows {
            let key = row.message.dedupe_key();
            let waiting: Option<bool> = sqlx::query_scalar(
                "SELECT status = 'pending' AND claim_token IS NULL FROM outbox WHERE dedupe_key = $1 AND channel = $2 \
                 FOR UPDATE",
            )
            .bind(&key)
            .bind(&row.channel)
            .fetch_optional(&mut *tx)
            .await?;
            match waiting {
                None => fresh.push(row),
                Some(true) => {}
                Some(false) => {
                    queued += sqlx::query(
                        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $3, last_error = NULL, \
                         updated_at = $3, lease_until = NULL, claim_token = NULL \
                         WHERE dedupe_key = $1 AND channel = $2 AND NOT (status = 'pending' AND claim_token IS NULL)",
                    )
                    .bind(&key)
                    .bind(&row.channel)
                    .bind(truncate(now))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
            }
        }
        queued += fresh.len() as u64;
        insert_outbox(&mut tx, fresh, truncate(event_at)).await?;
        tx.commit().await?;
        if queued > 0 {
            self.announcer.announce().await;
        }
        Ok(queued)
    }
}
