//! Webhook endpoints, their delivery records, and redelivery. (SQLite)

use super::*;
use crate::domain::{EndpointId, Message, WebhookDelivery, WebhookEndpoint};
use crate::storage::rows::{DELIVERY_COLUMNS, DeliveryRow, ENDPOINT_COLUMNS, EndpointRow, events_json};
use crate::storage::{DeliveryQuery, EndpointChange, NewDeliveryRecord, NewEndpointRecord, WebhookStore};

fn endpoint_row(r: &Row<'_>) -> rusqlite::Result<Result<WebhookEndpoint>> {
    let row = EndpointRow {
        id: r.get(0)?,
        url: r.get(1)?,
        events: r.get(2)?,
        description: r.get(3)?,
        enabled: r.get(4)?,
        disabled_reason: r.get(5)?,
        secret: r.get(6)?,
        previous_secret: r.get(7)?,
        previous_secret_until: r.get::<_, Option<i64>>(8)?.map(time),
        failing_since: r.get::<_, Option<i64>>(9)?.map(time),
        from_config: r.get(10)?,
        created_at: time(r.get(11)?),
        updated_at: time(r.get(12)?),
    };
    Ok(row.into_endpoint())
}

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<WebhookDelivery> {
    Ok(DeliveryRow {
        id: r.get(0)?,
        endpoint_id: r.get(1)?,
        event_id: r.get(2)?,
        event_type: r.get(3)?,
        attempt: r.get(4)?,
        succeeded: r.get(5)?,
        response_status: r.get(6)?,
        latency_ms: r.get(7)?,
        response_body: r.get(8)?,
        error: r.get(9)?,
        created_at: time(r.get(10)?),
    }
    .into_delivery())
}

fn query_endpoint(conn: &Connection, id: i64) -> Result<Option<WebhookEndpoint>> {
    let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?1");
    conn.prepare_cached(&sql)?.query_row([id], endpoint_row).optional()?.transpose()
}

#[async_trait]
impl WebhookStore for SqliteStorage {
    async fn insert_endpoint(&self, e: NewEndpointRecord) -> Result<WebhookEndpoint> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO webhook_endpoints (url, events, description, secret, from_config, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![e.url, events_json(&e.events), e.description, e.secret, e.from_config, micros(e.at)],
            )?;
            query_endpoint(tx, tx.last_insert_rowid())?.ok_or_else(|| corrupt("endpoint just written"))
        })
        .await
    }

    async fn upsert_config_endpoint(&self, url: &str, secret: &str, at: DateTime<Utc>) -> Result<WebhookEndpoint> {
        let (url, secret) = (url.to_owned(), secret.to_owned());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO webhook_endpoints (url, events, description, secret, from_config, created_at, updated_at) \
                 VALUES (?1, '[\"*\"]', 'from SOM_WEBHOOK_URLS', ?2, 1, ?3, ?3) \
                 ON CONFLICT (url) WHERE from_config = 1 DO UPDATE SET secret = excluded.secret, \
                 enabled = CASE WHEN webhook_endpoints.disabled_reason = ?4 THEN 1 ELSE webhook_endpoints.enabled END, \
                 disabled_reason = CASE WHEN webhook_endpoints.disabled_reason = ?4 THEN NULL \
                     ELSE webhook_endpoints.disabled_reason END, \
                 updated_at = excluded.updated_at",
                params![url, secret, micros(at), crate::storage::UNLISTED_CONFIG_ENDPOINT],
            )?;
            let id: i64 =
                tx.query_row("SELECT id FROM webhook_endpoints WHERE url = ?1 AND from_config = 1", [&url], |r| {
                    r.get(0)
                })?;
            query_endpoint(tx, id)?.ok_or_else(|| corrupt("endpoint just written"))
        })
        .await
    }

    async fn endpoint_by_id(&self, id: EndpointId) -> Result<Option<WebhookEndpoint>> {
        self.read_indexed(move |c| query_endpoint(c, id.get())).await
    }

    async fn list_endpoints(&self, after: Option<EndpointId>, limit: u32) -> Result<Vec<WebhookEndpoint>> {
        self.read(move |c| {
            let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id > ?1 ORDER BY id LIMIT ?2");
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![after.map_or(0, EndpointId::get), limit], endpoint_row)?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    async fn update_endpoint(
        &self,
        id: EndpointId,
        change: EndpointChange,
        at: DateTime<Utc>,
    ) -> Result<Option<WebhookEndpoint>> {
        self.write(move |tx| {
            let at = micros(at);
            let n = tx.execute(
                "UPDATE webhook_endpoints SET updated_at = ?2, \
                 url = COALESCE(?3, url), events = COALESCE(?4, events), \
                 description = CASE WHEN ?5 THEN ?6 ELSE description END, \
                 enabled = COALESCE(?7, enabled), \
                 disabled_reason = CASE WHEN ?7 IS NULL THEN disabled_reason ELSE ?11 END, \
                 failing_since = CASE WHEN ?7 = 1 THEN NULL ELSE failing_since END, \
                 previous_secret = CASE WHEN ?8 IS NOT NULL THEN secret WHEN ?10 IS NOT NULL THEN NULL ELSE previous_secret END, \
                 previous_secret_until = CASE WHEN ?8 IS NOT NULL THEN ?9 WHEN ?10 IS NOT NULL THEN NULL ELSE previous_secret_until END, \
                 secret = COALESCE(?8, ?10, secret) \
                 WHERE id = ?1",
                params![
                    id.get(),
                    at,
                    change.url,
                    change.events.as_ref().map(events_json),
                    change.description.is_some(),
                    change.description.flatten(),
                    change.enabled,
                    change.rotate.as_ref().map(|(s, _)| s.clone()),
                    change.rotate.as_ref().map(|(_, until)| micros(*until)),
                    change.secret,
                    change.disabled_reason,
                ],
            )?;
            if n == 0 {
                return Ok(None);
            }
            query_endpoint(tx, id.get())
        })
        .await
    }

    async fn delete_endpoint(&self, id: EndpointId, at: DateTime<Utc>) -> Result<bool> {
        self.write(move |tx| {
            tx.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = ?1", [id.get()])?;
            let n = tx.execute("DELETE FROM webhook_endpoints WHERE id = ?1", [id.get()])?;
            tx.execute(
                "UPDATE outbox SET status = 'skipped', last_error = 'the endpoint was deleted', updated_at = ?2, \
                 lease_until = NULL, claim_token = NULL WHERE channel = ?1 AND status = 'pending'",
                params![crate::domain::endpoint_channel(id), micros(at)],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn record_delivery(&self, d: NewDeliveryRecord) -> Result<bool> {
        self.write(move |tx| {
            let at = micros(d.at);
            tx.prepare_cached(
                "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, attempt, succeeded, response_status, \
                 latency_ms, response_body, error, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                d.endpoint_id.get(),
                d.event_id,
                d.event_type,
                d.attempt,
                d.succeeded,
                d.response_status,
                i64::try_from(d.latency_ms).unwrap_or(i64::MAX),
                d.response_body,
                d.error,
                at
            ])?;
            if d.succeeded {
                tx.prepare_cached(
                    "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ?1 AND failing_since IS NOT NULL",
                )?
                .execute([d.endpoint_id.get()])?;
                return Ok(false);
            }
            tx.prepare_cached("UPDATE webhook_endpoints SET failing_since = ?2 WHERE id = ?1 AND failing_since IS NULL")?
                .execute(params![d.endpoint_id.get(), at])?;
            let Some((since, reason)) = d.disable_failing_since else { return Ok(false) };
            let n = tx.execute(
                "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?3, updated_at = ?4 \
                 WHERE id = ?1 AND enabled = 1 AND failing_since <= ?2",
                params![d.endpoint_id.get(), micros(since), reason, at],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn list_deliveries(&self, q: DeliveryQuery) -> Result<Vec<WebhookDelivery>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = ?1 AND id < ?2 \
                 AND (?3 IS NULL OR succeeded = ?3) AND (?4 IS NULL OR event_type = ?4) \
                 AND (?5 IS NULL OR event_id = ?5) ORDER BY id DESC LIMIT ?6"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![
                    q.endpoint_id.get(),
                    q.before.map_or(i64::MAX, crate::domain::DeliveryId::get),
                    q.succeeded,
                    q.event_type,
                    q.event_id,
                    q.limit
                ],
                delivery_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn prune_deliveries(&self, before: DateTime<Utc>) -> Result<u64> {
        self.write(move |tx| {
            Ok(tx.execute("DELETE FROM webhook_deliveries WHERE created_at < ?1", [micros(before)])? as u64)
        })
        .await
    }

    async fn event_message(&self, event_id: &str) -> Result<Option<(Message, DateTime<Utc>)>> {
        let id = event_id.to_owned();
        self.read_indexed(move |c| {
            let found: Option<(String, i64)> = c
                .prepare_cached("SELECT payload, created_at FROM outbox WHERE dedupe_key = ?1 ORDER BY id LIMIT 1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            found
                .map(|(payload, at)| {
                    serde_json::from_str::<Message>(&payload)
                        .map(|m| (m, time(at)))
                        .map_err(|_| corrupt("outbox payload"))
                })
                .transpose()
        })
        .await
    }

    async fn redeliver(&self, rows: Vec<NewNotification>, event_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
        self.write(move |tx| {
            let mut queued = 0;
            let mut again = tx.prepare_cached(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?3, last_error = NULL, \
                 updated_at = ?3, lease_until = NULL, claim_token = NULL \
                 WHERE dedupe_key = ?1 AND channel = ?2 AND NOT (status = 'pending' AND claim_token IS NULL)",
            )?;
            let mut present = tx.prepare_cached(
                "SELECT status = 'pending' AND claim_token IS NULL FROM outbox WHERE dedupe_key = ?1 AND channel = ?2",
            )?;
            let mut fresh = Vec::new();
            for row in rows {
                let key = row.message.dedupe_key();
                let waiting: Option<bool> = present.query_row(params![key, row.channel], |r| r.get(0)).optional()?;
                match waiting {
                    None => fresh.push(row),
                    Some(true) => {}
                    Some(false) => queued += again.execute(params![key, row.channel, micros(now)])? as u64,
                }
            }
            queued += fresh.len() as u64;
            insert_outbox(tx, fresh, event_at)?;
            Ok(queued)
        })
        .await
    }
}
