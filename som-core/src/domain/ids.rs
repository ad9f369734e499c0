//! Typed identifiers: an order id can never be passed where a user id is expected.

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(i64);

        impl $name {
            /// Wraps a raw database id.
            pub const fn new(raw: i64) -> Self {
                Self(raw)
            }

            /// The raw database id.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::error::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .map(Self)
                    .ok_or_else(|| crate::error::Error::invalid($label, "must be a positive integer id"))
            }
        }
    };
}

id_type!(
    /// Identifies a user account.
    UserId,
    "user_id"
);
id_type!(
    /// Identifies an order.
    OrderId,
    "order_id"
);
id_type!(
    /// Identifies a payment attempt.
    PaymentId,
    "payment_id"
);
id_type!(
    /// Identifies one row of the notification outbox.
    NotificationId,
    "notification_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_positive_integers() {
        assert_eq!("42".parse::<OrderId>().ok(), Some(OrderId::new(42)));
        assert!("0".parse::<OrderId>().is_err());
        assert!("-1".parse::<OrderId>().is_err());
        assert!("abc".parse::<OrderId>().is_err());
        assert!("99999999999999999999".parse::<OrderId>().is_err());
    }

    #[test]
    fn ids_serialize_as_bare_numbers() {
        assert_eq!(serde_json::to_string(&PaymentId::new(7)).ok().as_deref(), Some("7"));
    }
}

id_type!(
    /// Identifies a refund of a payment.
    RefundId,
    "refund_id"
);

id_type!(
    /// Identifies one line of an order. Unique across orders: order `n`'s lines are numbered
    /// `n × 1000 + 1`, `n × 1000 + 2`, … in the order they were submitted (see
    /// [`crate::domain::Order::item_id`]).
    ItemId,
    "item_id"
);

id_type!(
    /// Identifies a fulfilment (a parcel of an order's items).
    FulfillmentId,
    "fulfillment_id"
);

id_type!(
    /// Identifies a return of an order's delivered items.
    ReturnId,
    "return_id"
);

id_type!(
    /// Identifies a webhook endpoint (a URL that receives SOM's events).
    EndpointId,
    "endpoint_id"
);

id_type!(
    /// Identifies one recorded attempt to deliver an event to a webhook endpoint.
    DeliveryId,
    "delivery_id"
);
