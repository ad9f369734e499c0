//! OpenAPI schemas of the domain's enums, built from their `ALL` lists so that the document
//! always names exactly the values the server takes and returns.

use std::borrow::Cow;

use som_core::domain::{
    CaptureMethod, FulfillmentState, FulfillmentStatus, NotificationStatus, OrderStatus, PaymentStatus, RefundStatus,
    ReturnStatus,
};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// "`A`, `B` or `C`": the values an error message says a field must take.
pub(crate) fn one_of<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// A string schema taking exactly `names`.
fn string_enum<'a>(description: &str, names: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(names.into_iter().map(str::to_owned)))
        .into()
}

macro_rules! enum_schema {
    ($(#[$doc:meta])* $name:ident, $description:literal, $names:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                string_enum($description, $names)
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

enum_schema!(
    /// An order status.
    StatusParam,
    "An order status: CREATED awaits payment; AUTHORIZED has its payment held, to be captured; PAID, PARTIALLY_REFUNDED and REFUNDED were paid; CANCELLED will not be.",
    OrderStatus::ALL.iter().map(|s| s.as_str())
);
enum_schema!(
    /// A payment status.
    PaymentStatusSchema,
    "A payment status: PENDING awaits confirmation; AUTHORIZED is held for a later capture (manual capture); SUCCESS was captured, perhaps in part (and may later be PARTIALLY_REFUNDED or REFUNDED); FAILED was declined; CANCELLED was voided with its order; VOIDED and EXPIRED were authorised and released (on request, or because the authorisation ran out).",
    PaymentStatus::ALL.iter().map(|s| s.as_str())
);
enum_schema!(
    /// A capture method.
    CaptureMethodSchema,
    "When the money moves: automatic (confirmation captures it) or manual (confirmation authorises; staff capture all or part later, or void).",
    [CaptureMethod::Automatic, CaptureMethod::Manual].iter().map(|m| m.as_str())
);
enum_schema!(
    /// A refund status.
    RefundStatusSchema,
    "A refund status: PENDING has its amount set aside while the provider answers; SUCCEEDED returned the money; FAILED was refused.",
    RefundStatus::ALL.iter().map(|s| s.as_str())
);
enum_schema!(
    /// A notification's delivery state.
    NotificationStatusParam,
    "A notification's delivery state: pending awaits (another) attempt; sent was delivered; dead was given up on and may be retried; skipped had nothing to deliver on its channel.",
    NotificationStatus::ALL.iter().map(|s| s.as_str())
);

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    #[test]
    fn enum_schemas_name_every_value_the_domain_has() {
        let json = serde_json::to_value(StatusParam::schema()).unwrap();
        let values: Vec<&str> = json["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(values, OrderStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        assert_eq!(one_of(["a", "b", "c"]), "a, b or c");
        assert_eq!(one_of(["a"]), "a");
    }
}
enum_schema!(
    /// A fulfilment's status.
    FulfillmentStatusSchema,
    "A fulfilment status: PENDING is set aside to ship; SHIPPED was handed to the carrier; DELIVERED arrived; CANCELLED was withdrawn before shipping.",
    FulfillmentStatus::ALL.iter().map(|s| s.as_str())
);
enum_schema!(
    /// A return's status.
    ReturnStatusSchema,
    "A return status: REQUESTED awaits staff; APPROVED may be sent back; RECEIVED came back (its refund under way, or none); REFUNDED was refunded; REJECTED was refused (see note).",
    ReturnStatus::ALL.iter().map(|s| s.as_str())
);
enum_schema!(
    /// Where an order's goods are.
    FulfillmentStateSchema,
    "Where the order's goods are, beside its payment status: UNFULFILLED, PARTIALLY_FULFILLED (some items shipped), FULFILLED (all shipped), DELIVERED (all delivered), PARTIALLY_RETURNED or RETURNED (items came back).",
    FulfillmentState::ALL.iter().map(|s| s.as_str())
);
