//! Accounts. (SQLite)

use super::*;
use crate::storage::Credentials;
use crate::storage::UserInsert;

#[async_trait]
impl UserStore for SqliteStorage {
    async fn insert_user(&self, user: NewUserRecord) -> Result<UserInsert> {
        self.write(move |tx| {
            let inserted = tx.execute(
                "INSERT INTO users (username, email, password_hash, is_staff, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    user.username.as_str(),
                    user.email.as_ref().map(Email::as_str),
                    user.password_hash,
                    user.is_staff,
                    micros(user.created_at)
                ],
            );
            match inserted {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    let taken = |sql: &str, value: Option<&str>| -> Result<bool> {
                        Ok(value.is_some() && tx.query_row(sql, [value], |_| Ok(())).optional()?.is_some())
                    };
                    let username = taken("SELECT 1 FROM users WHERE username = ?1", Some(user.username.as_str()))?;
                    let email = taken("SELECT 1 FROM users WHERE email = ?1", user.email.as_ref().map(Email::as_str))?;
                    return if username || email { Ok(UserInsert::Taken { username, email }) } else { Err(e.into()) };
                }
                Err(e) => return Err(e.into()),
            }
            let user = query_user(tx, "id = ?1", &tx.last_insert_rowid())?.ok_or_else(|| corrupt("inserted user"))?;
            Ok(UserInsert::Inserted(user))
        })
        .await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        self.read_statement(move |c| query_user(c, "id = ?1", &id.get())).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let username = username.to_owned();
        self.read_statement(move |c| query_user(c, "username = ?1", &username)).await
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let username = username.to_owned();
        self.read_statement(move |c| {
            let sql = format!("SELECT {USER_COLUMNS}, password_hash, session_version FROM users WHERE username = ?1");
            let row = c
                .prepare_cached(&sql)?
                .query_row([&username], |r| Ok((user_from_row(r)?, r.get::<_, String>(6)?, r.get::<_, i64>(7)?)))
                .optional()?;
            row.map(|(u, password_hash, session_version)| {
                Ok(Credentials { user: build_user(u)?, password_hash, session_version })
            })
            .transpose()
        })
        .await
    }

    async fn list_users(&self, q: UserQuery) -> Result<Vec<User>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id > ?1 \
                 AND (?2 IS NULL OR lower(username) LIKE ?2 ESCAPE '\\' OR lower(email) LIKE ?2 ESCAPE '\\') \
                 AND (?4 = 0 OR (is_staff AND is_active)) ORDER BY id LIMIT ?3"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let pattern = q.prefix.as_deref().map(like_prefix);
            let rows = stmt
                .query_map(params![q.after.map_or(0, UserId::get), pattern, q.limit, q.active_staff], user_from_row)?;
            rows.map(|r| build_user(r?)).collect()
        })
        .await
    }

    async fn set_staff(&self, id: UserId, is_staff: bool) -> Result<Option<Transition<User>>> {
        self.write(move |tx| {
            let sql = format!("UPDATE users SET is_staff = ?2 WHERE id = ?1 AND (?2 OR {KEEPS_ACTIVE_STAFF})");
            let changed = tx.execute(&sql, params![id.get(), is_staff])?;
            Ok(query_user(tx, "id = ?1", &id.get())?.map(|u| transition(changed, u)))
        })
        .await
    }

    async fn set_active(&self, id: UserId, is_active: bool, at: DateTime<Utc>) -> Result<Option<Transition<User>>> {
        self.write(move |tx| {
            let sql = format!("UPDATE users SET is_active = ?2 WHERE id = ?1 AND (?2 OR {KEEPS_ACTIVE_STAFF})");
            let changed = tx.execute(&sql, params![id.get(), is_active])?;
            if !is_active && changed == 1 {
                end_sessions_in(tx, id, None, at)?;
            }
            Ok(query_user(tx, "id = ?1", &id.get())?.map(|u| transition(changed, u)))
        })
        .await
    }
}

/// True when user `?1` is not an active staff account, or another active staff account remains:
/// the condition under which it may lose its staff rights or be disabled. SQLite has one
/// writer, so the check and the update cannot interleave with another change.
const KEEPS_ACTIVE_STAFF: &str = "(NOT (is_staff AND is_active) \
     OR EXISTS (SELECT 1 FROM users AS other WHERE other.is_staff AND other.is_active AND other.id <> ?1))";

fn transition(changed: usize, user: User) -> Transition<User> {
    if changed == 1 { Transition::Applied(user) } else { Transition::NotApplied(user) }
}
