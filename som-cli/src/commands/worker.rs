//! `som worker`

use clap::Args;
use serde_json::json;

use super::serve::shutdown_signal;
use crate::Ctx;

/// Run the notification dispatcher alone (for deployments that run it apart from the server).
#[derive(Debug, Args)]
pub struct Worker {
    /// Deliver everything due now, then exit.
    #[arg(long)]
    once: bool,
}

impl Worker {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        if self.once {
            let progress = ctx.out.progress("delivering notifications");
            let mut total = 0;
            loop {
                let handled = ctx.som.dispatch_once().await?;
                if handled == 0 {
                    break;
                }
                total += handled;
                progress.set_message(format!("delivered {total} notifications"));
            }
            progress.finish_and_clear();
            return ctx.out.record(&json!({ "handled": total }), &[("handled", total.to_string())]);
        }
        for warning in ctx.som.warnings() {
            tracing::warn!("{warning}");
        }
        ctx.som.retire_unlisted_webhook_endpoints().await?;
        let dispatcher = ctx.som.spawn_dispatcher();
        tracing::info!("dispatcher running; stop with Ctrl-C or SIGTERM");
        shutdown_signal().await;
        dispatcher.shutdown().await;
        Ok(())
    }
}
