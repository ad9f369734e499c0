//! The OpenAPI 3.1 document, generated from the handlers and DTOs.

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::{capture, dto, error, export, fulfillment, ops, routes, schema, staff, webhooks};

/// The API description served at `/api/openapi.json` and `/api/schema/`.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "SOM — Smart Order Management", description = "Orders, payments and notifications. Authorize with `Bearer <access token>` from `POST /api/v1/token/`."),
    paths(
        routes::register, routes::me, routes::change_password, routes::token, routes::refresh,
        routes::revoke, routes::revoke_all,
        routes::list_orders, routes::create_order, routes::latest_order, routes::get_order,
        routes::cancel_order, routes::order_history, export::export_orders,
        routes::initiate_payment, routes::create_payment, routes::confirm_payment, routes::get_payment,
        routes::stripe_webhook,
        staff::create_refund, staff::list_refunds, capture::capture_payment, capture::void_payment,
        fulfillment::create_fulfillment, fulfillment::order_fulfillments, fulfillment::list_fulfillments,
        fulfillment::get_fulfillment, fulfillment::ship_fulfillment, fulfillment::deliver_fulfillment,
        fulfillment::cancel_fulfillment, fulfillment::create_return, fulfillment::order_returns,
        fulfillment::list_returns, fulfillment::get_return, fulfillment::approve_return, fulfillment::reject_return,
        fulfillment::receive_return,
        staff::list_users, staff::get_user, staff::patch_user,
        staff::list_notifications, staff::notification_counts, staff::retry_notification,
        staff::retry_dead_notifications, staff::overview,
        webhooks::create_endpoint, webhooks::list_endpoints, webhooks::get_endpoint, webhooks::patch_endpoint,
        webhooks::delete_endpoint, webhooks::rotate_secret, webhooks::list_deliveries, webhooks::redeliver,
        ops::healthz, ops::readyz, ops::metrics_handler,
    ),
    components(schemas(
        dto::RegisterRequest, dto::UserResponse, dto::TokenRequest, dto::RefreshRequest, dto::TokenResponse,
        dto::PasswordChangeRequest,
        dto::OrderItemRequest, dto::CreateOrderRequest, dto::OrderItemResponse, dto::OrderResponse,
        dto::OrderEventResponse, dto::InitiatePaymentRequest, dto::ConfirmPaymentRequest, dto::PaymentResponse,
        dto::Health, dto::ReplicaHealth, schema::PaymentStatusSchema, schema::StatusParam, error::Problem,
        dto::RefundRequestBody, dto::RefundResponse, capture::CaptureRequestBody, schema::RefundStatusSchema, dto::UserPatchRequest,
        dto::StaffUserResponse, dto::NotificationResponse, dto::NotificationCounts, dto::ProviderEventReceipt,
        dto::fulfillment::ItemLine, dto::fulfillment::CreateFulfillmentBody, dto::fulfillment::ShipBody,
        dto::fulfillment::FulfillmentResponse, dto::fulfillment::CreateReturnBody, dto::fulfillment::RejectBody,
        dto::fulfillment::ReceiveBody, dto::fulfillment::ReturnResponse,
        schema::FulfillmentStatusSchema, schema::ReturnStatusSchema, schema::FulfillmentStateSchema,
        dto::webhooks::CreateEndpointBody, dto::webhooks::PatchEndpointBody, dto::webhooks::RotateSecretBody,
        dto::webhooks::RedeliverBody, dto::webhooks::EndpointResponse, dto::webhooks::DeliveryResponse,
        dto::webhooks::RedeliveryResponse, dto::webhooks::EventData, dto::webhooks::EventItem,
        dto::webhooks::EventTracking,
    )),
    modifiers(&BearerAuth, &StandardResponses, &Links),
    tags(
        (name = "accounts", description = "Registration and profile"),
        (name = "auth", description = "JWT access and refresh tokens"),
        (name = "orders", description = "Orders and their lifecycle"),
        (name = "payments", description = "Payments and refunds through the configured provider"),
        (name = "fulfilment", description = "Shipping an order's items in parcels with tracking (staff act, owners read)"),
        (name = "returns", description = "Delivered items sent back, ending in a refund (owners ask, staff decide)"),
        (name = "staff", description = "Staff operations: accounts and notifications (403 for everyone else)"),
        (name = "webhooks", description = "Endpoints that receive SOM's events as signed CloudEvents, their delivery log and redelivery (staff only). Each event type's body is documented as a schema named after the type (`som.order.created`, …)"),
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

fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = (&String, &mut Operation)> {
    openapi.paths.paths.iter_mut().flat_map(|(path, item)| {
        [item.get.as_mut(), item.post.as_mut(), item.patch.as_mut(), item.delete.as_mut()]
            .into_iter()
            .flatten()
            .map(move |op| (path, op))
    })
}

/// Adds the error responses every operation of a kind can give, so each annotation lists only
/// its own: 401 where a token is required, 400/413/415 where a JSON body is read, 400/409/422
/// where an `Idempotency-Key` is honoured, 503 wherever storage is involved.
struct StandardResponses;

impl Modify for StandardResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        crate::error::PROBLEM_JSON,
                        ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
                    )
                    .build(),
            )
        };
        for (path, op) in operations(openapi) {
            let mut add = |status: &str, description: &str| {
                op.responses.responses.entry(status.to_owned()).or_insert_with(|| problem(description));
            };
            if !path.starts_with("/api/v1/") {
                continue;
            }
            add("503", "Storage unavailable; retry");
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            if secured {
                add("401", "Missing, invalid or expired access token");
            }
            if op.request_body.is_some() {
                add("400", "Malformed JSON, missing or invalid fields");
                add("413", "Body too large");
                add("415", "Body is not JSON");
            }
            let idempotent = op.parameters.as_ref().is_some_and(|ps| ps.iter().any(|p| p.name == "Idempotency-Key"));
            if idempotent {
                add("400", "Invalid Idempotency-Key");
                add("409", "A request with this Idempotency-Key is in progress, or the state forbids it");
                add("422", "Idempotency-Key reused with a different request");
            }
        }
    }
}

/// OpenAPI links, so that clients (and stateful testers) can follow an order from creation to
/// payment: create order → get / cancel / history / initiate payment → confirm / get payment.
struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let order_links = [
            ("GetOrder", "get_order", Some(("id", "$response.body#/id")), None),
            ("OrderHistory", "order_history", Some(("id", "$response.body#/id")), None),
            ("CancelOrder", "cancel_order", Some(("id", "$response.body#/id")), None),
            (
                "InitiatePayment",
                "initiate_payment",
                None,
                Some(serde_json::json!({ "order_id": "$response.body#/id" })),
            ),
        ];
        let payment_links = [
            (
                "ConfirmPayment",
                "confirm_payment",
                None,
                Some(serde_json::json!({ "payment_id": "$response.body#/id" })),
            ),
            ("GetPayment", "get_payment", Some(("id", "$response.body#/id")), None),
            ("GetPaidOrder", "get_order", Some(("id", "$response.body#/order")), None),
        ];
        let targets: [(&str, &str, &[_]); 3] = [
            ("/api/v1/orders/", "201", &order_links),
            ("/api/v1/payments/initiate/", "200", &payment_links),
            ("/api/v1/payments/", "200", &payment_links),
        ];
        for (path, status, links) in targets {
            let Some(op) = openapi.paths.paths.get_mut(path).and_then(|item| item.post.as_mut()) else { continue };
            let Some(RefOr::T(response)) = op.responses.responses.get_mut(status) else { continue };
            for (name, operation_id, parameter, body) in links {
                let mut link = LinkBuilder::new().operation_id(*operation_id);
                if let Some((param, expr)) = parameter {
                    link = link.parameter(*param, *expr);
                }
                if let Some(body) = body {
                    link = link.request_body(Some(body.clone()));
                }
                response.links.insert((*name).to_owned(), RefOr::T(link.build()));
            }
        }
    }
}

/// The OpenAPI document as JSON for a server whose provider takes `payment_methods` (any
/// method when empty). Every limit in it comes from som-core's constants, so the document and
/// the rules cannot drift apart.
pub fn openapi_json_for(payment_methods: &[String]) -> serde_json::Value {
    let mut doc = openapi_json();
    apply_limits(&mut doc, payment_methods);
    add_event_schemas(&mut doc);
    doc
}

/// One schema per event type, named after it (`som.order.created`): the CloudEvents envelope
/// with that `type`, and the `data` fields events of the type always carry.
fn add_event_schemas(doc: &mut serde_json::Value) {
    use serde_json::json;
    use som_core::domain::{CLOUDEVENTS_JSON, EVENT_DATA_VERSION, EVENT_SOURCE, EventFilter, EventKind};
    // An endpoint's `events`: `["*"]` alone, or type names.
    let types: Vec<&str> = EventKind::ALL.into_iter().filter(|k| k.is_public()).map(EventKind::type_name).collect();
    let filter = json!({"oneOf": [
        {"type": "array", "items": {"type": "string", "const": "*"}, "minItems": 1, "maxItems": 1},
        {"type": "array", "items": {"type": "string", "enum": types}, "minItems": 1, "maxItems": EventFilter::MAX_TYPES},
    ]});
    let mut nullable = filter.clone();
    if let Some(one_of) = nullable.get_mut("oneOf").and_then(serde_json::Value::as_array_mut) {
        one_of.push(json!({"type": "null"}));
    }
    for (pointer, schema) in [
        ("/components/schemas/CreateEndpointBody/properties/events", &filter),
        ("/components/schemas/PatchEndpointBody/properties/events", &nullable),
    ] {
        if let Some(slot) = doc.pointer_mut(pointer) {
            let description = slot.get("description").cloned();
            *slot = schema.clone();
            if let (Some(d), Some(o)) = (description, slot.as_object_mut()) {
                o.insert("description".into(), d);
            }
        }
    }
    // A delivery log's `event_type` filter names a type.
    let params = doc
        .pointer_mut("/paths/~1api~1v1~1webhook-endpoints~1{id}~1deliveries~1/get/parameters")
        .and_then(serde_json::Value::as_array_mut);
    for param in params.into_iter().flatten() {
        if param.get("name").and_then(serde_json::Value::as_str) == Some("event_type") {
            param["schema"] = json!({"type": "string", "enum": types});
        }
    }
    let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(serde_json::Value::as_object_mut) else {
        return;
    };
    let base = ["order_id", "user_id", "username", "amount", "currency", "items"];
    for kind in EventKind::ALL.into_iter().filter(|k| k.is_public()) {
        let required: Vec<&str> = base.iter().copied().chain(kind.data_fields().iter().copied()).collect();
        let schema = json!({
            "type": "object",
            "description": format!(
                "The `{}` event, as webhook endpoints receive it ({CLOUDEVENTS_JSON}) and the event stream publishes it.",
                kind.type_name()
            ),
            "required": ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "somversion", "data"],
            "properties": {
                "specversion": {"type": "string", "const": "1.0"},
                "id": {"type": "string", "description": "The event's id: the same on every channel and re-delivery", "example": format!("{}:order:42", kind.as_str())},
                "source": {"type": "string", "const": EVENT_SOURCE},
                "type": {"type": "string", "const": kind.type_name()},
                "subject": {"type": "string", "example": "orders/42"},
                "time": {"type": "string", "format": "date-time"},
                "datacontenttype": {"type": "string", "const": "application/json"},
                "somversion": {"type": "string", "const": EVENT_DATA_VERSION, "description": "The version of `data`'s schema"},
                "data": {"allOf": [{"$ref": "#/components/schemas/EventData"}], "required": required},
            },
        });
        schemas.insert(kind.type_name().to_owned(), schema);
    }
}

/// Writes som-core's limits into the document: item counts and sizes, username and password
/// lengths, page sizes, idempotency keys, refund reasons, and the provider's payment methods.
fn apply_limits(doc: &mut serde_json::Value, payment_methods: &[String]) {
    use serde_json::json;
    use som_core::domain::{OrderItem, Password, RefundInput, Username};
    let schemas = "/components/schemas";
    let fixed = [
        (format!("{schemas}/CreateOrderRequest/properties/items/maxItems"), json!(OrderItem::MAX_ITEMS)),
        (format!("{schemas}/OrderItemRequest/properties/name/maxLength"), json!(OrderItem::MAX_NAME_CHARS)),
        (format!("{schemas}/OrderItemRequest/properties/quantity/maximum"), json!(OrderItem::MAX_QUANTITY)),
        (format!("{schemas}/RegisterRequest/properties/username/maxLength"), json!(Username::MAX_CHARS)),
        (format!("{schemas}/RegisterRequest/properties/password/minLength"), json!(Password::MIN_CHARS)),
        (format!("{schemas}/RegisterRequest/properties/password/maxLength"), json!(Password::MAX_CHARS)),
        (format!("{schemas}/RefundRequestBody/properties/reason/maxLength"), json!(RefundInput::MAX_REASON_CHARS)),
    ];
    for (pointer, value) in fixed {
        if let Some(slot) = doc.pointer_mut(&pointer) {
            *slot = value;
        }
    }
    let Some(paths) = doc.get_mut("paths").and_then(serde_json::Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let page_max = if path.starts_with("/api/v1/orders/") {
            som_core::system::MAX_PAGE_SIZE
        } else {
            som_core::MAX_ADMIN_PAGE_SIZE
        };
        for op in item.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
            let params = op.get_mut("parameters").and_then(serde_json::Value::as_array_mut);
            for param in params.into_iter().flatten() {
                let name = param.get("name").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
                let Some(schema) = param.get_mut("schema").and_then(serde_json::Value::as_object_mut) else {
                    continue;
                };
                match name.as_str() {
                    "limit" => {
                        schema.insert("maximum".into(), json!(page_max));
                    }
                    "Idempotency-Key" => {
                        schema.insert("maxLength".into(), json!(som_core::system::MAX_IDEMPOTENCY_KEY_LEN));
                    }
                    _ => {}
                }
            }
        }
    }
    if !payment_methods.is_empty()
        && let Some(method) = doc.pointer_mut(&format!("{schemas}/InitiatePaymentRequest/properties/method"))
        && let Some(method) = method.as_object_mut()
    {
        let mut values: Vec<serde_json::Value> = payment_methods.iter().map(|m| json!(m)).collect();
        values.push(serde_json::Value::Null);
        method.insert("enum".into(), serde_json::Value::Array(values));
    }
}

/// The OpenAPI document as JSON, with its links in the spelling OpenAPI requires (`operationId`,
/// `requestBody`; utoipa serialises link fields in snake case). Limits as annotated; a server
/// serves [`openapi_json_for`].
pub fn openapi_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(paths) = doc.get_mut("paths").and_then(serde_json::Value::as_object_mut) {
        for item in paths.values_mut() {
            for op in item.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
                let responses = op.get_mut("responses").and_then(serde_json::Value::as_object_mut);
                for response in responses.into_iter().flat_map(|r| r.values_mut()) {
                    let links = response.get_mut("links").and_then(serde_json::Value::as_object_mut);
                    for link in links.into_iter().flat_map(|l| l.values_mut()) {
                        if let Some(link) = link.as_object_mut() {
                            for (from, to) in [("operation_id", "operationId"), ("request_body", "requestBody")] {
                                if let Some(v) = link.remove(from) {
                                    link.insert(to.to_owned(), v);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use som_core::domain::{OrderItem, Password, Username};

    use super::*;

    #[test]
    fn the_documents_limits_are_som_cores() {
        let methods = vec!["card".to_owned(), "wallet".to_owned()];
        let doc = openapi_json_for(&methods);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["CreateOrderRequest"]["properties"]["items"]["maxItems"], OrderItem::MAX_ITEMS);
        assert_eq!(schemas["OrderItemRequest"]["properties"]["quantity"]["maximum"], OrderItem::MAX_QUANTITY);
        assert_eq!(schemas["RegisterRequest"]["properties"]["username"]["maxLength"], Username::MAX_CHARS);
        assert_eq!(schemas["RegisterRequest"]["properties"]["password"]["minLength"], Password::MIN_CHARS);
        assert_eq!(schemas["RegisterRequest"]["properties"]["email"]["maxLength"], som_core::domain::Email::MAX_CHARS);
        assert_eq!(
            schemas["InitiatePaymentRequest"]["properties"]["method"]["maxLength"],
            som_core::payment::MAX_METHOD_CHARS
        );
        let method = &schemas["InitiatePaymentRequest"]["properties"]["method"];
        assert_eq!(method["enum"], serde_json::json!(["card", "wallet", null]), "{method}");
        let list = doc["paths"]["/api/v1/orders/"]["get"]["parameters"].as_array().unwrap();
        let limit = list.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["maximum"], som_core::system::MAX_PAGE_SIZE);
        let users = doc["paths"]["/api/v1/users/"]["get"]["parameters"].as_array().unwrap();
        let limit = users.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["maximum"], som_core::MAX_ADMIN_PAGE_SIZE);
        let price = &schemas["Decimal"];
        assert!(price.to_string().contains(&format!("\"maximum\":{}", OrderItem::MAX_UNIT_PRICE)), "{price}");
        assert_eq!(
            crate::dto::price_pattern(),
            r"^(10000000(\.0{1,3})?|[1-9][0-9]{0,6}(\.[0-9]{1,3})?|0\.([1-9][0-9]{0,2}|0[1-9][0-9]{0,1}|00[1-9][0-9]{0,0}))$"
        );
    }
}
