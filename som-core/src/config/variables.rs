//! The table of every `SOM_*` setting: its name, default and meaning.

use super::ConfigVar;

/// Every variable SOM reads, with its default and meaning.
pub const VARIABLES: &[ConfigVar] = &[
    ConfigVar {
        name: "SOM_DATABASE_URL",
        default: "sqlite://som.db",
        help: "Database: sqlite://relative.db, sqlite:///absolute/path.db, sqlite::memory:, or postgres://user@host/db",
    },
    ConfigVar {
        name: "SOM_DATABASE_POOL_SIZE",
        default: "8",
        help: "Database connections (SQLite: reader connections, opened as reads need them; PostgreSQL: this many each for single-statement reads, the writers (single statements, and the transactions of payment initiations with a key, payment completions, cancellations and refunds), other transactions, and reads on each replica)",
    },
    ConfigVar {
        name: "SOM_DATABASE_READ_URLS",
        default: "",
        help: "PostgreSQL streaming replicas (comma-separated postgres:// URLs) for users' reads that may be a moment old: order lists, details and histories, fulfilment and return pages, staff lists; a user who just wrote reads from a replica only once it has replayed that write. Writes, reads that decide writes and the CLI's reads use SOM_DATABASE_URL",
    },
    ConfigVar {
        name: "SOM_REPLICA_MAX_LAG",
        default: "5s",
        help: "A read replica further behind the primary than this, or not answering, or no longer in recovery, is skipped until it catches up (reads then go to the primary)",
    },
    ConfigVar {
        name: "SOM_JWT_SECRET",
        default: "",
        help: "Token signing secret: at least 32 bytes, not one repeated character, not a placeholder; when unset a random one is generated once and kept in the database (a warning says so)",
    },
    ConfigVar {
        name: "SOM_ACCESS_TOKEN_TTL",
        default: "60m",
        help: "Access token lifetime (s, m, h, d suffixes; bare number = seconds)",
    },
    ConfigVar {
        name: "SOM_REFRESH_TOKEN_TTL",
        default: "1d",
        help: "Refresh token lifetime (each refresh issues a new one, never beyond the session's maximum age)",
    },
    ConfigVar {
        name: "SOM_SESSION_MAX_AGE",
        default: "30d",
        help: "Absolute lifetime of a login session: refreshing never extends it past this age",
    },
    ConfigVar {
        name: "SOM_SESSION_CACHE_TTL",
        default: "1s",
        help: "How long a session seen live is trusted without asking the database, at most 60s; changes made in this process (logout, disabling, staff rights) apply at once, changes made by another process within this time; 0 asks the database on every request",
    },
    ConfigVar { name: "SOM_CURRENCY", default: "USD", help: "Currency of orders that name none (ISO 4217)" },
    ConfigVar {
        name: "SOM_NOTIFIER",
        default: "log",
        help: "Notification channels, comma-separated: log, smtp, webhook (events to the endpoints managed over /api/v1/webhook-endpoints/); each has its own delivery state. SOM_EVENT_STREAM adds the stream channel",
    },
    ConfigVar {
        name: "SOM_SMTP_URL",
        default: "",
        help: "SMTP server for the smtp channel: smtp://user:pass@host:587 (STARTTLS), smtps://host:465 (TLS); plain to loopback or with ?tls=none",
    },
    ConfigVar { name: "SOM_SMTP_TIMEOUT", default: "10s", help: "Longest time one SMTP delivery may take" },
    ConfigVar {
        name: "SOM_WEBHOOK_URLS",
        default: "",
        help: "Comma-separated http(s) URLs kept as webhook endpoints receiving every event (made at start, signed with SOM_WEBHOOK_SECRET); endpoints are otherwise managed over /api/v1/webhook-endpoints/",
    },
    ConfigVar {
        name: "SOM_WEBHOOK_SECRET",
        default: "",
        help: "Secret (at least 16 bytes) signing the calls to the SOM_WEBHOOK_URLS endpoints",
    },
    ConfigVar { name: "SOM_WEBHOOK_TIMEOUT", default: "10s", help: "Longest time one webhook call may take" },
    ConfigVar {
        name: "SOM_WEBHOOK_ALLOW_PRIVATE",
        default: "off",
        help: "on: endpoints made over the API may be private, loopback or link-local addresses (development); off refuses them, at creation and at every call",
    },
    ConfigVar {
        name: "SOM_WEBHOOK_DISABLE_AFTER",
        default: "3d",
        help: "An endpoint whose deliveries have all failed for this long is disabled and staff are told",
    },
    ConfigVar {
        name: "SOM_DELIVERY_RETENTION",
        default: "30d",
        help: "Webhook delivery records older than this are deleted",
    },
    ConfigVar {
        name: "SOM_EVENT_STREAM",
        default: "",
        help: "Publish every event to a broker: nats://host:4222 (JetStream, subject = event type) or amqp://user:pass@host:5672/%2f (a durable topic exchange, routing key = event type); empty: off",
    },
    ConfigVar {
        name: "SOM_EVENT_STREAM_NAME",
        default: "SOM_EVENTS",
        help: "The JetStream stream (made if missing, subjects som.>) or the RabbitMQ exchange events are published to",
    },
    ConfigVar {
        name: "SOM_EMAIL_FROM",
        default: "SOM <no-reply@localhost>",
        help: "From address of notification emails",
    },
    ConfigVar { name: "SOM_LISTEN", default: "127.0.0.1:8000", help: "Address som serve listens on" },
    ConfigVar { name: "SOM_BODY_LIMIT", default: "65536", help: "Largest accepted request body, in bytes" },
    ConfigVar {
        name: "SOM_REQUEST_TIMEOUT",
        default: "30s",
        help: "Longest time a request may take before it is answered 408",
    },
    ConfigVar {
        name: "SOM_HEADER_READ_TIMEOUT",
        default: "10s",
        help: "Longest time a client may take to send its request headers (slow clients are disconnected)",
    },
    ConfigVar {
        name: "SOM_CORS_ORIGINS",
        default: "",
        help: "Comma-separated origins allowed to call the API from browsers; empty turns CORS off",
    },
    ConfigVar {
        name: "SOM_LOG",
        default: "info",
        help: "Log filter (tracing EnvFilter syntax, e.g. info,som_core=debug); operator commands other than serve and worker log warnings only unless it is set",
    },
    ConfigVar {
        name: "SOM_LOG_FORMAT",
        default: "text",
        help: "Log lines on stderr: text (for people) or json (one JSON object per line, for log collectors)",
    },
    ConfigVar {
        name: "SOM_AUTH_RATE_LIMIT",
        default: "60",
        help: "Requests per minute per client address (IPv6: per /64) on token/, accounts/register/ and accounts/password/; 0 turns the limit off",
    },
    ConfigVar {
        name: "SOM_LOGIN_FAILURE_LIMIT",
        default: "10",
        help: concat!(
            "Failed logins per username (from any address) within ",
            login_failure_window_minutes!(),
            " minutes before that username is refused with 429 until the window has passed; 0 turns the limit off"
        ),
    },
    ConfigVar {
        name: "SOM_TRUSTED_PROXIES",
        default: "",
        help: "Comma-separated proxy addresses or CIDR ranges whose X-Forwarded-For is believed for the client address; empty (the default) believes no one",
    },
    ConfigVar {
        name: "SOM_MAX_CONNECTIONS",
        default: "1024",
        help: "Open client connections som serve accepts at once; further connections wait in the listen queue while established ones are served",
    },
    ConfigVar {
        name: "SOM_MAX_CONNECTIONS_PER_ADDRESS",
        default: "0",
        help: "Open connections one client address (IPv6: one /64) may hold at once; further ones are answered 429 and closed, so that one client cannot take every slot. Connections from SOM_TRUSTED_PROXIES are not counted per address. 0 (the default): a quarter of SOM_MAX_CONNECTIONS, at least 1",
    },
    ConfigVar {
        name: "SOM_CONSOLE",
        default: "on",
        help: "The staff console at /console/ on som serve's listener: on or off",
    },
    ConfigVar {
        name: "SOM_METRICS_LISTEN",
        default: "",
        help: "Serve /metrics on this address only (e.g. 127.0.0.1:9100) instead of on SOM_LISTEN",
    },
    ConfigVar {
        name: "SOM_METRICS_TOKEN",
        default: "",
        help: "When set, /metrics requires Authorization: Bearer <this token>",
    },
    ConfigVar {
        name: "SOM_PASSWORD_HASH_CONCURRENCY",
        default: "1",
        help: "Password hashes computed at once (each uses ~19 MiB while logins run; 1 keeps a server within 64 MiB)",
    },
    ConfigVar { name: "SOM_IDEMPOTENCY_TTL", default: "24h", help: "How long an idempotency key is remembered" },
    ConfigVar {
        name: "SOM_OUTBOX_POLL_INTERVAL",
        default: "1s",
        help: "How often the dispatcher looks for due notifications when not woken",
    },
    ConfigVar { name: "SOM_OUTBOX_BATCH_SIZE", default: "32", help: "Notifications claimed per dispatcher round" },
    ConfigVar {
        name: "SOM_OUTBOX_LEASE",
        default: "60s",
        help: "How long a claimed notification is held before another dispatcher may take it",
    },
    ConfigVar {
        name: "SOM_OUTBOX_BACKOFF_BASE",
        default: "1s",
        help: "Retry delay after the first failed delivery; doubles per failure",
    },
    ConfigVar { name: "SOM_OUTBOX_BACKOFF_CAP", default: "10m", help: "Longest retry delay" },
    ConfigVar {
        name: "SOM_OUTBOX_MAX_ATTEMPTS",
        default: "8",
        help: "Delivery attempts before a notification is dead-lettered",
    },
    ConfigVar {
        name: "SOM_REFUND_RECOVERY_AFTER",
        default: "30s",
        help: "A refund still waiting for the provider's answer this long (its request died, or the provider was down) is finished by the dispatcher with the same provider idempotency key",
    },
    ConfigVar {
        name: "SOM_CAPTURE_METHOD",
        default: "automatic",
        help: "How payments take money unless initiation says otherwise: automatic (confirmation captures) or manual (confirmation authorises; staff capture all or part later, or void)",
    },
    ConfigVar {
        name: "SOM_AUTHORIZATION_TTL",
        default: "7d",
        help: "An authorisation not captured this long after it was made is voided at the provider by the dispatcher and marked EXPIRED (card holds last about 7 days)",
    },
    ConfigVar {
        name: "SOM_AUTHORIZATION_WARN_BEFORE",
        default: "1d",
        help: "Staff are alerted (email, log) this long before an uncaptured authorisation expires",
    },
    ConfigVar {
        name: "SOM_PAYMENT_PROVIDER",
        default: "mock",
        help: "Payment provider: mock (no money moves; any user can mark their own order paid; a warning says so) or stripe",
    },
    ConfigVar {
        name: "SOM_STRIPE_SECRET_KEY",
        default: "",
        help: "Stripe secret key (sk_live_…, sk_test_… or a restricted rk_… key); required by the stripe provider",
    },
    ConfigVar {
        name: "SOM_STRIPE_WEBHOOK_SECRET",
        default: "",
        help: "Signing secret (whsec_…) of the Stripe webhook endpoint /api/v1/payments/webhooks/stripe/; without it Stripe's events are refused",
    },
    ConfigVar {
        name: "SOM_STRIPE_API_BASE",
        default: "https://api.stripe.com",
        help: "Stripe's API address (a Stripe-compatible server for tests)",
    },
    ConfigVar { name: "SOM_STRIPE_TIMEOUT", default: "30s", help: "Longest time one Stripe API call may take" },
    ConfigVar {
        name: "SOM_MOCK_TRANSIENT_FAILURES",
        default: "2",
        help: "Confirmations of a mock_transient_error payment that fail before one succeeds (counted per payment in the database, so retries from other processes count too)",
    },
];
