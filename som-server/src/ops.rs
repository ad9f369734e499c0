//! Operations: health and readiness, Prometheus metrics, the per-address rate limit on the
//! authentication routes, and the middleware that turns bare error responses into problems.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use som_core::domain::NotificationStatus;

use crate::AppState;
use crate::dto::Health;
use crate::error::{ApiError, InternalDetail, PROBLEM_JSON, Problem};
use crate::extract::ClientIp;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into(), warnings: Vec::new(), replicas: Vec::new() })
}

/// Readiness: storage answers. The body lists warnings an operator must see, such as payments
/// going through the mock provider, and each read replica's state and lag (a replica that is
/// down or lagging does not make SOM unready: its reads go to the primary).
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "Storage unreachable", body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(s): State<AppState>) -> Result<Json<Health>, ApiError> {
    s.som.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::from(som_core::Error::Unavailable("database".into()))
    })?;
    let replicas = s.som.replicas().into_iter().map(Into::into).collect();
    Ok(Json(Health { status: "ok".into(), warnings: s.som.warnings(), replicas }))
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
/// created, payments by outcome, notifications by status and the outbox backlog, and each read
/// replica's state, lag and reads served.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics_handler(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &s.metrics_token {
        let presented = crate::extract::bearer_token(&headers);
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.expose().as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "/metrics needs its bearer token",
            )
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            .into_response();
        }
    }
    // The outbox counts are a GROUP BY: read them at most once a second, however often
    // /metrics is scraped; the gauges keep their last values in between.
    let due = {
        let mut read = s.counts_read.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = read.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if due {
            *read = Some(Instant::now());
        }
        due
    };
    let counts = if due { Some(s.som.notification_counts(som_core::Caller::System).await) } else { None };
    match counts {
        None => {}
        Some(Ok(counts)) => {
            for (status, n) in counts {
                #[allow(clippy::cast_precision_loss)]
                let value = n as f64;
                metrics::gauge!("som_notifications", "status" => status.as_str()).set(value);
                if status == NotificationStatus::Pending {
                    metrics::gauge!("som_outbox_backlog").set(value);
                }
            }
        }
        Some(Err(e)) => tracing::warn!(error = %e, "could not count notifications for metrics"),
    }
    for replica in s.som.replicas() {
        let up = if replica.state == "streaming" { 1.0 } else { 0.0 };
        metrics::gauge!("som_replica_up", "replica" => replica.location.clone()).set(up);
        if let Some(lag) = replica.lag {
            metrics::gauge!("som_replica_lag_seconds", "replica" => replica.location.clone()).set(lag.as_secs_f64());
        }
        metrics::counter!("som_replica_reads_total", "replica" => replica.location).absolute(replica.reads);
    }
    let body = prometheus().map(PrometheusHandle::render).unwrap_or_default();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], body).into_response()
}

/// The metric label of a request method: one of a fixed set, so that clients cannot grow the
/// metrics without bound by inventing methods.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Equality of two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts every request by method, matched route template (`unmatched` for none) and status,
/// and times it. Every label comes from a fixed set.
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("som_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("som_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// The bucket an address counts against: IPv4 addresses (also IPv4-mapped IPv6) one each, IPv6
/// addresses by their /64 — the block a single subscriber is usually given, so rotating through
/// it gains nothing.
pub fn rate_limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
        v4 => v4,
    }
}

/// Open connections per client address (IPv6: per /64), capped.
#[derive(Debug)]
pub struct ConnectionsPerAddress {
    cap: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub struct CountedConnection {
    key: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionsPerAddress {
    /// At most `cap` open connections per address (at least 1).
    pub fn new(cap: usize) -> Self {
        ConnectionsPerAddress { cap: cap.max(1), open: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Counts a new connection from `ip`, or `None` when the address already holds its cap.
    pub fn open(&self, ip: IpAddr) -> Option<CountedConnection> {
        let key = rate_limit_key(ip);
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(CountedConnection { key, open: Arc::clone(&self.open) })
    }
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Answers a connection over its address's cap with `429` (`Retry-After: 1`) and closes it,
/// giving the client at most a second to take the answer.
pub async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    metrics::counter!("som_connections_refused_total", "reason" => "per_address").increment(1);
    let body = r#"{"type":"about:blank","title":"Too many connections from this address","status":429}"#;
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/problem+json\r\nRetry-After: 1\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// A token bucket per client address (IPv6: per /64): `per_minute` requests a minute,
/// bursting to the same.
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
        let (tokens, at) = buckets.entry(rate_limit_key(ip)).or_insert((capacity, now));
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
    // The console's pages explain their own errors.
    let is_page = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem || is_page {
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

/// The Content-Security-Policy of the Swagger UI pages: everything from this server only (the
/// UI's assets are vendored), inline styles for the UI's components, no framing.
pub const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; \
    form-action 'self'; frame-ancestors 'none'";

/// Security headers: `X-Content-Type-Options: nosniff` everywhere; API answers (tokens, orders,
/// accounts) are never stored by caches (`Cache-Control: no-store`); the documentation pages get
/// a Content-Security-Policy and may not be framed.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/v1/");
    let docs = req.uri().path().starts_with("/api/docs");
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if docs {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CSP));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    response
}

/// The fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let limiter = RateLimiter::new(2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(b).is_ok());
        assert!(limiter.check(a).is_err(), "a third request from the same /64 passed");
        assert!(limiter.check(other).is_ok());
        assert_eq!(rate_limit_key("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn metric_labels_come_from_a_fixed_set() {
        let invented = axum::http::Method::from_bytes(&[b'X'; 8192]).unwrap();
        assert_eq!(method_label(&invented), "other");
        assert_eq!(method_label(&axum::http::Method::PATCH), "PATCH");
    }
}
