//! The facade's calls that have optional parts read as what they say at the call site:
//!
//! ```
//! # use som_core::{Config, OrderSystem, Registration, domain::{ItemInput, OrderInput}};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> som_core::Result<()> {
//! # let som = OrderSystem::builder().config(Config { database_url: "sqlite::memory:".into(), ..Config::default() }).build().await?;
//! # som.register(Registration { username: "alice".into(), email: Some("a@example.com".into()), password: "correct horse battery".into() }).await?;
//! # let alice = som.authenticate(&som.login("alice", "correct horse battery").await?.access).await?;
//! # let input = OrderInput { items: vec![ItemInput { name: "Widget".into(), quantity: 1, price: "9.99".into() }], currency: None };
//! let order = som.create_order(alice, input).idempotency_key("order-2026-0001").await?;
//! let payment = som.initiate_payment(alice, order.id).method("mock_success").await?;
//! let payment = som.confirm_payment(alice, payment.id).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Each call returns a request; awaiting it (it implements [`IntoFuture`]) runs it. The
//! `maybe_*` setters take an `Option`, for front ends that pass through what a client sent.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use super::OrderSystem;
use crate::domain::{
    Caller, CaptureMethod, Order, OrderId, OrderInput, Payment, PaymentId, Refund, RefundInput, UserId,
};
use crate::error::{Error, Result};

type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A request's work as a [`Call`], remembered as the caller's write when it ends.
fn writing<'a, T: 'a>(
    som: &'a OrderSystem,
    caller: Caller,
    work: impl Future<Output = Result<T>> + Send + 'a,
) -> Call<'a, T> {
    Box::pin(som.writing(caller, work))
}

macro_rules! idempotency_setters {
    () => {
        /// Makes the request safe to repeat: the same key with the same request returns the
        /// first result without a second effect; with another request it is
        /// [`Error::IdempotencyMismatch`].
        pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
            self.idempotency_key = Some(key.into());
            self
        }

        /// [`Self::idempotency_key`] when there is one.
        pub fn maybe_idempotency_key(mut self, key: Option<&str>) -> Self {
            self.idempotency_key = key.map(str::to_owned);
            self
        }
    };
}

/// Placing an order; see [`OrderSystem::create_order`].
#[derive(Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct CreateOrder<'a> {
    som: &'a OrderSystem,
    caller: Caller,
    input: OrderInput,
    owner: Option<UserId>,
    idempotency_key: Option<String>,
}

impl CreateOrder<'_> {
    /// Places the order for `owner` (staff, or the system caller, acting for a customer).
    pub fn on_behalf_of(mut self, owner: UserId) -> Self {
        self.owner = Some(owner);
        self
    }

    idempotency_setters!();
}

impl<'a> IntoFuture for CreateOrder<'a> {
    type Output = Result<Order>;
    type IntoFuture = Call<'a, Order>;

    fn into_future(self) -> Self::IntoFuture {
        writing(self.som, self.caller, async move {
            let owner = match self.owner.or_else(|| self.caller.user_id()) {
                Some(owner) => owner,
                None => return Err(Error::invalid("user", "the system caller must name the order's owner")),
            };
            self.som.place_order(self.caller, owner, self.input, self.idempotency_key.as_deref()).await
        })
    }
}

/// Cancelling an order; see [`OrderSystem::cancel_order`].
#[derive(Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct CancelOrder<'a> {
    som: &'a OrderSystem,
    caller: Caller,
    id: OrderId,
    idempotency_key: Option<String>,
}

impl CancelOrder<'_> {
    idempotency_setters!();
}

impl<'a> IntoFuture for CancelOrder<'a> {
    type Output = Result<Order>;
    type IntoFuture = Call<'a, Order>;

    fn into_future(self) -> Self::IntoFuture {
        writing(self.som, self.caller, async move {
            self.som.cancel_order_now(self.caller, self.id, self.idempotency_key.as_deref()).await
        })
    }
}

/// Starting a payment; see [`OrderSystem::initiate_payment`].
#[derive(Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct InitiatePayment<'a> {
    som: &'a OrderSystem,
    caller: Caller,
    order_id: OrderId,
    method: Option<String>,
    capture: Option<CaptureMethod>,
    idempotency_key: Option<String>,
}

impl InitiatePayment<'_> {
    /// `Manual`: confirmation only authorises, and the money is taken by
    /// [`OrderSystem::capture_payment`] (default: `SOM_CAPTURE_METHOD`, itself `automatic`).
    pub fn capture(mut self, capture: CaptureMethod) -> Self {
        self.capture = Some(capture);
        self
    }

    /// [`Self::capture`] when there is one.
    pub fn maybe_capture(mut self, capture: Option<CaptureMethod>) -> Self {
        self.capture = capture;
        self
    }

    /// The payment method, one of the provider's (the mock's default: `mock_success`).
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// [`Self::method`] when there is one.
    pub fn maybe_method(mut self, method: Option<&str>) -> Self {
        self.method = method.map(str::to_owned);
        self
    }

    idempotency_setters!();
}

impl<'a> IntoFuture for InitiatePayment<'a> {
    type Output = Result<Payment>;
    type IntoFuture = Call<'a, Payment>;

    fn into_future(self) -> Self::IntoFuture {
        writing(self.som, self.caller, async move {
            self.som
                .initiate_payment_now(
                    self.caller,
                    self.order_id,
                    self.method.as_deref(),
                    self.capture,
                    self.idempotency_key.as_deref(),
                )
                .await
        })
    }
}

/// Confirming a payment; see [`OrderSystem::confirm_payment`].
#[derive(Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct ConfirmPayment<'a> {
    som: &'a OrderSystem,
    caller: Caller,
    id: PaymentId,
    idempotency_key: Option<String>,
}

impl ConfirmPayment<'_> {
    idempotency_setters!();
}

impl<'a> IntoFuture for ConfirmPayment<'a> {
    type Output = Result<Payment>;
    type IntoFuture = Call<'a, Payment>;

    fn into_future(self) -> Self::IntoFuture {
        writing(self.som, self.caller, async move {
            self.som.confirm_payment_now(self.caller, self.id, self.idempotency_key.as_deref()).await
        })
    }
}

/// Refunding a payment; see [`OrderSystem::refund_payment`].
#[derive(Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct RefundPayment<'a> {
    som: &'a OrderSystem,
    caller: Caller,
    id: PaymentId,
    input: RefundInput,
    idempotency_key: Option<String>,
}

impl RefundPayment<'_> {
    /// How much, as a decimal string in the payment's currency (default: everything left).
    pub fn amount(mut self, amount: impl Into<String>) -> Self {
        self.input.amount = Some(amount.into());
        self
    }

    /// Why (recorded, and told to the customer).
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.input.reason = Some(reason.into());
        self
    }

    /// Amount and reason at once, as a front end received them.
    pub fn input(mut self, input: RefundInput) -> Self {
        self.input = input;
        self
    }

    idempotency_setters!();
}

impl<'a> IntoFuture for RefundPayment<'a> {
    type Output = Result<Refund>;
    type IntoFuture = Call<'a, Refund>;

    fn into_future(self) -> Self::IntoFuture {
        writing(self.som, self.caller, async move {
            self.som.refund_payment_now(self.caller, self.id, self.input, self.idempotency_key.as_deref()).await
        })
    }
}

/// Capturing an authorised payment; see [`OrderSystem::capture_payment`].
#[derive(Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct CapturePayment<'a> {
    som: &'a OrderSystem,
    caller: Caller,
    id: PaymentId,
    amount: Option<String>,
    idempotency_key: Option<String>,
}

impl CapturePayment<'_> {
    /// How much, as a decimal string in the payment's currency (default: everything
    /// authorised); the rest is released.
    pub fn amount(mut self, amount: impl Into<String>) -> Self {
        self.amount = Some(amount.into());
        self
    }

    /// [`Self::amount`] when there is one.
    pub fn maybe_amount(mut self, amount: Option<&str>) -> Self {
        self.amount = amount.map(str::to_owned);
        self
    }

    idempotency_setters!();
}

impl<'a> IntoFuture for CapturePayment<'a> {
    type Output = Result<Payment>;
    type IntoFuture = Call<'a, Payment>;

    fn into_future(self) -> Self::IntoFuture {
        writing(self.som, self.caller, async move {
            self.som
                .capture_payment_now(self.caller, self.id, self.amount.as_deref(), self.idempotency_key.as_deref())
                .await
        })
    }
}

/// Releasing an authorised payment; see [`OrderSystem::void_payment`].
#[derive(Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct VoidPayment<'a> {
    som: &'a OrderSystem,
    caller: Caller,
    id: PaymentId,
    idempotency_key: Option<String>,
}

impl VoidPayment<'_> {
    idempotency_setters!();
}

impl<'a> IntoFuture for VoidPayment<'a> {
    type Output = Result<Payment>;
    type IntoFuture = Call<'a, Payment>;

    fn into_future(self) -> Self::IntoFuture {
        writing(self.som, self.caller, async move {
            self.som.void_payment_now(self.caller, self.id, self.idempotency_key.as_deref()).await
        })
    }
}

impl OrderSystem {
    /// Places an order: items validated, total computed, and the order, its audit event and
    /// its order-created notifications written in one transaction. For the caller, or
    /// [`CreateOrder::on_behalf_of`] a customer (staff and the system caller only).
    pub fn create_order(&self, caller: Caller, input: OrderInput) -> CreateOrder<'_> {
        CreateOrder { som: self, caller, input, owner: None, idempotency_key: None }
    }

    /// `CREATED → CANCELLED` (owner or staff), voiding a PENDING payment; `AUTHORIZED →
    /// CANCELLED` releases its authorisation as [`OrderSystem::void_payment`] does. `Conflict`
    /// from any other status (a paid order is refunded instead).
    pub fn cancel_order(&self, caller: Caller, id: OrderId) -> CancelOrder<'_> {
        CancelOrder { som: self, caller, id, idempotency_key: None }
    }

    /// Starts paying an order: returns its live (PENDING or SUCCESS) payment if there is one,
    /// otherwise asks the provider (outside any transaction) and stores a PENDING payment.
    /// [`InitiatePayment::method`] defaults to `mock_success`. `Conflict` when the order is
    /// not CREATED.
    pub fn initiate_payment(&self, caller: Caller, order_id: OrderId) -> InitiatePayment<'_> {
        InitiatePayment { som: self, caller, order_id, method: None, capture: None, idempotency_key: None }
    }

    /// Captures a PENDING payment with the provider. Success: payment SUCCESS and order PAID in
    /// one transaction, with the payment-succeeded notification. Declined: payment FAILED and
    /// `PaymentDeclined` (the order stays payable). Transient provider failure: `Unavailable`,
    /// nothing changed. Confirming a SUCCESS payment again returns it unchanged.
    pub fn confirm_payment(&self, caller: Caller, id: PaymentId) -> ConfirmPayment<'_> {
        ConfirmPayment { som: self, caller, id, idempotency_key: None }
    }

    /// Returns [`RefundPayment::amount`] (everything not yet refunded by default) of a captured
    /// payment to the payer. Staff or the system caller only: the payment's non-staff owner
    /// gets `Forbidden`, anyone else `NotFound`. `Conflict` when the payment was not captured,
    /// is fully refunded, or has less left than asked (refunds in flight count);
    /// `PaymentDeclined` when the provider refuses (the amount is available again);
    /// `Unavailable` when the provider cannot be reached (the refund stays PENDING and the
    /// dispatcher finishes it later). With an idempotency key, repeating the request returns
    /// the same refund.
    pub fn refund_payment(&self, caller: Caller, payment_id: PaymentId) -> RefundPayment<'_> {
        RefundPayment { som: self, caller, id: payment_id, input: RefundInput::default(), idempotency_key: None }
    }

    /// Captures [`CapturePayment::amount`] (everything authorised by default) of an AUTHORIZED
    /// payment and releases the rest: payment SUCCESS with its `captured` amount, order PAID,
    /// the owner told — once; refunds then apply to what was captured. Staff or the system
    /// caller only (the owner gets `Forbidden`, anyone else `NotFound`). `Validation` for an
    /// amount that is not above zero and at most what was authorised; `Conflict` when the
    /// payment is not AUTHORIZED or another capture, void or expiry of it is under way (of
    /// concurrent captures exactly one wins); `PaymentDeclined` when the provider refuses
    /// (the payment stays AUTHORIZED); `Unavailable` when the provider cannot be reached (the
    /// capture is finished by the dispatcher with the same provider key — do not ask again).
    pub fn capture_payment(&self, caller: Caller, payment_id: PaymentId) -> CapturePayment<'_> {
        CapturePayment { som: self, caller, id: payment_id, amount: None, idempotency_key: None }
    }

    /// Releases an AUTHORIZED payment without taking money: payment VOIDED, order CANCELLED,
    /// the provider's hold released, the owner told. Staff, the system caller, or the
    /// payment's owner. `Conflict` when it is not AUTHORIZED or a capture of it is under way
    /// (a capture and a void racing: exactly one wins); `Unavailable` when the provider cannot
    /// be reached (finished by the dispatcher).
    pub fn void_payment(&self, caller: Caller, payment_id: PaymentId) -> VoidPayment<'_> {
        VoidPayment { som: self, caller, id: payment_id, idempotency_key: None }
    }
}
