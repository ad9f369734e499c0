//! Orders, their items and audit trail. (PostgreSQL)

use sqlx::Connection as _;

use super::*;
use crate::storage::policy::cancellation;

#[async_trait]
impl OrderStore for PostgresStorage {
    async fn insert_order(
        &self,
        user_id: UserId,
        actor: Actor,
        order: NewOrder,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Order> {
        // Written with the orders placed at the same time, on the writers' own thread (see
        // `order_batches`); then other processes' dispatchers are told.
        let write = order_batches::NewOrderWrite { user_id, actor, order, at: truncate(at), notify, idempotency };
        let stored = self.order_batches.place(write).await?;
        self.announcer.announce().await;
        Ok(stored)
    }

    async fn order_by_id(&self, id: OrderId) -> Result<Option<Order>> {
        let query = sqlx::query(order_with_items!("WHERE o.id = $1")).bind(id.get());
        self.row(query).await?.as_ref().map(order_from_row).transpose()
    }

    async fn list_orders(&self, q: OrderQuery) -> Result<Vec<Order>> {
        let before = q.before.map_or(i64::MAX, OrderId::get);
        let limit = i64::from(q.limit);
        let status = q.status.map(OrderStatus::as_str);
        // Each order with its items (kept in its row), in one statement: one round trip per page.
        let query = if let Some(search) = &q.search {
            // A staff search: every filter optional, the owner found by name or email.
            sqlx::query(order_with_items!(
                "WHERE ($1::bigint IS NULL OR o.user_id = $1) AND ($2::text IS NULL OR o.status = $2) AND o.id < $3 \
                 AND ($5::timestamptz IS NULL OR o.created_at >= $5) AND ($6::timestamptz IS NULL OR o.created_at < $6) \
                 AND (o.id = $7 OR o.user_id IN (SELECT id FROM users WHERE strpos(lower(username), $8) > 0 \
                 OR strpos(lower(coalesce(email, '')), $8) > 0)) ORDER BY o.id DESC LIMIT $4"
            ))
            .bind(q.user_id.map(UserId::get))
            .bind(status)
            .bind(before)
            .bind(limit)
            .bind(q.created_after)
            .bind(q.created_before)
            .bind(search.id.map(OrderId::get))
            .bind(search.text.clone())
        } else if q.created_after.is_some() || q.created_before.is_some() {
            // A time window (staff reports): one statement with every filter optional.
            sqlx::query(order_with_items!(
                "WHERE ($1::bigint IS NULL OR o.user_id = $1) AND ($2::text IS NULL OR o.status = $2) AND o.id < $3 \
                 AND ($5::timestamptz IS NULL OR o.created_at >= $5) AND ($6::timestamptz IS NULL OR o.created_at < $6) \
                 ORDER BY o.id DESC LIMIT $4"
            ))
            .bind(q.user_id.map(UserId::get))
            .bind(status)
            .bind(before)
            .bind(limit)
            .bind(q.created_after)
            .bind(q.created_before)
        } else {
            // One static statement per filter combination, so each gets a plan that uses its index.
            let query = match (q.user_id, status) {
                (Some(u), Some(s)) => sqlx::query(order_with_items!(
                    "WHERE o.user_id = $1 AND o.status = $2 AND o.id < $3 ORDER BY o.id DESC LIMIT $4"
                ))
                .bind(u.get())
                .bind(s),
                (Some(u), None) => {
                    sqlx::query(order_with_items!("WHERE o.user_id = $1 AND o.id < $2 ORDER BY o.id DESC LIMIT $3"))
                        .bind(u.get())
                }
                (None, Some(s)) => {
                    sqlx::query(order_with_items!("WHERE o.status = $1 AND o.id < $2 ORDER BY o.id DESC LIMIT $3"))
                        .bind(s)
                }
                (None, None) => sqlx::query(order_with_items!("WHERE o.id < $1 ORDER BY o.id DESC LIMIT $2")),
            };
            query.bind(before).bind(limit)
        };
        self.rows(query).await?.iter().map(order_from_row).collect()
    }

    async fn order_totals(&self, since: DateTime<Utc>) -> Result<Vec<OrderTotals>> {
        let rows = self
            .rows(
                sqlx::query(
                    "SELECT o.status, o.currency, COUNT(*) AS orders, SUM(o.total_minor)::bigint AS total_minor, \
                     SUM(o.refunded_minor)::bigint AS refunded_minor, \
                     COALESCE(SUM(p.captured_minor), 0)::bigint AS captured_minor FROM orders o \
                     LEFT JOIN payments p ON p.order_id = o.id AND p.captured_minor > 0 \
                     WHERE o.created_at >= $1 GROUP BY o.status, o.currency ORDER BY o.currency, o.status",
                )
                .bind(since),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                let orders: i64 = r.try_get("orders")?;
                Ok(OrderTotals {
                    status: OrderStatus::parse(&status).ok_or_else(|| corrupt("order status"))?,
                    currency: r.try_get("currency")?,
                    orders: u64::try_from(orders).unwrap_or(0),
                    total_minor: r.try_get("total_minor")?,
                    captured_minor: r.try_get("captured_minor")?,
                    refunded_minor: r.try_get("refunded_minor")?,
                })
            })
            .collect()
    }

    async fn latest_order(&self, user_id: UserId) -> Result<Option<Order>> {
        let query =
            sqlx::query(order_with_items!("WHERE o.user_id = $1 ORDER BY o.id DESC LIMIT 1")).bind(user_id.get());
        self.row(query).await?.as_ref().map(order_from_row).transpose()
    }

    async fn order_events(&self, id: OrderId) -> Result<Vec<OrderEvent>> {
        let rows = self
            .rows(
                sqlx::query(
                    "SELECT from_status, to_status, actor, reason, at FROM order_events WHERE order_id = $1 ORDER BY id",
                )
                .bind(id.get()),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let from: Option<String> = r.try_get("from_status")?;
                let to: String = r.try_get("to_status")?;
                let actor: String = r.try_get("actor")?;
                Ok(OrderEvent {
                    order_id: id,
                    from: from.map(|f| OrderStatus::parse(&f).ok_or_else(|| corrupt("event status"))).transpose()?,
                    to: OrderStatus::parse(&to).ok_or_else(|| corrupt("event status"))?,
                    actor: Actor::try_from(actor).map_err(|_| corrupt("actor"))?,
                    reason: r.try_get("reason")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    async fn cancel_order(
        &self,
        id: OrderId,
        actor: Actor,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Order>> {
        let done = self
            .transaction_on_writers(move |conn| {
                Box::pin(cancel_order_on(conn, id, actor, truncate(at), notify, idempotency))
            })
            .await?;
        Ok(self.announced(done).await)
    }
}

/// [`OrderStore::cancel_order`] in a transaction on `conn`, committed or rolled back before it
/// returns; the caller announces the notifications.
async fn cancel_order_on(
    conn: &mut PgConnection,
    id: OrderId,
    actor: Actor,
    at: DateTime<Utc>,
    notify: OrderNotify,
    idempotency: Option<IdempotencySlot>,
) -> Result<Transition<Order>> {
    let (change, payment_change) = cancellation();
    let mut tx = conn.begin().await?;
    let changed = sqlx::query("UPDATE orders SET status = $3, updated_at = $2 WHERE id = $1 AND status = $4")
        .bind(id.get())
        .bind(at)
        .bind(change.to.as_str())
        .bind(change.from.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if changed == 0 {
        let current = order_by_id(&mut tx, id).await?;
        tx.rollback().await?;
        return current.map(Transition::NotApplied).ok_or_else(|| Error::NotFound(format!("order {id}")));
    }
    sqlx::query("UPDATE payments SET status = $3, updated_at = $2 WHERE order_id = $1 AND status = $4")
        .bind(id.get())
        .bind(at)
        .bind(payment_change.to.as_str())
        .bind(payment_change.from.as_str())
        .execute(&mut *tx)
        .await?;
    insert_event(&mut tx, id, Some(change.from), change.to, &actor, "order cancelled", at).await?;
    let order = order_by_id(&mut tx, id).await?.ok_or_else(|| corrupt("cancelled order"))?;
    insert_outbox(&mut tx, notify(&order), at).await?;
    record_idempotency(&mut tx, idempotency.as_ref(), &order).await?;
    tx.commit().await?;
    Ok(Transition::Applied(order))
}
