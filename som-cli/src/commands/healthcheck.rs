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
        let result = check(&url);
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

fn check(url: &str) -> anyhow::Result<()> {
    {
        let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("only http:// URLs are supported"))?;
        let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
        let addr =
            authority.to_socket_addrs()?.next().ok_or_else(|| anyhow::anyhow!("{authority} does not resolve"))?;
        let timeout = Duration::from_secs(3);
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        stream.take(64 * 1024).read_to_string(&mut response)?;
        let status = response.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) == Some("200") { Ok(()) } else { anyhow::bail!("unhealthy: {status}") }
    }
}
