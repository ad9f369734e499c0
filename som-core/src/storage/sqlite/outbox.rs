//! The notification outbox. (SQLite)

use super::*;

#[async_trait]
impl OutboxStore for SqliteStorage {
    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        claim_token: &str,
    ) -> Result<Vec<OutboxEntry>> {
        let token = claim_token.to_owned();
        self.write(move |tx| {
            let ids: Vec<i64> = tx
                .prepare_cached(
                    "SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?1 \
                     AND (lease_until IS NULL OR lease_until <= ?1) ORDER BY next_attempt_at, id LIMIT ?2",
                )?
                .query_map(params![micros(now), limit], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut claimed = Vec::with_capacity(ids.len());
            let mut stmt = tx.prepare_cached(
                "UPDATE outbox SET lease_until = ?2, claim_token = ?3, attempts = attempts + 1, updated_at = ?4 WHERE id = ?1",
            )?;
            for id in ids {
                stmt.execute(params![id, micros(lease_until), token, micros(now)])?;
                match query_outbox(tx, NotificationId::new(id)) {
                    Ok(entry) => claimed.extend(entry),
                    // A row nobody can read (written outside SOM) must not block the rest.
                    Err(e) => {
                        tracing::error!(id, error = %e, "undecodable outbox row dead-lettered");
                        tx.execute(
                            "UPDATE outbox SET status = 'dead', last_error = ?2, lease_until = NULL, claim_token = NULL \
                             WHERE id = ?1",
                            params![id, format!("cannot be decoded: {e}")],
                        )?;
                    }
                }
            }
            Ok(claimed)
        })
        .await
    }

    async fn mark_notifications_sent(
        &self,
        ids: &[NotificationId],
        claim_token: &str,
        at: DateTime<Utc>,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let (ids, token) = (ids.to_vec(), claim_token.to_owned());
        self.write(move |tx| {
            let mut mark = tx.prepare_cached(
                "UPDATE outbox SET status = 'sent', sent_at = ?3, updated_at = ?3, lease_until = NULL, claim_token = NULL \
                 WHERE id = ?1 AND claim_token = ?2 AND status = 'pending'",
            )?;
            let mut marked = 0;
            for id in ids {
                marked += mark.execute(params![id.get(), token, micros(at)])? as u64;
            }
            Ok(marked)
        })
        .await
    }

    async fn mark_notification_failed(
        &self,
        id: NotificationId,
        claim_token: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (token, error) = (claim_token.to_owned(), error.to_owned());
        self.write(move |tx| {
            let now = micros(at);
            let n = match retry_at {
                Some(retry) => tx.execute(
                    "UPDATE outbox SET next_attempt_at = ?3, last_error = ?4, lease_until = NULL, claim_token = NULL, \
                     updated_at = ?5 WHERE id = ?1 AND claim_token = ?2 AND status = 'pending'",
                    params![id.get(), token, micros(retry), error, now],
                )?,
                None => tx.execute(
                    "UPDATE outbox SET status = 'dead', last_error = ?3, lease_until = NULL, claim_token = NULL, \
                     updated_at = ?4 WHERE id = ?1 AND claim_token = ?2 AND status = 'pending'",
                    params![id.get(), token, error, now],
                )?,
            };
            Ok(n == 1)
        })
        .await
    }

    async fn mark_notification_skipped(
        &self,
        id: NotificationId,
        claim_token: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (token, reason) = (claim_token.to_owned(), reason.to_owned());
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE outbox SET status = 'skipped', last_error = ?3, updated_at = ?4, lease_until = NULL, \
                 claim_token = NULL WHERE id = ?1 AND claim_token = ?2 AND status = 'pending'",
                params![id.get(), token, reason, micros(at)],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_notification(&self, id: NotificationId, claim_token: &str) -> Result<bool> {
        let token = claim_token.to_owned();
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE outbox SET lease_until = NULL, claim_token = NULL, attempts = MAX(attempts - 1, 0) \
                 WHERE id = ?1 AND claim_token = ?2 AND status = 'pending'",
                params![id.get(), token],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn list_notifications(&self, q: NotificationQuery) -> Result<Vec<OutboxEntry>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE (?1 IS NULL OR status = ?1) AND id > ?2 \
                 AND (?4 IS NULL OR order_id = ?4) ORDER BY id LIMIT ?3"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![
                    q.status.map(NotificationStatus::as_str),
                    q.after.map_or(0, NotificationId::get),
                    q.limit,
                    q.order.map(OrderId::get)
                ],
                outbox_row,
            )?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    async fn requeue_notification(
        &self,
        id: NotificationId,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition<OutboxEntry>>> {
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2, updated_at = ?2, \
                 lease_until = NULL, claim_token = NULL WHERE id = ?1 AND status = 'dead'",
                params![id.get(), micros(now)],
            )?;
            let entry = query_outbox(tx, id)?;
            Ok(entry.map(|e| if n == 1 { Transition::Applied(e) } else { Transition::NotApplied(e) }))
        })
        .await
    }

    async fn requeue_dead_notifications(&self, channel: &str, now: DateTime<Utc>) -> Result<u64> {
        let channel = channel.to_owned();
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2, updated_at = ?2, \
                 lease_until = NULL, claim_token = NULL WHERE channel = ?1 AND status = 'dead'",
                params![channel, micros(now)],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn enqueue_notifications(&self, rows: Vec<NewNotification>, at: DateTime<Utc>) -> Result<()> {
        self.write(move |tx| insert_outbox(tx, rows, at)).await
    }

    async fn notification_counts(&self) -> Result<Vec<(NotificationStatus, u64)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT status, COUNT(*) FROM outbox GROUP BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut counts: Vec<(NotificationStatus, u64)> = NotificationStatus::ALL.iter().map(|s| (*s, 0)).collect();
            for row in rows {
                let (status, n) = row?;
                let status = NotificationStatus::parse(&status).ok_or_else(|| corrupt("notification status"))?;
                if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                    slot.1 = u64::try_from(n).unwrap_or(0);
                }
            }
            Ok(counts)
        })
        .await
    }
}
