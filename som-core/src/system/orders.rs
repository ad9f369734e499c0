//! Orders through the facade: place, read, list, cancel.

use super::*;

pub(super) fn not_found_order(id: OrderId) -> Error {
    Error::NotFound(format!("order {id}"))
}

pub(super) fn cancel_conflict(id: OrderId, e: &crate::domain::IllegalTransition) -> Error {
    match e.from {
        OrderStatus::Paid | OrderStatus::PartiallyRefunded => {
            Error::Conflict(format!("order {id}: {e}; refund its payment instead"))
        }
        _ => Error::Conflict(format!("order {id}: {e}")),
    }
}

pub(super) fn not_payable(id: OrderId, status: OrderStatus) -> Error {
    match status {
        OrderStatus::Paid => Error::Conflict(format!("order {id} is already paid")),
        other => Error::Conflict(format!("order {id} is {other} and cannot be paid")),
    }
}

impl OrderSystem {
    /// Places an order for `owner`: the owner themself, or staff acting for them.
    pub(super) async fn place_order(
        &self,
        caller: Caller,
        owner: UserId,
        input: OrderInput,
        idempotency_key: Option<&str>,
    ) -> Result<Order> {
        if !caller.can_access(owner) {
            return Err(Error::Forbidden("only staff may place orders for other users".into()));
        }
        let new = NewOrder::parse(&input, self.inner.config.currency).map_err(Error::Validation)?;
        let request = (owner, &input);
        self.idempotent(caller, "create_order", idempotency_key, &request, |slot| async move {
            let user = self.owner(owner).await?;
            let notify = self.order_notify(EventKind::OrderCreated, user);
            let (actor, at) = (caller.actor(), self.now());
            let order =
                self.write(move |s| async move { s.insert_order(owner, actor, new, at, notify, slot).await }).await?;
            self.inner.wake.notify_one();
            metrics::counter!("som_orders_created_total").increment(1);
            Ok(order)
        })
        .await
    }

    /// An order the caller may see (their own, or any for staff); `NotFound` otherwise.
    pub async fn order(&self, caller: Caller, id: OrderId) -> Result<Order> {
        self.may_lag(caller, self.order_now(caller, id)).await
    }

    /// [`OrderSystem::order`] as the primary has it, for the reads that decide a write.
    pub(super) async fn order_now(&self, caller: Caller, id: OrderId) -> Result<Order> {
        let order = self.inner.storage.order_by_id(id).await?.ok_or_else(|| not_found_order(id))?;
        if caller.can_access(order.user_id) { Ok(order) } else { Err(not_found_order(id)) }
    }

    /// A page of orders, newest first (see [`OrderListQuery`] for whose).
    pub async fn list_orders(&self, caller: Caller, query: OrderListQuery) -> Result<Page<Order>> {
        let limit = query.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(Error::invalid("limit", format!("must be between 1 and {MAX_PAGE_SIZE}")));
        }
        let before = match query.cursor.as_deref() {
            None => None,
            Some(c) => Some(c.parse::<OrderId>().map_err(|_| Error::invalid("cursor", "is not a valid cursor"))?),
        };
        if query.all_users && !caller.is_staff() {
            return Err(Error::Forbidden("only staff may list every user's orders".into()));
        }
        let search = match query.search.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(_) if !caller.is_staff() => return Err(Error::Forbidden("only staff may search orders".into())),
            Some(t) if t.chars().count() > Email::MAX_CHARS => {
                return Err(Error::invalid("q", format!("must be at most {} characters", Email::MAX_CHARS)));
            }
            Some(t) => {
                Some(OrderSearch { id: t.trim_start_matches('#').parse::<OrderId>().ok(), text: t.to_lowercase() })
            }
        };
        let user_id = match caller {
            _ if query.all_users => None,
            Caller::User { id, is_staff } => Some(if is_staff { query.user.unwrap_or(id) } else { id }),
            Caller::System => query.user,
        };
        let list = self.inner.storage.list_orders(OrderQuery {
            user_id,
            status: query.status,
            before,
            created_after: query.created_after,
            created_before: query.created_before,
            search,
            limit: limit + 1,
        });
        let items = self.may_lag(caller, list).await?;
        Ok(Page::of(items, limit, |o| o.id.to_string()))
    }

    /// The newest order of the caller (or, for staff, of `user`). `NotFound` when there is none.
    pub async fn latest_order(&self, caller: Caller, user: Option<UserId>) -> Result<Order> {
        let target = match caller {
            Caller::User { id, is_staff } => {
                if is_staff {
                    user.unwrap_or(id)
                } else {
                    id
                }
            }
            Caller::System => user.ok_or_else(|| Error::invalid("user", "is required"))?,
        };
        self.may_lag(caller, self.inner.storage.latest_order(target))
            .await?
            .ok_or_else(|| Error::NotFound("order".into()))
    }

    /// The order's status changes, oldest first.
    pub async fn order_history(&self, caller: Caller, id: OrderId) -> Result<Vec<OrderEvent>> {
        self.may_lag(caller, async {
            self.order_now(caller, id).await?;
            self.inner.storage.order_events(id).await
        })
        .await
    }

    /// `CREATED → CANCELLED` (owner or staff), voiding a PENDING payment. `Conflict` from any
    /// other status.
    pub(super) async fn cancel_order_now(
        &self,
        caller: Caller,
        id: OrderId,
        idempotency_key: Option<&str>,
    ) -> Result<Order> {
        self.idempotent(caller, "cancel_order", idempotency_key, &id, |slot| async move {
            let order = self.order_now(caller, id).await?;
            order.status.cancel().map_err(|e| cancel_conflict(id, &e))?;
            if order.status == OrderStatus::Authorized {
                // Its money is held: releasing the authorisation cancels the order.
                let payment = self.inner.storage.live_payment(id).await?.ok_or_else(|| {
                    Error::Conflict(format!("order {id} is AUTHORIZED but has no authorised payment"))
                })?;
                self.void_payment_now(caller, payment.id, None).await?;
                return self.order_now(caller, id).await;
            }
            let _guard = self.inner.order_locks.lock(id).await;
            let owner = self.owner(order.user_id).await?;
            let notify = self.order_notify(EventKind::OrderCancelled, owner);
            let (actor, at) = (caller.actor(), self.now());
            match self.write(move |s| async move { s.cancel_order(id, actor, at, notify, slot).await }).await? {
                Transition::Applied(order) => {
                    self.inner.wake.notify_one();
                    for payment in self.inner.storage.payments_for_order(id).await? {
                        if payment.status == PaymentStatus::Cancelled {
                            self.close_now(&payment).await;
                        }
                    }
                    Ok(order)
                }
                Transition::NotApplied(current) => Err(match current.status.cancel() {
                    Err(e) => cancel_conflict(id, &e),
                    Ok(_) => Error::Conflict(format!("order {id}: changed concurrently")),
                }),
            }
        })
        .await
    }
}
