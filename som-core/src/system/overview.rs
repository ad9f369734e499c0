//! What the shop looks like right now, for staff: orders by status over recent windows, money
//! taken and returned per currency, and the work waiting (payments, refunds, notifications).

use super::*;
use crate::domain::{Currency, Money, RefundStatus};
use crate::storage::OrderTotals;

/// The state of the shop at [`Overview::at`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overview {
    /// When it was read.
    pub at: DateTime<Utc>,
    /// Orders placed since midnight UTC.
    pub today: Activity,
    /// Orders placed in the last 7 days (168 hours).
    pub last_7_days: Activity,
    /// Payments waiting for the payer (PENDING).
    pub payments_pending: u64,
    /// Payments authorised and not captured yet (AUTHORIZED).
    pub payments_authorized: u64,
    /// The authorisations that run out soonest (up to 10), each with when.
    pub authorizations_expiring: Vec<Hold>,
    /// Refunds sent to the provider and not yet settled (PENDING).
    pub refunds_pending: u64,
    /// Outbox rows per delivery state.
    pub notifications: Vec<(NotificationStatus, u64)>,
}

/// An authorisation waiting to be captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// The payment.
    pub payment_id: PaymentId,
    /// Its order.
    pub order_id: OrderId,
    /// What is held.
    pub amount: Money,
    /// When it runs out (it is then released and EXPIRED).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Orders placed since [`Activity::since`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// Start of the window.
    pub since: DateTime<Utc>,
    /// How many orders of each status (every status, zeros included, in lifecycle order).
    pub orders: Vec<(OrderStatus, u64)>,
    /// Money per currency (only currencies with orders), by currency code.
    pub money: Vec<CurrencyActivity>,
}

/// Money of the orders of a window in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrencyActivity {
    /// The currency's code.
    pub currency: String,
    /// What was captured for the orders that were paid (whatever was refunded of it since).
    pub paid: Money,
    /// What was refunded of them.
    pub refunded: Money,
}

impl Activity {
    fn from_totals(since: DateTime<Utc>, totals: Vec<OrderTotals>) -> Result<Activity> {
        let mut orders: Vec<(OrderStatus, u64)> = OrderStatus::ALL.iter().map(|s| (*s, 0)).collect();
        let mut money: Vec<CurrencyActivity> = Vec::new();
        for t in totals {
            if let Some(slot) = orders.iter_mut().find(|(s, _)| *s == t.status) {
                slot.1 += t.orders;
            }
            let currency =
                Currency::parse(&t.currency).map_err(|e| Error::Internal(format!("stored currency: {e}")))?;
            let index = match money.iter().position(|m| m.currency == t.currency) {
                Some(i) => i,
                None => {
                    let zero = Money::from_minor(0, currency);
                    money.push(CurrencyActivity { currency: t.currency.clone(), paid: zero, refunded: zero });
                    money.len() - 1
                }
            };
            let entry = &mut money[index];
            if t.status.was_paid() {
                let add = |sum: Money, minor: i64| {
                    sum.checked_add(Money::from_minor(minor, currency))
                        .map_err(|e| Error::Internal(format!("sum of order totals: {e}")))
                };
                entry.paid = add(entry.paid, t.captured_minor)?;
                entry.refunded = add(entry.refunded, t.refunded_minor)?;
            }
        }
        money.sort_by(|a, b| a.currency.cmp(&b.currency));
        Ok(Activity { since, orders, money })
    }
}

impl OrderSystem {
    /// Orders today and in the last 7 days by status, money paid and refunded per currency,
    /// and the work waiting. Staff only.
    pub async fn overview(&self, caller: Caller) -> Result<Overview> {
        if !caller.is_staff() {
            return Err(Error::Forbidden("only staff may read the overview".into()));
        }
        let at = self.now();
        let midnight = at.date_naive().and_hms_opt(0, 0, 0).map_or(at, |m| m.and_utc());
        let week_ago = at - chrono::Duration::days(7);
        let storage = &self.inner.storage;
        let all = async {
            tokio::try_join!(
                storage.order_totals(midnight),
                storage.order_totals(week_ago),
                storage.count_payments(PaymentStatus::Pending),
                storage.count_payments(PaymentStatus::Authorized),
                storage.expiring_authorizations(DateTime::<Utc>::MAX_UTC, false, 10),
                storage.count_refunds(RefundStatus::Pending),
                storage.notification_counts(),
            )
        };
        let (today, week, payments_pending, payments_authorized, holds, refunds_pending, notifications) =
            self.may_lag(caller, all).await?;
        let authorizations_expiring = holds
            .into_iter()
            .map(|p| Hold {
                payment_id: p.id,
                order_id: p.order_id,
                amount: p.amount,
                expires_at: p.authorization_expires_at,
            })
            .collect();
        Ok(Overview {
            at,
            today: Activity::from_totals(midnight, today)?,
            last_7_days: Activity::from_totals(week_ago, week)?,
            payments_pending,
            payments_authorized,
            authorizations_expiring,
            refunds_pending,
            notifications,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn totals(status: OrderStatus, currency: &str, orders: u64, total: i64, refunded: i64) -> OrderTotals {
        let captured_minor = if status.was_paid() { total } else { 0 };
        OrderTotals {
            status,
            currency: currency.into(),
            orders,
            total_minor: total,
            captured_minor,
            refunded_minor: refunded,
        }
    }

    #[test]
    fn money_counts_only_paid_orders_per_currency_and_every_status_is_listed() {
        let since = Utc::now();
        let a = Activity::from_totals(
            since,
            vec![
                totals(OrderStatus::Created, "USD", 4, 99_999, 0),
                totals(OrderStatus::Paid, "USD", 2, 2_000, 0),
                totals(OrderStatus::PartiallyRefunded, "USD", 1, 1_000, 250),
                totals(OrderStatus::Refunded, "JPY", 1, 500, 500),
                totals(OrderStatus::Cancelled, "EUR", 3, 7_000, 0),
            ],
        )
        .unwrap();
        let counts: Vec<u64> = a.orders.iter().map(|(_, n)| *n).collect();
        assert_eq!(
            counts,
            vec![4, 0, 2, 3, 1, 1],
            "in lifecycle order: created, authorized, paid, cancelled, partly, refunded"
        );
        let money: Vec<String> = a.money.iter().map(|m| format!("{} {} {}", m.currency, m.paid, m.refunded)).collect();
        assert_eq!(money, vec!["EUR 0.00 EUR 0.00 EUR", "JPY 500 JPY 500 JPY", "USD 30.00 USD 2.50 USD"]);
    }
}
