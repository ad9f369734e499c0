//! Staff alerts: what about money staff must look at (money taken for a payment SOM had ended,
//! a provider event that contradicts SOM, a refund that failed at the provider). Each is logged
//! as an error, counted in `som_staff_alerts_total`, and written to the outbox for every
//! active staff account on every channel (email, webhook, log), once per alert.

use super::OrderSystem;
use crate::domain::{Message, OrderId, Payment};
use crate::error::{Error, Result};
use crate::storage::{NewNotification, UserQuery};

/// Staff accounts an alert goes to at most.
const MAX_RECIPIENTS: u32 = 100;

impl OrderSystem {
    /// Tells staff about `order_id` (and `payment`): `alert` names the occurrence (the same
    /// alert is sent once), `what` says it in words. Never fails the caller: a failure to
    /// write the alert is logged.
    pub(super) async fn alert_staff(&self, order_id: OrderId, payment: Option<&Payment>, alert: &str, what: &str) {
        tracing::error!(order = %order_id, payment = ?payment.map(|p| p.id), alert, "staff alert: {what}");
        let kind = alert.split(':').next().unwrap_or("other").to_owned();
        metrics::counter!("som_staff_alerts_total", "alert" => kind).increment(1);
        if let Err(e) = self.enqueue_staff_alert(order_id, payment, alert, what).await {
            tracing::error!(order = %order_id, alert, error = %e, "the staff alert could not be written to the outbox");
        }
    }

    async fn enqueue_staff_alert(
        &self,
        order_id: OrderId,
        payment: Option<&Payment>,
        alert: &str,
        what: &str,
    ) -> Result<()> {
        write_staff_alert(&self.inner.storage, &self.inner.channels, order_id, payment, alert, what, self.now())
            .await?;
        self.inner.wake.notify_one();
        Ok(())
    }
}

/// Writes the staff alert `alert` about `order_id` (and `payment`) to the outbox for every
/// active staff account on each of `channels`, once per alert.
pub(crate) async fn write_staff_alert(
    storage: &crate::storage::DynStorage,
    channels: &[String],
    order_id: OrderId,
    payment: Option<&Payment>,
    alert: &str,
    what: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let order = storage.order_by_id(order_id).await?.ok_or_else(|| Error::NotFound(format!("order {order_id}")))?;
    let query = UserQuery { after: None, prefix: None, active_staff: true, limit: MAX_RECIPIENTS };
    let staff = storage.list_users(query).await?;
    if staff.is_empty() {
        tracing::warn!(alert, "no active staff account to alert; the log above is the only record");
        return Ok(());
    }
    let rows: Vec<NewNotification> = staff
        .iter()
        .flat_map(|member| {
            channels.iter().map(|channel| NewNotification {
                channel: channel.clone(),
                message: Message::staff_alert(member, &order, payment, alert, what),
            })
        })
        .collect();
    crate::storage::complete(storage, move |s| async move { s.enqueue_notifications(rows, at).await }).await
}
