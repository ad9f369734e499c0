//! Operations: health and readiness, Prometheus metrics, the per-address rate limit on the
//! authentication routes, and the middleware that turns bare error responses into problems.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use som_core::storage::NotificationStatus;

use crate::AppState;
use crate::dto::Health;
use crate::error::{ApiError, InternalDetail, PROBLEM_JSON, Problem};
use crate::extract::ClientIp;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Readiness: storage answers.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "Storage unreachable", body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(s): State<AppState>) -> Result<Json<Health>, ApiError> {
    s.som.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::from(som_core::Error::Unavailable("database".into()))
    })?;
    Ok(Json(Health { status: "ok".into() }))
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("som_http_request_duration_seconds".into()), &buckets)
                .and_then(|b| b.install_recorder())
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .as_ref()
}

/// Prometheus text format: HTTP requests by route and status with latency histogram, orders
/// created, payments by outcome, notifications by status and the outbox backlog.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics_handler(State(s): State<AppState>) -> Response {
    match s.som.notification_counts().await {
        Ok(counts) => {
            for (status, n) in counts {
                #[allow(clippy::cast_precision_loss)]
                let value = n as f64;
                metrics::gauge!("som_notifications", "status" => status.as_str()).set(value);
                if status == NotificationStatus::Pending {
                    metrics::gauge!("som_outbox_backlog").set(value);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not count notifications for metrics"),
    }
    let body = prometheus().map(PrometheusHandle::render).unwrap_or_default();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], body).into_response()
}

/// Counts every request by method, matched route and status, and times it.
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("som_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("som_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// A token bucket per client address: `per_minute` requests a minute, bursting to the same.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per address; 0 allows everything.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute, buckets: Mutex::new(HashMap::new()) }
    }

    /// `Ok` when `ip` may proceed (and a token is spent), otherwise how long until it may.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 10_000 {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(60));
        }
        let (tokens, at) = buckets.entry(ip).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_sec))
        }
    }
}

/// Applies the rate limit of [`RateLimiter`] to the routes it is layered on.
pub async fn rate_limit(State(s): State<AppState>, ClientIp(ip): ClientIp, req: Request, next: Next) -> Response {
    match s.limiter.check(ip) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let secs = wait.as_secs().max(1);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                format!("try again in {secs} s"),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
            .into_response()
        }
    }
}

/// Gives error responses produced outside the handlers (unknown route, wrong method, timeout,
/// body limit) a problem body, keeping their headers (`Allow`, `Retry-After`), and logs the
/// internal detail of 500s with the request's span (and so its request id).
pub async fn problem_responses(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if let Some(InternalDetail(detail)) = response.extensions().get::<InternalDetail>() {
        tracing::error!(error = %detail, "internal error");
    }
    let status = response.status();
    let is_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let (slug, title, detail) = match status {
        StatusCode::NOT_FOUND => ("not-found", "Not found", "no such resource".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            "Method not allowed",
            "this route does not accept that method; see the Allow header".to_owned(),
        ),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "Request timeout", "the request took too long".to_owned()),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("payload-too-large", "Payload too large", "the request body is too large".to_owned())
        }
        other => ("error", "Error", other.canonical_reason().unwrap_or("error").to_owned()),
    };
    let problem = ApiError::new(status, slug, title, detail).into_response();
    let (problem_parts, body) = problem.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    drop(problem_parts);
    Response::from_parts(parts, Body::new(body))
}

/// The fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}
