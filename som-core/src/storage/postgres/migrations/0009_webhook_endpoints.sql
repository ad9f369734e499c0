-- Webhook endpoints managed over the API, each with its own secret and event filter, and a
-- record of every attempt to deliver an event to one. An event's rows for one endpoint are
-- outbox rows on the channel 'webhook:<endpoint id>', written when the event's 'webhook' row
-- is fanned out.

CREATE TABLE webhook_endpoints (
    id                    BIGSERIAL PRIMARY KEY,
    url                   TEXT NOT NULL,
    events                TEXT NOT NULL,
    description           TEXT,
    enabled               BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason       TEXT,
    secret                TEXT NOT NULL,
    previous_secret       TEXT,
    previous_secret_until TIMESTAMPTZ,
    failing_since         TIMESTAMPTZ,
    from_config           BOOLEAN NOT NULL DEFAULT FALSE,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX webhook_endpoints_config_url ON webhook_endpoints (url) WHERE from_config;

CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    endpoint_id     BIGINT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    succeeded       BOOLEAN NOT NULL,
    response_status INTEGER,
    latency_ms      BIGINT NOT NULL,
    response_body   TEXT,
    error           TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
