//! Server time of the staff console's order list (50 of 200 orders, two items each) and of an
//! order page: the whole request through the router — session check, storage read (SQLite in
//! memory), rendering — without a network in between; beside the API's JSON page of the same
//! 50 orders.
//!
//!     cargo bench -p som-server --bench console
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use criterion::{Criterion, criterion_group, criterion_main};
use som_core::domain::{Caller, ItemInput, OrderInput};
use som_core::{Config, OrderSystem, Registration};
use tower::ServiceExt;

struct Console {
    app: axum::Router,
    cookie: String,
    bearer: String,
    order: i64,
}

async fn console() -> Console {
    let config = Config { database_url: "sqlite::memory:".into(), auth_rate_limit: 0, ..Config::default() };
    let som = OrderSystem::builder().config(config.clone()).build().await.unwrap();
    let password = "correct horse battery";
    let register = |name: &str| Registration {
        username: name.into(),
        email: Some(format!("{name}@example.com")),
        password: password.into(),
    };
    let boss = som.register(register("boss")).await.unwrap();
    som.set_staff(Caller::System, boss.id, true).await.unwrap();
    let carol = som.register(register("carol")).await.unwrap();
    let mut last = 0;
    for n in 0..200 {
        let items = vec![
            ItemInput { name: format!("Widget {n}"), quantity: 2, price: "100.00".into() },
            ItemInput { name: "Gadget".into(), quantity: 1, price: "50.00".into() },
        ];
        let order = som.create_order(Caller::System, OrderInput { items, currency: None }).on_behalf_of(carol.id).await;
        last = order.unwrap().id.get();
    }
    let payment = som.initiate_payment(Caller::System, som_core::domain::OrderId::new(last)).await.unwrap();
    som.confirm_payment(Caller::System, payment.id).await.unwrap();
    let refresh = som.login("boss", password).await.unwrap().refresh;
    let access = som.login("boss", password).await.unwrap().access;
    let app = som_server::app(som, som_server::Settings::from_config(&config));
    Console {
        app,
        cookie: format!("{}={refresh}", som_server::console::SESSION_COOKIE),
        bearer: format!("Bearer {access}"),
        order: last,
    }
}

async fn get(c: &Console, path: &str) -> usize {
    let req = Request::get(path)
        .header(header::COOKIE, &c.cookie)
        .header(header::AUTHORIZATION, &c.bearer)
        .body(Body::empty())
        .unwrap();
    let resp = c.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().len()
}

fn pages(crit: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let c = rt.block_on(console());
    let order = format!("/console/orders/{}", c.order);
    let mut g = crit.benchmark_group("console");
    g.bench_function("order list (50 of 200)", |b| b.to_async(&rt).iter(|| get(&c, "/console/orders")));
    g.bench_function("order page", |b| b.to_async(&rt).iter(|| get(&c, &order)));
    // The same 50 orders as the API's JSON, for comparison.
    g.bench_function("API page of 50 (JSON)", |b| {
        b.to_async(&rt).iter(|| get(&c, "/api/v1/orders/?all=true&limit=50"))
    });
    g.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
