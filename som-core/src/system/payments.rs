//! Payments through the facade: initiate with the provider outside any transaction, confirm once.

use super::*;

impl OrderSystem {
    /// Starts paying an order: returns its live (PENDING or SUCCESS) payment if there is one,
    /// otherwise asks the provider (outside any transaction) and stores a PENDING payment.
    /// `method` defaults to the provider's default (`mock_success` for the mock; none for
    /// Stripe, whose payer then chooses it with Stripe.js and the payment's `client_secret`).
    /// `Conflict` when the order is not CREATED.
    pub(super) async fn initiate_payment_now(
        &self,
        caller: Caller,
        order_id: OrderId,
        method: Option<&str>,
        capture: Option<CaptureMethod>,
        idempotency_key: Option<&str>,
    ) -> Result<Payment> {
        let provider = &self.inner.provider;
        let asked = capture;
        let capture = capture.unwrap_or(self.inner.config.capture_method);
        if capture == CaptureMethod::Manual && !provider.supports_manual_capture() {
            return Err(Error::invalid(
                "capture",
                format!("the {} payment provider cannot capture later; use automatic", provider.name()),
            ));
        }
        let method = method.map(str::trim).filter(|m| !m.is_empty()).or(provider.default_method()).map(str::to_owned);
        if let Some(method) = &method {
            if method.len() > crate::payment::MAX_METHOD_CHARS || method.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "method",
                    format!(
                        "must be at most {} characters without control characters",
                        crate::payment::MAX_METHOD_CHARS
                    ),
                ));
            }
            // An unusable method is refused even when the order already has a payment to return.
            provider.check_method(method).map_err(|m| Error::invalid("method", m))?;
        }
        let request = (order_id, method.clone(), capture);
        self.idempotent(caller, "initiate_payment", idempotency_key, &request, |slot| async move {
            let order = self.order_now(caller, order_id).await?;
            if order.status != OrderStatus::Created {
                return Err(not_payable(order_id, order.status));
            }
            let _guard = self.inner.order_locks.lock(order_id).await;
            // The order's payments in one read: its live one, if any, and the attempt's number.
            let payments = self.inner.storage.payments_for_order(order_id).await?;
            if let Some(live) = payments.iter().find(|p| PaymentStatus::LIVE.contains(&p.status)).cloned() {
                if asked.is_some_and(|c| c != live.capture_method) {
                    return Err(Error::Conflict(format!(
                        "order {order_id} already has payment {} with {} capture; cancel the order to pay it otherwise",
                        live.id, live.capture_method
                    )));
                }
                return Ok(live);
            }
            let attempt = u32::try_from(payments.len()).unwrap_or(u32::MAX).saturating_add(1);
            let transaction_id = format!("txn_{}", crate::util::random_token(12));
            let request = PaymentRequest {
                order_id,
                amount: order.total,
                attempt,
                idempotency_key: format!("som-order-{order_id}-attempt-{attempt}"),
                reference: transaction_id.clone(),
                method: method.clone(),
                capture,
            };
            let provided = self.inner.provider.initiate(&request).await.map_err(provider_error)?;
            let record = NewPaymentRecord {
                order_id,
                user_id: order.user_id,
                provider: self.inner.provider.name().to_owned(),
                provider_payment_id: provided.provider_payment_id,
                transaction_id,
                method: method.unwrap_or_default(),
                attempt,
                amount: order.total,
                capture_method: capture,
                client_secret: provided.client_secret,
                created_at: self.now(),
            };
            match self.write(move |s| async move { s.insert_payment(record, slot).await }).await? {
                PaymentInsert::Inserted(p) | PaymentInsert::Existing(p) => Ok(p),
                PaymentInsert::OrderNotPayable(status) => Err(not_payable(order_id, status)),
            }
        })
        .await
    }

    /// When the authorisation of a payment initiated at `initiated` runs out
    /// (`SOM_AUTHORIZATION_TTL` after initiation, as a card processor counts its hold from the
    /// payment's creation).
    pub(super) fn authorization_expiry(
        &self,
        initiated: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        let ttl = chrono::Duration::from_std(self.inner.config.authorization_ttl).unwrap_or(chrono::Duration::MAX);
        initiated.checked_add_signed(ttl).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    }

    /// A payment the caller may see.
    pub async fn payment(&self, caller: Caller, id: PaymentId) -> Result<Payment> {
        let payment =
            self.inner.storage.payment_by_id(id).await?.ok_or_else(|| Error::NotFound(format!("payment {id}")))?;
        if caller.can_access(payment.user_id) { Ok(payment) } else { Err(Error::NotFound(format!("payment {id}"))) }
    }

    /// The payments made for an order the caller may see, oldest first.
    pub async fn order_payments(&self, caller: Caller, order_id: OrderId) -> Result<Vec<Payment>> {
        self.may_lag(caller, async {
            self.order_now(caller, order_id).await?;
            self.inner.storage.payments_for_order(order_id).await
        })
        .await
    }

    /// Captures a PENDING payment with the provider. Success: payment SUCCESS and order PAID in
    /// one transaction, with the payment-succeeded notification. Declined: payment FAILED and
    /// `PaymentDeclined` (the order stays payable). The payer must act first (3-D Secure): the
    /// payment is returned still PENDING with its `next_action`; it completes by the provider's
    /// event or a later confirmation. Transient provider failure: `Unavailable`, nothing
    /// changed. Confirming a SUCCESS payment again returns it unchanged.
    pub(super) async fn confirm_payment_now(
        &self,
        caller: Caller,
        id: PaymentId,
        idempotency_key: Option<&str>,
    ) -> Result<Payment> {
        let result = self
            .idempotent(caller, "confirm_payment", idempotency_key, &id, |slot| self.confirm_inner(caller, id, slot))
            .await;
        let outcome = match &result {
            Ok(p) if p.status == PaymentStatus::Failed => "declined",
            Ok(p) if p.status == PaymentStatus::Pending => "action_required",
            Ok(p) if p.status == PaymentStatus::Authorized => "authorized",
            Ok(_) => "success",
            Err(e) if e.is_retryable() => "transient",
            Err(_) => "rejected",
        };
        metrics::counter!("som_payments_confirmed_total", "outcome" => outcome).increment(1);
        let payment = result?;
        if payment.status == PaymentStatus::Failed {
            return Err(Error::PaymentDeclined(payment.failure_reason.unwrap_or_else(|| "declined".into())));
        }
        Ok(payment)
    }

    async fn confirm_inner(&self, caller: Caller, id: PaymentId, slot: Option<IdempotencySlot>) -> Result<Payment> {
        let settled = |p: &Payment| -> Option<Result<Payment>> {
            match p.status {
                PaymentStatus::Pending => None,
                // Authorised or captured (and perhaps refunded since): confirming again returns it.
                s if s == PaymentStatus::Authorized || s.was_captured() => Some(Ok(p.clone())),
                PaymentStatus::Failed => Some(Err(Error::Conflict(format!(
                    "payment {id} was declined; initiate a new payment for order {}",
                    p.order_id
                )))),
                other => Some(Err(Error::Conflict(format!("payment {id} is {other} and cannot be confirmed")))),
            }
        };
        // Read under the payment's lock: a confirmation of this payment in flight here ends first.
        let _guard = self.inner.payment_locks.lock(id).await;
        let payment = self.payment(caller, id).await?;
        if let Some(done) = settled(&payment) {
            return done;
        }
        let owner = self.owner(payment.user_id).await?;
        let failures = self.inner.storage.transient_failures(id).await?;
        let outcome = match self.inner.provider.confirm_attempt(&payment.provider_payment_id, failures).await {
            Ok(Confirmation::Captured(_)) => PaymentOutcome::Succeeded,
            Ok(Confirmation::Authorized) => {
                PaymentOutcome::Authorized { expires_at: self.authorization_expiry(payment.created_at) }
            }
            Ok(Confirmation::Pending { next_action }) => {
                let next_action = next_action.map(|a| a.to_string());
                let waiting = self.write(move |s| async move { s.set_next_action(id, next_action).await }).await?;
                return waiting.ok_or_else(|| Error::NotFound(format!("payment {id}")));
            }
            Err(ProviderError::Declined { message, .. }) => PaymentOutcome::Failed { reason: message },
            Err(e) => {
                if matches!(e, ProviderError::Transient(_))
                    && let Err(stored) = self.write(move |s| async move { s.record_transient_failure(id).await }).await
                {
                    tracing::warn!(error = %stored, "could not count a transient confirmation failure");
                }
                return Err(provider_error(e));
            }
        };
        let notify = self.completion_notify(&outcome, owner);
        let actor = caller.actor();
        let (completing, at) = (outcome.clone(), self.now());
        match self
            .write(move |s| async move { s.complete_payment(id, completing, actor, at, notify, slot).await })
            .await?
        {
            Transition::Applied(p) => {
                self.inner.wake.notify_one();
                if p.status == PaymentStatus::Failed {
                    self.close_now(&p).await;
                }
                Ok(p)
            }
            Transition::NotApplied(current) => settled(&current).unwrap_or_else(|| {
                Err(Error::Internal(format!("payment {id} stayed pending after a conditional update")))
            }),
        }
    }
}
