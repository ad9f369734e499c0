//! Backend-specific tests (the conformance suite covers the behaviour every backend shares).

use super::orders::list_orders_sql;
use super::*;
use crate::domain::PaymentStatus;

/// A database at schema 3 with a paid order keeps its rows, ids, references and
/// AUTOINCREMENT sequences through the refunds migration (which rebuilds two tables).
#[tokio::test]
async fn a_version_3_database_is_migrated_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("som.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            .unwrap();
        for (version, sql) in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version]).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO users (id, username, email, password_hash, created_at) VALUES (1, 'alice', 'a@example.com', 'x', 0);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO orders (id, user_id, status, currency, total_minor, created_at, updated_at)
                 VALUES (7, 1, ?1, 'USD', 1000, 0, 0)",
            [OrderStatus::Paid.as_str()],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO order_items VALUES (7, 1, 'Gadget', 2, 250);
             INSERT INTO order_items VALUES (7, 0, 'Widget', 1, 500);
             INSERT INTO outbox (kind, dedupe_key, channel, payload, status, next_attempt_at, created_at, updated_at)
                 VALUES ('order_created', 'order_created:order:7', 'log', '{\"order_id\": 7}', 'sent', 0, 0, 0);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO payments (id, order_id, user_id, provider, provider_payment_id, transaction_id, method,
                 attempt, amount_minor, currency, status, created_at, updated_at, transient_failures)
                 VALUES (3, 7, 1, 'mock', 'mock_pi_s_k', 'txn_1', 'mock_success', 1, 1000, 'USD', ?1, 0, 0, 2)",
            [PaymentStatus::Success.as_str()],
        )
        .unwrap();
    }
    let storage = SqliteStorage::open(&format!("sqlite://{}", path.display()), 1).await.unwrap();
    assert_eq!(storage.schema_version().await.unwrap(), MIGRATIONS.len() as i64);
    let order = storage.order_by_id(OrderId::new(7)).await.unwrap().unwrap();
    assert_eq!((order.status, order.items.len(), order.refunded.minor()), (OrderStatus::Paid, 2, 0));
    let items: Vec<_> = order.items.iter().map(|i| (i.name.as_str(), i.quantity, i.price.minor())).collect();
    assert_eq!(items, [("Widget", 1, 500), ("Gadget", 2, 250)], "the items keep their positions");
    let payment = storage.payment_by_id(PaymentId::new(3)).await.unwrap().unwrap();
    assert_eq!((payment.status, payment.refundable().minor()), (PaymentStatus::Success, 1000));
    assert_eq!(storage.transient_failures(PaymentId::new(3)).await.unwrap(), 2);
    let conn = Connection::open(&path).unwrap();
    let outbox_order: i64 = conn.query_row("SELECT order_id FROM outbox", [], |r| r.get(0)).unwrap();
    assert_eq!(outbox_order, 7, "existing notifications are found by their order");
    let viewed: Vec<(i64, i64, String, i64, i64)> = conn
        .prepare("SELECT order_id, position, name, quantity, unit_price_minor FROM order_items ORDER BY position")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        viewed,
        [(7, 0, "Widget".to_owned(), 1, 500), (7, 1, "Gadget".to_owned(), 2, 250)],
        "order_items reads as it did, from the orders"
    );
    let next_order: i64 =
        conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'orders'", [], |r| r.get(0)).unwrap();
    assert_eq!(next_order, 7, "the order ids continue where they were");
    let writer_fk: bool = lock(&storage.inner.writer).query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
    assert!(writer_fk, "foreign keys are on again after migrating");
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn database_and_backup_files_are_private_and_backups_never_follow_links() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("som.db");
    let storage = SqliteStorage::open(&format!("sqlite://{}", db.display()), 1).await.unwrap();
    storage.get_or_init_setting("probe", b"secret".to_vec()).await.unwrap();
    for file in ["som.db", "som.db-wal", "som.db-shm"] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }
    let backup = dir.path().join("backup.db");
    storage.backup(&backup).await.unwrap();
    assert_eq!(mode(&backup), 0o600);
    assert!(storage.backup(&backup).await.is_err(), "a backup overwrote an existing file");

    let elsewhere = dir.path().join("elsewhere.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    assert!(storage.backup(&link).await.is_err(), "a backup followed a symbolic link");
    assert!(!elsewhere.exists(), "a backup wrote through a symbolic link");
}

/// Writes queued together are committed together, and one that fails — an error it returns, a
/// constraint it breaks, a panic — is rolled back alone: its batch's other writes stand.
#[tokio::test]
async fn a_failing_write_in_a_batch_rolls_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(&format!("sqlite://{}", dir.path().join("som.db").display()), 1).await.unwrap();
    let before = storage.inner.queue.commits();
    let writes = (0..300).map(|i: i64| {
        let storage = storage.clone();
        async move {
            storage
                .write(move |tx| {
                    let insert =
                        "INSERT INTO inbound_events (provider, event_id, kind, received_at) VALUES ('t', ?1, 'k', 0)";
                    tx.execute(insert, [i.to_string()])?;
                    match i % 10 {
                        // Its own row is in, then it fails: the row must go.
                        3 => Err(Error::Conflict(format!("write {i} refuses"))),
                        // A constraint: the same primary key twice.
                        5 => {
                            tx.execute(insert, [i.to_string()])?;
                            Ok(i)
                        }
                        #[allow(clippy::panic)]
                        7 => panic!("write {i} panics"),
                        _ => Ok(i),
                    }
                })
                .await
        }
    });
    let results = futures_join_all(writes).await;
    for (i, result) in results.iter().enumerate() {
        let failing = matches!(i % 10, 3 | 5 | 7);
        assert_eq!(result.is_err(), failing, "write {i}: {result:?}");
    }
    let mut kept: Vec<i64> = storage
        .read(|c| {
            let mut stmt = c.prepare("SELECT event_id FROM inbound_events WHERE provider = 't'")?;
            let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(ids.map(|id| id.map(|s| s.parse::<i64>().unwrap_or(-1))).collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
        .unwrap();
    kept.sort_unstable();
    let expected: Vec<i64> = (0..300).filter(|i| !matches!(i % 10, 3 | 5 | 7)).collect();
    assert_eq!(kept, expected);
    let commits = storage.inner.queue.commits() - before;
    assert!(commits < 150, "300 concurrent writes took {commits} commits: they were not batched");
    // The writer is still there after a panic.
    assert_eq!(storage.write(|_| Ok(1)).await.unwrap(), 1);
}

/// Polls every future in one task, so that all of them are queued before any is answered.
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, f) in out.iter_mut().zip(set.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|v| v.unwrap()).collect()
}

/// One user's page of orders, whatever the other filters, walks an index on `user_id` instead
/// of every order in the table; no page sorts its joined rows.
#[tokio::test]
async fn a_users_page_of_orders_is_planned_through_the_user_index() {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(&format!("sqlite://{}", dir.path().join("som.db").display()), 1).await.unwrap();
    let conn = lock(&storage.inner.writer);
    let at = Some(Utc::now());
    for user in [None, Some(UserId::new(1))] {
        for status in [None, Some(OrderStatus::Paid)] {
            for (after, before) in [(None, None), (at, None), (None, at), (at, at)] {
                let q = OrderQuery {
                    user_id: user,
                    status,
                    before: None,
                    created_after: after,
                    created_before: before,
                    search: None,
                    limit: 50,
                };
                let sql = list_orders_sql(&q);
                let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                let mut rows = explain.raw_query();
                let mut plan = String::new();
                while let Some(row) = rows.next().unwrap() {
                    plan.push_str(&row.get::<_, String>(3).unwrap());
                    plan.push_str("; ");
                }
                // Every statement must prepare; only one user's page has an index to promise.
                if user.is_some() {
                    assert!(plan.contains("INDEX orders_user"), "{sql}: {plan}");
                }
                // Rows come out in the order the indexes are walked: never sorted afterwards.
                assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
            }
        }
    }
}
