//! A PostgreSQL outage under a running server: the database is cut off (through a TCP proxy
//! the test controls), requests fail fast with 503 problem+json, `/readyz` reports not ready,
//! and once the database is reachable again the server recovers by itself, without a restart.
//! Runs when `SOM_TEST_POSTGRES_URL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use som_core::testing::{TestDatabase, admin_url};
use som_core::{Config, OrderSystem};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards TCP connections to PostgreSQL while up; while down, refuses new connections and
/// has cut the existing ones.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (Arc::clone(&up), Arc::clone(&conns));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                conns2.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Proxy { port, up, conns }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_is_503_and_the_server_recovers_by_itself() {
    let Some(admin) = admin_url() else {
        eprintln!("SOM_TEST_POSTGRES_URL is not set: skipping the outage test");
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDatabase::create(&admin).await.expect("Postgres unreachable");
    let proxy = Proxy::start("127.0.0.1:5432".into()).await;
    let via_proxy = db.url().replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(via_proxy, db.url(), "the test database URL names 127.0.0.1:5432");
    let config = Config { database_url: via_proxy, auth_rate_limit: 0, ..Config::default() };
    let som = OrderSystem::builder().config(config.clone()).build().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(som_server::serve(listener, som, som_server::Settings::from_config(&config), async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    client
        .post(format!("{base}/api/v1/accounts/register/"))
        .json(&json!({"username": "alice", "email": "alice@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    let pair: Value = client
        .post(format!("{base}/api/v1/token/"))
        .json(&json!({"username": "alice", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = pair["access"].as_str().unwrap().to_owned();
    let order = json!({"items": [{"name": "Widget", "quantity": 1, "price": "9.99"}]});
    let create = || client.post(format!("{base}/api/v1/orders/")).bearer_auth(&token).json(&order).send();
    assert_eq!(create().await.unwrap().status(), 201);

    proxy.down();
    for _ in 0..3 {
        let started = Instant::now();
        let resp = create().await.unwrap();
        assert_eq!(resp.status(), 503, "storage down is 503");
        assert!(resp.headers().contains_key("retry-after"));
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        assert!(started.elapsed() < Duration::from_secs(7), "fails within the pool's acquire timeout");
    }
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while the database is away");
    assert_eq!(client.get(format!("{base}/healthz")).send().await.unwrap().status(), 200, "but alive");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = create().await.unwrap().status();
        if status == 201 {
            break;
        }
        assert_eq!(status, 503, "only retryable failures while recovering");
        assert!(Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(client.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    let list: Vec<Value> =
        client.get(format!("{base}/api/v1/orders/")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 2, "the orders acknowledged before and after the outage, and none of the failed ones");
}
