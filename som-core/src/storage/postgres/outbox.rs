//! The notification outbox. (PostgreSQL)

use super::*;

#[async_trait]
impl OutboxStore for PostgresStorage {
    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        claim_token: &str,
    ) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query(
            "UPDATE outbox SET lease_until = $2, claim_token = $3, attempts = attempts + 1, updated_at = $1 \
             WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $1 \
                          AND (lease_until IS NULL OR lease_until <= $1) \
                          ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind(now)
        .bind(lease_until)
        .bind(claim_token.to_owned())
        .bind(i64::from(limit));
        let rows = self.write_returning(rows).await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            match outbox_from(row) {
                Ok(entry) => claimed.push(entry),
                // A row nobody can read (written outside SOM) must not block the rest.
                Err(e) => {
                    let id: i64 = row.try_get("id")?;
                    tracing::error!(id, error = %e, "undecodable outbox row dead-lettered");
                    self.write(
                        sqlx::query(
                            "UPDATE outbox SET status = 'dead', last_error = $2, lease_until = NULL, \
                             claim_token = NULL WHERE id = $1",
                        )
                        .bind(id)
                        .bind(format!("cannot be decoded: {e}")),
                    )
                    .await?;
                }
            }
        }
        claimed.sort_by_key(|e| (e.next_attempt_at, e.id));
        Ok(claimed)
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
        let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        let n = self.write(sqlx::query(
            "UPDATE outbox SET status = 'sent', sent_at = $3, updated_at = $3, lease_until = NULL, claim_token = NULL \
             WHERE id = ANY($1) AND claim_token = $2 AND status = 'pending'",
        )
        .bind(&ids)
        .bind(claim_token)
        .bind(at)
        )
        .await?
        .rows_affected();
        Ok(n)
    }

    async fn mark_notification_failed(
        &self,
        id: NotificationId,
        claim_token: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let now = at;
        let n =
            match retry_at {
                Some(retry) => self.write(sqlx::query(
                    "UPDATE outbox SET next_attempt_at = $3, last_error = $4, lease_until = NULL, claim_token = NULL, \
                 updated_at = $5 WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
                )
                .bind(id.get())
                .bind(claim_token)
                .bind(retry)
                .bind(error)
                .bind(now))
                .await?,
                None => {
                    self.write(sqlx::query(
                        "UPDATE outbox SET status = 'dead', last_error = $3, lease_until = NULL, claim_token = NULL, \
                 updated_at = $4 WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
                    )
                    .bind(id.get())
                    .bind(claim_token)
                    .bind(error)
                    .bind(now))
                    .await?
                }
            };
        Ok(n.rows_affected() == 1)
    }

    async fn mark_notification_skipped(
        &self,
        id: NotificationId,
        claim_token: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let n = self
            .write(
                sqlx::query(
                    "UPDATE outbox SET status = 'skipped', last_error = $3, updated_at = $4, lease_until = NULL, \
             claim_token = NULL WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
                )
                .bind(id.get())
                .bind(claim_token)
                .bind(reason)
                .bind(at),
            )
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn release_notification(&self, id: NotificationId, claim_token: &str) -> Result<bool> {
        let n = self
            .write(
                sqlx::query(
                    "UPDATE outbox SET lease_until = NULL, claim_token = NULL, attempts = GREATEST(attempts - 1, 0) \
             WHERE id = $1 AND claim_token = $2 AND status = 'pending'",
                )
                .bind(id.get())
                .bind(claim_token),
            )
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn list_notifications(&self, q: NotificationQuery) -> Result<Vec<OutboxEntry>> {
        let after = q.after.map_or(0, NotificationId::get);
        let query = match (q.status, q.order) {
            (Some(s), None) => {
                sqlx::query("SELECT * FROM outbox WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3").bind(s.as_str())
            }
            (None, None) => sqlx::query("SELECT * FROM outbox WHERE id > $1 ORDER BY id LIMIT $2"),
            (status, Some(order)) => sqlx::query(
                "SELECT * FROM outbox WHERE order_id = $1 AND ($2::text IS NULL OR status = $2) AND id > $3 \
                 ORDER BY id LIMIT $4",
            )
            .bind(order.get())
            .bind(status.map(NotificationStatus::as_str)),
        }
        .bind(after)
        .bind(i64::from(q.limit));
        self.rows(query).await?.iter().map(outbox_from).collect()
    }

    async fn requeue_notification(
        &self,
        id: NotificationId,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition<OutboxEntry>>> {
        let updated = self
            .write_returning(
                sqlx::query(
                    "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $2, updated_at = $2, \
                     lease_until = NULL, claim_token = NULL WHERE id = $1 AND status = 'dead' RETURNING *",
                )
                .bind(id.get())
                .bind(now),
            )
            .await?;
        if let Some(row) = updated.first() {
            self.announcer.announce().await;
            return Ok(Some(Transition::Applied(outbox_from(row)?)));
        }
        let current = self.row(sqlx::query("SELECT * FROM outbox WHERE id = $1").bind(id.get())).await?;
        current.as_ref().map(|r| Ok(Transition::NotApplied(outbox_from(r)?))).transpose()
    }

    async fn requeue_dead_notifications(&self, channel: &str, now: DateTime<Utc>) -> Result<u64> {
        let done = self
            .write(
                sqlx::query(
                    "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $2, updated_at = $2, \
                     lease_until = NULL, claim_token = NULL WHERE channel = $1 AND status = 'dead'",
                )
                .bind(channel.to_owned())
                .bind(now),
            )
            .await?;
        if done.rows_affected() > 0 {
            self.announcer.announce().await;
        }
        Ok(done.rows_affected())
    }

    async fn enqueue_notifications(&self, rows: Vec<NewNotification>, at: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_outbox(&mut tx, rows, truncate(at)).await?;
        tx.commit().await?;
        self.announcer.announce().await;
        Ok(())
    }

    async fn notification_counts(&self) -> Result<Vec<(NotificationStatus, u64)>> {
        let rows = self.rows(sqlx::query("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")).await?;
        let mut counts: Vec<(NotificationStatus, u64)> = NotificationStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for r in rows {
            let status: String = r.try_get("status")?;
            let n: i64 = r.try_get("n")?;
            let status = NotificationStatus::parse(&status).ok_or_else(|| corrupt("notification status"))?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(counts)
    }
}
