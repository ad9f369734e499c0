//! `som pay …`

use clap::Subcommand;
use som_core::domain::{OrderId, PaymentId, RefundInput};
use som_server::dto::{PaymentResponse, RefundResponse};

use super::OPERATOR;
use crate::Ctx;

/// Initiate, confirm and inspect payments.
#[derive(Debug, Subcommand)]
pub enum Pay {
    /// Start paying an order (returns its pending or successful payment if it has one).
    Initiate {
        /// Order id.
        order_id: OrderId,
        /// Payment method: mock_success (default), mock_decline, mock_insufficient_funds, mock_transient_error,
        /// mock_refund_decline.
        #[arg(long)]
        method: Option<String>,
    },
    /// Confirm (capture) a pending payment; the order becomes PAID.
    Confirm {
        /// Payment id.
        payment_id: PaymentId,
    },
    /// Show one payment.
    Show {
        /// Payment id.
        payment_id: PaymentId,
    },
    /// Refund a captured payment, fully or in part.
    Refund {
        /// Payment id.
        payment_id: PaymentId,
        /// How much, e.g. 1.00 (default: everything not yet refunded).
        #[arg(long)]
        amount: Option<String>,
        /// Why (recorded, and told to the customer).
        #[arg(long)]
        reason: Option<String>,
        /// Idempotency key: repeating the command with it returns the same refund.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List a payment's refunds.
    Refunds {
        /// Payment id.
        payment_id: PaymentId,
    },
}

fn refund_fields(r: &RefundResponse) -> Vec<(&'static str, String)> {
    vec![
        ("id", r.id.to_string()),
        ("payment", r.payment.to_string()),
        ("order", r.order.to_string()),
        ("status", r.status.clone()),
        ("amount", format!("{} {}", r.amount, r.currency)),
        ("reason", r.reason.clone().unwrap_or_else(|| crate::output::NONE.into())),
        ("provider", r.provider_refund_id.clone().unwrap_or_else(|| crate::output::NONE.into())),
    ]
}

fn fields(p: &PaymentResponse) -> Vec<(&'static str, String)> {
    vec![
        ("id", p.id.to_string()),
        ("order", p.order.to_string()),
        ("status", p.status.clone()),
        ("amount", format!("{} {}", p.amount, p.currency)),
        ("refunded", format!("{} {}", p.refunded_amount, p.currency)),
        ("method", p.method.clone()),
        ("provider", format!("{} ({})", p.provider, p.provider_payment_id)),
        ("transaction", p.transaction_id.clone()),
    ]
}

impl Pay {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let payment = match self {
            Pay::Initiate { order_id, method } => {
                ctx.som.initiate_payment(OPERATOR, order_id, method.as_deref(), None).await?
            }
            Pay::Confirm { payment_id } => ctx.som.confirm_payment(OPERATOR, payment_id, None).await?,
            Pay::Show { payment_id } => ctx.som.payment(OPERATOR, payment_id).await?,
            Pay::Refund { payment_id, amount, reason, idempotency_key } => {
                let input = RefundInput { amount, reason };
                let refund = ctx.som.refund_payment(OPERATOR, payment_id, input, idempotency_key.as_deref()).await?;
                let dto = RefundResponse::from(refund);
                return ctx.out.record(&dto, &refund_fields(&dto));
            }
            Pay::Refunds { payment_id } => {
                let refunds: Vec<RefundResponse> =
                    ctx.som.payment_refunds(OPERATOR, payment_id).await?.into_iter().map(Into::into).collect();
                let rows = refunds
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            r.status.clone(),
                            format!("{} {}", r.amount, r.currency),
                            r.reason.clone().unwrap_or_else(|| crate::output::NONE.into()),
                            r.actor.clone(),
                            r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        ]
                    })
                    .collect();
                return ctx.out.table(&refunds, None, &["id", "status", "amount", "reason", "actor", "created"], rows);
            }
        };
        let dto = PaymentResponse::from(payment);
        ctx.out.record(&dto, &fields(&dto))
    }
}
