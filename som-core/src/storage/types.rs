//! What storage methods take and give: records to insert, queries, and the facts a write
//! reports back (applied or not, reserved or refused) for the core to decide on.

use chrono::{DateTime, Utc};

use crate::domain::{
    Actor, Email, Fulfillment, ItemQuantity, Message, Money, Order, OrderId, OrderStatus, Payment, PaymentId, Refund,
    Return, Tracking, User, UserId, Username,
};
use crate::domain::{NotificationId, NotificationStatus};

/// A user to insert.
#[derive(Debug, Clone)]
pub struct NewUserRecord {
    /// Unique.
    pub username: Username,
    /// Unique case-insensitively, when present.
    pub email: Option<Email>,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Staff flag.
    pub is_staff: bool,
    /// Registration time.
    pub created_at: DateTime<Utc>,
}

/// Result of inserting a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserInsert {
    /// Stored.
    Inserted(User),
    /// Nothing stored: the username and/or the email (case-insensitively) belong to another
    /// account.
    Taken {
        /// The username is taken.
        username: bool,
        /// The email is taken.
        email: bool,
    },
}

impl UserInsert {
    /// The inserted user; panics when it was not inserted (for tests).
    #[cfg(feature = "test-support")]
    pub fn inserted(self) -> User {
        match self {
            UserInsert::Inserted(user) => user,
            #[allow(clippy::panic)]
            taken => panic!("expected an inserted user, got {taken:?}"),
        }
    }
}

/// What a login checks a password against, read at one moment: the account, its password hash
/// and its session version (which a password change, revoking every session or disabling the
/// account moves on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The account.
    pub user: User,
    /// Its argon2id password hash.
    pub password_hash: String,
    /// Its session version when read.
    pub session_version: i64,
}

/// A refresh token to remember, so that it can be used once and its family revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    /// The token's unique id.
    pub jti: String,
    /// The login session it belongs to (its id).
    pub family: String,
    /// Its user.
    pub user_id: UserId,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// When its session began (the login).
    pub session_started_at: DateTime<Utc>,
    /// For a new session: the user's session version the credentials were checked at. The
    /// session starts only while that version is still current (no password change, revoking
    /// or disabling came in between); `None` starts it at the current version.
    pub checked_version: Option<i64>,
}

/// What storage knows of a session, for authenticating its access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// The session's user, as stored now.
    pub user: User,
    /// False when the session was revoked, or the user's session version has moved past it
    /// (password change, revoke-all, disabling).
    pub live: bool,
}

/// What happened to a refresh token presented for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    /// It was unused: it is now used and the new token is stored in its family.
    Rotated,
    /// It had been used before: the whole family is now revoked.
    ReuseDetected,
    /// Unknown, expired, revoked, or of another user.
    Rejected,
}

/// Which orders to list, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderQuery {
    /// Only this user's orders; all users' when `None`.
    pub user_id: Option<UserId>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Only orders with an id below this one (the cursor).
    pub before: Option<OrderId>,
    /// Only orders placed at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only orders placed before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// Only orders matching this search.
    pub search: Option<OrderSearch>,
    /// At most this many.
    pub limit: u32,
}

/// A text search over orders: the order with id `id`, or any order whose owner's username or
/// email contains `text` (lowercase; compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSearch {
    /// The text read as an order id, when it is one.
    pub id: Option<OrderId>,
    /// The text, lowercase.
    pub text: String,
}

/// Orders placed in a window, of one status and currency: how many and their money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTotals {
    /// Their status.
    pub status: OrderStatus,
    /// Their currency (ISO 4217).
    pub currency: String,
    /// How many.
    pub orders: u64,
    /// The sum of their totals, in minor units.
    pub total_minor: i64,
    /// The sum of what their payments captured (a partial capture takes less than the total),
    /// in minor units.
    pub captured_minor: i64,
    /// The sum of what was refunded of them, in minor units.
    pub refunded_minor: i64,
}

/// Which users to list, by ascending id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserQuery {
    /// Only users with an id above this one (the cursor).
    pub after: Option<UserId>,
    /// Only users whose username or email starts with this text, case-insensitively.
    pub prefix: Option<String>,
    /// Only active staff accounts.
    pub active_staff: bool,
    /// At most this many.
    pub limit: u32,
}

/// Which outbox rows to list, by ascending id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotificationQuery {
    /// Only rows in this delivery state.
    pub status: Option<NotificationStatus>,
    /// Only rows about this order.
    pub order: Option<OrderId>,
    /// Only rows with an id above this one (the cursor).
    pub after: Option<NotificationId>,
    /// At most this many.
    pub limit: u32,
}

/// A refund to set aside on a payment before the provider is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefundRecord {
    /// The payment to refund; must be in one of
    /// [`crate::domain::PaymentStatus::refundable_from`]`(late_capture)`.
    pub payment_id: PaymentId,
    /// Money the provider captured after SOM had ended the payment (CANCELLED or FAILED),
    /// returned: the payment and its order keep their statuses.
    pub late_capture: bool,
    /// How much, in the payment's currency; positive.
    pub amount: Money,
    /// Why.
    pub reason: Option<String>,
    /// Who asks.
    pub actor: Actor,
    /// The caller's idempotency scope and key, when given: a second reservation with the same
    /// key returns the first refund instead of making another.
    pub request_key: Option<String>,
    /// The provider's id, for a refund the provider has already made (one made in its
    /// dashboard and reported by an event): it is never sent to the provider again.
    pub provider_refund_id: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Result of setting a refund aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundReserve {
    /// The amount is set aside and the refund is PENDING.
    Reserved(Refund),
    /// A refund with the same request key exists: that one.
    Existing(Refund),
    /// The payment is not refundable, or less than the amount is left: the payment as stored
    /// now (its status, refunded and pending amounts say which).
    Refused(Box<Payment>),
}

/// How the provider answered a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The money was returned: the refund SUCCEEDED, the payment's and order's refunded
    /// amounts and statuses move on.
    Succeeded {
        /// The provider's id for the refund.
        provider_refund_id: String,
    },
    /// Refused: the refund FAILED and its amount is available again.
    Failed {
        /// Why, in the provider's words.
        reason: String,
    },
}

/// Builds the outbox rows for a succeeded refund once the order, payment and refund are known.
pub type RefundNotify = Box<dyn FnOnce(&Order, &Payment, &Refund) -> Vec<NewNotification> + Send>;

/// A payment to insert after the provider accepted it.
#[derive(Debug, Clone)]
pub struct NewPaymentRecord {
    /// The order it pays; must be CREATED.
    pub order_id: OrderId,
    /// The order's owner.
    pub user_id: UserId,
    /// Provider name.
    pub provider: String,
    /// The provider's id.
    pub provider_payment_id: String,
    /// SOM's unique reference.
    pub transaction_id: String,
    /// Payment method asked for.
    pub method: String,
    /// Attempt number on this order.
    pub attempt: u32,
    /// The order's total.
    pub amount: crate::domain::Money,
    /// Capture at confirmation, or authorise and capture later.
    pub capture_method: crate::domain::CaptureMethod,
    /// The provider's client secret for the payment, when it has one.
    pub client_secret: Option<String>,
    /// Initiation time.
    pub created_at: DateTime<Utc>,
}

/// Result of inserting a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentInsert {
    /// Inserted as PENDING.
    Inserted(Payment),
    /// The order already had a live (PENDING or SUCCESS) payment: that one.
    Existing(Payment),
    /// The order is no longer CREATED.
    OrderNotPayable(OrderStatus),
}

/// How a PENDING payment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// Captured: payment SUCCESS and its order PAID, in one transaction.
    Succeeded,
    /// Authorised (manual capture): payment AUTHORIZED until `expires_at`, its order
    /// AUTHORIZED, in one transaction.
    Authorized {
        /// When the authorisation runs out.
        expires_at: DateTime<Utc>,
    },
    /// Declined: payment FAILED; the order stays CREATED.
    Failed {
        /// Why, in the provider's words.
        reason: String,
    },
}

/// How an AUTHORIZED payment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettlementOutcome {
    /// `amount` (at most what was authorised) was captured: payment SUCCESS with that
    /// captured amount, its order PAID.
    Captured {
        /// How much.
        amount: crate::domain::Money,
    },
    /// Released: payment VOIDED (`expired` false) or EXPIRED, its order CANCELLED; the
    /// provider's side is recorded as closed.
    Released {
        /// Whether it ran out rather than being voided on request.
        expired: bool,
        /// Why, for the order's trail and the customer.
        reason: String,
    },
}

/// A conditional update's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition<T> {
    /// The precondition held and the change was made: the new value.
    Applied(T),
    /// The precondition did not hold; nothing changed: the current value.
    NotApplied(T),
}

/// An outbox row to write in the same transaction as the change it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// Delivery channel (`log`, `smtp`, `webhook`); each has its own delivery state.
    pub channel: String,
    /// The message.
    pub message: Message,
}

/// Builds the outbox rows for a change once the changed order is known.
pub type OrderNotify = Box<dyn FnOnce(&Order) -> Vec<NewNotification> + Send>;
/// Builds the outbox rows for a payment change once the order and payment are known.
pub type PaymentNotify = Box<dyn FnOnce(&Order, &Payment) -> Vec<NewNotification> + Send>;

/// A fulfilment to make of an order's items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFulfillmentRecord {
    /// The order; must be one whose goods may be fulfilled ([`crate::domain::may_fulfil`]).
    pub order_id: OrderId,
    /// Which items and how many; `None`: everything not yet in a fulfilment.
    pub items: Option<Vec<ItemQuantity>>,
    /// Where it can be followed, when already known.
    pub tracking: Tracking,
    /// Who makes it.
    pub actor: Actor,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A return to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReturnRecord {
    /// The order.
    pub order_id: OrderId,
    /// Which delivered items and how many.
    pub items: Vec<ItemQuantity>,
    /// Why.
    pub reason: Option<String>,
    /// Who asks.
    pub actor: Actor,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A return after a step, and the refund its receipt set aside (PENDING, to be paid out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnChange {
    /// The return as stored now.
    pub ret: Return,
    /// The refund set aside by receiving it.
    pub refund: Option<Refund>,
}

/// Which fulfilments or returns to list, by ascending id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AfterPaymentQuery<S> {
    /// Only those in this status.
    pub status: Option<S>,
    /// Only those with an id above this one (the cursor).
    pub after: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// Builds the outbox rows for a fulfilment's step once the order and fulfilment are known.
pub type FulfillmentNotify = Box<dyn FnOnce(&Order, &Fulfillment) -> Vec<NewNotification> + Send>;
/// Builds the outbox rows for a return's step once the order and return are known.
pub type ReturnNotify = Box<dyn FnOnce(&Order, &Return) -> Vec<NewNotification> + Send>;

/// The scope of one idempotency key: a caller, an operation and the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// Whose key (`user:7`, `system`).
    pub scope: String,
    /// Which operation (`create_order`).
    pub operation: &'static str,
    /// The caller's key, 1 to 255 characters.
    pub key: String,
}

/// Result of starting an idempotent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The key is new (or expired, or abandoned by a crashed request): proceed.
    Started,
    /// The same request completed before: its stored result (JSON).
    Replay(String),
    /// The key was used with a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// Where an idempotent request records its result: written in the same transaction as the
/// effect, so that a replay sees the effect's result or nothing at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencySlot {
    /// The key.
    pub key: IdempotencyKey,
}

/// A webhook endpoint to store.
#[derive(Clone, PartialEq, Eq)]
pub struct NewEndpointRecord {
    /// Where events are POSTed (already checked).
    pub url: String,
    /// Which events it receives.
    pub events: crate::domain::EventFilter,
    /// What it is for.
    pub description: Option<String>,
    /// Its signing secret.
    pub secret: String,
    /// Made from `SOM_WEBHOOK_URLS`.
    pub from_config: bool,
    /// When.
    pub at: DateTime<Utc>,
}

/// A change to an endpoint, as the core decided it; `None` leaves a field as it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EndpointChange {
    /// A new URL (already checked).
    pub url: Option<String>,
    /// A new filter.
    pub events: Option<crate::domain::EventFilter>,
    /// A new description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// Enables (clearing why it was disabled and since when it failed) or disables it.
    pub enabled: Option<bool>,
    /// With `enabled`: why it is disabled (none when staff disable it).
    pub disabled_reason: Option<String>,
    /// A new secret; the current one keeps signing until the given time.
    pub rotate: Option<(String, DateTime<Utc>)>,
    /// Sets the secret without keeping the old one (an operator's configured secret).
    pub secret: Option<String>,
}

/// One delivery attempt to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeliveryRecord {
    /// The endpoint.
    pub endpoint_id: crate::domain::EndpointId,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// Which attempt (1-based).
    pub attempt: u32,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// The HTTP status answered.
    pub response_status: Option<u16>,
    /// How long it took.
    pub latency_ms: u64,
    /// The start of the response's body.
    pub response_body: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// For a failure: disable the endpoint (with this reason) when it has been failing since
    /// this time or earlier.
    pub disable_failing_since: Option<(DateTime<Utc>, String)>,
}

/// Which delivery records to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryQuery {
    /// The endpoint.
    pub endpoint_id: crate::domain::EndpointId,
    /// Only succeeded (`Some(true)`) or failed (`Some(false)`) attempts.
    pub succeeded: Option<bool>,
    /// Only this event type (`som.order.created`).
    pub event_type: Option<String>,
    /// Only this event.
    pub event_id: Option<String>,
    /// Newest first: only records older than this id.
    pub before: Option<crate::domain::DeliveryId>,
    /// At most this many.
    pub limit: u32,
}

impl std::fmt::Debug for NewEndpointRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewEndpointRecord")
            .field("url", &crate::util::redact_url(&self.url))
            .field("events", &self.events)
            .field("from_config", &self.from_config)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EndpointChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointChange")
            .field("url", &self.url.as_deref().map(crate::util::redact_url))
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .field("rotate", &self.rotate.as_ref().map(|(_, until)| until))
            .finish_non_exhaustive()
    }
}

/// A read replica as last checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaStatus {
    /// Its URL without credentials.
    pub location: String,
    /// `streaming` (used), `lagging` (behind by more than `SOM_REPLICA_MAX_LAG`), `promoted`
    /// (no longer in recovery), `down` (not answering) or `starting` (not checked yet): all but
    /// `streaming` are skipped.
    pub state: &'static str,
    /// How far behind the primary it was when last checked: how long ago the primary had the
    /// oldest change the replica had not yet replayed (zero when it had replayed all).
    pub lag: Option<std::time::Duration>,
    /// Reads it has served since this process started.
    pub reads: u64,
    /// Why it is `down`.
    pub error: Option<String>,
}
