//! Notifications over real protocols on loopback: email to a real SMTP server (aiosmtpd, run
//! from `tests/support/smtp_sink.py`) and signed webhooks to a real HTTP receiver.
//!
//! The SMTP tests need Python with aiosmtpd (`.ci/run` installs it into a virtual environment
//! and points `SOM_TEST_PYTHON` at it). Without it they are skipped with a message, unless
//! `SOM_TEST_REQUIRE_SMTP` is set (CI sets it), in which case they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use som_core::config::Secret;
use som_core::domain::Caller;
use som_core::domain::NotificationStatus;
use som_core::notify::verify_signature;
use som_core::{Config, OrderSystem, Registration};

fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("SOM_TEST_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let ok = Command::new(&candidate)
        .args(["-c", "import aiosmtpd.controller"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(candidate);
    }
    if std::env::var_os("SOM_TEST_REQUIRE_SMTP").is_some() {
        panic!("SOM_TEST_REQUIRE_SMTP is set but {} cannot import aiosmtpd", candidate.display());
    }
    eprintln!("aiosmtpd is not available (set SOM_TEST_PYTHON to a Python that has it): skipping SMTP checks");
    None
}

struct Sink {
    python: PathBuf,
    port: u16,
    out: PathBuf,
    child: Option<Child>,
}

impl Sink {
    fn start(python: &Path, out: &Path) -> Sink {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut sink = Sink { python: python.to_owned(), port, out: out.to_owned(), child: None };
        sink.restart();
        sink
    }

    fn restart(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut child = Command::new(&self.python)
            .arg(script)
            .arg(self.port.to_string())
            .arg(&self.out)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn messages(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.out).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap());
            }
        }
        out
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn header<'a>(content: &'a str, name: &str) -> Option<&'a str> {
    content
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.split_once(": ").filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

async fn system(dir: &Path, tweak: impl FnOnce(&mut Config)) -> OrderSystem {
    system_on(dir, som_core::clock::SystemClock::shared(), tweak).await
}

/// [`system`] reading time from `clock`.
async fn system_on(dir: &Path, clock: som_core::clock::DynClock, tweak: impl FnOnce(&mut Config)) -> OrderSystem {
    let mut config = Config { database_url: format!("sqlite://{}", dir.join("som.db").display()), ..Config::default() };
    config.email_from = "SOM <orders@som.test>".into();
    config.outbox.poll_interval = Duration::from_millis(20);
    config.outbox.backoff_base = Duration::from_millis(100);
    config.outbox.backoff_cap = Duration::from_secs(2);
    config.outbox.max_attempts = 6;
    config.smtp_timeout = Duration::from_secs(2);
    tweak(&mut config);
    OrderSystem::builder().config(config).clock(clock).build().await.unwrap()
}

/// A customer; without an email, created by an operator (registration requires one).
async fn customer(som: &OrderSystem, name: &str, email: Option<&str>) -> Caller {
    let registration = Registration {
        username: name.into(),
        email: email.map(str::to_owned),
        password: som_core::testing::PASSWORD.into(),
    };
    let u = match email {
        Some(_) => som.register(registration).await.unwrap(),
        None => som.create_user(Caller::System, registration, false).await.unwrap(),
    };
    Caller::User { id: u.id, is_staff: false }
}

use som_core::testing::seed_order;

async fn drain(som: &OrderSystem) {
    while som.dispatch_once().await.unwrap() > 0 {}
}

async fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_flow_emails_reach_a_real_smtp_server() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&py, &dir.path().join("mail"));
    let som = system(dir.path(), |c| {
        c.notifiers = vec!["smtp".into()];
        c.smtp_url = Some(Secret::new(sink.url()));
    })
    .await;
    let alice = customer(&som, "alice", Some("alice@example.com")).await;
    let order = som.create_order(alice, seed_order()).await.unwrap();
    let p = som.initiate_payment(alice, order.id).await.unwrap();
    som.confirm_payment(alice, p.id).await.unwrap();
    drain(&som).await;
    let mut messages = sink.messages();
    assert_eq!(messages.len(), 2);
    messages.sort_by_key(|m| header(m["content"].as_str().unwrap(), "Subject").unwrap_or_default().to_owned());
    let subjects: Vec<&str> =
        messages.iter().map(|m| header(m["content"].as_str().unwrap(), "Subject").unwrap()).collect();
    assert_eq!(subjects, vec!["Order Created Successfully", "Payment Successful"]);
    for m in &messages {
        assert_eq!(m["mail_from"], "orders@som.test");
        assert_eq!(m["rcpt_tos"], serde_json::json!(["alice@example.com"]));
        let content = m["content"].as_str().unwrap();
        assert!(header(content, "To").is_some_and(|t| t.contains("alice@example.com")));
        assert!(header(content, "From").is_some_and(|f| f.contains("orders@som.test")));
        assert!(header(content, "Content-Type").is_some_and(|c| c.starts_with("multipart/alternative")));
        assert!(content.contains("text/plain") && content.contains("text/html"));
        assert!(content.contains(&format!("#{}", order.id)), "names the order");
        assert!(content.contains("250.00 USD"), "names the amount with its currency");
        assert!(content.contains("2 x Widget @ 100.00 USD"), "lists the items");
    }
    let ids: Vec<&str> =
        messages.iter().map(|m| header(m["content"].as_str().unwrap(), "Message-ID").unwrap()).collect();
    assert_eq!(
        ids,
        vec![
            format!("<order_created.order.{}.smtp@som>", order.id).as_str(),
            format!("<payment_succeeded.payment.{}.smtp@som>", p.id).as_str()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_delays_delivery_with_backoff_and_loses_nothing() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut sink = Sink::start(&py, &dir.path().join("mail"));
    // Retries fall due as the clock is moved, not as the test sleeps.
    let clock = som_core::clock::ManualClock::starting_now();
    let som = system_on(dir.path(), clock.clone(), |c| {
        c.notifiers = vec!["log".into(), "smtp".into()];
        c.smtp_url = Some(Secret::new(sink.url()));
    })
    .await;
    let alice = customer(&som, "alice", Some("alice@example.com")).await;
    sink.stop();
    use som_core::clock::Clock as _;
    let until = |due: chrono::DateTime<chrono::Utc>| (due - clock.now()).to_std().unwrap_or_default();
    for _ in 0..3 {
        som.create_order(alice, seed_order()).await.unwrap();
    }
    let smtp_rows = |rows: Vec<som_core::domain::OutboxEntry>| -> Vec<som_core::domain::OutboxEntry> {
        rows.into_iter().filter(|r| r.channel == "smtp").collect()
    };
    let mut delays = Vec::new();
    for attempt in 1..=3u32 {
        let rows =
            smtp_rows(som.notifications(Caller::System, Some(NotificationStatus::Pending), None, 100).await.unwrap());
        let due = rows.iter().map(|r| r.next_attempt_at).max().unwrap();
        if attempt > 1 {
            drain(&som).await;
            let early = smtp_rows(som.notifications(Caller::System, None, None, 100).await.unwrap());
            assert!(early.iter().all(|r| r.attempts == attempt - 1), "nothing is retried before it is due");
        }
        clock.advance(until(due));
        drain(&som).await;
        let now = clock.now();
        let rows =
            smtp_rows(som.notifications(Caller::System, Some(NotificationStatus::Pending), None, 100).await.unwrap());
        assert_eq!(rows.len(), 3, "nothing lost while the server is down");
        assert!(rows.iter().all(|r| r.attempts == attempt && r.last_error.is_some()), "{rows:?}");
        delays.push((rows[0].next_attempt_at - now).num_milliseconds());
    }
    assert!(delays[2] > delays[0], "backoff grows: {delays:?}");
    let due = som.notifications(Caller::System, None, None, 100).await.unwrap().iter().map(|r| r.next_attempt_at).max();
    clock.advance(until(due.unwrap()));
    let sent = som.notifications(Caller::System, Some(NotificationStatus::Sent), None, 100).await.unwrap();
    assert_eq!(sent.iter().filter(|r| r.channel == "log").count(), 3, "the log channel is not held up");
    assert!(sent.iter().all(|r| r.attempts == 1), "and not repeated");
    sink.restart();
    let dispatcher = som.spawn_dispatcher();
    wait_until(|| sink.messages().len() >= 3, "delivery after the server came back").await;
    let pending = |som: OrderSystem| async move {
        som.notifications(Caller::System, Some(NotificationStatus::Pending), None, 100).await.unwrap().len()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pending(som.clone()).await > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    dispatcher.shutdown().await;
    let messages = sink.messages();
    let ids: HashSet<String> =
        messages.iter().map(|m| header(m["content"].as_str().unwrap(), "Message-ID").unwrap().to_owned()).collect();
    assert_eq!((messages.len(), ids.len()), (3, 3), "every email exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_recipient_is_dead_lettered_at_once_and_can_be_requeued() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&py, &dir.path().join("mail"));
    let som = system(dir.path(), |c| {
        c.notifiers = vec!["smtp".into()];
        c.smtp_url = Some(Secret::new(sink.url()));
    })
    .await;
    let bounce = customer(&som, "bounce", Some("reject-me@example.com")).await;
    som.create_order(bounce, seed_order()).await.unwrap();
    drain(&som).await;
    let dead = som.notifications(Caller::System, Some(NotificationStatus::Dead), None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1, "a 5xx rejection is not retried");
    assert!(dead[0].last_error.as_deref().is_some_and(|e| e.contains("550")), "{:?}", dead[0].last_error);
    let requeued = som.retry_notification(Caller::System, dead[0].id).await.unwrap();
    assert_eq!((requeued.status, requeued.attempts), (NotificationStatus::Pending, 0));
    drain(&som).await;
    let again = som.notifications(Caller::System, Some(NotificationStatus::Dead), None, 10).await.unwrap();
    assert_eq!(again.len(), 1, "still rejected: dead again after one more attempt");
    assert!(sink.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_without_an_email_address_are_skipped_with_a_reason() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&py, &dir.path().join("mail"));
    let som = system(dir.path(), |c| {
        c.notifiers = vec!["log".into(), "smtp".into()];
        c.smtp_url = Some(Secret::new(sink.url()));
    })
    .await;
    let nomail = customer(&som, "nomail", None).await;
    som.create_order(nomail, seed_order()).await.unwrap();
    drain(&som).await;
    let skipped = som.notifications(Caller::System, Some(NotificationStatus::Skipped), None, 10).await.unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].channel, "smtp");
    assert!(skipped[0].last_error.as_deref().is_some_and(|e| e.contains("no email address")));
    let sent = som.notifications(Caller::System, Some(NotificationStatus::Sent), None, 10).await.unwrap();
    assert_eq!(sent.iter().map(|r| r.channel.as_str()).collect::<Vec<_>>(), vec!["log"]);
    assert_eq!(som.dispatch_once().await.unwrap(), 0, "no retry loop");
}

/// What the receiver got: the signature header, the raw body and the parsed body.
type Received = (String, Vec<u8>, serde_json::Value);

#[derive(Clone, Default)]
struct Receiver {
    events: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<Mutex<u32>>,
}

const WEBHOOK_SECRET: &str = "whsec_test_0123456789";

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Some(sig) = headers.get("som-signature").and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    if verify_signature(WEBHOOK_SECRET.as_bytes(), sig, &body, Duration::from_secs(300)).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    {
        let mut fail = r.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    r.events.lock().unwrap().push((sig.to_owned(), body.to_vec(), json));
    StatusCode::OK
}

async fn receiver() -> (Receiver, String) {
    let r = Receiver::default();
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .route("/gone", post(|| async { StatusCode::GONE }))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_and_a_real_receiver_verifies_them() {
    let (r, base) = receiver().await;
    *r.fail_first.lock().unwrap() = 2;
    let dir = tempfile::tempdir().unwrap();
    let som = system(dir.path(), |c| {
        c.notifiers = vec!["webhook".into()];
        c.webhook_urls = vec![format!("{base}/hook")];
        c.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
    })
    .await;
    let alice = customer(&som, "alice", Some("alice@example.com")).await;
    let order = som.create_order(alice, seed_order()).await.unwrap();
    let p = som.initiate_payment(alice, order.id).await.unwrap();
    som.confirm_payment(alice, p.id).await.unwrap();
    let dispatcher = som.spawn_dispatcher();
    wait_until(|| r.events.lock().unwrap().len() >= 2, "both webhook events").await;
    dispatcher.shutdown().await;
    let mut events = r.events.lock().unwrap().clone();
    events.sort_by_key(|(_, _, e)| e["id"].as_str().map(str::to_owned));
    let ids: Vec<&str> = events.iter().filter_map(|(_, _, e)| e["id"].as_str()).collect();
    assert_eq!(ids, vec![format!("order_created:order:{}", order.id), format!("payment_succeeded:payment:{}", p.id)]);
    assert_eq!(events[0].2["type"], "som.order.created");
    assert_eq!(events[0].2["specversion"], "1.0");
    assert_eq!(events[0].2["data"]["amount"], "250.00");
    // Each event's `webhook` row is fanned out to the endpoint made from SOM_WEBHOOK_URLS.
    let sent = som.notifications(Caller::System, Some(NotificationStatus::Sent), None, 10).await.unwrap();
    let delivered: Vec<_> = sent.iter().filter(|n| n.channel.starts_with("webhook:")).collect();
    assert!(delivered.iter().any(|n| n.attempts >= 2), "a 503 was retried through the outbox: {sent:?}");
    assert_eq!(delivered.len(), 2, "and each event delivered once");
    let (sig, body, _) = &events[0];
    let tol = Duration::from_secs(300);
    assert!(verify_signature(WEBHOOK_SECRET.as_bytes(), sig, body, tol).is_ok());
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    assert!(verify_signature(WEBHOOK_SECRET.as_bytes(), sig, &tampered, tol).is_err(), "a tampered body is rejected");
    let old = som_core::notify::webhook::sign(WEBHOOK_SECRET.as_bytes(), chrono::Utc::now().timestamp() - 3600, body);
    assert!(verify_signature(WEBHOOK_SECRET.as_bytes(), &old, body, tol).is_err(), "an old timestamp is rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_client_error_is_permanent() {
    let (_r, base) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let som = system(dir.path(), |c| {
        c.notifiers = vec!["webhook".into()];
        c.webhook_urls = vec![format!("{base}/gone")];
        c.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
    })
    .await;
    let alice = customer(&som, "alice", None).await;
    som.create_order(alice, seed_order()).await.unwrap();
    drain(&som).await;
    let dead = som.notifications(Caller::System, Some(NotificationStatus::Dead), None, 10).await.unwrap();
    assert_eq!((dead.len(), dead[0].attempts), (1, 1));
    assert!(dead[0].last_error.as_deref().is_some_and(|e| e.contains("410")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_webhook_urls_are_endpoints_kept_with_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let with_urls = |urls: Vec<String>| {
        move |c: &mut Config| {
            c.notifiers = vec!["webhook".into()];
            c.webhook_urls = urls;
            c.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
        }
    };
    let (a, b) = ("http://127.0.0.1:9/a".to_owned(), "http://127.0.0.1:9/b".to_owned());
    let som = system(dir.path(), with_urls(vec![a.clone(), b.clone()])).await;
    assert_eq!(som.retire_unlisted_webhook_endpoints().await.unwrap(), 0);
    let endpoints = som.webhook_endpoints(Caller::System, None, None).await.unwrap().items;
    assert_eq!(
        endpoints.iter().map(|e| (e.url.as_str(), e.enabled, e.from_config)).collect::<Vec<_>>(),
        vec![(a.as_str(), true, true), (b.as_str(), true, true)]
    );
    // Their URL and secret are the configuration's: not changed over the API.
    let id = endpoints[0].id;
    let patch = som_core::EndpointPatch { url: Some("https://hooks.example.com/x".into()), ..Default::default() };
    let err = som.update_webhook_endpoint(Caller::System, id, patch).await.unwrap_err();
    assert_eq!(err.kind(), som_core::error::ErrorKind::Conflict, "{err}");
    let err = som.rotate_webhook_secret(Caller::System, id, None).await.unwrap_err();
    assert_eq!(err.kind(), som_core::error::ErrorKind::Conflict, "{err}");
    // A command run without the setting changes nothing; a server with a shorter list retires
    // the unlisted URL, and listing it again brings it back.
    let plain = system(dir.path(), |c| c.notifiers = vec!["webhook".into()]).await;
    assert_eq!(plain.webhook_endpoints(Caller::System, None, None).await.unwrap().items.len(), 2);
    let shorter = system(dir.path(), with_urls(vec![a.clone()])).await;
    assert_eq!(shorter.retire_unlisted_webhook_endpoints().await.unwrap(), 1);
    let b_endpoint = shorter.webhook_endpoint(Caller::System, endpoints[1].id).await.unwrap();
    assert!(!b_endpoint.enabled && b_endpoint.disabled_reason.is_some());
    let again = system(dir.path(), with_urls(vec![a, b])).await;
    assert!(again.webhook_endpoint(Caller::System, endpoints[1].id).await.unwrap().enabled);
    // Debug output never shows a secret.
    let shown = format!("{:?}", again.webhook_endpoint(Caller::System, id).await.unwrap());
    assert!(!shown.contains(WEBHOOK_SECRET), "{shown}");
}
