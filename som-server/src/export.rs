//! `GET /api/v1/orders/export/` (and the console's export link): every order matching the
//! filters, streamed as CSV or NDJSON a batch at a time, so that the server's memory does not
//! grow with the number of orders.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use som_core::domain::Order;
use som_core::{ExportFormat, OrderExport};

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::Auth;
use crate::schema::one_of;

type ApiResult<T> = Result<T, ApiError>;

/// Query parameters of `GET /orders/export/` (documentation; the handler parses them strictly).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ExportParams {
    /// `csv` (default) or `ndjson`.
    #[param(pattern = "^(csv|ndjson)$")]
    pub format: Option<String>,
    /// Only orders in this status.
    #[param(inline)]
    pub status: Option<crate::schema::StatusParam>,
    /// Only this user's orders (every user's otherwise).
    #[param(minimum = 1)]
    pub user: Option<i64>,
    /// Only orders placed at or after this time (RFC 3339).
    pub created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Only orders placed before this time (RFC 3339).
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every order matching the filters, newest first, as a file (staff only). CSV: one line per
/// order, `id,user,status,fulfillment_status,currency,total_amount,refunded_amount,created_at,
/// updated_at,item_count,items` with `items` flattened as `2 x Widget @ 100.00; 1 x Gadget @
/// 50.00`; NDJSON: one order per line as the API shows it. Streamed: the response starts at
/// once, and an error after it started ends the file early (check the line count).
#[utoipa::path(get, path = "/api/v1/orders/export/", tag = "orders", params(ExportParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "The file, with `Content-Disposition: attachment`", content(
            (String = "text/csv"),
            (String = "application/x-ndjson"),
        )),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may export orders", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_orders(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let get = |k: &str| params.get(k).map(String::as_str);
    let format = match get("format") {
        None => ExportFormat::Csv,
        Some(f) => ExportFormat::parse(f).ok_or_else(|| {
            ApiError::field("format", format!("must be {}", one_of(ExportFormat::ALL.iter().map(|f| f.as_str()))))
        })?,
    };
    let query = crate::routes::order_filters(&params)?;
    let export = s.som.export_orders(caller, query).await?;
    stream(export, format).await
}

/// The streamed file of `export`. The first batch is read before answering, so that a
/// database that is away is a 503 rather than an empty file.
pub(crate) async fn stream(mut export: OrderExport, format: ExportFormat) -> ApiResult<Response> {
    let first = export.next_batch().await?;
    let mut head = String::from(format.header());
    if let Some(batch) = &first {
        render(format, batch, &mut head);
    }
    let more = first.is_some();
    let rest = futures_util::stream::unfold((export, more), move |(mut export, more)| async move {
        if !more {
            return None;
        }
        match export.next_batch().await {
            Ok(Some(batch)) => {
                let mut chunk = String::with_capacity(batch.len() * 256);
                render(format, &batch, &mut chunk);
                Some((Ok(Bytes::from(chunk)), (export, true)))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "an export ended early");
                Some((Err(std::io::Error::other(e.to_string())), (export, false)))
            }
        }
    });
    // Fused: the compression layer may poll a finished body once more.
    let body =
        futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(Bytes::from(head)))).chain(rest).fuse();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let disposition = format!("attachment; filename=\"orders-{stamp}.{}\"", format.as_str());
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn render(format: ExportFormat, batch: &[Order], out: &mut String) {
    for order in batch {
        format.write(order, out);
    }
}
