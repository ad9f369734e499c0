//! Decisions that are not storage's to make. A backend reads the facts inside its transaction,
//! asks one of these pure functions what they mean, and applies the answer; both backends ask
//! the same functions, so they cannot decide differently.

use chrono::{DateTime, Utc};

use super::{IdempotencyBegin, NewRefundRecord, PaymentOutcome, RotateOutcome, SettlementOutcome};
use crate::domain::{
    Actor, Fulfillment, FulfillmentStep, ItemQuantity, Money, Order, OrderStatus, Payment, PaymentStatus, Refund,
    RefundStatus, Return, ReturnStatus, ReturnStep, UserId, fulfillment_lines, lines_value, may_fulfil, return_refund,
};
use crate::error::{Error, Result};

/// A status change a backend applies as a conditional update: `SET status = to WHERE status =
/// from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusChange<S> {
    /// The status the row must be in.
    pub from: S,
    /// The status it moves to.
    pub to: S,
}

/// Cancelling an order: the order's change ([`OrderStatus::cancel`]) and its pending payment's
/// ([`PaymentStatus::void`]).
pub fn cancellation() -> (StatusChange<OrderStatus>, StatusChange<PaymentStatus>) {
    let order = OrderStatus::Created;
    let payment = PaymentStatus::Pending;
    (
        StatusChange { from: order, to: order.cancel().unwrap_or(OrderStatus::Cancelled) },
        StatusChange { from: payment, to: payment.void().unwrap_or(PaymentStatus::Cancelled) },
    )
}

/// Completing a pending payment: the payment's change ([`PaymentStatus::complete`],
/// [`PaymentStatus::authorize`]) and, when it was captured or authorised, its order's
/// ([`OrderStatus::pay`], [`OrderStatus::authorize`]).
pub fn completion(outcome: &PaymentOutcome) -> (StatusChange<PaymentStatus>, Option<StatusChange<OrderStatus>>) {
    let pending = PaymentStatus::Pending;
    let created = OrderStatus::Created;
    match outcome {
        PaymentOutcome::Succeeded => (
            StatusChange { from: pending, to: pending.complete(true).unwrap_or(PaymentStatus::Success) },
            Some(StatusChange { from: created, to: created.pay().unwrap_or(OrderStatus::Paid) }),
        ),
        PaymentOutcome::Authorized { .. } => (
            StatusChange { from: pending, to: pending.authorize().unwrap_or(PaymentStatus::Authorized) },
            Some(StatusChange { from: created, to: created.authorize().unwrap_or(OrderStatus::Authorized) }),
        ),
        PaymentOutcome::Failed { .. } => {
            (StatusChange { from: pending, to: pending.complete(false).unwrap_or(PaymentStatus::Failed) }, None)
        }
    }
}

/// Ending an AUTHORIZED payment: the payment's change ([`PaymentStatus::capture`],
/// [`PaymentStatus::release`]), its order's ([`OrderStatus::pay`], [`OrderStatus::cancel`])
/// and the order event's reason.
pub fn settlement(
    id: crate::domain::PaymentId,
    outcome: &SettlementOutcome,
) -> (StatusChange<PaymentStatus>, StatusChange<OrderStatus>, String) {
    let authorized = PaymentStatus::Authorized;
    let order = OrderStatus::Authorized;
    match outcome {
        SettlementOutcome::Captured { amount } => (
            StatusChange { from: authorized, to: authorized.capture().unwrap_or(PaymentStatus::Success) },
            StatusChange { from: order, to: order.pay().unwrap_or(OrderStatus::Paid) },
            format!("payment {id} captured {amount}"),
        ),
        SettlementOutcome::Released { expired, reason } => (
            StatusChange {
                from: authorized,
                to: authorized.release(*expired).unwrap_or(if *expired {
                    PaymentStatus::Expired
                } else {
                    PaymentStatus::Voided
                }),
            },
            StatusChange { from: order, to: order.cancel().unwrap_or(OrderStatus::Cancelled) },
            format!("payment {id} {}: {reason}", if *expired { "expired" } else { "voided" }),
        ),
    }
}

/// What a refund's ending does to its payment and order, decided once for both backends: the
/// new refunded amounts, the change to the amount set aside, the conditional status changes
/// and the order's audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundSettlement {
    /// The payment's refunded amount afterwards, in minor units.
    pub payment_refunded: i64,
    /// Added to the payment's reserved amount (negative: released).
    pub reserved_delta: i64,
    /// The payment's status change.
    pub payment: StatusChange<PaymentStatus>,
    /// The order's refunded amount afterwards, in minor units.
    pub order_refunded: i64,
    /// The order's status change (recorded as its event).
    pub order: StatusChange<OrderStatus>,
    /// Who the order's event names.
    pub actor: Actor,
    /// The order's event's reason.
    pub reason: String,
}

/// A PENDING refund succeeded: its amount (already set aside) counts as refunded on the
/// payment, and the payment and order move as [`PaymentStatus::refund`] and
/// [`OrderStatus::refund`] say. A refund of money captured after SOM had ended the payment
/// (CANCELLED or FAILED) leaves both statuses and the order alone — the order may have been
/// paid since by another attempt. `Conflict` when the order cannot be refunded; `Internal` when
/// the payment could not have been (its reservation guarantees it could).
pub fn refund_succeeded(refund: &Refund, payment: &Payment, order: &Order) -> Result<RefundSettlement> {
    let amount = refund.amount.minor();
    let payment_refunded = payment.refunded.minor() + amount;
    let (payment_to, order_refunded, order_to) = if returns_late_capture(payment) {
        (payment.status, order.refunded.minor(), order.status)
    } else {
        // Refunds apply to what was captured, which a partial capture leaves below the total.
        let fully = payment_refunded >= payment.captured.minor();
        let payment_to = payment.status.refund(fully).ok_or_else(|| {
            Error::Internal(format!("refund {} of payment {} that is {}", refund.id, payment.id, payment.status))
        })?;
        let order_refunded = order.refunded.minor() + amount;
        let order_to = order.status.refund(fully).map_err(|e| Error::Conflict(format!("order {}: {e}", order.id)))?;
        (payment_to, order_refunded, order_to)
    };
    Ok(RefundSettlement {
        payment_refunded,
        reserved_delta: 0,
        payment: StatusChange { from: payment.status, to: payment_to },
        order_refunded,
        order: StatusChange { from: order.status, to: order_to },
        actor: refund.actor.clone(),
        reason: format!("refund {} of {} on payment {} succeeded", refund.id, refund.amount, payment.id),
    })
}

/// A SUCCEEDED refund failed at the provider after all (`why`): its amount is neither refunded
/// nor set aside any more, and the payment and order move back as
/// [`PaymentStatus::refund_reversed`] and [`OrderStatus::refund_reversed`] say (a refund of
/// money captured late leaves them as they are, as it did when it succeeded).
pub fn refund_reversed(refund: &Refund, payment: &Payment, order: &Order, why: &str) -> Result<RefundSettlement> {
    let amount = refund.amount.minor();
    let payment_refunded = payment.refunded.minor() - amount;
    let (payment_to, order_refunded, order_to) = if returns_late_capture(payment) {
        (payment.status, order.refunded.minor(), order.status)
    } else {
        let payment_to = payment.status.refund_reversed(payment_refunded > 0).ok_or_else(|| {
            Error::Internal(format!(
                "reversing refund {} of payment {} that is {}",
                refund.id, payment.id, payment.status
            ))
        })?;
        let order_refunded = order.refunded.minor() - amount;
        let order_to = order
            .status
            .refund_reversed(order_refunded > 0)
            .map_err(|e| Error::Conflict(format!("order {}: {e}", order.id)))?;
        (payment_to, order_refunded, order_to)
    };
    Ok(RefundSettlement {
        payment_refunded,
        reserved_delta: -amount,
        payment: StatusChange { from: payment.status, to: payment_to },
        order_refunded,
        order: StatusChange { from: order.status, to: order_to },
        actor: Actor::System,
        reason: format!(
            "refund {} of {} on payment {} failed at the provider: {why}",
            refund.id, refund.amount, payment.id
        ),
    })
}

/// True for a payment SOM had ended without money (CANCELLED, FAILED): its refunds return
/// money the provider captured anyway, and touch neither its status nor its order.
fn returns_late_capture(payment: &Payment) -> bool {
    PaymentStatus::ENDED_UNCAPTURED.contains(&payment.status)
}

/// Making a fulfilment of `order`: its lines (what was asked, or everything left), checked
/// against the order's `others`. `Conflict` when the order's goods may not be fulfilled.
pub fn new_fulfillment(
    order: &Order,
    asked: Option<&[ItemQuantity]>,
    others: &[Fulfillment],
) -> Result<Vec<ItemQuantity>> {
    if !may_fulfil(order.status) {
        return Err(Error::Conflict(format!(
            "order {} is {}; only an authorised or paid order's goods can be fulfilled",
            order.id, order.status
        )));
    }
    fulfillment_lines(order, asked, others)
}

/// The statuses of a payment that took an order's money (whatever was refunded of it since):
/// the one a shipment is checked against and a return refunds.
pub const CAPTURED: [PaymentStatus; 3] =
    [PaymentStatus::Success, PaymentStatus::PartiallyRefunded, PaymentStatus::Refunded];

/// A fulfilment's step, decided: the fulfilment as it is to be stored, or `None` when its
/// status does not allow the step. Shipping needs the order's money taken (an authorised
/// payment is captured first) and never sends more value than was captured: `others` are the
/// order's other fulfilments, `captured` its payment that took the money, if any.
pub fn fulfillment_step(
    order: &Order,
    f: &Fulfillment,
    step: &FulfillmentStep,
    others: &[Fulfillment],
    captured: Option<&Payment>,
    at: DateTime<Utc>,
) -> Result<Option<Fulfillment>> {
    let Ok(to) = f.status.apply(step) else { return Ok(None) };
    if matches!(step, FulfillmentStep::Ship(_)) {
        may_ship(order, f, others, captured)?;
    }
    let mut next = f.clone();
    next.status = to;
    next.updated_at = at;
    match step {
        FulfillmentStep::Ship(tracking) => {
            next.tracking = f.tracking.merged(tracking);
            next.shipped_at = Some(at);
        }
        FulfillmentStep::Deliver => next.delivered_at = Some(at),
        FulfillmentStep::Cancel => {}
    }
    Ok(Some(next))
}

/// Goods leave only for money taken: the order is PAID (or partly refunded since), and what has
/// shipped with this parcel is worth no more than its payment captured — after a partial
/// capture the rest of the authorisation is gone, and so is the right to ship the rest.
fn may_ship(order: &Order, f: &Fulfillment, others: &[Fulfillment], captured: Option<&Payment>) -> Result<()> {
    match order.status {
        OrderStatus::Paid | OrderStatus::PartiallyRefunded => {}
        OrderStatus::Authorized => {
            return Err(Error::Conflict(format!(
                "order {} is AUTHORIZED: its payment is only held; capture it before shipping, or ship with capture",
                order.id
            )));
        }
        status => {
            return Err(Error::Conflict(format!("order {} is {status}; its goods cannot be shipped", order.id)));
        }
    }
    let shipped: Vec<ItemQuantity> = others
        .iter()
        .filter(|o| o.id != f.id && o.status.shipped())
        .flat_map(|o| o.items.iter().copied())
        .chain(f.items.iter().copied())
        .collect();
    let value = lines_value(order, &shipped);
    let taken = captured.map_or(0, |p| p.captured.minor());
    if value.minor() > taken {
        return Err(Error::Conflict(format!(
            "order {}'s payment captured {}; with fulfilment {} the goods shipped would be worth {value}",
            order.id,
            Money::from_minor(taken, order.currency()),
            f.id
        )));
    }
    Ok(())
}

/// What a refund's ending does to the return it pays, if any: succeeded `RECEIVED → REFUNDED`;
/// reversed at the provider (no money went back after all) `REFUNDED → RECEIVED`, so that the
/// return may be received again.
pub fn return_after_refund(succeeded: bool) -> StatusChange<ReturnStatus> {
    let (received, refunded) = (ReturnStatus::Received, ReturnStatus::Refunded);
    if succeeded {
        StatusChange { from: received, to: received.refunded().unwrap_or(refunded) }
    } else {
        StatusChange { from: refunded, to: refunded.refund_reversed().unwrap_or(received) }
    }
}

/// The error for a receipt whose refund could not be set aside (`payment` as it is now).
pub fn return_refund_refused(payment: Option<&Payment>, amount: Money) -> Error {
    match payment {
        Some(p) => {
            Error::Conflict(format!("payment {} has only {} left to refund, less than {amount}", p.id, p.refundable()))
        }
        None => Error::Conflict("the order has no captured payment to refund".into()),
    }
}

/// What the order's event says of a fulfilment's or return's change.
pub fn after_payment_reason(what: &str, id: i64, verb: &str, detail: &str) -> String {
    if detail.is_empty() { format!("{what} {id} {verb}") } else { format!("{what} {id} {verb}: {detail}") }
}

/// What the order's event says of a return that just took a step.
pub fn return_reason(r: &Return) -> String {
    let verb = r.status.as_str().to_ascii_lowercase();
    let detail = match (&r.note, r.refund_amount) {
        (Some(note), _) if r.status == ReturnStatus::Rejected => note.clone(),
        (_, Some(amount)) => format!("refund of {amount}"),
        _ => String::new(),
    };
    after_payment_reason("return", r.id.get(), &verb, &detail)
}

/// A return's step, decided: the return as it is to be stored and the refund its receipt sets
/// aside, or `None` when its status does not allow the step. `payment` is the order's captured
/// payment, if any; `prior` the refund of an earlier receipt (receiving again only retries a
/// refund that failed, or adds one to a return received without).
pub fn return_step(
    order: &Order,
    r: &Return,
    step: &ReturnStep,
    payment: Option<&Payment>,
    prior: Option<&Refund>,
    actor: &Actor,
    at: DateTime<Utc>,
) -> Result<Option<(Return, Option<NewRefundRecord>)>> {
    let Ok(to) = r.status.apply(step) else { return Ok(None) };
    if r.status == ReturnStatus::Received && prior.is_some_and(|p| p.status != RefundStatus::Failed) {
        return Ok(None);
    }
    let mut next = r.clone();
    next.status = to;
    next.updated_at = at;
    let mut refund = None;
    match step {
        ReturnStep::Approve => {}
        ReturnStep::Reject { note } => next.note = Some(note.clone()),
        ReturnStep::Receive { refund: None } => {
            next.refund_id = None;
            next.refund_amount = None;
        }
        ReturnStep::Receive { refund: Some(asked) } => {
            let payment = payment.filter(|p| p.status.is_refundable()).ok_or_else(|| {
                Error::Conflict(format!(
                    "order {} has no captured payment to refund; capture it first, or receive the return with amount 0",
                    order.id
                ))
            })?;
            let amount = return_refund(lines_value(order, &r.items), asked.amount, payment.refundable())?;
            let reason = match &r.reason {
                Some(why) => format!("return {}: {why}", r.id),
                None => format!("return {}", r.id),
            };
            refund = Some(NewRefundRecord {
                payment_id: payment.id,
                late_capture: false,
                amount,
                reason: Some(reason),
                actor: actor.clone(),
                request_key: Some(format!("return:{}:{}", r.id, at.timestamp_micros())),
                provider_refund_id: None,
                created_at: at,
            });
            next.refund_amount = Some(amount);
        }
    }
    Ok(Some((next, refund)))
}

/// An idempotency key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIdempotency {
    /// The hash of the request that first used the key.
    pub request_hash: String,
    /// That request's result, once it finished.
    pub response: Option<String>,
    /// When a request last took the key and has not finished.
    pub locked_at: Option<DateTime<Utc>>,
    /// When the key is forgotten.
    pub expires_at: DateTime<Utc>,
}

/// What a request with `request_hash` may do with a key stored as `stored` (`None`: unused).
/// `Started` means the request takes the key (new, expired, or abandoned by a request that
/// locked it before `stale_before`); the backend then (re)writes it.
pub fn decide_idempotency(
    stored: Option<&StoredIdempotency>,
    request_hash: &str,
    now: DateTime<Utc>,
    stale_before: DateTime<Utc>,
) -> IdempotencyBegin {
    let Some(stored) = stored else { return IdempotencyBegin::Started };
    if stored.expires_at <= now {
        return IdempotencyBegin::Started;
    }
    if stored.request_hash != request_hash {
        return IdempotencyBegin::Mismatch;
    }
    match (&stored.response, stored.locked_at) {
        (Some(response), _) => IdempotencyBegin::Replay(response.clone()),
        (None, locked) if locked.is_none_or(|l| l < stale_before) => IdempotencyBegin::Started,
        (None, _) => IdempotencyBegin::InProgress,
    }
}

/// A refresh token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRefreshToken {
    /// Its session.
    pub family: String,
    /// Its user.
    pub user_id: UserId,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// Whether it was used (rotated) before.
    pub used: bool,
    /// Whether its session's tokens were revoked.
    pub revoked: bool,
}

/// What presenting a refresh token means. `stored` is the token's row (`None`: unknown) and
/// `session_live` whether its session is live. `Rotated`: use it and store its successor;
/// `ReuseDetected`: a used token came back — revoke its whole session; `Rejected`: nothing.
pub fn decide_rotation(
    stored: Option<&StoredRefreshToken>,
    family: &str,
    user_id: UserId,
    session_live: bool,
    now: DateTime<Utc>,
) -> RotateOutcome {
    let Some(t) = stored else { return RotateOutcome::Rejected };
    if t.family != family || t.user_id != user_id || t.revoked || t.expires_at <= now || !session_live {
        return RotateOutcome::Rejected;
    }
    if t.used { RotateOutcome::ReuseDetected } else { RotateOutcome::Rotated }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn key(response: Option<&str>, locked_ago: Option<i64>, expires_in: i64) -> StoredIdempotency {
        let now = Utc::now();
        StoredIdempotency {
            request_hash: "h".into(),
            response: response.map(str::to_owned),
            locked_at: locked_ago.map(|s| now - Duration::seconds(s)),
            expires_at: now + Duration::seconds(expires_in),
        }
    }

    #[test]
    fn transitions_are_the_domains() {
        let (order, payment) = cancellation();
        assert_eq!((order.from, order.to), (OrderStatus::Created, OrderStatus::Cancelled));
        assert_eq!((payment.from, payment.to), (PaymentStatus::Pending, PaymentStatus::Cancelled));
        let (payment, order) = completion(&PaymentOutcome::Succeeded);
        assert_eq!(
            (payment.to, order.map(|o| (o.from, o.to))),
            (PaymentStatus::Success, Some((OrderStatus::Created, OrderStatus::Paid)))
        );
        let (payment, order) = completion(&PaymentOutcome::Failed { reason: "no".into() });
        assert_eq!((payment.from, payment.to, order), (PaymentStatus::Pending, PaymentStatus::Failed, None));
        let (payment, order) = completion(&PaymentOutcome::Authorized { expires_at: Utc::now() });
        assert_eq!(
            (payment.to, order.map(|o| (o.from, o.to))),
            (PaymentStatus::Authorized, Some((OrderStatus::Created, OrderStatus::Authorized)))
        );
        let id = crate::domain::PaymentId::new(1);
        let usd = |m| crate::domain::Money::from_minor(m, crate::domain::Currency::USD);
        let (payment, order, _) = settlement(id, &SettlementOutcome::Captured { amount: usd(5) });
        assert_eq!(
            (payment.from, payment.to, order.from, order.to),
            (PaymentStatus::Authorized, PaymentStatus::Success, OrderStatus::Authorized, OrderStatus::Paid)
        );
        let (payment, order, _) = settlement(id, &SettlementOutcome::Released { expired: true, reason: "x".into() });
        assert_eq!((payment.to, order.to), (PaymentStatus::Expired, OrderStatus::Cancelled));
        let (payment, _, _) = settlement(id, &SettlementOutcome::Released { expired: false, reason: "x".into() });
        assert_eq!(payment.to, PaymentStatus::Voided);
    }

    #[test]
    fn idempotency_keys_start_replay_mismatch_or_wait() {
        let now = Utc::now();
        let stale = now - Duration::seconds(120);
        let decide = |k: Option<&StoredIdempotency>, h: &str| decide_idempotency(k, h, now, stale);
        assert_eq!(decide(None, "h"), IdempotencyBegin::Started);
        assert_eq!(decide(Some(&key(Some("r"), None, 60)), "h"), IdempotencyBegin::Replay("r".into()));
        assert_eq!(decide(Some(&key(Some("r"), None, 60)), "other"), IdempotencyBegin::Mismatch);
        assert_eq!(decide(Some(&key(None, Some(5), 60)), "h"), IdempotencyBegin::InProgress);
        assert_eq!(decide(Some(&key(None, Some(5), 60)), "other"), IdempotencyBegin::Mismatch);
        // Abandoned by a request that died, or expired: taken over.
        assert_eq!(decide(Some(&key(None, Some(500), 60)), "h"), IdempotencyBegin::Started);
        assert_eq!(decide(Some(&key(None, None, 60)), "h"), IdempotencyBegin::Started);
        assert_eq!(decide(Some(&key(Some("r"), None, -1)), "other"), IdempotencyBegin::Started);
    }

    #[test]
    fn refresh_tokens_rotate_once_and_a_second_use_revokes_the_session() {
        let now = Utc::now();
        let alice = UserId::new(1);
        let token = |used, revoked, expires_in: i64| StoredRefreshToken {
            family: "f".into(),
            user_id: alice,
            expires_at: now + Duration::seconds(expires_in),
            used,
            revoked,
        };
        let fresh = token(false, false, 60);
        assert_eq!(decide_rotation(Some(&fresh), "f", alice, true, now), RotateOutcome::Rotated);
        assert_eq!(decide_rotation(Some(&token(true, false, 60)), "f", alice, true, now), RotateOutcome::ReuseDetected);
        for rejected in [
            decide_rotation(None, "f", alice, true, now),
            decide_rotation(Some(&fresh), "g", alice, true, now),
            decide_rotation(Some(&fresh), "f", UserId::new(2), true, now),
            decide_rotation(Some(&fresh), "f", alice, false, now),
            decide_rotation(Some(&token(false, true, 60)), "f", alice, true, now),
            decide_rotation(Some(&token(false, false, -1)), "f", alice, true, now),
            decide_rotation(Some(&token(true, false, 60)), "f", alice, false, now),
        ] {
            assert_eq!(rejected, RotateOutcome::Rejected);
        }
    }
}
