//! PostgreSQL rows: `sqlx::FromRow` into the shared row structs, and the writes several
//! operations share.

use sqlx::FromRow;

use super::*;
use crate::domain::OrderItem;
use crate::storage::rows::{OrderRow, OutboxRow, PaymentRow, RefundRow, UserRow, order_without_items};

pub(super) fn user_from(r: &PgRow) -> Result<User> {
    UserRow::from_row(r)?.into_user()
}

pub(super) async fn user_where(
    exec: &mut sqlx::PgConnection,
    sql: &'static str,
    bind: UserKey<'_>,
) -> Result<Option<User>> {
    let q = sqlx::query(sql);
    let q = match bind {
        UserKey::Id(id) => q.bind(id),
        UserKey::Name(name) => q.bind(name.to_owned()),
    };
    q.fetch_optional(exec).await?.as_ref().map(user_from).transpose()
}

pub(super) enum UserKey<'a> {
    Id(i64),
    Name(&'a str),
}

/// An order with its items, kept in its row as arrays: a single order or a page of them is read
/// in one round trip, by one index scan. `$filter` is the statement's `WHERE`, `ORDER BY` and
/// `LIMIT` over `orders o`.
macro_rules! order_with_items {
    ($filter:literal) => {
        concat!(
            "SELECT o.id, o.user_id, o.status, o.currency, o.total_minor, o.created_at, o.updated_at, \
             o.refunded_minor, o.fulfillment_status, o.item_names AS names, o.item_quantities AS quantities, \
             o.item_prices AS prices FROM orders o ",
            $filter
        )
    };
}
pub(super) use order_with_items;

/// The order of a row selected by [`order_with_items!`].
pub(super) fn order_from_row(row: &PgRow) -> Result<Order> {
    let order = OrderRow::from_row(row)?;
    let names: Vec<String> = row.try_get("names")?;
    let quantities: Vec<i64> = row.try_get("quantities")?;
    let prices: Vec<i64> = row.try_get("prices")?;
    if names.len() != quantities.len() || names.len() != prices.len() {
        return Err(corrupt("order items"));
    }
    let mut order = order_without_items(order)?;
    let currency = order.currency();
    order.items = names
        .into_iter()
        .zip(quantities.into_iter().zip(prices))
        .map(|(name, (quantity, price))| OrderItem { name, quantity, price: Money::from_minor(price, currency) })
        .collect();
    Ok(order)
}

pub(super) async fn order_by_id(conn: &mut sqlx::PgConnection, id: OrderId) -> Result<Option<Order>> {
    let row = sqlx::query(order_with_items!("WHERE o.id = $1")).bind(id.get()).fetch_optional(&mut *conn).await?;
    row.as_ref().map(order_from_row).transpose()
}

pub(super) fn payment_from(r: &PgRow) -> Result<Payment> {
    PaymentRow::from_row(r)?.into_payment()
}

pub(super) fn refund_from(r: &PgRow) -> Result<Refund> {
    RefundRow::from_row(r)?.into_refund()
}

pub(super) const PAYMENT_BY_ID: &str = "SELECT * FROM payments WHERE id = $1";

/// The order's live payment ([`PaymentStatus::LIVE`]), if any.
pub(super) async fn live_payment_where(conn: &mut sqlx::PgConnection, order_id: i64) -> Result<Option<Payment>> {
    sqlx::query("SELECT * FROM payments WHERE order_id = $1 AND status = ANY($2)")
        .bind(order_id)
        .bind(crate::domain::PaymentStatus::names(&crate::domain::PaymentStatus::LIVE))
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(payment_from)
        .transpose()
}

pub(super) async fn payment_where(
    conn: &mut sqlx::PgConnection,
    sql: &'static str,
    id: i64,
) -> Result<Option<Payment>> {
    sqlx::query(sql).bind(id).fetch_optional(conn).await?.as_ref().map(payment_from).transpose()
}

pub(super) fn outbox_from(r: &PgRow) -> Result<OutboxEntry> {
    OutboxRow::from_row(r)?.into_entry()
}

// ---------------------------------------------------------------------------------------------
// Writes shared by several operations

pub(super) async fn insert_event(
    tx: &mut Tx<'_>,
    order: OrderId,
    from: Option<OrderStatus>,
    to: OrderStatus,
    actor: &Actor,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO order_events (order_id, from_status, to_status, actor, reason, at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(order.get())
    .bind(from.map(OrderStatus::as_str))
    .bind(to.as_str())
    .bind(actor.to_string())
    .bind(reason)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Outbox rows as column arrays, written by one `INSERT … SELECT … FROM UNNEST(…)`.
pub(super) struct OutboxRows {
    pub(super) kinds: Vec<&'static str>,
    pub(super) dedupe_keys: Vec<String>,
    pub(super) channels: Vec<String>,
    pub(super) recipients: Vec<Option<String>>,
    pub(super) payloads: Vec<String>,
    pub(super) order_ids: Vec<i64>,
}

impl OutboxRows {
    pub(super) fn new(rows: Vec<NewNotification>) -> Result<OutboxRows> {
        let mut out = OutboxRows {
            kinds: Vec::with_capacity(rows.len()),
            dedupe_keys: Vec::with_capacity(rows.len()),
            channels: Vec::with_capacity(rows.len()),
            recipients: Vec::with_capacity(rows.len()),
            payloads: Vec::with_capacity(rows.len()),
            order_ids: Vec::with_capacity(rows.len()),
        };
        for n in rows {
            out.payloads.push(
                serde_json::to_string(&n.message)
                    .map_err(|e| Error::Internal(format!("serializing outbox payload: {e}")))?,
            );
            out.kinds.push(n.message.kind.as_str());
            out.dedupe_keys.push(n.message.dedupe_key());
            out.recipients.push(recipient_of(&n));
            out.order_ids.push(n.message.order_id.get());
            out.channels.push(n.channel);
        }
        Ok(out)
    }
}

pub(super) async fn insert_outbox(tx: &mut Tx<'_>, rows: Vec<NewNotification>, at: DateTime<Utc>) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let rows = OutboxRows::new(rows)?;
    // Announced by the caller once the transaction has committed (see `announce`).
    sqlx::query(
        "INSERT INTO outbox (kind, dedupe_key, channel, recipient, payload, status, attempts, next_attempt_at, \
         created_at, updated_at, order_id) \
         SELECT kind, dedupe_key, channel, recipient, payload, 'pending', 0, $7, $7, $7, order_id \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[]) \
             AS t (kind, dedupe_key, channel, recipient, payload, order_id) \
         ON CONFLICT (dedupe_key, channel) DO NOTHING",
    )
    .bind(&rows.kinds)
    .bind(&rows.dedupe_keys)
    .bind(&rows.channels)
    .bind(&rows.recipients)
    .bind(&rows.payloads)
    .bind(&rows.order_ids)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn record_idempotency<T: serde::Serialize>(
    tx: &mut Tx<'_>,
    slot: Option<&IdempotencySlot>,
    value: &T,
) -> Result<()> {
    if let Some(slot) = slot {
        let k = &slot.key;
        sqlx::query(
            "UPDATE idempotency_keys SET response = $4, locked_at = NULL \
             WHERE scope = $1 AND operation = $2 AND key = $3 AND response IS NULL",
        )
        .bind(&k.scope)
        .bind(k.operation)
        .bind(&k.key)
        .bind(response_json(value)?)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
