//! Orders, their items and audit trail. (SQLite)

use super::*;
use crate::storage::policy::cancellation;

#[async_trait]
impl OrderStore for SqliteStorage {
    async fn insert_order(
        &self,
        user_id: UserId,
        actor: Actor,
        order: NewOrder,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Order> {
        // Stored with microsecond precision; the returned order says exactly what was stored.
        let at = time(micros(at));
        let items = items_json(order.items())?;
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO orders (user_id, status, currency, total_minor, created_at, updated_at, items) \
                 VALUES (?1, ?5, ?2, ?3, ?4, ?4, ?6)",
            )?
            .execute(params![
                user_id.get(),
                order.currency().code(),
                order.total().minor(),
                micros(at),
                OrderStatus::Created.as_str(),
                items
            ])?;
            let id = OrderId::new(tx.last_insert_rowid());
            insert_event(tx, id, None, OrderStatus::Created, &actor, "order placed", at)?;
            let stored = order.placed(id, user_id, at);
            insert_outbox(tx, notify(&stored), at)?;
            record_idempotency(tx, idempotency.as_ref(), &stored)?;
            Ok(stored)
        })
        .await
    }

    async fn order_by_id(&self, id: OrderId) -> Result<Option<Order>> {
        self.read_statement(move |c| order_by_id(c, id)).await
    }

    async fn list_orders(&self, q: OrderQuery) -> Result<Vec<Order>> {
        let inline = q.user_id.is_some() && q.search.is_none();
        let read = move |c: &Connection| {
            let mut stmt = c.prepare_cached(list_orders_sql(&q))?;
            let (user, status, before, after, until) = (
                q.user_id.map(UserId::get),
                q.status.map(OrderStatus::as_str),
                q.before.map_or(i64::MAX, OrderId::get),
                q.created_after.map(micros),
                q.created_before.map(micros),
            );
            let (search_id, search_text) = match &q.search {
                Some(s) => (s.id.map(OrderId::get), Some(s.text.as_str())),
                None => (None, None),
            };
            let all: [&dyn rusqlite::ToSql; 8] =
                [&user, &status, &before, &q.limit, &after, &until, &search_id, &search_text];
            let used = stmt.parameter_count();
            read_orders(stmt.query(&all[..used])?, q.limit as usize)
        };
        // One statement: no transaction. One user's page walks the (user_id[, status], id)
        // index, in place; anything else may scan, on the blocking pool.
        self.read_in(Read { transaction: false, inline }, read).await
    }

    async fn order_totals(&self, since: DateTime<Utc>) -> Result<Vec<OrderTotals>> {
        self.read_in(Read { transaction: false, inline: false }, move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT o.status, o.currency, COUNT(*), SUM(o.total_minor), SUM(o.refunded_minor), \
                 COALESCE(SUM(p.captured_minor), 0) FROM orders o \
                 LEFT JOIN payments p ON p.order_id = o.id AND p.captured_minor > 0 \
                 WHERE o.created_at >= ?1 GROUP BY o.status, o.currency ORDER BY o.currency, o.status",
            )?;
            let rows = stmt.query_map([micros(since)], |r| {
                let counts = (r.get::<_, i64>(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, counts))
            })?;
            rows.map(|r| {
                let (status, currency, (orders, total_minor, refunded_minor, captured_minor)) = r?;
                Ok(OrderTotals {
                    status: OrderStatus::parse(&status).ok_or_else(|| corrupt("order status"))?,
                    currency,
                    orders: u64::try_from(orders).unwrap_or(0),
                    total_minor,
                    captured_minor,
                    refunded_minor,
                })
            })
            .collect()
        })
        .await
    }

    async fn latest_order(&self, user_id: UserId) -> Result<Option<Order>> {
        self.read_statement(move |c| one_order(c, LATEST_ORDER, user_id.get())).await
    }

    async fn order_events(&self, id: OrderId) -> Result<Vec<OrderEvent>> {
        self.read_statement(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT from_status, to_status, actor, reason, at FROM order_events WHERE order_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([id.get()], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            rows.map(|r| {
                let (from, to, actor, reason, at) = r?;
                Ok(OrderEvent {
                    order_id: id,
                    from: from.map(|f| OrderStatus::parse(&f).ok_or_else(|| corrupt("event status"))).transpose()?,
                    to: OrderStatus::parse(&to).ok_or_else(|| corrupt("event status"))?,
                    actor: Actor::try_from(actor).map_err(|_| corrupt("actor"))?,
                    reason,
                    at: time(at),
                })
            })
            .collect()
        })
        .await
    }

    async fn cancel_order(
        &self,
        id: OrderId,
        actor: Actor,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Order>> {
        let (change, payment_change) = cancellation();
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE orders SET status = ?3, updated_at = ?2 WHERE id = ?1 AND status = ?4",
                params![id.get(), micros(at), change.to.as_str(), change.from.as_str()],
            )?;
            if changed == 0 {
                return order_by_id(tx, id)?
                    .map(Transition::NotApplied)
                    .ok_or_else(|| Error::NotFound(format!("order {id}")));
            }
            tx.execute(
                "UPDATE payments SET status = ?3, updated_at = ?2 WHERE order_id = ?1 AND status = ?4",
                params![id.get(), micros(at), payment_change.to.as_str(), payment_change.from.as_str()],
            )?;
            insert_event(tx, id, Some(change.from), change.to, &actor, "order cancelled", at)?;
            let order = order_by_id(tx, id)?.ok_or_else(|| corrupt("cancelled order"))?;
            insert_outbox(tx, notify(&order), at)?;
            record_idempotency(tx, idempotency.as_ref(), &order)?;
            Ok(Transition::Applied(order))
        })
        .await
    }
}

/// The statement for a page of orders with their items (kept in each order's row): only the
/// filters `q` uses appear in its `WHERE`, so that SQLite plans each combination with the index
/// that fits it (`?1 IS NULL OR user_id = ?1` would make it walk every order newest first,
/// whoever owns it). Every filter keeps its parameter number (a statement without date filters
/// takes the first four). One statement reads one state of the database: no transaction needed.
pub(super) fn list_orders_sql(q: &OrderQuery) -> &'static str {
    // Newest first, in the order of the index walked: no temporary sort (a test checks every
    // plan but the staff search's).
    macro_rules! page {
        ($($filter:literal),*) => {
            concat!(
                "SELECT ", order_columns!(), " FROM orders o WHERE o.id < ?3", $(" AND ", $filter,)*
                " ORDER BY o.id DESC LIMIT ?4"
            )
        };
    }
    if q.search.is_some() {
        // A staff search: every filter optional, the owner found by name or email.
        return page!(
            "(?1 IS NULL OR user_id = ?1)",
            "(?2 IS NULL OR status = ?2)",
            "(?5 IS NULL OR created_at >= ?5)",
            "(?6 IS NULL OR created_at < ?6)",
            "(id = ?7 OR user_id IN (SELECT id FROM users WHERE instr(lower(username), ?8) > 0 \
             OR instr(lower(coalesce(email, '')), ?8) > 0))"
        );
    }
    let dates = q.created_after.is_some() || q.created_before.is_some();
    match (q.user_id.is_some(), q.status.is_some(), dates) {
        (false, false, false) => page!(),
        (true, false, false) => page!("user_id = ?1"),
        (false, true, false) => page!("status = ?2"),
        (true, true, false) => page!("user_id = ?1", "status = ?2"),
        (false, false, true) => page!("(?5 IS NULL OR created_at >= ?5)", "(?6 IS NULL OR created_at < ?6)"),
        (true, false, true) => {
            page!("user_id = ?1", "(?5 IS NULL OR created_at >= ?5)", "(?6 IS NULL OR created_at < ?6)")
        }
        (false, true, true) => {
            page!("status = ?2", "(?5 IS NULL OR created_at >= ?5)", "(?6 IS NULL OR created_at < ?6)")
        }
        (true, true, true) => {
            page!("user_id = ?1", "status = ?2", "(?5 IS NULL OR created_at >= ?5)", "(?6 IS NULL OR created_at < ?6)")
        }
    }
}
