//! Fulfilments and returns over HTTP. Each handler extracts, calls one OrderSystem method,
//! renders; who may do what, and when, is decided in som-core.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use som_core::domain::{FulfillmentId, FulfillmentStatus, OrderId, ReturnId, ReturnStatus};
use som_core::{FulfillmentInput, ReturnInput, ShipInput};

use crate::AppState;
use crate::dto::Decimal;
use crate::dto::fulfillment::*;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, JsonBody, OptionalJsonBody, path_id};
use crate::paging::{next_page_headers, page_limit};
use crate::schema::{FulfillmentStatusSchema, ReturnStatusSchema, one_of};

type ApiResult<T> = Result<T, ApiError>;

/// Make a fulfilment of an authorised or paid order's items (staff only): PENDING, to be
/// shipped. Concurrent fulfilments of the same items never hold more than was ordered.
#[utoipa::path(post, path = "/api/v1/orders/{id}/fulfillments/", tag = "fulfilment", security(("bearer" = [])),
    request_body(content = Option<CreateFulfillmentBody>, description = "Optional: leave it out to fulfil everything not yet in a fulfilment"),
    params(("id" = i64, Path, minimum = 1, description = "Order id")),
    responses(
        (status = 201, description = "The fulfilment, PENDING", body = FulfillmentResponse),
        (status = 400, description = "No items, a quantity below 1, a tracking URL that is not http(s)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may fulfil orders", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or another user's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is not authorised or paid, or more is asked than is left to fulfil", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An item that is not the order's, or one named twice", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_fulfillment(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    OptionalJsonBody(req): OptionalJsonBody<CreateFulfillmentBody>,
) -> ApiResult<impl IntoResponse> {
    let id: OrderId = path_id(&id, "order")?;
    let input = FulfillmentInput {
        items: req.items.map(lines),
        carrier: req.carrier,
        tracking_number: req.tracking_number,
        tracking_url: req.tracking_url,
    };
    let f = s.som.create_fulfillment(caller, id, input).await?;
    Ok((StatusCode::CREATED, Json(FulfillmentResponse::from(f))))
}

/// The order's fulfilments with their tracking, oldest first (its owner, or staff).
#[utoipa::path(get, path = "/api/v1/orders/{id}/fulfillments/", tag = "fulfilment", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Order id")),
    responses(
        (status = 200, description = "The fulfilments", body = [FulfillmentResponse]),
        (status = 404, description = "No such order, or another user's", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn order_fulfillments(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<FulfillmentResponse>>> {
    let id: OrderId = path_id(&id, "order")?;
    Ok(Json(s.som.order_fulfillments(caller, id).await?.into_iter().map(Into::into).collect()))
}

/// Query parameters of `GET /fulfillments/` (documentation; the handler parses them strictly).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct FulfillmentListParams {
    /// Only those in this status (PENDING: what is to ship).
    #[param(inline)]
    pub status: Option<FulfillmentStatusSchema>,
    /// Page size, 1-1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The cursor from the previous page's `X-Next-Cursor`.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

/// Query parameters of `GET /returns/` (documentation; the handler parses them strictly).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ReturnListParams {
    /// Only those in this status (REQUESTED and APPROVED are open).
    #[param(inline)]
    pub status: Option<ReturnStatusSchema>,
    /// Page size, 1-1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The cursor from the previous page's `X-Next-Cursor`.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

/// Every fulfilment, oldest first, optionally of one status (staff only).
#[utoipa::path(get, path = "/api/v1/fulfillments/", tag = "fulfilment", params(FulfillmentListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of fulfilments; `Link` (rel=\"next\") and `X-Next-Cursor` when there are more", body = [FulfillmentResponse]),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may list fulfilments", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_fulfillments(
    State(s): State<AppState>,
    Auth(caller): Auth,
    uri: Uri,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let (status, cursor, limit) =
        list_params(&params, FulfillmentStatus::parse, FulfillmentStatus::ALL.iter().map(|s| s.as_str()))?;
    let page = s.som.fulfillments_page(caller, status, cursor.map(FulfillmentId::new), limit).await?;
    let headers = page_headers(&uri, &params, page.next_cursor.as_deref());
    Ok((headers, Json(page.items.into_iter().map(FulfillmentResponse::from).collect::<Vec<_>>())))
}

/// One fulfilment (of the caller's own order; staff may read any).
#[utoipa::path(get, path = "/api/v1/fulfillments/{id}/", tag = "fulfilment", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Fulfilment id")),
    responses(
        (status = 200, description = "The fulfilment", body = FulfillmentResponse),
        (status = 404, description = "No such fulfilment, or another user's", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_fulfillment(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<FulfillmentResponse>> {
    let id: FulfillmentId = path_id(&id, "fulfillment")?;
    Ok(Json(s.som.fulfillment(caller, id).await?.into()))
}

/// Ship a PENDING fulfilment with its tracking (staff only): the owner is told "order shipped"
/// with the tracking; the order becomes PARTIALLY_FULFILLED or FULFILLED.
#[utoipa::path(post, path = "/api/v1/fulfillments/{id}/ship/", tag = "fulfilment", security(("bearer" = [])),
    request_body(content = Option<ShipBody>, description = "Optional: tracking, and whether to capture an authorised payment first"),
    params(("id" = i64, Path, minimum = 1, description = "Fulfilment id")),
    responses(
        (status = 200, description = "The fulfilment, SHIPPED", body = FulfillmentResponse),
        (status = 400, description = "A tracking URL that is not http(s), or text too long", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`capture` was asked and the provider declined it; nothing was shipped", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may ship", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such fulfilment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not PENDING; the order is not paid (an authorised one is shipped with `capture`); or what has shipped would be worth more than its payment captured", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn ship_fulfillment(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    OptionalJsonBody(req): OptionalJsonBody<ShipBody>,
) -> ApiResult<Json<FulfillmentResponse>> {
    let id: FulfillmentId = path_id(&id, "fulfillment")?;
    let input = ShipInput {
        carrier: req.carrier,
        tracking_number: req.tracking_number,
        tracking_url: req.tracking_url,
        capture: req.capture.unwrap_or(false),
    };
    Ok(Json(s.som.ship_fulfillment(caller, id, input).await?.into()))
}

/// Mark a SHIPPED fulfilment delivered (staff only): the owner is told; the order becomes
/// DELIVERED when every item is.
#[utoipa::path(post, path = "/api/v1/fulfillments/{id}/deliver/", tag = "fulfilment", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Fulfilment id")),
    responses(
        (status = 200, description = "The fulfilment, DELIVERED", body = FulfillmentResponse),
        (status = 403, description = "Only staff may mark fulfilments delivered", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such fulfilment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not SHIPPED", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn deliver_fulfillment(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<FulfillmentResponse>> {
    let id: FulfillmentId = path_id(&id, "fulfillment")?;
    Ok(Json(s.som.deliver_fulfillment(caller, id).await?.into()))
}

/// Cancel a PENDING fulfilment (staff only); its items may be fulfilled again.
#[utoipa::path(post, path = "/api/v1/fulfillments/{id}/cancel/", tag = "fulfilment", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Fulfilment id")),
    responses(
        (status = 200, description = "The fulfilment, CANCELLED", body = FulfillmentResponse),
        (status = 403, description = "Only staff may cancel fulfilments", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such fulfilment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not PENDING (already shipped or cancelled)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_fulfillment(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<FulfillmentResponse>> {
    let id: FulfillmentId = path_id(&id, "fulfillment")?;
    Ok(Json(s.som.cancel_fulfillment(caller, id).await?.into()))
}

/// Ask for a return of delivered items (the order's owner, or staff for them): REQUESTED, for
/// staff to approve or reject.
#[utoipa::path(post, path = "/api/v1/orders/{id}/returns/", tag = "returns", security(("bearer" = [])),
    request_body = CreateReturnBody,
    params(("id" = i64, Path, minimum = 1, description = "Order id")),
    responses(
        (status = 201, description = "The return, REQUESTED", body = ReturnResponse),
        (status = 400, description = "No items, or a quantity below 1", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or another user's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "More is asked than was delivered and is not in another return", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An item that is not the order's, or one named twice", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_return(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CreateReturnBody>,
) -> ApiResult<impl IntoResponse> {
    let id: OrderId = path_id(&id, "order")?;
    let r = s.som.request_return(caller, id, ReturnInput { items: lines(req.items), reason: req.reason }).await?;
    Ok((StatusCode::CREATED, Json(ReturnResponse::from(r))))
}

/// The order's returns, oldest first (its owner, or staff).
#[utoipa::path(get, path = "/api/v1/orders/{id}/returns/", tag = "returns", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Order id")),
    responses(
        (status = 200, description = "The returns", body = [ReturnResponse]),
        (status = 404, description = "No such order, or another user's", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn order_returns(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ReturnResponse>>> {
    let id: OrderId = path_id(&id, "order")?;
    Ok(Json(s.som.order_returns(caller, id).await?.into_iter().map(Into::into).collect()))
}

/// Every return, oldest first, optionally of one status (staff only; REQUESTED and APPROVED
/// are the open ones).
#[utoipa::path(get, path = "/api/v1/returns/", tag = "returns", params(ReturnListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of returns; `Link` (rel=\"next\") and `X-Next-Cursor` when there are more", body = [ReturnResponse]),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may list returns", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_returns(
    State(s): State<AppState>,
    Auth(caller): Auth,
    uri: Uri,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let (status, cursor, limit) =
        list_params(&params, ReturnStatus::parse, ReturnStatus::ALL.iter().map(|s| s.as_str()))?;
    let page = s.som.returns_page(caller, status, cursor.map(ReturnId::new), limit).await?;
    let headers = page_headers(&uri, &params, page.next_cursor.as_deref());
    Ok((headers, Json(page.items.into_iter().map(ReturnResponse::from).collect::<Vec<_>>())))
}

/// One return (of the caller's own order; staff may read any).
#[utoipa::path(get, path = "/api/v1/returns/{id}/", tag = "returns", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Return id")),
    responses(
        (status = 200, description = "The return", body = ReturnResponse),
        (status = 404, description = "No such return, or another user's", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_return(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ReturnResponse>> {
    let id: ReturnId = path_id(&id, "return")?;
    Ok(Json(s.som.get_return(caller, id).await?.into()))
}

/// Approve a REQUESTED return (staff only): the owner is told to send the items back.
#[utoipa::path(post, path = "/api/v1/returns/{id}/approve/", tag = "returns", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Return id")),
    responses(
        (status = 200, description = "The return, APPROVED", body = ReturnResponse),
        (status = 403, description = "Only staff may decide on returns", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such return", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not REQUESTED", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn approve_return(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ReturnResponse>> {
    let id: ReturnId = path_id(&id, "return")?;
    Ok(Json(s.som.approve_return(caller, id).await?.into()))
}

/// Reject a REQUESTED or APPROVED return with a note for the customer (staff only).
#[utoipa::path(post, path = "/api/v1/returns/{id}/reject/", tag = "returns", security(("bearer" = [])),
    request_body = RejectBody,
    params(("id" = i64, Path, minimum = 1, description = "Return id")),
    responses(
        (status = 200, description = "The return, REJECTED", body = ReturnResponse),
        (status = 400, description = "The note is blank or too long", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may decide on returns", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such return", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already received, refunded or rejected", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reject_return(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RejectBody>,
) -> ApiResult<Json<ReturnResponse>> {
    let id: ReturnId = path_id(&id, "return")?;
    Ok(Json(s.som.reject_return(caller, id, &req.note).await?.into()))
}

/// Receive an APPROVED return's items and refund them (staff only): one refund through the
/// payment's refund path — set aside with the receipt, paid out with its own provider key,
/// finished automatically after a crash. Receiving twice refunds once. The return becomes
/// REFUNDED when the refund succeeds; when the provider declines it (402) the return stays
/// RECEIVED and may be received again.
#[utoipa::path(post, path = "/api/v1/returns/{id}/receive/", tag = "returns", security(("bearer" = [])),
    request_body(content = Option<ReceiveBody>, description = "Optional: the amount to refund"),
    params(("id" = i64, Path, minimum = 1, description = "Return id")),
    responses(
        (status = 200, description = "The return, REFUNDED (or RECEIVED while its refund is under way, or without a refund)", body = ReturnResponse),
        (status = 400, description = "The amount is not a decimal in the order's currency", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "The provider declined the refund; the return stays RECEIVED", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may receive returns", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such return", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not APPROVED (or already received with its refund under way or done), or the amount is more than is left to refund", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn receive_return(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    OptionalJsonBody(req): OptionalJsonBody<ReceiveBody>,
) -> ApiResult<Json<ReturnResponse>> {
    let id: ReturnId = path_id(&id, "return")?;
    let amount = req.amount.map(Decimal::into_text);
    Ok(Json(s.som.receive_return(caller, id, amount.as_deref()).await?.into()))
}

/// A staff list's `status`, `cursor` and `limit`, each checked when present.
fn list_params<'a, S>(
    params: &HashMap<String, String>,
    parse: impl Fn(&str) -> Option<S>,
    names: impl IntoIterator<Item = &'a str>,
) -> ApiResult<(Option<S>, Option<i64>, Option<u32>)> {
    let limit = page_limit(params.get("limit"), som_core::MAX_ADMIN_PAGE_SIZE)?;
    let status = params
        .get("status")
        .map(|st| parse(st).ok_or_else(|| ApiError::field("status", format!("must be {}", one_of(names)))))
        .transpose()?;
    let cursor = params
        .get("cursor")
        .map(|c| {
            c.parse::<i64>().ok().filter(|c| *c > 0).ok_or_else(|| ApiError::field("cursor", "is not a valid cursor"))
        })
        .transpose()?;
    Ok((status, cursor, limit))
}

fn page_headers(uri: &Uri, params: &HashMap<String, String>, next: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(next) = next {
        let get = |k: &str| params.get(k).map(String::as_str);
        next_page_headers(&mut headers, uri.path(), next, ["limit", "status"].map(|k| (k, get(k))));
    }
    headers
}
