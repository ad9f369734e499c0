//! Fulfilments and returns: quantities never exceed what was ordered or delivered under
//! concurrency, every step writes its event and outbox rows with it, and a received return
//! refunds once.

use super::*;
use crate::domain::{
    FulfillmentState, FulfillmentStatus, FulfillmentStep, ItemQuantity, ReturnRefund, ReturnStatus, ReturnStep,
    Tracking,
};

fn shipped_notify(user: &crate::domain::User) -> FulfillmentNotify {
    let user = user.clone();
    Box::new(move |o, f| {
        let kind = match f.status {
            FulfillmentStatus::Shipped => EventKind::FulfillmentShipped,
            FulfillmentStatus::Delivered => EventKind::FulfillmentDelivered,
            _ => return Vec::new(),
        };
        vec![NewNotification { channel: "log".into(), message: Message::fulfillment(kind, &user, o, f) }]
    })
}

fn return_notify(kind: EventKind, user: &crate::domain::User) -> ReturnNotify {
    let user = user.clone();
    Box::new(move |o, r| {
        vec![NewNotification { channel: "log".into(), message: Message::return_step(kind, &user, o, r) }]
    })
}

async fn paid_order(s: &DynStorage, u: &crate::domain::User) -> (Order, Payment) {
    let o = order(s, u).await;
    let p = inserted(s, &o, &format!("ful{}", o.id)).await;
    let Transition::Applied(p) = complete(s, &p, PaymentOutcome::Succeeded, u).await else { panic!("not paid") };
    (s.order_by_id(o.id).await.unwrap().unwrap(), p)
}

fn fulfil(o: &Order, items: Option<Vec<ItemQuantity>>) -> NewFulfillmentRecord {
    NewFulfillmentRecord {
        order_id: o.id,
        items,
        tracking: Tracking::default(),
        actor: Actor::System,
        created_at: Utc::now(),
    }
}

async fn step(s: &DynStorage, u: &crate::domain::User, f: &Fulfillment, step: FulfillmentStep) -> Fulfillment {
    match s.advance_fulfillment(f.id, step, Actor::System, Utc::now(), shipped_notify(u)).await.unwrap() {
        Transition::Applied(f) => f,
        Transition::NotApplied(f) => panic!("step not applied to {f:?}"),
    }
}

async fn outbox_kinds(s: &DynStorage, o: &Order) -> Vec<EventKind> {
    let query = NotificationQuery { order: Some(o.id), limit: 100, ..NotificationQuery::default() };
    s.list_notifications(query).await.unwrap().into_iter().map(|n| n.kind).collect()
}

pub async fn concurrent_fulfilments_never_exceed_the_order(s: DynStorage) {
    let u = user(&s, "fulfil").await;
    let unpaid = order(&s, &u).await;
    let refused = s.create_fulfillment(fulfil(&unpaid, None), Box::new(|_, _| Vec::new())).await;
    assert!(matches!(refused, Err(Error::Conflict(_))), "an unpaid order is not fulfilled: {refused:?}");

    let (o, _) = paid_order(&s, &u).await;
    let widget = o.item_id(0);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (s, o) = (Arc::clone(&s), o.clone());
            tokio::spawn(async move {
                let one = vec![ItemQuantity { item_id: widget, quantity: 1 }];
                s.create_fulfillment(fulfil(&o, Some(one)), Box::new(|_, _| Vec::new())).await
            })
        })
        .collect();
    let mut made = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => made += 1,
            Err(Error::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(made, 2, "two widgets were ordered");
    let all = s.fulfillments_for_order(o.id).await.unwrap();
    let held: i64 = all.iter().flat_map(|f| &f.items).map(|l| l.quantity).sum();
    assert_eq!((all.len(), held), (2, 2));
    // An item of another order, or more than is left, is refused; everything left is one gadget.
    let foreign = vec![ItemQuantity { item_id: unpaid.item_id(1), quantity: 1 }];
    let foreign = s.create_fulfillment(fulfil(&o, Some(foreign)), Box::new(|_, _| Vec::new())).await;
    assert!(matches!(foreign, Err(Error::Unprocessable(_))), "{foreign:?}");
    let rest = s.create_fulfillment(fulfil(&o, None), Box::new(|_, _| Vec::new())).await.unwrap();
    assert_eq!(rest.items, vec![ItemQuantity { item_id: o.item_id(1), quantity: 1 }]);
    assert!(matches!(
        s.create_fulfillment(fulfil(&o, None), Box::new(|_, _| Vec::new())).await,
        Err(Error::Conflict(_))
    ));
    // A cancelled fulfilment gives its items back.
    let cancelled = step(&s, &u, &rest, FulfillmentStep::Cancel).await;
    assert_eq!(cancelled.status, FulfillmentStatus::Cancelled);
    let again = s.create_fulfillment(fulfil(&o, None), Box::new(|_, _| Vec::new())).await.unwrap();
    assert_eq!(again.items, rest.items);
}

pub async fn fulfilment_steps_move_the_order_with_their_event_and_outbox_rows(s: DynStorage) {
    let u = user(&s, "shipper").await;
    let (o, _) = paid_order(&s, &u).await;
    let events_before = s.order_events(o.id).await.unwrap().len();
    let first = vec![ItemQuantity { item_id: o.item_id(0), quantity: 2 }];
    let f1 = s.create_fulfillment(fulfil(&o, Some(first)), Box::new(|_, _| Vec::new())).await.unwrap();
    let f2 = s.create_fulfillment(fulfil(&o, None), Box::new(|_, _| Vec::new())).await.unwrap();
    assert_eq!(s.order_by_id(o.id).await.unwrap().unwrap().fulfillment, FulfillmentState::Unfulfilled);

    let tracking = Tracking { carrier: Some("UPS".into()), number: Some("1Z999".into()), url: None };
    let shipped = step(&s, &u, &f1, FulfillmentStep::Ship(tracking.clone())).await;
    assert_eq!((shipped.status, &shipped.tracking), (FulfillmentStatus::Shipped, &tracking));
    assert!(shipped.shipped_at.is_some());
    assert_eq!(s.order_by_id(o.id).await.unwrap().unwrap().fulfillment, FulfillmentState::PartiallyFulfilled);
    let again =
        s.advance_fulfillment(f1.id, FulfillmentStep::Ship(tracking), Actor::System, Utc::now(), shipped_notify(&u));
    assert!(matches!(again.await.unwrap(), Transition::NotApplied(f) if f.status == FulfillmentStatus::Shipped));
    step(&s, &u, &f2, FulfillmentStep::Ship(Tracking::default())).await;
    assert_eq!(s.order_by_id(o.id).await.unwrap().unwrap().fulfillment, FulfillmentState::Fulfilled);
    step(&s, &u, &f1, FulfillmentStep::Deliver).await;
    step(&s, &u, &f2, FulfillmentStep::Deliver).await;
    let delivered = s.order_by_id(o.id).await.unwrap().unwrap();
    assert_eq!((delivered.fulfillment, delivered.status), (FulfillmentState::Delivered, OrderStatus::Paid));
    let cancel = s.advance_fulfillment(f2.id, FulfillmentStep::Cancel, Actor::System, Utc::now(), shipped_notify(&u));
    assert!(matches!(cancel.await.unwrap(), Transition::NotApplied(_)));

    // Every change wrote its event; each shipment and delivery its notification, once.
    assert_eq!(s.order_events(o.id).await.unwrap().len(), events_before + 6);
    let kinds = outbox_kinds(&s, &o).await;
    for kind in [EventKind::FulfillmentShipped, EventKind::FulfillmentDelivered] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), 2, "{kind:?} in {kinds:?}");
    }
    let listed = s
        .list_fulfillments(AfterPaymentQuery { status: Some(FulfillmentStatus::Delivered), after: None, limit: 10 })
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|f| f.id).collect::<Vec<_>>(), vec![f1.id, f2.id]);
}

pub async fn received_returns_refund_once_and_never_more_than_was_captured(s: DynStorage) {
    let u = user(&s, "returner").await;
    let (o, p) = paid_order(&s, &u).await;
    let all = s.create_fulfillment(fulfil(&o, None), Box::new(|_, _| Vec::new())).await.unwrap();
    let widget = |q| vec![ItemQuantity { item_id: o.item_id(0), quantity: q }];
    let ask = |items| NewReturnRecord {
        order_id: o.id,
        items,
        reason: Some("too big".into()),
        actor: Actor::User(u.id),
        created_at: Utc::now(),
    };
    let early = s.request_return(ask(widget(1)), return_notify(EventKind::ReturnRequested, &u)).await;
    assert!(matches!(early, Err(Error::Conflict(_))), "nothing was delivered yet: {early:?}");
    step(&s, &u, &all, FulfillmentStep::Ship(Tracking::default())).await;
    step(&s, &u, &all, FulfillmentStep::Deliver).await;
    let too_many = s.request_return(ask(widget(3)), return_notify(EventKind::ReturnRequested, &u)).await;
    assert!(matches!(too_many, Err(Error::Conflict(_))), "{too_many:?}");
    let r = s.request_return(ask(widget(1)), return_notify(EventKind::ReturnRequested, &u)).await.unwrap();
    assert_eq!(r.status, ReturnStatus::Requested);
    let step_return = |step: ReturnStep| {
        let s = Arc::clone(&s);
        let u = u.clone();
        let kind = match step {
            ReturnStep::Approve => EventKind::ReturnApproved,
            ReturnStep::Reject { .. } => EventKind::ReturnRejected,
            ReturnStep::Receive { .. } => EventKind::ReturnReceived,
        };
        async move { s.advance_return(r.id, step, Actor::System, Utc::now(), return_notify(kind, &u)).await }
    };
    // Receiving needs an approval first.
    let receive = || ReturnStep::Receive { refund: Some(ReturnRefund { amount: None }) };
    assert!(matches!(step_return(receive()).await.unwrap(), Transition::NotApplied(_)));
    assert!(matches!(step_return(ReturnStep::Approve).await.unwrap(), Transition::Applied(_)));
    // A staff-set amount above what is left to refund is refused and changes nothing.
    let above =
        ReturnStep::Receive { refund: Some(ReturnRefund { amount: Some(Money::from_minor(25_001, Currency::USD)) }) };
    assert!(matches!(step_return(above).await, Err(Error::Conflict(_))));

    let tasks: Vec<_> = (0..16).map(|_| tokio::spawn(step_return(receive()))).collect();
    let mut refunds = Vec::new();
    for t in tasks {
        if let Transition::Applied(change) = t.await.unwrap().unwrap() {
            refunds.push(change.refund.expect("a refund"));
        }
    }
    assert_eq!(refunds.len(), 1, "received once");
    let refund = &refunds[0];
    assert_eq!((refund.amount, refund.payment_id), (Money::from_minor(10_000, Currency::USD), p.id));
    assert_eq!(s.refunds_for_payment(p.id).await.unwrap().len(), 1);
    let received = s.return_by_id(r.id).await.unwrap().unwrap();
    assert_eq!((received.status, received.refund_id), (ReturnStatus::Received, Some(refund.id)));
    assert_eq!(s.order_by_id(o.id).await.unwrap().unwrap().fulfillment, FulfillmentState::PartiallyReturned);

    let done = s
        .finish_refund(
            refund.id,
            RefundOutcome::Succeeded { provider_refund_id: "re_1".into() },
            Utc::now(),
            Box::new(|_, _, _| Vec::new()),
        )
        .await
        .unwrap();
    assert!(matches!(done, Transition::Applied(r) if r.status == RefundStatus::Succeeded));
    assert_eq!(s.return_by_id(r.id).await.unwrap().unwrap().status, ReturnStatus::Refunded);
    let order = s.order_by_id(o.id).await.unwrap().unwrap();
    assert_eq!((order.status, order.refunded.minor()), (OrderStatus::PartiallyRefunded, 10_000));
    let kinds = outbox_kinds(&s, &o).await;
    for kind in [EventKind::ReturnRequested, EventKind::ReturnApproved, EventKind::ReturnReceived] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), 1, "{kind:?} in {kinds:?}");
    }

    // A refund the provider reverses later puts the return back to RECEIVED, to be received again.
    let reversed = s.reverse_refund(refund.id, "the bank refused it", Utc::now()).await.unwrap();
    assert!(matches!(reversed, Transition::Applied(_)));
    assert_eq!(s.return_by_id(r.id).await.unwrap().unwrap().status, ReturnStatus::Received);

    // The rest comes back in a second return; its refund is what is left, not more.
    let rest =
        vec![ItemQuantity { item_id: o.item_id(0), quantity: 1 }, ItemQuantity { item_id: o.item_id(1), quantity: 1 }];
    let second = s.request_return(ask(rest), return_notify(EventKind::ReturnRequested, &u)).await.unwrap();
    s.advance_return(
        second.id,
        ReturnStep::Approve,
        Actor::System,
        Utc::now(),
        return_notify(EventKind::ReturnApproved, &u),
    )
    .await
    .unwrap();
    let Transition::Applied(change) = s
        .advance_return(second.id, receive(), Actor::System, Utc::now(), return_notify(EventKind::ReturnReceived, &u))
        .await
        .unwrap()
    else {
        panic!("not received")
    };
    assert_eq!(change.refund.map(|r| r.amount.minor()), Some(15_000));
    assert_eq!(s.order_by_id(o.id).await.unwrap().unwrap().fulfillment, FulfillmentState::Returned);
    let open = s.list_returns(AfterPaymentQuery { status: Some(ReturnStatus::Received), after: None, limit: 10 }).await;
    assert_eq!(
        open.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![r.id, second.id],
        "the reversed one is received again"
    );
}

pub async fn concurrent_returns_never_exceed_what_was_delivered(s: DynStorage) {
    let u = user(&s, "many_returns").await;
    let (o, _) = paid_order(&s, &u).await;
    let all = s.create_fulfillment(fulfil(&o, None), Box::new(|_, _| Vec::new())).await.unwrap();
    step(&s, &u, &all, FulfillmentStep::Ship(Tracking::default())).await;
    step(&s, &u, &all, FulfillmentStep::Deliver).await;
    let widget = o.item_id(0);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (s, u) = (Arc::clone(&s), u.clone());
            let record = NewReturnRecord {
                order_id: o.id,
                items: vec![ItemQuantity { item_id: widget, quantity: 1 }],
                reason: None,
                actor: Actor::User(u.id),
                created_at: Utc::now(),
            };
            tokio::spawn(async move { s.request_return(record, return_notify(EventKind::ReturnRequested, &u)).await })
        })
        .collect();
    let mut made = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => made += 1,
            Err(Error::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(made, 2, "two widgets were delivered");
    let held: i64 = s.returns_for_order(o.id).await.unwrap().iter().flat_map(|r| &r.items).map(|l| l.quantity).sum();
    assert_eq!(held, 2);
}
