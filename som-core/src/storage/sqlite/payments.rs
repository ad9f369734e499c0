//! Payments. (SQLite)

use super::*;
use crate::domain::{Money, PaymentStatus, SettleAction};
use crate::storage::SettlementOutcome;
use crate::storage::policy::{StatusChange, completion, settlement};

#[async_trait]
impl PaymentStore for SqliteStorage {
    async fn live_payment(&self, order_id: OrderId) -> Result<Option<Payment>> {
        self.read_statement(move |c| live_payment(c, order_id)).await
    }

    async fn insert_payment(&self, p: NewPaymentRecord, idempotency: Option<IdempotencySlot>) -> Result<PaymentInsert> {
        self.write(move |tx| {
            let status: Option<String> =
                tx.query_row("SELECT status FROM orders WHERE id = ?1", [p.order_id.get()], |r| r.get(0)).optional()?;
            let status = status.ok_or_else(|| Error::NotFound(format!("order {}", p.order_id)))?;
            let status = OrderStatus::parse(&status).ok_or_else(|| corrupt("order status"))?;
            if status != OrderStatus::Created {
                return Ok(PaymentInsert::OrderNotPayable(status));
            }
            if let Some(existing) = live_payment(tx, p.order_id)? {
                return Ok(PaymentInsert::Existing(existing));
            }
            let inserted = tx.execute(
                "INSERT INTO payments (order_id, user_id, provider, provider_payment_id, transaction_id, method, attempt, \
                 amount_minor, currency, status, created_at, updated_at, client_secret, capture_method) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?12, ?10, ?10, ?11, ?13)",
                params![
                    p.order_id.get(),
                    p.user_id.get(),
                    p.provider,
                    p.provider_payment_id,
                    p.transaction_id,
                    p.method,
                    p.attempt,
                    p.amount.minor(),
                    p.amount.currency().code(),
                    micros(p.created_at),
                    p.client_secret,
                    PaymentStatus::Pending.as_str(),
                    p.capture_method.as_str()
                ],
            );
            match inserted {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    let winner = live_payment(tx, p.order_id)?;
                    return winner.map(PaymentInsert::Existing).ok_or_else(|| Error::from(e));
                }
                Err(e) => return Err(e.into()),
            }
            let payment = query_payment(tx, "id = ?1", tx.last_insert_rowid())?.ok_or_else(|| corrupt("inserted payment"))?;
            record_idempotency(tx, idempotency.as_ref(), &payment)?;
            Ok(PaymentInsert::Inserted(payment))
        })
        .await
    }

    async fn payment_by_id(&self, id: PaymentId) -> Result<Option<Payment>> {
        self.read_statement(move |c| query_payment(c, "id = ?1", id.get())).await
    }

    async fn payment_by_provider_id(&self, provider: &str, provider_payment_id: &str) -> Result<Option<Payment>> {
        let (provider, provider_id) = (provider.to_owned(), provider_payment_id.to_owned());
        self.read_statement(move |c| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE provider = ?1 AND provider_payment_id = ?2 \
                 ORDER BY id DESC LIMIT 1"
            );
            c.prepare_cached(&sql)?.query_row(params![provider, provider_id], payment_row).optional()?.transpose()
        })
        .await
    }

    async fn set_next_action(&self, id: PaymentId, next_action: Option<String>) -> Result<Option<Payment>> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE payments SET next_action = ?2 WHERE id = ?1 AND status = ?3",
                params![id.get(), next_action, PaymentStatus::Pending.as_str()],
            )?;
            query_payment(tx, "id = ?1", id.get())
        })
        .await
    }

    async fn inbound_event_seen(&self, provider: &str, event_id: &str) -> Result<bool> {
        let (provider, event_id) = (provider.to_owned(), event_id.to_owned());
        self.read_statement(move |c| {
            let seen: Option<i64> = c
                .prepare_cached("SELECT 1 FROM inbound_events WHERE provider = ?1 AND event_id = ?2")?
                .query_row(params![provider, event_id], |r| r.get(0))
                .optional()?;
            Ok(seen.is_some())
        })
        .await
    }

    async fn record_inbound_event(
        &self,
        provider: &str,
        event_id: &str,
        kind: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (provider, event_id, kind) = (provider.to_owned(), event_id.to_owned(), kind.to_owned());
        self.write(move |tx| {
            let n = tx.execute(
                "INSERT INTO inbound_events (provider, event_id, kind, received_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (provider, event_id) DO NOTHING",
                params![provider, event_id, kind, micros(at)],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn transient_failures(&self, id: PaymentId) -> Result<u32> {
        self.read_statement(move |c| {
            let n: Option<i64> = c
                .prepare_cached("SELECT transient_failures FROM payments WHERE id = ?1")?
                .query_row([id.get()], |r| r.get(0))
                .optional()?;
            Ok(n.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)))
        })
        .await
    }

    async fn record_transient_failure(&self, id: PaymentId) -> Result<()> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE payments SET transient_failures = transient_failures + 1 WHERE id = ?1 AND status = ?2",
                params![id.get(), PaymentStatus::Pending.as_str()],
            )?;
            Ok(())
        })
        .await
    }

    async fn payments_for_order(&self, order_id: OrderId) -> Result<Vec<Payment>> {
        self.read_statement(move |c| {
            let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = ?1 ORDER BY id");
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map([order_id.get()], payment_row)?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    async fn count_payments(&self, status: PaymentStatus) -> Result<u64> {
        self.read_statement(move |c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM payments WHERE status = ?1")?
                .query_row([status.as_str()], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn payments_open_at_provider(&self, statuses: &[PaymentStatus], limit: u32) -> Result<Vec<Payment>> {
        let statuses = status_list(&PaymentStatus::names(statuses));
        self.read_statement(move |c| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE provider_closed_at IS NULL \
                 AND status IN (SELECT value FROM json_each(?1)) ORDER BY id LIMIT ?2"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![statuses, limit], payment_row)?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    async fn mark_closed_at_provider(&self, id: PaymentId, at: DateTime<Utc>) -> Result<bool> {
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE payments SET provider_closed_at = ?2 WHERE id = ?1 AND provider_closed_at IS NULL",
                params![id.get(), micros(at)],
            )?;
            Ok(changed == 1)
        })
        .await
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
        self.write(move |tx| {
            let (change, order_change) = completion(&outcome);
            let (reason, expires_at) = match &outcome {
                PaymentOutcome::Failed { reason } => (Some(reason.as_str()), None),
                PaymentOutcome::Succeeded => (None, None),
                PaymentOutcome::Authorized { expires_at } => (None, Some(micros(*expires_at))),
            };
            let captured = outcome == PaymentOutcome::Succeeded;
            let changed = tx.execute(
                "UPDATE payments SET status = ?3, failure_reason = COALESCE(?5, failure_reason), updated_at = ?2, \
                 captured_minor = CASE WHEN ?6 THEN amount_minor ELSE captured_minor END, \
                 authorization_expires_at = ?7 \
                 WHERE id = ?1 AND status = ?4",
                params![id.get(), micros(at), change.to.as_str(), change.from.as_str(), reason, captured, expires_at],
            )?;
            let payment =
                query_payment(tx, "id = ?1", id.get())?.ok_or_else(|| Error::NotFound(format!("payment {id}")))?;
            if changed == 0 {
                return Ok(Transition::NotApplied(payment));
            }
            let reason = if captured { format!("payment {id} succeeded") } else { format!("payment {id} authorised") };
            let moved = order_change.map(|change| (change, reason));
            payment_moved(tx, payment, moved, &actor, at, notify, idempotency.as_ref())
        })
        .await
    }

    async fn begin_settlement(
        &self,
        id: PaymentId,
        action: SettleAction,
        amount: Money,
        at: DateTime<Utc>,
    ) -> Result<Transition<Payment>> {
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE payments SET settle_action = ?2, settle_minor = ?3, settle_started_at = ?4 \
                 WHERE id = ?1 AND status = ?5 AND settle_action IS NULL AND currency = ?6 \
                 AND ?3 BETWEEN 0 AND amount_minor AND (NOT ?7 OR authorization_expires_at <= ?4)",
                params![
                    id.get(),
                    action.as_str(),
                    amount.minor(),
                    micros(at),
                    PaymentStatus::Authorized.as_str(),
                    amount.currency().code(),
                    action == SettleAction::Expire
                ],
            )?;
            let payment =
                query_payment(tx, "id = ?1", id.get())?.ok_or_else(|| Error::NotFound(format!("payment {id}")))?;
            Ok(if changed == 1 { Transition::Applied(payment) } else { Transition::NotApplied(payment) })
        })
        .await
    }

    async fn abandon_settlement(&self, id: PaymentId, action: SettleAction, started_at: DateTime<Utc>) -> Result<bool> {
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE payments SET settle_action = NULL, settle_minor = NULL, settle_started_at = NULL \
                 WHERE id = ?1 AND settle_action = ?2 AND settle_started_at = ?3",
                params![id.get(), action.as_str(), micros(started_at)],
            )?;
            Ok(changed == 1)
        })
        .await
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
        self.write(move |tx| {
            let (change, order_change, reason) = settlement(id, &outcome);
            let (captured, failure, closed) = match &outcome {
                SettlementOutcome::Captured { amount } => (Some(amount.minor()), None, None),
                SettlementOutcome::Released { reason, .. } => (None, Some(reason.as_str()), Some(micros(at))),
            };
            let changed = tx.execute(
                "UPDATE payments SET status = ?3, updated_at = ?2, captured_minor = COALESCE(?5, captured_minor), \
                 failure_reason = COALESCE(?6, failure_reason), provider_closed_at = COALESCE(?7, provider_closed_at), \
                 settle_action = NULL, settle_minor = NULL, settle_started_at = NULL \
                 WHERE id = ?1 AND status = ?4",
                params![id.get(), micros(at), change.to.as_str(), change.from.as_str(), captured, failure, closed],
            )?;
            let payment =
                query_payment(tx, "id = ?1", id.get())?.ok_or_else(|| Error::NotFound(format!("payment {id}")))?;
            if changed == 0 {
                return Ok(Transition::NotApplied(payment));
            }
            payment_moved(tx, payment, Some((order_change, reason)), &actor, at, notify, idempotency.as_ref())
        })
        .await
    }

    async fn stalled_settlements(&self, started_before: DateTime<Utc>, limit: u32) -> Result<Vec<Payment>> {
        self.read_statement(move |c| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = ?3 AND settle_action IS NOT NULL \
                 AND settle_started_at < ?1 ORDER BY settle_started_at, id LIMIT ?2"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params![micros(started_before), limit, PaymentStatus::Authorized.as_str()], payment_row)?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    async fn expiring_authorizations(&self, before: DateTime<Utc>, unwarned: bool, limit: u32) -> Result<Vec<Payment>> {
        self.read_statement(move |c| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = ?3 AND settle_action IS NULL \
                 AND authorization_expires_at <= ?1 AND (NOT ?4 OR expiry_warned_at IS NULL) \
                 ORDER BY authorization_expires_at, id LIMIT ?2"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params![micros(before), limit, PaymentStatus::Authorized.as_str(), unwarned], payment_row)?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    async fn mark_expiry_warned(&self, id: PaymentId, at: DateTime<Utc>) -> Result<bool> {
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE payments SET expiry_warned_at = ?2 WHERE id = ?1 AND expiry_warned_at IS NULL",
                params![id.get(), micros(at)],
            )?;
            Ok(changed == 1)
        })
        .await
    }
}

/// The rest of a payment's change, in its transaction: its order moves as `order` says (with
/// the order's event; `Conflict`, rolling everything back, when the order is no longer where
/// the change expects), then the outbox rows and the idempotency result are written.
fn payment_moved(
    tx: &Transaction<'_>,
    payment: Payment,
    order: Option<(StatusChange<OrderStatus>, String)>,
    actor: &Actor,
    at: DateTime<Utc>,
    notify: PaymentNotify,
    idempotency: Option<&IdempotencySlot>,
) -> Result<Transition<Payment>> {
    if let Some((change, reason)) = order {
        let moved = tx.execute(
            "UPDATE orders SET status = ?3, updated_at = ?2 WHERE id = ?1 AND status = ?4",
            params![payment.order_id.get(), micros(at), change.to.as_str(), change.from.as_str()],
        )?;
        if moved == 0 {
            return Err(Error::Conflict(format!("order {} is no longer {}", payment.order_id, change.from)));
        }
        insert_event(tx, payment.order_id, Some(change.from), change.to, actor, &reason, at)?;
    }
    let order = order_by_id(tx, payment.order_id)?.ok_or_else(|| corrupt("payment without order"))?;
    insert_outbox(tx, notify(&order, &payment), at)?;
    record_idempotency(tx, idempotency, &payment)?;
    Ok(Transition::Applied(payment))
}
