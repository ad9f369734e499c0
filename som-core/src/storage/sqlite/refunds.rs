//! Refunds on SQLite: reserve, finish, read. Every write runs inside the writer's transaction,
//! so the reservation's check and update cannot interleave with another writer's.

use super::*;
use crate::domain::{PaymentStatus, RefundId, RefundStatus};
use crate::storage::policy::{RefundSettlement, refund_reversed, refund_succeeded};
use crate::storage::{NewRefundRecord, RefundNotify, RefundOutcome, RefundReserve};

fn query(conn: &Connection, where_clause: &str, param: &dyn rusqlite::ToSql) -> Result<Option<Refund>> {
    let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE {where_clause}");
    conn.prepare_cached(&sql)?.query_row([param], refund_row).optional()?.transpose()
}

pub(super) fn by_id(conn: &Connection, id: RefundId) -> Result<Option<Refund>> {
    query(conn, "id = ?1", &id.get())
}

pub(super) fn for_payment(conn: &Connection, payment: PaymentId) -> Result<Vec<Refund>> {
    let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = ?1 ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([payment.get()], refund_row)?;
    rows.map(|r| r?).collect()
}

pub(super) fn pending(conn: &Connection, created_before: DateTime<Utc>, limit: u32) -> Result<Vec<Refund>> {
    let sql = format!(
        "SELECT {REFUND_COLUMNS} FROM refunds WHERE status = ?3 AND created_at < ?1 ORDER BY created_at, id LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![micros(created_before), limit, RefundStatus::Pending.as_str()], refund_row)?;
    rows.map(|r| r?).collect()
}

pub(super) fn reserve(tx: &Transaction<'_>, r: &NewRefundRecord) -> Result<RefundReserve> {
    if let Some(key) = &r.request_key
        && let Some(existing) = query(tx, "request_key = ?1", key)?
    {
        return Ok(RefundReserve::Existing(existing));
    }
    let id = r.payment_id;
    let from = status_list(&PaymentStatus::names(PaymentStatus::refundable_from(r.late_capture)));
    let reserved = tx.execute(
        "UPDATE payments SET refund_reserved_minor = refund_reserved_minor + ?2 \
         WHERE id = ?1 AND ?2 > 0 AND status IN (SELECT value FROM json_each(?4)) AND currency = ?3 \
         AND refund_reserved_minor + ?2 <= CASE WHEN ?5 THEN amount_minor ELSE captured_minor END",
        params![id.get(), r.amount.minor(), r.amount.currency().code(), from, r.late_capture],
    )?;
    let payment = query_payment(tx, "id = ?1", id.get())?.ok_or_else(|| Error::NotFound(format!("payment {id}")))?;
    if reserved == 0 {
        return Ok(RefundReserve::Refused(Box::new(payment)));
    }
    let at = micros(r.created_at);
    tx.prepare_cached(
        "INSERT INTO refunds (payment_id, order_id, user_id, amount_minor, currency, status, reason, actor, \
         request_key, created_at, updated_at, provider_refund_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?11, ?6, ?7, ?8, ?9, ?9, ?10)",
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
        at,
        r.provider_refund_id,
        RefundStatus::Pending.as_str()
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
            mark_failed(tx, id, reason, at)?;
            tx.execute(
                "UPDATE payments SET refund_reserved_minor = refund_reserved_minor - ?2 WHERE id = ?1",
                params![payment_id.get(), amount],
            )?;
        }
        RefundOutcome::Succeeded { provider_refund_id } => {
            tx.execute(
                "UPDATE refunds SET status = ?4, provider_refund_id = ?2, updated_at = ?3 WHERE id = ?1",
                params![id.get(), provider_refund_id, micros(at), RefundStatus::Succeeded.as_str()],
            )?;
            let payment = query_payment(tx, "id = ?1", payment_id.get())?.ok_or_else(|| corrupt("refund's payment"))?;
            let order = order_by_id(tx, current.order_id)?.ok_or_else(|| corrupt("refund's order"))?;
            settle(tx, &payment, &order, &refund_succeeded(&current, &payment, &order)?, at)?;
            super::fulfillments::return_follows_refund(tx, id, true, at)?;
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

pub(super) fn reverse(
    tx: &Transaction<'_>,
    id: RefundId,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<Transition<Refund>> {
    let current = by_id(tx, id)?.ok_or_else(|| Error::NotFound(format!("refund {id}")))?;
    if current.status != RefundStatus::Succeeded {
        return Ok(Transition::NotApplied(current));
    }
    mark_failed(tx, id, reason, at)?;
    let payment = query_payment(tx, "id = ?1", current.payment_id.get())?.ok_or_else(|| corrupt("refund's payment"))?;
    let order = order_by_id(tx, current.order_id)?.ok_or_else(|| corrupt("refund's order"))?;
    settle(tx, &payment, &order, &refund_reversed(&current, &payment, &order, reason)?, at)?;
    super::fulfillments::return_follows_refund(tx, id, false, at)?;
    Ok(Transition::Applied(by_id(tx, id)?.ok_or_else(|| corrupt("refund just reversed"))?))
}

fn mark_failed(tx: &Transaction<'_>, id: RefundId, reason: &str, at: DateTime<Utc>) -> Result<()> {
    tx.execute(
        "UPDATE refunds SET status = ?4, failure_reason = ?2, updated_at = ?3 WHERE id = ?1",
        params![id.get(), reason, micros(at), RefundStatus::Failed.as_str()],
    )?;
    Ok(())
}

/// Applies a refund's settlement to its payment and order, as conditional updates, with the
/// order's event.
fn settle(
    tx: &Transaction<'_>,
    payment: &Payment,
    order: &Order,
    s: &RefundSettlement,
    at: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        "UPDATE payments SET refunded_minor = ?2, refund_reserved_minor = refund_reserved_minor + ?3, status = ?4, \
         updated_at = ?5 WHERE id = ?1 AND status = ?6",
        params![
            payment.id.get(),
            s.payment_refunded,
            s.reserved_delta,
            s.payment.to.as_str(),
            micros(at),
            s.payment.from.as_str()
        ],
    )?;
    tx.execute(
        "UPDATE orders SET refunded_minor = ?2, status = ?3, updated_at = ?4 WHERE id = ?1 AND status = ?5",
        params![order.id.get(), s.order_refunded, s.order.to.as_str(), micros(at), s.order.from.as_str()],
    )?;
    insert_event(tx, order.id, Some(s.order.from), s.order.to, &s.actor, &s.reason, at)
}

#[async_trait]
impl RefundStore for SqliteStorage {
    async fn reserve_refund(&self, refund: NewRefundRecord) -> Result<RefundReserve> {
        let refund = NewRefundRecord { created_at: time(micros(refund.created_at)), ..refund };
        self.write(move |tx| refunds::reserve(tx, &refund)).await
    }

    async fn finish_refund(
        &self,
        id: RefundId,
        outcome: RefundOutcome,
        at: DateTime<Utc>,
        notify: RefundNotify,
    ) -> Result<Transition<Refund>> {
        self.write(move |tx| refunds::finish(tx, id, &outcome, at, notify)).await
    }

    async fn reverse_refund(&self, id: RefundId, reason: &str, at: DateTime<Utc>) -> Result<Transition<Refund>> {
        let reason = reason.to_owned();
        self.write(move |tx| refunds::reverse(tx, id, &reason, at)).await
    }

    async fn note_provider_refund(&self, id: RefundId, provider_refund_id: &str) -> Result<()> {
        let provider_refund_id = provider_refund_id.to_owned();
        self.write(move |tx| {
            tx.execute(
                "UPDATE refunds SET provider_refund_id = ?2 \
                 WHERE id = ?1 AND status = ?3 AND provider_refund_id IS NULL",
                params![id.get(), provider_refund_id, RefundStatus::Pending.as_str()],
            )?;
            Ok(())
        })
        .await
    }

    async fn refund_by_id(&self, id: RefundId) -> Result<Option<Refund>> {
        self.read_statement(move |c| refunds::by_id(c, id)).await
    }

    async fn refunds_for_payment(&self, payment_id: PaymentId) -> Result<Vec<Refund>> {
        self.read_statement(move |c| refunds::for_payment(c, payment_id)).await
    }

    async fn count_refunds(&self, status: RefundStatus) -> Result<u64> {
        self.read_statement(move |c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM refunds WHERE status = ?1")?
                .query_row([status.as_str()], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn pending_refunds(&self, created_before: DateTime<Utc>, limit: u32) -> Result<Vec<Refund>> {
        self.read(move |c| refunds::pending(c, created_before, limit)).await
    }
}
