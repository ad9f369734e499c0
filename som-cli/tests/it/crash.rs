//! Crash tests: `som serve` is killed with SIGKILL at random moments while clients create, pay,
//! confirm, authorise and (as staff) capture part of and partly refund orders over HTTP; after a
//! restart on the same database nothing acknowledged is lost, nothing is done twice, refunds
//! and captures left pending are finished once, and every notification is delivered. SQLite always; PostgreSQL
//! when `SOM_TEST_POSTGRES_URL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use som_core::domain::{Caller, CaptureMethod, OrderStatus, PaymentId, RefundStatus};
use som_core::domain::{NotificationStatus, OutboxEntry};
use som_core::{Config, OrderListQuery, OrderSystem};

struct Server {
    child: Child,
    base: String,
}

fn start(url: &str, dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_som"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SOM_DATABASE_URL", url)
        .env("SOM_LOG", "warn")
        .env("SOM_AUTH_RATE_LIMIT", "0")
        .env("SOM_OUTBOX_POLL_INTERVAL", "100ms")
        .env("SOM_OUTBOX_LEASE", "2s")
        .env("SOM_JWT_SECRET", "crash-test-secret-0123456789abcdef0123")
        .env("SOM_REFUND_RECOVERY_AFTER", "1s")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_owned();
    Server { child, base }
}

/// What the clients were told succeeded.
#[derive(Default, Clone)]
struct Acked {
    orders: HashMap<i64, Value>,
    paid: HashMap<i64, Value>,
    /// Acknowledged refunds by payment id.
    refunds: HashMap<i64, Value>,
    /// Acknowledged captures (of 50.00 of an authorisation) by payment id.
    captures: HashMap<i64, Value>,
}

/// What a manual-capture order is captured for: less than any order's total.
const CAPTURED: &str = "50.00";

async fn client_loop(base: String, (token, staff): (String, String), acked: Arc<Mutex<Acked>>, seed: u64) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut n = seed;
    loop {
        n += 1;
        let body = json!({"items": [
            {"name": format!("Widget {n}"), "quantity": (n % 5) + 1, "price": format!("{}.{:02}", n % 97 + 1, n % 100)},
            {"name": "Gadget", "quantity": 1, "price": "50.00"}
        ]});
        let Ok(resp) = client.post(format!("{base}/api/v1/orders/")).bearer_auth(&token).json(&body).send().await
        else {
            return;
        };
        if !resp.status().is_success() {
            continue;
        }
        let Ok(order) = resp.json::<Value>().await else { return };
        let id = order["id"].as_i64().unwrap();
        acked.lock().unwrap().orders.insert(id, order);
        // Every third order is authorised now and captured in part by staff.
        let manual = n.is_multiple_of(3);
        let capture = if manual { "manual" } else { "automatic" };
        let Ok(resp) = client
            .post(format!("{base}/api/v1/payments/initiate/"))
            .bearer_auth(&token)
            .json(&json!({"order_id": id, "capture": capture}))
            .send()
            .await
        else {
            return;
        };
        let Ok(payment) = resp.json::<Value>().await else { return };
        let Ok(resp) = client
            .post(format!("{base}/api/v1/payments/confirm/"))
            .bearer_auth(&token)
            .json(&json!({"payment_id": payment["id"]}))
            .send()
            .await
        else {
            return;
        };
        if !resp.status().is_success() {
            continue;
        }
        let Ok(p) = resp.json::<Value>().await else { return };
        let pid = p["id"].as_i64().unwrap();
        acked.lock().unwrap().paid.insert(id, p);
        if manual {
            let Ok(resp) = client
                .post(format!("{base}/api/v1/payments/{pid}/capture/"))
                .bearer_auth(&staff)
                .header("Idempotency-Key", format!("capture-{pid}"))
                .json(&json!({"amount": CAPTURED}))
                .send()
                .await
            else {
                return;
            };
            if !resp.status().is_success() {
                continue;
            }
            let Ok(c) = resp.json::<Value>().await else { return };
            acked.lock().unwrap().captures.insert(pid, c);
        }
        // Every other paid order gets a partial refund of 1.00, with a key so that a retry
        // after a crash could never make a second one.
        if n.is_multiple_of(2) {
            continue;
        }
        let Ok(resp) = client
            .post(format!("{base}/api/v1/payments/{pid}/refunds/"))
            .bearer_auth(&staff)
            .header("Idempotency-Key", format!("refund-{pid}"))
            .json(&json!({"amount": "1.00", "reason": "crash test"}))
            .send()
            .await
        else {
            return;
        };
        if resp.status().is_success() {
            let Ok(r) = resp.json::<Value>().await else { return };
            acked.lock().unwrap().refunds.insert(pid, r);
        }
    }
}

/// The access tokens of a customer and of a staff member (created through the library before
/// the first server starts).
async fn tokens(base: &str) -> (String, String) {
    (token(base, "crash").await, token(base, "crash-staff").await)
}

async fn token(base: &str, username: &str) -> String {
    let client = reqwest::Client::new();
    let _ = client
        .post(format!("{base}/api/v1/accounts/register/"))
        .json(&json!({"username": username, "email": format!("{username}@example.com"), "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    let pair: Value = client
        .post(format!("{base}/api/v1/token/"))
        .json(&json!({"username": username, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    pair["access"].as_str().unwrap().to_owned()
}

async fn check_invariants(url: &str, acked: &Acked) {
    let som = OrderSystem::builder()
        .config(Config { database_url: url.to_owned(), ..Config::default() })
        .build()
        .await
        .unwrap();
    let mut orders = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = som
            .list_orders(
                Caller::System,
                OrderListQuery { cursor: cursor.clone(), limit: Some(200), ..OrderListQuery::default() },
            )
            .await
            .unwrap();
        for o in page.items {
            orders.insert(o.id.get(), o);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    for (id, body) in &acked.orders {
        let o = orders.get(id).unwrap_or_else(|| panic!("acknowledged order {id} lost"));
        assert_eq!(body["total_amount"].as_str(), Some(o.total.amount_string().as_str()), "order {id} total");
        assert_eq!(body["items"].as_array().map(Vec::len), Some(o.items.len()), "order {id} items");
    }
    for (id, body) in &acked.paid {
        let authorised_only = body["status"] == "AUTHORIZED";
        assert!(
            matches!(orders[id].status, OrderStatus::Paid | OrderStatus::PartiallyRefunded)
                || (authorised_only && orders[id].status == OrderStatus::Authorized),
            "acknowledged payment of order {id} lost ({:?})",
            orders[id].status
        );
    }
    // Every acknowledged capture is there, of its amount, once.
    for (pid, body) in &acked.captures {
        let p = som.payment(Caller::System, PaymentId::new(*pid)).await.unwrap();
        assert!(p.status.was_captured(), "acknowledged capture of payment {pid} lost: {p:?}");
        assert_eq!(p.captured.amount_string(), CAPTURED, "payment {pid}: {body}");
        let history = som.order_history(Caller::System, p.order_id).await.unwrap();
        let paid = history.iter().filter(|e| e.to == OrderStatus::Paid).count();
        assert_eq!(paid, 1, "order {} paid once: {history:?}", p.order_id);
    }
    for (pid, body) in &acked.refunds {
        let refunds = som.payment_refunds(Caller::System, PaymentId::new(*pid)).await.unwrap();
        assert!(refunds.iter().any(|r| r.id.get() == body["id"].as_i64().unwrap()), "acknowledged refund {body} lost");
    }
    // Every outbox row, page by page: a run may write many more than one page.
    let mut rows = Vec::new();
    loop {
        let page =
            som.notifications(Caller::System, None, rows.last().map(|r: &OutboxEntry| r.id), 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        rows.extend(page);
    }
    let keys: std::collections::HashSet<&str> = rows.iter().map(|r| r.dedupe_key.as_str()).collect();
    for (id, o) in &orders {
        assert!(!o.items.is_empty(), "order {id} has no items");
        let payments = som.order_payments(Caller::System, o.id).await.unwrap();
        let captured: Vec<_> = payments.iter().filter(|p| p.status.is_refundable()).collect();
        let paid = matches!(o.status, OrderStatus::Paid | OrderStatus::PartiallyRefunded);
        assert_eq!(captured.len(), usize::from(paid), "order {id}: {payments:?}");
        assert!(captured.iter().all(|p| p.amount == o.total), "order {id} paid its exact total");
        for p in &captured {
            let expected =
                if p.capture_method == CaptureMethod::Manual { CAPTURED.to_owned() } else { o.total.amount_string() };
            assert_eq!(p.captured.amount_string(), expected, "payment {} captured", p.id);
            assert!(p.refunded.minor() + p.refund_pending.minor() <= p.captured.minor(), "payment {}", p.id);
            let key = if p.capture_method == CaptureMethod::Manual { "payment_captured" } else { "payment_succeeded" };
            assert!(keys.contains(format!("{key}:payment:{}", p.id).as_str()), "payment {} notified", p.id);
        }
        assert!(payments.iter().filter(|p| p.status.is_live()).count() <= 1);
        // Refunds: at most one per key (one per payment here), and the amounts agree.
        for p in &captured {
            let refunds = som.payment_refunds(Caller::System, p.id).await.unwrap();
            assert!(refunds.len() <= 1, "payment {} refunded twice: {refunds:?}", p.id);
            let succeeded: i64 =
                refunds.iter().filter(|r| r.status == RefundStatus::Succeeded).map(|r| r.amount.minor()).sum();
            let pending: i64 =
                refunds.iter().filter(|r| r.status == RefundStatus::Pending).map(|r| r.amount.minor()).sum();
            assert_eq!((p.refunded.minor(), p.refund_pending.minor()), (succeeded, pending), "payment {}", p.id);
            assert_eq!(o.refunded.minor(), succeeded, "order {id} refunded amount");
            for r in refunds.iter().filter(|r| r.status == RefundStatus::Succeeded) {
                assert!(keys.contains(format!("refund_issued:refund:{}", r.id).as_str()), "refund {} notified", r.id);
            }
        }
        let key = format!("order_created:order:{id}");
        assert!(keys.contains(key.as_str()), "order {id} has its notification in the outbox");
    }
}

async fn wait_until_delivered(url: &str) {
    let som = OrderSystem::builder()
        .config(Config { database_url: url.to_owned(), ..Config::default() })
        .build()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pending = som.notifications(Caller::System, Some(NotificationStatus::Pending), None, 10).await.unwrap();
        let refunding = pending_refunds(&som).await;
        if pending.is_empty() && refunding == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "notifications stuck after restart: {pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = som.notifications(Caller::System, Some(NotificationStatus::Dead), None, 10).await.unwrap();
    assert!(dead.is_empty(), "{dead:?}");
}

/// How many refunds are still PENDING (each order's payments, through the library).
async fn pending_refunds(som: &OrderSystem) -> usize {
    let mut pending = 0;
    let mut cursor = None;
    loop {
        let query = OrderListQuery { cursor, limit: Some(200), ..OrderListQuery::default() };
        let page = som.list_orders(Caller::System, query).await.unwrap();
        for o in &page.items {
            for p in som.order_payments(Caller::System, o.id).await.unwrap() {
                // A refund, or a capture, whose answer the killed server never heard.
                pending += usize::from(p.refund_pending.is_positive() || p.settlement.is_some());
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return pending,
        }
    }
}

/// After the server is killed: on PostgreSQL, until its sessions have ended (a `COMMIT` it had
/// sent still lands, and the checks must not read half before and half after it).
async fn settle(db: Option<&som_core::testing::TestDatabase>) {
    if let Some(db) = db {
        db.wait_until_unused(Duration::from_secs(30)).await.expect("the killed server's sessions end");
    }
}

async fn crash_cycles(url: &str, dir: &std::path::Path, cycles: usize, db: Option<&som_core::testing::TestDatabase>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let acked = Arc::new(Mutex::new(Acked::default()));
    {
        let som = OrderSystem::builder()
            .config(Config { database_url: url.to_owned(), ..Config::default() })
            .build()
            .await
            .unwrap();
        let staff = som_core::Registration {
            username: "crash-staff".into(),
            email: Some("crash-staff@example.com".into()),
            password: "correct horse battery".into(),
        };
        som.create_user(Caller::System, staff, true).await.unwrap();
    }
    for cycle in 0..cycles {
        let mut server = start(url, dir);
        let token = tokens(&server.base).await;
        let mut clients = Vec::new();
        for c in 0..6u64 {
            clients.push(tokio::spawn(client_loop(
                server.base.clone(),
                token.clone(),
                Arc::clone(&acked),
                (cycle as u64 * 100 + c) * 1_000_000,
            )));
        }
        let kill_after = rand::rng().random_range(300..1200);
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        for c in clients {
            let _ = c.await;
        }
        settle(db).await;
        let snapshot = acked.lock().unwrap().clone();
        check_invariants(url, &snapshot).await;
    }
    let mut server = start(url, dir);
    wait_until_delivered(url).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    settle(db).await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.orders.len() > 10, "the load reached the server ({} orders)", acked.orders.len());
    assert!(!acked.refunds.is_empty(), "refunds were made");
    assert!(!acked.captures.is_empty(), "captures were made");
    check_invariants(url, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_survives_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("som.db");
    let url = format!("sqlite://{}", path.display());
    crash_cycles(&url, dir.path(), 4, None).await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_survives_sigkill_at_random_moments() {
    let Some(admin) = som_core::testing::admin_url() else {
        eprintln!("SOM_TEST_POSTGRES_URL is not set: skipping the Postgres crash test");
        return;
    };
    let db = som_core::testing::TestDatabase::create(&admin).await.expect("Postgres unreachable");
    let dir = tempfile::tempdir().unwrap();
    crash_cycles(db.url(), dir.path(), 3, Some(&db)).await;
}
