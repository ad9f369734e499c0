use super::*;

fn provider(webhook_secret: Option<&str>) -> StripeProvider {
    StripeProvider::new(StripeConfig {
        secret_key: Secret::new("sk_test_123"),
        webhook_secret: webhook_secret.map(Secret::new),
        api_base: "http://127.0.0.1:9".into(),
        timeout: Duration::from_secs(1),
    })
    .unwrap()
}

#[test]
fn configuration_is_checked() {
    let config = |key: &str, base: &str| StripeConfig {
        secret_key: Secret::new(key),
        webhook_secret: None,
        api_base: base.into(),
        timeout: Duration::from_secs(1),
    };
    assert!(StripeProvider::new(config("pk_test_1", DEFAULT_API_BASE)).is_err(), "a publishable key");
    assert!(StripeProvider::new(config("", DEFAULT_API_BASE)).is_err());
    assert!(StripeProvider::new(config("sk_test_1", "ftp://x")).is_err());
    assert!(StripeProvider::new(config("sk_test_1", DEFAULT_API_BASE)).is_ok());
    let debug = format!("{:?}", provider(Some("whsec_0123456789abcdef")));
    assert!(!debug.contains("sk_test_123") && !debug.contains("whsec_0123"), "{debug}");
}

/// Stripe's documented shapes (https://docs.stripe.com/api/payment_intents/object): a
/// `latest_charge` id string, `requires_action` with `redirect_to_url`, and a card error's
/// `last_payment_error` with `decline_code`.
#[test]
fn intent_states_map_to_outcomes() {
    let captured = serde_json::json!({"id": "pi_1", "status": "succeeded", "latest_charge": "ch_1"});
    assert_eq!(
        intent_outcome(&captured),
        Some(Ok(Confirmation::Captured(ProviderCapture { capture_id: "ch_1".into() })))
    );
    let expanded = serde_json::json!({"id": "pi_1", "status": "succeeded", "latest_charge": {"id": "ch_2"}});
    assert_eq!(
        intent_outcome(&expanded),
        Some(Ok(Confirmation::Captured(ProviderCapture { capture_id: "ch_2".into() })))
    );
    let action = serde_json::json!({"type": "redirect_to_url",
        "redirect_to_url": {"url": "https://hooks.stripe.com/3d_secure_2/authenticate", "return_url": "https://shop.example/done"}});
    let waiting = serde_json::json!({"id": "pi_1", "status": "requires_action", "next_action": action});
    assert_eq!(intent_outcome(&waiting), Some(Ok(Confirmation::Pending { next_action: Some(action) })));
    let declined = serde_json::json!({"id": "pi_1", "status": "requires_payment_method",
        "last_payment_error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds."}});
    assert_eq!(
        intent_outcome(&declined),
        Some(Err(ProviderError::Declined {
            code: "insufficient_funds".into(),
            message: "Your card has insufficient funds.".into()
        }))
    );
    let fresh = serde_json::json!({"id": "pi_1", "status": "requires_payment_method", "last_payment_error": null});
    assert_eq!(intent_outcome(&fresh), None);
    assert_eq!(intent_outcome(&serde_json::json!({"id": "pi_1", "status": "requires_confirmation"})), None);
}

#[test]
fn http_failures_map_to_provider_errors() {
    let api = |status: u16, code: Option<&str>, decline: Option<&str>| Failure::Api {
        status,
        error: ApiError {
            code: code.map(str::to_owned),
            decline_code: decline.map(str::to_owned),
            message: Some("words".into()),
        },
    };
    assert_eq!(
        api(402, Some("card_declined"), Some("stolen_card")).into_provider_error(),
        ProviderError::Declined { code: "stolen_card".into(), message: "words".into() }
    );
    assert_eq!(
        api(402, Some("card_declined"), None).into_provider_error(),
        ProviderError::Declined { code: "card_declined".into(), message: "words".into() }
    );
    for status in [401, 409, 429, 500, 503] {
        assert!(matches!(api(status, None, None).into_provider_error(), ProviderError::Transient(_)), "{status}");
    }
    assert!(matches!(Failure::Transport("timeout".into()).into_provider_error(), ProviderError::Transient(_)));
    assert_eq!(api(400, None, None).into_provider_error(), ProviderError::InvalidRequest("words".into()));
}

/// Manual capture's states and events, as Stripe documents them.
#[test]
fn authorisations_and_their_release_as_stripe_documents_them() {
    let held = serde_json::json!({"id": "pi_1", "status": "requires_capture", "capture_method": "manual"});
    assert_eq!(intent_outcome(&held), Some(Ok(Confirmation::Authorized)));
    let event = |kind: &str, object: Value| {
        let body = serde_json::json!({"id": "evt_1", "type": kind, "data": {"object": object}});
        parse_event_json(body.to_string().as_bytes()).unwrap().effect
    };
    let capturable = event(
        "payment_intent.amount_capturable_updated",
        serde_json::json!({"id": "pi_1", "status": "requires_capture", "amount_capturable": 25000, "currency": "usd"}),
    );
    assert_eq!(
        capturable,
        EventEffect::PaymentAuthorized {
            provider_payment_id: "pi_1".into(),
            amount_minor: 25000,
            currency: "USD".into()
        }
    );
    let expired = event(
        "payment_intent.canceled",
        serde_json::json!({"id": "pi_1", "status": "canceled", "cancellation_reason": "automatic"}),
    );
    assert_eq!(expired, EventEffect::PaymentCanceled { provider_payment_id: "pi_1".into(), expired: true });
    let voided = event(
        "payment_intent.canceled",
        serde_json::json!({"id": "pi_1", "status": "canceled", "cancellation_reason": "requested_by_customer"}),
    );
    assert_eq!(voided, EventEffect::PaymentCanceled { provider_payment_id: "pi_1".into(), expired: false });
}

/// Events as Stripe documents them (https://docs.stripe.com/api/events/types); a
/// Stripe-compatible test server used for SOM's end-to-end tests sends no refund events,
/// so these shapes are checked here.
#[test]
fn refund_events_as_stripe_documents_them() {
    let refund_created = serde_json::json!({
        "id": "evt_1", "object": "event", "type": "refund.created", "api_version": "2024-06-20",
        "data": {"object": {"id": "re_1", "object": "refund", "amount": 500, "currency": "usd",
            "payment_intent": "pi_1", "charge": "ch_1", "status": "succeeded", "metadata": {}}}
    });
    let event = parse_event_json(refund_created.to_string().as_bytes()).unwrap();
    assert_eq!((event.id.as_str(), event.kind.as_str()), ("evt_1", "refund.created"));
    assert_eq!(
        event.effect,
        EventEffect::Refunded {
            provider_payment_id: "pi_1".into(),
            refunds: vec![RefundReport {
                provider_refund_id: "re_1".into(),
                amount_minor: 500,
                currency: "USD".into(),
                succeeded: true,
                failed: false,
                som_key: None
            }]
        }
    );
    // An older API version's charge.refunded lists the charge's refunds, SOM's own among them.
    let charge_refunded = serde_json::json!({
        "id": "evt_2", "object": "event", "type": "charge.refunded", "api_version": "2020-08-27",
        "data": {"object": {"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount": 2000,
            "amount_refunded": 1500, "refunded": false,
            "refunds": {"object": "list", "data": [
                {"id": "re_1", "amount": 500, "currency": "usd", "status": "succeeded", "payment_intent": "pi_1",
                 "metadata": {"som_refund": "som-refund-4"}},
                {"id": "re_2", "amount": 1000, "currency": "usd", "status": "pending", "payment_intent": "pi_1",
                 "metadata": {}}]}}}
    });
    let EventEffect::Refunded { provider_payment_id, refunds } =
        parse_event_json(charge_refunded.to_string().as_bytes()).unwrap().effect
    else {
        panic!("expected refunds")
    };
    assert_eq!(provider_payment_id, "pi_1");
    assert_eq!(refunds.len(), 2);
    assert_eq!(refunds[0].som_key.as_deref(), Some("som-refund-4"));
    assert!(!refunds[1].succeeded);
    let other = serde_json::json!({"id": "evt_3", "type": "customer.created", "data": {"object": {"id": "cus_1"}}});
    assert_eq!(parse_event_json(other.to_string().as_bytes()).unwrap().effect, EventEffect::Ignored);
    assert!(parse_event_json(b"{\"type\": \"x\"}").is_err(), "no id");
    assert!(parse_event_json(b"not json").is_err());
}

/// A succeeded event must say so itself: its intent's status and amount are read, never
/// assumed from the event type.
#[test]
fn a_succeeded_event_is_read_with_its_status_and_amount() {
    let event = |object: serde_json::Value| {
        let body = serde_json::json!({"id": "evt_9", "type": "payment_intent.succeeded", "data": {"object": object}});
        parse_event_json(body.to_string().as_bytes()).unwrap().effect
    };
    let still_waiting = event(serde_json::json!({"id": "pi_1", "status": "requires_payment_method",
        "amount": 1, "currency": "jpy"}));
    assert!(matches!(still_waiting, EventEffect::Contradictory { .. }), "{still_waiting:?}");
    let no_amount = event(serde_json::json!({"id": "pi_1", "status": "succeeded"}));
    assert!(matches!(no_amount, EventEffect::Contradictory { .. }), "{no_amount:?}");
    assert_eq!(
        event(serde_json::json!({"id": "pi_1", "status": "succeeded", "amount": 2500, "amount_received": 2000,
            "currency": "eur"})),
        EventEffect::PaymentSucceeded {
            provider_payment_id: "pi_1".into(),
            amount_minor: 2000,
            currency: "EUR".into()
        }
    );
}

/// Refund objects as Stripe documents them (https://docs.stripe.com/api/refunds/object):
/// only `succeeded` is finished; `pending` and `requires_action` are not yet; `failed` and
/// `canceled` returned nothing.
#[test]
fn refund_states_map_to_answers() {
    let refund = |status: &str| {
        serde_json::json!({"id": "re_1", "object": "refund", "amount": 500,
        "currency": "usd", "payment_intent": "pi_1", "status": status, "failure_reason": "expired_or_canceled_card"})
    };
    assert_eq!(
        refund_answer(&refund("succeeded")),
        Ok(ProviderRefund { provider_refund_id: "re_1".into(), pending: false })
    );
    for waiting in ["pending", "requires_action"] {
        assert_eq!(
            refund_answer(&refund(waiting)),
            Ok(ProviderRefund { provider_refund_id: "re_1".into(), pending: true })
        );
    }
    for ended in ["failed", "canceled"] {
        assert!(matches!(refund_answer(&refund(ended)), Err(ProviderError::Declined { .. })), "{ended}");
    }
    let failed_event = serde_json::json!({"id": "evt_7", "type": "refund.updated", "data": {"object": {
        "id": "re_1", "amount": 500, "currency": "usd", "payment_intent": "pi_1", "status": "failed",
        "metadata": {"som_refund": "som-refund-3"}}}});
    let EventEffect::Refunded { refunds, .. } = parse_event_json(failed_event.to_string().as_bytes()).unwrap().effect
    else {
        panic!("expected refunds")
    };
    assert!(refunds[0].failed && !refunds[0].succeeded);
    assert_eq!(refunds[0].som_key.as_deref(), Some("som-refund-3"));
}

#[test]
fn events_must_be_signed_with_the_endpoint_secret() {
    let secret = "whsec_0123456789abcdef";
    let body = serde_json::json!({"id": "evt_1", "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_1", "status": "succeeded", "amount": 2500, "amount_received": 2500,
            "currency": "usd"}}})
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let good = crate::signature::sign(secret.as_bytes(), now, body.as_bytes());
    let event = provider(Some(secret)).parse_event(body.as_bytes(), &good).unwrap();
    assert_eq!(
        event.effect,
        EventEffect::PaymentSucceeded {
            provider_payment_id: "pi_1".into(),
            amount_minor: 2500,
            currency: "USD".into()
        }
    );
    let wrong = crate::signature::sign(b"whsec_another_secret_entirely", now, body.as_bytes());
    assert!(matches!(provider(Some(secret)).parse_event(body.as_bytes(), &wrong), Err(EventError::Rejected(_))));
    let stale = crate::signature::sign(secret.as_bytes(), now - 301, body.as_bytes());
    assert!(matches!(provider(Some(secret)).parse_event(body.as_bytes(), &stale), Err(EventError::Rejected(_))));
    assert!(matches!(provider(Some(secret)).parse_event(body.as_bytes(), ""), Err(EventError::Rejected(_))));
    assert!(matches!(provider(None).parse_event(body.as_bytes(), &good), Err(EventError::Unsupported(_))));
}
