//! Fulfilments and returns on SQLite. Every write runs in the writer's transaction, so the
//! quantity checks against the order's other rows cannot interleave with another writer's.

use super::*;
use crate::domain::{
    Fulfillment, FulfillmentId, FulfillmentState, FulfillmentStatus, FulfillmentStep, PaymentStatus, Return, ReturnId,
    ReturnStatus, ReturnStep,
};
use crate::storage::policy::{
    CAPTURED, after_payment_reason, fulfillment_step, new_fulfillment, return_after_refund, return_reason,
    return_refund_refused, return_step,
};
use crate::storage::rows::{FulfillmentRow, ReturnRow, lines_json};
use crate::storage::{
    AfterPaymentQuery, FulfillmentNotify, FulfillmentStore, NewFulfillmentRecord, NewReturnRecord, RefundReserve,
    ReturnChange, ReturnNotify,
};

const FULFILLMENT_COLUMNS: &str = "id, order_id, user_id, status, items, carrier, tracking_number, tracking_url, \
     actor, created_at, shipped_at, delivered_at, updated_at";

const RETURN_COLUMNS: &str = "r.id, r.order_id, r.user_id, r.status, r.items, r.reason, r.note, r.refund_id, \
     r.refund_minor, o.currency, r.actor, r.created_at, r.updated_at";

fn fulfillment_row(r: &Row<'_>) -> rusqlite::Result<Result<Fulfillment>> {
    let row = FulfillmentRow {
        id: r.get(0)?,
        order_id: r.get(1)?,
        user_id: r.get(2)?,
        status: r.get(3)?,
        items: r.get(4)?,
        carrier: r.get(5)?,
        tracking_number: r.get(6)?,
        tracking_url: r.get(7)?,
        actor: r.get(8)?,
        created_at: time(r.get(9)?),
        shipped_at: r.get::<_, Option<i64>>(10)?.map(time),
        delivered_at: r.get::<_, Option<i64>>(11)?.map(time),
        updated_at: time(r.get(12)?),
    };
    Ok(row.into_fulfillment())
}

fn return_row(r: &Row<'_>) -> rusqlite::Result<Result<Return>> {
    let row = ReturnRow {
        id: r.get(0)?,
        order_id: r.get(1)?,
        user_id: r.get(2)?,
        status: r.get(3)?,
        items: r.get(4)?,
        reason: r.get(5)?,
        note: r.get(6)?,
        refund_id: r.get(7)?,
        refund_minor: r.get(8)?,
        currency: r.get(9)?,
        actor: r.get(10)?,
        created_at: time(r.get(11)?),
        updated_at: time(r.get(12)?),
    };
    Ok(row.into_return())
}

fn fulfillments_where(
    conn: &Connection,
    where_clause: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Fulfillment>> {
    let sql = format!("SELECT {FULFILLMENT_COLUMNS} FROM fulfillments WHERE {where_clause}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, fulfillment_row)?;
    rows.map(|r| r?).collect()
}

fn returns_where(conn: &Connection, where_clause: &str, params: &[&dyn rusqlite::ToSql]) -> Result<Vec<Return>> {
    let sql = format!("SELECT {RETURN_COLUMNS} FROM returns r JOIN orders o ON o.id = r.order_id WHERE {where_clause}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, return_row)?;
    rows.map(|r| r?).collect()
}

fn fulfillment(conn: &Connection, id: FulfillmentId) -> Result<Option<Fulfillment>> {
    Ok(fulfillments_where(conn, "id = ?1", &[&id.get()])?.pop())
}

fn a_return(conn: &Connection, id: ReturnId) -> Result<Option<Return>> {
    Ok(returns_where(conn, "r.id = ?1", &[&id.get()])?.pop())
}

fn of_order(conn: &Connection, order: OrderId) -> Result<(Vec<Fulfillment>, Vec<Return>)> {
    Ok((
        fulfillments_where(conn, "order_id = ?1 ORDER BY id", &[&order.get()])?,
        returns_where(conn, "r.order_id = ?1 ORDER BY r.id", &[&order.get()])?,
    ))
}

/// The order's payment that took its money ([`CAPTURED`]), if any.
fn captured_payment(conn: &Connection, order: OrderId) -> Result<Option<Payment>> {
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = ?1 AND status IN (SELECT value FROM json_each(?2)) \
         ORDER BY id DESC LIMIT 1"
    );
    let captured = status_list(&PaymentStatus::names(&CAPTURED));
    conn.prepare_cached(&sql)?.query_row(params![order.get(), captured], payment_row).optional()?.transpose()
}

fn the_order(conn: &Connection, id: OrderId) -> Result<Order> {
    order_by_id(conn, id)?.ok_or_else(|| Error::NotFound(format!("order {id}")))
}

/// The order's fulfilment status after a change, its event and its outbox rows.
fn record(tx: &Transaction<'_>, mut order: Order, actor: &Actor, reason: &str, at: DateTime<Utc>) -> Result<Order> {
    let (fulfillments, returns) = of_order(tx, order.id)?;
    let state = FulfillmentState::of(&order, &fulfillments, &returns);
    if state != order.fulfillment {
        tx.execute(
            "UPDATE orders SET fulfillment_status = ?2, updated_at = ?3 WHERE id = ?1",
            params![order.id.get(), state.as_str(), micros(at)],
        )?;
        order.fulfillment = state;
        order.updated_at = at;
    }
    insert_event(tx, order.id, Some(order.status), order.status, actor, reason, at)?;
    Ok(order)
}

fn create(tx: &Transaction<'_>, r: &NewFulfillmentRecord, notify: FulfillmentNotify) -> Result<Fulfillment> {
    let order = the_order(tx, r.order_id)?;
    let (others, _) = of_order(tx, order.id)?;
    let lines = new_fulfillment(&order, r.items.as_deref(), &others)?;
    let at = micros(r.created_at);
    tx.prepare_cached(
        "INSERT INTO fulfillments (order_id, user_id, status, items, carrier, tracking_number, tracking_url, actor, \
         created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
    )?
    .execute(params![
        order.id.get(),
        order.user_id.get(),
        FulfillmentStatus::Pending.as_str(),
        lines_json(&lines)?,
        r.tracking.carrier,
        r.tracking.number,
        r.tracking.url,
        r.actor.to_string(),
        at
    ])?;
    let f = fulfillment(tx, FulfillmentId::new(tx.last_insert_rowid()))?.ok_or_else(|| corrupt("fulfilment"))?;
    let reason = after_payment_reason("fulfilment", f.id.get(), "created", "");
    let order = record(tx, order, &r.actor, &reason, r.created_at)?;
    insert_outbox(tx, notify(&order, &f), r.created_at)?;
    Ok(f)
}

fn advance(
    tx: &Transaction<'_>,
    id: FulfillmentId,
    step: &FulfillmentStep,
    actor: &Actor,
    at: DateTime<Utc>,
    notify: FulfillmentNotify,
) -> Result<Transition<Fulfillment>> {
    let current = fulfillment(tx, id)?.ok_or_else(|| Error::NotFound(format!("fulfillment {id}")))?;
    let order = the_order(tx, current.order_id)?;
    let (others, _) = of_order(tx, order.id)?;
    let payment = captured_payment(tx, order.id)?;
    let decided = fulfillment_step(&order, &current, step, &others, payment.as_ref(), at)?;
    let Some(next) = decided else { return Ok(Transition::NotApplied(current)) };
    tx.execute(
        "UPDATE fulfillments SET status = ?2, carrier = ?3, tracking_number = ?4, tracking_url = ?5, shipped_at = ?6, \
         delivered_at = ?7, updated_at = ?8 WHERE id = ?1 AND status = ?9",
        params![
            id.get(),
            next.status.as_str(),
            next.tracking.carrier,
            next.tracking.number,
            next.tracking.url,
            next.shipped_at.map(micros),
            next.delivered_at.map(micros),
            micros(at),
            current.status.as_str()
        ],
    )?;
    let next = fulfillment(tx, id)?.ok_or_else(|| corrupt("fulfilment"))?;
    let reason = after_payment_reason("fulfilment", id.get(), step.verb(), &next.tracking.describe());
    let order = record(tx, order, actor, &reason, at)?;
    insert_outbox(tx, notify(&order, &next), at)?;
    Ok(Transition::Applied(next))
}

fn request(tx: &Transaction<'_>, r: &NewReturnRecord, notify: ReturnNotify) -> Result<Return> {
    let order = the_order(tx, r.order_id)?;
    let (fulfillments, others) = of_order(tx, order.id)?;
    let lines = crate::domain::return_lines(&order, &r.items, &fulfillments, &others)?;
    let at = micros(r.created_at);
    tx.prepare_cached(
        "INSERT INTO returns (order_id, user_id, status, items, reason, actor, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    )?
    .execute(params![
        order.id.get(),
        order.user_id.get(),
        ReturnStatus::Requested.as_str(),
        lines_json(&lines)?,
        r.reason,
        r.actor.to_string(),
        at
    ])?;
    let ret = a_return(tx, ReturnId::new(tx.last_insert_rowid()))?.ok_or_else(|| corrupt("return"))?;
    let reason = after_payment_reason("return", ret.id.get(), "requested", ret.reason.as_deref().unwrap_or(""));
    let order = record(tx, order, &r.actor, &reason, r.created_at)?;
    insert_outbox(tx, notify(&order, &ret), r.created_at)?;
    Ok(ret)
}

fn advance_return(
    tx: &Transaction<'_>,
    id: ReturnId,
    step: &ReturnStep,
    actor: &Actor,
    at: DateTime<Utc>,
    notify: ReturnNotify,
) -> Result<Transition<ReturnChange>> {
    let current = a_return(tx, id)?.ok_or_else(|| Error::NotFound(format!("return {id}")))?;
    let order = the_order(tx, current.order_id)?;
    let payment = captured_payment(tx, order.id)?;
    let prior = match current.refund_id {
        Some(refund) => refunds::by_id(tx, refund)?,
        None => None,
    };
    let decided = return_step(&order, &current, step, payment.as_ref(), prior.as_ref(), actor, at)?;
    let Some((mut next, refund)) = decided else {
        return Ok(Transition::NotApplied(ReturnChange { ret: current, refund: prior }));
    };
    let refund = match refund {
        None => None,
        Some(record) => match refunds::reserve(tx, &record)? {
            RefundReserve::Reserved(refund) => Some(refund),
            RefundReserve::Existing(_) | RefundReserve::Refused(_) => {
                return Err(return_refund_refused(payment.as_ref(), record.amount));
            }
        },
    };
    if let Some(refund) = &refund {
        next.refund_id = Some(refund.id);
    }
    tx.execute(
        "UPDATE returns SET status = ?2, note = ?3, refund_id = ?4, refund_minor = ?5, updated_at = ?6 \
         WHERE id = ?1 AND status = ?7",
        params![
            id.get(),
            next.status.as_str(),
            next.note,
            next.refund_id.map(|r| r.get()),
            next.refund_amount.map(|m| m.minor()),
            micros(at),
            current.status.as_str()
        ],
    )?;
    let ret = a_return(tx, id)?.ok_or_else(|| corrupt("return"))?;
    let order = record(tx, order, actor, &return_reason(&ret), at)?;
    insert_outbox(tx, notify(&order, &ret), at)?;
    Ok(Transition::Applied(ReturnChange { ret, refund }))
}

/// The return a refund pays follows the refund's ending ([`return_after_refund`]), in the
/// refund's transaction.
pub(super) fn return_follows_refund(
    tx: &Transaction<'_>,
    refund: crate::domain::RefundId,
    succeeded: bool,
    at: DateTime<Utc>,
) -> Result<()> {
    let change = return_after_refund(succeeded);
    tx.execute(
        "UPDATE returns SET status = ?2, updated_at = ?3 WHERE refund_id = ?1 AND status = ?4",
        params![refund.get(), change.to.as_str(), micros(at), change.from.as_str()],
    )?;
    Ok(())
}

fn page<S: Copy + Send + 'static>(q: &AfterPaymentQuery<S>) -> (i64, u32) {
    (q.after.unwrap_or(0), q.limit)
}

#[async_trait]
impl FulfillmentStore for SqliteStorage {
    async fn create_fulfillment(&self, record: NewFulfillmentRecord, notify: FulfillmentNotify) -> Result<Fulfillment> {
        let record = NewFulfillmentRecord { created_at: time(micros(record.created_at)), ..record };
        self.write(move |tx| create(tx, &record, notify)).await
    }

    async fn advance_fulfillment(
        &self,
        id: FulfillmentId,
        step: FulfillmentStep,
        actor: Actor,
        at: DateTime<Utc>,
        notify: FulfillmentNotify,
    ) -> Result<Transition<Fulfillment>> {
        let at = time(micros(at));
        self.write(move |tx| advance(tx, id, &step, &actor, at, notify)).await
    }

    async fn fulfillment_by_id(&self, id: FulfillmentId) -> Result<Option<Fulfillment>> {
        self.read_statement(move |c| fulfillment(c, id)).await
    }

    async fn fulfillments_for_order(&self, order_id: OrderId) -> Result<Vec<Fulfillment>> {
        self.read_statement(move |c| fulfillments_where(c, "order_id = ?1 ORDER BY id", &[&order_id.get()])).await
    }

    async fn list_fulfillments(&self, query: AfterPaymentQuery<FulfillmentStatus>) -> Result<Vec<Fulfillment>> {
        let (after, limit) = page(&query);
        let status = query.status.map(FulfillmentStatus::as_str);
        self.read_statement(move |c| {
            fulfillments_where(
                c,
                "id > ?1 AND (?2 IS NULL OR status = ?2) ORDER BY id LIMIT ?3",
                &[&after, &status, &limit],
            )
        })
        .await
    }

    async fn request_return(&self, record: NewReturnRecord, notify: ReturnNotify) -> Result<Return> {
        let record = NewReturnRecord { created_at: time(micros(record.created_at)), ..record };
        self.write(move |tx| request(tx, &record, notify)).await
    }

    async fn advance_return(
        &self,
        id: ReturnId,
        step: ReturnStep,
        actor: Actor,
        at: DateTime<Utc>,
        notify: ReturnNotify,
    ) -> Result<Transition<ReturnChange>> {
        let at = time(micros(at));
        self.write(move |tx| advance_return(tx, id, &step, &actor, at, notify)).await
    }

    async fn return_by_id(&self, id: ReturnId) -> Result<Option<Return>> {
        self.read_statement(move |c| a_return(c, id)).await
    }

    async fn returns_for_order(&self, order_id: OrderId) -> Result<Vec<Return>> {
        self.read_statement(move |c| returns_where(c, "r.order_id = ?1 ORDER BY r.id", &[&order_id.get()])).await
    }

    async fn list_returns(&self, query: AfterPaymentQuery<ReturnStatus>) -> Result<Vec<Return>> {
        let (after, limit) = page(&query);
        let status = query.status.map(ReturnStatus::as_str);
        self.read_statement(move |c| {
            returns_where(
                c,
                "r.id > ?1 AND (?2 IS NULL OR r.status = ?2) ORDER BY r.id LIMIT ?3",
                &[&after, &status, &limit],
            )
        })
        .await
    }
}
