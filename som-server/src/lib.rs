//! # som-server
//!
//! The HTTP front end of SOM: the original service's API (`/api/v1/…`) over
//! [`som_core::OrderSystem`]. Handlers only translate: extract, call one OrderSystem method,
//! render. Errors are RFC 9457 problem documents.
//!
//! - [`app`] builds the [`Router`] (testable with `tower::ServiceExt::oneshot`);
//! - [`serve`] runs it on a listener with header-read timeouts and graceful shutdown.

/// Capture and void of authorised payments.
pub mod capture;
/// Reading your own writes across processes, with read replicas.
pub mod consistency;
/// The staff console (`/console/`).
pub mod console;
/// The OpenAPI document.
pub mod docs;
/// Request and response bodies.
pub mod dto;
/// Problem responses.
pub mod error;
/// The streamed export of orders (CSV, NDJSON).
pub mod export;
/// Extractors.
pub mod extract;
/// Fulfilments and returns.
pub mod fulfillment;
/// Health, metrics, rate limiting, error middleware.
pub mod ops;

pub mod order_json;
/// Pages of lists: sizes and next-page headers.
pub mod paging;
/// API handlers.
pub mod routes;
/// OpenAPI schemas of the domain's enums.
pub mod schema;
/// Refund, account and notification handlers (staff operations).
pub mod staff;

/// Webhook endpoints, their delivery log, and redelivery.
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{MethodRouter, get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use som_core::{Config, OrderSystem};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

/// How the HTTP server behaves; see [`Settings::from_config`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest request body, in bytes (413 beyond).
    pub body_limit: usize,
    /// Longest time to answer a request (408 beyond).
    pub request_timeout: Duration,
    /// Longest time a client may take to send its headers.
    pub header_read_timeout: Duration,
    /// Requests per minute per address on `token/` and `accounts/register/`; 0 = unlimited.
    pub auth_rate_limit: u32,
    /// Origins allowed by CORS; empty turns CORS off.
    pub cors_origins: Vec<String>,
    /// How long a graceful shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Open connections accepted at once; further ones wait in the listen queue.
    pub max_connections: usize,
    /// Open connections one client address (IPv6: one /64) may hold; further ones are
    /// answered 429 and closed. Trusted proxies are not counted per address.
    pub max_connections_per_address: usize,
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<som_core::config::Secret>,
    /// Whether `/metrics` is served by [`app`] (false when it has a listener of its own, see
    /// [`metrics_app`]).
    pub metrics_on_main: bool,
    /// Addresses whose `X-Forwarded-For` is believed for the client address.
    pub trusted_proxies: Vec<(std::net::IpAddr, u8)>,
    /// Whether [`app`] serves the staff console at `/console/` (`SOM_CONSOLE`).
    pub console: bool,
}

impl Settings {
    /// The server settings of a [`Config`].
    pub fn from_config(c: &Config) -> Self {
        Settings {
            body_limit: c.body_limit,
            request_timeout: c.request_timeout,
            header_read_timeout: c.header_read_timeout,
            auth_rate_limit: c.auth_rate_limit,
            cors_origins: c.cors_origins.clone(),
            shutdown_grace: Duration::from_secs(30),
            max_connections: c.max_connections.max(1),
            max_connections_per_address: c.connections_per_address(),
            metrics_token: c.metrics_token.clone(),
            metrics_on_main: c.metrics_listen.is_none(),
            trusted_proxies: c.trusted_proxies.iter().filter_map(|p| som_core::net::parse_cidr(p)).collect(),
            console: c.console,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_config(&Config::default())
    }
}

/// Where Swagger UI (the API's interactive documentation) is served; `GET /` leads there.
pub const DOCS_PATH: &str = "/api/docs/";

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The order system.
    pub som: OrderSystem,
    /// The rate limit of the authentication routes.
    pub limiter: Arc<ops::RateLimiter>,
    /// `/metrics`' bearer token, when it has one.
    pub metrics_token: Option<som_core::config::Secret>,
    /// When the outbox counts behind `/metrics` were last read.
    pub counts_read: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[(std::net::IpAddr, u8)]>,
}

impl AppState {
    /// The state [`app`] and [`metrics_app`] share.
    pub fn new(som: OrderSystem, settings: &Settings) -> Self {
        AppState {
            som,
            limiter: Arc::new(ops::RateLimiter::new(settings.auth_rate_limit)),
            metrics_token: settings.metrics_token.clone(),
            counts_read: Arc::new(std::sync::Mutex::new(None)),
            trusted_proxies: settings.trusted_proxies.clone().into(),
        }
    }
}

/// Serves [`metrics_app`] on `listener` until `shutdown` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    som: OrderSystem,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_app(som, settings)).with_graceful_shutdown(shutdown).await
}

/// `/metrics` alone, for a listener of its own (`SOM_METRICS_LISTEN`).
pub fn metrics_app(som: OrderSystem, settings: &Settings) -> Router {
    let _ = ops::prometheus();
    Router::new().route("/metrics", get(ops::metrics_handler)).with_state(AppState::new(som, settings))
}

/// Request ids: 16 random hex characters, unless the client sent `X-Request-ID`.
#[derive(Debug, Clone, Copy, Default)]
struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id: u64 = rand_id();
        HeaderValue::from_str(&format!("{id:016x}")).ok().map(RequestId::new)
    }
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// Routes `path` both with and without a trailing slash.
fn both(router: Router<AppState>, path: &str, handler: MethodRouter<AppState>) -> Router<AppState> {
    let bare = path.trim_end_matches('/');
    router.route(bare, handler.clone()).route(&format!("{bare}/"), handler)
}

/// The whole HTTP application.
pub fn app(som: OrderSystem, settings: Settings) -> Router {
    let state = AppState::new(som, &settings);
    let _ = ops::prometheus();

    let mut limited = Router::new();
    limited = both(limited, "/api/v1/accounts/register", post(routes::register));
    limited = both(limited, "/api/v1/token", post(routes::token));
    limited = both(limited, "/api/v1/accounts/password", post(routes::change_password));
    let limited = limited.route_layer(from_fn_with_state(state.clone(), ops::rate_limit));

    let mut api = Router::new();
    for (path, handler) in [
        ("/api/v1/accounts/me", get(routes::me)),
        ("/api/v1/token/refresh", post(routes::refresh)),
        ("/api/v1/token/revoke", post(routes::revoke)),
        ("/api/v1/token/revoke-all", post(routes::revoke_all)),
        ("/api/v1/orders", get(routes::list_orders).post(routes::create_order)),
        ("/api/v1/orders/latest", get(routes::latest_order)),
        ("/api/v1/orders/export", get(export::export_orders)),
        ("/api/v1/orders/{id}", get(routes::get_order)),
        ("/api/v1/orders/{id}/cancel", post(routes::cancel_order)),
        ("/api/v1/orders/{id}/history", get(routes::order_history)),
        ("/api/v1/payments", post(routes::create_payment)),
        ("/api/v1/payments/initiate", post(routes::initiate_payment)),
        ("/api/v1/payments/confirm", post(routes::confirm_payment)),
        ("/api/v1/payments/{id}", get(routes::get_payment)),
        ("/api/v1/payments/webhooks/stripe", post(routes::stripe_webhook)),
        ("/api/v1/payments/{id}/refunds", get(staff::list_refunds).post(staff::create_refund)),
        ("/api/v1/payments/{id}/capture", post(capture::capture_payment)),
        ("/api/v1/payments/{id}/void", post(capture::void_payment)),
        (
            "/api/v1/orders/{id}/fulfillments",
            get(fulfillment::order_fulfillments).post(fulfillment::create_fulfillment),
        ),
        ("/api/v1/fulfillments", get(fulfillment::list_fulfillments)),
        ("/api/v1/fulfillments/{id}", get(fulfillment::get_fulfillment)),
        ("/api/v1/fulfillments/{id}/ship", post(fulfillment::ship_fulfillment)),
        ("/api/v1/fulfillments/{id}/deliver", post(fulfillment::deliver_fulfillment)),
        ("/api/v1/fulfillments/{id}/cancel", post(fulfillment::cancel_fulfillment)),
        ("/api/v1/orders/{id}/returns", get(fulfillment::order_returns).post(fulfillment::create_return)),
        ("/api/v1/returns", get(fulfillment::list_returns)),
        ("/api/v1/returns/{id}", get(fulfillment::get_return)),
        ("/api/v1/returns/{id}/approve", post(fulfillment::approve_return)),
        ("/api/v1/returns/{id}/reject", post(fulfillment::reject_return)),
        ("/api/v1/returns/{id}/receive", post(fulfillment::receive_return)),
        ("/api/v1/users", get(staff::list_users)),
        ("/api/v1/users/{id}", get(staff::get_user).patch(staff::patch_user)),
        ("/api/v1/notifications", get(staff::list_notifications)),
        ("/api/v1/notifications/counts", get(staff::notification_counts)),
        ("/api/v1/notifications/{id}/retry", post(staff::retry_notification)),
        ("/api/v1/notifications/retry-dead", post(staff::retry_dead_notifications)),
        ("/api/v1/overview", get(staff::overview)),
        ("/api/v1/webhook-endpoints", get(webhooks::list_endpoints).post(webhooks::create_endpoint)),
        (
            "/api/v1/webhook-endpoints/{id}",
            get(webhooks::get_endpoint).patch(webhooks::patch_endpoint).delete(webhooks::delete_endpoint),
        ),
        ("/api/v1/webhook-endpoints/{id}/rotate-secret", post(webhooks::rotate_secret)),
        ("/api/v1/webhook-endpoints/{id}/deliveries", get(webhooks::list_deliveries)),
        ("/api/v1/events/{id}/redeliver", post(webhooks::redeliver)),
        ("/healthz", get(ops::healthz)),
        ("/readyz", get(ops::readyz)),
    ] {
        api = both(api, path, handler);
    }
    if settings.metrics_on_main {
        api = both(api, "/metrics", get(ops::metrics_handler));
    }
    // The document is built on its first request and kept as bytes: an idle server holds
    // neither the tree nor the code pages that build it.
    let methods = state.som.payment_methods();
    let schema: Arc<std::sync::OnceLock<axum::body::Bytes>> = Arc::default();
    let serve_schema = get(move || {
        let body = schema
            .get_or_init(|| serde_json::to_vec(&docs::openapi_json_for(&methods)).unwrap_or_default().into())
            .clone();
        std::future::ready(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body))
    });
    api = both(api, "/api/schema", serve_schema.clone());
    api = api.route("/api/openapi.json", serve_schema);
    if settings.console {
        api = api.merge(console::routes());
    }
    // The root leads to the API's documentation (there is nothing else to show there).
    api = api.route("/", get(|| std::future::ready(axum::response::Redirect::to(DOCS_PATH))));

    // "*" is refused by the configuration; an embedding app that passes it anyway gets no
    // wildcard (it cannot be combined with the Authorization header the API needs).
    let origins: Vec<HeaderValue> = settings
        .cors_origins
        .iter()
        .filter(|o| o.as_str() != "*")
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let cors = (!origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PATCH])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static(consistency::LAST_WRITE),
            ])
            .expose_headers([
                header::LINK,
                HeaderName::from_static("x-next-cursor"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static(consistency::LAST_WRITE),
            ])
    });

    let request_id = HeaderName::from_static("x-request-id");
    let api = api.merge(limited);
    // Reading one's own writes through other processes matters only with read replicas.
    let api = if state.som.replicas().is_empty() {
        api
    } else {
        api.layer(from_fn_with_state(state.clone(), consistency::last_write))
    };
    api.with_state(state)
        .merge(SwaggerUi::new("/api/docs").config(utoipa_swagger_ui::Config::from("/api/openapi.json")))
        .fallback(ops::not_found)
        .layer(from_fn(ops::record_metrics))
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, settings.request_timeout))
        .layer(from_fn(ops::problem_responses))
        .layer(from_fn(ops::security_headers))
        .layer(tower::util::option_layer(cors))
        .layer(CompressionLayer::new())
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeId))
}

/// Serves [`app`] on `listener` until `shutdown` completes, then stops accepting, lets
/// requests in flight finish (up to [`Settings::shutdown_grace`]) and returns.
///
/// HTTP/1.1 only: SOM runs behind a TLS-terminating proxy or on loopback, where cleartext
/// HTTP/2 buys nothing and adds protocol states (a partial preface, an idle SETTINGS exchange)
/// that a client could hold open. Every connection must send a complete request head within
/// [`Settings::header_read_timeout`] of connecting and of its previous response, so silent and
/// idle sockets are closed. At most [`Settings::max_connections`] connections are open at once;
/// further clients wait in the listen queue while the established ones are served. One client
/// address holds at most [`Settings::max_connections_per_address`] of them; a connection
/// beyond that is answered `429` and closed at once.
pub async fn serve(
    listener: TcpListener,
    som: OrderSystem,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = settings.shutdown_grace;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(settings.header_read_timeout).keep_alive(true);
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections.max(1)));
    let per_address = Arc::new(ops::ConnectionsPerAddress::new(settings.max_connections_per_address));
    let trusted_proxies = settings.trusted_proxies.clone();
    let app = app(som, settings);
    // Histogram samples are buffered until drained; drain them even when nobody scrapes
    // /metrics, or they grow with every request.
    let upkeep = tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if let Some(handle) = ops::prometheus() {
                handle.run_upkeep();
            }
        }
    });
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let peer = addr.ip();
                let counted = if trusted_proxies.iter().any(|net| som_core::net::cidr_contains(*net, peer)) {
                    None
                } else {
                    match per_address.open(peer) {
                        Some(counted) => Some(counted),
                        None => {
                            // Its slot is free again at once; the answer is written beside.
                            drop(slot);
                            tokio::spawn(ops::refuse_connection(stream));
                            continue;
                        }
                    }
                };
                let service = app.clone().map_request(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
                    req
                });
                let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _slot = (slot, counted);
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    upkeep.abort();
    tracing::info!("shutting down: waiting for requests in flight");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after the grace period; closing them");
    }
    Ok(())
}
