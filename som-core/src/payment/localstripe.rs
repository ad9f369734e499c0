//! A real Stripe-compatible server for tests: `localstripe` (PyPI), started on a free port with
//! the Python named by `SOM_TEST_PYTHON` (or `python3`). Without it, [`LocalStripe::start`]
//! returns `None` with a message, unless `SOM_TEST_REQUIRE_LOCALSTRIPE` is set (CI sets it),
//! in which case it panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The secret key tests give SOM (localstripe accepts any `sk_` key).
pub const TEST_SECRET_KEY: &str = "sk_test_som_localstripe";

/// A running localstripe; stopped when dropped.
#[derive(Debug)]
pub struct LocalStripe {
    python: PathBuf,
    port: u16,
    child: Option<Child>,
    client: reqwest::Client,
}

impl LocalStripe {
    /// Starts localstripe on a free port and waits until it answers.
    pub fn start() -> Option<LocalStripe> {
        let python = std::env::var_os("SOM_TEST_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
        let available = Command::new(&python)
            .args(["-c", "import localstripe.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            if std::env::var_os("SOM_TEST_REQUIRE_LOCALSTRIPE").is_some() {
                panic!("SOM_TEST_REQUIRE_LOCALSTRIPE is set but {} cannot import localstripe", python.display());
            }
            eprintln!("localstripe is not available (set SOM_TEST_PYTHON to a Python that has it): skipping");
            return None;
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = LocalStripe { python, port, child: None, client: reqwest::Client::new() };
        server.restart();
        Some(server)
    }

    /// Starts it again (empty) on the same port after [`LocalStripe::stop`].
    pub fn restart(&mut self) {
        let child = Command::new(&self.python)
            .args(["-m", "localstripe", "--from-scratch", "--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "localstripe did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it: calls to it fail to connect.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its address, for `SOM_STRIPE_API_BASE`.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Has it send every event to `url`, signed with `secret`.
    pub async fn register_webhook(&self, url: &str, secret: &str) {
        let response = self
            .client
            .post(format!("{}/_config/webhooks/som", self.api_base()))
            .form(&[("url", url), ("secret", secret)])
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "registering the webhook: {}", response.status());
    }

    /// Calls its Stripe API with the test key (a form body for POST); the JSON answer and
    /// status.
    pub async fn call(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let mut request =
            self.client.request(method.clone(), format!("{}{path}", self.api_base())).bearer_auth(TEST_SECRET_KEY);
        if method == reqwest::Method::POST {
            request = request.form(form);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A card PaymentMethod for `number` (e.g. 4000002500003155, which requires 3-D Secure).
    pub async fn card(&self, number: &str) -> String {
        let form = [
            ("type", "card"),
            ("card[number]", number),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2030"),
            ("card[cvc]", "123"),
        ];
        let (status, pm) = self.call(reqwest::Method::POST, "/v1/payment_methods", &form).await;
        assert_eq!(status, 200, "{pm}");
        pm["id"].as_str().unwrap().to_owned()
    }

    /// The events it has recorded of `kind`, newest first.
    pub async fn events(&self, kind: &str) -> Vec<Value> {
        let (status, list) = self.call(reqwest::Method::GET, &format!("/v1/events?type={kind}&limit=100"), &[]).await;
        assert_eq!(status, 200, "{list}");
        list["data"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        self.stop();
    }
}
