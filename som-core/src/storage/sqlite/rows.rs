//! SQLite rows: each table's columns read into the shared row structs (times are stored as
//! microseconds), and the writes several operations share.

use super::*;
use crate::domain::OrderItem;
use crate::storage::rows::{OrderRow, OutboxRow, PaymentRow, RefundRow, UserRow, order_without_items};

pub(super) const USER_COLUMNS: &str = "id, username, email, is_staff, created_at, is_active";

pub(super) fn user_from_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        username: r.get(1)?,
        email: r.get(2)?,
        is_staff: r.get(3)?,
        created_at: time(r.get(4)?),
        is_active: r.get(5)?,
    })
}

pub(super) fn build_user(row: UserRow) -> Result<User> {
    row.into_user()
}

pub(super) fn query_user(conn: &Connection, where_clause: &str, param: &dyn rusqlite::ToSql) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {where_clause}");
    conn.prepare_cached(&sql)?.query_row([param], user_from_row).optional()?.map(UserRow::into_user).transpose()
}

/// An order's columns, its items (kept in its row as JSON) last, as [`read_orders`] reads them.
macro_rules! order_columns {
    () => {
        "o.id, o.user_id, o.status, o.currency, o.total_minor, o.created_at, o.updated_at, o.refunded_minor, \
         o.fulfillment_status, o.items"
    };
}
pub(super) use order_columns;

/// The order of a row of [`order_columns`].
fn order_from_row(r: &Row<'_>) -> Result<Order> {
    let row = OrderRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        status: r.get(2)?,
        currency: r.get(3)?,
        total_minor: r.get(4)?,
        created_at: time(r.get(5)?),
        updated_at: time(r.get(6)?),
        refunded_minor: r.get(7)?,
        fulfillment_status: r.get(8)?,
    };
    let mut order = order_without_items(row)?;
    let currency = order.currency();
    let items = r.get_ref(9)?.as_str().map_err(|_| corrupt("order items"))?;
    let items: Vec<(String, i64, i64)> = serde_json::from_str(items).map_err(|_| corrupt("order items"))?;
    order.items = items
        .into_iter()
        .map(|(name, quantity, price)| OrderItem { name, quantity, price: Money::from_minor(price, currency) })
        .collect();
    Ok(order)
}

/// An order's items as its row keeps them: `[[name, quantity, unit price in minor units], …]`.
pub(super) fn items_json(items: &[OrderItem]) -> Result<String> {
    let items: Vec<(&str, i64, i64)> = items.iter().map(|i| (i.name.as_str(), i.quantity, i.price.minor())).collect();
    serde_json::to_string(&items).map_err(|e| Error::Internal(format!("order items: {e}")))
}

/// One order, selected by `$which` (its id), in one statement.
macro_rules! one_order {
    ($which:literal) => {
        concat!("SELECT ", order_columns!(), " FROM orders o WHERE o.id = (", $which, ")")
    };
}

/// The order by id.
pub(super) const ORDER_BY_ID: &str = one_order!("?1");
/// The user's newest order.
pub(super) const LATEST_ORDER: &str = one_order!("SELECT id FROM orders WHERE user_id = ?1 ORDER BY id DESC LIMIT 1");

/// Runs one of [`ORDER_BY_ID`] and [`LATEST_ORDER`].
pub(super) fn one_order(conn: &Connection, sql: &str, param: i64) -> Result<Option<Order>> {
    let mut stmt = conn.prepare_cached(sql)?;
    Ok(read_orders(stmt.query([param])?, 1)?.pop())
}

/// The orders of a statement that returns [`order_columns`], one row per order.
pub(super) fn read_orders(mut rows: rusqlite::Rows<'_>, expected: usize) -> Result<Vec<Order>> {
    let mut orders: Vec<Order> = Vec::with_capacity(expected);
    while let Some(r) = rows.next()? {
        orders.push(order_from_row(r)?);
    }
    Ok(orders)
}

pub(super) fn order_by_id(conn: &Connection, id: OrderId) -> Result<Option<Order>> {
    one_order(conn, ORDER_BY_ID, id.get())
}

pub(super) const PAYMENT_COLUMNS: &str = "id, order_id, user_id, provider, provider_payment_id, transaction_id, \
     method, attempt, amount_minor, currency, status, failure_reason, created_at, updated_at, refunded_minor, \
     refund_reserved_minor, client_secret, next_action, capture_method, captured_minor, authorization_expires_at, \
     settle_action, settle_minor, settle_started_at";

pub(super) fn payment_row(r: &Row<'_>) -> rusqlite::Result<Result<Payment>> {
    let row = PaymentRow {
        id: r.get(0)?,
        order_id: r.get(1)?,
        user_id: r.get(2)?,
        provider: r.get(3)?,
        provider_payment_id: r.get(4)?,
        transaction_id: r.get(5)?,
        method: r.get(6)?,
        attempt: r.get(7)?,
        amount_minor: r.get(8)?,
        currency: r.get(9)?,
        status: r.get(10)?,
        failure_reason: r.get(11)?,
        created_at: time(r.get(12)?),
        updated_at: time(r.get(13)?),
        refunded_minor: r.get(14)?,
        refund_reserved_minor: r.get(15)?,
        client_secret: r.get(16)?,
        next_action: r.get(17)?,
        capture_method: r.get(18)?,
        captured_minor: r.get(19)?,
        authorization_expires_at: r.get::<_, Option<i64>>(20)?.map(time),
        settle_action: r.get(21)?,
        settle_minor: r.get(22)?,
        settle_started_at: r.get::<_, Option<i64>>(23)?.map(time),
    };
    Ok(row.into_payment())
}

/// Stored status names as a JSON array, bound as `status IN (SELECT value FROM json_each(?n))`.
pub(super) fn status_list(names: &[&str]) -> String {
    serde_json::Value::from(names.to_vec()).to_string()
}

/// The order's live payment ([`PaymentStatus::LIVE`]), if any.
pub(super) fn live_payment(conn: &Connection, order_id: OrderId) -> Result<Option<Payment>> {
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = ?1 AND status IN (SELECT value FROM json_each(?2))"
    );
    let live = status_list(&crate::domain::PaymentStatus::names(&crate::domain::PaymentStatus::LIVE));
    conn.prepare_cached(&sql)?.query_row(params![order_id.get(), live], payment_row).optional()?.transpose()
}

pub(super) fn query_payment(conn: &Connection, where_clause: &str, param: i64) -> Result<Option<Payment>> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE {where_clause}");
    conn.prepare_cached(&sql)?.query_row([param], payment_row).optional()?.transpose()
}

pub(super) const REFUND_COLUMNS: &str = "id, payment_id, order_id, user_id, amount_minor, currency, status, \
     provider_refund_id, reason, failure_reason, actor, created_at, updated_at";

pub(super) fn refund_row(r: &Row<'_>) -> rusqlite::Result<Result<Refund>> {
    let row = RefundRow {
        id: r.get(0)?,
        payment_id: r.get(1)?,
        order_id: r.get(2)?,
        user_id: r.get(3)?,
        amount_minor: r.get(4)?,
        currency: r.get(5)?,
        status: r.get(6)?,
        provider_refund_id: r.get(7)?,
        reason: r.get(8)?,
        failure_reason: r.get(9)?,
        actor: r.get(10)?,
        created_at: time(r.get(11)?),
        updated_at: time(r.get(12)?),
    };
    Ok(row.into_refund())
}

pub(super) const OUTBOX_COLUMNS: &str = "id, kind, dedupe_key, channel, recipient, payload, status, attempts, \
     next_attempt_at, last_error, created_at, sent_at";

pub(super) fn outbox_row(r: &Row<'_>) -> rusqlite::Result<Result<OutboxEntry>> {
    let sent_at: Option<i64> = r.get(11)?;
    let row = OutboxRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        dedupe_key: r.get(2)?,
        channel: r.get(3)?,
        recipient: r.get(4)?,
        payload: r.get(5)?,
        status: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_at: time(r.get(8)?),
        last_error: r.get(9)?,
        created_at: time(r.get(10)?),
        sent_at: sent_at.map(time),
    };
    Ok(row.into_entry())
}

pub(super) fn query_outbox(conn: &Connection, id: NotificationId) -> Result<Option<OutboxEntry>> {
    let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1");
    conn.prepare_cached(&sql)?.query_row([id.get()], outbox_row).optional()?.transpose()
}

// ---------------------------------------------------------------------------------------------
// Writes shared by several operations

pub(super) fn insert_event(
    tx: &Transaction<'_>,
    order: OrderId,
    from: Option<OrderStatus>,
    to: OrderStatus,
    actor: &Actor,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO order_events (order_id, from_status, to_status, actor, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![order.get(), from.map(OrderStatus::as_str), to.as_str(), actor.to_string(), reason, micros(at)])?;
    Ok(())
}

pub(super) fn insert_outbox(tx: &Transaction<'_>, rows: Vec<NewNotification>, at: DateTime<Utc>) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO outbox (kind, dedupe_key, channel, recipient, payload, status, attempts, next_attempt_at, \
         created_at, updated_at, order_id) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6, ?7) \
         ON CONFLICT (dedupe_key, channel) DO NOTHING",
    )?;
    for n in rows {
        let payload = serde_json::to_string(&n.message)
            .map_err(|e| Error::Internal(format!("serializing outbox payload: {e}")))?;
        stmt.execute(params![
            n.message.kind.as_str(),
            n.message.dedupe_key(),
            n.channel,
            recipient_of(&n),
            payload,
            micros(at),
            n.message.order_id.get()
        ])?;
    }
    Ok(())
}

pub(super) fn record_idempotency<T: serde::Serialize>(
    tx: &Transaction<'_>,
    slot: Option<&IdempotencySlot>,
    value: &T,
) -> Result<()> {
    if let Some(slot) = slot {
        let k = &slot.key;
        tx.prepare_cached(
            "UPDATE idempotency_keys SET response = ?4, locked_at = NULL \
             WHERE scope = ?1 AND operation = ?2 AND key = ?3 AND response IS NULL",
        )?
        .execute(params![k.scope, k.operation, k.key, response_json(value)?])?;
    }
    Ok(())
}
