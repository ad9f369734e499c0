//! `som pay …`

use clap::Subcommand;
use som_core::domain::{CaptureMethod, OrderId, Payment, PaymentId, Refund, RefundInput};

use super::OPERATOR;
use crate::Ctx;

/// Initiate, confirm and inspect payments.
#[derive(Debug, Subcommand)]
pub enum Pay {
    /// Start paying an order (returns its pending or successful payment if it has one).
    Initiate {
        /// Order id.
        order_id: OrderId,
        /// Payment method. Mock provider: mock_success (default), mock_decline, mock_insufficient_funds,
        /// mock_transient_error, mock_refund_decline, mock_capture_decline. Stripe: a PaymentMethod id (pm_…);
        /// without one the payer chooses it with Stripe.js and the payment's client secret.
        #[arg(long)]
        method: Option<String>,
        /// automatic (confirmation captures) or manual (confirmation authorises; `som pay capture` or
        /// `som pay void` follows). Default: SOM_CAPTURE_METHOD.
        #[arg(long, value_parser = parse_capture)]
        capture: Option<CaptureMethod>,
    },
    /// Confirm a pending payment: captured (the order becomes PAID) or, with manual capture, authorised
    /// (AUTHORIZED). A payment that needs the payer's action (3-D Secure) stays PENDING and shows what is needed.
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
    /// Capture an authorised payment, fully or in part; the order becomes PAID and the rest of the hold is
    /// released.
    Capture {
        /// Payment id.
        payment_id: PaymentId,
        /// How much, e.g. 80.00 (default: everything authorised).
        #[arg(long)]
        amount: Option<String>,
        /// Idempotency key: repeating the command with it returns the same capture.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Release an authorised payment without taking money; the order is cancelled.
    Void {
        /// Payment id.
        payment_id: PaymentId,
    },
}

fn parse_capture(raw: &str) -> Result<CaptureMethod, String> {
    CaptureMethod::parse(raw).ok_or_else(|| "must be automatic or manual".to_owned())
}

fn refund_fields(r: &Refund) -> Vec<(&'static str, String)> {
    vec![
        ("id", r.id.to_string()),
        ("payment", r.payment_id.to_string()),
        ("order", r.order_id.to_string()),
        ("status", r.status.to_string()),
        ("amount", r.amount.to_string()),
        ("reason", r.reason.clone().unwrap_or_else(|| crate::output::NONE.into())),
        ("provider", r.provider_refund_id.clone().unwrap_or_else(|| crate::output::NONE.into())),
    ]
}

fn fields(p: &Payment) -> Vec<(&'static str, String)> {
    vec![
        ("id", p.id.to_string()),
        ("order", p.order_id.to_string()),
        ("status", p.status.to_string()),
        ("amount", p.amount.to_string()),
        ("capture", p.capture_method.to_string()),
        ("captured", p.captured.to_string()),
        (
            "authorised until",
            p.authorization_expires_at
                .map_or_else(|| crate::output::NONE.into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ),
        ("refunded", p.refunded.to_string()),
        ("method", p.method.clone()),
        ("provider", format!("{} ({})", p.provider, p.provider_payment_id)),
        ("transaction", p.transaction_id.clone()),
        ("next action", p.next_action.as_ref().map_or_else(|| crate::output::NONE.into(), |a| a.to_string())),
    ]
}

impl Pay {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let payment = match self {
            Pay::Initiate { order_id, method, capture } => {
                ctx.som
                    .initiate_payment(OPERATOR, order_id)
                    .maybe_method(method.as_deref())
                    .maybe_capture(capture)
                    .await?
            }
            Pay::Capture { payment_id, amount, idempotency_key } => {
                ctx.som
                    .capture_payment(OPERATOR, payment_id)
                    .maybe_amount(amount.as_deref())
                    .maybe_idempotency_key(idempotency_key.as_deref())
                    .await?
            }
            Pay::Void { payment_id } => ctx.som.void_payment(OPERATOR, payment_id).await?,
            Pay::Confirm { payment_id } => ctx.som.confirm_payment(OPERATOR, payment_id).await?,
            Pay::Show { payment_id } => ctx.som.payment(OPERATOR, payment_id).await?,
            Pay::Refund { payment_id, amount, reason, idempotency_key } => {
                let input = RefundInput { amount, reason };
                let refund = ctx
                    .som
                    .refund_payment(OPERATOR, payment_id)
                    .input(input)
                    .maybe_idempotency_key(idempotency_key.as_deref())
                    .await?;
                return ctx.out.record(&refund, &refund_fields(&refund));
            }
            Pay::Refunds { payment_id } => {
                let refunds = ctx.som.payment_refunds(OPERATOR, payment_id).await?;
                let rows = refunds
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            r.status.to_string(),
                            r.amount.to_string(),
                            r.reason.clone().unwrap_or_else(|| crate::output::NONE.into()),
                            r.actor.to_string(),
                            r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        ]
                    })
                    .collect();
                return ctx.out.table(&refunds, None, &["id", "status", "amount", "reason", "actor", "created"], rows);
            }
        };
        ctx.out.record(&payment, &fields(&payment))
    }
}
