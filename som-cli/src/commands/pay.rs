//! `som pay …`

use clap::Subcommand;
use som_core::domain::{OrderId, PaymentId};
use som_server::dto::PaymentResponse;

use super::OPERATOR;
use crate::Ctx;

/// Initiate, confirm and inspect payments.
#[derive(Debug, Subcommand)]
pub enum Pay {
    /// Start paying an order (returns its pending or successful payment if it has one).
    Initiate {
        /// Order id.
        order_id: OrderId,
        /// Payment method: mock_success (default), mock_decline, mock_insufficient_funds, mock_transient_error.
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
}

fn fields(p: &PaymentResponse) -> Vec<(&'static str, String)> {
    vec![
        ("id", p.id.to_string()),
        ("order", p.order.to_string()),
        ("status", p.status.clone()),
        ("amount", format!("{} {}", p.amount, p.currency)),
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
        };
        let dto = PaymentResponse::from(payment);
        ctx.out.record(&dto, &fields(&dto))
    }
}
