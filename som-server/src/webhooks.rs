//! Webhook endpoints, their delivery log, and redelivery (staff only). Each handler extracts,
//! calls one OrderSystem method, renders; the rules are in som-core.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use som_core::domain::{DeliveryId, EndpointId};
use som_core::{DeliveryListQuery, EndpointInput, EndpointPatch};

use crate::AppState;
use crate::dto::webhooks::{
    CreateEndpointBody, DeliveryResponse, EndpointResponse, PatchEndpointBody, RedeliverBody, RedeliveryResponse,
    RotateSecretBody,
};
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, JsonBody, OptionalJsonBody, path_id};
use crate::paging::{next_page_headers, page_limit};

type ApiResult<T> = Result<T, ApiError>;

/// Make a webhook endpoint (staff only). It receives the events that happen from now on,
/// each `POST`ed as a CloudEvent signed with its secret (`SOM-Signature`); the secret is in
/// this response only.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/", tag = "webhooks", security(("bearer" = [])),
    request_body = CreateEndpointBody,
    responses(
        (status = 201, description = "The endpoint, with its secret", body = EndpointResponse),
        (status = 400, description = "A URL that is not https (or http to this machine), a private address, an unknown event type", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may manage webhook endpoints", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Webhook delivery is off on this server, or there are 100 endpoints already", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_endpoint(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(req): JsonBody<CreateEndpointBody>,
) -> ApiResult<impl IntoResponse> {
    let input = EndpointInput { url: req.url, events: req.events, description: req.description };
    let endpoint = s.som.create_webhook_endpoint(caller, input).await?;
    Ok((StatusCode::CREATED, Json(EndpointResponse::with_secret(endpoint))))
}

/// Query parameters of the staff lists of this module (documentation; the handlers parse
/// them strictly).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct EndpointListParams {
    /// Page size, 1-1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The cursor from the previous page's `X-Next-Cursor`.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

fn cursor<T: std::str::FromStr>(params: &HashMap<String, String>) -> ApiResult<Option<T>> {
    params
        .get("cursor")
        .map(|c| c.parse::<T>().map_err(|_| ApiError::field("cursor", "is not a valid cursor")))
        .transpose()
}

/// Every webhook endpoint, by ascending id (staff only; secrets are not shown).
#[utoipa::path(get, path = "/api/v1/webhook-endpoints/", tag = "webhooks", params(EndpointListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of endpoints; `Link` (rel=\"next\") and `X-Next-Cursor` when there are more", body = [EndpointResponse]),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may manage webhook endpoints", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_endpoints(
    State(s): State<AppState>,
    Auth(caller): Auth,
    uri: Uri,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let limit = page_limit(params.get("limit"), som_core::MAX_ADMIN_PAGE_SIZE)?;
    let page = s.som.webhook_endpoints(caller, cursor::<EndpointId>(&params)?, limit).await?;
    let mut headers = HeaderMap::new();
    if let Some(next) = &page.next_cursor {
        next_page_headers(&mut headers, uri.path(), next, [("limit", params.get("limit").map(String::as_str))]);
    }
    let body: Vec<EndpointResponse> = page.items.into_iter().map(EndpointResponse::of).collect();
    Ok((headers, Json(body)))
}

/// One webhook endpoint (staff only; its secret is not shown).
#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}/", tag = "webhooks", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointResponse),
        (status = 403, description = "Only staff may manage webhook endpoints", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_endpoint(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointResponse>> {
    let id: EndpointId = path_id(&id, "endpoint")?;
    Ok(Json(EndpointResponse::of(s.som.webhook_endpoint(caller, id).await?)))
}

/// Change an endpoint's URL, events or description, or disable or enable it (staff only).
/// Enabling an endpoint SOM disabled resumes its deliveries; redeliver what it missed.
#[utoipa::path(patch, path = "/api/v1/webhook-endpoints/{id}/", tag = "webhooks", security(("bearer" = [])),
    request_body = PatchEndpointBody,
    params(("id" = i64, Path, minimum = 1, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointResponse),
        (status = 400, description = "A refused URL or an unknown event type", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may manage webhook endpoints", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A new URL for an endpoint made from SOM_WEBHOOK_URLS", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn patch_endpoint(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PatchEndpointBody>,
) -> ApiResult<Json<EndpointResponse>> {
    let id: EndpointId = path_id(&id, "endpoint")?;
    let patch = EndpointPatch { url: req.url, events: req.events, description: req.description, enabled: req.enabled };
    Ok(Json(EndpointResponse::of(s.som.update_webhook_endpoint(caller, id, patch).await?)))
}

/// Delete an endpoint with its delivery log (staff only); what was still to be delivered to
/// it is dropped.
#[utoipa::path(delete, path = "/api/v1/webhook-endpoints/{id}/", tag = "webhooks", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Endpoint id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Only staff may manage webhook endpoints", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_endpoint(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: EndpointId = path_id(&id, "endpoint")?;
    s.som.delete_webhook_endpoint(caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give an endpoint a new secret (staff only). The old one keeps signing beside it for
/// `overlap` seconds: each call then carries two `v1` signatures, so receivers can switch
/// without missing an event.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/rotate-secret/", tag = "webhooks", security(("bearer" = [])),
    request_body(content = Option<RotateSecretBody>, description = "Optional: leave it out for a day's overlap"),
    params(("id" = i64, Path, minimum = 1, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint, with its new secret", body = EndpointResponse),
        (status = 400, description = "An overlap above 7 days", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may manage webhook endpoints", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The endpoint is signed with SOM_WEBHOOK_SECRET (from SOM_WEBHOOK_URLS), or the last rotation's overlap still runs (rotate with overlap 0)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rotate_secret(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    OptionalJsonBody(req): OptionalJsonBody<RotateSecretBody>,
) -> ApiResult<Json<EndpointResponse>> {
    let id: EndpointId = path_id(&id, "endpoint")?;
    let overlap = match req.overlap {
        Some(secs) if secs >= 0 => Some(Duration::from_secs(secs.unsigned_abs())),
        Some(_) => return Err(ApiError::field("overlap", "must be 0 to 604800 seconds")),
        None => None,
    };
    let endpoint = s.som.rotate_webhook_secret(caller, id, overlap).await?;
    Ok(Json(EndpointResponse::with_secret(endpoint)))
}

/// Query parameters of `GET /webhook-endpoints/{id}/deliveries/` (documentation; the handler
/// parses them strictly).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DeliveryListParams {
    /// Only `succeeded` or `failed` attempts.
    #[param(pattern = "^(succeeded|failed)$")]
    pub status: Option<String>,
    /// Only attempts to deliver events of this type (`som.order.created`, …).
    #[param(example = "som.order.created")]
    pub event_type: Option<String>,
    /// Only attempts to deliver this event.
    #[param(max_length = 300)]
    pub event_id: Option<String>,
    /// Page size, 1-1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The cursor from the previous page's `X-Next-Cursor`.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

/// An endpoint's delivery log, newest first (staff only): each attempt with the endpoint's
/// HTTP status, latency, the start of its answer, or the error.
#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}/deliveries/", tag = "webhooks", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Endpoint id"), DeliveryListParams),
    responses(
        (status = 200, description = "A page of delivery attempts; `Link` (rel=\"next\") and `X-Next-Cursor` when there are more", body = [DeliveryResponse]),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may read deliveries", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_deliveries(
    State(s): State<AppState>,
    Auth(caller): Auth,
    uri: Uri,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let id: EndpointId = path_id(&id, "endpoint")?;
    let query = DeliveryListQuery {
        status: params.get("status").cloned(),
        event_type: params.get("event_type").cloned(),
        event_id: params.get("event_id").cloned(),
        cursor: cursor::<DeliveryId>(&params)?,
        limit: page_limit(params.get("limit"), som_core::MAX_ADMIN_PAGE_SIZE)?,
    };
    let page = s.som.webhook_deliveries(caller, id, query).await?;
    let mut headers = HeaderMap::new();
    if let Some(next) = &page.next_cursor {
        let get = |k: &str| params.get(k).map(String::as_str);
        next_page_headers(
            &mut headers,
            uri.path(),
            next,
            ["limit", "status", "event_type", "event_id"].map(|k| (k, get(k))),
        );
    }
    let body: Vec<DeliveryResponse> = page.items.into_iter().map(Into::into).collect();
    Ok((headers, Json(body)))
}

/// Deliver an event again (staff only): to one endpoint, or to every enabled endpoint
/// subscribed to its type. Receivers recognise a repeat by the event's `id`.
#[utoipa::path(post, path = "/api/v1/events/{id}/redeliver/", tag = "webhooks", security(("bearer" = [])),
    request_body(content = Option<RedeliverBody>, description = "Optional: leave it out to redeliver to every subscribed endpoint"),
    params(("id" = String, Path, max_length = 300, description = "The event's id (`order_created:order:42`: the CloudEvent's `id`, the `SOM-Event-Id` header, a delivery's `event_id`)")),
    responses(
        (status = 202, description = "Queued", body = RedeliveryResponse),
        (status = 403, description = "Only staff may redeliver events", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event or endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Webhook delivery is off, or the endpoint is disabled or does not receive the event's type", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn redeliver(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    OptionalJsonBody(req): OptionalJsonBody<RedeliverBody>,
) -> ApiResult<impl IntoResponse> {
    let endpoint = match req.endpoint_id {
        Some(raw) if raw >= 1 => Some(EndpointId::new(raw)),
        Some(_) => return Err(ApiError::field("endpoint_id", "must be a positive integer id")),
        None => None,
    };
    let queued = s.som.redeliver_event(caller, &id, endpoint).await?;
    Ok((StatusCode::ACCEPTED, Json(RedeliveryResponse::from(queued))))
}
