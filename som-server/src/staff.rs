//! Refunds and the staff operations: users, everyone's notifications. Each handler extracts,
//! calls one OrderSystem method, renders; who may do what is decided in som-core.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use som_core::domain::NotificationStatus;
use som_core::domain::{NotificationId, OrderId, PaymentId, RefundInput, RefundStatus, UserId};

use crate::AppState;
use crate::dto::{
    NotificationCounts, NotificationResponse, RefundRequestBody, RefundResponse, StaffUserResponse, UserPatchRequest,
};
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, IdempotencyHeader, IdempotencyKey, JsonBody, path_id};
use crate::paging::{next_page_headers, page_limit};
use crate::schema::{NotificationStatusParam, one_of};

type ApiResult<T> = Result<T, ApiError>;

/// Refund a captured payment, fully or in part (staff only). The provider is asked at once;
/// if it cannot be reached the refund is recorded PENDING (202) and finished automatically —
/// do not ask again.
#[utoipa::path(post, path = "/api/v1/payments/{id}/refunds/", tag = "payments", security(("bearer" = [])),
    request_body = RefundRequestBody,
    params(("id" = i64, Path, minimum = 1, description = "Payment id"), IdempotencyHeader),
    responses(
        (status = 201, description = "The refund, SUCCEEDED", body = RefundResponse),
        (status = 202, description = "The refund, PENDING: the provider could not be reached; it is finished automatically with the same provider idempotency key", body = RefundResponse),
        (status = 402, description = "The provider declined the refund; the amount is available again", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may refund", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not a captured payment, or less left to refund than asked", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_refund(
    State(s): State<AppState>,
    Auth(caller): Auth,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RefundRequestBody>,
) -> ApiResult<impl IntoResponse> {
    let id: PaymentId = path_id(&id, "payment")?;
    let input = RefundInput { amount: req.amount.map(crate::dto::Decimal::into_text), reason: req.reason };
    let refund = s.som.refund_payment(caller, id).input(input).maybe_idempotency_key(key.as_deref()).await?;
    // PENDING: recorded, amount set aside, the provider's answer still to come (it is finished
    // automatically); asking again would make a second refund.
    let status = if refund.status == RefundStatus::Pending { StatusCode::ACCEPTED } else { StatusCode::CREATED };
    Ok((status, Json(RefundResponse::from(refund))))
}

/// A payment's refunds, oldest first (its owner or staff).
#[utoipa::path(get, path = "/api/v1/payments/{id}/refunds/", tag = "payments", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Payment id")),
    responses(
        (status = 200, description = "The refunds", body = [RefundResponse]),
        (status = 404, description = "No such payment, or another user's", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_refunds(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<RefundResponse>>> {
    let id: PaymentId = path_id(&id, "payment")?;
    Ok(Json(s.som.payment_refunds(caller, id).await?.into_iter().map(Into::into).collect()))
}

/// Query parameters of `GET /users/` (documentation; the handler parses them strictly).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct UserListParams {
    /// Only users whose username or email starts with this, case-insensitively.
    #[param(max_length = 254)]
    pub q: Option<String>,
    /// Page size, 1-1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The cursor from the previous page's `X-Next-Cursor`.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

/// Every account, by ascending id (staff only).
#[utoipa::path(get, path = "/api/v1/users/", tag = "staff", params(UserListParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of users; `Link` (rel=\"next\") and `X-Next-Cursor` when there are more", body = [StaffUserResponse]),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may list users", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_users(
    State(s): State<AppState>,
    Auth(caller): Auth,
    uri: Uri,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let limit =
        page_limit(params.get("limit"), som_core::MAX_ADMIN_PAGE_SIZE)?.unwrap_or(som_core::system::DEFAULT_PAGE_SIZE);
    let cursor = params
        .get("cursor")
        .map(|c| c.parse::<UserId>().map_err(|_| ApiError::field("cursor", "is not a valid cursor")))
        .transpose()?;
    let q = params.get("q").map(String::as_str);
    let query = som_core::UserListQuery { search: q.map(str::to_owned), cursor, limit: Some(limit) };
    let page = s.som.users_page(caller, query).await?;
    let mut headers = HeaderMap::new();
    if let Some(next) = &page.next_cursor {
        let get = |k: &str| params.get(k).map(String::as_str);
        next_page_headers(&mut headers, uri.path(), next, ["limit", "q"].map(|k| (k, get(k))));
    }
    let body: Vec<StaffUserResponse> = page.items.into_iter().map(Into::into).collect();
    Ok((headers, Json(body)))
}

/// One account (staff only).
#[utoipa::path(get, path = "/api/v1/users/{id}/", tag = "staff", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "User id")),
    responses(
        (status = 200, description = "The account", body = StaffUserResponse),
        (status = 403, description = "Only staff may read accounts", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_user(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<StaffUserResponse>> {
    let id: UserId = path_id(&id, "user")?;
    Ok(Json(s.som.account(caller, id).await?.into()))
}

/// Grant or revoke staff, enable or disable an account (staff only). Disabling ends every
/// session of the account at once.
#[utoipa::path(patch, path = "/api/v1/users/{id}/", tag = "staff", security(("bearer" = [])),
    request_body = UserPatchRequest,
    params(("id" = i64, Path, minimum = 1, description = "User id")),
    responses(
        (status = 200, description = "The updated account", body = StaffUserResponse),
        (status = 403, description = "Only staff may change accounts", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Staff cannot revoke their own rights or disable their own account", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn patch_user(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UserPatchRequest>,
) -> ApiResult<Json<StaffUserResponse>> {
    let id: UserId = path_id(&id, "user")?;
    Ok(Json(s.som.update_user(caller, id, req.is_staff, req.is_active).await?.into()))
}

/// Query parameters of `GET /notifications/` (documentation; the handler parses them strictly).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct NotificationListParams {
    /// Only notifications in this delivery state.
    #[param(inline)]
    pub status: Option<NotificationStatusParam>,
    /// Only notifications about this order.
    #[param(minimum = 1)]
    pub order: Option<i64>,
    /// Page size, 1-1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The cursor from the previous page's `X-Next-Cursor`.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

/// Every notification, oldest first (staff only).
#[utoipa::path(get, path = "/api/v1/notifications/", tag = "staff", params(NotificationListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of notifications; `Link` (rel=\"next\") and `X-Next-Cursor` when there are more", body = [NotificationResponse]),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may list notifications", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_notifications(
    State(s): State<AppState>,
    Auth(caller): Auth,
    uri: Uri,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let get = |k: &str| params.get(k).map(String::as_str);
    let limit =
        page_limit(params.get("limit"), som_core::MAX_ADMIN_PAGE_SIZE)?.unwrap_or(som_core::system::DEFAULT_PAGE_SIZE);
    let status = get("status")
        .map(|st| {
            NotificationStatus::parse(st).ok_or_else(|| {
                ApiError::field(
                    "status",
                    format!("must be {}", one_of(NotificationStatus::ALL.iter().map(|s| s.as_str()))),
                )
            })
        })
        .transpose()?;
    let order = get("order")
        .map(|o| o.parse::<OrderId>().map_err(|_| ApiError::field("order", "must be an order id")))
        .transpose()?;
    let cursor = get("cursor")
        .map(|c| c.parse::<NotificationId>().map_err(|_| ApiError::field("cursor", "is not a valid cursor")))
        .transpose()?;
    let query = som_core::NotificationListQuery { status, order, cursor, limit: Some(limit) };
    let page = s.som.notifications_page(caller, query).await?;
    let mut headers = HeaderMap::new();
    if let Some(next) = &page.next_cursor {
        next_page_headers(&mut headers, uri.path(), next, ["limit", "status", "order"].map(|k| (k, get(k))));
    }
    let body: Vec<NotificationResponse> = page.items.into_iter().map(Into::into).collect();
    Ok((headers, Json(body)))
}

/// Re-queue a dead notification for delivery (staff only).
#[utoipa::path(post, path = "/api/v1/notifications/{id}/retry/", tag = "staff", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Notification id")),
    responses(
        (status = 200, description = "The notification, pending again", body = NotificationResponse),
        (status = 403, description = "Only staff may retry notifications", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such notification", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The notification is not dead", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry_notification(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<NotificationResponse>> {
    let id: NotificationId = path_id(&id, "notification")?;
    Ok(Json(s.som.retry_notification(caller, id).await?.into()))
}

/// How many notifications are in each delivery state (staff only).
#[utoipa::path(get, path = "/api/v1/notifications/counts/", tag = "staff", security(("bearer" = [])),
    responses(
        (status = 200, description = "Counts per state", body = NotificationCounts),
        (status = 403, description = "Only staff may count notifications", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn notification_counts(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<NotificationCounts>> {
    Ok(Json(counts_of(s.som.notification_counts(caller).await?)))
}

/// What `POST /api/v1/notifications/retry-dead/` takes.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct RetryDeadRequest {
    /// The channel whose dead notifications to retry: `email`, `webhook`, `log`, …
    #[schema(min_length = 1, max_length = 64)]
    pub channel: String,
}

/// How many notifications were queued again.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RetryDeadResponse {
    /// Dead notifications of the channel now pending again.
    pub requeued: u64,
}

/// Re-queue every dead notification of one channel (staff only).
#[utoipa::path(post, path = "/api/v1/notifications/retry-dead/", tag = "staff", security(("bearer" = [])),
    request_body = RetryDeadRequest,
    responses(
        (status = 200, description = "How many were queued again (0 when none was dead)", body = RetryDeadResponse),
        (status = 400, description = "Invalid channel", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only staff may retry notifications", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry_dead_notifications(
    State(s): State<AppState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody<RetryDeadRequest>,
) -> ApiResult<Json<RetryDeadResponse>> {
    let requeued = s.som.retry_dead_notifications(caller, &body.channel).await?;
    Ok(Json(RetryDeadResponse { requeued }))
}

/// Orders of one window, by status, with their money per currency.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ActivityResponse {
    /// Start of the window.
    pub since: chrono::DateTime<chrono::Utc>,
    /// Orders per status (every status).
    #[schema(example = json!({"CREATED": 3, "PAID": 5, "CANCELLED": 0, "PARTIALLY_REFUNDED": 1, "REFUNDED": 0}))]
    pub orders: std::collections::BTreeMap<String, u64>,
    /// Per currency (only currencies with orders).
    pub money: Vec<CurrencyActivityResponse>,
}

/// Money of a window's orders in one currency.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CurrencyActivityResponse {
    /// ISO 4217 code.
    pub currency: String,
    /// What was captured for the orders that were paid (whatever was refunded of it since), as a
    /// decimal string.
    pub paid: String,
    /// What was refunded of them.
    pub refunded: String,
}

/// An authorisation waiting to be captured.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct HoldResponse {
    /// The payment.
    pub payment: i64,
    /// Its order.
    pub order: i64,
    /// What is held, as a decimal string.
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// When it runs out (it is then released and EXPIRED).
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The shop at a glance.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OverviewResponse {
    /// When it was read.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Orders placed since midnight UTC.
    pub today: ActivityResponse,
    /// Orders placed in the last 7 days.
    pub last_7_days: ActivityResponse,
    /// Payments waiting for the payer.
    pub payments_pending: u64,
    /// Payments authorised and not captured yet (manual capture).
    pub payments_authorized: u64,
    /// The authorisations that run out soonest (up to 10).
    pub authorizations_expiring: Vec<HoldResponse>,
    /// Refunds pending at the provider.
    pub refunds_pending: u64,
    /// Notifications per delivery state.
    pub notifications: NotificationCounts,
}

impl From<som_core::Activity> for ActivityResponse {
    fn from(a: som_core::Activity) -> Self {
        ActivityResponse {
            since: a.since,
            orders: a.orders.into_iter().map(|(s, n)| (s.as_str().to_owned(), n)).collect(),
            money: a
                .money
                .into_iter()
                .map(|m| CurrencyActivityResponse {
                    currency: m.currency,
                    paid: m.paid.amount_string(),
                    refunded: m.refunded.amount_string(),
                })
                .collect(),
        }
    }
}

fn counts_of(rows: Vec<(NotificationStatus, u64)>) -> NotificationCounts {
    let mut counts = NotificationCounts::default();
    for (status, n) in rows {
        match status {
            NotificationStatus::Pending => counts.pending = n,
            NotificationStatus::Sent => counts.sent = n,
            NotificationStatus::Dead => counts.dead = n,
            NotificationStatus::Skipped => counts.skipped = n,
        }
    }
    counts
}

/// Orders today and in the last 7 days by status, money paid and refunded per currency, and
/// the work waiting (staff only).
#[utoipa::path(get, path = "/api/v1/overview/", tag = "staff", security(("bearer" = [])),
    responses(
        (status = 200, description = "The overview", body = OverviewResponse),
        (status = 403, description = "Only staff may read the overview", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn overview(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<OverviewResponse>> {
    let o = s.som.overview(caller).await?;
    Ok(Json(OverviewResponse {
        at: o.at,
        today: o.today.into(),
        last_7_days: o.last_7_days.into(),
        payments_pending: o.payments_pending,
        payments_authorized: o.payments_authorized,
        authorizations_expiring: o
            .authorizations_expiring
            .into_iter()
            .map(|h| HoldResponse {
                payment: h.payment_id.get(),
                order: h.order_id.get(),
                amount: h.amount.amount_string(),
                currency: h.amount.currency().code().to_owned(),
                expires_at: h.expires_at,
            })
            .collect(),
        refunds_pending: o.refunds_pending,
        notifications: counts_of(o.notifications),
    }))
}
