//! Payments. (PostgreSQL)

use sqlx::Connection as _;

use super::*;
use crate::domain::{Money, PaymentStatus, SettleAction};
use crate::storage::SettlementOutcome;
use crate::storage::policy::{StatusChange, completion, settlement};

#[async_trait]
impl PaymentStore for PostgresStorage {
    async fn live_payment(&self, order_id: OrderId) -> Result<Option<Payment>> {
        self.read(move |mut conn| async move {
            let payment = live_payment_where(&mut conn, order_id.get()).await;
            conn.finish(payment)
        })
        .await
    }

    async fn insert_payment(&self, p: NewPaymentRecord, idempotency: Option<IdempotencySlot>) -> Result<PaymentInsert> {
        match idempotency {
            None => self.insert_payment_alone(p).await,
            Some(slot) => self.transaction_on_writers(move |conn| Box::pin(insert_payment_on(conn, p, slot))).await,
        }
    }

    async fn payment_by_id(&self, id: PaymentId) -> Result<Option<Payment>> {
        self.read(move |mut conn| async move {
            let payment = payment_where(&mut conn, PAYMENT_BY_ID, id.get()).await;
            conn.finish(payment)
        })
        .await
    }

    async fn payment_by_provider_id(&self, provider: &str, provider_payment_id: &str) -> Result<Option<Payment>> {
        let row = self
            .row(
                sqlx::query(
                    "SELECT * FROM payments WHERE provider = $1 AND provider_payment_id = $2 ORDER BY id DESC LIMIT 1",
                )
                .bind(provider.to_owned())
                .bind(provider_payment_id.to_owned()),
            )
            .await?;
        row.as_ref().map(payment_from).transpose()
    }

    async fn set_next_action(&self, id: PaymentId, next_action: Option<String>) -> Result<Option<Payment>> {
        let rows = self
            .write_returning(
                sqlx::query("UPDATE payments SET next_action = $2 WHERE id = $1 AND status = $3 RETURNING *")
                    .bind(id.get())
                    .bind(next_action)
                    .bind(PaymentStatus::Pending.as_str()),
            )
            .await?;
        match rows.first() {
            Some(row) => payment_from(row).map(Some),
            None => self.payment_by_id(id).await,
        }
    }

    async fn inbound_event_seen(&self, provider: &str, event_id: &str) -> Result<bool> {
        let seen = self
            .row(
                sqlx::query("SELECT 1 FROM inbound_events WHERE provider = $1 AND event_id = $2")
                    .bind(provider.to_owned())
                    .bind(event_id.to_owned()),
            )
            .await?;
        Ok(seen.is_some())
    }

    async fn record_inbound_event(
        &self,
        provider: &str,
        event_id: &str,
        kind: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let done = self
            .write(
                sqlx::query(
                    "INSERT INTO inbound_events (provider, event_id, kind, received_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (provider, event_id) DO NOTHING",
                )
                .bind(provider.to_owned())
                .bind(event_id.to_owned())
                .bind(kind.to_owned())
                .bind(truncate(at)),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn transient_failures(&self, id: PaymentId) -> Result<u32> {
        let row = self.row(sqlx::query("SELECT transient_failures FROM payments WHERE id = $1").bind(id.get())).await?;
        let n: Option<i32> = row.map(|r| r.try_get(0)).transpose()?;
        Ok(n.map_or(0, |n| u32::try_from(n).unwrap_or(0)))
    }

    async fn record_transient_failure(&self, id: PaymentId) -> Result<()> {
        self.write(
            sqlx::query(
                "UPDATE payments SET transient_failures = transient_failures + 1 WHERE id = $1 AND status = $2",
            )
            .bind(id.get())
            .bind(PaymentStatus::Pending.as_str()),
        )
        .await?;
        Ok(())
    }

    async fn payments_for_order(&self, order_id: OrderId) -> Result<Vec<Payment>> {
        let rows = self
            .rows(sqlx::query("SELECT * FROM payments WHERE order_id = $1 ORDER BY id").bind(order_id.get()))
            .await?;
        rows.iter().map(payment_from).collect()
    }

    async fn count_payments(&self, status: PaymentStatus) -> Result<u64> {
        let row =
            self.row(sqlx::query("SELECT COUNT(*) AS n FROM payments WHERE status = $1").bind(status.as_str())).await?;
        let n: i64 = row.map(|r| r.try_get("n")).transpose()?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn payments_open_at_provider(&self, statuses: &[PaymentStatus], limit: u32) -> Result<Vec<Payment>> {
        let statuses = PaymentStatus::names(statuses);
        let rows = self
            .rows(
                sqlx::query(
                    "SELECT * FROM payments WHERE provider_closed_at IS NULL AND status = ANY($1) ORDER BY id LIMIT $2",
                )
                .bind(statuses)
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(payment_from).collect()
    }

    async fn mark_closed_at_provider(&self, id: PaymentId, at: DateTime<Utc>) -> Result<bool> {
        let done = self
            .write(
                sqlx::query("UPDATE payments SET provider_closed_at = $2 WHERE id = $1 AND provider_closed_at IS NULL")
                    .bind(id.get())
                    .bind(at),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete_payment(
        &self,
        id: PaymentId,
        outcome: PaymentOutcome,
        actor: Actor,
        at: DateTime<Utc>,
        notify: PaymentNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Payment>> {
        let done = self
            .transaction_on_writers(move |conn| {
                Box::pin(complete_payment_on(conn, id, outcome, actor, at, notify, idempotency))
            })
            .await?;
        Ok(self.announced(done).await)
    }

    async fn begin_settlement(
        &self,
        id: PaymentId,
        action: SettleAction,
        amount: Money,
        at: DateTime<Utc>,
    ) -> Result<Transition<Payment>> {
        let rows = self
            .write_returning(
                sqlx::query(
                    "UPDATE payments SET settle_action = $2, settle_minor = $3, settle_started_at = $4 \
                     WHERE id = $1 AND status = $5 AND settle_action IS NULL AND currency = $6 \
                     AND $3 BETWEEN 0 AND amount_minor AND (NOT $7 OR authorization_expires_at <= $4) RETURNING *",
                )
                .bind(id.get())
                .bind(action.as_str())
                .bind(amount.minor())
                .bind(truncate(at))
                .bind(PaymentStatus::Authorized.as_str())
                .bind(amount.currency().code())
                .bind(action == SettleAction::Expire),
            )
            .await?;
        match rows.first() {
            Some(row) => payment_from(row).map(Transition::Applied),
            None => {
                let current = self.payment_by_id(id).await?;
                current.map(Transition::NotApplied).ok_or_else(|| Error::NotFound(format!("payment {id}")))
            }
        }
    }

    async fn abandon_settlement(&self, id: PaymentId, action: SettleAction, started_at: DateTime<Utc>) -> Result<bool> {
        let done = self
            .write(
                sqlx::query(
                    "UPDATE payments SET settle_action = NULL, settle_minor = NULL, settle_started_at = NULL \
                     WHERE id = $1 AND settle_action = $2 AND settle_started_at = $3",
                )
                .bind(id.get())
                .bind(action.as_str())
                .bind(truncate(started_at)),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_settlement(
        &self,
        id: PaymentId,
        outcome: SettlementOutcome,
        actor: Actor,
        at: DateTime<Utc>,
        notify: PaymentNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Payment>> {
        let at = truncate(at);
        let mut tx = self.begin().await?;
        let (change, order_change, reason) = settlement(id, &outcome);
        let (captured, failure, closed) = match &outcome {
            SettlementOutcome::Captured { amount } => (Some(amount.minor()), None, None),
            SettlementOutcome::Released { reason, .. } => (None, Some(reason.as_str()), Some(at)),
        };
        let updated = sqlx::query(
            "UPDATE payments SET status = $3, updated_at = $2, captured_minor = COALESCE($5, captured_minor), \
             failure_reason = COALESCE($6, failure_reason), provider_closed_at = COALESCE($7, provider_closed_at), \
             settle_action = NULL, settle_minor = NULL, settle_started_at = NULL \
             WHERE id = $1 AND status = $4 RETURNING *",
        )
        .bind(id.get())
        .bind(at)
        .bind(change.to.as_str())
        .bind(change.from.as_str())
        .bind(captured)
        .bind(failure)
        .bind(closed)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = updated else {
            let current = payment_where(&mut tx, PAYMENT_BY_ID, id.get()).await?;
            return current.map(Transition::NotApplied).ok_or_else(|| Error::NotFound(format!("payment {id}")));
        };
        let payment = payment_from(&row)?;
        self.payment_moved(tx, payment, Some((order_change, reason)), &actor, at, notify, idempotency.as_ref()).await
    }

    async fn stalled_settlements(&self, started_before: DateTime<Utc>, limit: u32) -> Result<Vec<Payment>> {
        let rows = self
            .rows(
                sqlx::query(
                    "SELECT * FROM payments WHERE status = $3 AND settle_action IS NOT NULL AND settle_started_at < $1 \
                     ORDER BY settle_started_at, id LIMIT $2",
                )
                .bind(started_before)
                .bind(i64::from(limit))
                .bind(PaymentStatus::Authorized.as_str()),
            )
            .await?;
        rows.iter().map(payment_from).collect()
    }

    async fn expiring_authorizations(&self, before: DateTime<Utc>, unwarned: bool, limit: u32) -> Result<Vec<Payment>> {
        let rows = self
            .rows(
                sqlx::query(
                    "SELECT * FROM payments WHERE status = $3 AND settle_action IS NULL \
                     AND authorization_expires_at <= $1 AND (NOT $4 OR expiry_warned_at IS NULL) \
                     ORDER BY authorization_expires_at, id LIMIT $2",
                )
                .bind(before)
                .bind(i64::from(limit))
                .bind(PaymentStatus::Authorized.as_str())
                .bind(unwarned),
            )
            .await?;
        rows.iter().map(payment_from).collect()
    }

    async fn mark_expiry_warned(&self, id: PaymentId, at: DateTime<Utc>) -> Result<bool> {
        let done = self
            .write(
                sqlx::query("UPDATE payments SET expiry_warned_at = $2 WHERE id = $1 AND expiry_warned_at IS NULL")
                    .bind(id.get())
                    .bind(truncate(at)),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl PostgresStorage {
    /// [`PaymentStore::insert_payment`] without an idempotency key to record: one statement
    /// (its own transaction) that locks the order, checks it is payable and has no live
    /// payment, and inserts. Two at once for one order are serialised by the order's lock; one
    /// that still collides with the other's payment meets the unique index and returns it.
    async fn insert_payment_alone(&self, p: NewPaymentRecord) -> Result<PaymentInsert> {
        let order_id = p.order_id;
        let query = sqlx::query(
            "WITH o AS (SELECT status FROM orders WHERE id = $1 FOR UPDATE), \
             live AS (SELECT id FROM payments WHERE order_id = $1 AND status = ANY($14)), \
             ins AS (INSERT INTO payments (order_id, user_id, provider, provider_payment_id, transaction_id, method, \
             attempt, amount_minor, currency, status, created_at, updated_at, client_secret, capture_method) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $12, $10, $10, $11, $13 FROM o \
             WHERE o.status = $15 AND NOT EXISTS (SELECT 1 FROM live) RETURNING *) \
             SELECT (SELECT status FROM o) AS order_status, (SELECT min(id) FROM live) AS live_id, ins.* \
             FROM (SELECT 1) AS one LEFT JOIN ins ON TRUE",
        )
        .bind(p.order_id.get())
        .bind(p.user_id.get())
        .bind(p.provider)
        .bind(p.provider_payment_id)
        .bind(p.transaction_id)
        .bind(p.method)
        .bind(i32::try_from(p.attempt).unwrap_or(i32::MAX))
        .bind(p.amount.minor())
        .bind(p.amount.currency().code())
        .bind(truncate(p.created_at))
        .bind(p.client_secret)
        .bind(PaymentStatus::Pending.as_str())
        .bind(p.capture_method.as_str())
        .bind(PaymentStatus::names(&PaymentStatus::LIVE))
        .bind(OrderStatus::Created.as_str());
        let inserted = self
            .write_with(|mut conn| async move {
                match query.fetch_all(&mut *conn).await {
                    // The statement failed whole and was answered: the connection is fine.
                    Err(e) if is_unique_violation(&e) => conn.finish(Ok::<_, sqlx::Error>(None)),
                    other => conn.finish(other).map(Some),
                }
            })
            .await?;
        let Some(rows) = inserted else {
            let winner = self.live_payment_here(order_id).await?;
            return winner.map(PaymentInsert::Existing).ok_or_else(|| {
                Error::Conflict(format!("order {order_id}: its payment changed concurrently; try again"))
            });
        };
        let row = rows.first().ok_or_else(|| corrupt("payment insert"))?;
        let status: Option<String> = row.try_get("order_status")?;
        let status = status.ok_or_else(|| Error::NotFound(format!("order {order_id}")))?;
        let status = OrderStatus::parse(&status).ok_or_else(|| corrupt("order status"))?;
        if status != OrderStatus::Created {
            return Ok(PaymentInsert::OrderNotPayable(status));
        }
        if let Some(live) = row.try_get::<Option<i64>, _>("live_id")? {
            let existing = self.payment_here(PaymentId::new(live)).await?;
            return existing.map(PaymentInsert::Existing).ok_or_else(|| corrupt("live payment"));
        }
        Ok(PaymentInsert::Inserted(payment_from(row)?))
    }

    /// [`PaymentStore::live_payment`] on the writers' connections (on the primary, as of the
    /// write that just lost to it).
    async fn live_payment_here(&self, order_id: OrderId) -> Result<Option<Payment>> {
        self.write_with(move |mut conn| async move {
            let payment = live_payment_where(&mut conn, order_id.get()).await;
            conn.finish(payment)
        })
        .await
    }

    /// [`PaymentStore::payment_by_id`] on the writers' connections (on the primary, as of the
    /// write that just lost to it).
    async fn payment_here(&self, id: PaymentId) -> Result<Option<Payment>> {
        self.write_with(move |mut conn| async move {
            let payment = payment_where(&mut conn, PAYMENT_BY_ID, id.get()).await;
            conn.finish(payment)
        })
        .await
    }

    /// The rest of a payment's change, in its transaction, which it commits: its order moves
    /// as `order` says (with the order's event; `Conflict`, rolling everything back, when the
    /// order is no longer where the change expects), then the outbox rows and the idempotency
    /// result are written.
    #[allow(clippy::too_many_arguments)]
    async fn payment_moved(
        &self,
        mut tx: Tx<'_>,
        payment: Payment,
        order: Option<(StatusChange<OrderStatus>, String)>,
        actor: &Actor,
        at: DateTime<Utc>,
        notify: PaymentNotify,
        idempotency: Option<&IdempotencySlot>,
    ) -> Result<Transition<Payment>> {
        if let Some((change, reason)) = order {
            let moved = sqlx::query("UPDATE orders SET status = $3, updated_at = $2 WHERE id = $1 AND status = $4")
                .bind(payment.order_id.get())
                .bind(at)
                .bind(change.to.as_str())
                .bind(change.from.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if moved == 0 {
                tx.rollback().await?;
                return Err(Error::Conflict(format!("order {} is no longer {}", payment.order_id, change.from)));
            }
            insert_event(&mut tx, payment.order_id, Some(change.from), change.to, actor, &reason, at).await?;
        }
        let order = order_by_id(&mut tx, payment.order_id).await?.ok_or_else(|| corrupt("payment without order"))?;
        insert_outbox(&mut tx, notify(&order, &payment), at).await?;
        record_idempotency(&mut tx, idempotency, &payment).await?;
        tx.commit().await?;
        self.announcer.announce().await;
        Ok(Transition::Applied(payment))
    }
}

/// [`PaymentStore::complete_payment`] in a transaction on `conn`, committed or rolled back
/// before it returns: the payment's change, its order's when the outcome moves it, and the
/// order's event in one statement; then the notifications and the idempotent response. The
/// caller announces the notifications.
#[allow(clippy::too_many_arguments)]
async fn complete_payment_on(
    conn: &mut PgConnection,
    id: PaymentId,
    outcome: PaymentOutcome,
    actor: Actor,
    at: DateTime<Utc>,
    notify: PaymentNotify,
    idempotency: Option<IdempotencySlot>,
) -> Result<Transition<Payment>> {
    let at = truncate(at);
    let (change, order_change) = completion(&outcome);
    let (reason, expires_at) = match &outcome {
        PaymentOutcome::Failed { reason } => (Some(reason.as_str()), None),
        PaymentOutcome::Succeeded => (None, None),
        PaymentOutcome::Authorized { expires_at } => (None, Some(truncate(*expires_at))),
    };
    let captured = outcome == PaymentOutcome::Succeeded;
    let why = if captured { format!("payment {id} succeeded") } else { format!("payment {id} authorised") };
    let mut tx = conn.begin().await?;
    let updated = sqlx::query(
        "WITH p AS (UPDATE payments SET status = $3, failure_reason = COALESCE($5, failure_reason), \
             updated_at = $2, captured_minor = CASE WHEN $6 THEN amount_minor ELSE captured_minor END, \
             authorization_expires_at = $7 WHERE id = $1 AND status = $4 RETURNING *), \
             o AS (UPDATE orders SET status = $9, updated_at = $2 \
             WHERE id = (SELECT order_id FROM p) AND $9::text IS NOT NULL AND status = $8 RETURNING id), \
             e AS (INSERT INTO order_events (order_id, from_status, to_status, actor, reason, at) \
             SELECT id, $8, $9, $10, $11, $2 FROM o) \
             SELECT p.*, EXISTS (SELECT 1 FROM o) AS order_moved FROM p",
    )
    .bind(id.get())
    .bind(at)
    .bind(change.to.as_str())
    .bind(change.from.as_str())
    .bind(reason)
    .bind(captured)
    .bind(expires_at)
    .bind(order_change.map(|c| c.from.as_str()))
    .bind(order_change.map(|c| c.to.as_str()))
    .bind(actor.to_string())
    .bind(why)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = updated else {
        let current = payment_where(&mut tx, PAYMENT_BY_ID, id.get()).await?;
        // Ended now, not when the connection is next used: the statement may hold the
        // payment's row lock (it re-checked a row another completion had just changed).
        tx.rollback().await?;
        return current.map(Transition::NotApplied).ok_or_else(|| Error::NotFound(format!("payment {id}")));
    };
    let payment = payment_from(&row)?;
    if let Some(change) = order_change
        && !row.try_get::<bool, _>("order_moved")?
    {
        tx.rollback().await?;
        return Err(Error::Conflict(format!("order {} is no longer {}", payment.order_id, change.from)));
    }
    let order = order_by_id(&mut tx, payment.order_id).await?.ok_or_else(|| corrupt("payment without order"))?;
    insert_outbox(&mut tx, notify(&order, &payment), at).await?;
    record_idempotency(&mut tx, idempotency.as_ref(), &payment).await?;
    tx.commit().await?;
    Ok(Transition::Applied(payment))
}

/// [`PaymentStore::insert_payment`] with its idempotent response, in a transaction on `conn`,
/// committed or rolled back before it returns.
async fn insert_payment_on(
    conn: &mut PgConnection,
    p: NewPaymentRecord,
    idempotency: IdempotencySlot,
) -> Result<PaymentInsert> {
    let mut tx = conn.begin().await?;
    // Locking the order serialises payment inserts for it and orders them after any cancel.
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1 FOR UPDATE")
        .bind(p.order_id.get())
        .fetch_optional(&mut *tx)
        .await?;
    let status = status.ok_or_else(|| Error::NotFound(format!("order {}", p.order_id)))?;
    let status = OrderStatus::parse(&status).ok_or_else(|| corrupt("order status"))?;
    if status != OrderStatus::Created {
        tx.rollback().await?;
        return Ok(PaymentInsert::OrderNotPayable(status));
    }
    if let Some(existing) = live_payment_where(&mut tx, p.order_id.get()).await? {
        tx.rollback().await?;
        return Ok(PaymentInsert::Existing(existing));
    }
    let inserted = sqlx::query(
        "INSERT INTO payments (order_id, user_id, provider, provider_payment_id, transaction_id, method, attempt, \
             amount_minor, currency, status, created_at, updated_at, client_secret, capture_method) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $12, $10, $10, $11, $13) RETURNING *",
    )
    .bind(p.order_id.get())
    .bind(p.user_id.get())
    .bind(&p.provider)
    .bind(&p.provider_payment_id)
    .bind(&p.transaction_id)
    .bind(&p.method)
    .bind(i32::try_from(p.attempt).unwrap_or(i32::MAX))
    .bind(p.amount.minor())
    .bind(p.amount.currency().code())
    .bind(truncate(p.created_at))
    .bind(&p.client_secret)
    .bind(PaymentStatus::Pending.as_str())
    .bind(p.capture_method.as_str())
    .fetch_one(&mut *tx)
    .await;
    let row = match inserted {
        Ok(row) => row,
        Err(e) if is_unique_violation(&e) => {
            tx.rollback().await?;
            let winner = live_payment_where(conn, p.order_id.get()).await?;
            return winner.map(PaymentInsert::Existing).ok_or_else(|| Error::from(e));
        }
        Err(e) => return Err(e.into()),
    };
    let payment = payment_from(&row)?;
    record_idempotency(&mut tx, Some(&idempotency), &payment).await?;
    tx.commit().await?;
    Ok(PaymentInsert::Inserted(payment))
}
