//! Loads many orders into a SQLite database quickly (large transactions of plain inserts), for
//! the scale benchmarks: `cargo run --release --example seed -- sqlite:///tmp/big.db 1000000`.
//! The orders belong to 1,000 seeded users and to `scale` (password `correct horse battery`),
//! who owns 1,000 of them spread evenly through the table, for the load generator to read as
//! (`loadgen --user scale --orders 0`). SOM's schema is created first by opening it.

use anyhow::Context;
use som_core::{Config, OrderSystem, Registration};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().context("usage: seed <sqlite:///path.db> <orders>")?;
    let count: i64 = args.next().context("usage: seed <sqlite:///path.db> <orders>")?.parse()?;
    let path = url.strip_prefix("sqlite://").context("a sqlite:// URL")?.to_owned();
    // Opening the system creates (or upgrades) the schema.
    let som = OrderSystem::builder().config(Config { database_url: url.clone(), ..Config::default() }).build().await?;
    let reader = som
        .register(Registration {
            username: "scale".into(),
            email: Some("scale@example.com".into()),
            password: "correct horse battery".into(),
        })
        .await?
        .id
        .get();
    // Every `spread`-th order is the reader's.
    let spread = (count / 1000).max(1);
    let started = std::time::Instant::now();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let tx = conn.transaction()?;
        let now = chrono::Utc::now().timestamp_micros();
        for u in 0..1000 {
            tx.execute(
                "INSERT OR IGNORE INTO users (username, email, password_hash, is_staff, created_at) VALUES (?1, NULL, 'x', 0, ?2)",
                rusqlite::params![format!("seed{u}"), now],
            )?;
        }
        let first_user: i64 = tx.query_row("SELECT MIN(id) FROM users WHERE username LIKE 'seed%'", [], |r| r.get(0))?;
        tx.commit()?;
        let mut done = 0;
        while done < count {
            let tx = conn.transaction()?;
            {
                // Two items each, kept in the order's row as SOM writes them.
                let mut order = tx.prepare_cached(
                    "INSERT INTO orders (user_id, status, currency, total_minor, created_at, updated_at, items) \
                     VALUES (?1, 'CREATED', 'USD', 25000, ?2, ?2, '[[\"Widget\",2,10000],[\"Gadget\",1,5000]]')",
                )?;
                for i in done..(done + 50_000).min(count) {
                    let owner = if i % spread == 0 && i / spread < 1000 { reader } else { first_user + i % 1000 };
                    order.execute(rusqlite::params![owner, now])?;
                }
            }
            tx.commit()?;
            done = (done + 50_000).min(count);
        }
        Ok(())
    })
    .await??;
    println!("seeded {count} orders in {:.1?}", started.elapsed());
    Ok(())
}
