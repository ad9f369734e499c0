//! The `som` binary driven as an operator would: real processes on a temporary database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub(crate) struct Som {
    dir: tempfile::TempDir,
    url: String,
    env: Vec<(String, String)>,
}

impl Som {
    pub(crate) fn new() -> Som {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("som.db").display());
        Som { dir, url, env: Vec::new() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_som"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("SOM_DATABASE_URL", &self.url)
            .env("SOM_LOG", "warn")
            .env_remove("SOM_NOTIFIER")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child =
            self.cmd(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "som {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("som {args:?} printed non-JSON ({e}): {text}"))
    }

    pub(crate) fn fails(&self, args: &[&str], code: i32, message: &str) {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "som {args:?}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: ") && last.contains(message), "som {args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    }

    pub(crate) fn user(&self, name: &str) -> Value {
        let email = format!("{name}@example.com");
        let out = self.run_stdin(
            &["users", "create", name, "--email", &email, "--password-stdin", "--json"],
            "correct horse battery\n",
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[test]
fn the_operator_scenario_pays_an_order_and_delivers_its_notifications() {
    scenario(&Som::new(), "sqlite");
}

#[tokio::test]
async fn the_operator_scenario_works_on_postgres() {
    let Some(admin) = som_core::testing::admin_url() else {
        eprintln!("SOM_TEST_POSTGRES_URL is not set: skipping the Postgres scenario");
        return;
    };
    let db = som_core::testing::TestDatabase::create(&admin).await.expect("Postgres unreachable");
    let mut som = Som::new();
    som.url = db.url().to_owned();
    tokio::task::spawn_blocking(move || scenario(&som, "postgres")).await.unwrap();
    drop(db);
}

fn scenario(som: &Som, backend: &str) {
    let migrated = som.json(&["migrate"]);
    assert_eq!((migrated["backend"].as_str(), migrated["schema_version"].as_i64()), (Some(backend), Some(10)));
    let alice = som.user("alice");
    assert_eq!((alice["username"].as_str(), alice["is_staff"].as_bool()), (Some("alice"), Some(false)));
    let order =
        som.json(&["orders", "create", "--user", "alice", "--item", "Widget:2:100.00", "--item", "Gadget:1:50.00"]);
    assert_eq!(order["total_amount"], "250.00");
    assert_eq!(order["items"][0]["name"], "Widget");
    let id = order["id"].to_string();
    let payment = som.json(&["pay", "initiate", &id]);
    assert_eq!((payment["status"].as_str(), payment["amount"].as_str()), (Some("PENDING"), Some("250.00")));
    let pid = payment["id"].to_string();
    let confirmed = som.json(&["pay", "confirm", &pid]);
    assert_eq!(confirmed["status"], "SUCCESS");
    let shown = som.json(&["orders", "show", &id]);
    let summary = (shown["status"].as_str(), shown["total_amount"].as_str(), shown["currency"].as_str());
    assert_eq!(summary, (Some("PAID"), Some("250.00"), Some("USD")));
    let pending = som.json(&["notifications", "list", "--status", "pending"]);
    assert_eq!(pending["items"].as_array().map(Vec::len), Some(2));
    let worked = som.json(&["worker", "--once"]);
    assert_eq!(worked["handled"], 2);
    let sent = som.json(&["notifications", "list", "--status", "sent"]);
    let kinds: Vec<&str> = sent["items"].as_array().unwrap().iter().filter_map(|n| n["kind"].as_str()).collect();
    assert!(sent["items"][0]["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{sent}");
    assert_eq!(kinds, vec!["order_created", "payment_succeeded"]);
    let history = som.json(&["orders", "history", &id]);
    assert_eq!(history["items"].as_array().map(Vec::len), Some(2));
    assert!(history["next_cursor"].is_null());
    let latest = som.json(&["orders", "latest", "--user", "alice"]);
    assert_eq!(latest["id"], order["id"]);
    let human = som.ok(&["orders", "show", &id]);
    assert!(human.contains("250.00 USD") && human.contains("PAID"), "{human}");
    // The export: CSV to stdout, NDJSON of the paid ones as the API shows them.
    som.json(&["orders", "create", "--user", "alice", "--item", "Gadget:3:1.00"]);
    let csv = som.ok(&["orders", "export", "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("id,user,status,") && lines[2].starts_with(&format!("{id},")), "{csv}");
    assert!(lines[2].ends_with(",2,2 x Widget @ 100.00; 1 x Gadget @ 50.00"), "{csv}");
    let ndjson = som.ok(&["orders", "export", "--format", "ndjson", "--status", "PAID"]);
    let paid: Vec<serde_json::Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(paid.len(), 1);
    assert_eq!((paid[0]["id"].to_string(), paid[0]["items"][1]["name"].as_str()), (id.clone(), Some("Gadget")));
    // --json: refused on stdout, where the export is a format of its own; with --output, what
    // was written.
    som.fails(&["orders", "export", "--json"], 2, "--json applies only with --output");
    let written = som.json(&["orders", "export", "--format", "ndjson", "--status", "PAID", "--output", "paid.ndjson"]);
    assert_eq!((written["exported"].as_u64(), written["path"].as_str()), (Some(1), Some("paid.ndjson")), "{written}");
    let file = std::fs::read_to_string(som.dir.path().join("paid.ndjson")).unwrap();
    assert_eq!(file, ndjson, "the file holds what stdout would have");
}

#[test]
fn serve_with_json_prints_where_it_listens_as_one_json_line() {
    use std::io::{BufRead, BufReader, Read};
    let som = Som::new();
    let mut child = som.cmd(&["serve", "--listen", "127.0.0.1:0", "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let started: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let addr = started["listening"].as_str().and_then(|l| l.strip_prefix("http://")).unwrap().to_owned();
    assert_eq!(started["docs"].as_str(), Some(format!("http://{addr}/api/docs/").as_str()), "{started}");
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn users_can_be_listed_shown_and_promoted() {
    let som = Som::new();
    som.user("alice");
    som.user("bob");
    let list = som.json(&["users", "list"]);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    let first = som.json(&["users", "list", "--limit", "1"]);
    assert_eq!(first["items"][0]["username"], "alice");
    let next = first["next_cursor"].as_str().unwrap().to_owned();
    let second = som.json(&["users", "list", "--limit", "1", "--cursor", &next]);
    assert_eq!((second["items"][0]["username"].as_str(), second["next_cursor"].as_str()), (Some("bob"), None));
    let shown = som.json(&["users", "show", "bob"]);
    assert_eq!(shown["email"], "bob@example.com");
    let promoted = som.json(&["users", "set-staff", "bob", "true"]);
    assert_eq!(promoted["is_staff"], true);
    assert_eq!(som.json(&["users", "show", &shown["id"].to_string()])["is_staff"], true);
    let tokens = som.json(&["token", "issue", "--user", "alice"]);
    assert!(tokens["access"].as_str().is_some_and(|t| t.split('.').count() == 3));
    let table = som.ok(&["users", "list"]);
    assert!(table.contains("alice") && table.contains("bob"));
}

#[test]
fn accounts_can_be_disabled_enabled_and_logged_out_everywhere() {
    let som = Som::new();
    som.user("alice");
    let disabled = som.json(&["users", "disable", "alice"]);
    assert_eq!(disabled["is_active"], false);
    som.fails(&["token", "issue", "--user", "alice"], 1, "disabled");
    assert!(som.ok(&["users", "list"]).contains("false"), "the table shows the account inactive");
    let enabled = som.json(&["users", "enable", "alice"]);
    assert_eq!(enabled["is_active"], true, "{enabled}");
    som.json(&["token", "issue", "--user", "alice"]);
    let revoked = som.json(&["users", "revoke-sessions", "alice"]);
    assert_eq!(revoked["username"], "alice");
    som.fails(&["users", "disable", "nobody"], 1, "not found");
}

#[test]
fn errors_are_one_line_with_the_documented_exit_codes() {
    let som = Som::new();
    som.user("alice");
    som.fails(&["orders", "show", "999"], 1, "order 999 not found");
    som.fails(&["users", "show", "nobody"], 1, "not found");
    som.fails(&["orders", "create", "--user", "alice", "--item", "Widget:2:1.001"], 1, "items[0].price");
    som.fails(
        &["orders", "create", "--user", "alice", "--currency", "JPY", "--item", "Widget:2:100.5"],
        1,
        "JPY has no minor unit; use a whole number",
    );
    for (item, half) in [("Widget:two:100", "quantity"), ("Widget:2:abc", "price")] {
        let out = som.run(&["orders", "create", "--user", "alice", "--item", item]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{item}: {stderr}");
        assert!(stderr.contains(half), "{item}: {stderr}");
    }
    som.fails(&["orders", "create", "--user", "alice", "--item", "Widget:0:1"], 1, "items[0].quantity");
    som.fails(&["orders", "create", "--user", "ghost", "--item", "Widget:1:1"], 1, "not found");
    let dup = som.run_stdin(&["users", "create", "alice", "--password-stdin"], "correct horse battery\n");
    assert_eq!(dup.status.code(), Some(1));
    let weak = som.run_stdin(&["users", "create", "carol", "--password-stdin"], "12345678\n");
    assert_eq!(weak.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("password"));
    let order = som.json(&["orders", "create", "--user", "alice", "--item", "Widget:1:5"]);
    let id = order["id"].to_string();
    som.ok(&["orders", "cancel", &id]);
    som.fails(&["orders", "cancel", &id], 1, "cannot be cancelled");
    som.fails(&["pay", "initiate", &id], 1, "cannot be paid");
    let usage = som.run(&["orders", "create"]);
    assert_eq!(usage.status.code(), Some(2), "clap usage errors exit 2");
    let usage = som.run(&["orders", "show", "abc"]);
    assert_eq!(usage.status.code(), Some(2));
    som.fails(&["users", "create", "dave"], 1, "--password-stdin");
}

#[test]
fn bad_database_paths_are_configuration_errors_and_only_some_commands_create_a_database() {
    let som = Som::new();
    let missing_dir = "sqlite:///nonexistent-dir/x/som.db";
    for args in [&["migrate"][..], &["orders", "list"][..]] {
        let out = som.cmd(args).env("SOM_DATABASE_URL", missing_dir).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("/nonexistent-dir/x/som.db"), "{args:?} names the path: {stderr}");
    }
    som.fails(&["orders", "list"], 2, "run `som migrate` first");
    som.fails(&["users", "list"], 2, "no SOM database at");
    assert!(!som.dir.path().join("som.db").exists(), "a read created a database");
    som.ok(&["migrate"]);
    som.fails(&["backup", "/nonexistent-dir/b.db"], 2, "does not exist");
    // A database server that does not answer is not a configuration error: retry later.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = som
        .cmd(&["orders", "list"])
        .env("SOM_DATABASE_URL", format!("postgres://postgres@127.0.0.1:{closed}/som"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_command_honours_json_or_refuses_it() {
    let som = Som::new();
    let reference = som.json(&["config", "reference"]);
    assert!(reference.as_array().is_some_and(|vars| vars.iter().any(|v| v["name"] == "SOM_DATABASE_URL")));
    som.fails(&["config", "env", "--json"], 2, "--json");
    som.fails(&["man", "--out-dir", "man", "--json"], 2, "--json");
    som.fails(&["completions", "bash", "--json"], 2, "--json");
    // The health check goes to SOM_LISTEN unless told otherwise, and reports in JSON too.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = som.cmd(&["healthcheck", "--json"]).env("SOM_LISTEN", format!("127.0.0.1:{port}")).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["url"].as_str(), report["healthy"].as_bool()),
        (Some(&*format!("http://127.0.0.1:{port}/healthz")), Some(false))
    );
}

/// Every row of the documented exit-code table (README.md, `som man`), driven from the CLI.
#[test]
fn every_exit_code_row_is_what_the_cli_does() {
    let som = Som::new();
    // 0: success.
    som.ok(&["migrate"]);
    som.user("alice");
    // 1: rejected — not found, conflict, a value out of range.
    som.fails(&["orders", "show", "999"], 1, "not found");
    som.fails(&["orders", "create", "--user", "alice", "--item", "Widget:0:1"], 1, "quantity");
    som.fails(&["orders", "create", "--user", "alice", "--item", "Widget:1:-1"], 1, "price");
    // 2: usage and configuration — a setting, the database URL or path, an address, a backup path.
    let with = |var: &str, value: &str, args: &[&str]| som.cmd(args).env(var, value).output().unwrap();
    let setting_errors = [
        ("SOM_DATABASE_URL", "nope.db", "SOM_DATABASE_URL"),
        ("SOM_CURRENCY", "XYZ", "SOM_CURRENCY"),
        ("SOM_JWT_SECRET", "short", "SOM_JWT_SECRET"),
        ("SOM_SESSION_CACHE_TTL", "3650d", "SOM_SESSION_CACHE_TTL"),
        ("SOM_DATABASE_URL", "sqlite:///", "directory"),
    ];
    for (var, value, named) in setting_errors {
        let out = with(var, value, &["orders", "list"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.lines().last().is_some_and(|l| l.contains(named)), "{var}={value}: {stderr}");
    }
    let not_sqlite = som.dir.path().join("notes.txt");
    std::fs::write(&not_sqlite, "x".repeat(4096)).unwrap();
    let out = with("SOM_DATABASE_URL", &format!("sqlite://{}", not_sqlite.display()), &["orders", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a SQLite database"));
    som.fails(&["serve", "--listen", "localhost:8000x"], 2, "cannot listen on localhost:8000x");
    std::fs::write(som.dir.path().join("taken.db"), "").unwrap();
    som.fails(&["backup", "taken.db"], 2, "already exists");
    som.fails(&["backup", "/nonexistent-dir/b.db"], 2, "does not exist");
    som.fails(&["healthcheck", "--url", "https://example.invalid/healthz"], 2, "only http://");
    // 3: unavailable — nothing answers the health check; a database server that does not answer.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{closed}/healthz");
    som.fails(&["healthcheck", "--url", &url], 3, &url);
    let out = with("SOM_DATABASE_URL", &format!("postgres://postgres@127.0.0.1:{closed}/som"), &["orders", "list"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    // 4: internal — a row the build cannot read.
    som.json(&["orders", "create", "--user", "alice", "--item", "Widget:1:5"]);
    let db = rusqlite::Connection::open(som.dir.path().join("som.db")).unwrap();
    db.execute_batch("PRAGMA ignore_check_constraints = ON; UPDATE orders SET status = 'NO_SUCH_STATUS';").unwrap();
    drop(db);
    let out = som.run(&["orders", "list"]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    // 5: the schema is newer than this build (below).
}

#[test]
fn operator_commands_are_quiet_and_misspelled_settings_are_named() {
    let som = Som::new();
    let quiet = |args: &[&str]| {
        let out = som.cmd(args).env_remove("SOM_LOG").env_remove("SOM_JWT_SECRET").output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // No JWT warning, no info lines: only what went wrong is printed.
    assert_eq!(quiet(&["migrate"]), "", "migrate printed to stderr");
    assert_eq!(quiet(&["orders", "list"]), "", "orders list printed to stderr");
    let out = som
        .cmd(&["orders", "list"])
        .env("SOM_DATABSE_URL", "sqlite://other.db")
        .env("SOM_NOTIFER", "smtp")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("SOM_DATABSE_URL") && stderr.contains("did you mean SOM_DATABASE_URL?"), "{stderr}");
    assert!(stderr.contains("SOM_NOTIFER") && stderr.contains("did you mean SOM_NOTIFIER?"), "{stderr}");
    // A .env file is read the same way.
    std::fs::write(som.dir.path().join(".env"), "SOM_LISTN=127.0.0.1:9\n").unwrap();
    let out = som.run(&["orders", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean SOM_LISTEN?"));
    std::fs::remove_file(som.dir.path().join(".env")).unwrap();
}

#[test]
fn a_completion_script_piped_into_a_reader_that_stops_early_is_not_an_error() {
    let som = Som::new();
    let mut child = som.cmd(&["completions", "bash"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Hang up before it writes, as `| head -1` does once it has its line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn a_schema_newer_than_the_build_has_its_own_exit_code() {
    let som = Som::new();
    som.ok(&["migrate"]);
    let db = rusqlite::Connection::open(som.dir.path().join("som.db")).unwrap();
    db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)", []).unwrap();
    drop(db);
    som.fails(&["orders", "list"], 5, "newer than this build");
}

#[test]
fn declined_payments_are_rejected_and_the_order_stays_payable() {
    let som = Som::new();
    som.user("alice");
    let id = som.json(&["orders", "create", "--user", "alice", "--item", "Widget:1:5"])["id"].to_string();
    let p = som.json(&["pay", "initiate", &id, "--method", "mock_decline"]);
    som.fails(&["pay", "confirm", &p["id"].to_string()], 1, "declined");
    assert_eq!(som.json(&["pay", "show", &p["id"].to_string()])["status"], "FAILED");
    let retry = som.json(&["pay", "initiate", &id]);
    assert_eq!(som.json(&["pay", "confirm", &retry["id"].to_string()])["status"], "SUCCESS");
}

#[test]
fn transient_failures_are_counted_per_payment_across_runs() {
    let som = Som::new();
    som.user("alice");
    let id = som.json(&["orders", "create", "--user", "alice", "--item", "Widget:1:5"])["id"].to_string();
    let p = som.json(&["pay", "initiate", &id, "--method", "mock_transient_error"])["id"].to_string();
    // Each `som` run is a new process; the default is two transient failures.
    som.fails(&["pay", "confirm", &p], 3, "unavailable");
    som.fails(&["pay", "confirm", &p], 3, "unavailable");
    assert_eq!(som.json(&["pay", "confirm", &p])["status"], "SUCCESS");
}

#[test]
fn payments_are_refunded_in_part_and_in_full_and_show_in_the_history() {
    let som = Som::new();
    som.user("alice");
    let order = som.json(&["orders", "create", "--user", "alice", "--item", "Widget:2:5.00"])["id"].to_string();
    let p = som.json(&["pay", "initiate", &order])["id"].to_string();
    // Nothing captured yet: rejected (exit 1, like every conflict).
    som.fails(&["pay", "refund", &p], 1, "PENDING");
    som.json(&["pay", "confirm", &p]);
    som.fails(&["pay", "refund", &p, "--amount", "10.01"], 1, "amount");
    let part =
        som.json(&["pay", "refund", &p, "--amount", "4.00", "--reason", "one broken", "--idempotency-key", "k1"]);
    assert_eq!((part["status"].as_str(), part["amount"].as_str()), (Some("SUCCEEDED"), Some("4.00")), "{part}");
    let replay =
        som.json(&["pay", "refund", &p, "--amount", "4.00", "--reason", "one broken", "--idempotency-key", "k1"]);
    assert_eq!(replay["id"], part["id"]);
    assert_eq!(som.json(&["orders", "show", &order])["status"], "PARTIALLY_REFUNDED");
    let rest = som.json(&["pay", "refund", &p]);
    assert_eq!(rest["amount"].as_str(), Some("6.00"), "{rest}");
    som.fails(&["pay", "refund", &p], 1, "nothing left");
    let shown = som.json(&["orders", "show", &order]);
    assert_eq!((shown["status"].as_str(), shown["refunded_amount"].as_str()), (Some("REFUNDED"), Some("10.00")));
    let refunds = som.json(&["pay", "refunds", &p]);
    let amounts: Vec<&str> = refunds["items"].as_array().unwrap().iter().filter_map(|r| r["amount"].as_str()).collect();
    assert_eq!(amounts, vec!["4.00", "6.00"]);
    let history = som.ok(&["orders", "history", &order]);
    assert!(history.contains("PARTIALLY_REFUNDED") && history.contains("refund"), "{history}");
    let text = som.ok(&["pay", "refunds", &p]);
    assert!(text.contains("SUCCEEDED") && text.contains("one broken"), "{text}");
}

#[test]
fn authorised_payments_are_captured_in_part_or_voided() {
    let som = Som::new();
    som.user("alice");
    let order = som.json(&["orders", "create", "--user", "alice", "--item", "Widget:2:5.00"])["id"].to_string();
    let usage = som.run(&["pay", "initiate", &order, "--capture", "later"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("must be automatic or manual"));
    let p = som.json(&["pay", "initiate", &order, "--capture", "manual"]);
    assert_eq!(p["capture_method"], "manual", "{p}");
    let p = p["id"].to_string();
    // Not authorised yet: nothing to capture.
    som.fails(&["pay", "capture", &p], 1, "PENDING");
    let held = som.json(&["pay", "confirm", &p]);
    assert_eq!((held["status"].as_str(), held["captured_amount"].as_str()), (Some("AUTHORIZED"), Some("0.00")));
    assert_eq!(som.json(&["orders", "show", &order])["status"], "AUTHORIZED");
    som.fails(&["pay", "capture", &p, "--amount", "10.01"], 1, "amount");
    let done = som.json(&["pay", "capture", &p, "--amount", "7.50", "--idempotency-key", "c1"]);
    assert_eq!((done["status"].as_str(), done["captured_amount"].as_str()), (Some("SUCCESS"), Some("7.50")), "{done}");
    assert_eq!(
        som.json(&["pay", "capture", &p, "--amount", "7.50", "--idempotency-key", "c1"])["captured_amount"],
        "7.50"
    );
    som.fails(&["pay", "capture", &p], 1, "already captured");
    som.fails(&["pay", "refund", &p, "--amount", "7.51"], 1, "left to refund");
    let text = som.ok(&["pay", "show", &p]);
    assert!(text.contains("captured") && text.contains("7.50"), "{text}");
    assert_eq!(som.json(&["orders", "show", &order])["status"], "PAID");

    let other = som.json(&["orders", "create", "--user", "alice", "--item", "Widget:1:5"])["id"].to_string();
    let v = som.json(&["pay", "initiate", &other, "--capture", "manual"])["id"].to_string();
    som.json(&["pay", "confirm", &v]);
    assert_eq!(som.json(&["pay", "void", &v])["status"], "VOIDED");
    som.fails(&["pay", "void", &v], 1, "VOIDED");
    assert_eq!(som.json(&["orders", "show", &other])["status"], "CANCELLED");
}

#[test]
fn orders_list_filters_and_pages() {
    let som = Som::new();
    som.user("alice");
    som.user("bob");
    for _ in 0..3 {
        som.json(&["orders", "create", "--user", "alice", "--item", "Widget:1:5"]);
    }
    som.json(&["orders", "create", "--user", "bob", "--item", "Widget:1:5"]);
    let count = |v: Value| v["items"].as_array().map(Vec::len);
    assert_eq!(count(som.json(&["orders", "list"])), Some(4));
    assert_eq!(count(som.json(&["orders", "list", "--user", "alice"])), Some(3));
    let page = som.json(&["orders", "list", "--user", "alice", "--limit", "2"]);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let next = page["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(next, page["items"][1]["id"].to_string());
    let rest = som.json(&["orders", "list", "--user", "alice", "--limit", "2", "--cursor", &next]);
    assert_eq!((count(rest.clone()), rest["next_cursor"].is_null()), (Some(1), true));
    assert_eq!(count(som.json(&["orders", "list", "--status", "PAID"])), Some(0));
    let table = som.ok(&["orders", "list"]);
    assert!(table.contains("(alice)") && table.contains("(bob)"), "usernames beside user ids: {table}");
    let notifications = som.ok(&["notifications", "list"]);
    assert!(!notifications.contains("last error"), "an empty column takes no width: {notifications}");
}

#[test]
fn completions_are_generated() {
    let som = Som::new();
    let script = som.ok(&["completions", "bash"]);
    assert!(script.contains("som") && script.contains("orders"));
}

#[test]
fn serve_answers_http_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Read};
    let som = Som::new();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = som
        .cmd(&["serve", "--listen", "127.0.0.1:0"])
        .env("SOM_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr =
        line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("unexpected: {line}")).to_owned();
    let mut docs = String::new();
    stdout.read_line(&mut docs).unwrap();
    assert_eq!(docs.trim(), format!("API documentation (Swagger UI): http://{addr}/api/docs/"));
    let get = |addr: &str, path: &str| {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        response
    };
    let response = get(&addr, "/healthz");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // /metrics moved to its own listener.
    assert!(get(&addr, "/metrics").starts_with("HTTP/1.1 404"), "metrics still on the main listener");
    let metrics = get(&format!("127.0.0.1:{metrics_port}"), "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200") && metrics.contains("som_http_requests_total"), "{metrics}");
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit on SIGTERM: {status:?}");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(stderr.matches("payments use the mock provider").count(), 1, "the mock is announced once: {stderr}");
}

#[tokio::test]
async fn an_operator_takes_and_refunds_a_stripe_payment() {
    let Some(stripe) = som_core::testing::LocalStripe::start() else { return };
    let mut som = Som::new();
    som.env = vec![
        ("SOM_PAYMENT_PROVIDER".into(), "stripe".into()),
        ("SOM_STRIPE_SECRET_KEY".into(), som_core::testing::TEST_SECRET_KEY.into()),
        ("SOM_STRIPE_API_BASE".into(), stripe.api_base()),
    ];
    som.user("alice");
    let order = som.json(&["orders", "create", "--user", "alice", "--item", "Widget:2:5.00"])["id"].to_string();
    // A declined card, then a good one.
    let declined = som.json(&["pay", "initiate", &order, "--method", "pm_card_chargeCustomerFail"]);
    som.fails(&["pay", "confirm", &declined["id"].to_string()], 1, "declined");
    let p = som.json(&["pay", "initiate", &order, "--method", "pm_card_visa"]);
    assert_eq!((p["provider"].as_str(), p["status"].as_str()), (Some("stripe"), Some("PENDING")), "{p}");
    let id = p["id"].to_string();
    assert_eq!(som.json(&["pay", "confirm", &id])["status"], "SUCCESS");
    assert_eq!(som.json(&["orders", "show", &order])["status"], "PAID");
    let part = som.json(&["pay", "refund", &id, "--amount", "4.00", "--reason", "one broken"]);
    assert!(part["provider_refund_id"].as_str().is_some_and(|r| r.starts_with("re_")), "{part}");
    som.json(&["pay", "refund", &id]);
    assert_eq!(som.json(&["orders", "show", &order])["status"], "REFUNDED");
    let intent = p["provider_payment_id"].as_str().unwrap();
    let (_, list) = stripe.call(reqwest::Method::GET, &format!("/v1/refunds?payment_intent={intent}"), &[]).await;
    let mut amounts: Vec<i64> =
        list["data"].as_array().unwrap().iter().map(|r| r["amount"].as_i64().unwrap()).collect();
    amounts.sort_unstable();
    assert_eq!(amounts, vec![400, 600], "{list}");
    // Not a Stripe PaymentMethod: refused before Stripe is asked.
    let other = som.json(&["orders", "create", "--user", "alice", "--item", "Widget:1:5"])["id"].to_string();
    som.fails(&["pay", "initiate", &other, "--method", "mock_success"], 1, "PaymentMethod");
    // Stripe unreachable: exit 3 (unavailable), and nothing recorded.
    drop(stripe);
    som.fails(&["pay", "initiate", &other, "--method", "pm_card_visa"], 3, "unavailable");
    assert_eq!(som.json(&["orders", "show", &other])["status"], "CREATED");
}

#[test]
fn operators_search_orders_and_retry_dead_notifications_per_channel() {
    let som = Som::new();
    som.user("carol");
    som.user("dave");
    let carol = som.json(&["orders", "create", "--user", "carol", "--item", "Widget:1:5.00"]);
    som.json(&["orders", "create", "--user", "dave", "--item", "Widget:1:5.00"]);
    let found = som.json(&["orders", "list", "--search", "CAROL@example"]);
    let ids: Vec<i64> = found["items"].as_array().unwrap().iter().map(|o| o["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![carol["id"].as_i64().unwrap()]);
    let none = som.json(&["orders", "list", "--search", "nobody"]);
    assert!(none["items"].as_array().unwrap().is_empty());
    let retried = som.json(&["notifications", "retry-dead", "email"]);
    assert_eq!((retried["channel"].as_str(), retried["requeued"].as_u64()), (Some("email"), Some(0)));
    som.fails(&["notifications", "retry-dead", " "], 1, "channel");
}
