//! `som healthcheck`

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use clap::Args;

/// Check that a running server answers 200 on its health endpoint (for container health checks).
#[derive(Debug, Args)]
pub struct Healthcheck {
    /// The health URL (plain http); default: /healthz on SOM_LISTEN (127.0.0.1:8000).
    #[arg(long)]
    url: Option<String>,
}

impl Healthcheck {
    /// Checks the URL; with `json`, prints `{"url", "healthy", "status"}` either way.
    pub fn run(self, listen: &str, json: bool) -> anyhow::Result<()> {
        let url = self.url.unwrap_or_else(|| {
            // A wildcard listen address is reached through loopback.
            let listen = listen.replace("0.0.0.0:", "127.0.0.1:").replace("[::]:", "[::1]:");
            format!("http://{listen}/healthz")
        });
        let result = check(&url).map_err(|e| match e {
            Problem::Url(why) => anyhow::Error::new(crate::UsageError(format!("{url}: {why}"))),
            Problem::Unhealthy(why) => {
                anyhow::Error::new(som_core::Error::Unavailable(format!("the server at {url} ({why})")))
            }
        });
        if json {
            let (healthy, status) = match &result {
                Ok(()) => (true, "200".to_owned()),
                Err(e) => (false, e.to_string()),
            };
            println!("{}", serde_json::json!({ "url": url, "healthy": healthy, "status": status }));
        }
        result
    }
}

enum Problem {
    /// The URL cannot be used (exit code 2).
    Url(String),
    /// Nothing answered 200 there (exit code 3).
    Unhealthy(String),
}

fn check(url: &str) -> Result<(), Problem> {
    let rest = url.strip_prefix("http://").ok_or_else(|| Problem::Url("only http:// URLs are supported".into()))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| Problem::Url(format!("{authority}: {e}")))?
        .next()
        .ok_or_else(|| Problem::Url(format!("{authority} does not resolve")))?;
    let unhealthy = |e: std::io::Error| Problem::Unhealthy(format!("no answer ({e})"));
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(unhealthy)?;
    stream.set_read_timeout(Some(timeout)).map_err(unhealthy)?;
    stream.set_write_timeout(Some(timeout)).map_err(unhealthy)?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").map_err(unhealthy)?;
    let mut response = String::new();
    stream.take(64 * 1024).read_to_string(&mut response).map_err(unhealthy)?;
    let status = response.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(Problem::Unhealthy(format!("unhealthy: {status}")))
    }
}
