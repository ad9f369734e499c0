//! Sessions and refresh tokens. (PostgreSQL)

use super::*;
use crate::storage::policy::{StoredRefreshToken, decide_rotation};

#[async_trait]
impl SessionStore for PostgresStorage {
    async fn insert_refresh_token(&self, t: RefreshTokenRecord) -> Result<bool> {
        let mut tx = self.begin().await?;
        let started = sqlx::query(
            "INSERT INTO sessions (id, user_id, version, started_at) \
             SELECT $1, id, session_version, $3 FROM users \
             WHERE id = $2 AND is_active AND ($4::bigint IS NULL OR session_version = $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&t.family)
        .bind(t.user_id.get())
        .bind(t.session_started_at)
        .bind(t.checked_version)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if started == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("INSERT INTO refresh_tokens (jti, family, user_id, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(&t.jti)
            .bind(&t.family)
            .bind(t.user_id.get())
            .bind(t.expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn rotate_refresh_token(
        &self,
        user_id: UserId,
        family: &str,
        old_jti: &str,
        new: RefreshTokenRecord,
        now: DateTime<Utc>,
    ) -> Result<RotateOutcome> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT family, user_id, expires_at, used_at IS NOT NULL AS used, revoked FROM refresh_tokens \
             WHERE jti = $1 FOR UPDATE",
        )
        .bind(old_jti)
        .fetch_optional(&mut *tx)
        .await?;
        let stored = row
            .map(|r| -> Result<StoredRefreshToken> {
                Ok(StoredRefreshToken {
                    family: r.try_get("family")?,
                    user_id: UserId::new(r.try_get("user_id")?),
                    expires_at: r.try_get("expires_at")?,
                    used: r.try_get("used")?,
                    revoked: r.try_get("revoked")?,
                })
            })
            .transpose()?;
        let live = match &stored {
            Some(t) => session_live(&mut tx, user_id, &t.family).await?,
            None => false,
        };
        let outcome = decide_rotation(stored.as_ref(), family, user_id, live, now);
        match outcome {
            RotateOutcome::Rejected => return Ok(outcome),
            RotateOutcome::ReuseDetected => {
                sqlx::query("UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1")
                    .bind(family)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(family)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            RotateOutcome::Rotated => {
                sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE jti = $1")
                    .bind(old_jti)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO refresh_tokens (jti, family, user_id, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(&new.jti)
                    .bind(family)
                    .bind(new.user_id.get())
                    .bind(new.expires_at)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn session_state(&self, user_id: UserId, session: &str) -> Result<Option<SessionState>> {
        let row = self
            .row(
                sqlx::query(
                    "SELECT u.id, u.username, u.email, u.is_staff, u.created_at, u.is_active, \
             (SELECT s.revoked_at IS NULL AND s.version = u.session_version AND u.is_active \
              FROM sessions s WHERE s.id = $2 AND s.user_id = u.id) AS live \
             FROM users u WHERE u.id = $1",
                )
                .bind(user_id.get())
                .bind(session.to_owned()),
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let live: Option<bool> = row.try_get("live")?;
        Ok(live.map(|live| user_from(&row).map(|user| SessionState { user, live })).transpose()?)
    }

    async fn live_sessions(&self, user_id: UserId, started_after: DateTime<Utc>) -> Result<u64> {
        let row = self
            .row(
                sqlx::query(
                    "SELECT COUNT(*) AS n FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.user_id = $1 \
                     AND s.revoked_at IS NULL AND s.version = u.session_version AND u.is_active AND s.started_at >= $2",
                )
                .bind(user_id.get())
                .bind(started_after),
            )
            .await?;
        let n: i64 = row.map(|r| r.try_get("n")).transpose()?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn revoke_session(&self, user_id: UserId, session: &str, at: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.begin().await?;
        let revoked =
            sqlx::query("UPDATE sessions SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL")
                .bind(session)
                .bind(user_id.get())
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        sqlx::query("UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1 AND user_id = $2")
            .bind(session)
            .bind(user_id.get())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revoked > 0)
    }

    async fn end_sessions(
        &self,
        user_id: UserId,
        keep: Option<&str>,
        password_hash: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        if let Some(hash) = &password_hash {
            sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                .bind(user_id.get())
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        let found = end_sessions_in(&mut tx, user_id, keep, at).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn prune_sessions(
        &self,
        tokens_expired_before: DateTime<Utc>,
        sessions_started_before: DateTime<Utc>,
    ) -> Result<u64> {
        let tokens = self
            .write(sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1").bind(tokens_expired_before))
            .await?
            .rows_affected();
        let sessions = self
            .write(
                sqlx::query(
                    "DELETE FROM sessions WHERE started_at < $1 \
                     AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family = sessions.id)",
                )
                .bind(sessions_started_before),
            )
            .await?
            .rows_affected();
        Ok(tokens + sessions)
    }
}
