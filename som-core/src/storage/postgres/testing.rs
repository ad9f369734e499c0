//! Throwaway databases for tests: each [`TestDatabase`] is created fresh on the server named by
//! an admin URL and dropped (with its connections) when the value is dropped.

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use crate::error::{Error, Result};

/// The variable naming the PostgreSQL server tests run against.
pub const TEST_URL_VAR: &str = "SOM_TEST_POSTGRES_URL";

/// The variable that makes a missing `SOM_TEST_POSTGRES_URL` fail the PostgreSQL tests instead
/// of skipping them (`.ci/run` sets it).
pub const REQUIRE_VAR: &str = "SOM_TEST_REQUIRE_POSTGRES";

/// The admin URL from `SOM_TEST_POSTGRES_URL`, or `None` when Postgres tests are not wanted.
///
/// # Panics
///
/// When `SOM_TEST_REQUIRE_POSTGRES` is set (and not `0`) but `SOM_TEST_POSTGRES_URL` is not:
/// a run that must test PostgreSQL never passes by skipping it.
pub fn admin_url() -> Option<String> {
    let url = std::env::var(TEST_URL_VAR).ok().filter(|v| !v.trim().is_empty());
    let required = std::env::var(REQUIRE_VAR).is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0");
    if url.is_none() && required {
        panic!("{REQUIRE_VAR} is set but {TEST_URL_VAR} is not: the PostgreSQL tests cannot run");
    }
    url
}

/// A freshly created database, dropped on drop.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

/// `admin_url` with its database path replaced by `name`.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

impl TestDatabase {
    /// Creates `som_test_<random>` on the server of `admin_url`. Fails (never skips) when the
    /// server is unreachable.
    pub async fn create(admin_url: &str) -> Result<TestDatabase> {
        let name = format!("som_test_{}", crate::util::random_token(8));
        let mut admin = PgConnection::connect(admin_url).await?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await?;
        let _ = admin.close().await;
        Ok(TestDatabase { url: with_database(admin_url, &name), admin_url: admin_url.to_owned(), name })
    }

    /// The URL of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits (at most `limit`) until no session but the caller's is connected to this database:
    /// after a client is killed, its sessions end only once they have finished what they were
    /// doing (a `COMMIT` already sent still commits), so what the database holds is settled.
    pub async fn wait_until_unused(&self, limit: std::time::Duration) -> Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            let sessions: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&self.name)
            .fetch_one(&mut admin)
            .await?;
            if sessions == 0 {
                let _ = admin.close().await;
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Internal(format!("{sessions} sessions still connected to {}", self.name)));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Terminates every connection to this database (to simulate an outage).
    pub async fn terminate_connections(&self) -> Result<u64> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        let n = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .execute(&mut admin)
        .await?
        .rows_affected();
        let _ = admin.close().await;
        Ok(n)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Dropping runs on its own thread and runtime: Drop cannot await.
        let dropped = std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Internal(e.to_string()))?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                    .execute(&mut admin)
                    .await?;
                Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_replaces_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://u:p@h/db?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://h:5432", "x"), "postgres://h:5432/x");
    }
}
