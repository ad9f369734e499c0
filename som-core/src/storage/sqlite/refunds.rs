//! Refunds on SQLite: reserve, finish, read. Every write runs inside the writer's transaction,
//! so the reservation's check and update cannot interleave with another writer's.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::{corrupt, insert_event, insert_outbox, micros, order_by_id, query_payment, time};
use crate::domain::{Actor, Currency, Money, OrderId, PaymentId, Refund, RefundId, RefundStatus, UserId};
use crate::error::{Error, Result};
use crate::storage::{NewRefundRecord, RefundNotify, RefundOutcome, RefundReserve, Transition};

const COLUMNS: &str = "id, payment_id, order_id, user_id, amount_minor, currency, status, provider_refund_id, reason, \
     failure_reason, actor, created_at, updated_at";

fn row(r: &Row<'_>) -> rusqlite::Result<Result<Refund>> {
    let currency: String = r.get(5)?;
    let status: String = r.get(6)?;
    let actor: String = r.get(10)?;
    let amount: i64 = r.get(4)?;
    let (id, payment, order, user): (i64, i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    let (provider_refund_id, reason, failure_reason) = (r.get(7)?, r.get(8)?, r.get(9)?);
    let (created_at, updated_at): (i64, i64) = (r.get(11)?, r.get(12)?);
    Ok((|| {
        Ok(Refund {
            id: RefundId::new(id),
            payment_id: PaymentId::new(payment),
            order_id: OrderId::new(order),
            user_id: UserId::new(user),
            amount: Money::from_minor(amount, Currency::parse(&currency).map_err(|_| corrupt("currency"))?),
            status: RefundStatus::parse(&status).ok_or_else(|| corrupt("refund status"))?,
            provider_refund_id,
            reason,
            failure_reason,
            actor: Actor::try_from(actor).map_err(|_| corrupt("refund actor"))?,
            created_at: time(created_at),
            updated_at: time(updated_at),
        })
    })())
}

fn query(conn: &Connection, where_clause: &str, param: &dyn rusqlite::ToSql) -> Result<Option<Refund>> {
    let sql = format!("SELECT {COLUMNS} FROM refunds WHERE {where_clause}");
    conn.query_row(&sql, [param], row).optional()?.transpose()
}

pub(super) fn by_id(conn: &Connection, id: RefundId) -> Result<Option<Refund>> {
    query(conn, "id = ?1", &id.get())
}

pub(super) fn for_payment(conn: &Connection, payment: PaymentId) -> Result<Vec<Refund>> {
    let sql = format!("SELECT {COLUMNS} FROM refunds WHERE payment_id = ?1 ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([payment.get()], row)?;
    rows.map(|r| r?).collect()
}

pub(super) fn pending(conn: &Connection, created_before: DateTime<Utc>, limit: u32) -> Result<Vec<Refund>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM refunds WHERE status = 'PENDING' AND created_at < ?1 ORDER BY created_at, id LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![micros(created_before), limit], row)?;
    rows.map(|r| r?).collect()
}

pub(super) fn reserve(tx: &Transaction<'_>, r: &NewRefundRecord) -> Result<RefundReserve> {
    if let Some(key) = &r.request_key
        && let Some(existing) = query(tx, "request_key = ?1", key)?
    {
        return Ok(RefundReserve::Existing(existing));
    }
    let id = r.payment_id;
    let reserved = tx.execute(
        "UPDATE payments SET refund_reserved_minor = refund_reserved_minor + ?2 \
         WHERE id = ?1 AND ?2 > 0 AND status IN ('SUCCESS', 'PARTIALLY_REFUNDED') AND currency = ?3 \
         AND refund_reserved_minor + ?2 <= amount_minor",
        params![id.get(), r.amount.minor(), r.amount.currency().code()],
    )?;
    let payment = query_payment(tx, "id = ?1", id.get())?.ok_or_else(|| Error::NotFound(format!("payment {id}")))?;
    if reserved == 0 {
        return Ok(RefundReserve::Refused(payment));
    }
    let at = micros(r.created_at);
    tx.prepare_cached(
        "INSERT INTO refunds (payment_id, order_id, user_id, amount_minor, currency, status, reason, actor, \
         request_key, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'PENDING', ?6, ?7, ?8, ?9, ?9)",
    )?
    .execute(params![
        id.get(),
        payment.order_id.get(),
        payment.user_id.get(),
        r.amount.minor(),
        r.amount.currency().code(),
        r.reason,
        r.actor.to_string(),
        r.request_key,
        at
    ])?;
    let refund = by_id(tx, RefundId::new(tx.last_insert_rowid()))?.ok_or_else(|| corrupt("refund just inserted"))?;
    Ok(RefundReserve::Reserved(refund))
}

pub(super) fn finish(
    tx: &Transaction<'_>,
    id: RefundId,
    outcome: &RefundOutcome,
    at: DateTime<Utc>,
    notify: RefundNotify,
) -> Result<Transition<Refund>> {
    let current = by_id(tx, id)?.ok_or_else(|| Error::NotFound(format!("refund {id}")))?;
    if current.status != RefundStatus::Pending {
        return Ok(Transition::NotApplied(current));
    }
    let amount = current.amount.minor();
    let payment_id = current.payment_id;
    match outcome {
        RefundOutcome::Failed { reason } => {
            tx.execute(
                "UPDATE refunds SET status = 'FAILED', failure_reason = ?2, updated_at = ?3 WHERE id = ?1",
                params![id.get(), reason, micros(at)],
            )?;
            tx.execute(
                "UPDATE payments SET refund_reserved_minor = refund_reserved_minor - ?2 WHERE id = ?1",
                params![payment_id.get(), amount],
            )?;
        }
        RefundOutcome::Succeeded { provider_refund_id } => {
            tx.execute(
                "UPDATE refunds SET status = 'SUCCEEDED', provider_refund_id = ?2, updated_at = ?3 WHERE id = ?1",
                params![id.get(), provider_refund_id, micros(at)],
            )?;
            let payment = query_payment(tx, "id = ?1", payment_id.get())?.ok_or_else(|| corrupt("refund's payment"))?;
            let refunded = payment.refunded.minor() + amount;
            let fully = refunded >= payment.amount.minor();
            let to = payment.status.refund(fully).ok_or_else(|| corrupt("refund of an unrefundable payment"))?;
            tx.execute(
                "UPDATE payments SET refunded_minor = ?2, status = ?3, updated_at = ?4 WHERE id = ?1 AND status = ?5",
                params![payment_id.get(), refunded, to.as_str(), micros(at), payment.status.as_str()],
            )?;
            let order = order_by_id(tx, current.order_id)?.ok_or_else(|| corrupt("refund's order"))?;
            let order_refunded = order.refunded.minor() + amount;
            let order_to = order
                .status
                .refund(order_refunded >= order.total.minor())
                .map_err(|e| Error::Conflict(format!("order {}: {e}", order.id)))?;
            tx.execute(
                "UPDATE orders SET refunded_minor = ?2, status = ?3, updated_at = ?4 WHERE id = ?1 AND status = ?5",
                params![order.id.get(), order_refunded, order_to.as_str(), micros(at), order.status.as_str()],
            )?;
            let reason = format!("refund {id} of {} succeeded", current.amount);
            insert_event(tx, order.id, Some(order.status), order_to, &current.actor, &reason, at)?;
        }
    }
    let refund = by_id(tx, id)?.ok_or_else(|| corrupt("refund just updated"))?;
    if matches!(outcome, RefundOutcome::Succeeded { .. }) {
        let payment = query_payment(tx, "id = ?1", payment_id.get())?.ok_or_else(|| corrupt("refund's payment"))?;
        let order = order_by_id(tx, refund.order_id)?.ok_or_else(|| corrupt("refund's order"))?;
        insert_outbox(tx, notify(&order, &payment, &refund), at)?;
    }
    Ok(Transition::Applied(refund))
}
