//! Accounts. (PostgreSQL)

use super::*;
use crate::storage::Credentials;
use crate::storage::UserInsert;

#[async_trait]
impl UserStore for PostgresStorage {
    async fn insert_user(&self, user: NewUserRecord) -> Result<UserInsert> {
        let inserted = sqlx::query(
            "INSERT INTO users (username, email, password_hash, is_staff, created_at) VALUES ($1, $2, $3, $4, $5) \
             RETURNING id, username, email, is_staff, created_at, is_active",
        )
        .bind(user.username.as_str())
        .bind(user.email.as_ref().map(Email::as_str))
        .bind(&user.password_hash)
        .bind(user.is_staff)
        .bind(truncate(user.created_at))
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(row) => user_from(&row).map(UserInsert::Inserted),
            Err(e) if is_unique_violation(&e) => {
                let taken_name: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)")
                    .bind(user.username.as_str())
                    .fetch_one(&self.pool)
                    .await?;
                let mut taken_email = false;
                if let Some(email) = &user.email {
                    taken_email = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE email = $1)")
                        .bind(email.as_str())
                        .fetch_one(&self.pool)
                        .await?;
                }
                if taken_name || taken_email {
                    Ok(UserInsert::Taken { username: taken_name, email: taken_email })
                } else {
                    Err(e.into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        let mut conn = self.readers.get().await?;
        let user = user_where(
            &mut conn,
            "SELECT id, username, email, is_staff, created_at, is_active FROM users WHERE id = $1",
            UserKey::Id(id.get()),
        )
        .await;
        conn.finish(user)
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let mut conn = self.pool.acquire().await?;
        user_where(
            &mut conn,
            "SELECT id, username, email, is_staff, created_at, is_active FROM users WHERE username = $1",
            UserKey::Name(username),
        )
        .await
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let row = sqlx::query(
            "SELECT id, username, email, is_staff, created_at, is_active, password_hash, \
             session_version::bigint AS session_version FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Credentials {
                user: user_from(&r)?,
                password_hash: r.try_get("password_hash")?,
                session_version: r.try_get("session_version")?,
            })
        })
        .transpose()
    }

    async fn list_users(&self, q: UserQuery) -> Result<Vec<User>> {
        let rows = sqlx::query(
            "SELECT id, username, email, is_staff, created_at, is_active FROM users WHERE id > $1 \
             AND ($3::text IS NULL OR lower(username) LIKE $3 ESCAPE '\\' OR lower(email) LIKE $3 ESCAPE '\\') \
             AND (NOT $4 OR (is_staff AND is_active)) ORDER BY id LIMIT $2",
        )
        .bind(q.after.map_or(0, UserId::get))
        .bind(i64::from(q.limit))
        .bind(q.prefix.as_deref().map(like_prefix))
        .bind(q.active_staff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from).collect()
    }

    async fn set_staff(&self, id: UserId, is_staff: bool) -> Result<Option<Transition<User>>> {
        let mut tx = self.begin().await?;
        lock_staff_changes(&mut tx).await?;
        let changed = sqlx::query(SET_STAFF).bind(id.get()).bind(is_staff).execute(&mut *tx).await?.rows_affected();
        let user = user_where(&mut tx, USER_BY_ID, UserKey::Id(id.get())).await?;
        tx.commit().await?;
        Ok(user.map(|u| transition(changed, u)))
    }

    async fn set_active(&self, id: UserId, is_active: bool, at: DateTime<Utc>) -> Result<Option<Transition<User>>> {
        let mut tx = self.begin().await?;
        lock_staff_changes(&mut tx).await?;
        let changed = sqlx::query(SET_ACTIVE).bind(id.get()).bind(is_active).execute(&mut *tx).await?.rows_affected();
        if !is_active && changed == 1 {
            end_sessions_in(&mut tx, id, None, at).await?;
        }
        let user = user_where(&mut tx, USER_BY_ID, UserKey::Id(id.get())).await?;
        tx.commit().await?;
        Ok(user.map(|u| transition(changed, u)))
    }
}

const USER_BY_ID: &str = "SELECT id, username, email, is_staff, created_at, is_active FROM users WHERE id = $1";

// Granting, or enabling, always; revoking, or disabling, only when user `$1` is not an active
// staff account or another active staff account remains.
const SET_STAFF: &str = "UPDATE users SET is_staff = $2 WHERE id = $1 AND ($2 OR NOT (is_staff AND is_active) \
     OR EXISTS (SELECT 1 FROM users AS other WHERE other.is_staff AND other.is_active AND other.id <> $1))";
const SET_ACTIVE: &str = "UPDATE users SET is_active = $2 WHERE id = $1 AND ($2 OR NOT (is_staff AND is_active) \
     OR EXISTS (SELECT 1 FROM users AS other WHERE other.is_staff AND other.is_active AND other.id <> $1))";

/// Serialises changes to staff rights and accounts' activity across connections and processes
/// until the transaction ends: under READ COMMITTED two concurrent demotions would each see the
/// other's account still staff and both succeed.
async fn lock_staff_changes(tx: &mut Tx) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(STAFF_CHANGES_LOCK).execute(&mut **tx).await?;
    Ok(())
}

/// The advisory lock key of staff changes ("SOMstaff").
const STAFF_CHANGES_LOCK: i64 = 0x534f_4d73_7461_6666;

fn transition(changed: u64, user: User) -> Transition<User> {
    if changed == 1 { Transition::Applied(user) } else { Transition::NotApplied(user) }
}
