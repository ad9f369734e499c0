//! Idempotency keys. (SQLite)

use super::*;
use crate::storage::policy::{StoredIdempotency, decide_idempotency};

#[async_trait]
impl IdempotencyStore for SqliteStorage {
    async fn begin_idempotency(
        &self,
        key: &IdempotencyKey,
        request_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<IdempotencyBegin> {
        let (k, hash) = (key.clone(), request_hash.to_owned());
        self.write(move |tx| {
            let stored = tx
                .query_row(
                    "SELECT request_hash, response, locked_at, expires_at FROM idempotency_keys \
                     WHERE scope = ?1 AND operation = ?2 AND key = ?3",
                    params![k.scope, k.operation, k.key],
                    |r| {
                        Ok(StoredIdempotency {
                            request_hash: r.get(0)?,
                            response: r.get(1)?,
                            locked_at: r.get::<_, Option<i64>>(2)?.map(time),
                            expires_at: time(r.get(3)?),
                        })
                    },
                )
                .optional()?;
            let decision = decide_idempotency(stored.as_ref(), &hash, now, stale_before);
            if decision == IdempotencyBegin::Started {
                tx.execute(
                    "INSERT INTO idempotency_keys (scope, operation, key, request_hash, response, locked_at, created_at, \
                     expires_at) VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?5, ?6) \
                     ON CONFLICT (scope, operation, key) DO UPDATE SET request_hash = excluded.request_hash, \
                     response = NULL, locked_at = excluded.locked_at, created_at = excluded.created_at, \
                     expires_at = excluded.expires_at",
                    params![k.scope, k.operation, k.key, hash, micros(now), micros(expires_at)],
                )?;
            }
            Ok(decision)
        })
        .await
    }

    async fn finish_idempotency(&self, key: &IdempotencyKey, response: &str) -> Result<()> {
        let (k, response) = (key.clone(), response.to_owned());
        self.write(move |tx| {
            tx.execute(
                "UPDATE idempotency_keys SET response = ?4, locked_at = NULL \
                 WHERE scope = ?1 AND operation = ?2 AND key = ?3 AND response IS NULL",
                params![k.scope, k.operation, k.key, response],
            )?;
            Ok(())
        })
        .await
    }

    async fn abandon_idempotency(&self, key: &IdempotencyKey) -> Result<()> {
        let k = key.clone();
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM idempotency_keys WHERE scope = ?1 AND operation = ?2 AND key = ?3 AND response IS NULL",
                params![k.scope, k.operation, k.key],
            )?;
            Ok(())
        })
        .await
    }

    async fn prune_idempotency(&self, now: DateTime<Utc>) -> Result<u64> {
        self.write(move |tx| {
            let n = tx.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?1", [micros(now)])?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}
