//! A small HTTP load generator for SOM.
//!
//!     cargo run --release --example loadgen -- --url http://127.0.0.1:8000 \
//!         --scenario flow --concurrency 64 --duration 10
//!
//! Scenarios: `flow` (per iteration: create an order, initiate its payment, confirm it),
//! `latest` (GET /api/v1/orders/latest/), `list` (a page of 50), `pages` (the user's whole list,
//! following `Link: rel="next"` with `?limit=200`: one iteration per whole list), `detail` (one order),
//! `healthz` (GET /healthz), `login` (POST /api/v1/token/;
//! run the server with SOM_AUTH_RATE_LIMIT=0). Prints throughput, latency percentiles and
//! errors. Every iteration is bounded in count by the duration and targets only `--url`. A flow's
//! three requests are also timed one by one: all of them (`requests: … p99=…`), then each step
//! (successful requests only; a failed request ends its iteration, counted as its error).
//!
//! `--orders N` places N orders (two items each) for the load user before a read scenario
//! (default 60). `--write-rate R` places R orders per second for another user while the
//! scenario runs (from a thread and a client of their own), so that reads are measured under
//! a steady write load; the writes' own figures are printed on a second line. `--user NAME`
//! runs as that user (registered if new, password `correct horse battery`), e.g. the one
//! `seed` gives 1,000 orders.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

struct Args {
    url: String,
    scenario: String,
    concurrency: usize,
    duration: Duration,
    orders: usize,
    write_rate: u32,
    user: Option<String>,
    staff: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        url: "http://127.0.0.1:8000".into(),
        scenario: "flow".into(),
        concurrency: 16,
        duration: Duration::from_secs(10),
        orders: 60,
        write_rate: 0,
        user: None,
        staff: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!(
                "loadgen [--url http://127.0.0.1:8000] [--scenario flow|create|latest|list|detail|healthz|login|console-list|console-order] \
                 [--concurrency 16] [--duration 10] [--orders 60] [--write-rate 0] [--user NAME] [--staff NAME]"
            );
            std::process::exit(0);
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = value,
            "--scenario" => a.scenario = value,
            "--concurrency" => a.concurrency = value.parse()?,
            "--duration" => a.duration = Duration::from_secs_f64(value.parse()?),
            "--orders" => a.orders = value.parse()?,
            "--write-rate" => a.write_rate = value.parse()?,
            "--user" => a.user = Some(value),
            "--staff" => a.staff = Some(value),
            other => bail!("unknown flag {other}"),
        }
    }
    let host = a.url.trim_start_matches("http://").split([':', '/']).next().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        bail!("loadgen only targets loopback addresses");
    }
    Ok(a)
}

/// The order the `detail` scenario reads.
static FIRST_ORDER: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

#[derive(Default)]
struct Stats {
    latencies: Vec<Duration>,
    /// Each request's own latency by its step, for scenarios of several requests (the flow).
    requests: BTreeMap<&'static str, Vec<Duration>>,
    errors: BTreeMap<String, u64>,
}

tokio::task_local! {
    /// Where a measured task's requests record their latencies (see [`timed`]).
    static REQUESTS: RefCell<BTreeMap<&'static str, Vec<Duration>>>;
}

/// `request`, its latency (sent to body read) recorded under `step` in the task's
/// [`REQUESTS`] if it has them and the request succeeded (failures are counted per iteration).
async fn timed<T, E>(step: &'static str, request: impl std::future::Future<Output = Result<T, E>>) -> Result<T, E> {
    let t = Instant::now();
    let done = request.await;
    if done.is_ok() {
        let _ = REQUESTS.try_with(|r| r.borrow_mut().entry(step).or_default().push(t.elapsed()));
    }
    done
}

async fn register(client: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<String> {
    let body = json!({"username": name, "email": format!("{name}@example.com"), "password": "correct horse battery"});
    client.post(format!("{url}/api/v1/accounts/register/")).json(&body).send().await?;
    let pair: Value = client
        .post(format!("{url}/api/v1/token/"))
        .json(&json!({"username": name, "password": "correct horse battery"}))
        .send()
        .await?
        .json()
        .await?;
    pair["access"].as_str().map(str::to_owned).context("no access token")
}

async fn expect(resp: Result<reqwest::Response, reqwest::Error>, want: u16) -> Result<Value, String> {
    match resp {
        Ok(r) if r.status().as_u16() == want => r.json::<Value>().await.map_err(|e| format!("body: {e}")),
        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
        Err(e) => Err(if e.is_timeout() { "timeout".into() } else { "connection".into() }),
    }
}

/// Like [`expect`] for reads whose body the load does not use: read whole, not parsed, as wrk
/// would, so that the load generator's own JSON parsing does not take the CPU the server
/// shares with it.
async fn expect_body(resp: Result<reqwest::Response, reqwest::Error>) -> Result<(), String> {
    match resp {
        Ok(r) if r.status().as_u16() == 200 => match r.bytes().await {
            Ok(body) if body.first().is_some_and(|b| matches!(b, b'{' | b'[' | b'<')) => Ok(()),
            Ok(_) => Err("body: neither JSON nor a page".into()),
            Err(e) => Err(format!("body: {e}")),
        },
        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
        Err(e) => Err(if e.is_timeout() { "timeout".into() } else { "connection".into() }),
    }
}

async fn iteration(client: &reqwest::Client, url: &str, scenario: &str, token: &str) -> Result<(), String> {
    let api = format!("{url}/api/v1");
    match scenario {
        "healthz" => expect_body(client.get(format!("{url}/healthz")).send().await).await,
        "latest" => expect_body(client.get(format!("{api}/orders/latest/")).bearer_auth(token).send().await).await,
        "list" => expect_body(client.get(format!("{api}/orders/?limit=50")).bearer_auth(token).send().await).await,
        "pages" => {
            let mut next = Some(format!("{api}/orders/?limit=200"));
            while let Some(page) = next.take() {
                let resp = client
                    .get(&page)
                    .bearer_auth(token)
                    .send()
                    .await
                    .map_err(|e| if e.is_timeout() { "timeout".to_owned() } else { "connection".to_owned() })?;
                if resp.status().as_u16() != 200 {
                    return Err(format!("HTTP {}", resp.status().as_u16()));
                }
                // `Link: </api/v1/orders/?cursor=…&limit=200>; rel="next"`
                next = resp
                    .headers()
                    .get("link")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| l.strip_prefix('<'))
                    .and_then(|l| l.split_once('>'))
                    .map(|(path, _)| format!("{url}{path}"));
                resp.bytes().await.map_err(|e| format!("body: {e}"))?;
            }
            Ok(())
        }
        "detail" => {
            let id = FIRST_ORDER.get().copied().unwrap_or(1);
            expect_body(client.get(format!("{api}/orders/{id}/")).bearer_auth(token).send().await).await
        }
        // The console's pages, as a signed-in staff member (`token` is the session cookie).
        "console-list" => {
            expect_body(client.get(format!("{url}/console/orders")).header("cookie", token).send().await).await
        }
        "console-order" => {
            let id = FIRST_ORDER.get().copied().unwrap_or(1);
            expect_body(client.get(format!("{url}/console/orders/{id}")).header("cookie", token).send().await).await
        }
        "login" => expect(
            client
                .post(format!("{api}/token/"))
                .json(&json!({"username": "loadgen", "password": "correct horse battery"}))
                .send()
                .await,
            200,
        )
        .await
        .map(drop),
        "create" => {
            let order = json!({"items": [{"name": "Widget", "quantity": 2, "price": "100.00"}, {"name": "Gadget", "quantity": 1, "price": "50.00"}]});
            expect(client.post(format!("{api}/orders/")).bearer_auth(token).json(&order).send().await, 201)
                .await
                .map(drop)
        }
        _ => {
            let order = json!({"items": [{"name": "Widget", "quantity": 2, "price": "100.00"}, {"name": "Gadget", "quantity": 1, "price": "50.00"}]});
            // One step of the flow: a POST to `path` answered `want`, timed as `step`.
            let post = async |step, path: &str, body: Value, want| {
                let sent = client.post(format!("{api}/{path}")).bearer_auth(token).json(&body).send();
                timed(step, async { expect(sent.await, want).await }).await
            };
            let o = post("1-create", "orders/", order, 201).await?;
            let p = post("2-initiate", "payments/initiate/", json!({"order_id": o["id"]}), 200).await?;
            post("3-confirm", "payments/confirm/", json!({"payment_id": p["id"]}), 200).await.map(drop)
        }
    }
}

/// Signs `staff` (password "correct horse battery") in to the console: its session cookie.
async fn console_session(url: &str, staff: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let resp = client
        .post(format!("{url}/console/sign-in"))
        .form(&[("username", staff), ("password", "correct horse battery")])
        .send()
        .await?;
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-som_console="))
        .and_then(|c| c.split(';').next())
        .with_context(|| format!("no session cookie (HTTP {})", resp.status()))?;
    Ok(cookie.to_owned())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(a.concurrency).build()?;
    let name = match &a.user {
        Some(user) => user.clone(),
        None if a.scenario == "login" => "loadgen".to_owned(),
        None => format!("loadgen{}", std::process::id()),
    };
    let token = register(&client, &a.url, &name).await.context("registering the load user")?;
    if matches!(a.scenario.as_str(), "latest" | "list" | "pages" | "detail" | "console-list" | "console-order") {
        // A few are paid, the rest placed, sixteen at a time.
        for _ in 0..a.orders.min(10) {
            iteration(&client, &a.url, "flow", &token).await.map_err(anyhow::Error::msg)?;
        }
        let placed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(a.orders.min(10)));
        let mut placing = Vec::new();
        for _ in 0..16 {
            let (client, url, token, placed, want) =
                (client.clone(), a.url.clone(), token.clone(), placed.clone(), a.orders);
            placing.push(tokio::spawn(async move {
                while placed.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < want {
                    iteration(&client, &url, "create", &token).await?;
                }
                Ok::<(), String>(())
            }));
        }
        for p in placing {
            p.await?.map_err(anyhow::Error::msg)?;
        }
        let latest: Value =
            client.get(format!("{}/api/v1/orders/latest/", a.url)).bearer_auth(&token).send().await?.json().await?;
        let _ = FIRST_ORDER.set(latest["id"].as_i64().context("no order")?);
    }
    let token = if a.scenario.starts_with("console-") {
        let staff = a.staff.as_deref().context("console scenarios need --staff NAME (a staff account)")?;
        console_session(&a.url, staff).await.context("signing in to the console")?
    } else {
        token
    };
    let deadline = Instant::now() + a.duration;
    let writer = if a.write_rate > 0 {
        let writer_token = register(&client, &a.url, &format!("loadgen{}w", std::process::id())).await?;
        // The writes run on a thread and a client of their own: when the server falls behind
        // them, their backlog of requests must not queue the readers' tasks in this process
        // and count as read latency.
        let (url, rate) = (a.url.clone(), a.write_rate);
        let writes = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Some(std::thread::spawn(move || writes.block_on(paced_writes(client, url, writer_token, rate, deadline))))
    } else {
        None
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (client, url, scenario, token) = (client.clone(), a.url.clone(), a.scenario.clone(), token.clone());
        tasks.push(tokio::spawn(REQUESTS.scope(RefCell::new(BTreeMap::new()), async move {
            let mut stats = Stats::default();
            while Instant::now() < deadline {
                let t = Instant::now();
                match iteration(&client, &url, &scenario, &token).await {
                    Ok(()) => stats.latencies.push(t.elapsed()),
                    Err(e) => *stats.errors.entry(e).or_default() += 1,
                }
            }
            stats.requests = REQUESTS.with(|r| r.take());
            stats
        })));
    }
    let mut all = Stats::default();
    for t in tasks {
        let s = t.await?;
        all.latencies.extend(s.latencies);
        for (step, latencies) in s.requests {
            all.requests.entry(step).or_default().extend(latencies);
        }
        for (k, v) in s.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies.sort();
    let ok = all.latencies.len();
    let errors: u64 = all.errors.values().sum();
    println!(
        "scenario={} concurrency={} duration={:.1}s ok={} errors={} throughput={:.0}/s p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        a.scenario,
        a.concurrency,
        elapsed,
        ok,
        errors,
        ok as f64 / elapsed,
        pct(&all.latencies, 0.50),
        pct(&all.latencies, 0.90),
        pct(&all.latencies, 0.99),
        all.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    );
    if !all.requests.is_empty() {
        let every: Vec<Duration> = all.requests.values().flatten().copied().collect();
        for (step, mut latencies) in std::iter::once(("requests", every)).chain(all.requests) {
            latencies.sort();
            println!(
                "  {step}: n={} rate={:.0}/s p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
                latencies.len(),
                latencies.len() as f64 / elapsed,
                pct(&latencies, 0.50),
                pct(&latencies, 0.90),
                pct(&latencies, 0.99),
                latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            );
        }
    }
    for (k, v) in &all.errors {
        println!("  error {k}: {v}");
    }
    if let Some(writer) = writer {
        let (mut writes, elapsed) = writer.join().map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
        writes.latencies.sort();
        println!(
            "  during it: writes={} errors={} rate={:.0}/s p50={:.2}ms p99={:.2}ms",
            writes.latencies.len(),
            writes.errors.values().sum::<u64>(),
            writes.latencies.len() as f64 / elapsed,
            pct(&writes.latencies, 0.50),
            pct(&writes.latencies, 0.99),
        );
        for (k, v) in &writes.errors {
            println!("    write error {k}: {v}");
        }
    }
    Ok(())
}

/// Places `rate` orders per second until `deadline`, each started on its tick whether or not
/// the ones before it are answered (an open load, so a slow server cannot lower it).
async fn paced_writes(
    client: reqwest::Client,
    url: String,
    token: String,
    rate: u32,
    deadline: Instant,
) -> (Stats, f64) {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = tokio::task::JoinSet::new();
    while Instant::now() < deadline {
        ticks.tick().await;
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        inflight.spawn(async move {
            let t = Instant::now();
            iteration(&client, &url, "create", &token).await.map(|()| t.elapsed())
        });
    }
    let mut stats = Stats::default();
    while let Some(done) = inflight.join_next().await {
        match done {
            Ok(Ok(latency)) => stats.latencies.push(latency),
            Ok(Err(e)) => *stats.errors.entry(e).or_default() += 1,
            Err(e) => *stats.errors.entry(e.to_string()).or_default() += 1,
        }
    }
    (stats, started.elapsed().as_secs_f64())
}
