//! Errors as `application/problem+json` (RFC 9457). The one place that maps
//! [`som_core::ErrorKind`] to an HTTP status.

use std::collections::BTreeMap;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use som_core::{Error, ErrorKind};
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem (`urn:som:problem:validation`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// For validation problems: field → messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
}

/// Internal error text for the access log; never sent to the client.
#[derive(Debug, Clone)]
pub struct InternalDetail(pub String);

/// An error response (boxed: it travels in every handler's `Result`).
#[derive(Debug)]
pub struct ApiError(Box<Parts>);

#[derive(Debug)]
struct Parts {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    errors: Option<BTreeMap<String, Vec<String>>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    internal: Option<String>,
}

impl ApiError {
    /// A problem with the given status, slug (for `type`), title and detail.
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        ApiError(Box::new(Parts {
            status,
            slug,
            title,
            detail: detail.into(),
            errors: None,
            headers: Vec::new(),
            internal: None,
        }))
    }

    /// 400 with field errors.
    pub fn validation(errors: BTreeMap<String, Vec<String>>) -> Self {
        let detail = errors
            .iter()
            .flat_map(|(f, ms)| ms.iter().map(move |m| format!("{f}: {m}")))
            .collect::<Vec<_>>()
            .join("; ");
        let mut e = Self::new(StatusCode::BAD_REQUEST, "validation", "Invalid input", detail);
        e.0.errors = Some(errors);
        e
    }

    /// 400 for one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(BTreeMap::from([(field.to_owned(), vec![message.into()])]))
    }

    /// 404 for a path that names nothing.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The problem's title (its kind, in words).
    pub fn title(&self) -> &'static str {
        self.0.title
    }

    /// The problem's detail, as the API sends it (never internal detail).
    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    /// The response's extra headers (`Retry-After`, …).
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.0.headers
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let detail = e.to_string();
        let (status, slug, title) = match e.kind() {
            ErrorKind::Validation => {
                let fields = e.validation_errors().map(|v| v.fields().clone()).unwrap_or_default();
                return ApiError::validation(fields);
            }
            ErrorKind::Unprocessable => {
                let fields = e.validation_errors().map(|v| v.fields().clone()).unwrap_or_default();
                let mut e = ApiError::validation(fields);
                e.0.status = StatusCode::UNPROCESSABLE_ENTITY;
                e.0.slug = "unprocessable";
                e.0.title = "Unprocessable input";
                return e;
            }
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ErrorKind::Unauthorized => {
                return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail)
                    .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ErrorKind::PaymentDeclined => (StatusCode::PAYMENT_REQUIRED, "payment-declined", "Payment declined"),
            ErrorKind::IdempotencyMismatch => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-mismatch", "Idempotency key reused")
            }
            ErrorKind::IdempotencyInProgress => {
                (StatusCode::CONFLICT, "idempotency-in-progress", "Request with this key in progress")
            }
            ErrorKind::TooManyAttempts => {
                let secs = e.retry_after().map_or(1, |d| d.as_secs().max(1));
                return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests", detail)
                    .with_header(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            ErrorKind::Unavailable => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail)
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ErrorKind::Incompatible | ErrorKind::Internal => {
                let mut e = ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal server error",
                    "an unexpected error occurred; it has been logged",
                );
                e.0.internal = Some(detail);
                return e;
            }
        };
        ApiError::new(status, slug, title, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let p = *self.0;
        let problem = Problem {
            kind: format!("urn:som:problem:{}", p.slug),
            title: p.title.to_owned(),
            status: p.status.as_u16(),
            detail: p.detail,
            errors: p.errors,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response =
            (p.status, [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))], body).into_response();
        for (name, value) in p.headers {
            response.headers_mut().insert(name, value);
        }
        if let Some(internal) = p.internal {
            response.extensions_mut().insert(InternalDetail(internal));
        }
        response
    }
}
