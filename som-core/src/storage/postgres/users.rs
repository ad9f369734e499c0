//! Accounts. (PostgreSQL)

use super::*;
use crate::storage::Credentials;
use crate::storage::UserInsert;

#[async_trait]
impl UserStore for PostgresStorage {
    async fn insert_user(&self, user: NewUserRecord) -> Result<UserInsert> {
        let insert = sqlx::query(
            "INSERT INTO users (username, email, password_hash, is_staff, created_at) VALUES ($1, $2, $3, $4, $5) \
             RETURNING id, username, email, is_staff, created_at, is_active",
        )
        .bind(user.username.as_str().to_owned())
        .bind(user.email.as_ref().map(|e| e.as_str().to_owned()))
        .bind(user.password_hash.clone())
        .bind(user.is_staff)
        .bind(truncate(user.created_at));
        // `None` when a unique index refused the row (an answer like any other).
        let inserted = self
            .write_with(|mut conn| async move {
                match insert.fetch_one(&mut *conn).await {
                    Err(e) if is_unique_violation(&e) => conn.finish(Ok::<_, sqlx::Error>(None)),
                    done => conn.finish(done.map(Some)),
                }
            })
            .await?;
        if let Some(row) = inserted {
            return user_from(&row).map(UserInsert::Inserted);
        }
        let exists = |sql: &'static str, value: &str| {
            let query = sqlx::query(sql).bind(value.to_owned());
            async move {
                Ok::<_, Error>(self.row(query).await?.map(|r| r.try_get::<bool, _>(0)).transpose()?.unwrap_or(false))
            }
        };
        let taken_name =
            exists("SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)", user.username.as_str()).await?;
        let taken_email = match &user.email {
            Some(email) => exists("SELECT EXISTS (SELECT 1 FROM users WHERE email = $1)", email.as_str()).await?,
            None => false,
        };
        if taken_name || taken_email {
            Ok(UserInsert::Taken { username: taken_name, email: taken_email })
        } else {
            Err(Error::Internal(
                "postgres: a unique index refused the account, yet neither name nor email is taken".into(),
            ))
        }
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        self.read(move |mut conn| async move {
            let user = user_where(
                &mut conn,
                "SELECT id, username, email, is_staff, created_at, is_active FROM users WHERE id = $1",
                UserKey::Id(id.get()),
            )
            .await;
            conn.finish(user)
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let username = username.to_owned();
        self.read(move |mut conn| async move {
            let user = user_where(
                &mut conn,
                "SELECT id, username, email, is_staff, created_at, is_active FROM users WHERE username = $1",
                UserKey::Name(&username),
            )
            .await;
            conn.finish(user)
        })
        .await
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let row = self
            .row(
                sqlx::query(
                    "SELECT id, username, email, is_staff, created_at, is_active, password_hash, \
                     session_version::bigint AS session_version FROM users WHERE username = $1",
                )
                .bind(username.to_owned()),
            )
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
        let rows = self
            .rows(
                sqlx::query(
                    "SELECT id, username, email, is_staff, created_at, is_active FROM users WHERE id > $1 \
                     AND ($3::text IS NULL OR lower(username) LIKE $3 ESCAPE '\\' \
                     OR lower(email) LIKE $3 ESCAPE '\\') AND (NOT $4 OR (is_staff AND is_active)) ORDER BY id LIMIT $2",
                )
                .bind(q.after.map_or(0, UserId::get))
                .bind(i64::from(q.limit))
                .bind(q.prefix.as_deref().map(like_prefix))
                .bind(q.active_staff),
            )
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
async fn lock_staff_changes(tx: &mut Tx<'_>) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(STAFF_CHANGES_LOCK).execute(&mut **tx).await?;
    Ok(())
}

/// The advisory lock key of staff changes ("SOMstaff").
const STAFF_CHANGES_LOCK: i64 = 0x534f_4d73_7461_6666;

fn transition(changed: u64, user: User) -> Transition<User> {
    if changed == 1 { Transition::Applied(user) } else { Transition::NotApplied(user) }
}
