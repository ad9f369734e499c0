//! The fulfilment and return rules.
use super::*;
use crate::domain::{Currency, ItemInput, NewOrder, OrderInput};

fn order() -> Order {
    let input = OrderInput {
        items: vec![
            ItemInput { name: "a".into(), quantity: 2, price: "10.00".into() },
            ItemInput { name: "b".into(), quantity: 1, price: "5.00".into() },
        ],
        currency: None,
    };
    NewOrder::parse(&input, Currency::USD).map(|n| n.placed(OrderId::new(7), UserId::new(1), Utc::now())).unwrap()
}

fn fulfilment(order: &Order, status: FulfillmentStatus, lines: &[(usize, i64)]) -> Fulfillment {
    Fulfillment {
        id: FulfillmentId::new(1),
        order_id: order.id,
        user_id: order.user_id,
        status,
        items: lines.iter().map(|(i, q)| ItemQuantity { item_id: order.item_id(*i), quantity: *q }).collect(),
        tracking: Tracking::default(),
        actor: Actor::System,
        created_at: Utc::now(),
        shipped_at: None,
        delivered_at: None,
        updated_at: Utc::now(),
    }
}

#[test]
fn item_ids_are_unique_across_orders_and_found_again() {
    let o = order();
    assert_eq!((o.item_id(0).get(), o.item_id(1).get()), (7001, 7002));
    assert_eq!(o.item_index(ItemId::new(7002)), Some(1));
    for foreign in [6001, 7003, 7000, 8001, -1] {
        assert_eq!(o.item_index(ItemId::new(foreign)), None, "{foreign}");
    }
}

#[test]
fn fulfilments_never_exceed_what_was_ordered() {
    let o = order();
    let line = |i, q| ItemQuantity { item_id: o.item_id(i), quantity: q };
    let one = [fulfilment(&o, FulfillmentStatus::Pending, &[(0, 1)])];
    assert_eq!(fulfillment_lines(&o, Some(&[line(0, 1)]), &one).map(|l| l.len()).ok(), Some(1));
    assert!(matches!(fulfillment_lines(&o, Some(&[line(0, 2)]), &one), Err(Error::Conflict(_))));
    // Everything left, by default; a cancelled fulfilment gives its items back.
    assert_eq!(fulfillment_lines(&o, None, &one).ok(), Some(vec![line(0, 1), line(1, 1)]));
    let cancelled = [fulfilment(&o, FulfillmentStatus::Cancelled, &[(0, 2), (1, 1)])];
    assert_eq!(fulfillment_lines(&o, None, &cancelled).ok(), Some(vec![line(0, 2), line(1, 1)]));
    let all = [fulfilment(&o, FulfillmentStatus::Shipped, &[(0, 2), (1, 1)])];
    assert!(matches!(fulfillment_lines(&o, None, &all), Err(Error::Conflict(_))));
    // Unknown, repeated and zero lines are the caller's mistakes.
    let foreign = ItemQuantity { item_id: ItemId::new(6001), quantity: 1 };
    assert!(matches!(fulfillment_lines(&o, Some(&[foreign]), &[]), Err(Error::Unprocessable(_))));
    assert!(matches!(fulfillment_lines(&o, Some(&[line(0, 1), line(0, 1)]), &[]), Err(Error::Unprocessable(_))));
    for bad in [vec![line(1, 0)], vec![], vec![foreign, line(1, 0)]] {
        assert!(matches!(fulfillment_lines(&o, Some(&bad), &[]), Err(Error::Validation(_))), "{bad:?}");
    }
}

#[test]
fn the_order_state_follows_its_parcels_and_returns() {
    let o = order();
    let state = |f: &[Fulfillment], r: &[Return]| FulfillmentState::of(&o, f, r);
    assert_eq!(state(&[], &[]), FulfillmentState::Unfulfilled);
    assert_eq!(state(&[fulfilment(&o, FulfillmentStatus::Pending, &[(0, 2)])], &[]), FulfillmentState::Unfulfilled);
    let part = fulfilment(&o, FulfillmentStatus::Shipped, &[(0, 1)]);
    assert_eq!(state(std::slice::from_ref(&part), &[]), FulfillmentState::PartiallyFulfilled);
    let rest = fulfilment(&o, FulfillmentStatus::Delivered, &[(0, 1), (1, 1)]);
    assert_eq!(state(&[part.clone(), rest.clone()], &[]), FulfillmentState::Fulfilled);
    let first = fulfilment(&o, FulfillmentStatus::Delivered, &[(0, 1)]);
    let both = [first, rest];
    assert_eq!(state(&both, &[]), FulfillmentState::Delivered);
    let ret = |status, lines: &[(usize, i64)]| Return {
        id: ReturnId::new(1),
        order_id: o.id,
        user_id: o.user_id,
        status,
        items: lines.iter().map(|(i, q)| ItemQuantity { item_id: o.item_id(*i), quantity: *q }).collect(),
        reason: None,
        note: None,
        refund_id: None,
        refund_amount: None,
        actor: Actor::System,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    assert_eq!(state(&both, &[ret(ReturnStatus::Requested, &[(0, 1)])]), FulfillmentState::Delivered);
    assert_eq!(state(&both, &[ret(ReturnStatus::Received, &[(0, 1)])]), FulfillmentState::PartiallyReturned);
    let all_back = [ret(ReturnStatus::Refunded, &[(0, 2), (1, 1)])];
    assert_eq!(state(&both, &all_back), FulfillmentState::Returned);
    // Returns are limited by what was delivered and what other returns hold.
    let asked = [ItemQuantity { item_id: o.item_id(0), quantity: 2 }];
    assert!(return_lines(&o, &asked, &[part], &[]).is_err());
    assert!(return_lines(&o, &asked, &both, &[]).is_ok());
    assert!(return_lines(&o, &asked, &both, &[ret(ReturnStatus::Requested, &[(0, 1)])]).is_err());
    assert!(return_lines(&o, &asked, &both, &[ret(ReturnStatus::Rejected, &[(0, 1)])]).is_ok());
}

#[test]
fn only_the_designed_steps_are_allowed() {
    use FulfillmentStatus::*;
    let ship = FulfillmentStep::Ship(Tracking::default());
    assert_eq!(Pending.apply(&ship).ok(), Some(Shipped));
    assert_eq!(Shipped.apply(&FulfillmentStep::Deliver).ok(), Some(Delivered));
    assert_eq!(Pending.apply(&FulfillmentStep::Cancel).ok(), Some(Cancelled));
    for (from, step) in
        [(Pending, FulfillmentStep::Deliver), (Shipped, FulfillmentStep::Cancel), (Delivered, ship.clone())]
    {
        assert!(from.apply(&step).is_err());
    }
    let receive = ReturnStep::Receive { refund: None };
    assert_eq!(ReturnStatus::Requested.apply(&ReturnStep::Approve).ok(), Some(ReturnStatus::Approved));
    assert_eq!(ReturnStatus::Approved.apply(&receive).ok(), Some(ReturnStatus::Received));
    assert!(ReturnStatus::Requested.apply(&receive).is_err());
    assert!(ReturnStatus::Refunded.apply(&receive).is_err());
    assert!(ReturnStatus::Received.apply(&ReturnStep::Reject { note: "x".into() }).is_err());
    assert_eq!(ReturnStatus::Received.refunded(), Some(ReturnStatus::Refunded));
}

#[test]
fn a_return_refunds_at_most_what_is_left() {
    let usd = |m| Money::from_minor(m, Currency::USD);
    assert_eq!(return_refund(usd(500), None, usd(300)).ok(), Some(usd(300)));
    assert_eq!(return_refund(usd(200), None, usd(300)).ok(), Some(usd(200)));
    assert_eq!(return_refund(usd(200), Some(usd(250)), usd(300)).ok(), Some(usd(250)));
    assert!(return_refund(usd(200), Some(usd(301)), usd(300)).is_err());
    assert!(return_refund(usd(200), None, usd(0)).is_err());
}

#[test]
fn tracking_urls_are_web_addresses() {
    assert!(Tracking::parse(Some("UPS"), Some("1Z"), Some("https://ups.example/t/1Z")).is_ok());
    for bad in ["javascript:alert(1)", "ftp://x", "https://", "http:// x"] {
        assert!(Tracking::parse(None, None, Some(bad)).is_err(), "{bad}");
    }
    let t = Tracking::parse(Some(" UPS "), Some(""), None).unwrap_or_default();
    assert_eq!((t.carrier.as_deref(), t.number), (Some("UPS"), None));
}
