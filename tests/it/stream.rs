//! The event stream against the real brokers on this machine: NATS with JetStream
//! (127.0.0.1:4222) and RabbitMQ (127.0.0.1:5672, guest/guest). 10,000 orders are published
//! while a proxy the test controls cuts SOM off from the broker for a few seconds; every
//! `som.order.created` event arrives, JetStream holds no duplicate, and RabbitMQ's duplicates
//! (messages whose confirm was lost in the cut) are counted and reported.
//!
//! Without the brokers these tests are skipped with a message, unless `SOM_TEST_REQUIRE_BROKERS`
//! is set (CI sets it), in which case they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use som_core::config::Secret;
use som_core::domain::{Caller, ItemInput, NotificationStatus, OrderInput};
use som_core::{Config, OrderSystem, Registration};
use tokio::net::{TcpListener, TcpStream};

const ORDERS: usize = 10_000;
const NATS: &str = "127.0.0.1:4222";
const RABBIT: &str = "127.0.0.1:5672";

fn broker_up(addr: &str, name: &str) -> bool {
    if std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("SOM_TEST_REQUIRE_BROKERS").is_none(),
        "SOM_TEST_REQUIRE_BROKERS is set but {name} is not at {addr}"
    );
    eprintln!("{name} is not running at {addr}: skipping");
    false
}

/// A TCP proxy to `upstream` that can cut every connection and refuse new ones for a while.
struct Proxy {
    addr: String,
    cut: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    async fn start(upstream: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(tx);
        let (c, g) = (Arc::clone(&cut), Arc::clone(&generation));
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut stop = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, cut, generation }
    }

    /// Cuts every open connection and refuses new ones until [`Proxy::resume`].
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn resume(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

async fn system(dir: &std::path::Path, stream: String, name: &str) -> OrderSystem {
    let mut config = Config { database_url: format!("sqlite://{}", dir.join("som.db").display()), ..Config::default() };
    config.notifiers = vec!["log".into()];
    config.event_stream = Some(Secret::new(stream));
    config.event_stream_name = name.to_owned();
    config.outbox.poll_interval = Duration::from_millis(20);
    config.outbox.backoff_base = Duration::from_millis(100);
    config.outbox.backoff_cap = Duration::from_secs(1);
    config.outbox.max_attempts = 1000;
    config.outbox.batch_size = 256;
    config.outbox.lease = Duration::from_secs(30);
    OrderSystem::builder().config(config).build().await.unwrap()
}

/// Places `ORDERS` orders from 16 tasks, cutting the proxy for three seconds once a third
/// are placed, then waits until the outbox has delivered everything.
async fn run_with_an_outage(som: &OrderSystem, proxy: &Proxy) {
    let registration =
        Registration { username: "alice".into(), email: None, password: som_core::testing::PASSWORD.into() };
    let alice = som.create_user(Caller::System, registration, false).await.unwrap();
    let alice = Caller::User { id: alice.id, is_staff: false };
    let dispatcher = som.spawn_dispatcher();
    let placed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (som, placed) = (som.clone(), Arc::clone(&placed));
        tasks.push(tokio::spawn(async move {
            while placed.fetch_add(1, Ordering::SeqCst) < ORDERS {
                let input = OrderInput {
                    items: vec![ItemInput { name: "Widget".into(), quantity: 1, price: "2.50".into() }],
                    currency: None,
                };
                som.create_order(alice, input).await.unwrap();
            }
        }));
    }
    while placed.load(Ordering::SeqCst) < ORDERS / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.resume();
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let counts = som.notification_counts(Caller::System).await.unwrap();
        let of = |s: NotificationStatus| counts.iter().find(|(k, _)| *k == s).map_or(0, |(_, n)| *n);
        assert_eq!(of(NotificationStatus::Dead), 0, "nothing is given up on: {counts:?}");
        if of(NotificationStatus::Pending) == 0 {
            assert_eq!(of(NotificationStatus::Sent), 2 * ORDERS as u64, "a log row and a stream row per order");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the outbox did not drain: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dispatcher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_orders_reach_jetstream_once_each_across_an_outage() {
    if !broker_up(NATS, "NATS") {
        return;
    }
    let name = format!("SOM_TEST_{:08x}", rand::random::<u32>());
    let client = async_nats::connect(NATS).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // Streams cannot share subjects: one left by an earlier run (or a benchmark) goes first.
    let mut names = js.stream_names();
    let mut existing = Vec::new();
    while let Some(n) = names.next().await {
        existing.push(n.unwrap());
    }
    for n in existing {
        let mut stream = js.get_stream(&n).await.unwrap();
        if stream.info().await.unwrap().config.subjects.iter().any(|s| s.starts_with("som.")) {
            js.delete_stream(&n).await.unwrap();
        }
    }

    let proxy = Proxy::start(NATS).await;
    let dir = tempfile::tempdir().unwrap();
    let som = system(dir.path(), format!("nats://{}", proxy.addr), &name).await;
    run_with_an_outage(&som, &proxy).await;

    let mut stream = js.get_stream(&name).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.state.messages, ORDERS as u64, "JetStream dropped every re-publish: {:?}", info.state);
    let mut ids = HashSet::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let m = stream.get_raw_message(seq).await.unwrap();
        assert_eq!(m.subject.as_str(), "som.order.created");
        let id = m.headers.get("Nats-Msg-Id").unwrap().as_str().to_owned();
        let event: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!((event["id"].as_str(), event["type"].as_str()), (Some(id.as_str()), Some("som.order.created")));
        assert_eq!(event["specversion"], "1.0");
        assert!(ids.insert(id), "a duplicate id in the stream");
    }
    assert_eq!(ids.len(), ORDERS);
    let expected: HashSet<String> = (1..=ORDERS).map(|n| format!("order_created:order:{n}")).collect();
    assert_eq!(ids, expected, "every order, once");
    js.delete_stream(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_orders_reach_rabbitmq_with_confirms_across_an_outage() {
    use lapin::options::{BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    if !broker_up(RABBIT, "RabbitMQ") {
        return;
    }
    let name = format!("som-test-{:08x}", rand::random::<u32>());
    let conn =
        lapin::Connection::connect(&format!("amqp://guest:guest@{RABBIT}/%2f"), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .exchange_declare(
            name.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let queue = format!("{name}-orders");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            name.as_str().into(),
            "som.order.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let proxy = Proxy::start(RABBIT).await;
    let dir = tempfile::tempdir().unwrap();
    let som = system(dir.path(), format!("amqp://guest:guest@{}/%2f", proxy.addr), &name).await;
    run_with_an_outage(&som, &proxy).await;

    let (mut total, mut ids) = (0usize, HashSet::new());
    loop {
        let got = channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap();
        let Some(m) = got else { break };
        total += 1;
        let props = &m.delivery.properties;
        let id = props.message_id().as_ref().unwrap().to_string();
        assert_eq!(props.delivery_mode(), &Some(2), "persistent");
        assert_eq!(m.delivery.routing_key.as_str(), "som.order.created");
        let event: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
        assert_eq!(event["id"].as_str(), Some(id.as_str()));
        ids.insert(id);
    }
    let expected: HashSet<String> = (1..=ORDERS).map(|n| format!("order_created:order:{n}")).collect();
    assert_eq!(ids, expected, "every order arrived");
    eprintln!(
        "RabbitMQ: {total} messages for {ORDERS} orders: {} duplicates, re-published after confirms lost in the outage",
        total - ids.len()
    );
    channel.exchange_delete(name.as_str().into(), lapin::options::ExchangeDeleteOptions::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_rabbitmq_queue_takes_is_kept_and_retried_not_dropped() {
    if !broker_up(RABBIT, "RabbitMQ") {
        return;
    }
    let name = format!("som-test-{:08x}", rand::random::<u32>());
    let dir = tempfile::tempdir().unwrap();
    let som = system(dir.path(), format!("amqp://guest:guest@{RABBIT}/%2f"), &name).await;
    let registration =
        Registration { username: "bob".into(), email: None, password: som_core::testing::PASSWORD.into() };
    let bob = som.create_user(Caller::System, registration, false).await.unwrap();
    let input = OrderInput {
        items: vec![ItemInput { name: "Widget".into(), quantity: 1, price: "2.50".into() }],
        currency: None,
    };
    som.create_order(Caller::User { id: bob.id, is_staff: false }, input).await.unwrap();
    while som.dispatch_once().await.unwrap() > 0 {}
    let pending = som.notifications(Caller::System, Some(NotificationStatus::Pending), None, 10).await.unwrap();
    assert_eq!(pending.len(), 1, "the stream's row waits: {pending:?}");
    assert_eq!(pending[0].channel, "stream");
    let error = pending[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("no queue is bound"), "{error}");
    let conn =
        lapin::Connection::connect(&format!("amqp://guest:guest@{RABBIT}/%2f"), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel.exchange_delete(name.as_str().into(), lapin::options::ExchangeDeleteOptions::default()).await.unwrap();
}
