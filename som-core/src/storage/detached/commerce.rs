//! Orders, payments, refunds, the outbox and idempotency keys, detached.

use super::*;
use crate::domain::PaymentStatus;
use crate::storage::NewNotification;

#[async_trait]
impl OrderStore for Detached {
    async fn insert_order(
        &self,
        user_id: UserId,
        actor: Actor,
        order: NewOrder,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Order> {
        detached(&self.inner, |s| async move { s.insert_order(user_id, actor, order, at, notify, idempotency).await })
            .await
    }

    async fn order_by_id(&self, id: OrderId) -> Result<Option<Order>> {
        self.inner.order_by_id(id).await
    }

    async fn list_orders(&self, query: OrderQuery) -> Result<Vec<Order>> {
        self.inner.list_orders(query).await
    }

    async fn latest_order(&self, user_id: UserId) -> Result<Option<Order>> {
        self.inner.latest_order(user_id).await
    }

    async fn order_events(&self, id: OrderId) -> Result<Vec<OrderEvent>> {
        self.inner.order_events(id).await
    }

    async fn cancel_order(
        &self,
        id: OrderId,
        actor: Actor,
        at: DateTime<Utc>,
        notify: OrderNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Order>> {
        detached(&self.inner, |s| async move { s.cancel_order(id, actor, at, notify, idempotency).await }).await
    }
}

#[async_trait]
impl PaymentStore for Detached {
    async fn live_payment(&self, order_id: OrderId) -> Result<Option<Payment>> {
        self.inner.live_payment(order_id).await
    }

    async fn payment_count(&self, order_id: OrderId) -> Result<u32> {
        self.inner.payment_count(order_id).await
    }

    async fn insert_payment(
        &self,
        payment: NewPaymentRecord,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<PaymentInsert> {
        detached(&self.inner, |s| async move { s.insert_payment(payment, idempotency).await }).await
    }

    async fn payment_by_id(&self, id: PaymentId) -> Result<Option<Payment>> {
        self.inner.payment_by_id(id).await
    }

    async fn payment_by_provider_id(&self, provider: &str, provider_payment_id: &str) -> Result<Option<Payment>> {
        self.inner.payment_by_provider_id(provider, provider_payment_id).await
    }

    async fn payments_open_at_provider(&self, statuses: &[PaymentStatus], limit: u32) -> Result<Vec<Payment>> {
        let statuses = statuses.to_vec();
        detached(&self.inner, |s| async move { s.payments_open_at_provider(&statuses, limit).await }).await
    }

    async fn mark_closed_at_provider(&self, id: PaymentId, at: DateTime<Utc>) -> Result<bool> {
        detached(&self.inner, |s| async move { s.mark_closed_at_provider(id, at).await }).await
    }

    async fn set_next_action(&self, id: PaymentId, next_action: Option<String>) -> Result<Option<Payment>> {
        detached(&self.inner, |s| async move { s.set_next_action(id, next_action).await }).await
    }

    async fn inbound_event_seen(&self, provider: &str, event_id: &str) -> Result<bool> {
        self.inner.inbound_event_seen(provider, event_id).await
    }

    async fn record_inbound_event(
        &self,
        provider: &str,
        event_id: &str,
        kind: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (provider, event_id, kind) = (provider.to_owned(), event_id.to_owned(), kind.to_owned());
        detached(&self.inner, |s| async move { s.record_inbound_event(&provider, &event_id, &kind, at).await }).await
    }

    async fn transient_failures(&self, id: PaymentId) -> Result<u32> {
        self.inner.transient_failures(id).await
    }

    async fn record_transient_failure(&self, id: PaymentId) -> Result<()> {
        detached(&self.inner, |s| async move { s.record_transient_failure(id).await }).await
    }

    async fn payments_for_order(&self, order_id: OrderId) -> Result<Vec<Payment>> {
        self.inner.payments_for_order(order_id).await
    }

    async fn complete_payment(
        &self,
        id: PaymentId,
        outcome: PaymentOutcome,
        actor: Actor,
        at: DateTime<Utc>,
        notify: PaymentNotify,
        idempotency: Option<IdempotencySlot>,
    ) -> Result<Transition<Payment>> {
        detached(&self.inner, |s| async move { s.complete_payment(id, outcome, actor, at, notify, idempotency).await })
            .await
    }
}

#[async_trait]
impl RefundStore for Detached {
    async fn reserve_refund(&self, refund: NewRefundRecord) -> Result<RefundReserve> {
        detached(&self.inner, |s| async move { s.reserve_refund(refund).await }).await
    }

    async fn finish_refund(
        &self,
        id: RefundId,
        outcome: RefundOutcome,
        at: DateTime<Utc>,
        notify: RefundNotify,
    ) -> Result<Transition<Refund>> {
        detached(&self.inner, |s| async move { s.finish_refund(id, outcome, at, notify).await }).await
    }

    async fn reverse_refund(&self, id: RefundId, reason: &str, at: DateTime<Utc>) -> Result<Transition<Refund>> {
        let reason = reason.to_owned();
        detached(&self.inner, |s| async move { s.reverse_refund(id, &reason, at).await }).await
    }

    async fn note_provider_refund(&self, id: RefundId, provider_refund_id: &str) -> Result<()> {
        let provider_refund_id = provider_refund_id.to_owned();
        detached(&self.inner, |s| async move { s.note_provider_refund(id, &provider_refund_id).await }).await
    }

    async fn refund_by_id(&self, id: RefundId) -> Result<Option<Refund>> {
        self.inner.refund_by_id(id).await
    }

    async fn refunds_for_payment(&self, payment_id: PaymentId) -> Result<Vec<Refund>> {
        self.inner.refunds_for_payment(payment_id).await
    }

    async fn pending_refunds(&self, created_before: DateTime<Utc>, limit: u32) -> Result<Vec<Refund>> {
        self.inner.pending_refunds(created_before, limit).await
    }
}

#[async_trait]
impl OutboxStore for Detached {
    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        claim_token: &str,
    ) -> Result<Vec<OutboxEntry>> {
        let claim_token = claim_token.to_owned();
        detached(&self.inner, |s| async move { s.claim_notifications(now, lease_until, limit, &claim_token).await })
            .await
    }

    async fn mark_notifications_sent(
        &self,
        ids: &[NotificationId],
        claim_token: &str,
        at: DateTime<Utc>,
    ) -> Result<u64> {
        let (ids, claim_token) = (ids.to_vec(), claim_token.to_owned());
        detached(&self.inner, |s| async move { s.mark_notifications_sent(&ids, &claim_token, at).await }).await
    }

    async fn mark_notification_failed(
        &self,
        id: NotificationId,
        claim_token: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (claim_token, error) = (claim_token.to_owned(), error.to_owned());
        detached(
            &self.inner,
            |s| async move { s.mark_notification_failed(id, &claim_token, &error, retry_at, at).await },
        )
        .await
    }

    async fn mark_notification_skipped(
        &self,
        id: NotificationId,
        claim_token: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (claim_token, reason) = (claim_token.to_owned(), reason.to_owned());
        detached(&self.inner, |s| async move { s.mark_notification_skipped(id, &claim_token, &reason, at).await }).await
    }

    async fn release_notification(&self, id: NotificationId, claim_token: &str) -> Result<bool> {
        let claim_token = claim_token.to_owned();
        detached(&self.inner, |s| async move { s.release_notification(id, &claim_token).await }).await
    }

    async fn list_notifications(&self, query: NotificationQuery) -> Result<Vec<OutboxEntry>> {
        self.inner.list_notifications(query).await
    }

    async fn requeue_notification(
        &self,
        id: NotificationId,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition<OutboxEntry>>> {
        detached(&self.inner, |s| async move { s.requeue_notification(id, now).await }).await
    }

    async fn notification_counts(&self) -> Result<Vec<(NotificationStatus, u64)>> {
        self.inner.notification_counts().await
    }

    async fn enqueue_notifications(&self, rows: Vec<NewNotification>, at: DateTime<Utc>) -> Result<()> {
        detached(&self.inner, |s| async move { s.enqueue_notifications(rows, at).await }).await
    }
}

#[async_trait]
impl IdempotencyStore for Detached {
    async fn begin_idempotency(
        &self,
        key: &IdempotencyKey,
        request_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<IdempotencyBegin> {
        let (key, request_hash) = (key.clone(), request_hash.to_owned());
        detached(&self.inner, |s| async move {
            s.begin_idempotency(&key, &request_hash, now, expires_at, stale_before).await
        })
        .await
    }

    async fn finish_idempotency(&self, key: &IdempotencyKey, response: &str) -> Result<()> {
        let (key, response) = (key.clone(), response.to_owned());
        detached(&self.inner, |s| async move { s.finish_idempotency(&key, &response).await }).await
    }

    async fn abandon_idempotency(&self, key: &IdempotencyKey) -> Result<()> {
        let key = key.clone();
        detached(&self.inner, |s| async move { s.abandon_idempotency(&key).await }).await
    }

    async fn prune_idempotency(&self, now: DateTime<Utc>) -> Result<u64> {
        detached(&self.inner, |s| async move { s.prune_idempotency(now).await }).await
    }
}
