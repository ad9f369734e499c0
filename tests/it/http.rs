//! The HTTP API end to end: a real server on a free port over a fresh SQLite database, driven
//! with a real HTTP client. Covers the original service's test cases and the hardening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use som_core::domain::{Caller, UserId};
pub(crate) use som_core::testing::Backend;
use som_core::testing::TestDatabase;
use som_core::{Config, OrderSystem};

pub(crate) struct App {
    pub(crate) base: String,
    pub(crate) client: Client,
    pub(crate) som: OrderSystem,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
    _db: Option<TestDatabase>,
}

som_core::on_both_backends!(
    registration_follows_the_original_rules,
    login_profile_and_token_kinds,
    refresh_tokens_rotate_and_cannot_be_reused,
    orders_follow_the_original_test_cases,
    prices_are_exact_and_bad_items_name_their_field,
    payments_follow_the_original_test_cases,
    declined_and_transient_payments_map_to_402_and_503,
    cancel_history_and_staff_access,
    lists_paginate_with_a_link_header,
    idempotency_keys_replay_the_original_response,
    hostile_requests_get_clear_problems,
    the_auth_routes_are_rate_limited_per_address,
    request_ids_are_echoed_or_generated,
    operations_endpoints_answer,
    the_openapi_document_and_swagger_ui_are_served_locally,
    a_slow_client_is_disconnected_after_the_header_timeout,
    logout_ends_one_session_and_its_access_tokens,
    a_password_change_ends_every_other_session,
    revoke_all_disabling_and_refresh_reuse_end_access_tokens,
    sessions_end_at_their_maximum_age_however_often_refreshed,
    failed_logins_are_limited_per_username_from_any_address,
    tokens_are_never_cached_and_the_docs_have_a_content_security_policy,
    the_price_schema_accepts_exactly_what_the_server_does,
    staff_refund_payments_fully_and_in_part,
    refund_errors_are_clear_problems,
    staff_manage_users_over_http,
    staff_see_everyones_orders_and_notifications,
);

/// Server-level protections, independent of the backend.
mod server {
    #[tokio::test]
    async fn metric_labels_stay_bounded_whatever_methods_clients_invent() {
        super::metric_labels_stay_bounded_whatever_methods_clients_invent().await;
    }
    #[tokio::test]
    async fn silent_idle_and_http2_connections_are_closed_and_the_cap_is_held() {
        super::silent_idle_and_http2_connections_are_closed_and_the_cap_is_held().await;
    }
    #[tokio::test]
    async fn one_address_cannot_take_every_connection_slot() {
        super::one_address_cannot_take_every_connection_slot().await;
    }
    #[tokio::test]
    async fn metrics_can_require_a_bearer_token_and_readyz_warns_of_the_mock() {
        super::metrics_can_require_a_bearer_token_and_readyz_warns_of_the_mock().await;
    }
}

pub(crate) async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> App {
    spawn_app_on(backend, som_core::clock::SystemClock::shared(), tweak).await
}

/// [`spawn_app_with`] whose system reads time from `clock`.
pub(crate) async fn spawn_app_on(
    backend: Backend,
    clock: som_core::clock::DynClock,
    tweak: impl FnOnce(&mut Config),
) -> App {
    let dir = tempfile::tempdir().unwrap();
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let admin = som_core::testing::admin_url().unwrap();
            Some(TestDatabase::create(&admin).await.expect("SOM_TEST_POSTGRES_URL is set but unreachable"))
        }
    };
    let database_url = match &db {
        Some(db) => db.url().to_owned(),
        None => format!("sqlite://{}", dir.path().join("som.db").display()),
    };
    let mut config = Config { database_url, auth_rate_limit: 0, ..Config::default() };
    tweak(&mut config);
    let som = OrderSystem::builder().config(config.clone()).clock(clock).build().await.unwrap();
    let som_for_tests = som.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let settings = som_server::Settings::from_config(&config);
    tokio::spawn(som_server::serve(listener, som, settings, async move {
        let _ = stopped.await;
    }));
    // reqwest is built without a bundled TLS crypto provider; SOM uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    App { base, client: Client::new(), som: som_for_tests, _stop: stop, _dir: dir, _db: db }
}

async fn spawn_app(backend: Backend) -> App {
    spawn_app_with(backend, |_| {}).await
}

impl App {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        read(self.call(Method::POST, path, token, Some(body)).await).await
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        read(self.call(Method::GET, path, token, None).await).await
    }

    pub(crate) async fn register(&self, username: &str) -> Value {
        let (status, body) = self
            .post(
                "/accounts/register/",
                None,
                json!({"username": username, "email": format!("{username}@example.com"), "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    pub(crate) async fn login(&self, username: &str) -> (String, String) {
        let (status, body) =
            self.post("/token/", None, json!({"username": username, "password": "correct horse battery"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (body["access"].as_str().unwrap().to_owned(), body["refresh"].as_str().unwrap().to_owned())
    }

    pub(crate) async fn user(&self, username: &str) -> String {
        self.register(username).await;
        self.login(username).await.0
    }

    /// A staff account's access token (made staff through the library, as an operator would
    /// with `som users set-staff NAME true`).
    pub(crate) async fn staff(&self, username: &str) -> String {
        let id = self.register(username).await["id"].as_i64().unwrap();
        self.som.set_staff(Caller::System, UserId::new(id), true).await.unwrap();
        self.login(username).await.0
    }

    async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        read(self.call(Method::PATCH, path, token, Some(body)).await).await
    }

    /// A paid order placed by `token`'s user with `method`: (order id, payment id).
    pub(crate) async fn paid(&self, token: &str, method: &str) -> (i64, i64) {
        let order = self.order(token).await["id"].as_i64().unwrap();
        let (status, p) =
            self.post("/payments/initiate/", Some(token), json!({"order_id": order, "method": method})).await;
        assert_eq!(status, StatusCode::OK, "{p}");
        let pid = p["id"].as_i64().unwrap();
        let (status, p) = self.post("/payments/confirm/", Some(token), json!({"payment_id": pid})).await;
        assert_eq!((status, p["status"].as_str()), (StatusCode::OK, Some("SUCCESS")), "{p}");
        (order, pid)
    }

    pub(crate) async fn order(&self, token: &str) -> Value {
        let (status, body) = self.post("/orders/", Some(token), seed_order()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }
}

pub(crate) async fn read(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub(crate) fn seed_order() -> Value {
    json!({"items": [{"name": "Widget", "quantity": 2, "price": "100.00"}, {"name": "Gadget", "quantity": 1, "price": "50.00"}]})
}

pub(crate) fn assert_problem(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"], expected.as_u16(), "{body}");
    assert!(body["type"].as_str().is_some_and(|t| t.starts_with("urn:som:problem:")), "{body}");
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
}

async fn registration_follows_the_original_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.register("alice").await;
    assert_eq!(
        (user["username"].as_str(), user["email"].as_str(), user["is_staff"].as_bool()),
        (Some("alice"), Some("alice@example.com"), Some(false))
    );
    // The original service's test_register_user_without_email_fails.
    let (status, body) =
        app.post("/accounts/register", None, json!({"username": "noemail", "password": "correct horse battery"})).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    assert!(body["errors"]["email"].is_array(), "without an email: {body}");
    let (status, body) = app
        .post(
            "/accounts/register",
            None,
            json!({"username": "blank", "email": "", "password": "correct horse battery"}),
        )
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    assert!(body["errors"]["email"].is_array(), "a blank email: {body}");
    let (status, body) = app.post("/accounts/register/", None, json!({"username": "bob", "password": "short"})).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    assert!(body["errors"]["password"].is_array(), "{body}");
    let (status, body) = app
        .post(
            "/accounts/register/",
            None,
            json!({"username": "alice", "email": "other@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    assert!(body["errors"]["username"].is_array(), "{body}");
    let (status, body) = app.post("/accounts/register/", None, json!({"password": "correct horse battery"})).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"]["username"][0], "This field is required.");
}

async fn login_profile_and_token_kinds(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alice").await;
    let resp =
        app.call(Method::POST, "/token/", None, Some(json!({"username": "alice", "password": "wrong password"}))).await;
    assert_eq!(resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    let (status, body) = read(resp).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    let (status, _) =
        app.post("/token/", None, json!({"username": "nobody", "password": "correct horse battery"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (access, refresh) = app.login("alice").await;
    let (status, me) = app.get("/accounts/me/", Some(&access)).await;
    assert_eq!((status, me["username"].as_str()), (StatusCode::OK, Some("alice")));
    assert_eq!(me.as_object().map(|o| o.len()), Some(4), "id, username, email, is_staff: {me}");
    let (status, body) = app.get("/accounts/me/", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    let (status, _) = app.get("/accounts/me/", Some(&refresh)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a refresh token is not an access token");
    let (status, _) = app.post("/token/refresh/", None, json!({"refresh": access})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an access token is not a refresh token");
}

async fn refresh_tokens_rotate_and_cannot_be_reused(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alice").await;
    let (_, refresh) = app.login("alice").await;
    let (status, pair) = app.post("/token/refresh/", None, json!({"refresh": refresh})).await;
    assert_eq!(status, StatusCode::OK, "{pair}");
    let (status, _) = app.get("/accounts/me", Some(pair["access"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.post("/token/refresh", None, json!({"refresh": refresh})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "reuse is rejected");
    let (status, _) = app.post("/token/refresh", None, json!({"refresh": pair["refresh"]})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "and revokes the session");
}

async fn orders_follow_the_original_test_cases(backend: Backend) {
    orders_follow_the_original_test_cases_on(&spawn_app(backend).await).await;
}

/// The original service's order tests, against `app`.
pub(crate) async fn orders_follow_the_original_test_cases_on(app: &App) {
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let (status, body) = app.get("/orders/latest/", Some(&alice)).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let order = app.order(&alice).await;
    assert_eq!(order["total_amount"], "250.00");
    assert_eq!(order["status"], "CREATED");
    assert_eq!(order["currency"], "USD");
    assert_eq!(order["items"].as_array().map(Vec::len), Some(2));
    let (status, body) = app.post("/orders/", Some(&alice), json!({"items": []})).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    assert!(body["errors"]["items"].is_array());
    let id = order["id"].as_i64().unwrap();
    let (status, list) = app.get("/orders/", Some(&alice)).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let (status, detail) = app.get(&format!("/orders/{id}/"), Some(&alice)).await;
    assert_eq!((status, &detail), (StatusCode::OK, &order));
    let (status, body) = app.get(&format!("/orders/{id}"), Some(&bob)).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, list) = app.get("/orders", Some(&bob)).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    let (status, latest) = app.get("/orders/latest", Some(&alice)).await;
    assert_eq!((status, latest["id"].as_i64()), (StatusCode::OK, Some(id)));
    let (status, _) = app.get("/orders/abc/", Some(&alice)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/orders/", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn prices_are_exact_and_bad_items_name_their_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let (status, o) = app
        .post("/orders/", Some(&alice), json!({"items": [{"name": "a", "quantity": 3, "price": 0.1}, {"name": "b", "quantity": 1, "price": "0.20"}]}))
        .await;
    assert_eq!((status, o["total_amount"].as_str()), (StatusCode::CREATED, Some("0.50")));
    let two = json!({"items": [{"name": "a", "quantity": 2.0, "price": 1.5}]});
    let (status, o) = app.post("/orders/", Some(&alice), two).await;
    assert_eq!((status, o["total_amount"].as_str()), (StatusCode::CREATED, Some("3.00")), "2.0 is the integer 2: {o}");
    let (status, o) = app
        .post(
            "/orders/",
            Some(&alice),
            json!({"items": [{"name": "a", "quantity": 1, "price": "1.234"}], "currency": "KWD"}),
        )
        .await;
    assert_eq!(
        (status, o["total_amount"].as_str(), o["currency"].as_str()),
        (StatusCode::CREATED, Some("1.234"), Some("KWD"))
    );
    for (body, field) in [
        (json!({"items": [{"name": "a", "quantity": 1, "price": "1.001"}]}), "items[0].price"),
        (json!({"items": [{"name": "a", "quantity": 0, "price": "1"}]}), "items[0].quantity"),
        (json!({"items": [{"name": "a", "quantity": "x", "price": "1"}]}), "items[0].quantity"),
        (json!({"items": [{"name": "a", "quantity": 1.5, "price": "1"}]}), "items[0].quantity"),
        (json!({"items": [{"name": "a", "quantity": true, "price": "1"}]}), "items[0].quantity"),
        (json!({"items": [{"name": "", "quantity": 1, "price": "1"}]}), "items[0].name"),
        (json!({"items": [{"name": "a", "quantity": 1, "price": "-1"}]}), "items[0].price"),
        (json!({"items": [{"name": "a", "quantity": 1, "price": "1e400"}]}), "items[0].price"),
        (json!({"items": [{"name": "a", "quantity": 1}]}), "items[0].price"),
        (json!({"items": [{"name": "a", "quantity": 1, "price": "1"}], "currency": "XXX"}), "currency"),
        (json!({"items": "nope"}), "items"),
        (json!({}), "items"),
    ] {
        let (status, problem) = app.post("/orders/", Some(&alice), body.clone()).await;
        assert_problem(status, &problem, StatusCode::BAD_REQUEST);
        assert!(problem["errors"][field].is_array(), "{body} → {problem}");
    }
}

async fn payments_follow_the_original_test_cases(backend: Backend) {
    payments_follow_the_original_test_cases_on(&spawn_app(backend).await).await;
}

/// The original service's payment tests, against `app`.
pub(crate) async fn payments_follow_the_original_test_cases_on(app: &App) {
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let order = app.order(&alice).await;
    let id = order["id"].as_i64().unwrap();
    let (status, p1) = app.post("/payments/initiate/", Some(&alice), json!({"order_id": id})).await;
    assert_eq!(
        (status, p1["status"].as_str(), p1["amount"].as_str()),
        (StatusCode::OK, Some("PENDING"), Some("250.00"))
    );
    for key in [
        "id",
        "order",
        "provider",
        "transaction_id",
        "provider_payment_id",
        "amount",
        "currency",
        "status",
        "created_at",
    ] {
        assert!(p1.get(key).is_some(), "payment has {key}: {p1}");
    }
    let (status, p2) = app.post("/payments/", Some(&alice), json!({"order_id": id})).await;
    assert_eq!(
        (status, p2["id"].clone()),
        (StatusCode::OK, p1["id"].clone()),
        "initiating twice returns the same payment"
    );
    let (status, body) = app.post("/payments/initiate/", Some(&alice), json!({"order_id": 999_999})).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app.post("/payments/initiate/", Some(&bob), json!({"order_id": id})).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app.post("/payments/initiate/", Some(&alice), json!({})).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) = app.post("/payments/confirm/", Some(&bob), json!({"payment_id": p1["id"]})).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, paid) = app.post("/payments/confirm/", Some(&alice), json!({"payment_id": p1["id"]})).await;
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("SUCCESS")));
    let (_, o) = app.get(&format!("/orders/{id}/"), Some(&alice)).await;
    assert_eq!(o["status"], "PAID");
    let (status, again) = app.post("/payments/confirm/", Some(&alice), json!({"payment_id": p1["id"]})).await;
    assert_eq!((status, &again), (StatusCode::OK, &paid), "confirming again returns it unchanged");
    let (status, body) = app.post("/payments/initiate/", Some(&alice), json!({"order_id": id})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    let (status, shown) = app.get(&format!("/payments/{}/", p1["id"]), Some(&alice)).await;
    assert_eq!((status, shown["status"].as_str()), (StatusCode::OK, Some("SUCCESS")));
    let (status, _) = app.get(&format!("/payments/{}/", p1["id"]), Some(&bob)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn declined_and_transient_payments_map_to_402_and_503(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let id = app.order(&alice).await["id"].clone();
    let (_, p) = app.post("/payments/initiate/", Some(&alice), json!({"order_id": id, "method": "mock_decline"})).await;
    let (status, body) = app.post("/payments/confirm/", Some(&alice), json!({"payment_id": p["id"]})).await;
    assert_problem(status, &body, StatusCode::PAYMENT_REQUIRED);
    let (_, p) =
        app.post("/payments/initiate/", Some(&alice), json!({"order_id": id, "method": "mock_transient_error"})).await;
    let resp = app.call(Method::POST, "/payments/confirm/", Some(&alice), Some(json!({"payment_id": p["id"]}))).await;
    assert!(resp.headers().contains_key("retry-after"));
    let (status, body) = read(resp).await;
    assert_problem(status, &body, StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) =
        app.post("/payments/initiate/", Some(&alice), json!({"order_id": id, "method": "bitcoin"})).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    assert!(body["errors"]["method"].is_array(), "an unknown method is refused even with a pending payment");
    let (status, _) = app.get("/orders/?cursor=", Some(&alice)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an empty cursor is not a cursor");
}

async fn cancel_history_and_staff_access(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let order = app.order(&alice).await;
    let id = order["id"].as_i64().unwrap();
    let (status, cancelled) = app.post(&format!("/orders/{id}/cancel/"), Some(&alice), json!({})).await;
    assert_eq!((status, cancelled["status"].as_str()), (StatusCode::OK, Some("CANCELLED")));
    let (status, body) = app.post(&format!("/orders/{id}/cancel"), Some(&alice), json!({})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    let (status, history) = app.get(&format!("/orders/{id}/history/"), Some(&alice)).await;
    assert_eq!(status, StatusCode::OK);
    let tos: Vec<&str> = history.as_array().unwrap().iter().filter_map(|e| e["to"].as_str()).collect();
    assert_eq!(tos, vec!["CREATED", "CANCELLED"]);
    let (status, list) = app.get("/orders/?status=CANCELLED", Some(&alice)).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let (status, list) = app.get("/orders/?status=PAID", Some(&alice)).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    let (status, body) = app.get("/orders/?status=LOST", Some(&alice)).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
}

async fn lists_paginate_with_a_link_header(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.order(&alice).await["id"].as_i64().unwrap());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut next = Some(format!("{}/api/v1/orders/?limit=2", app.base));
    while let Some(url) = next {
        let resp = app.client.get(&url).bearer_auth(&alice).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let cursor = resp.headers().get("x-next-cursor").and_then(|v| v.to_str().ok()).map(str::to_owned);
        next = resp.headers().get("link").and_then(|v| v.to_str().ok()).map(|link| {
            assert!(link.ends_with("rel=\"next\""), "{link}");
            let path = link.trim_start_matches('<').split('>').next().unwrap();
            format!("{}{path}", app.base)
        });
        assert_eq!(cursor.is_some(), next.is_some(), "X-Next-Cursor comes with the Link header");
        let page: Vec<Value> = resp.json().await.unwrap();
        assert!(page.len() <= 2);
        if let Some(cursor) = cursor {
            assert_eq!(cursor, page.last().unwrap()["id"].to_string(), "the cursor is the last id of the page");
        }
        seen.extend(page.iter().map(|o| o["id"].as_i64().unwrap()));
    }
    assert_eq!(seen, ids);
    let (status, body) = app.get("/orders/?limit=500", Some(&alice)).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) = app.get("/orders/?cursor=zzz", Some(&alice)).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
}

async fn idempotency_keys_replay_the_original_response(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let send = |body: Value| {
        app.client.post(app.url("/orders/")).bearer_auth(&alice).header("Idempotency-Key", "order-1").json(&body).send()
    };
    let (s1, first) = read(send(seed_order()).await.unwrap()).await;
    let (s2, second) = read(send(seed_order()).await.unwrap()).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first, second);
    let (status, list) = app.get("/orders/", Some(&alice)).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let (status, body) =
        read(send(json!({"items": [{"name": "x", "quantity": 1, "price": "1"}]})).await.unwrap()).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn hostile_requests_get_clear_problems(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.body_limit = 64 * 1024).await;
    let alice = app.user("alice").await;
    let huge = json!({"items": [{"name": "x".repeat(70 * 1024), "quantity": 1, "price": "1"}]});
    let (status, body) = app.post("/orders/", Some(&alice), huge).await;
    assert_problem(status, &body, StatusCode::PAYLOAD_TOO_LARGE);
    let resp = app
        .client
        .post(app.url("/orders/"))
        .bearer_auth(&alice)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_problem(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let resp = app
        .client
        .post(app.url("/orders/"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{\"items\": [")
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    let resp = app.call(Method::DELETE, "/orders/", Some(&alice), None).await;
    let allow = resp.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (status, body) = read(resp).await;
    assert_problem(status, &body, StatusCode::METHOD_NOT_ALLOWED);
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let (status, body) = app.get("/no/such/route", Some(&alice)).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let resp = app.client.get(app.url("/orders/")).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

async fn the_auth_routes_are_rate_limited_per_address(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.auth_rate_limit = 3).await;
    for _ in 0..3 {
        let (status, _) = app.post("/token/", None, json!({"username": "x", "password": "y"})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let resp = app.call(Method::POST, "/token/", None, Some(json!({"username": "x", "password": "y"}))).await;
    let retry_after: u64 =
        resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap();
    assert!(retry_after >= 1);
    let (status, body) = read(resp).await;
    assert_problem(status, &body, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = app.get("/orders/", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "other routes are not limited");
}

async fn request_ids_are_echoed_or_generated(backend: Backend) {
    let app = spawn_app(backend).await;
    let resp = app.client.get(format!("{}/healthz", app.base)).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some("abc-123"));
    let resp = app.client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert!(resp.headers().get("x-request-id").is_some_and(|v| !v.is_empty()));
}

async fn operations_endpoints_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    app.order(&alice).await;
    let health: Value = app.client.get(format!("{}/healthz", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.client.get(format!("{}/readyz/", app.base)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    for name in [
        "som_http_requests_total",
        "som_http_request_duration_seconds_bucket",
        "som_orders_created_total",
        "som_outbox_backlog",
        "som_notifications",
    ] {
        assert!(metrics.contains(name), "{name} missing from metrics");
    }
}

async fn the_openapi_document_and_swagger_ui_are_served_locally(backend: Backend) {
    let app = spawn_app(backend).await;
    // The root leads to the documentation.
    let root = app.client.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!((root.status(), root.url().path()), (StatusCode::OK, "/api/docs/"), "GET / leads to Swagger UI");
    let doc: Value =
        app.client.get(format!("{}/api/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/accounts/register/",
        "/api/v1/token/",
        "/api/v1/orders/",
        "/api/v1/orders/{id}/",
        "/api/v1/payments/confirm/",
    ] {
        assert!(paths.contains_key(p), "{p} documented");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // What a client generator types: a plain string header, enums for statuses, a required email.
    let create = &doc["paths"]["/api/v1/orders/"]["post"]["parameters"];
    let key = create.as_array().unwrap().iter().find(|p| p["name"] == "Idempotency-Key").unwrap();
    assert_eq!(key["schema"]["type"], "string", "{key}");
    let schemas = &doc["components"]["schemas"];
    let statuses: Vec<&str> = som_core::domain::OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(schemas["StatusParam"]["enum"], json!(statuses));
    for staff_path in ["/api/v1/payments/{id}/refunds/", "/api/v1/users/{id}/", "/api/v1/notifications/counts/"] {
        assert!(doc["paths"][staff_path].is_object(), "{staff_path} documented");
    }
    assert!(doc["paths"]["/api/v1/users/{id}/"]["patch"]["responses"]["403"].is_object());
    assert!(schemas["PaymentStatusSchema"]["enum"].as_array().is_some_and(|e| e.contains(&json!("SUCCESS"))));
    assert!(schemas["RegisterRequest"]["required"].as_array().unwrap().contains(&json!("email")));
    assert_eq!(schemas["OrderResponse"]["properties"]["id"]["example"], 1001, "realistic examples");
    let schema: Value = app.client.get(format!("{}/api/schema/", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(schema, doc);
    let html = app.client.get(format!("{}/api/docs/", app.base)).send().await.unwrap();
    assert_eq!(html.status(), StatusCode::OK);
    let html = html.text().await.unwrap();
    assert!(html.contains("swagger-ui") && !html.contains("unpkg.com") && !html.contains("cdn"), "local assets only");
    let js = app.client.get(format!("{}/api/docs/swagger-ui-bundle.js", app.base)).send().await.unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    let init = app
        .client
        .get(format!("{}/api/docs/swagger-initializer.js", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/api/openapi.json"));
}

async fn a_slow_client_is_disconnected_after_the_header_timeout(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(backend, |c| c.header_read_timeout = Duration::from_millis(300)).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the connection instead of waiting forever");
}

async fn me_status(app: &App, access: &str) -> StatusCode {
    app.get("/accounts/me/", Some(access)).await.0
}

async fn logout_ends_one_session_and_its_access_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alice").await;
    let (phone, phone_refresh) = app.login("alice").await;
    let (laptop, _) = app.login("alice").await;
    let resp = app.call(Method::POST, "/token/revoke/", None, Some(json!({"refresh": phone_refresh}))).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(me_status(&app, &phone).await, StatusCode::UNAUTHORIZED, "the logged-out session's access token");
    let (status, body) = app.post("/token/refresh/", None, json!({"refresh": phone_refresh})).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, &laptop).await, StatusCode::OK, "the other session");
    let resp = app.call(Method::POST, "/token/revoke/", None, Some(json!({"refresh": phone_refresh}))).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT, "logging out twice is fine");
    let (status, body) = app.post("/token/revoke/", None, json!({"refresh": "not-a-token"})).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    let (status, body) = app.post("/token/revoke/", None, json!({"refresh": laptop})).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
}

async fn a_password_change_ends_every_other_session(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alice").await;
    let (this, this_refresh) = app.login("alice").await;
    let (other, other_refresh) = app.login("alice").await;
    let change = |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let (status, body) =
        app.post("/accounts/password/", Some(&this), change("wrong password", "staple battery horse")).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    assert!(body["errors"]["current_password"].is_array(), "{body}");
    let (status, body) =
        app.post("/accounts/password/", Some(&this), change("correct horse battery", "12345678")).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    assert!(body["errors"]["new_password"].is_array(), "{body}");
    let (status, body) = app.post("/accounts/password/", None, change("correct horse battery", "x")).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, &other).await, StatusCode::OK, "failed changes end nothing");

    let resp = app
        .call(
            Method::POST,
            "/accounts/password/",
            Some(&this),
            Some(change("correct horse battery", "staple battery horse")),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(me_status(&app, &this).await, StatusCode::OK, "the session that changed it stays");
    let (status, _) = app.post("/token/refresh/", None, json!({"refresh": this_refresh})).await;
    assert_eq!(status, StatusCode::OK, "and can still refresh");
    assert_eq!(me_status(&app, &other).await, StatusCode::UNAUTHORIZED, "other sessions' access tokens end");
    let (status, _) = app.post("/token/refresh/", None, json!({"refresh": other_refresh})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "and their refresh tokens");
    let (status, _) =
        app.post("/token/", None, json!({"username": "alice", "password": "correct horse battery"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password");
    let (status, _) = app.post("/token/", None, json!({"username": "alice", "password": "staple battery horse"})).await;
    assert_eq!(status, StatusCode::OK, "the new password");
}

async fn revoke_all_disabling_and_refresh_reuse_end_access_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alice").await;
    let (a, _) = app.login("alice").await;
    let (b, _) = app.login("alice").await;
    let resp = app.call(Method::POST, "/token/revoke-all/", Some(&a), None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        (me_status(&app, &a).await, me_status(&app, &b).await),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );

    // A refresh token used twice ends its session, access tokens included.
    let (access, refresh) = app.login("alice").await;
    let (status, _) = app.post("/token/refresh/", None, json!({"refresh": refresh})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.post("/token/refresh/", None, json!({"refresh": refresh})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, &access).await, StatusCode::UNAUTHORIZED, "the reused session's access token");

    // Disabling an account ends its sessions and refuses its logins until it is enabled.
    let (access, _) = app.login("alice").await;
    let id: UserId =
        app.get("/accounts/me/", Some(&access)).await.1["id"].as_i64().unwrap().to_string().parse().unwrap();
    let disabled = app.som.set_active(Caller::System, id, false).await.unwrap();
    assert!(!disabled.is_active);
    assert_eq!(me_status(&app, &access).await, StatusCode::UNAUTHORIZED);
    let (status, body) =
        app.post("/token/", None, json!({"username": "alice", "password": "correct horse battery"})).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    app.som.set_active(Caller::System, id, true).await.unwrap();
    let (access, _) = app.login("alice").await;
    assert_eq!(me_status(&app, &access).await, StatusCode::OK);
}

async fn sessions_end_at_their_maximum_age_however_often_refreshed(backend: Backend) {
    let clock = som_core::clock::ManualClock::starting_now();
    let app = spawn_app_on(backend, clock.clone(), |c| c.session_max_age = Duration::from_secs(120)).await;
    app.register("alice").await;
    let (_, mut refresh) = app.login("alice").await;
    clock.advance(Duration::from_secs(100));
    let (status, body) = app.post("/token/refresh/", None, json!({"refresh": refresh})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    refresh = body["refresh"].as_str().unwrap().to_owned();
    clock.advance(Duration::from_secs(21));
    let (status, body) = app.post("/token/refresh/", None, json!({"refresh": refresh})).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
}

async fn failed_logins_are_limited_per_username_from_any_address(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.login_failure_limit = 3;
        c.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    app.register("alice").await;
    app.register("bob").await;
    let attempt = |from: &str, username: &str, password: &str| {
        app.client
            .post(app.url("/token/"))
            .header("x-forwarded-for", from)
            .json(&json!({"username": username, "password": password}))
            .send()
    };
    for i in 0..3 {
        let resp = attempt(&format!("198.51.100.{i}"), "alice", "wrong password").await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = attempt("203.0.113.7", "alice", "correct horse battery").await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "even the right password, from a new address");
    let retry: u64 =
        resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap();
    assert!(retry > 60, "Retry-After covers the window: {retry}");
    let resp = attempt("198.51.100.1", "bob", "correct horse battery").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "other usernames are unaffected");

    // Guesses sent in parallel take their slots before hashing: no more than the limit are
    // checked, however many arrive at once, and the right password among them is not let in.
    app.register("carol").await;
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..30 {
        let request = app
            .client
            .post(app.url("/token/"))
            .header("x-forwarded-for", format!("198.51.100.{}", 10 + i))
            .json(&json!({"username": "carol", "password": "wrong password"}));
        guesses.spawn(async move { request.send().await.unwrap().status() });
    }
    let statuses = guesses.join_all().await;
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    assert_eq!(checked, 3, "parallel guesses checked: {statuses:?}");
    let resp = attempt("203.0.113.9", "carol", "correct horse battery").await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(statuses.iter().all(|s| *s != StatusCode::INTERNAL_SERVER_ERROR), "{statuses:?}");
}

async fn tokens_are_never_cached_and_the_docs_have_a_content_security_policy(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alice").await;
    let resp = app
        .call(Method::POST, "/token/", None, Some(json!({"username": "alice", "password": "correct horse battery"})))
        .await;
    assert_eq!(resp.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    let docs = app.client.get(format!("{}/api/docs/", app.base)).send().await.unwrap();
    let header = |name: &str| docs.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(
        header("content-security-policy").contains("frame-ancestors 'none'"),
        "{}",
        header("content-security-policy")
    );
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("x-frame-options"), "DENY");
}

async fn metric_labels_stay_bounded_whatever_methods_clients_invent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(Backend::Sqlite).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // The recorder is process-wide: other tests in this binary add their own series, so what is
    // measured is the growth these requests cause.
    let scrape =
        || async { app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap() };
    for _ in 0..3 {
        let _ = app.client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    }
    let before = scrape().await.len();
    for i in 0..200 {
        let method = format!("INVENTED{i}{}", "X".repeat(2048));
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(format!("{method} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink)).await;
    }
    let metrics = scrape().await;
    assert!(!metrics.contains("INVENTED"), "a client-chosen method became a label");
    assert!(metrics.contains("method=\"other\""), "invented methods are counted as other");
    // Every method label is one of the fixed set, and the series of /healthz did not multiply.
    let fixed = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"];
    for label in metrics.split("method=\"").skip(1).filter_map(|rest| rest.split('"').next()) {
        assert!(fixed.contains(&label), "method label {label:?} is not one of the fixed set");
    }
    let healthz_series = |m: &str| m.lines().filter(|l| l.contains("/healthz")).count();
    let grown = metrics.len().saturating_sub(before);
    assert!(healthz_series(&metrics) < 200, "{} series for /healthz ({grown} bytes more)", healthz_series(&metrics));
}

async fn silent_idle_and_http2_connections_are_closed_and_the_cap_is_held() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.header_read_timeout = Duration::from_millis(700);
        c.max_connections = 4;
        // This test is about the overall cap: every client here is 127.0.0.1.
        c.max_connections_per_address = 4;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let closed_within = |mut stream: tokio::net::TcpStream, limit: Duration| async move {
        let mut buf = Vec::new();
        tokio::time::timeout(limit, stream.read_to_end(&mut buf)).await.is_ok()
    };

    // A socket that never speaks, a partial HTTP/2 preface, and a whole one followed by silence.
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(&addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut preface = tokio::net::TcpStream::connect(&addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    for (name, stream) in [("silent", silent), ("partial preface", partial), ("h2c preface", preface)] {
        assert!(closed_within(stream, Duration::from_secs(5)).await, "{name} connection left open");
    }

    // An idle keep-alive connection is closed too.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(closed_within(idle, Duration::from_secs(5)).await, "idle keep-alive connection left open");

    // At the cap, an established client keeps being served and a new one waits its turn.
    let client = Client::builder().pool_max_idle_per_host(1).build().unwrap();
    assert_eq!(client.get(format!("{}/healthz", app.base)).send().await.unwrap().status(), StatusCode::OK);
    let mut hogs = Vec::new();
    for _ in 0..3 {
        hogs.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let established = client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(established.status(), StatusCode::OK, "the established connection is served at the cap");
    let started = std::time::Instant::now();
    let newcomer = Client::new().get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(newcomer.status(), StatusCode::OK, "a new client is served once a slot frees");
    assert!(started.elapsed() >= Duration::from_millis(200), "the new client waited for a free slot");
    drop(hogs);
}

async fn one_address_cannot_take_every_connection_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.header_read_timeout = Duration::from_secs(10);
        c.max_connections = 3;
    })
    .await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let connect_from = |local: &str| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
        socket.connect(addr)
    };
    // A client trickling its headers holds its one slot (a quarter of 3, at least 1)…
    let mut slow = connect_from("127.0.0.1").await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // (Connections are accepted, and counted, in the order they arrive.)
    // …so its further connections are answered 429 at once and closed…
    for _ in 0..3 {
        let mut extra = connect_from("127.0.0.1").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(2), extra.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    }
    // …while other clients are served at once.
    for other in ["127.0.0.2", "127.0.0.3"] {
        let started = std::time::Instant::now();
        let mut stream = connect_from(other).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{other}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // The slot is the address's again once its connection ends.
    drop(slow);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = Client::new().get(format!("{}/healthz", app.base)).send().await.unwrap().status();
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(std::time::Instant::now() < deadline, "the slot was not given back");
        tokio::task::yield_now().await;
    }
}

async fn metrics_can_require_a_bearer_token_and_readyz_warns_of_the_mock() {
    let app =
        spawn_app_with(Backend::Sqlite, |c| c.metrics_token = Some(som_core::config::Secret::new("scrape-me"))).await;
    let metrics = format!("{}/metrics", app.base);
    assert_eq!(app.client.get(&metrics).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.client.get(&metrics).bearer_auth("wrong").send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.client.get(&metrics).bearer_auth("scrape-me").send().await.unwrap().status(), StatusCode::OK);
    let ready: Value = app.client.get(format!("{}/readyz", app.base)).send().await.unwrap().json().await.unwrap();
    assert!(ready["warnings"][0].as_str().is_some_and(|w| w.contains("mock")), "{ready}");
}

async fn the_price_schema_accepts_exactly_what_the_server_does(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let doc: Value =
        app.client.get(format!("{}/api/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
    let price = &doc["components"]["schemas"]["Decimal"]["oneOf"];
    let pattern = regex::Regex::new(price[0]["pattern"].as_str().unwrap()).unwrap();
    let maximum = price[1]["maximum"].as_f64().unwrap();
    let order = |price: &str, currency: &str| json!({"items": [{"name": "a", "quantity": 1, "price": price}], "currency": currency});
    // What the schema accepts, the server accepts (in a currency with that many digits) ...
    for (text, currency) in [
        ("1.234", "KWD"),
        ("10000000", "USD"),
        ("10000000.000", "BHD"),
        ("0.001", "OMR"),
        ("100", "JPY"),
        ("0.01", "USD"),
    ] {
        assert!(pattern.is_match(text), "the schema refuses {text}");
        let (status, body) = app.post("/orders/", Some(&alice), order(text, currency)).await;
        assert_eq!(status, StatusCode::CREATED, "{text} {currency}: {body}");
    }
    assert!((maximum - 10_000_000.0).abs() < f64::EPSILON);
    // ... and what the schema refuses, the server refuses; so do more digits than the currency has.
    for (text, currency) in
        [("10000000.01", "USD"), ("0", "USD"), ("1.2345", "KWD"), ("100.000", "USD"), ("1.5", "JPY")]
    {
        let (status, body) = app.post("/orders/", Some(&alice), order(text, currency)).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST);
        assert!(body["errors"]["items[0].price"].is_array(), "{text} {currency}: {body}");
        if text != "100.000" && text != "1.5" {
            assert!(!pattern.is_match(text), "the schema accepts {text}, which the server refuses");
        }
    }
}

async fn staff_refund_payments_fully_and_in_part(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let staff = app.staff("root").await;
    let (order, pid) = app.paid(&alice, "mock_success").await;
    let refunds = format!("/payments/{pid}/refunds/");
    // A partial refund, replayed with its key.
    let send = |amount: Value, key: &'static str| {
        app.client
            .post(app.url(&refunds))
            .bearer_auth(&staff)
            .header("Idempotency-Key", key)
            .json(&json!({"amount": amount, "reason": "damaged in transit"}))
            .send()
    };
    let (status, first) = read(send(json!("100.00"), "refund-1").await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(
        (first["status"].as_str(), first["amount"].as_str(), first["currency"].as_str(), first["order"].as_i64()),
        (Some("SUCCEEDED"), Some("100.00"), Some("USD"), Some(order))
    );
    let (status, replay) = read(send(json!("100.00"), "refund-1").await.unwrap()).await;
    assert_eq!((status, replay["id"].clone()), (StatusCode::CREATED, first["id"].clone()));
    let (status, body) = read(send(json!("1.00"), "refund-1").await.unwrap()).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    // "Everything left" (no amount) is another request than any amount, under the same key.
    let everything = app
        .client
        .post(app.url(&refunds))
        .bearer_auth(&staff)
        .header("Idempotency-Key", "refund-1")
        .json(&json!({"reason": "damaged in transit"}))
        .send()
        .await
        .unwrap();
    let (status, body) = read(everything).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, o) = app.get(&format!("/orders/{order}/"), Some(&alice)).await;
    assert_eq!((o["status"].as_str(), o["refunded_amount"].as_str()), (Some("PARTIALLY_REFUNDED"), Some("100.00")));
    let (_, p) = app.get(&format!("/payments/{pid}/"), Some(&alice)).await;
    assert_eq!((p["status"].as_str(), p["refunded_amount"].as_str()), (Some("PARTIALLY_REFUNDED"), Some("100.00")));
    // A JSON number works too; then the rest by default.
    let (status, second) = app.post(&refunds, Some(&staff), json!({"amount": 50.5})).await;
    assert_eq!((status, second["amount"].as_str()), (StatusCode::CREATED, Some("50.50")), "{second}");
    let (status, rest) = app.post(&refunds, Some(&staff), json!({})).await;
    assert_eq!((status, rest["amount"].as_str()), (StatusCode::CREATED, Some("99.50")), "{rest}");
    let (_, o) = app.get(&format!("/orders/{order}/"), Some(&alice)).await;
    assert_eq!((o["status"].as_str(), o["refunded_amount"].as_str()), (Some("REFUNDED"), Some("250.00")));
    // Nothing left: 409.
    let (status, body) = app.post(&refunds, Some(&staff), json!({"amount": "0.01"})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    // The owner and staff list the refunds; the history shows them.
    for token in [&alice, &staff] {
        let (status, list) = app.get(&refunds, Some(token)).await;
        assert_eq!(status, StatusCode::OK);
        let amounts: Vec<&str> = list.as_array().unwrap().iter().filter_map(|r| r["amount"].as_str()).collect();
        assert_eq!(amounts, vec!["100.00", "50.50", "99.50"]);
    }
    let (_, history) = app.get(&format!("/orders/{order}/history/"), Some(&alice)).await;
    let tos: Vec<&str> = history.as_array().unwrap().iter().filter_map(|e| e["to"].as_str()).collect();
    assert_eq!(tos, vec!["CREATED", "PAID", "PARTIALLY_REFUNDED", "PARTIALLY_REFUNDED", "REFUNDED"]);
    let (status, list) = app.get("/orders/?status=REFUNDED", Some(&alice)).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
}

async fn refund_errors_are_clear_problems(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let staff = app.staff("root").await;
    let (order, pid) = app.paid(&alice, "mock_success").await;
    let refunds = format!("/payments/{pid}/refunds/");
    // The owner may not refund (403); another user does not learn the payment exists (404).
    let (status, body) = app.post(&refunds, Some(&alice), json!({})).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = app.post(&refunds, Some(&mallory), json!({})).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app.get(&refunds, Some(&mallory)).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app.post(&refunds, None, json!({})).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    for path in ["/payments/0/refunds/", "/payments/abc/refunds/", "/payments/999999/refunds/"] {
        let (status, body) = app.post(path, Some(&staff), json!({})).await;
        assert_problem(status, &body, StatusCode::NOT_FOUND);
    }
    // Bad amounts and fields are 400 naming the field.
    for bad in [
        json!({"amount": "0"}),
        json!({"amount": "-5"}),
        json!({"amount": "1.001"}),
        json!({"amount": "250.01"}),
        json!({"amount": "ten"}),
        json!({"reason": "x".repeat(501)}),
        json!({"amount": "1.00", "extra": true}),
        json!({"amount": null}),
    ] {
        let (status, body) = app.post(&refunds, Some(&staff), bad.clone()).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST);
        assert!(bad.get("extra").is_some() || body["errors"].is_object(), "{bad}: {body}");
    }
    // Cancelling a paid order is a 409 that says to refund it.
    let (status, body) = app.post(&format!("/orders/{order}/cancel/"), Some(&alice), json!({})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    assert!(body["detail"].as_str().unwrap().contains("refund"), "{body}");
    // An unpaid order's payment, and a declined payment, cannot be refunded.
    let unpaid = app.order(&alice).await["id"].as_i64().unwrap();
    let (_, pending) = app.post("/payments/initiate/", Some(&alice), json!({"order_id": unpaid})).await;
    let (status, body) = app.post(&format!("/payments/{}/refunds/", pending["id"]), Some(&staff), json!({})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    let declined_order = app.order(&alice).await["id"].as_i64().unwrap();
    let (_, d) = app
        .post("/payments/initiate/", Some(&alice), json!({"order_id": declined_order, "method": "mock_decline"}))
        .await;
    let (status, _) = app.post("/payments/confirm/", Some(&alice), json!({"payment_id": d["id"]})).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let (status, body) = app.post(&format!("/payments/{}/refunds/", d["id"]), Some(&staff), json!({})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    // The provider declines the refund: 402, and the amount is available again.
    let (_, refusing) = app.paid(&alice, "mock_refund_decline").await;
    let path = format!("/payments/{refusing}/refunds/");
    let (status, body) = app.post(&path, Some(&staff), json!({"amount": "10.00"})).await;
    assert_problem(status, &body, StatusCode::PAYMENT_REQUIRED);
    let (_, list) = app.get(&path, Some(&staff)).await;
    assert_eq!(list[0]["status"].as_str(), Some("FAILED"), "{list}");
    let (_, p) = app.get(&format!("/payments/{refusing}/"), Some(&alice)).await;
    assert_eq!((p["status"].as_str(), p["refunded_amount"].as_str()), (Some("SUCCESS"), Some("0.00")));
}

async fn staff_manage_users_over_http(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    app.register("alicia").await;
    let bob_id = app.register("bob").await["id"].as_i64().unwrap();
    let bob = app.login("bob").await.0;
    let staff = app.staff("root").await;
    // Everyone else gets 403 on every staff route.
    for path in
        ["/users/", &format!("/users/{bob_id}/"), "/notifications/", "/notifications/counts/", "/orders/?all=true"]
    {
        let (status, body) = app.get(path, Some(&alice)).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN);
    }
    let (status, body) = app.patch(&format!("/users/{bob_id}/"), Some(&alice), json!({"is_staff": true})).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = app.post("/notifications/1/retry/", Some(&alice), json!({})).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    // Staff list (paged, searchable), read and change accounts.
    let (status, users) = app.get("/users/?q=ALI", Some(&staff)).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = users.as_array().unwrap().iter().filter_map(|u| u["username"].as_str()).collect();
    assert_eq!(names, vec!["alice", "alicia"]);
    let resp = app.client.get(app.url("/users/?limit=2")).bearer_auth(&staff).send().await.unwrap();
    let next = resp.headers().get("x-next-cursor").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let page: Vec<Value> = resp.json().await.unwrap();
    assert_eq!((page.len(), next.as_deref()), (2, page[1]["id"].to_string().as_str().into()));
    let (status, rest) = app.get(&format!("/users/?limit=2&cursor={}", next.unwrap()), Some(&staff)).await;
    assert_eq!((status, rest.as_array().map(Vec::len)), (StatusCode::OK, Some(2)));
    let (status, user) = app.get(&format!("/users/{bob_id}/"), Some(&staff)).await;
    assert_eq!(
        (status, user["username"].as_str(), user["is_active"].as_bool()),
        (StatusCode::OK, Some("bob"), Some(true))
    );
    let (status, body) = app.get("/users/999999/", Some(&staff)).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, user) = app.patch(&format!("/users/{bob_id}/"), Some(&staff), json!({"is_staff": true})).await;
    assert_eq!((status, user["is_staff"].as_bool()), (StatusCode::OK, Some(true)), "{user}");
    // Disabling ends bob's sessions at once.
    assert_eq!(me_status(&app, &bob).await, StatusCode::OK);
    let (status, user) = app.patch(&format!("/users/{bob_id}/"), Some(&staff), json!({"is_active": false})).await;
    assert_eq!((status, user["is_active"].as_bool()), (StatusCode::OK, Some(false)), "{user}");
    assert_eq!(me_status(&app, &bob).await, StatusCode::UNAUTHORIZED);
    for bad in [json!({"is_staff": "yes"}), json!({"role": "admin"}), json!([null, null]), json!([true])] {
        let (status, body) = app.patch(&format!("/users/{bob_id}/"), Some(&staff), bad).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST);
    }
    let (status, body) = app.get("/users/?limit=0", Some(&staff)).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    // Staff cannot lock themselves out; nothing changes when one of two changes is refused.
    let (_, me) = app.get("/accounts/me/", Some(&staff)).await;
    let own = format!("/users/{}/", me["id"]);
    for change in
        [json!({"is_staff": false}), json!({"is_active": false}), json!({"is_staff": true, "is_active": false})]
    {
        let (status, body) = app.patch(&own, Some(&staff), change).await;
        assert_problem(status, &body, StatusCode::CONFLICT);
    }
    let (status, still) = app.get(&own, Some(&staff)).await;
    assert_eq!(
        (status, still["is_staff"].as_bool(), still["is_active"].as_bool()),
        (StatusCode::OK, Some(true), Some(true))
    );
}

async fn staff_see_everyones_orders_and_notifications(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let staff = app.staff("root").await;
    let a = app.order(&alice).await["id"].as_i64().unwrap();
    let b = app.order(&bob).await["id"].as_i64().unwrap();
    // Staff list everyone's orders, one user's, or a time window; read and cancel any.
    let ids = |v: &Value| v.as_array().unwrap().iter().map(|o| o["id"].as_i64().unwrap()).collect::<Vec<_>>();
    let (status, all) = app.get("/orders/?all=true", Some(&staff)).await;
    assert_eq!((status, ids(&all)), (StatusCode::OK, vec![b, a]));
    let (_, own) = app.get("/orders/", Some(&staff)).await;
    assert!(ids(&own).is_empty(), "without all=true staff see their own orders");
    let alice_id = all[1]["user"].as_i64().unwrap();
    let (_, hers) = app.get(&format!("/orders/?user={alice_id}"), Some(&staff)).await;
    assert_eq!(ids(&hers), vec![a]);
    let (_, none) = app.get("/orders/?all=true&created_before=2000-01-01T00:00:00Z", Some(&staff)).await;
    assert!(ids(&none).is_empty());
    let (_, recent) = app.get("/orders/?all=true&created_after=2000-01-01T00:00:00%2B01:00", Some(&staff)).await;
    assert_eq!(ids(&recent), vec![b, a]);
    let (status, body) = app.get("/orders/?all=true&created_after=yesterday", Some(&staff)).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) = app.get("/orders/?all=maybe", Some(&staff)).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    let (status, o) = app.get(&format!("/orders/{b}/"), Some(&staff)).await;
    assert_eq!((status, o["id"].as_i64()), (StatusCode::OK, Some(b)));
    let (status, o) = app.post(&format!("/orders/{b}/cancel/"), Some(&staff), json!({})).await;
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("CANCELLED")));
    // Notifications: listed per order and per status, counted, and only dead ones retried.
    let (status, rows) = app.get(&format!("/notifications/?order={a}"), Some(&staff)).await;
    assert_eq!(status, StatusCode::OK);
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["order"].as_i64() == Some(a)), "{rows:?}");
    assert_eq!(rows[0]["kind"].as_str(), Some("order_created"));
    let (status, counts) = app.get("/notifications/counts/", Some(&staff)).await;
    assert_eq!(status, StatusCode::OK);
    let total: u64 = ["pending", "sent", "dead", "skipped"].iter().map(|k| counts[k].as_u64().unwrap()).sum();
    assert!(total >= 3, "{counts}");
    let (status, body) = app.post(&format!("/notifications/{}/retry/", rows[0]["id"]), Some(&staff), json!({})).await;
    assert_problem(status, &body, StatusCode::CONFLICT);
    let (status, body) = app.post("/notifications/999999/retry/", Some(&staff), json!({})).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = app.get("/notifications/?status=lost", Some(&staff)).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) = app.get("/notifications/?order=x", Some(&staff)).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
}
