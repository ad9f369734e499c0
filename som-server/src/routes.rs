//! The API handlers: extract, call one OrderSystem method, render.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use som_core::domain::{ItemInput, OrderId, OrderInput, OrderStatus, PaymentId, PaymentStatus, UserId};
use som_core::{OrderListQuery, Registration};

use crate::AppState;
use crate::dto::*;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Bearer, IdempotencyHeader, IdempotencyKey, JsonBody, path_id};
use crate::order_json::{OrderJson, OrderListJson};
use crate::paging::{next_page_headers, page_limit};
use crate::schema::{StatusParam, one_of};

type ApiResult<T> = Result<T, ApiError>;

/// Register a new account.
#[utoipa::path(post, path = "/api/v1/accounts/register/", tag = "accounts", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = UserResponse),
        (status = 429, description = "Too many requests from this address", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> ApiResult<impl IntoResponse> {
    let user =
        s.som.register(Registration { username: req.username, email: req.email, password: req.password }).await?;
    Ok((StatusCode::CREATED, Json(UserResponse::from(user))))
}

/// The caller's own account.
#[utoipa::path(get, path = "/api/v1/accounts/me/", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = UserResponse),
    ))]
pub async fn me(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<UserResponse>> {
    Ok(Json(s.som.profile(caller).await?.into()))
}

/// Log in: a new access + refresh token pair.
#[utoipa::path(post, path = "/api/v1/token/", tag = "auth", request_body = TokenRequest,
    responses(
        (status = 200, description = "Token pair", body = TokenResponse),
        (status = 401, description = "Wrong credentials, or a disabled account", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address, or too many failed logins for this username (see Retry-After)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn token(State(s): State<AppState>, JsonBody(req): JsonBody<TokenRequest>) -> ApiResult<Json<TokenResponse>> {
    let pair = s.som.login(&req.username, &req.password).await?;
    Ok(Json(TokenResponse { access: pair.access, refresh: pair.refresh }))
}

/// Exchange a refresh token (single use) for a new pair.
#[utoipa::path(post, path = "/api/v1/token/refresh/", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New token pair", body = TokenResponse),
        (status = 401, description = "Invalid, expired or reused refresh token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn refresh(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let pair = s.som.refresh(&req.refresh).await?;
    Ok(Json(TokenResponse { access: pair.access, refresh: pair.refresh }))
}

/// Log out: end the session of a refresh token. The refresh token and every access token of
/// its session stop working at once. Ending a session that already ended also answers 204.
#[utoipa::path(post, path = "/api/v1/token/revoke/", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 204, description = "The session has ended"),
        (status = 401, description = "Not a valid refresh token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke(State(s): State<AppState>, JsonBody(req): JsonBody<RefreshRequest>) -> ApiResult<StatusCode> {
    s.som.logout(&req.refresh).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// End every session of the caller (log out everywhere, this session included).
#[utoipa::path(post, path = "/api/v1/token/revoke-all/", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session has ended"),
    ))]
pub async fn revoke_all(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<StatusCode> {
    let user = caller.user_id().ok_or_else(|| ApiError::not_found("no account"))?;
    s.som.revoke_sessions(caller, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change the caller's password. Every other session of the account ends; this one stays.
#[utoipa::path(post, path = "/api/v1/accounts/password/", tag = "accounts", security(("bearer" = [])),
    request_body = PasswordChangeRequest,
    responses(
        (status = 204, description = "Password changed; other sessions ended"),
        (status = 429, description = "Too many wrong current passwords for this account, or requests from this address", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_password(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    JsonBody(req): JsonBody<PasswordChangeRequest>,
) -> ApiResult<StatusCode> {
    // The token itself, not just its caller: the session presenting it is the one that stays.
    s.som.change_password(&token, &req.current_password, &req.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query parameters of `GET /orders/` (documentation; the handler parses them strictly).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Page size, 1-200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The cursor from the previous page's `Link: rel="next"`.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
    /// Only orders in this status.
    #[param(inline)]
    pub status: Option<StatusParam>,
    /// Staff only: whose orders (others always see their own).
    #[param(minimum = 1)]
    pub user: Option<i64>,
    /// Staff only: `true` lists every user's orders (`user` is then ignored); others get 403.
    pub all: Option<bool>,
    /// Only orders placed at or after this time (RFC 3339).
    pub created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Only orders placed before this time (RFC 3339).
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Staff only: the order with this id, or orders whose owner's username or email contains
    /// this text (case-insensitively); with `all=true` across every user. Others get 403.
    #[param(max_length = 254)]
    pub q: Option<String>,
}

/// The caller's orders, newest first, paginated by cursor. Staff may list another user's
/// (`?user=`) or everyone's (`?all=true`).
#[utoipa::path(get, path = "/api/v1/orders/", tag = "orders", params(ListParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of orders; when there are more, the `Link` header (rel=\"next\") points at the next page and `X-Next-Cursor` holds the cursor to pass as `?cursor=`",
            body = [OrderResponse], headers(
                ("Link" = String, description = "<url>; rel=\"next\" when there are more"),
                ("X-Next-Cursor" = String, description = "The `cursor` of the next page, when there are more"),
            )),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`all=true` from a caller who is not staff", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_orders(
    State(s): State<AppState>,
    Auth(caller): Auth,
    uri: Uri,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    // Present parameters must be valid; an empty value is not "absent".
    let get = |k: &str| params.get(k).map(String::as_str);
    let limit = page_limit(params.get("limit"), som_core::system::MAX_PAGE_SIZE)?;
    let filters = order_filters(&params)?;
    let all_users = get("all")
        .map(|a| match a {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ApiError::field("all", "must be true or false")),
        })
        .transpose()?
        .unwrap_or(false);
    let query = OrderListQuery {
        user: filters.user,
        status: filters.status,
        cursor: get("cursor").map(str::to_owned),
        limit,
        all_users,
        created_after: filters.created_after,
        created_before: filters.created_before,
        search: get("q").map(str::to_owned),
    };
    let page = s.som.list_orders(caller, query).await?;
    let mut headers = HeaderMap::new();
    if let Some(next) = &page.next_cursor {
        next_page_headers(
            &mut headers,
            uri.path(),
            next,
            ["limit", "status", "user", "all", "created_after", "created_before"].map(|k| (k, get(k))),
        );
    }
    Ok((headers, OrderListJson(page.items)))
}

/// The order filters a list and an export share (`status`, `user`, `created_after`,
/// `created_before`): present parameters must be valid; an empty value is not "absent".
pub(crate) fn order_filters(params: &HashMap<String, String>) -> ApiResult<som_core::OrderExportQuery> {
    let get = |k: &str| params.get(k).map(String::as_str);
    let status = get("status")
        .map(|st| {
            OrderStatus::parse(st).ok_or_else(|| {
                ApiError::field("status", format!("must be {}", one_of(OrderStatus::ALL.iter().map(|s| s.as_str()))))
            })
        })
        .transpose()?;
    let user = get("user")
        .map(|u| u.parse::<UserId>().map_err(|_| ApiError::field("user", "must be a user id")))
        .transpose()?;
    let time = |key: &str| {
        get(key)
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|_| ApiError::field(key, "must be an RFC 3339 time, e.g. 2026-11-30T09:00:00Z"))
            })
            .transpose()
    };
    Ok(som_core::OrderExportQuery {
        user,
        status,
        created_after: time("created_after")?,
        created_before: time("created_before")?,
    })
}

/// Place an order; the total is computed by the server.
#[utoipa::path(post, path = "/api/v1/orders/", tag = "orders", request_body = CreateOrderRequest, security(("bearer" = [])),
    params(IdempotencyHeader),
    responses(
        (status = 201, description = "Order created", body = OrderResponse),
        (status = 409, description = "A request with this idempotency key is in progress", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_order(
    State(s): State<AppState>,
    Auth(caller): Auth,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(req): JsonBody<CreateOrderRequest>,
) -> ApiResult<impl IntoResponse> {
    let input = OrderInput {
        items: req
            .items
            .into_iter()
            .map(|i| ItemInput { name: i.name, quantity: i.quantity, price: i.price.into_text() })
            .collect(),
        currency: req.currency,
    };
    let order = s.som.create_order(caller, input).maybe_idempotency_key(key.as_deref()).await?;
    Ok((StatusCode::CREATED, OrderJson(order)))
}

/// The caller's newest order.
#[utoipa::path(get, path = "/api/v1/orders/latest/", tag = "orders", security(("bearer" = [])),
    responses(
        (status = 200, description = "The newest order", body = OrderResponse),
        (status = 404, description = "No orders yet", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn latest_order(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<OrderJson> {
    Ok(OrderJson(s.som.latest_order(caller, None).await?))
}

/// One order (the caller's own; staff may read any).
#[utoipa::path(get, path = "/api/v1/orders/{id}/", tag = "orders", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderResponse),
        (status = 404, description = "No such order, or another user's", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_order(State(s): State<AppState>, Auth(caller): Auth, Path(id): Path<String>) -> ApiResult<OrderJson> {
    let id: OrderId = path_id(&id, "order")?;
    Ok(OrderJson(s.som.order(caller, id).await?))
}

/// Cancel an unpaid order (voids its pending payment).
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel/", tag = "orders", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Order id"), IdempotencyHeader),
    responses(
        (status = 200, description = "The cancelled order", body = OrderResponse),
        (status = 404, description = "No such order, or another user's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is not CREATED", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_order(
    State(s): State<AppState>,
    Auth(caller): Auth,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
) -> ApiResult<OrderJson> {
    let id: OrderId = path_id(&id, "order")?;
    Ok(OrderJson(s.som.cancel_order(caller, id).maybe_idempotency_key(key.as_deref()).await?))
}

/// The order's status changes, oldest first.
#[utoipa::path(get, path = "/api/v1/orders/{id}/history/", tag = "orders", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Order id")),
    responses(
        (status = 200, description = "The audit trail", body = [OrderEventResponse]),
        (status = 404, description = "No such order, or another user's", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn order_history(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<OrderEventResponse>>> {
    let id: OrderId = path_id(&id, "order")?;
    Ok(Json(s.som.order_history(caller, id).await?.into_iter().map(Into::into).collect()))
}

/// Start paying an order. Idempotent: returns the order's pending or successful payment if it
/// has one.
#[utoipa::path(post, path = "/api/v1/payments/initiate/", tag = "payments", request_body = InitiatePaymentRequest,
    security(("bearer" = [])),
    params(IdempotencyHeader),
    responses(
        (status = 200, description = "The payment", body = PaymentResponse),
        (status = 402, description = "The provider declined", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or another user's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is paid or cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn initiate_payment(
    State(s): State<AppState>,
    Auth(caller): Auth,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(req): JsonBody<InitiatePaymentRequest>,
) -> ApiResult<Json<PaymentResponse>> {
    let order_id = req.order_id.get().ok_or_else(|| ApiError::field("order_id", "must be a positive integer"))?;
    let payment = s
        .som
        .initiate_payment(caller, OrderId::new(order_id))
        .maybe_method(req.method.as_deref())
        .maybe_capture(req.capture.map(|c| c.0))
        .maybe_idempotency_key(key.as_deref())
        .await?;
    Ok(Json(payment.into()))
}

/// Same as `POST /payments/initiate/`.
#[utoipa::path(post, path = "/api/v1/payments/", tag = "payments", request_body = InitiatePaymentRequest,
    security(("bearer" = [])),
    params(IdempotencyHeader),
    responses(
        (status = 200, description = "The payment", body = PaymentResponse),
        (status = 404, description = "No such order, or another user's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is paid or cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_payment(
    state: State<AppState>,
    auth: Auth,
    key: IdempotencyKey,
    body: JsonBody<InitiatePaymentRequest>,
) -> ApiResult<Json<PaymentResponse>> {
    initiate_payment(state, auth, key, body).await
}

/// Confirm a pending payment: captured (the order becomes PAID), or — initiated with
/// `capture: "manual"` — authorised (payment and order AUTHORIZED, to be captured or voided). Confirming a
/// successful payment again returns it unchanged. When the payer must act first (3-D Secure)
/// the payment stays PENDING and is returned with 202, its `next_action` and `client_secret`:
/// the front end finishes it with the provider's library, and the payment completes when the
/// provider reports the outcome (its webhook) or when it is confirmed again.
#[utoipa::path(post, path = "/api/v1/payments/confirm/", tag = "payments", request_body = ConfirmPaymentRequest,
    security(("bearer" = [])),
    params(IdempotencyHeader),
    responses(
        (status = 200, description = "The payment, captured (SUCCESS) or authorised (AUTHORIZED)", body = PaymentResponse),
        (status = 202, description = "Still PENDING: the payer must act (see next_action), or the provider is processing", body = PaymentResponse),
        (status = 402, description = "Declined; the order stays payable", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payment, or another user's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The payment failed or was cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn confirm_payment(
    State(s): State<AppState>,
    Auth(caller): Auth,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(req): JsonBody<ConfirmPaymentRequest>,
) -> ApiResult<impl IntoResponse> {
    let id = req.payment_id.get().ok_or_else(|| ApiError::field("payment_id", "must be a positive integer"))?;
    let payment = s.som.confirm_payment(caller, PaymentId::new(id)).maybe_idempotency_key(key.as_deref()).await?;
    let status = if payment.status == PaymentStatus::Pending { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(PaymentResponse::from(payment))))
}

/// Stripe's events (configure this URL as a webhook endpoint in Stripe's dashboard with the
/// events `payment_intent.succeeded`, `payment_intent.payment_failed`, `refund.created`,
/// `refund.updated` and `charge.refunded`). The body is checked against `Stripe-Signature`
/// with `SOM_STRIPE_WEBHOOK_SECRET` (HMAC-SHA256, five minutes' tolerance); each event is
/// applied once — a redelivery is acknowledged and changes nothing. Events of other types or
/// for payments SOM does not know are acknowledged and logged.
#[utoipa::path(post, path = "/api/v1/payments/webhooks/stripe/", tag = "payments",
    request_body(content = Object, content_type = "application/json", description = "A Stripe Event object, exactly as Stripe sent it"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix time>,v1=<hex HMAC-SHA256 of \"t.body\">[,v1=…]")),
    responses(
        (status = 200, description = "Received: applied, duplicate, ignored, or mismatch (it contradicts the payment; nothing changed)", body = ProviderEventReceipt),
        (status = 400, description = "Unsigned, wrongly signed, stale or unreadable: nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Stripe is not the configured provider, or SOM_STRIPE_WEBHOOK_SECRET is not set", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stripe_webhook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<ProviderEventReceipt>> {
    let signature = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or_default())
        .ok_or_else(|| ApiError::field("Stripe-Signature", "the header is required"))?;
    let receipt = s.som.receive_provider_event("stripe", &body, signature).await?;
    Ok(Json(receipt.into()))
}

/// One payment (the caller's own; staff may read any).
#[utoipa::path(get, path = "/api/v1/payments/{id}/", tag = "payments", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Payment id")),
    responses(
        (status = 200, description = "The payment", body = PaymentResponse),
        (status = 404, description = "No such payment, or another user's", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_payment(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<PaymentResponse>> {
    let id: PaymentId = path_id(&id, "payment")?;
    Ok(Json(s.som.payment(caller, id).await?.into()))
}
