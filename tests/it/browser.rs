//! Swagger UI renders the API's operations in a real browser with no internet: headless
//! Chromium loads `/api/docs/` from a live server and its DOM is inspected.
//!
//! Needs Chromium (`/usr/bin/chromium`, or `SOM_TEST_CHROMIUM`); skipped with a message without
//! it, unless `SOM_TEST_REQUIRE_BROWSER` is set (CI sets it and installs Debian's chromium).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use som_core::{Config, OrderSystem};

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("SOM_TEST_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("SOM_TEST_REQUIRE_BROWSER").is_some() {
        panic!("SOM_TEST_REQUIRE_BROWSER is set but {} does not exist", path.display());
    }
    eprintln!("Chromium not found: skipping the Swagger UI browser check");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_renders_every_operation_offline_in_a_real_browser() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config =
        Config { database_url: format!("sqlite://{}", dir.path().join("som.db").display()), ..Config::default() };
    let som = OrderSystem::builder().config(config.clone()).build().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/docs/", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(som_server::serve(listener, som, som_server::Settings::from_config(&config), async move {
        let _ = stopped.await;
    }));
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=20000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(&url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let _ = stop.send(());
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(dom.contains("swagger-ui"), "the page loaded: {}", &dom[..dom.len().min(500)]);
    let operations = dom.matches("opblock-summary-path").count();
    assert!(operations >= 14, "every operation rendered, found {operations}");
    for path in ["/api/v1/token/", "/api/v1/orders/", "/api/v1/payments/confirm/", "/api/v1/accounts/register/"] {
        assert!(dom.contains(path), "{path} rendered");
    }
    assert!(dom.contains("authorize"), "the Authorize button for the bearer token rendered");
    assert!(dom.contains("SOM — Smart Order Management"), "the title from the OpenAPI document rendered");
}
