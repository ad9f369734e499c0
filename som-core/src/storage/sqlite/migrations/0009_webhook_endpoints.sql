-- Webhook endpoints managed over the API, each with its own secret and event filter, and a
-- record of every attempt to deliver an event to one. An event's rows for one endpoint are
-- outbox rows on the channel 'webhook:<endpoint id>', written when the event's 'webhook' row
-- is fanned out.

CREATE TABLE webhook_endpoints (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    url                   TEXT NOT NULL,
    events                TEXT NOT NULL,
    description           TEXT,
    enabled               INTEGER NOT NULL DEFAULT 1,
    disabled_reason       TEXT,
    secret                TEXT NOT NULL,
    previous_secret       TEXT,
    previous_secret_until INTEGER,
    failing_since         INTEGER,
    from_config           INTEGER NOT NULL DEFAULT 0,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE UNIQUE INDEX webhook_endpoints_config_url ON webhook_endpoints (url) WHERE from_config = 1;

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id     INTEGER NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    succeeded       INTEGER NOT NULL,
    response_status INTEGER,
    latency_ms      INTEGER NOT NULL,
    response_body   TEXT,
    error           TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
