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

/// A private PostgreSQL primary with one streaming hot standby, each on a port of its own, in a
/// temporary directory removed (and both servers stopped) on drop: for replica and failover
/// tests. Built from the server's own tools (`initdb`, `pg_ctl`, `pg_basebackup` from
/// `pg_config --bindir`), run as the `postgres` user when the tests run as root.
#[derive(Debug)]
pub struct Cluster {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    primary_port: u16,
    replica_port: u16,
}

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}

impl Cluster {
    /// Starts the primary and its replica (a few seconds). `None` when PostgreSQL tests are not
    /// wanted (see [`admin_url`]).
    ///
    /// # Panics
    ///
    /// When PostgreSQL tests are wanted but the servers cannot be made: the tests must not
    /// pass by skipping.
    pub fn start() -> Option<Cluster> {
        admin_url()?;
        // Debian keeps the server's tools off PATH, under /usr/lib/postgresql/<version>/bin.
        let bin = std::process::Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|b| b.join("initdb").exists())
            .or_else(|| {
                let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|b| b.join("initdb").exists())
                    .collect();
                found.sort();
                found.pop()
            })
            .unwrap_or_else(|| panic!("no initdb found (pg_config --bindir, /usr/lib/postgresql/*/bin)"));
        let dir = std::env::temp_dir().join(format!("som-cluster-{}", crate::util::random_token(8)));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let cluster = Cluster { dir, bin, primary_port: free_port(), replica_port: free_port() };
        if running_as_root() {
            cluster.sh(&["chown", "postgres:postgres", &cluster.path("")]);
        }
        cluster.tool("initdb", &["-D", &cluster.path("primary"), "-A", "trust", "-U", "postgres", "--no-sync"]);
        let conf = "\nfsync = off\nsynchronous_commit = on\nmax_wal_senders = 4\nhot_standby = on\n";
        append(&cluster.path("primary/postgresql.conf"), conf);
        append(&cluster.path("primary/pg_hba.conf"), "\nhost replication all 127.0.0.1/32 trust\n");
        cluster.start_primary();
        cluster.tool(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &cluster.primary_port.to_string(),
                "-U",
                "postgres",
                "-D",
                &cluster.path("replica"),
                "-R",
                "-X",
                "stream",
            ],
        );
        cluster.start_replica();
        Some(cluster)
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_string_lossy().into_owned()
    }

    fn url(port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }

    /// The primary's URL.
    pub fn primary_url(&self) -> String {
        Cluster::url(self.primary_port)
    }

    /// The replica's URL.
    pub fn replica_url(&self) -> String {
        Cluster::url(self.replica_port)
    }

    /// The primary's port.
    pub fn primary_port(&self) -> u16 {
        self.primary_port
    }

    /// Runs a command as root would (`chown`), panicking on failure.
    fn sh(&self, args: &[&str]) {
        let status = std::process::Command::new(args[0]).args(&args[1..]).status();
        assert!(status.is_ok_and(|s| s.success()), "{args:?} failed");
    }

    /// One of the server's tools, to be run as the `postgres` user.
    fn command(&self, name: &str) -> std::process::Command {
        let tool = self.bin.join(name);
        if running_as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&tool);
            c
        } else {
            std::process::Command::new(&tool)
        }
    }

    /// Runs one of the server's tools as the `postgres` user, panicking on failure.
    fn tool(&self, name: &str, args: &[&str]) {
        let out = self.command(name).args(args).stdin(std::process::Stdio::null()).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "{name} {args:?} failed: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("{name}: {e}"),
        }
    }

    fn pg_ctl_start(&self, data: &str, port: u16) {
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", self.path(""));
        let log = self.path(&format!("{data}.log"));
        self.tool("pg_ctl", &["-D", &self.path(data), "-l", &log, "-o", &options, "-w", "-t", "60", "start"]);
    }

    fn pg_ctl_stop(&self, data: &str, mode: &str) {
        self.tool("pg_ctl", &["-D", &self.path(data), "-m", mode, "-w", "stop"]);
    }

    /// Starts the primary (again).
    pub fn start_primary(&self) {
        self.pg_ctl_start("primary", self.primary_port);
    }

    /// Stops the primary: `fast` (sessions ended, a clean shutdown) or `immediate` (a crash).
    pub fn stop_primary(&self, mode: &str) {
        self.pg_ctl_stop("primary", mode);
    }

    /// Starts the replica (again).
    pub fn start_replica(&self) {
        self.pg_ctl_start("replica", self.replica_port);
    }

    /// Stops the replica.
    pub fn stop_replica(&self) {
        self.pg_ctl_stop("replica", "fast");
    }

    /// The directory the servers keep their files and sockets in.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

/// PgBouncer (the Debian package's `pgbouncer`) on a port of its own in front of the server at
/// `127.0.0.1:upstream_port`, every database passed through, stopped on drop.
#[derive(Debug)]
pub struct Bouncer {
    child: std::process::Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Bouncer {
    /// Starts PgBouncer in `pool_mode` (`session` or `transaction`) and waits until it accepts
    /// connections. `None` when PostgreSQL tests are not wanted.
    ///
    /// # Panics
    ///
    /// When PostgreSQL tests are wanted but `pgbouncer` cannot be started.
    pub fn start(upstream_port: u16, pool_mode: &str) -> Option<Bouncer> {
        admin_url()?;
        let dir = std::env::temp_dir().join(format!("som-pgbouncer-{}", crate::util::random_token(8)));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let port = free_port();
        let d = dir.to_string_lossy();
        // sqlx sends extra_float_digits and SOM sends options (client_min_messages) at start-up:
        // PgBouncer refuses start-up parameters it does not know unless told to ignore them.
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port={upstream_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {d}/users.txt\n\
             pool_mode = {pool_mode}\nmax_client_conn = 500\ndefault_pool_size = 40\n\
             ignore_startup_parameters = extra_float_digits,options\nlogfile = {d}/pgbouncer.log\n"
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap_or_else(|e| panic!("pgbouncer.ini: {e}"));
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap_or_else(|e| panic!("users.txt: {e}"));
        let ini = dir.join("pgbouncer.ini");
        // Debian installs it in /usr/sbin, which is not on every user's PATH.
        let program = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("pgbouncer");
        let mut command = if running_as_root() {
            // PgBouncer will not run as root.
            let status = std::process::Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status();
            assert!(status.is_ok_and(|s| s.success()), "chown {}", dir.display());
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            std::process::Command::new(program)
        };
        let child = command
            .arg(&ini)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting pgbouncer (Debian package pgbouncer): {e}"));
        let bouncer = Bouncer { child, dir, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "pgbouncer did not start listening");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(bouncer)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        // runuser passes the signal on to PgBouncer.
        let _ = std::process::Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn append(path: &str, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    f.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("{path}: {e}"));
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for data in ["replica", "primary"] {
            let _ = self
                .command("pg_ctl")
                .args(["-D", &self.path(data), "-m", "immediate", "-w", "stop"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
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
