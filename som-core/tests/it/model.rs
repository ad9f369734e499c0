//! Model-based property test: random sequences of operations — register, create (with and
//! without idempotency keys), initiate with a random mock outcome, confirm, cancel, concurrent
//! duplicates, idempotent replays, reads by strangers — run against a real OrderSystem on a
//! SQLite file, and checked after every step against a small in-memory model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use som_core::domain::{Caller, ItemInput, Order, OrderId, OrderInput, OrderStatus, PaymentId, PaymentStatus};
use som_core::notify::RecordingNotifier;
use som_core::payment::MockProvider;
use som_core::{Config, Error, OrderSystem, Registration};

const METHODS: [&str; 4] = ["mock_success", "mock_decline", "mock_insufficient_funds", "mock_transient_error"];

#[derive(Debug, Clone)]
enum Op {
    Register,
    Create { user: usize, lines: Vec<(i64, i64)>, key: Option<u8> },
    Initiate { order: usize, method: usize, dup: bool },
    Confirm { payment: usize, dup: bool },
    Cancel { order: usize },
    Stranger { user: usize, order: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Register),
        4 => (0..4usize, prop::collection::vec((1i64..5, 1i64..100_000), 1..4), prop::option::of(0u8..3))
            .prop_map(|(user, lines, key)| Op::Create { user, lines, key }),
        4 => (0..8usize, 0..4usize, any::<bool>()).prop_map(|(order, method, dup)| Op::Initiate { order, method, dup }),
        4 => (0..8usize, any::<bool>()).prop_map(|(payment, dup)| Op::Confirm { payment, dup }),
        2 => (0..8usize).prop_map(|order| Op::Cancel { order }),
        1 => (0..4usize, 0..8usize).prop_map(|(user, order)| Op::Stranger { user, order }),
    ]
}

#[derive(Debug, Clone)]
struct MPayment {
    id: PaymentId,
    method: usize,
    status: PaymentStatus,
    transient_left: u32,
}

#[derive(Debug, Clone)]
struct MOrder {
    id: OrderId,
    owner: usize,
    total: i64,
    status: OrderStatus,
    payments: Vec<MPayment>,
    created: Order,
}

#[derive(Default)]
struct Model {
    users: Vec<Caller>,
    orders: Vec<MOrder>,
    keys: HashMap<(usize, u8), (OrderInput, usize)>,
    events: HashMap<&'static str, usize>,
}

impl Model {
    fn payment(&mut self, idx: usize) -> Option<(usize, usize)> {
        let all: Vec<(usize, usize)> =
            self.orders.iter().enumerate().flat_map(|(o, m)| (0..m.payments.len()).map(move |p| (o, p))).collect();
        if all.is_empty() { None } else { Some(all[idx % all.len()]) }
    }
}

fn input(lines: &[(i64, i64)]) -> OrderInput {
    OrderInput {
        items: lines
            .iter()
            .enumerate()
            .map(|(i, (q, p))| ItemInput {
                name: format!("item {i}"),
                quantity: *q,
                price: format!("{}.{:02}", p / 100, p % 100),
            })
            .collect(),
        currency: None,
    }
}

async fn register(som: &OrderSystem, n: usize) -> Caller {
    let u = som
        .register(Registration {
            username: format!("user{n}"),
            email: Some(format!("user{n}@example.com")),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap();
    Caller::User { id: u.id, is_staff: false }
}

/// Applies one confirmation outcome to the model; returns the expected result class.
fn expect_confirm(m: &mut Model, o: usize, p: usize) -> Result<PaymentStatus, &'static str> {
    let pay = m.orders[o].payments[p].clone();
    match pay.status {
        PaymentStatus::Success => Ok(PaymentStatus::Success),
        PaymentStatus::Pending => match METHODS[pay.method] {
            "mock_success" => Ok(succeed(m, o, p)),
            "mock_transient_error" if pay.transient_left > 0 => {
                m.orders[o].payments[p].transient_left -= 1;
                Err("unavailable")
            }
            "mock_transient_error" => Ok(succeed(m, o, p)),
            _ => {
                m.orders[o].payments[p].status = PaymentStatus::Failed;
                *m.events.entry("payment_failed").or_default() += 1;
                Err("declined")
            }
        },
        _ => Err("conflict"),
    }
}

fn succeed(m: &mut Model, o: usize, p: usize) -> PaymentStatus {
    m.orders[o].payments[p].status = PaymentStatus::Success;
    m.orders[o].status = OrderStatus::Paid;
    *m.events.entry("payment_succeeded").or_default() += 1;
    PaymentStatus::Success
}

fn class(r: &Result<som_core::domain::Payment, Error>) -> Result<PaymentStatus, &'static str> {
    match r {
        Ok(p) => Ok(p.status),
        Err(Error::Unavailable(_)) => Err("unavailable"),
        Err(Error::PaymentDeclined(_)) => Err("declined"),
        Err(Error::Conflict(_)) => Err("conflict"),
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

async fn step(som: &OrderSystem, m: &mut Model, op: Op) {
    match op {
        Op::Register => {
            if m.users.len() < 4 {
                let n = m.users.len();
                m.users.push(register(som, n).await);
            }
        }
        Op::Create { user, lines, key } => {
            let owner = user % m.users.len();
            let caller = m.users[owner];
            let order_input = input(&lines);
            let key_name = key.map(|k| format!("key-{k}"));
            if let Some((previous_input, idx)) = key.and_then(|k| m.keys.get(&(owner, k)).cloned()) {
                let result =
                    som.create_order(caller, order_input.clone()).maybe_idempotency_key(key_name.as_deref()).await;
                if previous_input == order_input {
                    assert_eq!(result.unwrap(), m.orders[idx].created, "a replay returns the original response");
                } else {
                    assert!(matches!(result, Err(Error::IdempotencyMismatch)), "{result:?}");
                }
                return;
            }
            let order =
                som.create_order(caller, order_input.clone()).maybe_idempotency_key(key_name.as_deref()).await.unwrap();
            let total: i64 = lines.iter().map(|(q, p)| q * p).sum();
            assert_eq!(order.total.minor(), total, "the total is the exact sum");
            if let Some(k) = key {
                m.keys.insert((owner, k), (order_input, m.orders.len()));
            }
            *m.events.entry("order_created").or_default() += 1;
            m.orders.push(MOrder {
                id: order.id,
                owner,
                total,
                status: OrderStatus::Created,
                payments: vec![],
                created: order,
            });
        }
        Op::Initiate { order, method, dup } => {
            if m.orders.is_empty() {
                return;
            }
            let o = order % m.orders.len();
            let caller = m.users[m.orders[o].owner];
            let id = m.orders[o].id;
            let n = if dup { 4 } else { 1 };
            let mut tasks = Vec::new();
            for _ in 0..n {
                let som = som.clone();
                tasks.push(tokio::spawn(async move { som.initiate_payment(caller, id).method(METHODS[method]).await }));
            }
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await.unwrap());
            }
            let mo = &mut m.orders[o];
            if mo.status != OrderStatus::Created {
                assert!(results.iter().all(|r| matches!(r, Err(Error::Conflict(_)))), "{results:?}");
                return;
            }
            let live = mo.payments.iter().find(|p| p.status.is_live()).map(|p| p.id);
            let ids: Vec<PaymentId> = results.into_iter().map(|r| r.unwrap().id).collect();
            assert!(ids.iter().all(|i| *i == ids[0]), "duplicates get one payment");
            match live {
                Some(existing) => assert_eq!(ids[0], existing, "idempotent: the live payment"),
                None => {
                    mo.payments.push(MPayment { id: ids[0], method, status: PaymentStatus::Pending, transient_left: 1 })
                }
            }
        }
        Op::Confirm { payment, dup } => {
            let Some((o, p)) = m.payment(payment) else { return };
            let caller = m.users[m.orders[o].owner];
            let id = m.orders[o].payments[p].id;
            let n = if dup { 4 } else { 1 };
            let mut tasks = Vec::new();
            for _ in 0..n {
                let som = som.clone();
                tasks.push(tokio::spawn(async move { som.confirm_payment(caller, id).await }));
            }
            let mut got = Vec::new();
            for t in tasks {
                got.push(class(&t.await.unwrap()));
            }
            let mut expected = Vec::new();
            for _ in 0..n {
                let e = expect_confirm(m, o, p);
                // After a decline, later duplicates see a failed payment.
                expected.push(e);
            }
            got.sort_by_key(|r| format!("{r:?}"));
            expected.sort_by_key(|r| format!("{r:?}"));
            assert_eq!(got, expected, "confirm outcomes");
        }
        Op::Cancel { order } => {
            if m.orders.is_empty() {
                return;
            }
            let o = order % m.orders.len();
            let caller = m.users[m.orders[o].owner];
            let result = som.cancel_order(caller, m.orders[o].id).await;
            let mo = &mut m.orders[o];
            if mo.status == OrderStatus::Created {
                assert_eq!(result.unwrap().status, OrderStatus::Cancelled);
                mo.status = OrderStatus::Cancelled;
                for p in &mut mo.payments {
                    if p.status == PaymentStatus::Pending {
                        p.status = PaymentStatus::Cancelled;
                    }
                }
                *m.events.entry("order_cancelled").or_default() += 1;
            } else {
                assert!(matches!(result, Err(Error::Conflict(_))), "{result:?}");
            }
        }
        Op::Stranger { user, order } => {
            if m.orders.is_empty() {
                return;
            }
            let o = order % m.orders.len();
            let stranger = user % m.users.len();
            if stranger == m.orders[o].owner {
                return;
            }
            let caller = m.users[stranger];
            assert!(matches!(som.order(caller, m.orders[o].id).await, Err(Error::NotFound(_))));
            assert!(matches!(som.cancel_order(caller, m.orders[o].id).await, Err(Error::NotFound(_))));
            if let Some(p) = m.orders[o].payments.first() {
                assert!(matches!(som.payment(caller, p.id).await, Err(Error::NotFound(_))));
            }
        }
    }
}

async fn check(som: &OrderSystem, m: &Model) {
    for mo in &m.orders {
        let caller = m.users[mo.owner];
        let order = som.order(caller, mo.id).await.unwrap();
        assert_eq!((order.status, order.total.minor()), (mo.status, mo.total), "order {}", mo.id);
        let payments = som.order_payments(caller, mo.id).await.unwrap();
        let statuses: Vec<PaymentStatus> = payments.iter().map(|p| p.status).collect();
        let expected: Vec<PaymentStatus> = mo.payments.iter().map(|p| p.status).collect();
        assert_eq!(statuses, expected, "payments of order {}", mo.id);
        assert!(payments.iter().filter(|p| p.status.is_live()).count() <= 1, "at most one live payment");
        let successes: Vec<_> = payments.iter().filter(|p| p.status == PaymentStatus::Success).collect();
        assert_eq!(successes.len(), usize::from(order.status == OrderStatus::Paid), "PAID ⇔ one SUCCESS payment");
        assert!(successes.iter().all(|p| p.amount == order.total), "paid the exact total");
    }
    let rows = som.notifications(Caller::System, None, None, 1000).await.unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in &rows {
        *counts.entry(r.kind.as_str()).or_default() += 1;
    }
    for (kind, n) in &m.events {
        assert_eq!(counts.get(kind).copied().unwrap_or(0), *n, "{kind} notifications");
    }
    assert_eq!(rows.len(), m.events.values().sum::<usize>(), "no other notifications");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 64, .. ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_keep_every_invariant(ops in prop::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = Config { database_url: format!("sqlite://{}", dir.path().join("som.db").display()), ..Config::default() };
            let som = OrderSystem::builder()
                .config(config)
                .provider(Arc::new(MockProvider::new(1)))
                .notifier(Arc::new(RecordingNotifier::new("log")))
                .build()
                .await
                .unwrap();
            let mut model = Model::default();
            for n in 0..2 {
                model.users.push(register(&som, n).await);
            }
            for op in ops {
                step(&som, &mut model, op).await;
                check(&som, &model).await;
            }
        });
    }
}
