//! Embedding SOM in an application: open an OrderSystem on a temporary SQLite file, register a
//! user, log in, place an order with two items, pay it, deliver the notifications, and print.
//!
//! Run with `cargo run --example embed`.

use anyhow::Context;
use som_core::domain::{ItemInput, OrderInput};
use som_core::{Config, OrderSystem, Registration};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("som-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating a temporary directory")?;
    let config = Config { database_url: format!("sqlite://{}", dir.join("som.db").display()), ..Config::default() };
    let som = OrderSystem::builder().config(config).build().await.context("opening SOM")?;

    som.register(Registration {
        username: "alice".into(),
        email: Some("alice@example.com".into()),
        password: "correct horse battery".into(),
    })
    .await
    .context("registering alice")?;
    let tokens = som.login("alice", "correct horse battery").await.context("logging in")?;
    let alice = som.authenticate(&tokens.access).await.context("authenticating")?;

    let order = som
        .create_order(
            alice,
            OrderInput {
                items: vec![
                    ItemInput { name: "Widget".into(), quantity: 2, price: "100.00".into() },
                    ItemInput { name: "Gadget".into(), quantity: 1, price: "50.00".into() },
                ],
                currency: None,
            },
        )
        .await
        .context("creating the order")?;
    println!("order #{} placed: {} ({})", order.id, order.total, order.status);
    for item in &order.items {
        println!("  {} x {} @ {}", item.quantity, item.name, item.price);
    }

    let payment = som.initiate_payment(alice, order.id).method("mock_success").await.context("initiating")?;
    let payment = som.confirm_payment(alice, payment.id).await.context("confirming")?;
    let order = som.order(alice, order.id).await.context("reloading the order")?;
    println!("payment #{} {}: order #{} is now {}", payment.id, payment.status, order.id, order.status);

    let delivered = som.dispatch_once().await.context("delivering notifications")?;
    println!("{delivered} notifications delivered");
    println!("{}", serde_json::to_string_pretty(&order).context("rendering JSON")?);

    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
