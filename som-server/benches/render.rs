//! Rendering a page of 50 orders (2 items each) as the JSON body of `GET /api/v1/orders/`:
//! through the documented response structs (a `String` per amount, code, status and price),
//! and written straight from the orders as the server does.
//!
//!     cargo bench -p som-server --bench render
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use som_core::domain::{Currency, Money, Order, OrderId, OrderItem, OrderStatus, UserId};
use som_server::order_json::{OrderListJson, OrderResponse};

fn page() -> Vec<Order> {
    let usd = Currency::parse("USD").unwrap();
    let at = chrono::DateTime::from_timestamp_micros(1_796_000_000_123_456).unwrap();
    (0..50)
        .map(|n| Order {
            id: OrderId::new(1000 - n),
            user_id: UserId::new(42),
            status: OrderStatus::Paid,
            items: vec![
                OrderItem { name: "Widget".into(), quantity: 2, price: Money::from_minor(10_000, usd) },
                OrderItem { name: "Gadget".into(), quantity: 1, price: Money::from_minor(5_000, usd) },
            ],
            total: Money::from_minor(25_000, usd),
            refunded: Money::zero(usd),
            fulfillment: som_core::domain::FulfillmentState::Unfulfilled,
            created_at: at,
            updated_at: at,
        })
        .collect()
}

fn render(c: &mut Criterion) {
    let mut g = c.benchmark_group("page of 50 orders");
    g.bench_function("through the response structs", |b| {
        b.iter_batched(
            page,
            |orders| {
                let body: Vec<OrderResponse> = orders.into_iter().map(Into::into).collect();
                serde_json::to_vec(&body).unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("written straight from the orders", |b| {
        b.iter_batched(page, |orders| OrderListJson(orders).to_vec(), criterion::BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
