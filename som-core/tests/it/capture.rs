//! Authorise now, capture later, through the facade on both backends: partial capture and the
//! refunds it bounds, voids, races between captures and voids, expiry with two dispatchers, a
//! capture left behind by a crash, provider events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use som_core::domain::{Caller, CaptureMethod, OrderStatus, Payment, PaymentStatus, RefundStatus};
use som_core::payment::{EventEffect, MockProvider, ProviderError, ProviderEvent};
use som_core::testing::{Backend, registration as reg, seed_order};
use som_core::{Error, EventOutcome, OrderSystem};

use crate::system::{Env, Store, config, env, env_on, refund_of, signed_up};

som_core::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    manual_capture_authorises_then_captures_part_and_refunds_bound_by_it,
    thirty_two_concurrent_captures_capture_once,
    a_capture_racing_a_void_ends_exactly_one_way,
    voids_release_the_hold_and_cancel_the_order,
    a_declined_capture_keeps_the_authorisation,
    expiry_releases_once_with_two_dispatchers_and_staff_are_warned_first,
    a_capture_left_by_a_crash_is_finished_once_after_restart,
    provider_events_authorise_capture_and_release_once
);

/// An order of the seed's 250.00 paid with manual capture and confirmed: AUTHORIZED.
async fn authorised(som: &OrderSystem, user: Caller, method: &str) -> Payment {
    let order = som.create_order(user, seed_order()).await.unwrap();
    let p = som.initiate_payment(user, order.id).method(method).capture(CaptureMethod::Manual).await.unwrap();
    assert_eq!((p.status, p.capture_method), (PaymentStatus::Pending, CaptureMethod::Manual));
    som.confirm_payment(user, p.id).await.unwrap()
}

async fn staff(e: &Env) -> Caller {
    let u = e.som.create_user(Caller::System, reg("staff"), true).await.unwrap();
    Caller::User { id: u.id, is_staff: true }
}

async fn kinds(e: &Env) -> Vec<String> {
    while e.som.dispatch_once().await.unwrap() > 0 {}
    e.notes.delivered().iter().map(|n| n.kind.to_string()).collect()
}

async fn manual_capture_authorises_then_captures_part_and_refunds_bound_by_it(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let mallory = signed_up(&e.som, "mallory").await;
    let staff = staff(&e).await;
    let p = authorised(&e.som, alice, "mock_success").await;
    assert_eq!(p.status, PaymentStatus::Authorized);
    assert_eq!((p.amount.amount_string(), p.captured.amount_string()), ("250.00".into(), "0.00".into()));
    let expires = p.authorization_expires_at.expect("an authorisation runs out");
    assert!(expires > chrono::Utc::now() + chrono::Duration::days(6));
    assert_eq!(e.som.order(alice, p.order_id).await.unwrap().status, OrderStatus::Authorized);
    // Confirming again returns it; nothing is refundable before a capture.
    assert_eq!(e.som.confirm_payment(alice, p.id).await.unwrap().status, PaymentStatus::Authorized);
    assert!(matches!(e.som.refund_payment(staff, p.id).input(refund_of(None)).await, Err(Error::Conflict(_))));

    // Only staff capture; others do not learn it exists; the amount is checked.
    assert!(matches!(e.som.capture_payment(alice, p.id).await, Err(Error::Forbidden(_))));
    assert!(matches!(e.som.capture_payment(mallory, p.id).await, Err(Error::NotFound(_))));
    for bad in ["0", "-1.00", "250.01", "1.001", "abc"] {
        let err = e.som.capture_payment(staff, p.id).amount(bad).await.unwrap_err();
        assert!(matches!(err, Error::Validation(_)), "{bad}: {err:?}");
    }
    assert_eq!(e.mock.capture_calls(), 0);

    let captured = e.som.capture_payment(staff, p.id).amount("80.00").idempotency_key("cap-1").await.unwrap();
    assert_eq!(captured.status, PaymentStatus::Success);
    assert_eq!((captured.amount.amount_string(), captured.captured.amount_string()), ("250.00".into(), "80.00".into()));
    assert_eq!(captured.authorization_expires_at, None);
    assert_eq!(e.som.order(alice, p.order_id).await.unwrap().status, OrderStatus::Paid);
    // The same key replays; a second capture is refused.
    let replay = e.som.capture_payment(staff, p.id).amount("80.00").idempotency_key("cap-1").await.unwrap();
    assert_eq!(replay.captured, captured.captured);
    assert!(matches!(e.som.capture_payment(staff, p.id).await, Err(Error::Conflict(_))));
    assert!(matches!(e.som.void_payment(staff, p.id).await, Err(Error::Conflict(_))));
    assert_eq!(e.mock.captures_made(), (1, 8000));

    // Refunds apply to what was captured only.
    let too_much = e.som.refund_payment(staff, p.id).input(refund_of(Some("80.01"))).await;
    assert!(matches!(too_much, Err(Error::Conflict(_))), "{too_much:?}");
    let part = e.som.refund_payment(staff, p.id).input(refund_of(Some("30.00"))).await.unwrap();
    assert_eq!(part.status, RefundStatus::Succeeded);
    assert_eq!(e.som.order(alice, p.order_id).await.unwrap().status, OrderStatus::PartiallyRefunded);
    let rest = e.som.refund_payment(staff, p.id).input(refund_of(None)).await.unwrap();
    assert_eq!(rest.amount.amount_string(), "50.00");
    let paid = e.som.payment(alice, p.id).await.unwrap();
    assert_eq!((paid.status, paid.refunded.amount_string()), (PaymentStatus::Refunded, "80.00".into()));
    assert_eq!(e.som.order(alice, p.order_id).await.unwrap().status, OrderStatus::Refunded);
    assert_eq!(e.mock.refunds_made(), (2, 8000));
    // The overview counts what was taken, not the order's total.
    let money = &e.som.overview(staff).await.unwrap().today.money;
    assert_eq!((money[0].paid.amount_string(), money[0].refunded.amount_string()), ("80.00".into(), "80.00".into()));

    let kinds = kinds(&e).await;
    for kind in ["payment_authorized", "payment_captured", "refund_issued"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    assert!(!kinds.iter().any(|k| k == "payment_succeeded"), "{kinds:?}");
    let history = e.som.order_history(alice, p.order_id).await.unwrap();
    let path: Vec<_> = history.iter().map(|h| h.to.as_str()).collect();
    assert_eq!(path, ["CREATED", "AUTHORIZED", "PAID", "PARTIALLY_REFUNDED", "REFUNDED"]);
}

async fn thirty_two_concurrent_captures_capture_once(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let p = authorised(&e.som, alice, "mock_success").await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let som = e.som.clone();
            let amount = format!("{}.00", 100 + i);
            tokio::spawn(async move { som.capture_payment(Caller::System, p.id).amount(amount).await })
        })
        .collect();
    let (mut won, mut conflicts) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(p) => won.push(p),
            Err(Error::Conflict(_)) => conflicts += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((won.len(), conflicts), (1, 31));
    assert_eq!(e.mock.capture_calls(), 1);
    let stored = e.som.payment(Caller::System, p.id).await.unwrap();
    assert_eq!((stored.status, stored.captured), (PaymentStatus::Success, won[0].captured));
    assert_eq!(e.mock.captures_made(), (1, won[0].captured.minor()));
    let captured_notes = kinds(&e).await.into_iter().filter(|k| k == "payment_captured").count();
    assert_eq!(captured_notes, 1);
}

async fn a_capture_racing_a_void_ends_exactly_one_way(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    for _ in 0..8 {
        let p = authorised(&e.som, alice, "mock_success").await;
        let (som1, som2) = (e.som.clone(), e.som.clone());
        let capture = tokio::spawn(async move { som1.capture_payment(Caller::System, p.id).await });
        let void = tokio::spawn(async move { som2.void_payment(alice, p.id).await });
        let (capture, void) = (capture.await.unwrap(), void.await.unwrap());
        let stored = e.som.payment(Caller::System, p.id).await.unwrap();
        let order = e.som.order(Caller::System, p.order_id).await.unwrap();
        match (capture, void) {
            (Ok(c), Err(Error::Conflict(_))) => {
                assert_eq!(
                    (c.status, stored.status, order.status),
                    (PaymentStatus::Success, PaymentStatus::Success, OrderStatus::Paid)
                );
                assert!(!e.mock.cancelled().contains(&p.provider_payment_id));
            }
            (Err(Error::Conflict(_)), Ok(v)) => {
                assert_eq!(
                    (v.status, stored.status, order.status),
                    (PaymentStatus::Voided, PaymentStatus::Voided, OrderStatus::Cancelled)
                );
                assert!(e.mock.cancelled().contains(&p.provider_payment_id));
            }
            other => panic!("exactly one of a capture and a void must win: {other:?}"),
        }
        assert_eq!(stored.settlement, None);
    }
}

async fn voids_release_the_hold_and_cancel_the_order(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let mallory = signed_up(&e.som, "mallory").await;
    let p = authorised(&e.som, alice, "mock_success").await;
    assert!(matches!(e.som.void_payment(mallory, p.id).await, Err(Error::NotFound(_))));
    // The owner may release their own hold.
    let voided = e.som.void_payment(alice, p.id).idempotency_key("v").await.unwrap();
    assert_eq!((voided.status, voided.captured.amount_string()), (PaymentStatus::Voided, "0.00".into()));
    assert_eq!(e.som.void_payment(alice, p.id).idempotency_key("v").await.unwrap().status, PaymentStatus::Voided);
    assert!(matches!(e.som.void_payment(alice, p.id).await, Err(Error::Conflict(_))));
    assert!(matches!(e.som.capture_payment(Caller::System, p.id).await, Err(Error::Conflict(_))));
    assert_eq!(e.som.order(alice, p.order_id).await.unwrap().status, OrderStatus::Cancelled);
    assert_eq!(e.mock.cancelled(), vec![p.provider_payment_id.clone()]);
    // Nothing is left for the sweep of ended payments to close.
    assert_eq!(e.som.close_ended_payments().await.unwrap(), 0);

    // Cancelling an authorised order releases its hold too.
    let q = authorised(&e.som, alice, "mock_success").await;
    let cancelled = e.som.cancel_order(alice, q.order_id).await.unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(e.som.payment(alice, q.id).await.unwrap().status, PaymentStatus::Voided);
    // A pending payment cannot be voided or captured: its order is cancelled instead.
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let pending = e.som.initiate_payment(alice, order.id).capture(CaptureMethod::Manual).await.unwrap();
    // Asking again for the other method does not silently return this one.
    let other = e.som.initiate_payment(alice, order.id).capture(CaptureMethod::Automatic).await;
    assert!(matches!(other, Err(Error::Conflict(_))), "{other:?}");
    assert_eq!(e.som.initiate_payment(alice, order.id).await.unwrap().id, pending.id);
    assert!(matches!(e.som.void_payment(alice, pending.id).await, Err(Error::Conflict(_))));
    assert!(matches!(e.som.capture_payment(Caller::System, pending.id).await, Err(Error::Conflict(_))));
    let kinds = kinds(&e).await;
    assert_eq!(kinds.iter().filter(|k| *k == "payment_voided").count(), 2, "{kinds:?}");
}

async fn a_declined_capture_keeps_the_authorisation(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let p = authorised(&e.som, alice, "mock_capture_decline").await;
    assert!(matches!(e.som.capture_payment(Caller::System, p.id).await, Err(Error::PaymentDeclined(_))));
    let kept = e.som.payment(alice, p.id).await.unwrap();
    assert_eq!((kept.status, kept.settlement), (PaymentStatus::Authorized, None));
    assert_eq!(e.som.order(alice, p.order_id).await.unwrap().status, OrderStatus::Authorized);
    // Scripted refusals of another kind leave it too; then it can be voided.
    let q = authorised(&e.som, alice, "mock_success").await;
    e.mock.script_capture([ProviderError::InvalidRequest("no longer capturable".into())]);
    assert!(matches!(e.som.capture_payment(Caller::System, q.id).await, Err(Error::Conflict(_))));
    assert_eq!(e.som.void_payment(alice, q.id).await.unwrap().status, PaymentStatus::Voided);
}

async fn expiry_releases_once_with_two_dispatchers_and_staff_are_warned_first(backend: Backend) {
    let clock = som_core::clock::ManualClock::starting_now();
    let e = env_on(backend, None, clock.clone(), |c| {
        c.authorization_ttl = Duration::from_secs(3600);
        c.authorization_warn_before = Duration::from_secs(600);
    })
    .await;
    let alice = signed_up(&e.som, "alice").await;
    staff(&e).await;
    let p = authorised(&e.som, alice, "mock_success").await;
    let captured = authorised(&e.som, alice, "mock_success").await;
    e.som.capture_payment(Caller::System, captured.id).await.unwrap();
    assert_eq!(e.som.warn_expiring_authorizations().await.unwrap(), 0);
    assert_eq!(e.som.expire_authorizations().await.unwrap(), 0);
    // Ten minutes before: staff are told, once.
    clock.advance(Duration::from_secs(3000));
    assert_eq!(e.som.warn_expiring_authorizations().await.unwrap(), 1);
    assert_eq!(e.som.warn_expiring_authorizations().await.unwrap(), 0);
    assert_eq!(e.som.expire_authorizations().await.unwrap(), 0);

    // Run out: a second system on the same database (another process's dispatcher) races
    // this one; the authorisation is released once.
    clock.advance(Duration::from_secs(601));
    let mut cfg = config(&e._store);
    cfg.authorization_ttl = Duration::from_secs(3600);
    let other = OrderSystem::builder().config(cfg).provider(e.mock.clone()).clock(clock.clone()).build().await.unwrap();
    let rounds: Vec<_> = (0..8)
        .map(|i| {
            let som = if i % 2 == 0 { e.som.clone() } else { other.clone() };
            tokio::spawn(async move { som.expire_authorizations().await.unwrap() })
        })
        .collect();
    let mut expired = 0;
    for r in rounds {
        expired += r.await.unwrap();
    }
    assert_eq!(expired, 1);
    let gone = e.som.payment(alice, p.id).await.unwrap();
    assert_eq!((gone.status, gone.settlement), (PaymentStatus::Expired, None));
    assert_eq!(e.som.order(alice, p.order_id).await.unwrap().status, OrderStatus::Cancelled);
    assert_eq!(e.mock.cancelled(), vec![p.provider_payment_id.clone()]);
    assert!(matches!(e.som.capture_payment(Caller::System, p.id).await, Err(Error::Conflict(_))));
    // The captured one was never touched.
    assert_eq!(e.som.payment(alice, captured.id).await.unwrap().status, PaymentStatus::Success);
    let delivered = {
        while e.som.dispatch_once().await.unwrap() > 0 {}
        e.notes.delivered()
    };
    let alerts: Vec<_> = delivered.iter().filter_map(|n| n.message.alert.clone()).collect();
    assert_eq!(
        alerts,
        [format!("authorization_expiring:payment:{}", p.id), format!("authorization_expired:payment:{}", p.id)]
    );
    let voided = delivered.iter().filter(|n| n.kind.as_str() == "payment_voided").count();
    assert_eq!(voided, 1);
}

async fn a_capture_left_by_a_crash_is_finished_once_after_restart(backend: Backend) {
    let store = Store::new(backend).await;
    let (alice, pid);
    {
        let mock = Arc::new(MockProvider::new(2));
        let som = OrderSystem::builder().config(config(&store)).provider(mock.clone()).build().await.unwrap();
        alice = signed_up(&som, "alice").await;
        let p = authorised(&som, alice, "mock_success").await;
        pid = p.id;
        // The provider's answer never comes: the capture stays claimed, nothing else may end it.
        mock.script_capture([ProviderError::Transient("connection reset".into())]);
        let err = som.capture_payment(Caller::System, pid).amount("120.00").await.unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        let claimed = som.payment(alice, pid).await.unwrap();
        assert_eq!(claimed.status, PaymentStatus::Authorized);
        assert_eq!(claimed.settlement.map(|s| s.amount.amount_string()), Some("120.00".into()));
        assert!(matches!(som.capture_payment(Caller::System, pid).await, Err(Error::Conflict(_))));
        assert!(matches!(som.void_payment(alice, pid).await, Err(Error::Conflict(_))));
        assert_eq!(som.expire_authorizations().await.unwrap(), 0);
    }
    let mock = Arc::new(MockProvider::new(2));
    let som = OrderSystem::builder().config(config(&store)).provider(mock.clone()).build().await.unwrap();
    assert_eq!(som.recover_settlements(Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(som.recover_settlements(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(som.recover_settlements(Duration::ZERO).await.unwrap(), 0);
    let done = som.payment(alice, pid).await.unwrap();
    assert_eq!((done.status, done.captured.amount_string()), (PaymentStatus::Success, "120.00".into()));
    assert_eq!(mock.captures_made(), (1, 12000));
    assert_eq!(mock.capture_calls(), 1);
    assert_eq!(som.order(alice, done.order_id).await.unwrap().status, OrderStatus::Paid);
}

async fn provider_events_authorise_capture_and_release_once(backend: Backend) {
    let e = env(backend).await;
    let alice = signed_up(&e.som, "alice").await;
    let event = |id: &str, effect: EventEffect| ProviderEvent {
        provider: "mock".into(),
        id: id.into(),
        kind: "test".into(),
        effect,
    };
    let order = e.som.create_order(alice, seed_order()).await.unwrap();
    let p = e.som.initiate_payment(alice, order.id).capture(CaptureMethod::Manual).await.unwrap();
    let ppid = p.provider_payment_id.clone();
    // Authorised by the payer at the provider (3-D Secure finished there).
    let held = |amount_minor| EventEffect::PaymentAuthorized {
        provider_payment_id: ppid.clone(),
        amount_minor,
        currency: "USD".into(),
    };
    let r = e.som.apply_provider_event(event("evt_wrong", held(1))).await.unwrap();
    assert_eq!(r.outcome, EventOutcome::Mismatch);
    let r = e.som.apply_provider_event(event("evt_auth", held(25000))).await.unwrap();
    assert_eq!(r.outcome, EventOutcome::Applied);
    assert_eq!(e.som.payment(alice, p.id).await.unwrap().status, PaymentStatus::Authorized);
    assert_eq!(
        e.som.apply_provider_event(event("evt_auth", held(25000))).await.unwrap().outcome,
        EventOutcome::Duplicate
    );
    // Captured in part in the provider's dashboard.
    let captured = |amount_minor| EventEffect::PaymentSucceeded {
        provider_payment_id: ppid.clone(),
        amount_minor,
        currency: "USD".into(),
    };
    let r = e.som.apply_provider_event(event("evt_over", captured(25001))).await.unwrap();
    assert_eq!(r.outcome, EventOutcome::Mismatch);
    let r = e.som.apply_provider_event(event("evt_cap", captured(20000))).await.unwrap();
    assert_eq!(r.outcome, EventOutcome::Applied);
    let done = e.som.payment(alice, p.id).await.unwrap();
    assert_eq!((done.status, done.captured.amount_string()), (PaymentStatus::Success, "200.00".into()));
    let r = e.som.apply_provider_event(event("evt_cap_again", captured(20000))).await.unwrap();
    assert_eq!(r.outcome, EventOutcome::Ignored);
    // The provider's record of releasing the uncaptured 50.00 is not a refund.
    let release = |id: &str, amount_minor| EventEffect::Refunded {
        provider_payment_id: ppid.clone(),
        refunds: vec![som_core::payment::RefundReport {
            provider_refund_id: id.into(),
            amount_minor,
            currency: "USD".into(),
            succeeded: true,
            failed: false,
            som_key: None,
        }],
    };
    let r = e.som.apply_provider_event(event("evt_release", release("re_release", 5000))).await.unwrap();
    assert_eq!(r.outcome, EventOutcome::Ignored, "{r:?}");
    let kept = e.som.payment(alice, p.id).await.unwrap();
    assert_eq!((kept.status, kept.refunded.amount_string()), (PaymentStatus::Success, "0.00".into()));
    // A refund made at the provider of another amount is recorded as one.
    let r = e.som.apply_provider_event(event("evt_refund", release("re_real", 2000))).await.unwrap();
    assert_eq!(r.outcome, EventOutcome::Applied, "{r:?}");
    assert_eq!(e.som.payment(alice, p.id).await.unwrap().refunded.amount_string(), "20.00");
    assert!(e.mock.refunds_made().0 == 0, "a capture SOM recorded is not returned");

    // Released at the provider when it ran out there.
    let q = authorised(&e.som, alice, "mock_success").await;
    let canceled = EventEffect::PaymentCanceled { provider_payment_id: q.provider_payment_id.clone(), expired: true };
    assert_eq!(
        e.som.apply_provider_event(event("evt_exp", canceled.clone())).await.unwrap().outcome,
        EventOutcome::Applied
    );
    assert_eq!(e.som.payment(alice, q.id).await.unwrap().status, PaymentStatus::Expired);
    assert_eq!(e.som.order(alice, q.order_id).await.unwrap().status, OrderStatus::Cancelled);
    assert_eq!(e.som.apply_provider_event(event("evt_exp2", canceled)).await.unwrap().outcome, EventOutcome::Ignored);
}
