//! Callers that stop waiting: HTTP clients that send a write and hang up at random points, and
//! library futures dropped after a random number of polls or a random timeout. Afterwards every
//! acknowledged order and payment is there, every notification was delivered exactly once, the
//! outbox is drained, no database connection is left inside a transaction, and the database
//! driver never warned of a transaction already (or not) in progress.
//!
//! Runs on SQLite always and on PostgreSQL when `SOM_TEST_POSTGRES_URL` is set (CI sets it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use rand::Rng;
use som_core::domain::NotificationStatus;
use som_core::domain::{Caller, EventKind, ItemInput, OrderId, OrderInput, OrderStatus, PaymentId, PaymentStatus};
use som_core::notify::RecordingNotifier;
use som_core::testing::{TestDatabase, admin_url};
use som_core::{Config, OrderListQuery, OrderSystem, Registration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything logged at WARN or above by this test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            let _ = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .try_init();
            captured
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_loses_nothing_when_callers_hang_up() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("som.db").display());
    hang_ups_lose_nothing_and_deliver_once(&url, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_loses_nothing_when_callers_hang_up() {
    let Some(admin) = admin_url() else {
        eprintln!("SOM_TEST_POSTGRES_URL is not set: skipping the Postgres variant");
        return;
    };
    let db = TestDatabase::create(&admin).await.expect("SOM_TEST_POSTGRES_URL is set but unreachable");
    hang_ups_lose_nothing_and_deliver_once(db.url(), Some((&admin, db.name()))).await;
}

use som_core::testing::PASSWORD;

fn order_input(rng: &mut impl Rng) -> OrderInput {
    OrderInput {
        items: vec![
            ItemInput { name: "Widget".into(), quantity: rng.random_range(1..5), price: "10.00".into() },
            ItemInput { name: "Gadget".into(), quantity: 1, price: "2.50".into() },
        ],
        currency: None,
    }
}

/// What the callers were told succeeded.
#[derive(Default)]
struct Acknowledged {
    orders: Vec<(Caller, OrderId)>,
    payments: Vec<PaymentId>,
    paid: Vec<PaymentId>,
}

async fn hang_ups_lose_nothing_and_deliver_once(database_url: &str, postgres: Option<(&str, &str)>) {
    let logs = captured_logs();
    let recorder = Arc::new(RecordingNotifier::new("log"));
    let config = Config { database_url: database_url.to_owned(), auth_rate_limit: 0, ..Config::default() };
    let som = OrderSystem::builder().config(config.clone()).notifier(recorder.clone()).build().await.unwrap();
    let dispatcher = som.spawn_dispatcher();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(som_server::serve(
        listener,
        som.clone(),
        som_server::Settings::from_config(&config),
        async move {
            let _ = stopped.await;
        },
    ));

    let mut users = Vec::new();
    for i in 0..4 {
        let username = format!("hangup{i}");
        som.register(Registration {
            username: username.clone(),
            email: Some(format!("{username}@example.com")),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
        let tokens = som.login(&username, PASSWORD).await.unwrap();
        users.push((som.authenticate(&tokens.access).await.unwrap(), tokens.access));
    }
    let users = Arc::new(users);
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));

    // HTTP clients: orders, then payments for the acknowledged ones, each request abandoned at a
    // random point by about two thirds of the clients.
    let mut clients = tokio::task::JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(32));
    for _ in 0..400 {
        let (users, acknowledged, permits) = (Arc::clone(&users), Arc::clone(&acknowledged), Arc::clone(&permits));
        clients.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            let (caller, token, body, hang_up) = {
                let mut rng = rand::rng();
                let (caller, token) = users[rng.random_range(0..users.len())].clone();
                let body = serde_json::to_string(&order_input(&mut rng)).unwrap();
                (caller, token, body, random_hang_up(&mut rng))
            };
            if let Some((201, json)) = http_post(addr, "/api/v1/orders/", &token, &body, hang_up).await {
                let id: OrderId = json["id"].as_i64().unwrap().to_string().parse().unwrap();
                acknowledged.lock().unwrap().orders.push((caller, id));
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let orders: Vec<(Caller, OrderId)> = acknowledged.lock().unwrap().orders.clone();
    assert!(orders.len() > 50, "too few orders were acknowledged to test anything: {}", orders.len());
    for (i, (caller, order)) in orders.iter().copied().enumerate() {
        let (users, acknowledged, permits) = (Arc::clone(&users), Arc::clone(&acknowledged), Arc::clone(&permits));
        clients.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            let token = users.iter().find(|(c, _)| *c == caller).unwrap().1.clone();
            let hang_up = if i % 3 == 0 { None } else { random_hang_up(&mut rand::rng()) };
            let body = format!(r#"{{"order_id": {order}}}"#);
            let Some((200, json)) = http_post(addr, "/api/v1/payments/initiate/", &token, &body, hang_up).await else {
                return;
            };
            let payment: PaymentId = json["id"].as_i64().unwrap().to_string().parse().unwrap();
            acknowledged.lock().unwrap().payments.push(payment);
            let hang_up = random_hang_up(&mut rand::rng());
            let body = format!(r#"{{"payment_id": {payment}}}"#);
            if let Some((200, _)) = http_post(addr, "/api/v1/payments/confirm/", &token, &body, hang_up).await {
                acknowledged.lock().unwrap().paid.push(payment);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }

    // Library callers, 16 at a time: the same operations, dropped after 1 to 40 polls or a
    // random timeout, so that every await point of every operation is abandoned sooner or later.
    for i in 0..800usize {
        let (som, users, acknowledged, permits) =
            (som.clone(), Arc::clone(&users), Arc::clone(&acknowledged), Arc::clone(&permits));
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        clients.spawn(async move {
            let _permit = permit;
            let (caller, _) = users[i % users.len()].clone();
            let input = order_input(&mut rand::rng());
            let Some(Ok(order)) = abandon(som.create_order(caller, input), i).await else { return };
            acknowledged.lock().unwrap().orders.push((caller, order.id));
            let Some(Ok(payment)) = abandon(som.initiate_payment(caller, order.id), i / 3).await else {
                return;
            };
            acknowledged.lock().unwrap().payments.push(payment.id);
            if let Some(Ok(_)) = abandon(som.confirm_payment(caller, payment.id), i / 7).await {
                acknowledged.lock().unwrap().paid.push(payment.id);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }

    // Everything abandoned has finished in the background once the outbox stops changing.
    let counts = wait_until_drained(&som).await;
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());

    for (caller, id) in &acknowledged.orders {
        som.order(*caller, *id).await.unwrap_or_else(|e| panic!("acknowledged order {id} is missing: {e}"));
    }
    for id in &acknowledged.payments {
        som.payment(Caller::System, *id).await.unwrap_or_else(|e| panic!("acknowledged payment {id} is missing: {e}"));
    }
    for id in &acknowledged.paid {
        let payment = som.payment(Caller::System, *id).await.unwrap();
        assert_eq!(payment.status, PaymentStatus::Success, "confirmed payment {id}");
        let order = som.order(Caller::System, payment.order_id).await.unwrap();
        assert_eq!(order.status, OrderStatus::Paid, "order of confirmed payment {id}");
    }

    // Every row was delivered exactly once, and every order has its order-created row.
    let rows = all_notifications(&som).await;
    assert_eq!(counts.get(&NotificationStatus::Pending).copied().unwrap_or(0), 0, "outbox not drained: {counts:?}");
    assert!(rows.iter().all(|r| r.status == NotificationStatus::Sent), "undelivered rows: {counts:?}");
    let mut deliveries: HashMap<(String, String), usize> = HashMap::new();
    for n in recorder.delivered() {
        *deliveries.entry((n.dedupe_key.clone(), n.channel.clone())).or_default() += 1;
    }
    let repeated: Vec<_> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "{} notifications were delivered more than once: {repeated:?}", repeated.len());
    let keys: HashSet<(String, String)> = rows.iter().map(|r| (r.dedupe_key.clone(), r.channel.clone())).collect();
    assert_eq!(deliveries.len(), rows.len(), "deliveries and outbox rows differ");
    assert!(deliveries.keys().all(|k| keys.contains(k)), "a delivery has no outbox row");
    let announced: HashSet<OrderId> =
        rows.iter().filter(|r| r.kind == EventKind::OrderCreated).map(|r| r.message.order_id).collect();
    let orders = all_orders(&som).await;
    assert_eq!(announced, orders, "orders and their order-created notifications differ");
    let paid: HashSet<OrderId> =
        rows.iter().filter(|r| r.kind == EventKind::PaymentSucceeded).map(|r| r.message.order_id).collect();
    for id in &orders {
        let order = som.order(Caller::System, *id).await.unwrap();
        assert_eq!(order.status == OrderStatus::Paid, paid.contains(id), "order {id} is {}", order.status);
    }

    if let Some((admin, name)) = postgres {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin).await.unwrap();
        let stuck: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'",
        )
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(stuck, 0, "connections left idle in a transaction");
    }
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    for warning in ["transaction in progress", "came back to the pool inside a transaction"] {
        assert!(!logged.contains(warning), "the log warns {warning:?}:\n{logged}");
    }

    dispatcher.shutdown().await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Where a client gives up: `None` reads the whole response; otherwise the number of body bytes
/// sent before hanging up (all of them, then a pause of up to 3 ms, when it is the whole body).
fn random_hang_up(rng: &mut impl Rng) -> Option<(usize, Duration)> {
    if rng.random_bool(1.0 / 3.0) {
        return None;
    }
    let sent = if rng.random_bool(0.2) { rng.random_range(0..16) } else { usize::MAX };
    Some((sent, Duration::from_micros(rng.random_range(0..3_000))))
}

/// Sends a JSON POST over a fresh connection. With `hang_up`, closes the connection at that
/// point and returns `None`; otherwise the status and JSON body.
async fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    body: &str,
    hang_up: Option<(usize, Duration)>,
) -> Option<(u16, serde_json::Value)> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    if let Some((sent, pause)) = hang_up {
        let _ = stream.write_all(&body.as_bytes()[..sent.min(body.len())]).await;
        tokio::time::sleep(pause).await;
        return None;
    }
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let status: u16 = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let (_, json) = text.split_once("\r\n\r\n").unwrap();
    Some((status, serde_json::from_str(json).unwrap_or(serde_json::Value::Null)))
}

/// Polls `fut` and drops it unfinished: after `1 + seed % 40` polls (yielding to the runtime
/// between them) for a third of the seeds, after a random timeout of up to 6 ms for the rest.
async fn abandon<F: std::future::IntoFuture>(fut: F, seed: usize) -> Option<F::Output> {
    let fut = fut.into_future();
    if !seed.is_multiple_of(3) {
        let limit = Duration::from_micros(rand::rng().random_range(0..6_000));
        return tokio::time::timeout(limit, fut).await.ok();
    }
    let mut fut = std::pin::pin!(fut);
    for _ in 0..=(seed % 40) {
        let mut output = None;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                output = Some(v);
            }
            Poll::Ready(())
        })
        .await;
        if output.is_some() {
            return output;
        }
        tokio::task::yield_now().await;
    }
    None
}

/// Waits until nothing is pending and the outbox has stopped growing; the final counts.
async fn wait_until_drained(som: &OrderSystem) -> HashMap<NotificationStatus, u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut previous = None;
    loop {
        let counts: HashMap<NotificationStatus, u64> =
            som.notification_counts(Caller::System).await.unwrap().into_iter().collect();
        let pending = counts.get(&NotificationStatus::Pending).copied().unwrap_or(0);
        if pending == 0 && previous.as_ref() == Some(&counts) {
            return counts;
        }
        assert!(tokio::time::Instant::now() < deadline, "the outbox did not drain: {counts:?}");
        previous = Some(counts);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn all_notifications(som: &OrderSystem) -> Vec<som_core::domain::OutboxEntry> {
    let mut rows = Vec::new();
    loop {
        let page = som
            .notifications(Caller::System, None, rows.last().map(|r: &som_core::domain::OutboxEntry| r.id), 1000)
            .await
            .unwrap();
        if page.is_empty() {
            return rows;
        }
        rows.extend(page);
    }
}

async fn all_orders(som: &OrderSystem) -> HashSet<OrderId> {
    let mut ids = HashSet::new();
    let mut cursor = None;
    loop {
        let page = som
            .list_orders(Caller::System, OrderListQuery { cursor, limit: Some(200), ..OrderListQuery::default() })
            .await
            .unwrap();
        ids.extend(page.items.iter().map(|o| o.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return ids,
        }
    }
}
