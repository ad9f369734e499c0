//! The OpenAPI 3.1 document, generated from the handlers and DTOs.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{dto, error, ops, routes};

/// The API description served at `/api/openapi.json` and `/api/schema/`.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "SOM — Smart Order Management", description = "Orders, payments and notifications. Authorize with `Bearer <access token>` from `POST /api/v1/token/`."),
    paths(
        routes::register, routes::me, routes::token, routes::refresh,
        routes::list_orders, routes::create_order, routes::latest_order, routes::get_order,
        routes::cancel_order, routes::order_history,
        routes::initiate_payment, routes::create_payment, routes::confirm_payment, routes::get_payment,
        ops::healthz, ops::readyz, ops::metrics_handler,
    ),
    components(schemas(
        dto::RegisterRequest, dto::UserResponse, dto::TokenRequest, dto::RefreshRequest, dto::TokenResponse,
        dto::OrderItemRequest, dto::CreateOrderRequest, dto::OrderItemResponse, dto::OrderResponse,
        dto::OrderEventResponse, dto::InitiatePaymentRequest, dto::ConfirmPaymentRequest, dto::PaymentResponse,
        dto::Health, error::Problem,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "accounts", description = "Registration and profile"),
        (name = "auth", description = "JWT access and refresh tokens"),
        (name = "orders", description = "Orders and their lifecycle"),
        (name = "payments", description = "Payments through the configured provider"),
        (name = "ops", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}
