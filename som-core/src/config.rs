//! One [`Config`], read from `SOM_*` environment variables. [`VARIABLES`] lists every variable
//! with its default and meaning; the operator documentation is generated from it.

use std::time::Duration;

/// The failed-login window in minutes, written once for both [`LOGIN_FAILURE_WINDOW`] and the
/// help text that names it.
macro_rules! login_failure_window_minutes {
    () => {
        15
    };
}

use crate::domain::{CaptureMethod, Currency};
use crate::error::{Result, ValidationErrors};
pub use crate::util::{Secret, redact_url};

mod variables;

/// One configuration variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigVar {
    /// The environment variable.
    pub name: &'static str,
    /// Its default, as text ("" when unset by default).
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// The longest `SOM_SESSION_CACHE_TTL` accepted: a session ended in another process (a
/// logout, a password change, a disabled account) stays usable in this one at most this long.
pub const MAX_SESSION_CACHE_TTL: Duration = Duration::from_secs(60);

pub use variables::VARIABLES;

/// Everything SOM can be configured with. Build it with [`Config::from_env`],
/// [`Config::from_lookup`] or [`Config::default`] and adjust fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SOM_DATABASE_URL`.
    pub database_url: String,
    /// `SOM_DATABASE_POOL_SIZE`.
    pub database_pool_size: u32,
    /// `SOM_DATABASE_READ_URLS`.
    pub database_read_urls: Vec<String>,
    /// `SOM_REPLICA_MAX_LAG`.
    pub replica_max_lag: Duration,
    /// `SOM_JWT_SECRET`.
    pub jwt_secret: Option<Secret>,
    /// `SOM_ACCESS_TOKEN_TTL`.
    pub access_token_ttl: Duration,
    /// `SOM_REFRESH_TOKEN_TTL`.
    pub refresh_token_ttl: Duration,
    /// `SOM_CURRENCY`.
    pub currency: Currency,
    /// `SOM_NOTIFIER`.
    pub notifiers: Vec<String>,
    /// `SOM_SMTP_URL`.
    pub smtp_url: Option<Secret>,
    /// `SOM_SMTP_TIMEOUT`.
    pub smtp_timeout: Duration,
    /// `SOM_EMAIL_FROM`.
    pub email_from: String,
    /// `SOM_WEBHOOK_URLS`.
    pub webhook_urls: Vec<String>,
    /// `SOM_WEBHOOK_SECRET`.
    pub webhook_secret: Option<Secret>,
    /// `SOM_WEBHOOK_TIMEOUT`.
    pub webhook_timeout: Duration,
    /// `SOM_WEBHOOK_ALLOW_PRIVATE`.
    pub webhook_allow_private: bool,
    /// `SOM_WEBHOOK_DISABLE_AFTER`.
    pub webhook_disable_after: Duration,
    /// `SOM_DELIVERY_RETENTION`.
    pub delivery_retention: Duration,
    /// `SOM_EVENT_STREAM`.
    pub event_stream: Option<Secret>,
    /// `SOM_EVENT_STREAM_NAME`.
    pub event_stream_name: String,
    /// `SOM_LISTEN`.
    pub listen: String,
    /// `SOM_BODY_LIMIT`.
    pub body_limit: usize,
    /// `SOM_REQUEST_TIMEOUT`.
    pub request_timeout: Duration,
    /// `SOM_HEADER_READ_TIMEOUT`.
    pub header_read_timeout: Duration,
    /// `SOM_CORS_ORIGINS`.
    pub cors_origins: Vec<String>,
    /// `SOM_LOG`.
    pub log: String,
    /// `SOM_LOG_FORMAT`: `text` or `json`.
    pub log_format: String,
    /// `SOM_AUTH_RATE_LIMIT`.
    pub auth_rate_limit: u32,
    /// `SOM_PASSWORD_HASH_CONCURRENCY`.
    pub password_hash_concurrency: usize,
    /// `SOM_SESSION_MAX_AGE`.
    pub session_max_age: Duration,
    /// `SOM_SESSION_CACHE_TTL`.
    pub session_cache_ttl: Duration,
    /// `SOM_LOGIN_FAILURE_LIMIT`: failed logins per username per [`LOGIN_FAILURE_WINDOW`].
    pub login_failure_limit: u32,
    /// `SOM_TRUSTED_PROXIES`: addresses or CIDR ranges, as written.
    pub trusted_proxies: Vec<String>,
    /// `SOM_MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// `SOM_MAX_CONNECTIONS_PER_ADDRESS` (0: a quarter of `max_connections`); see
    /// [`Config::connections_per_address`].
    pub max_connections_per_address: usize,
    /// `SOM_CONSOLE`: whether `som serve` serves the staff console at `/console/`.
    pub console: bool,
    /// `SOM_METRICS_LISTEN`.
    pub metrics_listen: Option<String>,
    /// `SOM_METRICS_TOKEN`.
    pub metrics_token: Option<Secret>,
    /// `SOM_IDEMPOTENCY_TTL`.
    pub idempotency_ttl: Duration,
    /// `SOM_OUTBOX_*`.
    pub outbox: DispatchConfig,
    /// `SOM_REFUND_RECOVERY_AFTER` (also how long a capture or void may wait for the provider
    /// before the dispatcher finishes it).
    pub refund_recovery_after: Duration,
    /// `SOM_CAPTURE_METHOD`: the capture method of payments whose initiation names none.
    pub capture_method: CaptureMethod,
    /// `SOM_AUTHORIZATION_TTL`.
    pub authorization_ttl: Duration,
    /// `SOM_AUTHORIZATION_WARN_BEFORE`.
    pub authorization_warn_before: Duration,
    /// `SOM_PAYMENT_PROVIDER`: `mock` or `stripe`.
    pub payment_provider: String,
    /// `SOM_STRIPE_SECRET_KEY`.
    pub stripe_secret_key: Option<Secret>,
    /// `SOM_STRIPE_WEBHOOK_SECRET`.
    pub stripe_webhook_secret: Option<Secret>,
    /// `SOM_STRIPE_API_BASE`.
    pub stripe_api_base: String,
    /// `SOM_STRIPE_TIMEOUT`.
    pub stripe_timeout: Duration,
    /// `SOM_MOCK_TRANSIENT_FAILURES`.
    pub mock_transient_failures: u32,
}

impl Default for Config {
    fn default() -> Self {
        // Only the defaults of VARIABLES are read here; a test proves they parse, so this
        // cannot fail on any input.
        #[allow(clippy::expect_used)]
        Config::from_lookup(|_| None).expect("the documented defaults parse")
    }
}

/// The non-empty, trimmed items of a comma-separated list.
fn list(raw: &str) -> Vec<String> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A duration as [`parse_duration`] reads it, in its largest whole unit: `3d`, `90m`, `250ms`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// Parses `90`, `90s`, `15m`, `2h`, `1d`, `250ms`.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    match unit.trim() {
        "" | "s" => secs(1),
        "ms" => Some(Duration::from_millis(n)),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    }
}

/// Prefixes of `SOM_*` variables that SOM's own build, test, CI and benchmark scripts read:
/// never reported as unknown.
const SCRIPT_PREFIXES: [&str; 5] = ["SOM_TEST_", "SOM_CI_", "SOM_FUZZ_", "SOM_BENCH_", "SOM_BUILD_"];

/// The `SOM_*` names among `names` that are not settings (a misspelling changes nothing and
/// would otherwise say nothing), each with the known setting it is most likely meant to be
/// (`SOM_DATABSE_URL` → `SOM_DATABASE_URL`), when one is close. Variables of SOM's own build,
/// test and benchmark scripts (`SOM_TEST_…`, `SOM_CI_…`, `SOM_FUZZ_…`, `SOM_BENCH_…`,
/// `SOM_BUILD_…`, `SOM_BINARY`) are not reported.
pub fn unknown_variables(names: impl IntoIterator<Item = String>) -> Vec<(String, Option<&'static str>)> {
    let mut unknown: Vec<(String, Option<&'static str>)> = names
        .into_iter()
        .filter(|n| n.starts_with("SOM_") && n != "SOM_BINARY")
        .filter(|n| !SCRIPT_PREFIXES.iter().any(|p| n.starts_with(p)))
        .filter(|n| !VARIABLES.iter().any(|v| v.name == n))
        .map(|n| {
            let nearest = VARIABLES
                .iter()
                .map(|v| (edit_distance(&n, v.name), v.name))
                .min()
                .filter(|(d, known)| *d <= (known.len() / 4).max(2))
                .map(|(_, known)| known);
            (n, nearest)
        })
        .collect();
    unknown.sort();
    unknown
}

/// Levenshtein distance between two ASCII-ish names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

impl Config {
    /// Reads the process environment (a `.env` file is the front end's business).
    pub fn from_env() -> Result<Config> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`; unset or empty variables take their defaults. Every
    /// invalid variable is reported by name.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let mut errors = ValidationErrors::new();
        let get = |name: &str| -> String {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .or_else(|| VARIABLES.iter().find(|v| v.name == name).map(|v| v.default.to_owned()))
                .unwrap_or_default()
        };
        let mut duration = |name: &str| {
            let raw = get(name);
            parse_duration(&raw).unwrap_or_else(|| {
                errors.add(name, "must be a duration such as 90s, 15m, 2h or 1d");
                Duration::ZERO
            })
        };
        let access_token_ttl = duration("SOM_ACCESS_TOKEN_TTL");
        let refresh_token_ttl = duration("SOM_REFRESH_TOKEN_TTL");
        let idempotency_ttl = duration("SOM_IDEMPOTENCY_TTL");
        let poll_interval = duration("SOM_OUTBOX_POLL_INTERVAL");
        let lease = duration("SOM_OUTBOX_LEASE");
        let backoff_base = duration("SOM_OUTBOX_BACKOFF_BASE");
        let backoff_cap = duration("SOM_OUTBOX_BACKOFF_CAP");
        let request_timeout = duration("SOM_REQUEST_TIMEOUT");
        let smtp_timeout = duration("SOM_SMTP_TIMEOUT");
        let webhook_timeout = duration("SOM_WEBHOOK_TIMEOUT");
        let webhook_disable_after = duration("SOM_WEBHOOK_DISABLE_AFTER");
        let delivery_retention = duration("SOM_DELIVERY_RETENTION");
        let header_read_timeout = duration("SOM_HEADER_READ_TIMEOUT");
        let session_max_age = duration("SOM_SESSION_MAX_AGE");
        let session_cache_ttl = duration("SOM_SESSION_CACHE_TTL");
        let replica_max_lag = duration("SOM_REPLICA_MAX_LAG");
        let refund_recovery_after = duration("SOM_REFUND_RECOVERY_AFTER");
        let authorization_ttl = duration("SOM_AUTHORIZATION_TTL");
        let authorization_warn_before = duration("SOM_AUTHORIZATION_WARN_BEFORE");
        let stripe_timeout = duration("SOM_STRIPE_TIMEOUT");
        if session_cache_ttl > MAX_SESSION_CACHE_TTL {
            errors.add(
                "SOM_SESSION_CACHE_TTL",
                "must be at most 60s: a session ended in another process stays usable here this long",
            );
        }
        let mut number = |name: &str, min: u64| -> u64 {
            match get(name).trim().parse::<u64>() {
                Ok(n) if n >= min && n <= u64::from(u32::MAX) => n,
                _ => {
                    errors.add(name, format!("must be a whole number of at least {min}"));
                    min
                }
            }
        };
        let database_pool_size = number("SOM_DATABASE_POOL_SIZE", 1);
        let body_limit = number("SOM_BODY_LIMIT", 1);
        let auth_rate_limit = number("SOM_AUTH_RATE_LIMIT", 0);
        let password_hash_concurrency = number("SOM_PASSWORD_HASH_CONCURRENCY", 1);
        let login_failure_limit = number("SOM_LOGIN_FAILURE_LIMIT", 0);
        let max_connections = number("SOM_MAX_CONNECTIONS", 1);
        let max_connections_per_address = number("SOM_MAX_CONNECTIONS_PER_ADDRESS", 0);
        let batch_size = number("SOM_OUTBOX_BATCH_SIZE", 1);
        let max_attempts = number("SOM_OUTBOX_MAX_ATTEMPTS", 1);
        let mock_transient_failures = number("SOM_MOCK_TRANSIENT_FAILURES", 0);
        let currency = Currency::parse(&get("SOM_CURRENCY")).unwrap_or_else(|e| {
            errors.add("SOM_CURRENCY", e.to_string());
            Currency::USD
        });
        let notifiers: Vec<String> =
            get("SOM_NOTIFIER").split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
        if notifiers.is_empty() {
            errors.add("SOM_NOTIFIER", "must name at least one channel");
        }
        let jwt_secret = lookup("SOM_JWT_SECRET").filter(|s| !s.is_empty());
        if let Some(Err(problem)) = jwt_secret.as_deref().map(check_jwt_secret) {
            errors.add("SOM_JWT_SECRET", problem);
        }
        let cors_origins = list(&get("SOM_CORS_ORIGINS"));
        if cors_origins.iter().any(|o| o == "*") {
            errors.add(
                "SOM_CORS_ORIGINS",
                "must list origins (https://app.example.com); \"*\" is not supported because the API takes credentials",
            );
        }
        let trusted_proxies = list(&get("SOM_TRUSTED_PROXIES"));
        for proxy in &trusted_proxies {
            if crate::net::parse_cidr(proxy).is_none() {
                errors.add("SOM_TRUSTED_PROXIES", format!("{proxy:?} is not an IP address or CIDR range"));
            }
        }
        let database_url = get("SOM_DATABASE_URL");
        let database_read_urls = list(&get("SOM_DATABASE_READ_URLS"));
        if !database_read_urls.is_empty() {
            let postgres = |u: &str| u.starts_with("postgres://") || u.starts_with("postgresql://");
            if !postgres(&database_url) {
                errors.add("SOM_DATABASE_READ_URLS", "read replicas need a PostgreSQL SOM_DATABASE_URL");
            } else if let Some(bad) = database_read_urls.iter().find(|u| !postgres(u)) {
                errors.add("SOM_DATABASE_READ_URLS", format!("{} is not a postgres:// URL", redact_url(bad)));
            }
        }
        if replica_max_lag.is_zero() {
            errors.add("SOM_REPLICA_MAX_LAG", "must be longer than zero");
        }
        let log_format = get("SOM_LOG_FORMAT").trim().to_ascii_lowercase();
        if !matches!(log_format.as_str(), "text" | "json") {
            errors.add("SOM_LOG_FORMAT", "must be text or json");
        }
        let payment_provider = get("SOM_PAYMENT_PROVIDER").trim().to_ascii_lowercase();
        let stripe_secret_key = lookup("SOM_STRIPE_SECRET_KEY").filter(|s| !s.trim().is_empty()).map(Secret::new);
        match payment_provider.as_str() {
            "mock" => {}
            "stripe" if stripe_secret_key.is_none() => {
                errors.add("SOM_STRIPE_SECRET_KEY", "is required when SOM_PAYMENT_PROVIDER=stripe");
            }
            "stripe" => {}
            _ => errors.add("SOM_PAYMENT_PROVIDER", "must be mock or stripe"),
        }
        let capture_method = CaptureMethod::parse(&get("SOM_CAPTURE_METHOD")).unwrap_or_else(|| {
            errors.add("SOM_CAPTURE_METHOD", "must be automatic or manual");
            CaptureMethod::Automatic
        });
        if authorization_ttl.is_zero() {
            errors.add("SOM_AUTHORIZATION_TTL", "must be longer than zero");
        }
        let mut switch = |name: &str| match get(name).trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => true,
            "off" | "false" | "0" | "no" => false,
            _ => {
                errors.add(name, "must be on or off");
                false
            }
        };
        let console = switch("SOM_CONSOLE");
        let webhook_allow_private = switch("SOM_WEBHOOK_ALLOW_PRIVATE");
        let event_stream = lookup("SOM_EVENT_STREAM").map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        if let Some(url) = &event_stream
            && !["nats://", "tls://", "amqp://"].iter().any(|p| url.to_ascii_lowercase().starts_with(p))
        {
            errors.add("SOM_EVENT_STREAM", "must be a nats:// or amqp:// URL");
        }
        let event_stream_name = get("SOM_EVENT_STREAM_NAME").trim().to_owned();
        if event_stream_name.is_empty()
            || event_stream_name.len() > 64
            || !event_stream_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            errors.add("SOM_EVENT_STREAM_NAME", "must be 1 to 64 letters, digits, _ or -");
        }
        errors.into_result()?;
        let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Config {
            database_url,
            database_pool_size: small(database_pool_size),
            database_read_urls,
            replica_max_lag,
            jwt_secret: jwt_secret.map(Secret::new),
            access_token_ttl,
            refresh_token_ttl,
            currency,
            notifiers,
            smtp_url: lookup("SOM_SMTP_URL").filter(|s| !s.is_empty()).map(Secret::new),
            smtp_timeout,
            email_from: get("SOM_EMAIL_FROM"),
            webhook_urls: list(&get("SOM_WEBHOOK_URLS")),
            webhook_secret: lookup("SOM_WEBHOOK_SECRET").filter(|s| !s.is_empty()).map(Secret::new),
            webhook_timeout,
            webhook_allow_private,
            webhook_disable_after,
            delivery_retention,
            event_stream: event_stream.map(Secret::new),
            event_stream_name,
            listen: get("SOM_LISTEN"),
            body_limit: usize::try_from(body_limit).unwrap_or(usize::MAX),
            request_timeout,
            header_read_timeout,
            cors_origins,
            log: get("SOM_LOG"),
            log_format,
            auth_rate_limit: small(auth_rate_limit),
            password_hash_concurrency: usize::try_from(password_hash_concurrency).unwrap_or(1),
            session_max_age,
            session_cache_ttl,
            login_failure_limit: small(login_failure_limit),
            trusted_proxies,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            max_connections_per_address: usize::try_from(max_connections_per_address).unwrap_or(usize::MAX),
            console,
            metrics_listen: lookup("SOM_METRICS_LISTEN").map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
            metrics_token: lookup("SOM_METRICS_TOKEN").filter(|s| !s.is_empty()).map(Secret::new),
            idempotency_ttl,
            outbox: DispatchConfig {
                batch_size: small(batch_size),
                lease,
                poll_interval,
                backoff_base,
                backoff_cap,
                max_attempts: small(max_attempts),
            },
            refund_recovery_after,
            capture_method,
            authorization_ttl,
            authorization_warn_before,
            payment_provider,
            stripe_secret_key,
            stripe_webhook_secret: lookup("SOM_STRIPE_WEBHOOK_SECRET")
                .filter(|s| !s.trim().is_empty())
                .map(Secret::new),
            stripe_api_base: get("SOM_STRIPE_API_BASE"),
            stripe_timeout,
            mock_transient_failures: small(mock_transient_failures),
        })
    }

    /// Open connections one client address may hold: `max_connections_per_address`, or a
    /// quarter of `max_connections` when that is 0; never more than `max_connections`, never
    /// less than 1.
    pub fn connections_per_address(&self) -> usize {
        let cap = self.max_connections.max(1);
        match self.max_connections_per_address {
            0 => (cap / 4).max(1),
            n => n.min(cap),
        }
    }

    /// The database file `database_url` names, for a file-backed SQLite database; `None` for an
    /// in-memory database or a server database.
    pub fn database_file(&self) -> Option<std::path::PathBuf> {
        sqlite_file(&self.database_url).ok().flatten()
    }

    /// The configuration reference as a Markdown table (the operator documentation embeds it).
    pub fn reference_markdown() -> String {
        let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
        for v in VARIABLES {
            let default = if v.default.is_empty() { "—".to_owned() } else { format!("`{}`", v.default) };
            out.push_str(&format!("| `{}` | {default} | {} |\n", v.name, v.help.replace('|', "\\|")));
        }
        out
    }

    /// An `.env` file listing every variable with its default and meaning.
    pub fn env_example() -> String {
        let mut out = String::from("# Every variable SOM reads, with its default (generated by `som config env`).\n");
        for v in VARIABLES {
            out.push_str(&format!("\n# {}\n#{}={}\n", v.help, v.name, v.default));
        }
        out
    }

    /// The database URL with any password replaced by `***`, for logs and messages.
    pub fn redacted_database_url(&self) -> String {
        redact_url(&self.database_url)
    }
}

/// The window of [`Config::login_failure_limit`].
pub const LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(login_failure_window_minutes!() * 60);

/// Signing secrets published as examples; a deployment that kept one can be forged offline.
const PLACEHOLDER_SECRETS: &[&str] = &["change-me-to-a-long-random-secret-of-32-bytes"];

/// Why `secret` must not sign tokens, if it must not: shorter than 32 bytes, one character
/// repeated, or a published placeholder (anything with `change-me`, `changeme` or `replace-me`).
pub fn check_jwt_secret(secret: &str) -> std::result::Result<(), &'static str> {
    let lower = secret.to_ascii_lowercase();
    if secret.len() < 32 {
        Err("must be at least 32 bytes")
    } else if secret.chars().all(|c| secret.starts_with(c)) {
        Err("must not be one character repeated")
    } else if PLACEHOLDER_SECRETS.contains(&secret)
        || ["change-me", "changeme", "replace-me", "replaceme"].iter().any(|p| lower.contains(p))
    {
        Err("is a published placeholder; generate one, e.g. `openssl rand -hex 32`")
    } else {
        Ok(())
    }
}

/// How the dispatcher paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchConfig {
    /// Rows claimed per round.
    pub batch_size: u32,
    /// How long a claim lasts before another dispatcher may take the row.
    pub lease: Duration,
    /// How often to look for rows written by other processes (or due for retry) when not woken.
    pub poll_interval: Duration,
    /// Delay after the first failure; doubles with each further failure.
    pub backoff_base: Duration,
    /// Longest delay between attempts.
    pub backoff_cap: Duration,
    /// Attempts before a row is dead-lettered.
    pub max_attempts: u32,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            batch_size: 32,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(600),
            max_attempts: 8,
        }
    }
}

/// The file a `sqlite:` URL names (`sqlite://relative.db`, `sqlite:///absolute/path.db`): `None`
/// for an in-memory database (`sqlite::memory:`); an error for a URL that is not SQLite's or
/// names no file.
pub(crate) fn sqlite_file(url: &str) -> Result<Option<std::path::PathBuf>> {
    let rest = url
        .strip_prefix("sqlite:")
        .ok_or_else(|| crate::error::Error::invalid("SOM_DATABASE_URL", "not a sqlite URL"))?;
    let rest = rest.split_once('?').map_or(rest, |(path, _)| path);
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path == ":memory:" || path.is_empty() && rest == ":memory:" {
        return Ok(None);
    }
    if path.is_empty() {
        return Err(crate::error::Error::invalid("SOM_DATABASE_URL", "the sqlite URL names no file"));
    }
    Ok(Some(std::path::PathBuf::from(path)))
}

#[cfg(test)]
mod tests;
