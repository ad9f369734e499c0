//! Refunds on PostgreSQL: reserve, finish, read. The reservation is one conditional update of
//! the payment row, so concurrent refunds queue on its row lock and each sees the amount the
//! one before it left.

use async_trait::async_trait;

use super::*;
use chrono::{DateTime, Utc};
use sqlx::{Connection as _, PgConnection};

use super::{PAYMENT_BY_ID, Tx, corrupt, insert_event, insert_outbox, order_by_id, payment_from, payment_where};
use crate::domain::{Order, OrderId, Payment, PaymentId, PaymentStatus, Refund, RefundId, RefundStatus};
use crate::error::{Error, Result};
use crate::storage::policy::{RefundSettlement, refund_reversed, refund_succeeded};
use crate::storage::{NewRefundRecord, RefundNotify, RefundOutcome, RefundReserve, Transition};

pub(super) async fn by_id(conn: &mut PgConnection, id: RefundId) -> Result<Option<Refund>> {
    let row = sqlx::query("SELECT * FROM refunds WHERE id = $1").bind(id.get()).fetch_optional(conn).await?;
    row.as_ref().map(refund_from).transpose()
}

async fn by_request_key(conn: &mut PgConnection, key: &str) -> Result<Option<Refund>> {
    let row = sqlx::query("SELECT * FROM refunds WHERE request_key = $1").bind(key).fetch_optional(conn).await?;
    row.as_ref().map(refund_from).transpose()
}

/// [`RefundStore::reserve_refund`] in a transaction on `conn`, committed or rolled back before
/// it returns.
async fn reserve(conn: &mut PgConnection, r: NewRefundRecord) -> Result<RefundReserve> {
    let r = NewRefundRecord { created_at: truncate(r.created_at), ..r };
    let mut tx = conn.begin().await?;
    if let Some(key) = &r.request_key
        && let Some(existing) = by_request_key(&mut tx, key).await?
    {
        tx.rollback().await?;
        return Ok(RefundReserve::Existing(existing));
    }
    let reserved = reserve_in(&mut tx, &r).await?;
    let id = r.payment_id;
    match reserved {
        Reserved::Refused => {
            // A concurrent request with the same key may have committed while this one waited
            // for the payment's row lock: its refund is the answer.
            let existing = match &r.request_key {
                Some(key) => by_request_key(&mut tx, key).await?,
                None => None,
            };
            let answer = match existing {
                Some(existing) => Ok(RefundReserve::Existing(existing)),
                None => match payment_where(&mut tx, PAYMENT_BY_ID, id.get()).await? {
                    Some(payment) => Ok(RefundReserve::Refused(Box::new(payment))),
                    None => Err(Error::NotFound(format!("payment {id}"))),
                },
            };
            tx.rollback().await?;
            answer
        }
        Reserved::Refund(refund) => {
            tx.commit().await?;
            Ok(RefundReserve::Reserved(refund))
        }
        Reserved::KeyTaken => {
            // A concurrent request with the same key won: undo this reservation, return its refund.
            tx.rollback().await?;
            let key = r.request_key.as_deref().unwrap_or_default();
            let existing = by_request_key(conn, key).await?;
            existing.map(RefundReserve::Existing).ok_or_else(|| corrupt("refund key"))
        }
    }
}

/// What setting a refund aside in a transaction came to.
pub(super) enum Reserved {
    /// Set aside: the PENDING refund.
    Refund(Refund),
    /// The payment is not refundable, or has less left.
    Refused,
    /// Another refund has the request key.
    KeyTaken,
}

/// Sets a refund aside within `tx`: the payment's conditional update (which locks its row),
/// then the PENDING refund.
pub(super) async fn reserve_in(tx: &mut Tx<'_>, r: &NewRefundRecord) -> Result<Reserved> {
    let id = r.payment_id;
    let reserved = sqlx::query(
        "UPDATE payments SET refund_reserved_minor = refund_reserved_minor + $2 \
         WHERE id = $1 AND $2 > 0 AND status = ANY($4) AND currency = $3 \
         AND refund_reserved_minor + $2 <= CASE WHEN $5 THEN amount_minor ELSE captured_minor END RETURNING *",
    )
    .bind(id.get())
    .bind(r.amount.minor())
    .bind(r.amount.currency().code())
    .bind(PaymentStatus::names(PaymentStatus::refundable_from(r.late_capture)))
    .bind(r.late_capture)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(payment) = reserved else { return Ok(Reserved::Refused) };
    let payment = payment_from(&payment)?;
    let inserted = sqlx::query(
        "INSERT INTO refunds (payment_id, order_id, user_id, amount_minor, currency, status, reason, actor, \
         request_key, created_at, updated_at, provider_refund_id) \
         VALUES ($1, $2, $3, $4, $5, $11, $6, $7, $8, $9, $9, $10) \
         ON CONFLICT (request_key) DO NOTHING RETURNING *",
    )
    .bind(id.get())
    .bind(payment.order_id.get())
    .bind(payment.user_id.get())
    .bind(r.amount.minor())
    .bind(r.amount.currency().code())
    .bind(&r.reason)
    .bind(r.actor.to_string())
    .bind(&r.request_key)
    .bind(r.created_at)
    .bind(&r.provider_refund_id)
    .bind(RefundStatus::Pending.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match inserted {
        Some(row) => Reserved::Refund(refund_from(&row)?),
        None => Reserved::KeyTaken,
    })
}

pub(super) async fn finish(
    tx: &mut Tx<'_>,
    id: RefundId,
    outcome: &RefundOutcome,
    at: DateTime<Utc>,
    notify: RefundNotify,
) -> Result<Transition<Refund>> {
    let row =
        sqlx::query("SELECT * FROM refunds WHERE id = $1 FOR UPDATE").bind(id.get()).fetch_optional(&mut **tx).await?;
    let current = row.as_ref().map(refund_from).transpose()?.ok_or_else(|| Error::NotFound(format!("refund {id}")))?;
    if current.status != RefundStatus::Pending {
        return Ok(Transition::NotApplied(current));
    }
    let amount = current.amount.minor();
    let payment_id = current.payment_id;
    let refund = match outcome {
        RefundOutcome::Failed { reason } => {
            let failed = mark_failed(tx, id, reason, at).await?;
            sqlx::query("UPDATE payments SET refund_reserved_minor = refund_reserved_minor - $2 WHERE id = $1")
                .bind(payment_id.get())
                .bind(amount)
                .execute(&mut **tx)
                .await?;
            return Ok(Transition::Applied(failed));
        }
        RefundOutcome::Succeeded { provider_refund_id } => {
            let row = sqlx::query(
                "UPDATE refunds SET status = $4, provider_refund_id = $2, updated_at = $3 WHERE id = $1 RETURNING *",
            )
            .bind(id.get())
            .bind(provider_refund_id)
            .bind(at)
            .bind(RefundStatus::Succeeded.as_str())
            .fetch_one(&mut **tx)
            .await?;
            refund_from(&row)?
        }
    };
    let (payment, order) = lock_payment_and_order(tx, payment_id, refund.order_id).await?;
    settle(tx, &payment, &order, &refund_succeeded(&refund, &payment, &order)?, at).await?;
    super::fulfillments::return_follows_refund(tx, id, true, at).await?;
    let payment =
        payment_where(tx, PAYMENT_BY_ID, payment_id.get()).await?.ok_or_else(|| corrupt("refund's payment"))?;
    let order = order_by_id(tx, order.id).await?.ok_or_else(|| corrupt("refund's order"))?;
    insert_outbox(tx, notify(&order, &payment, &refund), at).await?;
    Ok(Transition::Applied(refund))
}

pub(super) async fn reverse(
    tx: &mut Tx<'_>,
    id: RefundId,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<Transition<Refund>> {
    let row =
        sqlx::query("SELECT * FROM refunds WHERE id = $1 FOR UPDATE").bind(id.get()).fetch_optional(&mut **tx).await?;
    let current = row.as_ref().map(refund_from).transpose()?.ok_or_else(|| Error::NotFound(format!("refund {id}")))?;
    if current.status != RefundStatus::Succeeded {
        return Ok(Transition::NotApplied(current));
    }
    let reversed = mark_failed(tx, id, reason, at).await?;
    let (payment, order) = lock_payment_and_order(tx, current.payment_id, current.order_id).await?;
    settle(tx, &payment, &order, &refund_reversed(&current, &payment, &order, reason)?, at).await?;
    super::fulfillments::return_follows_refund(tx, id, false, at).await?;
    Ok(Transition::Applied(reversed))
}

/// Marks the refund FAILED with `reason`; the refund as it is now.
async fn mark_failed(tx: &mut Tx<'_>, id: RefundId, reason: &str, at: DateTime<Utc>) -> Result<Refund> {
    let row =
        sqlx::query("UPDATE refunds SET status = $4, failure_reason = $2, updated_at = $3 WHERE id = $1 RETURNING *")
            .bind(id.get())
            .bind(reason)
            .bind(at)
            .bind(RefundStatus::Failed.as_str())
            .fetch_one(&mut **tx)
            .await?;
    refund_from(&row)
}

/// The refund's payment and order, locked (payment first, as every writer locks them) for the
/// rest of the transaction.
async fn lock_payment_and_order(tx: &mut Tx<'_>, payment: PaymentId, order: OrderId) -> Result<(Payment, Order)> {
    let row = sqlx::query("SELECT * FROM payments WHERE id = $1 FOR UPDATE")
        .bind(payment.get())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| corrupt("refund's payment"))?;
    let payment = payment_from(&row)?;
    sqlx::query("SELECT id FROM orders WHERE id = $1 FOR UPDATE").bind(order.get()).execute(&mut **tx).await?;
    let order = order_by_id(tx, order).await?.ok_or_else(|| corrupt("refund's order"))?;
    Ok((payment, order))
}

/// Applies a refund's settlement to its payment and order, as conditional updates, with the
/// order's event.
async fn settle(
    tx: &mut Tx<'_>,
    payment: &Payment,
    order: &Order,
    s: &RefundSettlement,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE payments SET refunded_minor = $2, refund_reserved_minor = refund_reserved_minor + $3, status = $4, \
         updated_at = $5 WHERE id = $1 AND status = $6",
    )
    .bind(payment.id.get())
    .bind(s.payment_refunded)
    .bind(s.reserved_delta)
    .bind(s.payment.to.as_str())
    .bind(at)
    .bind(s.payment.from.as_str())
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE orders SET refunded_minor = $2, status = $3, updated_at = $4 WHERE id = $1 AND status = $5")
        .bind(order.id.get())
        .bind(s.order_refunded)
        .bind(s.order.to.as_str())
        .bind(at)
        .bind(s.order.from.as_str())
        .execute(&mut **tx)
        .await?;
    insert_event(tx, order.id, Some(s.order.from), s.order.to, &s.actor, &s.reason, at).await
}

#[async_trait]
impl RefundStore for PostgresStorage {
    async fn reserve_refund(&self, refund: NewRefundRecord) -> Result<RefundReserve> {
        self.transaction_on_writers(move |conn| Box::pin(reserve(conn, refund))).await
    }

    async fn finish_refund(
        &self,
        id: RefundId,
        outcome: RefundOutcome,
        at: DateTime<Utc>,
        notify: RefundNotify,
    ) -> Result<Transition<Refund>> {
        let done = self
            .transaction_on_writers(move |conn| {
                Box::pin(async move {
                    let mut tx = conn.begin().await?;
                    let done = finish(&mut tx, id, &outcome, truncate(at), notify).await?;
                    tx.commit().await?;
                    Ok(done)
                })
            })
            .await?;
        Ok(self.announced(done).await)
    }

    async fn reverse_refund(&self, id: RefundId, reason: &str, at: DateTime<Utc>) -> Result<Transition<Refund>> {
        let mut tx = self.begin().await?;
        let result = reverse(&mut tx, id, reason, truncate(at)).await?;
        tx.commit().await?;
        Ok(result)
    }

    async fn note_provider_refund(&self, id: RefundId, provider_refund_id: &str) -> Result<()> {
        self.write(
            sqlx::query(
                "UPDATE refunds SET provider_refund_id = $2 \
                 WHERE id = $1 AND status = $3 AND provider_refund_id IS NULL",
            )
            .bind(id.get())
            .bind(provider_refund_id.to_owned())
            .bind(RefundStatus::Pending.as_str()),
        )
        .await?;
        Ok(())
    }

    async fn refund_by_id(&self, id: RefundId) -> Result<Option<Refund>> {
        self.read(move |mut conn| async move {
            let refund = by_id(&mut conn, id).await;
            conn.finish(refund)
        })
        .await
    }

    async fn refunds_for_payment(&self, payment_id: PaymentId) -> Result<Vec<Refund>> {
        let rows = self
            .rows(sqlx::query("SELECT * FROM refunds WHERE payment_id = $1 ORDER BY id").bind(payment_id.get()))
            .await?;
        rows.iter().map(refund_from).collect()
    }

    async fn count_refunds(&self, status: RefundStatus) -> Result<u64> {
        let row =
            self.row(sqlx::query("SELECT COUNT(*) AS n FROM refunds WHERE status = $1").bind(status.as_str())).await?;
        let n: i64 = row.map(|r| sqlx::Row::try_get(&r, "n")).transpose()?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn pending_refunds(&self, created_before: DateTime<Utc>, limit: u32) -> Result<Vec<Refund>> {
        let rows = self
            .rows(
                sqlx::query(
                    "SELECT * FROM refunds WHERE status = $3 AND created_at < $1 ORDER BY created_at, id LIMIT $2",
                )
                .bind(created_before)
                .bind(i64::from(limit))
                .bind(RefundStatus::Pending.as_str()),
            )
            .await?;
        rows.iter().map(refund_from).collect()
    }
}
