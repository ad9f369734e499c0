//! The storage conformance suite: one set of async checks, written once, that every
//! [`Storage`] backend must pass. Each check takes a fresh, empty, migrated storage.
//!
//! Use [`storage_conformance_tests!`](crate::storage_conformance_tests) to generate one test
//! per check for a backend:
//!
//! ```ignore
//! som_core::storage_conformance_tests!(async { (my_fresh_storage().await, ()) });
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use chrono::{Duration, Utc};

use super::*;
use crate::domain::{Currency, EventKind, Money, NewOrder, PaymentStatus, RefundStatus};
use crate::domain::{Email, Message, OrderStatus, Username};

/// Generates a `#[tokio::test]` per conformance check, each on storage from `$make`: an
/// expression evaluating to a future of `(DynStorage, guard)`, where the guard (a temporary
/// directory, a throwaway database) lives as long as the test.
#[macro_export]
macro_rules! storage_conformance_tests {
    ($make:expr) => {
        $crate::storage_conformance_tests!(@each $make;
            settings_are_initialised_once,
            users_are_unique_by_username_and_email,
            users_list_in_id_order_and_staff_can_be_set,
            concurrent_demotions_leave_an_active_staff_account,
            refresh_tokens_rotate_once_and_reuse_revokes_the_family,
            sessions_end_by_revocation_version_and_disabling,
            orders_are_stored_with_items_event_and_outbox_rows,
            orders_list_newest_first_by_cursor_and_filter,
            cancelling_is_conditional_and_voids_the_pending_payment,
            one_live_payment_per_order,
            concurrent_payment_inserts_yield_one_payment,
            completing_a_payment_is_conditional_and_pays_the_order,
            concurrent_completions_apply_once,
            provider_ids_next_actions_and_inbound_events,
            declined_payments_fail_and_leave_the_order_payable,
            outbox_claims_lease_and_deliver,
            concurrent_claims_never_overlap,
            outbox_failures_reschedule_dead_letter_and_requeue,
            redelivery_requeues_delivered_and_in_flight_rows,
            idempotency_keys_replay_mismatch_and_progress,
            idempotency_results_are_written_with_the_effect,
            refunds_reserve_within_the_captured_amount_and_finish_once,
            concurrent_partial_refunds_never_exceed_the_payment,
            lists_filter_users_by_prefix_orders_by_time_and_notifications_by_order,
            staff_reads_search_orders_total_them_and_count_open_work,
            writes_run_to_completion_when_their_callers_stop_waiting,
            concurrent_fulfilments_never_exceed_the_order,
            fulfilment_steps_move_the_order_with_their_event_and_outbox_rows,
            received_returns_refund_once_and_never_more_than_was_captured,
            concurrent_returns_never_exceed_what_was_delivered,
        );
    };
    (@each $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (storage, guard): ($crate::storage::DynStorage, _) = $make.await;
                $crate::storage::conformance::$name(storage).await;
                drop(guard);
            }
        )+
    };
}

mod accounts;
mod cancellation;
mod fulfillments;
mod idempotency;
mod lists;
mod orders;
mod outbox;
mod payments;
mod refunds;

pub use accounts::*;
pub use cancellation::*;
pub use fulfillments::*;
pub use idempotency::*;
pub use lists::*;
pub use orders::*;
pub use outbox::*;
pub use payments::*;
pub use refunds::*;

pub(super) async fn user(s: &DynStorage, name: &str) -> crate::domain::User {
    s.insert_user(NewUserRecord {
        username: Username::parse(name).unwrap(),
        email: Some(Email::parse(&format!("{name}@example.com")).unwrap()),
        password_hash: "$argon2id$not-a-real-hash".into(),
        is_staff: false,
        created_at: Utc::now(),
    })
    .await
    .unwrap()
    .inserted()
}

pub(super) fn new_order(prices: &[(&str, i64, &str)]) -> NewOrder {
    NewOrder::parse(&crate::testing::order_of(prices), Currency::USD).unwrap()
}

pub(super) fn notify(channels: &[&str], user: &crate::domain::User) -> OrderNotify {
    let channels: Vec<String> = channels.iter().map(|c| (*c).to_owned()).collect();
    let user = user.clone();
    Box::new(move |o| {
        channels
            .iter()
            .map(|c| NewNotification {
                channel: c.clone(),
                message: Message::new(EventKind::OrderCreated, &user, o, None, None),
            })
            .collect()
    })
}

pub(super) fn pay_notify(kind: EventKind, user: &crate::domain::User) -> PaymentNotify {
    let user = user.clone();
    Box::new(move |o, p| {
        vec![NewNotification { channel: "log".into(), message: Message::new(kind, &user, o, Some(p), None) }]
    })
}

pub(super) fn no_notify() -> OrderNotify {
    Box::new(|_| Vec::new())
}

pub(super) async fn order(s: &DynStorage, u: &crate::domain::User) -> Order {
    let items = new_order(&[("Widget", 2, "100.00"), ("Gadget", 1, "50.00")]);
    s.insert_order(u.id, Actor::User(u.id), items, Utc::now(), no_notify(), None).await.unwrap()
}

pub(super) fn payment_record(o: &Order, tag: &str) -> NewPaymentRecord {
    NewPaymentRecord {
        order_id: o.id,
        user_id: o.user_id,
        provider: "mock".into(),
        provider_payment_id: format!("pp_{tag}"),
        transaction_id: format!("txn_{tag}_{}", crate::util::random_token(6)),
        method: "mock_success".into(),
        attempt: 1,
        amount: o.total,
        capture_method: crate::domain::CaptureMethod::Automatic,
        client_secret: Some(format!("pp_{tag}_secret")),
        created_at: Utc::now(),
    }
}

pub(super) async fn inserted(s: &DynStorage, o: &Order, tag: &str) -> Payment {
    match s.insert_payment(payment_record(o, tag), None).await.unwrap() {
        PaymentInsert::Inserted(p) => p,
        other => panic!("expected an inserted payment, got {other:?}"),
    }
}

pub(super) async fn complete(
    s: &DynStorage,
    p: &Payment,
    outcome: PaymentOutcome,
    u: &crate::domain::User,
) -> Transition<Payment> {
    let kind =
        if outcome == PaymentOutcome::Succeeded { EventKind::PaymentSucceeded } else { EventKind::PaymentFailed };
    s.complete_payment(p.id, outcome, Actor::User(u.id), Utc::now(), pay_notify(kind, u), None).await.unwrap()
}
