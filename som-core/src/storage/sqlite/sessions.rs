//! Sessions and refresh tokens. (SQLite)

use super::*;
use crate::storage::policy::{StoredRefreshToken, decide_rotation};

#[async_trait]
impl SessionStore for SqliteStorage {
    async fn insert_refresh_token(&self, t: RefreshTokenRecord) -> Result<bool> {
        self.write(move |tx| {
            let started = tx.execute(
                "INSERT INTO sessions (id, user_id, version, started_at) \
                 SELECT ?1, id, session_version, ?3 FROM users \
                 WHERE id = ?2 AND is_active AND (?4 IS NULL OR session_version = ?4) ON CONFLICT (id) DO NOTHING",
                params![t.family, t.user_id.get(), micros(t.session_started_at), t.checked_version],
            )?;
            if started == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO refresh_tokens (jti, family, user_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![t.jti, t.family, t.user_id.get(), micros(t.expires_at)],
            )?;
            Ok(true)
        })
        .await
    }

    async fn rotate_refresh_token(
        &self,
        user_id: UserId,
        family: &str,
        old_jti: &str,
        new: RefreshTokenRecord,
        now: DateTime<Utc>,
    ) -> Result<RotateOutcome> {
        let (family, old_jti) = (family.to_owned(), old_jti.to_owned());
        self.write(move |tx| {
            let stored = tx
                .query_row(
                    "SELECT family, user_id, expires_at, used_at IS NOT NULL, revoked FROM refresh_tokens WHERE jti = ?1",
                    [&old_jti],
                    |r| {
                        Ok(StoredRefreshToken {
                            family: r.get(0)?,
                            user_id: UserId::new(r.get(1)?),
                            expires_at: time(r.get(2)?),
                            used: r.get(3)?,
                            revoked: r.get(4)?,
                        })
                    },
                )
                .optional()?;
            let live = match &stored {
                Some(t) => session_live(tx, user_id, &t.family)?,
                None => false,
            };
            let outcome = decide_rotation(stored.as_ref(), &family, user_id, live, now);
            match outcome {
                RotateOutcome::Rejected => {}
                RotateOutcome::ReuseDetected => {
                    tx.execute("UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1", [&family])?;
                    tx.execute(
                        "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                        params![family, micros(now)],
                    )?;
                }
                RotateOutcome::Rotated => {
                    tx.execute(
                        "UPDATE refresh_tokens SET used_at = ?2 WHERE jti = ?1 AND used_at IS NULL",
                        params![old_jti, micros(now)],
                    )?;
                    tx.execute(
                        "INSERT INTO refresh_tokens (jti, family, user_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
                        params![new.jti, family, new.user_id.get(), micros(new.expires_at)],
                    )?;
                }
            }
            Ok(outcome)
        })
        .await
    }

    async fn session_state(&self, user_id: UserId, session: &str) -> Result<Option<SessionState>> {
        let session = session.to_owned();
        self.read_indexed(move |c| {
            let Some(user) = query_user(c, "id = ?1", &user_id.get())? else { return Ok(None) };
            let live: Option<bool> = c
                .prepare_cached(
                    "SELECT s.revoked_at IS NULL AND s.version = u.session_version AND u.is_active \
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?1 AND s.user_id = ?2",
                )?
                .query_row(params![session, user_id.get()], |r| r.get(0))
                .optional()?;
            Ok(live.map(|live| SessionState { user, live }))
        })
        .await
    }

    async fn live_sessions(&self, user_id: UserId, started_after: DateTime<Utc>) -> Result<u64> {
        self.read_statement(move |c| {
            let n: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.user_id = ?1 \
                     AND s.revoked_at IS NULL AND s.version = u.session_version AND u.is_active AND s.started_at >= ?2",
                )?
                .query_row(params![user_id.get(), micros(started_after)], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn revoke_session(&self, user_id: UserId, session: &str, at: DateTime<Utc>) -> Result<bool> {
        let session = session.to_owned();
        self.write(move |tx| {
            let revoked = tx.execute(
                "UPDATE sessions SET revoked_at = ?3 WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL",
                params![session, user_id.get(), micros(at)],
            )?;
            tx.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1 AND user_id = ?2",
                params![session, user_id.get()],
            )?;
            Ok(revoked > 0)
        })
        .await
    }

    async fn end_sessions(
        &self,
        user_id: UserId,
        keep: Option<&str>,
        password_hash: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let keep = keep.map(str::to_owned);
        self.write(move |tx| {
            if let Some(hash) = &password_hash {
                tx.execute("UPDATE users SET password_hash = ?2 WHERE id = ?1", params![user_id.get(), hash])?;
            }
            end_sessions_in(tx, user_id, keep.as_deref(), at)
        })
        .await
    }

    async fn prune_sessions(
        &self,
        tokens_expired_before: DateTime<Utc>,
        sessions_started_before: DateTime<Utc>,
    ) -> Result<u64> {
        self.write(move |tx| {
            let tokens =
                tx.execute("DELETE FROM refresh_tokens WHERE expires_at < ?1", [micros(tokens_expired_before)])?;
            let sessions = tx.execute(
                "DELETE FROM sessions WHERE started_at < ?1 \
                 AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family = sessions.id)",
                [micros(sessions_started_before)],
            )?;
            Ok(u64::try_from(tokens + sessions).unwrap_or(u64::MAX))
        })
        .await
    }
}

/// Revokes every live session of `user_id` but `keep` (and their refresh tokens), moves the
/// user's session version on and keeps `keep` at the new version. False when there is no such
/// user.
pub(super) fn end_sessions_in(
    tx: &Transaction<'_>,
    user_id: UserId,
    keep: Option<&str>,
    at: DateTime<Utc>,
) -> Result<bool> {
    let bumped = tx.execute("UPDATE users SET session_version = session_version + 1 WHERE id = ?1", [user_id.get()])?;
    if bumped == 0 {
        return Ok(false);
    }
    let keep = keep.unwrap_or("");
    tx.execute(
        "UPDATE refresh_tokens SET revoked = 1 WHERE user_id = ?1 AND family <> ?2 AND revoked = 0",
        params![user_id.get(), keep],
    )?;
    tx.execute(
        "UPDATE sessions SET revoked_at = ?3 WHERE user_id = ?1 AND id <> ?2 AND revoked_at IS NULL",
        params![user_id.get(), keep, micros(at)],
    )?;
    tx.execute(
        "UPDATE sessions SET version = (SELECT session_version FROM users WHERE id = ?1) \
         WHERE user_id = ?1 AND id = ?2 AND revoked_at IS NULL",
        params![user_id.get(), keep],
    )?;
    Ok(true)
}
