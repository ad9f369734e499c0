//! Pure types and rules, no I/O: ids, money, accounts, orders, payments, events.
//!
//! Every type here is valid by construction: a [`Money`] has an exact amount in a known
//! currency, a [`NewOrder`] has checked items and a computed total, a [`Password`] passed the
//! strength rules.

mod caller;
mod event;
mod fulfillment;
mod ids;
mod money;
mod notification;
mod order;
mod payment;
mod refund;
mod user;

pub use caller::Caller;
pub use event::{
    CLOUDEVENTS_JSON, CloudEvent, EVENT_DATA_VERSION, EVENT_SOURCE, EventData, EventFilter, WEBHOOK_CHANNEL,
    WebhookDelivery, WebhookEndpoint, channel_endpoint, endpoint_channel, endpoint_description, new_endpoint_secret,
};
pub use fulfillment::{
    Fulfillment, FulfillmentState, FulfillmentStatus, FulfillmentStep, ItemQuantity, Return, ReturnRefund,
    ReturnStatus, ReturnStep, Tracking, describe_lines, fulfillment_lines, lines_value, may_fulfil, parse_lines,
    return_lines, return_refund, returnable, unfulfilled,
};
pub use ids::{
    DeliveryId, EndpointId, FulfillmentId, ItemId, NotificationId, OrderId, PaymentId, RefundId, ReturnId, UserId,
};
pub use money::{Amount, Currency, Money, MoneyError};
pub use notification::{EventKind, Message, MessageItem, NotificationStatus, OutboxEntry};
pub use order::{
    Actor, IllegalTransition, ItemInput, NewOrder, Order, OrderEvent, OrderInput, OrderItem, OrderStatus,
    is_disallowed_in_text,
};
pub use payment::{CaptureMethod, Payment, PaymentStatus, SettleAction, Settlement};
pub use refund::{Refund, RefundInput, RefundStatus};
pub use user::{Email, Password, User, Username};
