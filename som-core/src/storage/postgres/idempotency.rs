//! Idempotency keys. (PostgreSQL)

use super::*;
use crate::storage::policy::{StoredIdempotency, decide_idempotency};

#[async_trait]
impl IdempotencyStore for PostgresStorage {
    async fn begin_idempotency(
        &self,
        key: &IdempotencyKey,
        request_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<IdempotencyBegin> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, operation, key, request_hash, response, locked_at, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, NULL, $5, $5, $6) ON CONFLICT (scope, operation, key) DO NOTHING",
        )
        .bind(&key.scope)
        .bind(key.operation)
        .bind(&key.key)
        .bind(request_hash)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            tx.commit().await?;
            return Ok(IdempotencyBegin::Started);
        }
        let row = sqlx::query(
            "SELECT request_hash, response, locked_at, expires_at FROM idempotency_keys \
             WHERE scope = $1 AND operation = $2 AND key = $3 FOR UPDATE",
        )
        .bind(&key.scope)
        .bind(key.operation)
        .bind(&key.key)
        .fetch_one(&mut *tx)
        .await?;
        let stored = StoredIdempotency {
            request_hash: row.try_get("request_hash")?,
            response: row.try_get("response")?,
            locked_at: row.try_get("locked_at")?,
            expires_at: row.try_get("expires_at")?,
        };
        let decision = decide_idempotency(Some(&stored), request_hash, now, stale_before);
        if decision == IdempotencyBegin::Started {
            sqlx::query(
                "UPDATE idempotency_keys SET request_hash = $4, response = NULL, locked_at = $5, created_at = $5, \
                 expires_at = $6 WHERE scope = $1 AND operation = $2 AND key = $3",
            )
            .bind(&key.scope)
            .bind(key.operation)
            .bind(&key.key)
            .bind(request_hash)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(decision)
    }

    async fn finish_idempotency(&self, key: &IdempotencyKey, response: &str) -> Result<()> {
        self.write(
            sqlx::query(
                "UPDATE idempotency_keys SET response = $4, locked_at = NULL \
                 WHERE scope = $1 AND operation = $2 AND key = $3 AND response IS NULL",
            )
            .bind(key.scope.clone())
            .bind(key.operation)
            .bind(key.key.clone())
            .bind(response.to_owned()),
        )
        .await?;
        Ok(())
    }

    async fn abandon_idempotency(&self, key: &IdempotencyKey) -> Result<()> {
        self.write(
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE scope = $1 AND operation = $2 AND key = $3 AND response IS NULL",
            )
            .bind(key.scope.clone())
            .bind(key.operation)
            .bind(key.key.clone()),
        )
        .await?;
        Ok(())
    }

    async fn prune_idempotency(&self, now: DateTime<Utc>) -> Result<u64> {
        let n = self.write(sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1").bind(now)).await?;
        Ok(n.rows_affected())
    }
}
