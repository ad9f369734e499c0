//! Fulfilments and returns on PostgreSQL. Every write locks the order's row first (a receipt
//! that refunds locks the payment's before it, as every writer does), so concurrent
//! fulfilments of one order queue there and each checks the quantities the one before it left.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::refunds::{Reserved, reserve_in};
use super::*;
use crate::domain::{
    Fulfillment, FulfillmentId, FulfillmentState, FulfillmentStatus, FulfillmentStep, Order, OrderId, Payment,
    PaymentStatus, RefundId, Return, ReturnId, ReturnStatus, ReturnStep,
};
use crate::error::{Error, Result};
use crate::storage::policy::{
    CAPTURED, after_payment_reason, fulfillment_step, new_fulfillment, return_after_refund, return_reason,
    return_refund_refused, return_step,
};
use crate::storage::rows::{FulfillmentRow, ReturnRow, lines_json};
use crate::storage::{
    AfterPaymentQuery, FulfillmentNotify, FulfillmentStore, NewFulfillmentRecord, NewReturnRecord, ReturnChange,
    ReturnNotify, Transition,
};

/// Returns with their order's currency, filtered by `$filter`.
macro_rules! returns {
    ($filter:literal) => {
        concat!("SELECT r.*, o.currency FROM returns r JOIN orders o ON o.id = r.order_id", $filter)
    };
}

fn fulfillment_from(row: &PgRow) -> Result<Fulfillment> {
    FulfillmentRow::from_row(row)?.into_fulfillment()
}

fn return_from(row: &PgRow) -> Result<Return> {
    ReturnRow::from_row(row)?.into_return()
}

async fn fulfillment(conn: &mut sqlx::PgConnection, id: FulfillmentId, lock: bool) -> Result<Option<Fulfillment>> {
    let sql = if lock {
        "SELECT * FROM fulfillments WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT * FROM fulfillments WHERE id = $1"
    };
    let row = sqlx::query(sql).bind(id.get()).fetch_optional(conn).await?;
    row.as_ref().map(fulfillment_from).transpose()
}

async fn a_return(conn: &mut sqlx::PgConnection, id: ReturnId, lock: bool) -> Result<Option<Return>> {
    let sql = if lock { returns!(" WHERE r.id = $1 FOR UPDATE OF r") } else { returns!(" WHERE r.id = $1") };
    let row = sqlx::query(sql).bind(id.get()).fetch_optional(conn).await?;
    row.as_ref().map(return_from).transpose()
}

async fn of_order(conn: &mut sqlx::PgConnection, order: OrderId) -> Result<(Vec<Fulfillment>, Vec<Return>)> {
    let rows = sqlx::query("SELECT * FROM fulfillments WHERE order_id = $1 ORDER BY id")
        .bind(order.get())
        .fetch_all(&mut *conn)
        .await?;
    let fulfillments = rows.iter().map(fulfillment_from).collect::<Result<Vec<_>>>()?;
    let rows =
        sqlx::query(returns!(" WHERE r.order_id = $1 ORDER BY r.id")).bind(order.get()).fetch_all(&mut *conn).await?;
    let returns = rows.iter().map(return_from).collect::<Result<Vec<_>>>()?;
    Ok((fulfillments, returns))
}

/// The order's payment that took its money ([`CAPTURED`]), if any; `lock` takes its row lock
/// (before the order's, as every writer does).
async fn captured_payment(tx: &mut Tx<'_>, order: OrderId, lock: bool) -> Result<Option<Payment>> {
    let sql = if lock {
        "SELECT * FROM payments WHERE order_id = $1 AND status = ANY($2) ORDER BY id DESC LIMIT 1 FOR UPDATE"
    } else {
        "SELECT * FROM payments WHERE order_id = $1 AND status = ANY($2) ORDER BY id DESC LIMIT 1"
    };
    let row =
        sqlx::query(sql).bind(order.get()).bind(PaymentStatus::names(&CAPTURED)).fetch_optional(&mut **tx).await?;
    row.as_ref().map(payment_from).transpose()
}

/// The order, its row locked for the rest of the transaction.
async fn lock_order(tx: &mut Tx<'_>, id: OrderId) -> Result<Order> {
    let row = sqlx::query(order_with_items!("WHERE o.id = $1 FOR UPDATE"))
        .bind(id.get())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("order {id}")))?;
    order_from_row(&row)
}

/// The order's fulfilment status after a change, and its event.
async fn record(tx: &mut Tx<'_>, mut order: Order, actor: &Actor, reason: &str, at: DateTime<Utc>) -> Result<Order> {
    let (fulfillments, returns) = of_order(tx, order.id).await?;
    let state = FulfillmentState::of(&order, &fulfillments, &returns);
    if state != order.fulfillment {
        sqlx::query("UPDATE orders SET fulfillment_status = $2, updated_at = $3 WHERE id = $1")
            .bind(order.id.get())
            .bind(state.as_str())
            .bind(at)
            .execute(&mut **tx)
            .await?;
        order.fulfillment = state;
        order.updated_at = at;
    }
    insert_event(tx, order.id, Some(order.status), order.status, actor, reason, at).await?;
    Ok(order)
}

async fn create(tx: &mut Tx<'_>, r: &NewFulfillmentRecord, notify: FulfillmentNotify) -> Result<Fulfillment> {
    let order = lock_order(tx, r.order_id).await?;
    let (others, _) = of_order(tx, order.id).await?;
    let lines = new_fulfillment(&order, r.items.as_deref(), &others)?;
    let row = sqlx::query(
        "INSERT INTO fulfillments (order_id, user_id, status, items, carrier, tracking_number, tracking_url, actor, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING *",
    )
    .bind(order.id.get())
    .bind(order.user_id.get())
    .bind(FulfillmentStatus::Pending.as_str())
    .bind(lines_json(&lines)?)
    .bind(&r.tracking.carrier)
    .bind(&r.tracking.number)
    .bind(&r.tracking.url)
    .bind(r.actor.to_string())
    .bind(r.created_at)
    .fetch_one(&mut **tx)
    .await?;
    let f = fulfillment_from(&row)?;
    let reason = after_payment_reason("fulfilment", f.id.get(), "created", "");
    let order = record(tx, order, &r.actor, &reason, r.created_at).await?;
    insert_outbox(tx, notify(&order, &f), r.created_at).await?;
    Ok(f)
}

async fn advance(
    tx: &mut Tx<'_>,
    id: FulfillmentId,
    step: &FulfillmentStep,
    actor: &Actor,
    at: DateTime<Utc>,
    notify: FulfillmentNotify,
) -> Result<Transition<Fulfillment>> {
    let found = fulfillment(tx, id, false).await?.ok_or_else(|| Error::NotFound(format!("fulfillment {id}")))?;
    let order = lock_order(tx, found.order_id).await?;
    let current = fulfillment(tx, id, true).await?.ok_or_else(|| corrupt("fulfilment"))?;
    let (others, _) = of_order(tx, order.id).await?;
    // Read under the order's lock: a capture changes the payment and the order together.
    let payment = captured_payment(tx, order.id, false).await?;
    let decided = fulfillment_step(&order, &current, step, &others, payment.as_ref(), at)?;
    let Some(next) = decided else { return Ok(Transition::NotApplied(current)) };
    let row = sqlx::query(
        "UPDATE fulfillments SET status = $2, carrier = $3, tracking_number = $4, tracking_url = $5, shipped_at = $6, \
         delivered_at = $7, updated_at = $8 WHERE id = $1 RETURNING *",
    )
    .bind(id.get())
    .bind(next.status.as_str())
    .bind(&next.tracking.carrier)
    .bind(&next.tracking.number)
    .bind(&next.tracking.url)
    .bind(next.shipped_at)
    .bind(next.delivered_at)
    .bind(at)
    .fetch_one(&mut **tx)
    .await?;
    let next = fulfillment_from(&row)?;
    let reason = after_payment_reason("fulfilment", id.get(), step.verb(), &next.tracking.describe());
    let order = record(tx, order, actor, &reason, at).await?;
    insert_outbox(tx, notify(&order, &next), at).await?;
    Ok(Transition::Applied(next))
}

async fn request(tx: &mut Tx<'_>, r: &NewReturnRecord, notify: ReturnNotify) -> Result<Return> {
    let order = lock_order(tx, r.order_id).await?;
    let (fulfillments, others) = of_order(tx, order.id).await?;
    let lines = crate::domain::return_lines(&order, &r.items, &fulfillments, &others)?;
    let row = sqlx::query(
        "INSERT INTO returns (order_id, user_id, status, items, reason, actor, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
    )
    .bind(order.id.get())
    .bind(order.user_id.get())
    .bind(ReturnStatus::Requested.as_str())
    .bind(lines_json(&lines)?)
    .bind(&r.reason)
    .bind(r.actor.to_string())
    .bind(r.created_at)
    .fetch_one(&mut **tx)
    .await?;
    let id = ReturnId::new(row.try_get("id")?);
    let ret = a_return(tx, id, false).await?.ok_or_else(|| corrupt("return"))?;
    let reason = after_payment_reason("return", id.get(), "requested", ret.reason.as_deref().unwrap_or(""));
    let order = record(tx, order, &r.actor, &reason, r.created_at).await?;
    insert_outbox(tx, notify(&order, &ret), r.created_at).await?;
    Ok(ret)
}

async fn advance_return(
    tx: &mut Tx<'_>,
    id: ReturnId,
    step: &ReturnStep,
    actor: &Actor,
    at: DateTime<Utc>,
    notify: ReturnNotify,
) -> Result<Transition<ReturnChange>> {
    let found = a_return(tx, id, false).await?.ok_or_else(|| Error::NotFound(format!("return {id}")))?;
    // Payment, order, return: the order every writer locks them in.
    let payment = captured_payment(tx, found.order_id, true).await?;
    let order = lock_order(tx, found.order_id).await?;
    let current = a_return(tx, id, true).await?.ok_or_else(|| corrupt("return"))?;
    let prior = match current.refund_id {
        Some(refund) => super::refunds::by_id(tx, refund).await?,
        None => None,
    };
    let decided = return_step(&order, &current, step, payment.as_ref(), prior.as_ref(), actor, at)?;
    let Some((mut next, refund)) = decided else {
        return Ok(Transition::NotApplied(ReturnChange { ret: current, refund: prior }));
    };
    let refund = match refund {
        None => None,
        Some(record) => match reserve_in(tx, &record).await? {
            Reserved::Refund(refund) => Some(refund),
            Reserved::Refused | Reserved::KeyTaken => {
                return Err(return_refund_refused(payment.as_ref(), record.amount));
            }
        },
    };
    if let Some(refund) = &refund {
        next.refund_id = Some(refund.id);
    }
    sqlx::query(
        "UPDATE returns SET status = $2, note = $3, refund_id = $4, refund_minor = $5, updated_at = $6 WHERE id = $1",
    )
    .bind(id.get())
    .bind(next.status.as_str())
    .bind(&next.note)
    .bind(next.refund_id.map(RefundId::get))
    .bind(next.refund_amount.map(|m| m.minor()))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    let ret = a_return(tx, id, false).await?.ok_or_else(|| corrupt("return"))?;
    let order = record(tx, order, actor, &return_reason(&ret), at).await?;
    insert_outbox(tx, notify(&order, &ret), at).await?;
    Ok(Transition::Applied(ReturnChange { ret, refund }))
}

/// The return a refund pays follows the refund's ending ([`return_after_refund`]), in the
/// refund's transaction.
pub(super) async fn return_follows_refund(
    tx: &mut Tx<'_>,
    refund: RefundId,
    succeeded: bool,
    at: DateTime<Utc>,
) -> Result<()> {
    let change = return_after_refund(succeeded);
    sqlx::query("UPDATE returns SET status = $2, updated_at = $3 WHERE refund_id = $1 AND status = $4")
        .bind(refund.get())
        .bind(change.to.as_str())
        .bind(at)
        .bind(change.from.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl FulfillmentStore for PostgresStorage {
    async fn create_fulfillment(&self, record: NewFulfillmentRecord, notify: FulfillmentNotify) -> Result<Fulfillment> {
        let record = NewFulfillmentRecord { created_at: truncate(record.created_at), ..record };
        let mut tx = self.begin().await?;
        let f = create(&mut tx, &record, notify).await?;
        tx.commit().await?;
        self.announcer.announce().await;
        Ok(f)
    }

    async fn advance_fulfillment(
        &self,
        id: FulfillmentId,
        step: FulfillmentStep,
        actor: Actor,
        at: DateTime<Utc>,
        notify: FulfillmentNotify,
    ) -> Result<Transition<Fulfillment>> {
        let mut tx = self.begin().await?;
        let result = advance(&mut tx, id, &step, &actor, truncate(at), notify).await?;
        tx.commit().await?;
        Ok(self.announced(result).await)
    }

    async fn fulfillment_by_id(&self, id: FulfillmentId) -> Result<Option<Fulfillment>> {
        let row = self.row(sqlx::query("SELECT * FROM fulfillments WHERE id = $1").bind(id.get())).await?;
        row.as_ref().map(fulfillment_from).transpose()
    }

    async fn fulfillments_for_order(&self, order_id: OrderId) -> Result<Vec<Fulfillment>> {
        let rows = self
            .rows(sqlx::query("SELECT * FROM fulfillments WHERE order_id = $1 ORDER BY id").bind(order_id.get()))
            .await?;
        rows.iter().map(fulfillment_from).collect()
    }

    async fn list_fulfillments(&self, query: AfterPaymentQuery<FulfillmentStatus>) -> Result<Vec<Fulfillment>> {
        let rows = self
            .rows(
                sqlx::query(
                    "SELECT * FROM fulfillments WHERE id > $1 AND ($2::text IS NULL OR status = $2) ORDER BY id LIMIT $3",
                )
                .bind(query.after.unwrap_or(0))
                .bind(query.status.map(FulfillmentStatus::as_str))
                .bind(i64::from(query.limit)),
            )
            .await?;
        rows.iter().map(fulfillment_from).collect()
    }

    async fn request_return(&self, record: NewReturnRecord, notify: ReturnNotify) -> Result<Return> {
        let record = NewReturnRecord { created_at: truncate(record.created_at), ..record };
        let mut tx = self.begin().await?;
        let r = request(&mut tx, &record, notify).await?;
        tx.commit().await?;
        self.announcer.announce().await;
        Ok(r)
    }

    async fn advance_return(
        &self,
        id: ReturnId,
        step: ReturnStep,
        actor: Actor,
        at: DateTime<Utc>,
        notify: ReturnNotify,
    ) -> Result<Transition<ReturnChange>> {
        let mut tx = self.begin().await?;
        let result = advance_return(&mut tx, id, &step, &actor, truncate(at), notify).await?;
        tx.commit().await?;
        Ok(self.announced(result).await)
    }

    async fn return_by_id(&self, id: ReturnId) -> Result<Option<Return>> {
        let row = self.row(sqlx::query(returns!(" WHERE r.id = $1")).bind(id.get())).await?;
        row.as_ref().map(return_from).transpose()
    }

    async fn returns_for_order(&self, order_id: OrderId) -> Result<Vec<Return>> {
        let rows =
            self.rows(sqlx::query(returns!(" WHERE r.order_id = $1 ORDER BY r.id")).bind(order_id.get())).await?;
        rows.iter().map(return_from).collect()
    }

    async fn list_returns(&self, query: AfterPaymentQuery<ReturnStatus>) -> Result<Vec<Return>> {
        let rows = self
            .rows(
                sqlx::query(returns!(
                    " WHERE r.id > $1 AND ($2::text IS NULL OR r.status = $2) ORDER BY r.id LIMIT $3"
                ))
                .bind(query.after.unwrap_or(0))
                .bind(query.status.map(ReturnStatus::as_str))
                .bind(i64::from(query.limit)),
            )
            .await?;
        rows.iter().map(return_from).collect()
    }
}
