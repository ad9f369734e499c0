//! `som serve`

use std::io::Write;

use clap::Args;
use tokio::net::TcpListener;

use crate::Ctx;

/// Run the HTTP server with the notification dispatcher in-process.
#[derive(Debug, Args)]
pub struct Serve {
    /// Address to listen on (default: SOM_LISTEN, 127.0.0.1:8000); port 0 picks a free port.
    #[arg(long)]
    listen: Option<String>,
    /// Serve the API only: notifications, webhooks and the event stream are delivered by
    /// `som worker` processes (they still are written, with every change, to the outbox).
    #[arg(long)]
    no_dispatcher: bool,
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

impl Serve {
    pub async fn run(self, ctx: Ctx) -> anyhow::Result<()> {
        let config = ctx.som.config().clone();
        let listen = self.listen.unwrap_or_else(|| config.listen.clone());
        let listener = TcpListener::bind(&listen)
            .await
            .map_err(|e| crate::UsageError(format!("cannot listen on {listen} (--listen or SOM_LISTEN): {e}")))?;
        let addr = listener.local_addr()?;
        ctx.som.retire_unlisted_webhook_endpoints().await?;
        let dispatcher = (!self.no_dispatcher).then(|| ctx.som.spawn_dispatcher());
        tracing::info!(%addr, database = %config.redacted_database_url(), "serving");
        for warning in ctx.som.warnings() {
            tracing::warn!("{warning}");
        }
        // The first line on stdout tells scripts (and tests) where the server is. Whoever reads
        // it may close the pipe afterwards: a failed write to stdout never stops the server.
        // With --json both are one line of JSON: `{"listening": …, "docs": …}`.
        let mut stdout = std::io::stdout();
        let shown = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => format!("127.0.0.1:{}", addr.port()),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => format!("[::1]:{}", addr.port()),
            _ => addr.to_string(),
        };
        let (listening, docs) = (format!("http://{addr}"), format!("http://{shown}{}", som_server::DOCS_PATH));
        if ctx.out.json {
            let _ = writeln!(stdout, "{}", serde_json::json!({ "listening": listening, "docs": docs }));
        } else {
            let _ = writeln!(stdout, "listening on {listening}");
            let _ = writeln!(stdout, "API documentation (Swagger UI): {docs}");
        }
        let _ = stdout.flush();
        let settings = som_server::Settings::from_config(&config);
        let metrics = match &config.metrics_listen {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {address} (SOM_METRICS_LISTEN): {e}"))?;
                tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
                let (som, settings) = (ctx.som.clone(), settings.clone());
                Some(tokio::spawn(async move {
                    som_server::serve_metrics(listener, som, &settings, shutdown_signal()).await
                }))
            }
            None => None,
        };
        let served = som_server::serve(listener, ctx.som.clone(), settings, shutdown_signal()).await;
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        if let Some(dispatcher) = dispatcher {
            dispatcher.shutdown().await;
        }
        tracing::info!("stopped");
        Ok(served?)
    }
}
