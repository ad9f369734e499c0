//! Email through SMTP (lettre over tokio + rustls).
//!
//! `smtps://host:465` uses implicit TLS, `smtp://host:587` requires STARTTLS, and plain
//! `smtp://` is used for a loopback address (a local development sink) or when asked for
//! explicitly with `?tls=none` (a sink on a private network, as in compose.yaml). Credentials come
//! from the URL's user info. 4xx replies and connection failures are transient; 5xx replies
//! are permanent.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Notification, Notifier, NotifyError};
use crate::error::{Error, Result};

/// Delivers notifications as multipart (plain text + HTML) emails.
#[derive(Clone)]
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    endpoint: String,
}

impl std::fmt::Debug for SmtpNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpNotifier").field("endpoint", &self.endpoint).field("from", &self.from.to_string()).finish()
    }
}

/// The parts of an SMTP URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SmtpUrl {
    implicit_tls: bool,
    /// `?tls=none`: plain SMTP to a non-loopback host (a mail sink on a private network).
    no_tls: bool,
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: u16,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_url(url: &str) -> Result<SmtpUrl> {
    let bad = |why: &str| Error::invalid("SOM_SMTP_URL", why.to_owned());
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| bad("must look like smtp://host:port or smtps://host:port"))?;
    let implicit_tls = match scheme {
        "smtp" => false,
        "smtps" => true,
        _ => return Err(bad("the scheme must be smtp or smtps")),
    };
    let no_tls = rest.split_once('?').is_some_and(|(_, q)| q.split('&').any(|kv| kv == "tls=none"));
    if no_tls && implicit_tls {
        return Err(bad("smtps:// always uses TLS; tls=none goes with smtp://"));
    }
    let rest = rest.split(['/', '?']).next().unwrap_or_default();
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (Some(percent_decode(user)), Some(percent_decode(pass))),
            None => (Some(percent_decode(u)), None),
        },
        None => (None, None),
    };
    let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
        let (h, p) = stripped.split_once(']').ok_or_else(|| bad("unclosed IPv6 address"))?;
        (h.to_owned(), p.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("names no host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
        None if implicit_tls => 465,
        None => 587,
    };
    Ok(SmtpUrl { implicit_tls, no_tls, user, password, host, port })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl SmtpNotifier {
    /// A notifier sending through the server at `url`, from `from` (`Name <addr>` or `addr`).
    /// Must be called inside a tokio runtime.
    pub fn new(url: &str, from: &str, timeout: Duration) -> Result<SmtpNotifier> {
        let parsed = parse_url(url)?;
        let tls_error = |e: lettre::transport::smtp::Error| Error::invalid("SOM_SMTP_URL", format!("TLS setup: {e}"));
        let mut builder = if parsed.implicit_tls {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&parsed.host).map_err(tls_error)?
        } else if parsed.no_tls || is_loopback(&parsed.host) {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(parsed.host.clone())
        } else {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&parsed.host).map_err(tls_error)?
        };
        builder = builder.port(parsed.port).timeout(Some(timeout));
        if let Some(user) = parsed.user.clone() {
            builder = builder.credentials(Credentials::new(user, parsed.password.clone().unwrap_or_default()));
        }
        let from: Mailbox =
            from.parse().map_err(|e| Error::invalid("SOM_EMAIL_FROM", format!("not an address: {e}")))?;
        let endpoint =
            format!("{}://{}:{}", if parsed.implicit_tls { "smtps" } else { "smtp" }, parsed.host, parsed.port);
        Ok(SmtpNotifier { transport: builder.build(), from, endpoint })
    }

    /// The email for a notification. Its `Message-ID` is derived from the dedupe key, so a
    /// re-sent message carries the same id.
    pub fn email(&self, n: &Notification, to: Mailbox) -> Result<Message, NotifyError> {
        let m = &n.message;
        let mut text = format!("Hello {},\n\n{}\n\n", m.username, m.text);
        let mut rows = String::new();
        for item in &m.items {
            text.push_str(&format!("  {} x {} @ {} {}\n", item.quantity, item.name, item.price, m.currency));
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{} {}</td></tr>",
                item.quantity,
                html_escape(&item.name),
                item.price,
                m.currency
            ));
        }
        text.push_str(&format!("\nOrder #{} - total {} {}\n", m.order_id, m.amount, m.currency));
        let html = format!(
            "<!doctype html><html><body><p>Hello {},</p><p>{}</p><table>{rows}</table><p><strong>Order #{} - total {} {}</strong></p></body></html>",
            html_escape(&m.username),
            html_escape(&m.text),
            m.order_id,
            m.amount,
            m.currency
        );
        let message_id = format!("<{}.{}@som>", n.dedupe_key.replace(':', "."), n.channel);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject.clone())
            .message_id(Some(message_id))
            .multipart(
                MultiPart::alternative()
                    .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(text))
                    .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html)),
            )
            .map_err(|e| NotifyError::Permanent(format!("building the email: {e}")))
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[async_trait]
impl Notifier for SmtpNotifier {
    fn channel(&self) -> &str {
        "smtp"
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let Some(recipient) = n.recipient.as_deref() else {
            return Err(NotifyError::Skipped("the user has no email address".into()));
        };
        let to: Mailbox =
            recipient.parse().map_err(|e| NotifyError::Permanent(format!("invalid recipient {recipient:?}: {e}")))?;
        let email = self.email(n, to)?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(NotifyError::Permanent(format!("SMTP rejected the message: {e}"))),
            Err(e) => Err(NotifyError::Transient(format!("SMTP delivery failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_tls_and_carry_credentials() {
        let u = parse_url("smtp://user%40x:p%3Ass@mail.example.com:2525").unwrap();
        assert_eq!(
            u,
            SmtpUrl {
                implicit_tls: false,
                no_tls: false,
                user: Some("user@x".into()),
                password: Some("p:ss".into()),
                host: "mail.example.com".into(),
                port: 2525
            }
        );
        assert_eq!(parse_url("smtps://mail.example.com").unwrap().port, 465);
        assert_eq!(parse_url("smtp://127.0.0.1").unwrap().port, 587);
        assert_eq!(parse_url("smtp://[::1]:25").unwrap().host, "::1");
        assert!(parse_url("smtp://mail:1025?tls=none").unwrap().no_tls);
        assert!(parse_url("smtps://mail:1025?tls=none").is_err());
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("smtp://").is_err());
        assert!(parse_url("smtp://h:notaport").is_err());
        assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && is_loopback("::1") && !is_loopback("10.0.0.1"));
    }
}
