//! After payment through the facade: staff fulfil an order's items in parcels (create, ship
//! with tracking, deliver, cancel), the owner follows them, and delivered items come back as
//! returns (requested by the owner or staff for them; approved, rejected or received by staff)
//! whose receipt refunds them through the refund path — set aside in the receipt's
//! transaction, paid out with the refund's own key, finished by the worker after a crash.

use serde::{Deserialize, Serialize};

use super::admin_page_size;
use super::queries::DEFAULT_PAGE_SIZE;
use super::{OrderSystem, Page};
use crate::domain::{
    Caller, EventKind, Fulfillment, FulfillmentId, FulfillmentStatus, FulfillmentStep, ItemQuantity, Message, Money,
    Order, OrderId, OrderStatus, Return, ReturnId, ReturnRefund, ReturnStatus, ReturnStep, Tracking, User,
    is_disallowed_in_text, lines_value,
};
use crate::error::{Error, Result, ValidationErrors};
use crate::storage::{
    AfterPaymentQuery, FulfillmentNotify, NewFulfillmentRecord, NewNotification, NewReturnRecord, ReturnChange,
    ReturnNotify, Transition,
};

/// A fulfilment as staff ask for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfillmentInput {
    /// Which items and how many; everything not yet in a fulfilment when `None`.
    #[serde(default)]
    pub items: Option<Vec<ItemQuantity>>,
    /// The carrier, when already known.
    #[serde(default)]
    pub carrier: Option<String>,
    /// The tracking number, when already known.
    #[serde(default)]
    pub tracking_number: Option<String>,
    /// The tracking page, when already known.
    #[serde(default)]
    pub tracking_url: Option<String>,
}

/// Shipping a fulfilment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipInput {
    /// The carrier (replaces one given before).
    #[serde(default)]
    pub carrier: Option<String>,
    /// The tracking number (replaces one given before).
    #[serde(default)]
    pub tracking_number: Option<String>,
    /// The tracking page (replaces one given before).
    #[serde(default)]
    pub tracking_url: Option<String>,
    /// For an order whose payment is only authorised: capture the shipped items' amount first
    /// (the rest of the authorisation is released). Shipping is refused when the capture is.
    #[serde(default)]
    pub capture: bool,
}

/// A return as its owner (or staff for them) asks for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnInput {
    /// Which delivered items and how many.
    pub items: Vec<ItemQuantity>,
    /// Why (at most 500 characters).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Longest return reason or rejection note, in characters.
pub const MAX_RETURN_TEXT_CHARS: usize = 500;

impl OrderSystem {
    /// Makes a PENDING fulfilment of an authorised or paid order's items. Staff only.
    pub async fn create_fulfillment(
        &self,
        caller: Caller,
        order_id: OrderId,
        input: FulfillmentInput,
    ) -> Result<Fulfillment> {
        self.writing(caller, async {
            self.order_now(caller, order_id).await?;
            staff_only(caller, "fulfil orders")?;
            let tracking = Tracking::parse(
                input.carrier.as_deref(),
                input.tracking_number.as_deref(),
                input.tracking_url.as_deref(),
            )?;
            let record = NewFulfillmentRecord {
                order_id,
                items: input.items,
                tracking,
                actor: caller.actor(),
                created_at: self.now(),
            };
            let notify = self.fulfillment_notify(None, order_id).await?;
            self.write(move |s| async move { s.create_fulfillment(record, notify).await }).await
        })
        .await
    }

    /// Ships a PENDING fulfilment, with its tracking; `capture` first captures the shipped
    /// items' amount of an authorised payment. Staff only.
    pub async fn ship_fulfillment(&self, caller: Caller, id: FulfillmentId, input: ShipInput) -> Result<Fulfillment> {
        self.writing(caller, async {
            let f = self.fulfillment_now(caller, id).await?;
            staff_only(caller, "ship fulfilments")?;
            let tracking = Tracking::parse(
                input.carrier.as_deref(),
                input.tracking_number.as_deref(),
                input.tracking_url.as_deref(),
            )?;
            if f.status != FulfillmentStatus::Pending {
                return Err(not_applied_fulfillment(&f, "shipped"));
            }
            let captured = if input.capture { self.capture_for_shipment(caller, &f).await? } else { None };
            let shipped = self.step_fulfillment(caller, id, FulfillmentStep::Ship(tracking)).await;
            if let (Err(e), Some(payment)) = (&shipped, &captured) {
                // The parcel changed between the capture and the shipment (cancelled meanwhile):
                // money was taken for goods that did not leave. Staff decide (ship again or refund).
                let what = format!(
                    "payment {} was captured ({}) to ship fulfilment {id}, which then could not be shipped: {e}",
                    payment.id, payment.captured
                );
                self.alert_staff(f.order_id, Some(payment), &format!("ship_after_capture:fulfillment:{id}"), &what)
                    .await;
            }
            shipped
        })
        .await
    }

    /// Marks a SHIPPED fulfilment DELIVERED. Staff only.
    pub async fn deliver_fulfillment(&self, caller: Caller, id: FulfillmentId) -> Result<Fulfillment> {
        self.writing(caller, async {
            self.fulfillment_now(caller, id).await?;
            staff_only(caller, "mark fulfilments delivered")?;
            self.step_fulfillment(caller, id, FulfillmentStep::Deliver).await
        })
        .await
    }

    /// Cancels a PENDING fulfilment; its items may be fulfilled again. Staff only.
    pub async fn cancel_fulfillment(&self, caller: Caller, id: FulfillmentId) -> Result<Fulfillment> {
        self.writing(caller, async {
            self.fulfillment_now(caller, id).await?;
            staff_only(caller, "cancel fulfilments")?;
            self.step_fulfillment(caller, id, FulfillmentStep::Cancel).await
        })
        .await
    }

    /// A fulfilment the caller may see (of their own order, or any for staff); `NotFound`
    /// otherwise.
    pub async fn fulfillment(&self, caller: Caller, id: FulfillmentId) -> Result<Fulfillment> {
        self.may_lag(caller, self.fulfillment_now(caller, id)).await
    }

    /// [`OrderSystem::fulfillment`] as the primary has it, for the reads that decide a write.
    async fn fulfillment_now(&self, caller: Caller, id: FulfillmentId) -> Result<Fulfillment> {
        let found = self.inner.storage.fulfillment_by_id(id).await?;
        found.filter(|f| caller.can_access(f.user_id)).ok_or_else(|| Error::NotFound(format!("fulfillment {id}")))
    }

    /// The order's fulfilments, oldest first: its owner or staff.
    pub async fn order_fulfillments(&self, caller: Caller, order_id: OrderId) -> Result<Vec<Fulfillment>> {
        self.may_lag(caller, async {
            self.order_now(caller, order_id).await?;
            self.inner.storage.fulfillments_for_order(order_id).await
        })
        .await
    }

    /// A page of fulfilments by ascending id, optionally of one status (PENDING: what is to
    /// ship). Staff only.
    pub async fn fulfillments_page(
        &self,
        caller: Caller,
        status: Option<FulfillmentStatus>,
        cursor: Option<FulfillmentId>,
        limit: Option<u32>,
    ) -> Result<Page<Fulfillment>> {
        staff_only(caller, "list fulfilments")?;
        let limit = admin_page_size(limit.unwrap_or(DEFAULT_PAGE_SIZE))?;
        let query = AfterPaymentQuery { status, after: cursor.map(FulfillmentId::get), limit: limit + 1 };
        let rows = self.may_lag(caller, self.inner.storage.list_fulfillments(query)).await?;
        Ok(Page::of(rows, limit, |f| f.id.to_string()))
    }

    /// Asks for a return of delivered items: the order's owner, or staff for them.
    pub async fn request_return(&self, caller: Caller, order_id: OrderId, input: ReturnInput) -> Result<Return> {
        self.writing(caller, async {
            self.order_now(caller, order_id).await?;
            let reason = return_text("reason", input.reason.as_deref())?;
            let record =
                NewReturnRecord { order_id, items: input.items, reason, actor: caller.actor(), created_at: self.now() };
            let notify = self.return_notify(EventKind::ReturnRequested, order_id).await?;
            self.write(move |s| async move { s.request_return(record, notify).await }).await
        })
        .await
    }

    /// Approves a REQUESTED return. Staff only.
    pub async fn approve_return(&self, caller: Caller, id: ReturnId) -> Result<Return> {
        self.writing(caller, async { self.step_return(caller, id, ReturnStep::Approve).await.map(|c| c.ret) }).await
    }

    /// Rejects a REQUESTED or APPROVED return, saying why. Staff only.
    pub async fn reject_return(&self, caller: Caller, id: ReturnId, note: &str) -> Result<Return> {
        self.writing(caller, async {
            self.return_now(caller, id).await?;
            staff_only(caller, "decide on returns")?;
            let note = return_text("note", Some(note))?.ok_or_else(|| Error::invalid("note", "must not be blank"))?;
            self.step_return(caller, id, ReturnStep::Reject { note }).await.map(|c| c.ret)
        })
        .await
    }

    /// Records an APPROVED return's items as received and refunds them: `amount` (a decimal
    /// string; "0" receives them without a refund) or, when `None`, the items' value at the
    /// order's prices, never more than is left to refund. The refund goes through the refund
    /// path: when the provider declines it the return stays RECEIVED and may be received again.
    /// Receiving it twice refunds once. Staff only.
    pub async fn receive_return(&self, caller: Caller, id: ReturnId, amount: Option<&str>) -> Result<Return> {
        self.writing(caller, async {
            let r = self.return_now(caller, id).await?;
            staff_only(caller, "receive returns")?;
            let order = self.order_now(caller, r.order_id).await?;
            let refund = match amount.map(str::trim) {
                None => Some(ReturnRefund { amount: None }),
                Some(raw) => {
                    let amount =
                        Money::parse(raw, order.currency()).map_err(|e| Error::invalid("amount", e.to_string()))?;
                    if amount.minor() < 0 {
                        return Err(Error::invalid("amount", "must not be negative"));
                    }
                    amount.is_positive().then_some(ReturnRefund { amount: Some(amount) })
                }
            };
            let change = self.step_return(caller, id, ReturnStep::Receive { refund }).await?;
            if let Some(refund) = change.refund {
                self.settle_refund(refund).await?;
            }
            self.return_now(caller, id).await
        })
        .await
    }

    /// A return the caller may see (of their own order, or any for staff); `NotFound`
    /// otherwise.
    pub async fn get_return(&self, caller: Caller, id: ReturnId) -> Result<Return> {
        self.may_lag(caller, self.return_now(caller, id)).await
    }

    /// [`OrderSystem::get_return`] as the primary has it, for the reads that decide a write.
    async fn return_now(&self, caller: Caller, id: ReturnId) -> Result<Return> {
        let found = self.inner.storage.return_by_id(id).await?;
        found.filter(|r| caller.can_access(r.user_id)).ok_or_else(|| Error::NotFound(format!("return {id}")))
    }

    /// The order's returns, oldest first: its owner or staff.
    pub async fn order_returns(&self, caller: Caller, order_id: OrderId) -> Result<Vec<Return>> {
        self.may_lag(caller, async {
            self.order_now(caller, order_id).await?;
            self.inner.storage.returns_for_order(order_id).await
        })
        .await
    }

    /// A page of returns by ascending id, optionally of one status. Staff only.
    pub async fn returns_page(
        &self,
        caller: Caller,
        status: Option<ReturnStatus>,
        cursor: Option<ReturnId>,
        limit: Option<u32>,
    ) -> Result<Page<Return>> {
        staff_only(caller, "list returns")?;
        let limit = admin_page_size(limit.unwrap_or(DEFAULT_PAGE_SIZE))?;
        let query = AfterPaymentQuery { status, after: cursor.map(ReturnId::get), limit: limit + 1 };
        let rows = self.may_lag(caller, self.inner.storage.list_returns(query)).await?;
        Ok(Page::of(rows, limit, |r| r.id.to_string()))
    }

    async fn step_fulfillment(&self, caller: Caller, id: FulfillmentId, step: FulfillmentStep) -> Result<Fulfillment> {
        let f = self.fulfillment_now(caller, id).await?;
        let kind = match step {
            FulfillmentStep::Ship(_) => Some(EventKind::FulfillmentShipped),
            FulfillmentStep::Deliver => Some(EventKind::FulfillmentDelivered),
            FulfillmentStep::Cancel => None,
        };
        let verb = step.verb();
        let notify = self.fulfillment_notify(kind, f.order_id).await?;
        let (actor, at) = (caller.actor(), self.now());
        match self.write(move |s| async move { s.advance_fulfillment(id, step, actor, at, notify).await }).await? {
            Transition::Applied(f) => {
                self.inner.wake.notify_one();
                Ok(f)
            }
            Transition::NotApplied(f) => Err(not_applied_fulfillment(&f, verb)),
        }
    }

    async fn step_return(&self, caller: Caller, id: ReturnId, step: ReturnStep) -> Result<ReturnChange> {
        let r = self.return_now(caller, id).await?;
        staff_only(caller, "decide on returns")?;
        let kind = match step {
            ReturnStep::Approve => EventKind::ReturnApproved,
            ReturnStep::Reject { .. } => EventKind::ReturnRejected,
            ReturnStep::Receive { .. } => EventKind::ReturnReceived,
        };
        let verb = step.verb();
        let notify = self.return_notify(kind, r.order_id).await?;
        let (actor, at) = (caller.actor(), self.now());
        match self.write(move |s| async move { s.advance_return(id, step, actor, at, notify).await }).await? {
            Transition::Applied(change) => {
                self.inner.wake.notify_one();
                Ok(change)
            }
            Transition::NotApplied(change) => {
                let r = change.ret;
                let why = if r.status == ReturnStatus::Received {
                    " (its refund is under way or done; a return is received again only after its refund failed)"
                } else {
                    ""
                };
                Err(Error::Conflict(format!("return {} is {}; it cannot be {verb}{why}", r.id, r.status)))
            }
        }
    }

    /// Captures the fulfilment's items' amount of the order's authorised payment, once per
    /// fulfilment (its key): the payment as captured, or `None` when the order's money was
    /// already captured.
    async fn capture_for_shipment(&self, caller: Caller, f: &Fulfillment) -> Result<Option<crate::domain::Payment>> {
        let order = self.order_now(caller, f.order_id).await?;
        if order.status != OrderStatus::Authorized {
            return Ok(None);
        }
        let payment = self
            .inner
            .storage
            .live_payment(order.id)
            .await?
            .ok_or_else(|| Error::Conflict(format!("order {} has no authorised payment to capture", order.id)))?;
        let value = lines_value(&order, &f.items);
        let amount = Money::from_minor(value.minor().min(payment.amount.minor()), value.currency());
        let key = format!("som-ship-{}", f.id);
        Ok(Some(self.capture_payment_now(caller, payment.id, Some(&amount.amount_string()), Some(&key)).await?))
    }

    async fn order_owner(&self, order_id: OrderId) -> Result<User> {
        let order = self.inner.storage.order_by_id(order_id).await?;
        let order = order.ok_or_else(|| Error::NotFound(format!("order {order_id}")))?;
        self.owner(order.user_id).await
    }

    async fn fulfillment_notify(&self, kind: Option<EventKind>, order_id: OrderId) -> Result<FulfillmentNotify> {
        let Some(kind) = kind else { return Ok(Box::new(|_: &Order, _: &Fulfillment| Vec::new())) };
        let owner = self.order_owner(order_id).await?;
        let channels = self.inner.channels.clone();
        Ok(Box::new(move |order, f| {
            channels
                .iter()
                .map(|channel| NewNotification {
                    channel: channel.clone(),
                    message: Message::fulfillment(kind, &owner, order, f),
                })
                .collect()
        }))
    }

    async fn return_notify(&self, kind: EventKind, order_id: OrderId) -> Result<ReturnNotify> {
        let owner = self.order_owner(order_id).await?;
        let channels = self.inner.channels.clone();
        Ok(Box::new(move |order, r| {
            channels
                .iter()
                .map(|channel| NewNotification {
                    channel: channel.clone(),
                    message: Message::return_step(kind, &owner, order, r),
                })
                .collect()
        }))
    }
}

fn staff_only(caller: Caller, what: &str) -> Result<()> {
    if caller.is_staff() { Ok(()) } else { Err(Error::Forbidden(format!("only staff may {what}"))) }
}

fn not_applied_fulfillment(f: &Fulfillment, verb: &str) -> Error {
    Error::Conflict(format!("fulfillment {} is {}; it cannot be {verb}", f.id, f.status))
}

fn return_text(field: &str, raw: Option<&str>) -> Result<Option<String>> {
    let Some(text) = raw.map(str::trim).filter(|r| !r.is_empty()) else { return Ok(None) };
    let mut errors = ValidationErrors::default();
    if text.chars().count() > MAX_RETURN_TEXT_CHARS {
        errors.add(field, format!("must be at most {MAX_RETURN_TEXT_CHARS} characters"));
    } else if text.chars().any(is_disallowed_in_text) {
        errors.add(field, "must not contain control characters or bidirectional controls");
    }
    errors.into_result()?;
    Ok(Some(text.to_owned()))
}
