//! Notifications through the facade: the outbox as staff see it, and the dispatcher.

use super::*;

impl OrderSystem {
    /// Outbox rows by ascending id. Staff only.
    pub async fn notifications(
        &self,
        caller: Caller,
        status: Option<NotificationStatus>,
        after: Option<NotificationId>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may list notifications".into()));
        }
        let query = NotificationQuery { status, order: None, after, limit: limit.clamp(1, MAX_ADMIN_PAGE_SIZE) };
        self.inner.storage.list_notifications(query).await
    }

    /// A page of outbox rows by ascending id (optionally of one status, or about one order),
    /// after the previous page's `next_cursor`. Staff only; `limit` 1 to
    /// [`MAX_ADMIN_PAGE_SIZE`].
    pub async fn notifications_page(&self, caller: Caller, query: NotificationListQuery) -> Result<Page<OutboxEntry>> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may list notifications".into()));
        }
        let NotificationListQuery { status, order, cursor, limit } = query;
        let limit = admin_page_size(limit.unwrap_or(DEFAULT_PAGE_SIZE))?;
        let query = NotificationQuery { status, order, after: cursor, limit: limit + 1 };
        let rows = self.may_lag(caller, self.inner.storage.list_notifications(query)).await?;
        Ok(Page::of(rows, limit, |r| r.id.to_string()))
    }

    /// Re-queues a dead notification for delivery. Staff only; `Conflict` if it is not dead.
    pub async fn retry_notification(&self, caller: Caller, id: NotificationId) -> Result<OutboxEntry> {
        self.writing(caller, async {
            if !caller.is_staff() {
                return Err(Error::Forbidden("only staff may retry notifications".into()));
            }
            let at = self.now();
            match self.write(move |s| async move { s.requeue_notification(id, at).await }).await? {
                None => Err(Error::NotFound(format!("notification {id}"))),
                Some(Transition::Applied(entry)) => {
                    self.inner.wake.notify_one();
                    Ok(entry)
                }
                Some(Transition::NotApplied(entry)) => Err(Error::Conflict(format!(
                    "notification {id} is {} and only dead ones can be retried",
                    entry.status
                ))),
            }
        })
        .await
    }

    /// Re-queues every dead notification of `channel` (`email`, `webhook`, …) for delivery; how
    /// many. Staff only.
    pub async fn retry_dead_notifications(&self, caller: Caller, channel: &str) -> Result<u64> {
        self.writing(caller, async {
            if !caller.is_staff() {
                return Err(Error::Forbidden("only staff may retry notifications".into()));
            }
            let channel = channel.trim().to_owned();
            if channel.is_empty() || channel.len() > 64 {
                return Err(Error::invalid("channel", "must be 1 to 64 characters"));
            }
            let at = self.now();
            let n = self.write(move |s| async move { s.requeue_dead_notifications(&channel, at).await }).await?;
            if n > 0 {
                self.inner.wake.notify_one();
            }
            Ok(n)
        })
        .await
    }

    /// Outbox row counts per status. Staff and the system caller (metrics, the CLI) only.
    pub async fn notification_counts(&self, caller: Caller) -> Result<Vec<(NotificationStatus, u64)>> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may count notifications".into()));
        }
        self.inner.storage.notification_counts().await
    }

    pub(super) fn dispatcher(&self) -> Dispatcher {
        let config = &self.inner.config;
        // A session's rows are kept until its last access token has expired too.
        let retention = config.session_max_age.saturating_add(config.access_token_ttl);
        Dispatcher::new(Arc::clone(&self.inner.storage), &self.inner.notifiers, config.outbox.clone())
            .with_session_retention(retention)
            .with_delivery_retention(config.delivery_retention)
            .with_clock(Arc::clone(&self.inner.clock))
    }

    /// One claim-and-deliver round; how many notifications it handled.
    pub async fn dispatch_once(&self) -> Result<usize> {
        self.dispatcher().run_once(None).await
    }

    /// Runs the dispatcher on the current tokio runtime until the handle is shut down. It is
    /// woken right after each commit that wrote notifications, and polls for the rest.
    pub fn spawn_dispatcher(&self) -> DispatcherHandle {
        self.inner.storage.subscribe_outbox(Arc::clone(&self.inner.wake));
        let system = self.clone();
        let after = self.inner.config.refund_recovery_after;
        self.dispatcher().spawn(Arc::clone(&self.inner.wake)).with_companion(move |mut stop| async move {
            // Refunds whose request died between reserving and finishing are finished here.
            let every = (after / 3).clamp(Duration::from_millis(100), Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    () = tokio::time::sleep(every) => {}
                }
                if *stop.borrow() {
                    break;
                }
                match system.recover_refunds(after).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(refunds = n, "finished pending refunds"),
                    Err(e) => tracing::warn!(error = %e, "finishing pending refunds failed"),
                }
                // Captures and voids whose provider call died, authorisations that ran out or
                // soon will.
                match system.recover_settlements(after).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(payments = n, "finished pending captures and voids"),
                    Err(e) => tracing::warn!(error = %e, "finishing pending captures and voids failed"),
                }
                match system.expire_authorizations().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(payments = n, "released expired authorisations"),
                    Err(e) => tracing::warn!(error = %e, "releasing expired authorisations failed"),
                }
                if let Err(e) = system.warn_expiring_authorizations().await {
                    tracing::warn!(error = %e, "warning about expiring authorisations failed");
                }
                // Ended payments whose provider side could not be closed at once.
                match system.close_ended_payments().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(payments = n, "closed ended payments at the provider"),
                    Err(e) => tracing::warn!(error = %e, "closing ended payments at the provider failed"),
                }
            }
        })
    }
}
