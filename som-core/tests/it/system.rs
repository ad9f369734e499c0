//! OrderSystem behaviour end to end on a real SQLite file: accounts, orders, payments,
//! notifications, idempotency, concurrency.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use som_core::domain::NotificationStatus;
use som_core::domain::{Caller, OrderStatus, PaymentStatus};
use som_core::domain::{PaymentId, RefundInput, RefundStatus};
use som_core::notify::{Notification, Notifier, NotifyError, RecordingNotifier};
use som_core::payment::{
    Confirmation, MockProvider, PaymentProvider, PaymentRequest, ProviderError, ProviderPayment, ProviderRefund,
    RefundRequest,
};
use som_core::testing::{Backend, order_of as items, registration as reg, seed_order};
use som_core::{Config, Error, OrderListQuery, OrderSystem, Registration};

som_core::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    registration_reports_every_bad_field_and_duplicates,
    login_failures_look_the_same_and_tokens_work,
    refresh_rotates_and_reuse_revokes_the_session,
    the_signing_secret_is_generated_once_and_kept,
    orders_are_scoped_to_their_owner,
    invalid_orders_name_the_field,
    lists_page_by_cursor_newest_first,
    the_full_flow_pays_the_order_and_delivers_two_notifications,
    declines_fail_the_payment_and_allow_a_new_attempt,
    unknown_methods_are_rejected_by_field,
    transient_provider_failures_change_nothing_and_a_retry_succeeds,
    cancelling_voids_the_pending_payment_and_is_recorded,
    concurrent_initiates_make_one_payment_and_one_provider_call,
    concurrent_confirms_transition_once_and_notify_once,
    idempotency_keys_replay_reject_mismatches_and_are_per_caller,
    idempotency_keys_expire_and_pending_refunds_are_recovered_as_time_passes,
    a_key_in_use_by_a_running_request_is_reported_in_progress,
    provider_events_apply_once_and_record_refunds_made_at_the_provider,
    session_changes_apply_at_once_here_and_within_the_cache_ttl_elsewhere,
    transient_notifier_failures_retry_with_growing_delays,
    a_notification_that_always_fails_goes_dead_and_can_be_requeued,
    permanent_failures_dead_letter_at_once,
    a_dispatcher_killed_mid_batch_loses_nothing,
    a_graceful_shutdown_releases_unattempted_rows,
    operators_manage_users_and_issue_tokens,
    staff_refund_payments_in_part_and_in_full_once_each,
    declined_refunds_release_the_amount_and_transient_ones_are_finished_later,
    sixty_four_concurrent_partial_refunds_return_exactly_the_payment,
    a_refund_left_pending_by_a_crash_is_finished_once_after_restart,
    ended_payments_are_closed_at_the_provider_and_late_money_is_returned,
    a_refund_the_provider_is_still_returning_stays_pending_until_it_says_how_it_ended,
    logins_racing_a_password_change_keep_no_working_session
);

/// A fresh database of the test's backend, kept while the value lives.
pub(crate) struct Store {
    dir: tempfile::TempDir,
    #[cfg(feature = "postgres")]
    db: Option<som_core::testing::TestDatabase>,
}

impl Store {
    pub(crate) async fn new(backend: Backend) -> Store {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Store {
                dir,
                #[cfg(feature = "postgres")]
                db: None,
            },
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let admin = som_core::testing::admin_url().unwrap();
                let db = som_core::testing::TestDatabase::create(&admin).await.expect("PostgreSQL unreachable");
                Store { dir, db: Some(db) }
            }
            #[cfg(not(feature = "postgres"))]
            Backend::Postgres => unreachable!("the PostgreSQL variants do not run without the backend"),
        }
    }

    pub(crate) fn url(&self) -> String {
        #[cfg(feature = "postgres")]
        if let Some(db) = &self.db {
            return db.url().to_owned();
        }
        format!("sqlite://{}", self.dir.path().join("som.db").display())
    }
}

pub(crate) struct Env {
    pub(crate) som: OrderSystem,
    pub(crate) mock: Arc<MockProvider>,
    pub(crate) notes: Arc<RecordingNotifier>,
    pub(crate) _store: Store,
}

pub(crate) fn config(store: &Store) -> Config {
    let mut c = Config { database_url: store.url(), ..Config::default() };
    c.outbox.poll_interval = Duration::from_millis(20);
    c.outbox.backoff_base = Duration::from_millis(40);
    c.outbox.max_attempts = 4;
    c.outbox.lease = Duration::from_millis(300);
    c.password_hash_concurrency = 4;
    c
}

pub(crate) async fn env_with(
    backend: Backend,
    provider: Option<Arc<dyn PaymentProvider>>,
    tweak: impl FnOnce(&mut Config),
) -> Env {
    env_on(backend, provider, som_core::clock::SystemClock::shared(), tweak).await
}

/// [`env_with`] on `clock`.
pub(crate) async fn env_on(
    backend: Backend,
    provider: Option<Arc<dyn PaymentProvider>>,
    clock: som_core::clock::DynClock,
    tweak: impl FnOnce(&mut Config),
) -> Env {
    let store = Store::new(backend).await;
    let mut cfg = config(&store);
    tweak(&mut cfg);
    let mock = Arc::new(MockProvider::new(2));
    let notes = Arc::new(RecordingNotifier::new("log"));
    let provider = provider.unwrap_or_else(|| mock.clone());
    let som = OrderSystem::builder()
        .config(cfg)
        .provider(provider)
        .notifier(notes.clone())
        .clock(clock)
        .build()
        .await
        .unwrap();
    Env { som, mock, notes, _store: store }
}

pub(crate) async fn env(backend: Backend) -> Env {
    env_with(backend, None, |_| {}).await
}

pub(crate) async fn signed_up(som: &OrderSystem, username: &str) -> Caller {
    som.register(reg(username)).await.unwrap();
    let tokens = som.login(username, "correct horse battery").await.unwrap();
    som.authenticate(&tokens.access).await.unwrap()
}

fn fields(e: &Error) -> Vec<String> {
    e.validation_errors().map(|v| v.fields().keys().cloned().collect()).unwrap_or_default()
}

async fn registration_reports_every_bad_field_and_duplicates(backend: Backend) {
    let e = env(backend).await;
    let bad = Registration { username: "bad name".into(), email: Some("nope".into()), password: "12345678".into() };
    let err = e.som.register(bad).await.unwrap_err();
    assert_eq!(fields(&err), vec!["email", "password", "username"]);
    let short = Registration { password: "short".into(), ..reg("alice") };
    assert_eq!(fields(&e.som.register(short).await.unwrap_err()), vec!["password"]);
    let huge = Registration { password: "x".repeat(10_000), ..reg("alice") };
    assert_eq!(fields(&e.som.register(huge).await.unwrap_err()), vec!["password"]);
    let user = e.som.register(reg("alice")).await.unwrap();
    assert_eq!(user.email.as_ref().map(|m| m.as_str()), Some("alice@example.com"));
    assert!(!user.is_staff);
    assert_eq!(fields(&e.som.register(reg("alice")).await.unwrap_err()), vec!["email", "username"]);
    let same_name = Registration { email: Some("other@example.com".into()), ..reg("alice") };
    assert_eq!(fields(&e.som.register(same_name).await.unwrap_err()), vec!["username"]);
    let same_email = Registration { email: Some("ALICE@example.com".into()), ..reg("alice2") };
    assert_eq!(fields(&e.som.register(same_email).await.unwrap_err()), vec!["email"]);
    // Registration needs an email (the original service's rule); staff may create accounts
    // without one.
    let no_email = Registration { email: None, ..reg("bob") };
    assert_eq!(fields(&e.som.register(no_email.clone()).await.unwrap_err()), vec!["email"]);
    let blank_email = Registration { email: Some("  ".into()), ..reg("carol") };
    assert_eq!(fields(&e.som.register(blank_email).await.unwrap_err()), vec!["email"]);
    assert_eq!(e.som.create_user(Caller::System, no_email, false).await.unwrap().email, None);
}

async fn login_failures_look_the_same_and_tokens_work(backend: Backend) {
    let e = env(backend).await;
    e.som.register(reg("alice")).await.unwrap();
    let wrong = e.som.login("alice", "wrong password!").await.unwrap_err();
    let unknown = e.som.login("nobody", "correct horse battery").await.unwrap_err();
    assert_eq!(wrong.to_string(), unknown.to_string());
    assert!(matches!(wrong, Error::Unauthorized(_)));
    let tokens = e.som.login("alice", "correct horse battery").await.unwrap();
    let caller = e.som.authenticate(&tokens.access).await.unwrap();
    let me = e.som.profile(caller).await.unwrap();
    assert_eq!(me.username.as_str(), "alice");
    assert!(matches!(e.som.authenticate(&tokens.refresh).await, Err(Error::Unauthorized(_))));
    assert!(matches!(e.som.refresh(&tokens.access).await, Err(Error::Unauthorized(_))));
    assert!(matches!(e.som.authenticate("garbage").await, Err(Error::Unauthorized(_))));
}

async fn refresh_rotates_and_reuse_revokes_the_session(backend: Backend) {
    let e = env(backend).await;
    e.som.register(reg("alice")).await.unwrap();
    let first = e.som.login("alice", "correct horse battery").await.unwrap();
    let second = e.som.refresh(&first.refresh).await.unwrap();
    assert_ne!(second.refresh, first.refresh);
    e.som.authenticate(&second.access).await.unwrap();
    let reuse = e.som.refresh(&first.refresh).await.unwrap_err();
    assert!(matches!(reuse, Error::Unauthorized(ref m) if m.contains("already used")), "{reuse:?}");
    assert!(e.som.refresh(&second.refresh).await.is_err(), "the whole session is revoked");
    let other = e.som.login("alice", "correct horse battery").await.unwrap();
    assert!(e.som.refresh(&other.refresh).await.is_ok(), "other logins are unaffected");
}

async fn the_signing_secret_is_generated_once_and_kept(backend: Backend) {
    let dir = Store::new(backend).await;
    let a = OrderSystem::builder().config(config(&dir)).build().await.unwrap();
    a.register(reg("alice")).await.unwrap();
    let tokens = a.login("alice", "correct horse battery").await.unwrap();
    drop(a);
    let b = OrderSystem::builder().config(config(&dir)).build().await.unwrap();
    assert!(b.authenticate(&tokens.access).await.is_ok(), "tokens survive a restart");
}

async fn orders_are_scoped_to_their_owner(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let bob = signed_up(&e.som, "bob").await;
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    assert_eq!(order.total.amount_string(), "250.00");
    assert_eq!(order.status, OrderStatus::Created);
    assert_eq!(e.som.order(alice, order.id).await.unwrap(), order);
    assert!(matches!(e.som.order(bob, order.id).await, Err(Error::NotFound(_))));
    assert!(matches!(e.som.cancel_order(bob, order.id).await, Err(Error::NotFound(_))));
    assert!(matches!(e.som.initiate_payment(bob, order.id).await, Err(Error::NotFound(_))));
    assert!(e.som.list_orders(bob, OrderListQuery::default()).await.unwrap().items.is_empty());
    let sneaky = OrderListQuery { user: alice.user_id(), ..OrderListQuery::default() };
    assert!(e.som.list_orders(bob, sneaky).await.unwrap().items.is_empty(), "non-staff cannot list others");
    assert!(matches!(e.som.latest_order(bob, None).await, Err(Error::NotFound(_))));
    assert_eq!(e.som.latest_order(alice, None).await.unwrap().id, order.id);
    let staff = e.som.set_staff(Caller::System, bob.user_id().unwrap(), true).await.unwrap();
    let bob_staff = Caller::User { id: staff.id, is_staff: true };
    assert_eq!(e.som.order(bob_staff, order.id).await.unwrap().id, order.id);
    let theirs = OrderListQuery { user: alice.user_id(), ..OrderListQuery::default() };
    assert_eq!(e.som.list_orders(bob_staff, theirs).await.unwrap().items.len(), 1);
}

async fn invalid_orders_name_the_field(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let err = e.som.create_order(alice, items(&[])).await.unwrap_err();
    assert_eq!(fields(&err), vec!["items"]);
    let err = e.som.create_order(alice, items(&[("x", 1, "1.001")])).await.unwrap_err();
    assert_eq!(fields(&err), vec!["items[0].price"]);
    let huge = items(&[("x", 1_000_000, "92233720368547.75")]);
    assert_eq!(fields(&e.som.create_order(alice, huge).await.unwrap_err()), vec!["items[0].price"]);
    assert!(e.som.list_orders(alice, OrderListQuery::default()).await.unwrap().items.is_empty());
}

async fn lists_page_by_cursor_newest_first(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(e.som.create_order(alice, seed_order()).await.unwrap().id);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let q = OrderListQuery { cursor: cursor.clone(), limit: Some(2), ..OrderListQuery::default() };
        let page = e.som.list_orders(alice, q).await.unwrap();
        seen.extend(page.items.iter().map(|o| o.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let bad = OrderListQuery { limit: Some(201), ..OrderListQuery::default() };
    assert_eq!(fields(&e.som.list_orders(alice, bad).await.unwrap_err()), vec!["limit"]);
    let bad = OrderListQuery { cursor: Some("zz".into()), ..OrderListQuery::default() };
    assert_eq!(fields(&e.som.list_orders(alice, bad).await.unwrap_err()), vec!["cursor"]);
}

async fn the_full_flow_pays_the_order_and_delivers_two_notifications(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let p = e.som.initiate_payment(alice, order.id).await.unwrap();
    assert_eq!((p.status, p.amount, p.provider.as_str()), (PaymentStatus::Pending, order.total, "mock"));
    let again = e.som.initiate_payment(alice, order.id).await.unwrap();
    assert_eq!(again.id, p.id, "initiating twice returns the same payment");
    let paid = e.som.confirm_payment(alice, p.id).await.unwrap();
    assert_eq!(paid.status, PaymentStatus::Success);
    assert_eq!(e.som.order(alice, order.id).await.unwrap().status, OrderStatus::Paid);
    let twice = e.som.confirm_payment(alice, p.id).await.unwrap();
    assert_eq!(twice, paid, "confirming again changes nothing");
    let payments = e.som.order_payments(alice, order.id).await.unwrap();
    assert_eq!(payments.iter().filter(|p| p.status == PaymentStatus::Success).count(), 1);
    let history = e.som.order_history(alice, order.id).await.unwrap();
    assert_eq!(history.iter().map(|h| h.to).collect::<Vec<_>>(), vec![OrderStatus::Created, OrderStatus::Paid]);
    assert_eq!(e.som.dispatch_once().await.unwrap(), 2);
    let delivered = e.notes.delivered();
    let subjects: Vec<&str> = delivered.iter().map(|n| n.message.subject.as_str()).collect();
    assert_eq!(subjects, vec!["Order Created Successfully", "Payment Successful"]);
    assert!(delivered[0].message.text.contains(&format!("#{}", order.id)));
    assert!(delivered[1].message.text.contains("250.00 USD"));
    assert_eq!(e.som.dispatch_once().await.unwrap(), 0);
    let paid_again = e.som.initiate_payment(alice, order.id).await.unwrap_err();
    assert!(matches!(paid_again, Error::Conflict(ref m) if m.contains("already paid")), "{paid_again:?}");
    assert!(matches!(e.som.cancel_order(alice, order.id).await, Err(Error::Conflict(_))));
}

async fn declines_fail_the_payment_and_allow_a_new_attempt(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    for (method, reason) in [("mock_decline", "declined"), ("mock_insufficient_funds", "insufficient funds")] {
        let p = e.som.initiate_payment(alice, order.id).method(method).await.unwrap();
        let err = e.som.confirm_payment(alice, p.id).await.unwrap_err();
        assert!(matches!(err, Error::PaymentDeclined(ref m) if m.contains(reason)), "{err:?}");
        let failed = e.som.payment(alice, p.id).await.unwrap();
        assert_eq!(failed.status, PaymentStatus::Failed);
        assert_eq!(e.som.order(alice, order.id).await.unwrap().status, OrderStatus::Created);
        assert!(matches!(e.som.confirm_payment(alice, p.id).await, Err(Error::Conflict(_))));
    }
    let retry = e.som.initiate_payment(alice, order.id).method("mock_success").await.unwrap();
    assert_eq!(retry.attempt, 3);
    e.som.confirm_payment(alice, retry.id).await.unwrap();
    e.som.dispatch_once().await.unwrap();
    let kinds: Vec<String> = e.notes.delivered().iter().map(|n| n.kind.to_string()).collect();
    assert_eq!(kinds, vec!["order_created", "payment_failed", "payment_failed", "payment_succeeded"]);
    let unknown = e.som.initiate_payment(alice, order.id).method("bitcoin").await.unwrap_err();
    assert_eq!(fields(&unknown), vec!["method"], "an unusable method is refused first");
}

async fn unknown_methods_are_rejected_by_field(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let err = e.som.initiate_payment(alice, order.id).method("bitcoin").await.unwrap_err();
    assert_eq!(fields(&err), vec!["method"]);
}

async fn transient_provider_failures_change_nothing_and_a_retry_succeeds(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let p = e.som.initiate_payment(alice, order.id).method("mock_transient_error").await.unwrap();
    for _ in 0..2 {
        let err = e.som.confirm_payment(alice, p.id).await.unwrap_err();
        assert!(err.is_retryable() && matches!(err, Error::Unavailable(_)), "{err:?}");
        assert_eq!(e.som.payment(alice, p.id).await.unwrap().status, PaymentStatus::Pending);
        assert_eq!(e.som.order(alice, order.id).await.unwrap().status, OrderStatus::Created);
    }
    assert_eq!(e.som.confirm_payment(alice, p.id).await.unwrap().status, PaymentStatus::Success);
    e.mock.script_initiate([ProviderError::Transient("down".into())]);
    let other = e.som.create_order(alice, seed_order()).await.unwrap();
    assert!(matches!(e.som.initiate_payment(alice, other.id).await, Err(Error::Unavailable(_))));
    assert!(e.som.order_payments(alice, other.id).await.unwrap().is_empty());
    assert!(e.som.initiate_payment(alice, other.id).await.is_ok());
}

async fn cancelling_voids_the_pending_payment_and_is_recorded(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let p = e.som.initiate_payment(alice, order.id).await.unwrap();
    let cancelled = e.som.cancel_order(alice, order.id).await.unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(e.som.payment(alice, p.id).await.unwrap().status, PaymentStatus::Cancelled);
    assert!(matches!(e.som.confirm_payment(alice, p.id).await, Err(Error::Conflict(_))));
    assert!(matches!(e.som.initiate_payment(alice, order.id).await, Err(Error::Conflict(_))));
    assert!(matches!(e.som.cancel_order(alice, order.id).await, Err(Error::Conflict(_))));
    let history = e.som.order_history(alice, order.id).await.unwrap();
    assert_eq!(history.last().map(|h| (h.from, h.to)), Some((Some(OrderStatus::Created), OrderStatus::Cancelled)));
    assert_eq!(history.last().map(|h| h.actor.to_string()), alice.user_id().map(|id| format!("user:{id}")));
    e.som.dispatch_once().await.unwrap();
    assert!(e.notes.delivered().iter().any(|n| n.message.subject == "Order Cancelled"));
}

async fn concurrent_initiates_make_one_payment_and_one_provider_call(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let som = e.som.clone();
        tasks.push(tokio::spawn(async move { som.initiate_payment(alice, order.id).await.unwrap().id }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(e.som.order_payments(alice, order.id).await.unwrap().len(), 1);
    assert_eq!(e.mock.initiate_calls(), 1);
}

async fn concurrent_confirms_transition_once_and_notify_once(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let p = e.som.initiate_payment(alice, order.id).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let som = e.som.clone();
        tasks.push(tokio::spawn(async move { som.confirm_payment(alice, p.id).await.unwrap().status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), PaymentStatus::Success);
    }
    let history = e.som.order_history(alice, order.id).await.unwrap();
    assert_eq!(history.iter().filter(|h| h.to == OrderStatus::Paid).count(), 1);
    while e.som.dispatch_once().await.unwrap() > 0 {}
    let succeeded = e.notes.delivered().iter().filter(|n| n.message.subject == "Payment Successful").count();
    assert_eq!(succeeded, 1);
}

async fn idempotency_keys_replay_reject_mismatches_and_are_per_caller(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let bob = signed_up(&e.som, "bob").await;
    let first = e.som.create_order(alice, seed_order()).idempotency_key("k-1").await.unwrap();
    let replay = e.som.create_order(alice, seed_order()).idempotency_key("k-1").await.unwrap();
    assert_eq!(replay, first);
    assert_eq!(e.som.list_orders(alice, OrderListQuery::default()).await.unwrap().items.len(), 1);
    let other = items(&[("Other", 1, "1.00")]);
    assert!(matches!(e.som.create_order(alice, other).idempotency_key("k-1").await, Err(Error::IdempotencyMismatch)));
    let bobs = e.som.create_order(bob, seed_order()).idempotency_key("k-1").await.unwrap();
    assert_ne!(bobs.id, first.id, "keys are scoped per caller");
    let long = "k".repeat(256);
    assert_eq!(
        fields(&e.som.create_order(alice, seed_order()).idempotency_key(&long).await.unwrap_err()),
        vec!["idempotency_key"]
    );
    let bad = items(&[]);
    assert!(e.som.create_order(alice, bad).idempotency_key("k-2").await.is_err());
    assert!(
        e.som.create_order(alice, seed_order()).idempotency_key("k-2").await.is_ok(),
        "a failed request frees its key"
    );

    let p1 = e.som.initiate_payment(alice, first.id).idempotency_key("pay-1").await.unwrap();
    assert_eq!(e.som.initiate_payment(alice, first.id).idempotency_key("pay-1").await.unwrap(), p1);
    let c1 = e.som.confirm_payment(alice, p1.id).idempotency_key("conf-1").await.unwrap();
    assert_eq!(e.som.confirm_payment(alice, p1.id).idempotency_key("conf-1").await.unwrap(), c1);
    let cancel = e.som.create_order(alice, seed_order()).await.unwrap();
    let c = e.som.cancel_order(alice, cancel.id).idempotency_key("cancel-1").await.unwrap();
    assert_eq!(
        e.som.cancel_order(alice, cancel.id).idempotency_key("cancel-1").await.unwrap(),
        c,
        "replayed, not a conflict"
    );
    let declined = e.som.create_order(alice, seed_order()).await.unwrap();
    let dp = e.som.initiate_payment(alice, declined.id).method("mock_decline").await.unwrap();
    assert!(matches!(
        e.som.confirm_payment(alice, dp.id).idempotency_key("conf-d").await,
        Err(Error::PaymentDeclined(_))
    ));
    assert!(
        matches!(e.som.confirm_payment(alice, dp.id).idempotency_key("conf-d").await, Err(Error::PaymentDeclined(_))),
        "a replayed decline is still a decline"
    );
}

/// A provider whose `initiate` waits until released, to hold a request in flight.
#[derive(Debug, Default)]
struct SlowProvider {
    inner: MockProvider,
    release: tokio::sync::Notify,
    entered: tokio::sync::Notify,
}

#[async_trait]
impl PaymentProvider for SlowProvider {
    fn name(&self) -> &str {
        "slow"
    }
    async fn initiate(&self, request: &PaymentRequest) -> Result<ProviderPayment, ProviderError> {
        self.entered.notify_one();
        self.release.notified().await;
        self.inner.initiate(request).await
    }
    async fn confirm(&self, id: &str) -> Result<Confirmation, ProviderError> {
        self.inner.confirm(id).await
    }
    async fn refund(&self, request: &RefundRequest) -> Result<ProviderRefund, ProviderError> {
        self.inner.refund(request).await
    }
}

async fn a_key_in_use_by_a_running_request_is_reported_in_progress(backend: Backend) {
    let slow = Arc::new(SlowProvider::default());
    let e = env_with(backend, Some(slow.clone()), |_| {}).await;
    let alice = signed_up(&e.som, "alice").await;
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let som = e.som.clone();
    let first = tokio::spawn(async move { som.initiate_payment(alice, order.id).idempotency_key("same").await });
    slow.entered.notified().await;
    let second = e.som.initiate_payment(alice, order.id).idempotency_key("same").await;
    assert!(matches!(second, Err(Error::IdempotencyInProgress)), "{second:?}");
    slow.release.notify_one();
    let p = first.await.unwrap().unwrap();
    assert_eq!(e.som.initiate_payment(alice, order.id).idempotency_key("same").await.unwrap(), p);
}

async fn transient_notifier_failures_retry_with_growing_delays(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    e.notes.fail_next(3, NotifyError::Transient("451 try later".into()));
    let dispatcher = e.som.spawn_dispatcher();
    e.som.create_order(alice, seed_order()).await.unwrap();
    assert_eq!(e.notes.wait_for_deliveries(1, Duration::from_secs(10)).await, 1);
    dispatcher.shutdown().await;
    let attempts = e.notes.attempts();
    assert_eq!(attempts.len(), 4, "delivered on the fourth attempt");
    let gaps: Vec<i64> = attempts.windows(2).map(|w| (w[1].at - w[0].at).num_milliseconds()).collect();
    // Equal-jitter backoff from a 40 ms base: [20,40], [40,80], [80,160] ms (+ polling).
    assert!(gaps[0] >= 20 && gaps[1] >= 40 && gaps[2] >= 80, "{gaps:?}");
    assert!(gaps[2] > gaps[0], "delays grow: {gaps:?}");
    let sent = e.som.notifications(Caller::System, Some(NotificationStatus::Sent), None, 10).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].attempts, 4);
}

async fn a_notification_that_always_fails_goes_dead_and_can_be_requeued(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    e.notes.fail_always(Some(NotifyError::Transient("connection refused".into())));
    e.som.create_order(alice, seed_order()).await.unwrap();
    let dispatcher = e.som.spawn_dispatcher();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let dead = e.som.notifications(Caller::System, Some(NotificationStatus::Dead), None, 10).await.unwrap();
        if !dead.is_empty() {
            break dead;
        }
        assert!(tokio::time::Instant::now() < deadline, "the notification was not dead-lettered within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead[0].attempts, 4, "dead after the configured attempts");
    assert_eq!(dead[0].last_error.as_deref(), Some("connection refused"));
    assert_eq!(e.notes.attempts().len(), 4);
    e.notes.fail_always(None);
    assert!(matches!(e.som.retry_notification(alice, dead[0].id).await, Err(Error::Forbidden(_))));
    e.som.retry_notification(Caller::System, dead[0].id).await.unwrap();
    assert_eq!(e.notes.wait_for_deliveries(1, Duration::from_secs(10)).await, 1);
    dispatcher.shutdown().await;
    assert!(matches!(e.som.retry_notification(Caller::System, dead[0].id).await, Err(Error::Conflict(_))));
}

async fn permanent_failures_dead_letter_at_once(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    e.notes.fail_next(1, NotifyError::Permanent("550 no such user".into()));
    e.som.create_order(alice, seed_order()).await.unwrap();
    assert_eq!(e.som.dispatch_once().await.unwrap(), 1);
    let dead = e.som.notifications(Caller::System, Some(NotificationStatus::Dead), None, 10).await.unwrap();
    assert_eq!((dead.len(), dead[0].attempts), (1, 1));
}

/// A notifier that hangs while `blocked` is set, counting calls.
#[derive(Debug, Default)]
struct Hanging {
    blocked: AtomicBool,
    calls: AtomicUsize,
    entered: tokio::sync::Notify,
    delivered: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Notifier for Hanging {
    fn channel(&self) -> &str {
        "log"
    }
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.blocked.load(Ordering::SeqCst) {
            self.entered.notify_one();
            std::future::pending::<()>().await;
        }
        self.delivered.lock().unwrap().push(n.dedupe_key.clone());
        Ok(())
    }
}

async fn a_dispatcher_killed_mid_batch_loses_nothing(backend: Backend) {
    let dir = Store::new(backend).await;
    let hanging = Arc::new(Hanging::default());
    hanging.blocked.store(true, Ordering::SeqCst);
    let som = OrderSystem::builder().config(config(&dir)).notifier(hanging.clone()).build().await.unwrap();
    let alice = signed_up(&som, "alice").await;
    for _ in 0..3 {
        som.create_order(alice, seed_order()).await.unwrap();
    }
    let dispatcher = som.spawn_dispatcher();
    hanging.entered.notified().await;
    drop(dispatcher); // killed while delivering the first row of its batch
    hanging.blocked.store(false, Ordering::SeqCst);
    let start = std::time::Instant::now();
    let dispatcher = som.spawn_dispatcher();
    loop {
        let pending = som.notifications(Caller::System, Some(NotificationStatus::Pending), None, 10).await.unwrap();
        if pending.is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "rows stuck: {pending:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dispatcher.shutdown().await;
    let mut delivered = hanging.delivered.lock().unwrap().clone();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), 3, "every notification delivered after the lease expired");
    let sent = som.notifications(Caller::System, Some(NotificationStatus::Sent), None, 10).await.unwrap();
    assert_eq!(sent.len(), 3);
}

async fn a_graceful_shutdown_releases_unattempted_rows(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    for _ in 0..3 {
        e.som.create_order(alice, seed_order()).await.unwrap();
    }
    let d = e.som.spawn_dispatcher();
    d.shutdown().await;
    let total: u64 = e.som.notification_counts(Caller::System).await.unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(total, 3);
    while e.som.dispatch_once().await.unwrap() > 0 {}
    let sent = e.som.notifications(Caller::System, Some(NotificationStatus::Sent), None, 10).await.unwrap();
    assert_eq!(sent.len(), 3, "whatever the first dispatcher did not send, the next one does");
    assert!(sent.iter().all(|n| n.attempts == 1));
}

async fn operators_manage_users_and_issue_tokens(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let everyone = || som_core::UserListQuery::default();
    assert!(matches!(e.som.users_page(alice, everyone()).await, Err(Error::Forbidden(_))));
    assert!(matches!(e.som.account(alice, alice.user_id().unwrap()).await, Err(Error::Forbidden(_))));
    assert!(matches!(e.som.notification_counts(alice).await, Err(Error::Forbidden(_))));
    let admin = e.som.create_user(Caller::System, reg("admin"), true).await.unwrap();
    assert!(admin.is_staff);
    assert!(matches!(e.som.create_user(alice, reg("eve"), true).await, Err(Error::Forbidden(_))));
    assert_eq!(e.som.users_page(Caller::System, everyone()).await.unwrap().items.len(), 2);
    assert_eq!(e.som.account(Caller::System, admin.id).await.unwrap().username.as_str(), "admin");
    assert_eq!(e.som.find_user(Caller::System, "admin").await.unwrap().id, admin.id);
    assert_eq!(e.som.find_user(Caller::System, &admin.id.to_string()).await.unwrap().id, admin.id);
    assert!(matches!(e.som.find_user(alice, "admin").await, Err(Error::NotFound(_))));
    let tokens = e.som.issue_tokens(Caller::System, admin.id).await.unwrap();
    assert!(e.som.authenticate(&tokens.access).await.unwrap().is_staff());
    let order = e.som.create_order(Caller::System, seed_order()).on_behalf_of(alice.user_id().unwrap()).await.unwrap();
    assert_eq!(e.som.order(alice, order.id).await.unwrap().id, order.id);
    let history = e.som.order_history(alice, order.id).await.unwrap();
    assert_eq!(history[0].actor.to_string(), "system");
    // The last active staff account can be neither demoted nor disabled, even by an operator.
    assert!(matches!(e.som.set_staff(Caller::System, admin.id, false).await, Err(Error::Conflict(_))));
    assert!(matches!(e.som.set_active(Caller::System, admin.id, false).await, Err(Error::Conflict(_))));
    e.som.set_staff(Caller::System, alice.user_id().unwrap(), true).await.unwrap();
    assert!(!e.som.set_staff(Caller::System, admin.id, false).await.unwrap().is_staff, "another staff account remains");
}

/// A paid order of 250.00 USD and its payment id, placed by `user` with `method`.
async fn paid_order(som: &OrderSystem, user: Caller, method: &str) -> (som_core::domain::Order, PaymentId) {
    let order = som.create_order(user, seed_order()).await.unwrap();
    let p = som.initiate_payment(user, order.id).method(method).await.unwrap();
    som.confirm_payment(user, p.id).await.unwrap();
    (order, p.id)
}

pub(crate) fn refund_of(amount: Option<&str>) -> RefundInput {
    RefundInput { amount: amount.map(str::to_owned), reason: Some("damaged in transit".into()) }
}

async fn staff_refund_payments_in_part_and_in_full_once_each(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let mallory = signed_up(&e.som, "mallory").await;
    let staff_user = e.som.create_user(Caller::System, reg("staff"), true).await.unwrap();
    let staff = Caller::User { id: staff_user.id, is_staff: true };
    let (order, pid) = paid_order(&e.som, alice, "mock_success").await;
    // Only staff refund; the owner is told so, anyone else does not learn the payment exists.
    assert!(matches!(e.som.refund_payment(alice, pid).input(refund_of(None)).await, Err(Error::Forbidden(_))));
    assert!(matches!(e.som.refund_payment(mallory, pid).input(refund_of(None)).await, Err(Error::NotFound(_))));
    // Bad amounts are field errors.
    for bad in ["0", "-1", "1.001", "abc", "250.01"] {
        let err = e.som.refund_payment(staff, pid).input(refund_of(Some(bad))).await.unwrap_err();
        assert_eq!(fields(&err), vec!["amount"], "{bad}: {err:?}");
    }
    let part = e.som.refund_payment(staff, pid).input(refund_of(Some("100.00"))).idempotency_key("r1").await.unwrap();
    assert_eq!((part.status, part.amount.amount_string().as_str()), (RefundStatus::Succeeded, "100.00"));
    // The same key replays the refund; with another amount it is a mismatch.
    assert_eq!(
        e.som.refund_payment(staff, pid).input(refund_of(Some("100.00"))).idempotency_key("r1").await.unwrap().id,
        part.id
    );
    assert!(matches!(
        e.som.refund_payment(staff, pid).input(refund_of(Some("5.00"))).idempotency_key("r1").await,
        Err(Error::IdempotencyMismatch)
    ));
    let o = e.som.order(alice, order.id).await.unwrap();
    assert_eq!((o.status, o.refunded.amount_string().as_str()), (OrderStatus::PartiallyRefunded, "100.00"));
    let p = e.som.payment(alice, pid).await.unwrap();
    assert_eq!((p.status, p.refundable().amount_string().as_str()), (PaymentStatus::PartiallyRefunded, "150.00"));
    // More than is left is a conflict that names what is left.
    let err = e.som.refund_payment(staff, pid).input(refund_of(Some("150.01"))).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("150.00")), "{err:?}");
    // A paid order is not cancelled; it is refunded.
    let err = e.som.cancel_order(alice, order.id).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("refund")), "{err:?}");
    // The rest, by default everything left.
    let rest = e.som.refund_payment(Caller::System, pid).await.unwrap();
    assert_eq!(rest.amount.amount_string(), "150.00");
    let o = e.som.order(alice, order.id).await.unwrap();
    assert_eq!((o.status, o.refunded.amount_string().as_str()), (OrderStatus::Refunded, "250.00"));
    assert_eq!(e.som.payment(alice, pid).await.unwrap().status, PaymentStatus::Refunded);
    let err = e.som.refund_payment(staff, pid).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(_)), "{err:?}");
    // The owner sees the refunds; the provider made exactly two; history shows them.
    let listed = e.som.payment_refunds(alice, pid).await.unwrap();
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![part.id, rest.id]);
    assert!(matches!(e.som.payment_refunds(mallory, pid).await, Err(Error::NotFound(_))));
    assert_eq!(e.mock.refunds_made(), (2, 25000));
    let history = e.som.order_history(alice, order.id).await.unwrap();
    let tail: Vec<_> = history.iter().rev().take(2).map(|ev| ev.to).collect();
    assert_eq!(tail, vec![OrderStatus::Refunded, OrderStatus::PartiallyRefunded]);
    // An unpaid order's payment cannot be refunded.
    let unpaid = e.som.create_order(alice, seed_order()).await.unwrap();
    let pending = e.som.initiate_payment(alice, unpaid.id).await.unwrap();
    let err = e.som.refund_payment(staff, pending.id).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("PENDING")), "{err:?}");
    // Each refund told the customer.
    let dispatcher = e.som.spawn_dispatcher();
    e.notes.wait_for_deliveries(5, Duration::from_secs(10)).await;
    dispatcher.shutdown().await;
    let refunds: Vec<_> =
        e.notes.delivered().into_iter().filter(|n| n.kind == som_core::domain::EventKind::RefundIssued).collect();
    assert_eq!(refunds.len(), 2);
    assert!(refunds.iter().any(|n| n.message.text.contains("100.00 USD") && n.message.subject == "Refund Issued"));
}

/// Idempotency keys and pending refunds age by the system's clock: moved forward here, not
/// slept through.
async fn idempotency_keys_expire_and_pending_refunds_are_recovered_as_time_passes(backend: Backend) {
    let clock = som_core::clock::ManualClock::starting_now();
    let e = env_on(backend, None, clock.clone(), |c| c.idempotency_ttl = Duration::from_secs(3600)).await;
    let alice = signed_up(&e.som, "alice").await;
    let first = e.som.create_order(alice, seed_order()).idempotency_key("k-1").await.unwrap();
    clock.advance(Duration::from_secs(3599));
    let replay = e.som.create_order(alice, seed_order()).idempotency_key("k-1").await.unwrap();
    assert_eq!(replay.id, first.id, "replayed within the key's lifetime");
    clock.advance(Duration::from_secs(2));
    let fresh = e.som.create_order(alice, seed_order()).idempotency_key("k-1").await.unwrap();
    assert_ne!(fresh.id, first.id, "an expired key starts afresh");

    let (_, pid) = paid_order(&e.som, alice, "mock_success").await;
    e.mock.script_refund([ProviderError::Transient("timeout".into())]);
    let pending = e.som.refund_payment(Caller::System, pid).input(refund_of(Some("50.00"))).await.unwrap();
    assert_eq!(pending.status, RefundStatus::Pending);
    let after = Duration::from_secs(60);
    assert_eq!(e.som.recover_refunds(after).await.unwrap(), 0, "too young to be presumed abandoned");
    clock.advance(Duration::from_secs(59));
    assert_eq!(e.som.recover_refunds(after).await.unwrap(), 0, "still too young");
    clock.advance(Duration::from_secs(2));
    assert_eq!(e.som.recover_refunds(after).await.unwrap(), 1, "finished once old enough");
    assert_eq!(e.som.payment_refunds(Caller::System, pid).await.unwrap()[0].status, RefundStatus::Succeeded);
}

async fn declined_refunds_release_the_amount_and_transient_ones_are_finished_later(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let (_, declining) = paid_order(&e.som, alice, "mock_refund_decline").await;
    let err = e.som.refund_payment(Caller::System, declining).input(refund_of(Some("10.00"))).await.unwrap_err();
    assert!(matches!(err, Error::PaymentDeclined(_)), "{err:?}");
    let refunds = e.som.payment_refunds(Caller::System, declining).await.unwrap();
    assert_eq!(refunds[0].status, RefundStatus::Failed);
    let p = e.som.payment(Caller::System, declining).await.unwrap();
    assert_eq!((p.status, p.refundable().amount_string().as_str()), (PaymentStatus::Success, "250.00"));

    // The provider cannot be reached: the refund is returned PENDING, its amount set aside, to
    // be finished later (so the caller has no reason to ask again).
    let (order, pid) = paid_order(&e.som, alice, "mock_success").await;
    e.mock.script_refund([ProviderError::Transient("timeout".into())]);
    let pending = e.som.refund_payment(Caller::System, pid).input(refund_of(Some("50.00"))).await.unwrap();
    assert_eq!(pending.status, RefundStatus::Pending);
    let pending = e.som.payment_refunds(Caller::System, pid).await.unwrap();
    assert_eq!(pending.iter().map(|r| r.status).collect::<Vec<_>>(), vec![RefundStatus::Pending]);
    assert_eq!(e.som.payment(Caller::System, pid).await.unwrap().refundable().amount_string(), "200.00");
    // Too young to be presumed abandoned; then finished, once.
    assert_eq!(e.som.recover_refunds(Duration::from_secs(60)).await.unwrap(), 0);
    assert_eq!(e.som.recover_refunds(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(e.som.recover_refunds(Duration::ZERO).await.unwrap(), 0);
    let done = e.som.payment_refunds(Caller::System, pid).await.unwrap();
    assert_eq!(done[0].status, RefundStatus::Succeeded);
    assert_eq!(e.som.order(Caller::System, order.id).await.unwrap().status, OrderStatus::PartiallyRefunded);
    assert_eq!(e.mock.refunds_made(), (1, 5000));
}

async fn sixty_four_concurrent_partial_refunds_return_exactly_the_payment(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let order = e.som.create_order(alice, items(&[("Widget", 1, "10.00")])).await.unwrap();
    let p = e.som.initiate_payment(alice, order.id).await.unwrap();
    e.som.confirm_payment(alice, p.id).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let som = e.som.clone();
        tasks.push(tokio::spawn(async move {
            som.refund_payment(Caller::System, p.id).input(refund_of(Some("1.00"))).await
        }));
    }
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.status, RefundStatus::Succeeded);
                ok += 1;
            }
            Err(Error::Conflict(_)) => conflicts += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, conflicts), (10, 54));
    let o = e.som.order(alice, order.id).await.unwrap();
    assert_eq!((o.status, o.refunded.amount_string().as_str()), (OrderStatus::Refunded, "10.00"));
    assert_eq!(e.mock.refunds_made(), (10, 1000));
}

async fn a_refund_left_pending_by_a_crash_is_finished_once_after_restart(backend: Backend) {
    let dir = Store::new(backend).await;
    let alice;
    let pid;
    {
        let mock = Arc::new(MockProvider::new(2));
        let som = OrderSystem::builder().config(config(&dir)).provider(mock.clone()).build().await.unwrap();
        alice = signed_up(&som, "alice").await;
        pid = paid_order(&som, alice, "mock_success").await.1;
        // The process "dies" between setting the refund aside and hearing from the provider.
        mock.script_refund([ProviderError::Transient("connection reset".into())]);
        let pending =
            som.refund_payment(Caller::System, pid).input(refund_of(Some("25.00"))).idempotency_key("k").await.unwrap();
        assert_eq!(pending.status, RefundStatus::Pending);
    }
    let mock = Arc::new(MockProvider::new(2));
    let som = OrderSystem::builder().config(config(&dir)).provider(mock.clone()).build().await.unwrap();
    assert_eq!(som.recover_refunds(Duration::ZERO).await.unwrap(), 1);
    // The caller's retry with its key gets the same refund, not a second one.
    let again =
        som.refund_payment(Caller::System, pid).input(refund_of(Some("25.00"))).idempotency_key("k").await.unwrap();
    let refunds = som.payment_refunds(Caller::System, pid).await.unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!((refunds[0].id, refunds[0].status), (again.id, RefundStatus::Succeeded));
    assert_eq!(refunds[0].provider_refund_id.as_deref(), Some(format!("mock_re_som-refund-{}", again.id).as_str()));
    assert_eq!(mock.refunds_made(), (1, 2500));
    assert_eq!(som.payment(alice, pid).await.unwrap().refunded.amount_string(), "25.00");
}

async fn provider_events_apply_once_and_record_refunds_made_at_the_provider(backend: Backend) {
    use som_core::EventOutcome;
    use som_core::payment::{EventEffect, ProviderEvent, RefundReport};
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let payment = e.som.initiate_payment(alice, order.id).await.unwrap();
    let captured = |amount_minor: i64, currency: &str| EventEffect::PaymentSucceeded {
        provider_payment_id: payment.provider_payment_id.clone(),
        amount_minor,
        currency: currency.into(),
    };
    let succeeded = captured(payment.amount.minor(), "USD");
    let event = |id: &str, effect: EventEffect| ProviderEvent {
        provider: "mock".into(),
        id: id.into(),
        kind: "test".into(),
        effect,
    };

    // A capture of another amount or currency than the payment's changes nothing.
    for (id, wrong) in [("evt_0a", captured(1, "USD")), ("evt_0b", captured(payment.amount.minor(), "JPY"))] {
        let receipt = e.som.apply_provider_event(event(id, wrong)).await.unwrap();
        assert_eq!(receipt.outcome, EventOutcome::Mismatch, "{receipt:?}");
    }
    let contradictory = EventEffect::Contradictory {
        provider_payment_id: payment.provider_payment_id.clone(),
        problem: "a succeeded event whose intent is requires_action".into(),
    };
    assert_eq!(
        e.som.apply_provider_event(event("evt_0c", contradictory)).await.unwrap().outcome,
        EventOutcome::Mismatch
    );
    assert_eq!(e.som.order(alice, order.id).await.unwrap().status, OrderStatus::Created);
    assert_eq!(e.som.payment(alice, payment.id).await.unwrap().status, PaymentStatus::Pending);

    // Captured at the provider: the order is paid once, with one notification, however often
    // the event comes and whatever SOM's own confirmation does afterwards.
    let first = e.som.apply_provider_event(event("evt_1", succeeded.clone())).await.unwrap();
    assert_eq!(first.outcome, EventOutcome::Applied);
    assert_eq!(e.som.order(alice, order.id).await.unwrap().status, OrderStatus::Paid);
    assert_eq!(
        e.som.apply_provider_event(event("evt_1", succeeded.clone())).await.unwrap().outcome,
        EventOutcome::Duplicate
    );
    let again = e.som.apply_provider_event(event("evt_2", succeeded)).await.unwrap();
    assert_eq!(again.outcome, EventOutcome::Ignored, "{again:?}");
    assert_eq!(e.som.confirm_payment(alice, payment.id).await.unwrap().status, PaymentStatus::Success);
    let paid = e.som.order_history(alice, order.id).await.unwrap();
    assert_eq!(paid.iter().filter(|ev| ev.to == OrderStatus::Paid).count(), 1);
    e.som.dispatch_once().await.unwrap();
    let kinds: Vec<_> = e.notes.delivered().iter().map(|n| n.kind.as_str().to_owned()).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "payment_succeeded").count(), 1, "{kinds:?}");

    // A refund made in the provider's dashboard is recorded without the provider being asked to
    // refund again; SOM's own refunds (they carry SOM's key) and unfinished ones are not.
    let report = |id: &str, minor: i64, som_key: Option<&str>, succeeded: bool| RefundReport {
        provider_refund_id: id.into(),
        amount_minor: minor,
        currency: "USD".into(),
        succeeded,
        failed: false,
        som_key: som_key.map(str::to_owned),
    };
    let refunds = |reports: Vec<RefundReport>| EventEffect::Refunded {
        provider_payment_id: payment.provider_payment_id.clone(),
        refunds: reports,
    };
    let calls = e.mock.refund_calls();
    let outside = ProviderEvent {
        provider: "mock".into(),
        id: "evt_3".into(),
        kind: "refund.created".into(),
        effect: refunds(vec![
            report("re_dash", 5000, None, true),
            report("re_som", 1000, Some("som-refund-99"), true),
            report("re_pending", 700, None, false),
        ]),
    };
    assert_eq!(e.som.apply_provider_event(outside.clone()).await.unwrap().outcome, EventOutcome::Applied);
    assert_eq!(e.mock.refund_calls(), calls, "the provider is not asked to refund again");
    let recorded = e.som.payment_refunds(Caller::System, payment.id).await.unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(
        (recorded[0].status, recorded[0].provider_refund_id.as_deref()),
        (RefundStatus::Succeeded, Some("re_dash"))
    );
    let p = e.som.payment(Caller::System, payment.id).await.unwrap();
    assert_eq!((p.status, p.refunded.to_string()), (PaymentStatus::PartiallyRefunded, "50.00 USD".to_owned()));
    // The same refund in another event, and the same event again, change nothing.
    let renamed = ProviderEvent { id: "evt_4".into(), ..outside.clone() };
    assert_eq!(e.som.apply_provider_event(renamed).await.unwrap().outcome, EventOutcome::Ignored);
    assert_eq!(e.som.apply_provider_event(outside).await.unwrap().outcome, EventOutcome::Duplicate);
    // More than is left is not recorded (and is logged for the operator).
    let too_much = ProviderEvent {
        provider: "mock".into(),
        id: "evt_5".into(),
        kind: "refund.created".into(),
        effect: refunds(vec![report("re_big", 30000, None, true)]),
    };
    assert_eq!(e.som.apply_provider_event(too_much).await.unwrap().outcome, EventOutcome::Ignored);
    assert_eq!(e.som.payment_refunds(Caller::System, payment.id).await.unwrap().len(), 1);

    // Events for payments SOM does not know, or of another provider, are acknowledged.
    let unknown = ProviderEvent {
        provider: "mock".into(),
        id: "evt_6".into(),
        kind: "x".into(),
        effect: EventEffect::PaymentSucceeded {
            provider_payment_id: "pi_unknown".into(),
            amount_minor: 100,
            currency: "USD".into(),
        },
    };
    assert_eq!(e.som.apply_provider_event(unknown).await.unwrap().outcome, EventOutcome::Ignored);
    // The mock accepts no signed events: its webhook is "not found".
    let err = e.som.receive_provider_event("mock", b"{}", "t=1,v1=00").await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    let err = e.som.receive_provider_event("stripe", b"{}", "t=1,v1=00").await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

/// Two processes on one database (two systems, each with its own session cache): a change made
/// in one takes effect there at once and in the other within `SOM_SESSION_CACHE_TTL`.
async fn session_changes_apply_at_once_here_and_within_the_cache_ttl_elsewhere(backend: Backend) {
    let store = Store::new(backend).await;
    let ttl = Duration::from_millis(500);
    // Time in both processes moves only when told.
    let clock = som_core::clock::ManualClock::starting_now();
    let build = || {
        let mut cfg = config(&store);
        cfg.session_cache_ttl = ttl;
        OrderSystem::builder().config(cfg).clock(clock.clone()).build()
    };
    let here = build().await.unwrap();
    let there = build().await.unwrap();
    // Another staff account, so that alice's staff rights can be revoked below.
    here.create_user(Caller::System, reg("root"), true).await.unwrap();
    here.register(reg("alice")).await.unwrap();
    let alice = here.login("alice", "correct horse battery").await.unwrap();
    let id = here.authenticate(&alice.access).await.unwrap().user_id().unwrap();
    assert!(there.authenticate(&alice.access).await.is_ok(), "the other process trusts the session now");

    // Disabled elsewhere: refused here within the ttl (not necessarily before).
    there.set_active(Caller::System, id, false).await.unwrap();
    clock.advance(ttl - Duration::from_millis(1));
    assert!(here.authenticate(&alice.access).await.is_ok(), "trusted from the cache until the ttl");
    clock.advance(Duration::from_millis(1));
    assert!(matches!(here.authenticate(&alice.access).await, Err(Error::Unauthorized(_))));

    // Changed here: refused here at once, however recently the session was seen live.
    here.set_active(Caller::System, id, true).await.unwrap();
    let again = here.login("alice", "correct horse battery").await.unwrap();
    assert!(here.authenticate(&again.access).await.is_ok());
    here.revoke_sessions(Caller::System, id).await.unwrap();
    assert!(matches!(here.authenticate(&again.access).await, Err(Error::Unauthorized(_))));
    let third = here.login("alice", "correct horse battery").await.unwrap();
    assert_eq!(here.authenticate(&third.access).await.unwrap(), Caller::User { id, is_staff: false });
    here.set_staff(Caller::System, id, true).await.unwrap();
    assert_eq!(here.authenticate(&third.access).await.unwrap(), Caller::User { id, is_staff: true });
    here.logout(&third.refresh).await.unwrap();
    assert!(matches!(here.authenticate(&third.access).await, Err(Error::Unauthorized(_))));

    // Staff rights granted elsewhere show within the ttl too.
    let fourth = here.login("alice", "correct horse battery").await.unwrap();
    assert_eq!(there.authenticate(&fourth.access).await.unwrap(), Caller::User { id, is_staff: true });
    here.set_staff(Caller::System, id, false).await.unwrap();
    clock.advance(ttl);
    assert_eq!(there.authenticate(&fourth.access).await.unwrap(), Caller::User { id, is_staff: false });
}

async fn ended_payments_are_closed_at_the_provider_and_late_money_is_returned(backend: Backend) {
    use som_core::EventOutcome;
    use som_core::payment::{EventEffect, ProviderEvent};
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    e.som.create_user(Caller::System, reg("root"), true).await.unwrap();

    // Cancelling the order closes its pending payment at the provider at once.
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let cancelled = e.som.initiate_payment(alice, order.id).await.unwrap();
    e.som.cancel_order(alice, order.id).await.unwrap();
    assert_eq!(e.mock.cancelled(), vec![cancelled.provider_payment_id.clone()]);

    // A declined payment is closed too; the new attempt that replaces it is not.
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let declined = e.som.initiate_payment(alice, order.id).method("mock_decline").await.unwrap();
    assert!(matches!(e.som.confirm_payment(alice, declined.id).await, Err(Error::PaymentDeclined(_))));
    let retry = e.som.initiate_payment(alice, order.id).await.unwrap();
    assert_eq!(e.mock.cancelled().len(), 2);
    assert_eq!(e.mock.cancelled()[1], declined.provider_payment_id);

    // The provider down when an order is cancelled: the cancellation still succeeds, and the
    // sweep closes the payment once the provider is back — once.
    e.mock.script_cancel([ProviderError::Transient("down".into())]);
    e.som.cancel_order(alice, order.id).await.unwrap();
    assert_eq!(e.mock.cancelled().len(), 2, "not closed while the provider is down");
    assert_eq!(e.som.close_ended_payments().await.unwrap(), 1);
    assert_eq!(e.mock.cancelled()[2], retry.provider_payment_id);
    assert_eq!(e.som.close_ended_payments().await.unwrap(), 0, "each payment is closed once");

    // Money the provider captured anyway for a cancelled payment is returned automatically
    // (once, however often the event comes) and the order stays cancelled.
    let late = |id: &str| ProviderEvent {
        provider: "mock".into(),
        id: id.into(),
        kind: "payment_intent.succeeded".into(),
        effect: EventEffect::PaymentSucceeded {
            provider_payment_id: cancelled.provider_payment_id.clone(),
            amount_minor: cancelled.amount.minor(),
            currency: "USD".into(),
        },
    };
    let receipt = e.som.apply_provider_event(late("evt_late")).await.unwrap();
    assert_eq!(receipt.outcome, EventOutcome::Applied, "{receipt:?}");
    assert_eq!(e.mock.refunds_made(), (1, cancelled.amount.minor()));
    let receipt = e.som.apply_provider_event(late("evt_late_again")).await.unwrap();
    assert_eq!(e.mock.refunds_made(), (1, cancelled.amount.minor()), "{receipt:?}");
    assert_eq!(e.som.order(alice, cancelled.order_id).await.unwrap().status, OrderStatus::Cancelled);
    let returned = e.som.payment(alice, cancelled.id).await.unwrap();
    assert_eq!((returned.status, returned.refunded), (PaymentStatus::Cancelled, cancelled.amount));
    // Recorded as a refund of its own, with its reason.
    let refunds = e.som.payment_refunds(alice, cancelled.id).await.unwrap();
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!((refunds[0].status, refunds[0].amount), (RefundStatus::Succeeded, cancelled.amount));
    assert!(refunds[0].reason.as_deref().is_some_and(|r| r.contains("after the payment was CANCELLED")), "{refunds:?}");
    // Staff are told, once, by notification (not only in the log).
    let alerts: Vec<_> = e
        .som
        .notifications(Caller::System, None, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.kind == som_core::domain::EventKind::StaffAlert)
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].recipient.as_deref(), Some("root@example.com"));
    assert!(alerts[0].message.text.contains("refunded automatically"), "{:?}", alerts[0].message.text);

    // A declined attempt whose money arrives after another attempt paid the order: returned
    // on its own payment; the order, paid by the other, is untouched and can still be refunded.
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let declined = e.som.initiate_payment(alice, order.id).method("mock_decline").await.unwrap();
    assert!(e.som.confirm_payment(alice, declined.id).await.is_err());
    let paying = e.som.initiate_payment(alice, order.id).await.unwrap();
    e.som.confirm_payment(alice, paying.id).await.unwrap();
    let late_declined = ProviderEvent {
        provider: "mock".into(),
        id: "evt_late_declined".into(),
        kind: "payment_intent.succeeded".into(),
        effect: EventEffect::PaymentSucceeded {
            provider_payment_id: declined.provider_payment_id.clone(),
            amount_minor: declined.amount.minor(),
            currency: "USD".into(),
        },
    };
    assert_eq!(e.som.apply_provider_event(late_declined).await.unwrap().outcome, EventOutcome::Applied);
    let returned = e.som.payment(alice, declined.id).await.unwrap();
    assert_eq!((returned.status, returned.refunded), (PaymentStatus::Failed, declined.amount));
    let still = e.som.order(alice, order.id).await.unwrap();
    assert_eq!((still.status, still.refunded.minor()), (OrderStatus::Paid, 0));
    let full = e.som.refund_payment(Caller::System, paying.id).await.unwrap();
    assert_eq!(full.status, RefundStatus::Succeeded);
    assert_eq!(e.som.order(alice, order.id).await.unwrap().status, OrderStatus::Refunded);
}

async fn a_refund_the_provider_is_still_returning_stays_pending_until_it_says_how_it_ended(backend: Backend) {
    use som_core::payment::{EventEffect, ProviderEvent, RefundReport};
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let p = e.som.initiate_payment(alice, order.id).await.unwrap();
    e.som.confirm_payment(alice, p.id).await.unwrap();

    // The provider answers "pending": the amount is set aside, nothing is refunded yet.
    e.mock.script_pending_refunds(1);
    let pending = e.som.refund_payment(Caller::System, p.id).amount("100.00").await.unwrap();
    assert_eq!(pending.status, RefundStatus::Pending);
    assert!(pending.provider_refund_id.is_some(), "the provider's refund is remembered: {pending:?}");
    let payment = e.som.payment(alice, p.id).await.unwrap();
    assert_eq!((payment.status, payment.refunded.minor()), (PaymentStatus::Success, 0));
    assert_eq!(payment.refundable().amount_string(), "150.00", "the pending amount is reserved");
    assert_eq!(e.som.order(alice, order.id).await.unwrap().status, OrderStatus::Paid);
    // Recovery asks where it stands (never makes it again); now it succeeded.
    let calls = e.mock.refund_calls();
    assert_eq!(e.som.recover_refunds(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(e.mock.refund_calls(), calls, "the refund was not made a second time");
    let refunds = e.som.payment_refunds(Caller::System, p.id).await.unwrap();
    assert_eq!(refunds[0].status, RefundStatus::Succeeded);
    assert_eq!(e.som.payment(alice, p.id).await.unwrap().status, PaymentStatus::PartiallyRefunded);

    // Another pending refund, then the provider's event says it failed: the amount is
    // available again and nothing counts as refunded.
    e.mock.script_pending_refunds(1);
    let second = e.som.refund_payment(Caller::System, p.id).amount("50.00").await.unwrap();
    assert_eq!(second.status, RefundStatus::Pending);
    e.mock.script_refund([ProviderError::Declined {
        code: "expired_or_canceled_card".into(),
        message: "card closed".into(),
    }]);
    let event = ProviderEvent {
        provider: "mock".into(),
        id: "evt_refund_failed".into(),
        kind: "refund.updated".into(),
        effect: EventEffect::Refunded {
            provider_payment_id: p.provider_payment_id.clone(),
            refunds: vec![RefundReport {
                provider_refund_id: second.provider_refund_id.clone().unwrap(),
                amount_minor: 5000,
                currency: "USD".into(),
                succeeded: false,
                failed: true,
                som_key: Some(format!("som-refund-{}", second.id)),
            }],
        },
    };
    let receipt = e.som.apply_provider_event(event).await.unwrap();
    assert_eq!(receipt.outcome, som_core::EventOutcome::Applied, "{receipt:?}");
    let refunds = e.som.payment_refunds(Caller::System, p.id).await.unwrap();
    assert_eq!(refunds[1].status, RefundStatus::Failed, "{refunds:?}");
    let payment = e.som.payment(alice, p.id).await.unwrap();
    assert_eq!((payment.status, payment.refunded.amount_string()), (PaymentStatus::PartiallyRefunded, "100.00".into()));
    assert_eq!(payment.refundable().amount_string(), "150.00", "the failed refund's amount is free again");

    // The first refund, which had succeeded, fails at the provider after all (a closed card):
    // the payment and order count it as not refunded again, with the order's event, and staff
    // are told.
    e.som.create_user(Caller::System, reg("root"), true).await.unwrap();
    let first = &refunds[0];
    e.mock.script_refund([ProviderError::Declined {
        code: "charge_for_pending_refund_disputed".into(),
        message: "card closed".into(),
    }]);
    let event = ProviderEvent {
        provider: "mock".into(),
        id: "evt_refund_failed_late".into(),
        kind: "refund.updated".into(),
        effect: EventEffect::Refunded {
            provider_payment_id: p.provider_payment_id.clone(),
            refunds: vec![RefundReport {
                provider_refund_id: first.provider_refund_id.clone().unwrap(),
                amount_minor: 10000,
                currency: "USD".into(),
                succeeded: false,
                failed: true,
                som_key: Some(format!("som-refund-{}", first.id)),
            }],
        },
    };
    assert_eq!(e.som.apply_provider_event(event).await.unwrap().outcome, som_core::EventOutcome::Applied);
    let reversed = e.som.payment_refunds(Caller::System, p.id).await.unwrap();
    assert_eq!(reversed[0].status, RefundStatus::Failed, "{reversed:?}");
    let payment = e.som.payment(alice, p.id).await.unwrap();
    assert_eq!((payment.status, payment.refunded.minor()), (PaymentStatus::Success, 0));
    assert_eq!(payment.refundable().amount_string(), "250.00");
    assert_eq!(e.som.order(alice, order.id).await.unwrap().status, OrderStatus::Paid);
    let history = e.som.order_history(alice, order.id).await.unwrap();
    assert_eq!(history.last().map(|h| (h.from, h.to)), Some((Some(OrderStatus::PartiallyRefunded), OrderStatus::Paid)));
    let alerts = e.som.notifications(Caller::System, None, None, 100).await.unwrap();
    assert!(alerts.iter().any(|n| n.kind == som_core::domain::EventKind::StaffAlert), "{alerts:?}");
}

async fn logins_racing_a_password_change_keep_no_working_session(backend: Backend) {
    // Attempts in flight hold failed-login slots; this test is about sessions, not that limit.
    let e = env_with(backend, None, |c| c.login_failure_limit = 100).await;
    e.som.register(reg("alice")).await.unwrap();
    let keeper = e.som.login("alice", "correct horse battery").await.unwrap();
    for round in 0..3 {
        let (old, new) = if round % 2 == 0 {
            ("correct horse battery", "a brand new passphrase")
        } else {
            ("a brand new passphrase", "correct horse battery")
        };
        let mut logins = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let som = e.som.clone();
            logins.spawn(async move { som.login("alice", old).await.ok() });
        }
        tokio::task::yield_now().await;
        e.som.change_password(&keeper.access, old, new).await.unwrap();
        for pair in logins.join_all().await.into_iter().flatten() {
            assert!(e.som.authenticate(&pair.access).await.is_err(), "round {round}: an access token survived");
            assert!(e.som.refresh(&pair.refresh).await.is_err(), "round {round}: a refresh token survived");
        }
    }
    assert!(e.som.authenticate(&keeper.access).await.is_ok(), "the session that changed the password stays");
}
