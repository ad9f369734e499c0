-- Refunds, full and partial. Orders and payments gain the PARTIALLY_REFUNDED status and the
-- amounts refunded; SQLite cannot change a CHECK constraint in place, so both tables are
-- rebuilt (foreign keys are off while this runs and checked before it commits).

CREATE TABLE orders_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    status         TEXT NOT NULL
        CHECK (status IN ('CREATED', 'PAID', 'CANCELLED', 'PARTIALLY_REFUNDED', 'REFUNDED')),
    currency       TEXT NOT NULL,
    total_minor    INTEGER NOT NULL CHECK (total_minor > 0),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    refunded_minor INTEGER NOT NULL DEFAULT 0 CHECK (refunded_minor BETWEEN 0 AND total_minor)
);
INSERT INTO orders_new (id, user_id, status, currency, total_minor, created_at, updated_at)
    SELECT id, user_id, status, currency, total_minor, created_at, updated_at FROM orders;
DROP TABLE orders;
ALTER TABLE orders_new RENAME TO orders;
CREATE INDEX orders_user ON orders (user_id, id);
CREATE INDEX orders_user_status ON orders (user_id, status, id);
CREATE INDEX orders_status ON orders (status, id);
CREATE INDEX orders_created ON orders (created_at, id);

CREATE TABLE payments_new (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id              INTEGER NOT NULL REFERENCES orders (id),
    user_id               INTEGER NOT NULL REFERENCES users (id),
    provider              TEXT NOT NULL,
    provider_payment_id   TEXT NOT NULL,
    transaction_id        TEXT NOT NULL UNIQUE,
    method                TEXT NOT NULL,
    attempt               INTEGER NOT NULL,
    amount_minor          INTEGER NOT NULL CHECK (amount_minor > 0),
    currency              TEXT NOT NULL,
    status                TEXT NOT NULL
        CHECK (status IN ('PENDING', 'SUCCESS', 'FAILED', 'CANCELLED', 'PARTIALLY_REFUNDED', 'REFUNDED')),
    failure_reason        TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    transient_failures    INTEGER NOT NULL DEFAULT 0,
    -- Refunds succeeded, and refunds succeeded or in flight: the database refuses to set
    -- aside more than was captured, whatever the concurrency.
    refunded_minor        INTEGER NOT NULL DEFAULT 0,
    refund_reserved_minor INTEGER NOT NULL DEFAULT 0,
    CHECK (0 <= refunded_minor AND refunded_minor <= refund_reserved_minor AND refund_reserved_minor <= amount_minor)
);
INSERT INTO payments_new (id, order_id, user_id, provider, provider_payment_id, transaction_id, method, attempt,
        amount_minor, currency, status, failure_reason, created_at, updated_at, transient_failures)
    SELECT id, order_id, user_id, provider, provider_payment_id, transaction_id, method, attempt,
        amount_minor, currency, status, failure_reason, created_at, updated_at, transient_failures FROM payments;
DROP TABLE payments;
ALTER TABLE payments_new RENAME TO payments;
CREATE INDEX payments_order ON payments (order_id, id);
CREATE UNIQUE INDEX payments_one_live ON payments (order_id) WHERE status IN ('PENDING', 'SUCCESS');

CREATE TABLE refunds (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id         INTEGER NOT NULL REFERENCES payments (id),
    order_id           INTEGER NOT NULL REFERENCES orders (id),
    user_id            INTEGER NOT NULL REFERENCES users (id),
    amount_minor       INTEGER NOT NULL CHECK (amount_minor > 0),
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED')),
    provider_refund_id TEXT,
    reason             TEXT,
    failure_reason     TEXT,
    actor              TEXT NOT NULL,
    -- The caller's idempotency key (scope and key): the same request never makes two refunds.
    request_key        TEXT UNIQUE,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment_id, id);
CREATE INDEX refunds_pending ON refunds (created_at, id) WHERE status = 'PENDING';

-- Notifications can be listed per order.
ALTER TABLE outbox ADD COLUMN order_id INTEGER;
UPDATE outbox SET order_id = json_extract(payload, '$.order_id');
CREATE INDEX outbox_order ON outbox (order_id, id);
