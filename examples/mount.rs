//! Mounting SOM's HTTP API inside an application's own axum router: the app keeps its routes
//! (`/shop/…`), SOM adds `/api/v1/…`, its OpenAPI document and Swagger UI, `/healthz`,
//! `/readyz` and `/metrics`. The example serves both on a free port, calls one route of each
//! over HTTP (registering, logging in and placing an order through SOM's API), and exits.
//!
//! Run with `cargo run --example mount`.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use som_core::{Config, OrderSystem};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("som-mount-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating a temporary directory")?;
    let config = Config { database_url: format!("sqlite://{}", dir.join("som.db").display()), ..Config::default() };
    let som = OrderSystem::builder().config(config.clone()).build().await.context("opening SOM")?;
    // Delivers notifications in the background, as `som serve` does.
    let dispatcher = som.spawn_dispatcher();

    // The application's own routes, with SOM's API merged in. SOM's rate limits and logs
    // read the client address, so the router is served with connection info.
    let app = Router::new()
        .route("/shop/hello", get(|| async { "hello from the shop" }))
        .merge(som_server::app(som.clone(), som_server::Settings::from_config(&config)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding")?;
    let base = format!("http://{}", listener.local_addr()?);
    let server =
        tokio::spawn(
            async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await },
        );

    let result = exercise(&base).await;
    server.abort();
    dispatcher.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Calls the app's route and SOM's API the way a client would.
async fn exercise(base: &str) -> anyhow::Result<()> {
    // reqwest is built here without a TLS crypto provider of its own; SOM uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let hello = http.get(format!("{base}/shop/hello")).send().await?.text().await?;
    println!("GET /shop/hello: {hello}");
    let health = http.get(format!("{base}/healthz")).send().await?.status();
    println!("GET /healthz: {health}");

    let user = json!({"username": "alice", "email": "alice@example.com", "password": "correct horse battery"});
    let registered = http.post(format!("{base}/api/v1/accounts/register/")).json(&user).send().await?;
    if !registered.status().is_success() {
        bail!("registering answered {}", registered.status());
    }
    let tokens: Value = http.post(format!("{base}/api/v1/token/")).json(&user).send().await?.json().await?;
    let access = tokens["access"].as_str().context("no access token")?;
    let order: Value = http
        .post(format!("{base}/api/v1/orders/"))
        .bearer_auth(access)
        .json(&json!({"items": [{"name": "Widget", "quantity": 2, "price": "100.00"}]}))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "POST /api/v1/orders/: order #{} of {} {}",
        order["id"],
        order["total_amount"].as_str().unwrap_or("?"),
        order["currency"].as_str().unwrap_or("?")
    );
    if order["total_amount"] != "200.00" {
        bail!("unexpected order: {order}");
    }
    Ok(())
}
