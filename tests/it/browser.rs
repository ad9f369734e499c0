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

/// The program that runs Python (with selenium installed), from `SOM_TEST_PYTHON`.
fn python_with_selenium() -> Option<PathBuf> {
    let python = std::env::var_os("SOM_TEST_PYTHON").map(PathBuf::from);
    let driver =
        std::env::var_os("SOM_TEST_CHROMEDRIVER").map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from);
    let usable = python
        .as_ref()
        .is_some_and(|p| Command::new(p).args(["-c", "import selenium"]).output().is_ok_and(|o| o.status.success()))
        && driver.exists();
    if usable {
        return python;
    }
    if std::env::var_os("SOM_TEST_REQUIRE_BROWSER").is_some() {
        panic!(
            "SOM_TEST_REQUIRE_BROWSER is set but SOM_TEST_PYTHON has no selenium or {} is missing",
            driver.display()
        );
    }
    eprintln!("selenium or chromedriver not found: skipping the console browser test");
    None
}

/// The staff console in a real Chromium through WebDriver: a customer is turned away; staff
/// sign in, find a customer's order by search, refund part of it and see it in the order and
/// its timeline, are refused a forged form, disable the customer and sign out; an item named
/// like a script is text; and the same works with JavaScript off. Screenshots of the overview
/// and an order at desktop and phone widths are written to `docs/console/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    use som_core::domain::{ItemInput, OrderInput, OrderStatus};
    use som_core::{Caller, Registration};

    let Some(_) = chromium() else { return };
    let Some(python) = python_with_selenium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config =
        Config { database_url: format!("sqlite://{}", dir.path().join("som.db").display()), ..Config::default() };
    let som = OrderSystem::builder().config(config.clone()).build().await.unwrap();
    let password = "correct horse battery";
    let register = |name: &str| Registration {
        username: name.into(),
        email: Some(format!("{name}@example.com")),
        password: password.into(),
    };
    let boss = som.register(register("boss")).await.unwrap();
    som.set_staff(Caller::System, boss.id, true).await.unwrap();
    som.register(register("carol")).await.unwrap();
    let carol_tokens = som.login("carol", password).await.unwrap();
    let carol = som.authenticate(&carol_tokens.access).await.unwrap();
    let items = vec![
        ItemInput { name: "<script>alert(1)</script>".into(), quantity: 2, price: "10.00".into() },
        ItemInput { name: "A very long product name that goes on and on to see that tables wrap it instead of breaking the page layout on a phone".into(), quantity: 1, price: "5.50".into() },
    ];
    let order = som.create_order(carol, OrderInput { items, currency: None }).await.unwrap();
    let payment = som.initiate_payment(carol, order.id).await.unwrap();
    som.confirm_payment(carol, payment.id).await.unwrap();
    let held_items = vec![ItemInput { name: "Held".into(), quantity: 1, price: "25.50".into() }];
    let held = som.create_order(carol, OrderInput { items: held_items, currency: None }).await.unwrap();
    let hold = som.initiate_payment(carol, held.id).capture(som_core::domain::CaptureMethod::Manual).await.unwrap();
    som.confirm_payment(carol, hold.id).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(som_server::serve(listener, som.clone(), som_server::Settings::from_config(&config), async move {
        let _ = stopped.await;
    }));
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.py");
    let (order_id, shots_arg, held_id) = (order.id.to_string(), shots.clone(), held.id.to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(base)
            .arg(order_id)
            .arg(shots_arg)
            .arg(held_id)
            .env("SE_OFFLINE", "true")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let _ = stop.send(());
    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "the browser session failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // What the browser did, as the library sees it: three refunds (with and without JavaScript,
    // and the returned item's), none from the forged forms; the customer disabled and their API token refused.
    let refunds = som.payment_refunds(Caller::System, payment.id).await.unwrap();
    let amounts: Vec<String> = refunds.iter().map(|r| r.amount.to_string()).collect();
    assert_eq!(amounts, ["2.50 USD", "10.00 USD", "1.00 USD"]);
    let returns = som.order_returns(Caller::System, order.id).await.unwrap();
    assert_eq!(
        (returns.len(), returns[0].status, returns[0].refund_id),
        (1, som_core::domain::ReturnStatus::Refunded, Some(refunds[1].id)),
        "the return received in the browser"
    );
    assert_eq!(som.order(Caller::System, order.id).await.unwrap().status, OrderStatus::PartiallyRefunded);
    assert_eq!(
        som.authenticate(&carol_tokens.access).await.unwrap_err().kind(),
        som_core::ErrorKind::Unauthorized,
        "the disabled customer's API token is refused"
    );
    let captured = som.payment(Caller::System, hold.id).await.unwrap();
    assert_eq!(captured.captured.to_string(), "10.00 USD", "the capture made in the browser");
    assert_eq!(som.order(Caller::System, held.id).await.unwrap().status, OrderStatus::Paid);
    for name in [
        "overview-desktop",
        "overview-phone",
        "order-desktop",
        "order-phone",
        "order-captured-desktop",
        "order-captured-phone",
        "order-returned-desktop",
        "order-returned-phone",
    ] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{name}.png is a screenshot");
    }
}
