//! Orders placed at the same time are written together: one statement and one commit for all
//! the orders waiting when the previous write ended.
//!
//! An order alone costs PostgreSQL a round trip for its id, a statement that writes its rows
//! and a commit that waits for the WAL to reach the disk; the commit and round trips cost as
//! much as the rows. So orders queue for one writer on the writers' thread (see `driver`):
//! it takes every order waiting (up to [`MOST`]), numbers them all in one round trip, writes
//! them all in one statement, and answers each. An order that arrives while the writer is idle
//! is written at once, alone, as before; under load the orders that arrive during one write
//! share the next, so the busier the database, the less each order costs it.
//!
//! A batch is all or nothing. When PostgreSQL refuses one (its answer says the statement was
//! rolled back), its orders are written again one by one, so that one order's problem is its
//! own; when the connection is lost instead (or the statement goes unanswered for
//! [`STATEMENT_LIMIT`]), whether the batch committed is unknown and every order in it fails as
//! unavailable, as a lone order would. A batch runs to its end whether or not its callers are
//! still waiting.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::types::Oid;
use tokio::sync::{mpsc, oneshot};

use super::rows::OutboxRows;
use super::statements::{Lent, Statements};
use crate::domain::{Actor, NewOrder, Order, OrderId, OrderStatus, UserId};
use crate::error::{Error, Result};
use crate::storage::rows::response_json;
use crate::storage::{IdempotencySlot, OrderNotify};

/// Most orders written by one statement.
const MOST: usize = 64;

/// Longest a batch's statement may go unanswered before its orders fail as unavailable (the
/// connection is then closed, and the orders queued behind it are written on another).
const STATEMENT_LIMIT: Duration = Duration::from_secs(30);

/// An order to be placed, as `OrderStore::insert_order` receives it.
pub(super) struct NewOrderWrite {
    pub(super) user_id: UserId,
    pub(super) actor: Actor,
    pub(super) order: NewOrder,
    pub(super) at: DateTime<Utc>,
    pub(super) notify: OrderNotify,
    pub(super) idempotency: Option<IdempotencySlot>,
}

struct Queued {
    write: NewOrderWrite,
    reply: oneshot::Sender<Result<Order>>,
}

/// The queue of orders waiting to be written; the writer stops when this is dropped.
pub(super) struct OrderBatches {
    queue: mpsc::UnboundedSender<Queued>,
}

impl OrderBatches {
    /// Starts the writer on `writers`' thread; ids come from the sequence `sequence`.
    pub(super) fn start(writers: &Arc<Statements>, sequence: Oid) -> OrderBatches {
        let (queue, queued) = mpsc::unbounded_channel();
        writers.spawn(write_batches(queued, Arc::downgrade(writers), sequence));
        OrderBatches { queue }
    }

    /// Writes `write` (with the orders placed at the same time) and returns the order stored.
    pub(super) async fn place(&self, write: NewOrderWrite) -> Result<Order> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Queued { write, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Internal("the postgres order writer has stopped".into())
}

async fn write_batches(mut queued: mpsc::UnboundedReceiver<Queued>, writers: Weak<Statements>, sequence: Oid) {
    let mut batch = Vec::with_capacity(MOST);
    while queued.recv_many(&mut batch, MOST).await > 0 {
        let Some(writers) = writers.upgrade() else { break };
        write_batch(&writers, sequence, std::mem::take(&mut batch)).await;
    }
}

/// An order ready to be written: numbered, its rows built.
struct Ready {
    stored: Order,
    actor: String,
    outbox: OutboxRows,
    /// The idempotency key's scope, operation, key and the response it keeps.
    idempotency: Option<(String, &'static str, String, String)>,
    reply: oneshot::Sender<Result<Order>>,
}

async fn write_batch(writers: &Statements, sequence: Oid, batch: Vec<Queued>) {
    let mut conn = match writers.get().await {
        Ok(conn) => conn,
        Err(e) => return fail_all(batch.into_iter().map(|q| q.reply), &e),
    };
    let ids = if batch.len() == 1 {
        sqlx::query_scalar::<_, i64>("SELECT nextval($1::regclass)").bind(sequence).fetch_all(&mut *conn)
    } else {
        sqlx::query_scalar::<_, i64>("SELECT nextval($1::regclass) FROM generate_series(1, $2)")
            .bind(sequence)
            .bind(batch.len() as i64)
            .fetch_all(&mut *conn)
    };
    let Ok(ids) = tokio::time::timeout(STATEMENT_LIMIT, ids).await else {
        return fail_all(batch.into_iter().map(|q| q.reply), &unanswered());
    };
    let mut ids = match conn.finish(ids) {
        Ok(ids) if ids.len() == batch.len() => ids,
        Ok(_) => return fail_all(batch.into_iter().map(|q| q.reply), &Error::Internal("postgres: too few ids".into())),
        Err(e) => return fail_all(batch.into_iter().map(|q| q.reply), &e),
    };
    // In the order they were placed.
    ids.sort_unstable();
    let mut ready = Vec::with_capacity(batch.len());
    for (queued, id) in batch.into_iter().zip(ids) {
        // The rows are built by the caller's `notify`: if that panics, its order fails, not
        // the writer.
        let write = queued.write;
        match std::panic::catch_unwind(AssertUnwindSafe(|| prepare(write, OrderId::new(id)))) {
            Ok(Ok((stored, actor, outbox, idempotency))) => {
                ready.push(Ready { stored, actor, outbox, idempotency, reply: queued.reply });
            }
            Ok(Err(e)) => {
                let _ = queued.reply.send(Err(e));
            }
            Err(_) => {
                let _ = queued.reply.send(Err(Error::Internal("building an order's rows panicked".into())));
            }
        }
    }
    if ready.is_empty() {
        return;
    }
    match insert(&mut conn, &ready).await {
        Ok(()) => ready.into_iter().for_each(answer),
        // Rolled back: each order again, on its own.
        Err(Failure::Refused(e)) if ready.len() > 1 => {
            drop(conn);
            tracing::warn!(orders = ready.len(), error = %e, "a batch of orders was refused; writing them one by one");
            let mut ready = ready.into_iter();
            while let Some(one) = ready.next() {
                let mut conn = match writers.get().await {
                    Ok(conn) => conn,
                    // No connection for this one: none for the rest either.
                    Err(e) => {
                        return fail_all(std::iter::once(one).chain(ready).map(|r| r.reply), &e);
                    }
                };
                match insert(&mut conn, std::slice::from_ref(&one)).await {
                    Ok(()) => answer(one),
                    Err(Failure::Refused(e)) => {
                        let _ = one.reply.send(Err(e));
                    }
                    // Whether it committed is unknown, and so is the server's state.
                    Err(Failure::Lost(e)) => {
                        return fail_all(std::iter::once(one).chain(ready).map(|r| r.reply), &e);
                    }
                }
            }
        }
        Err(failure) => fail_all(ready.into_iter().map(|r| r.reply), &failure.into_error()),
    }
}

fn unanswered() -> Error {
    tracing::warn!(limit = ?STATEMENT_LIMIT, "a batch of orders went unanswered; its connection is closed");
    Error::Unavailable("database".into())
}

fn answer(ready: Ready) {
    let _ = ready.reply.send(Ok(ready.stored));
}

/// Fails every order in a batch with `error` (or, where it cannot be repeated, its text).
fn fail_all(replies: impl Iterator<Item = oneshot::Sender<Result<Order>>>, error: &Error) {
    for reply in replies {
        let copy = match error {
            Error::Unavailable(what) => Error::Unavailable(what.clone()),
            Error::Internal(what) => Error::Internal(what.clone()),
            other => Error::Internal(other.to_string()),
        };
        let _ = reply.send(Err(copy));
    }
}

type Prepared = (Order, String, OutboxRows, Option<(String, &'static str, String, String)>);

fn prepare(write: NewOrderWrite, id: OrderId) -> Result<Prepared> {
    let NewOrderWrite { user_id, actor, order, at, notify, idempotency } = write;
    let stored = order.placed(id, user_id, at);
    let outbox = OutboxRows::new(notify(&stored))?;
    let idempotency = match idempotency {
        Some(slot) => Some((slot.key.scope, slot.key.operation, slot.key.key, response_json(&stored)?)),
        None => None,
    };
    Ok((stored, actor.to_string(), outbox, idempotency))
}

/// How a batch's statement failed.
enum Failure {
    /// The server answered with an error: the statement was rolled back.
    Refused(Error),
    /// No answer (the connection was lost): whether it committed is unknown.
    Lost(Error),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Refused(e) | Failure::Lost(e) => e,
        }
    }
}

/// Writes `orders` (with their items), audit events, outbox rows and idempotent responses in
/// one statement (the server runs a statement all or nothing, checking the events' references
/// to the orders when it ends).
async fn insert(conn: &mut Lent, orders: &[Ready]) -> std::result::Result<(), Failure> {
    let mut o = Columns::default();
    for r in orders {
        let order = &r.stored;
        o.ids.push(order.id.get());
        o.user_ids.push(order.user_id.get());
        o.currencies.push(order.total.currency().code());
        o.totals.push(order.total.minor());
        o.ats.push(order.created_at);
        o.actors.push(&r.actor);
        // The order's items are elements `first..=last` (1-based) of the batch's item arrays.
        o.item_firsts.push(i32::try_from(o.item_names.len() + 1).unwrap_or(i32::MAX));
        o.item_lasts.push(i32::try_from(o.item_names.len() + order.items.len()).unwrap_or(i32::MAX));
        for item in &order.items {
            o.item_names.push(&item.name);
            o.item_quantities.push(item.quantity);
            o.item_prices.push(item.price.minor());
        }
        let rows = &r.outbox;
        o.outbox_kinds.extend_from_slice(&rows.kinds);
        o.outbox_keys.extend(rows.dedupe_keys.iter().map(String::as_str));
        o.outbox_channels.extend(rows.channels.iter().map(String::as_str));
        o.outbox_recipients.extend(rows.recipients.iter().map(Option::as_deref));
        o.outbox_payloads.extend(rows.payloads.iter().map(String::as_str));
        o.outbox_orders.extend_from_slice(&rows.order_ids);
        o.outbox_ats.extend(std::iter::repeat_n(order.created_at, rows.kinds.len()));
        // A key taken over from a request presumed dead can come twice: the first keeps it, as
        // the first commit would.
        if let Some((scope, operation, key, response)) = &r.idempotency
            && !(0..o.keys.len())
                .any(|k| o.keys[k] == key && o.key_scopes[k] == scope && o.key_operations[k] == *operation)
        {
            o.key_scopes.push(scope);
            o.key_operations.push(operation);
            o.keys.push(key);
            o.key_responses.push(response);
        }
    }
    let written = sqlx::query(
        "WITH o AS (INSERT INTO orders (id, user_id, status, currency, total_minor, created_at, updated_at, \
                 item_names, item_quantities, item_prices) \
             OVERRIDING SYSTEM VALUE \
             SELECT id, user_id, $23, currency, total, at, at, \
                 ($8::text[])[first:last], ($9::bigint[])[first:last], ($10::bigint[])[first:last] \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::timestamptz[], \
                 $6::integer[], $7::integer[]) AS t (id, user_id, currency, total, at, first, last)), \
         e AS (INSERT INTO order_events (order_id, from_status, to_status, actor, reason, at) \
             SELECT id, NULL, $23, actor, 'order placed', at \
             FROM UNNEST($1::bigint[], $11::text[], $5::timestamptz[]) AS t (id, actor, at)), \
         x AS (INSERT INTO outbox (kind, dedupe_key, channel, recipient, payload, status, attempts, \
                 next_attempt_at, created_at, updated_at, order_id) \
             SELECT kind, dedupe_key, channel, recipient, payload, 'pending', 0, at, at, at, order_id \
             FROM UNNEST($12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::bigint[], \
                 $18::timestamptz[]) AS t (kind, dedupe_key, channel, recipient, payload, order_id, at) \
             ON CONFLICT (dedupe_key, channel) DO NOTHING) \
         UPDATE idempotency_keys k SET response = r.response, locked_at = NULL \
         FROM UNNEST($19::text[], $20::text[], $21::text[], $22::text[]) AS r (scope, operation, key, response) \
         WHERE k.scope = r.scope AND k.operation = r.operation AND k.key = r.key AND k.response IS NULL",
    )
    .bind(&o.ids)
    .bind(&o.user_ids)
    .bind(&o.currencies)
    .bind(&o.totals)
    .bind(&o.ats)
    .bind(&o.item_firsts)
    .bind(&o.item_lasts)
    .bind(&o.item_names)
    .bind(&o.item_quantities)
    .bind(&o.item_prices)
    .bind(&o.actors)
    .bind(&o.outbox_kinds)
    .bind(&o.outbox_keys)
    .bind(&o.outbox_channels)
    .bind(&o.outbox_recipients)
    .bind(&o.outbox_payloads)
    .bind(&o.outbox_orders)
    .bind(&o.outbox_ats)
    .bind(&o.key_scopes)
    .bind(&o.key_operations)
    .bind(&o.keys)
    .bind(&o.key_responses)
    .bind(OrderStatus::Created.as_str())
    .execute(&mut **conn);
    let Ok(written) = tokio::time::timeout(STATEMENT_LIMIT, written).await else {
        return Err(Failure::Lost(unanswered()));
    };
    // An error the server answered with, other than the connection's end (`08…`, `57P…`).
    let refused = matches!(&written, Err(sqlx::Error::Database(db))
        if !db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")));
    match conn.finish(written) {
        Ok(_) => Ok(()),
        Err(e) if refused => Err(Failure::Refused(e)),
        Err(e) => Err(Failure::Lost(e)),
    }
}

/// The batch's arrays, one per column.
#[derive(Default)]
struct Columns<'a> {
    ids: Vec<i64>,
    user_ids: Vec<i64>,
    currencies: Vec<&'a str>,
    totals: Vec<i64>,
    ats: Vec<DateTime<Utc>>,
    actors: Vec<&'a str>,
    item_firsts: Vec<i32>,
    item_lasts: Vec<i32>,
    item_names: Vec<&'a str>,
    item_quantities: Vec<i64>,
    item_prices: Vec<i64>,
    outbox_kinds: Vec<&'static str>,
    outbox_keys: Vec<&'a str>,
    outbox_channels: Vec<&'a str>,
    outbox_recipients: Vec<Option<&'a str>>,
    outbox_payloads: Vec<&'a str>,
    outbox_orders: Vec<i64>,
    outbox_ats: Vec<DateTime<Utc>>,
    key_scopes: Vec<&'a str>,
    key_operations: Vec<&'a str>,
    keys: Vec<&'a str>,
    key_responses: Vec<&'a str>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Arc;

    use chrono::Utc;

    use super::*;
    use crate::storage::conformance::{new_order, no_notify, notify, user};
    use crate::storage::postgres::PostgresStorage;
    use crate::storage::postgres::testing::{TestDatabase, admin_url};
    use crate::storage::{DynStorage, IdempotencyBegin, IdempotencyKey};

    async fn open() -> Option<(TestDatabase, PostgresStorage)> {
        let Some(admin) = admin_url() else {
            eprintln!("SOM_TEST_POSTGRES_URL is not set: skipping");
            return None;
        };
        let db = TestDatabase::create(&admin).await.expect("SOM_TEST_POSTGRES_URL is set but unreachable");
        let storage = PostgresStorage::open(db.url(), 4).await.unwrap();
        Some((db, storage))
    }

    /// Orders placed at the same time share statements and commits, and each keeps its own
    /// id, items, audit event, notification and idempotent response.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orders_placed_together_share_commits_and_keep_their_own_rows() {
        let Some((_db, storage)) = open().await else { return };
        let pool = storage.pool.clone();
        let s: DynStorage = Arc::new(storage);
        let ann = user(&s, "ann").await;
        let now = crate::storage::postgres::truncate(Utc::now());
        let placed = 200;
        let key = |n: i64| IdempotencyKey {
            scope: format!("user:{}", ann.id),
            operation: "create_order",
            key: format!("k{n}"),
        };
        let later = now + chrono::Duration::hours(1);
        for n in 0..placed {
            assert_eq!(s.begin_idempotency(&key(n), "h", now, later, now).await.unwrap(), IdempotencyBegin::Started);
        }
        // All at once, each different: its quantity, its time.
        let mut tasks = Vec::new();
        for n in 0..placed {
            let (s, ann, key) = (Arc::clone(&s), ann.clone(), key(n));
            tasks.push(tokio::spawn(async move {
                let items = new_order(&[("Widget", n + 1, "1.25"), ("Gadget", 1, "10.00")]);
                let at = now + chrono::Duration::microseconds(n);
                let slot = Some(IdempotencySlot { key });
                let order = s.insert_order(ann.id, Actor::User(ann.id), items, at, notify(&["log"], &ann), slot).await;
                (n, order.unwrap())
            }));
        }
        let mut ids = std::collections::BTreeSet::new();
        for task in tasks {
            let (n, order) = task.await.unwrap();
            assert!(ids.insert(order.id), "order ids are unique");
            assert_eq!(order.items[0].quantity, n + 1);
            assert_eq!(order.created_at, now + chrono::Duration::microseconds(n));
            assert_eq!(s.order_by_id(order.id).await.unwrap().as_ref(), Some(&order), "order {n} reads back as placed");
            let IdempotencyBegin::Replay(json) = s.begin_idempotency(&key(n), "h", now, later, now).await.unwrap()
            else {
                panic!("order {n}'s response is kept with its key")
            };
            assert_eq!(serde_json::from_str::<Order>(&json).unwrap(), order);
        }
        let count = |sql: &'static str| {
            let pool = pool.clone();
            async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
        };
        assert_eq!(count("SELECT count(*) FROM order_items").await, 2 * placed);
        // Each order's event and notification are its own: its time, its id and amount.
        let placed_events: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM order_events e JOIN orders o ON o.id = e.order_id \
               WHERE e.to_status = $1 AND e.at = o.created_at AND e.actor = 'user:' || o.user_id",
        )
        .bind(OrderStatus::Created.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(placed_events, placed);
        assert_eq!(
            count(
                "SELECT count(*) FROM outbox x JOIN orders o ON o.id = x.order_id \
                   WHERE (x.payload::jsonb ->> 'order_id')::bigint = o.id \
                   AND x.payload::jsonb ->> 'amount' = (o.total_minor::numeric / 100)::numeric(20, 2)::text \
                   AND x.created_at = o.created_at"
            )
            .await,
            placed
        );
        assert_eq!(count("SELECT count(*) FROM outbox").await, placed);
        // Rows written by one statement share its transaction id.
        let commits = count("SELECT count(DISTINCT xmin::text) FROM orders").await;
        assert!(commits < placed / 2, "{placed} orders placed at once took {commits} commits");
    }

    /// Writes `writes` as one batch on the writers' thread, as the writer does; their answers.
    async fn write_as_one_batch(
        storage: &PostgresStorage,
        writes: Vec<NewOrderWrite>,
    ) -> Vec<oneshot::Receiver<Result<Order>>> {
        let sequence: Oid =
            sqlx::query_scalar("SELECT 'orders_id_seq'::regclass::oid").fetch_one(&storage.pool).await.unwrap();
        let (mut batch, mut answers) = (Vec::new(), Vec::new());
        for write in writes {
            let (reply, answer) = oneshot::channel();
            batch.push(Queued { write, reply });
            answers.push(answer);
        }
        let writers = Arc::clone(&storage.writers);
        storage.writers.spawn(async move { write_batch(&writers, sequence, batch).await });
        answers
    }

    fn order_for(user_id: UserId, idempotency: Option<IdempotencySlot>) -> NewOrderWrite {
        NewOrderWrite {
            user_id,
            actor: Actor::User(user_id),
            order: new_order(&[("Widget", 1, "2.00")]),
            // As `insert_order` stores it: to the microsecond.
            at: crate::storage::postgres::truncate(Utc::now()),
            notify: no_notify(),
            idempotency,
        }
    }

    /// When PostgreSQL refuses a batch, its orders are written one by one: the order at fault
    /// fails alone and the others are written.
    #[tokio::test]
    async fn an_order_the_database_refuses_fails_alone() {
        let Some((_db, storage)) = open().await else { return };
        let s: DynStorage = Arc::new(storage.clone());
        let ann = user(&s, "ann").await;
        let nobody = UserId::new(ann.id.get() + 1000);
        let writes = [ann.id, nobody, ann.id].into_iter().map(|u| order_for(u, None)).collect();
        let mut results = Vec::new();
        for answer in write_as_one_batch(&storage, writes).await {
            results.push(answer.await.unwrap());
        }
        assert!(results[1].is_err(), "an order for a user who does not exist is refused");
        for placed in [&results[0], &results[2]] {
            let order = placed.as_ref().expect("the other orders in the batch are written");
            assert_eq!(s.order_by_id(order.id).await.unwrap().as_ref(), Some(order));
        }
        let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&storage.pool).await.unwrap();
        assert_eq!(orders, 2);
    }

    /// A batch whose connection ends before it is answered may or may not have committed: its
    /// orders fail as unavailable and are not written again (which could write them twice).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_whose_connection_ends_fails_as_unavailable_and_is_not_written_again() {
        use sqlx::Connection as _;

        let Some((db, storage)) = open().await else { return };
        let s: DynStorage = Arc::new(storage.clone());
        let ann = user(&s, "ann").await;
        let now = Utc::now();
        let key = IdempotencyKey { scope: format!("user:{}", ann.id), operation: "create_order", key: "k".into() };
        s.begin_idempotency(&key, "h", now, now + chrono::Duration::hours(1), now).await.unwrap();
        // Another session holds the key's row: the batch's statement waits for it.
        let mut holder = sqlx::PgConnection::connect(db.url()).await.unwrap();
        sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
        sqlx::query("SELECT 1 FROM idempotency_keys FOR UPDATE").execute(&mut holder).await.unwrap();
        let writes = vec![order_for(ann.id, None), order_for(ann.id, Some(IdempotencySlot { key }))];
        let answers = write_as_one_batch(&storage, writes).await;
        let waiting =
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
        let mut probe = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let pid = loop {
            if let Some(pid) = sqlx::query_scalar::<_, i32>(waiting).fetch_optional(&mut probe).await.unwrap() {
                break pid;
            }
            assert!(tokio::time::Instant::now() < deadline, "no write waited for the lock within 20 s");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut probe).await.unwrap();
        for answer in answers {
            let result = answer.await.unwrap();
            assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
        }
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
        let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&mut probe).await.unwrap();
        assert_eq!(orders, 0, "the orders of a batch whose outcome was unknown are not written again");
        // The writer carries on, on another connection.
        let placed = write_as_one_batch(&storage, vec![order_for(ann.id, None)]).await;
        for answer in placed {
            answer.await.unwrap().expect("the next order is written");
        }
    }
}
