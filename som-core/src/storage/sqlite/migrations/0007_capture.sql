-- Authorise now, capture later. Orders gain the AUTHORIZED status; payments gain AUTHORIZED,
-- VOIDED and EXPIRED, their capture method, the amount captured (refunds apply to it), when an
-- authorisation runs out, and the settlement (capture, void or expiry) claimed and not finished
-- yet. SQLite cannot change a CHECK constraint in place, so both tables are rebuilt (foreign
-- keys are off while this runs and checked before it commits).

CREATE TABLE orders_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    status         TEXT NOT NULL
        CHECK (status IN ('CREATED', 'AUTHORIZED', 'PAID', 'CANCELLED', 'PARTIALLY_REFUNDED', 'REFUNDED')),
    currency       TEXT NOT NULL,
    total_minor    INTEGER NOT NULL CHECK (total_minor > 0),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    refunded_minor INTEGER NOT NULL DEFAULT 0 CHECK (refunded_minor BETWEEN 0 AND total_minor)
);
INSERT INTO orders_new (id, user_id, status, currency, total_minor, created_at, updated_at, refunded_minor)
    SELECT id, user_id, status, currency, total_minor, created_at, updated_at, refunded_minor FROM orders;
DROP TABLE orders;
ALTER TABLE orders_new RENAME TO orders;
CREATE INDEX orders_user ON orders (user_id, id);
CREATE INDEX orders_user_status ON orders (user_id, status, id);
CREATE INDEX orders_status ON orders (status, id);
CREATE INDEX orders_created ON orders (created_at, id);

CREATE TABLE payments_new (
    id                       INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id                 INTEGER NOT NULL REFERENCES orders (id),
    user_id                  INTEGER NOT NULL REFERENCES users (id),
    provider                 TEXT NOT NULL,
    provider_payment_id      TEXT NOT NULL,
    transaction_id           TEXT NOT NULL UNIQUE,
    method                   TEXT NOT NULL,
    attempt                  INTEGER NOT NULL,
    amount_minor             INTEGER NOT NULL CHECK (amount_minor > 0),
    currency                 TEXT NOT NULL,
    status                   TEXT NOT NULL
        CHECK (status IN ('PENDING', 'AUTHORIZED', 'SUCCESS', 'FAILED', 'CANCELLED', 'PARTIALLY_REFUNDED',
                          'REFUNDED', 'VOIDED', 'EXPIRED')),
    failure_reason           TEXT,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL,
    transient_failures       INTEGER NOT NULL DEFAULT 0,
    refunded_minor           INTEGER NOT NULL DEFAULT 0,
    refund_reserved_minor    INTEGER NOT NULL DEFAULT 0,
    client_secret            TEXT,
    next_action              TEXT,
    provider_closed_at       INTEGER,
    capture_method           TEXT NOT NULL DEFAULT 'automatic' CHECK (capture_method IN ('automatic', 'manual')),
    captured_minor           INTEGER NOT NULL DEFAULT 0 CHECK (captured_minor BETWEEN 0 AND amount_minor),
    authorization_expires_at INTEGER,
    settle_action            TEXT CHECK (settle_action IN ('capture', 'void', 'expire')),
    settle_minor             INTEGER,
    settle_started_at        INTEGER,
    expiry_warned_at         INTEGER,
    CHECK (0 <= refunded_minor AND refunded_minor <= refund_reserved_minor AND refund_reserved_minor <= amount_minor)
);
INSERT INTO payments_new (id, order_id, user_id, provider, provider_payment_id, transaction_id, method, attempt,
        amount_minor, currency, status, failure_reason, created_at, updated_at, transient_failures,
        refunded_minor, refund_reserved_minor, client_secret, next_action, provider_closed_at, captured_minor)
    SELECT id, order_id, user_id, provider, provider_payment_id, transaction_id, method, attempt,
        amount_minor, currency, status, failure_reason, created_at, updated_at, transient_failures,
        refunded_minor, refund_reserved_minor, client_secret, next_action, provider_closed_at,
        CASE WHEN status IN ('SUCCESS', 'PARTIALLY_REFUNDED', 'REFUNDED') THEN amount_minor ELSE 0 END
    FROM payments;
DROP TABLE payments;
ALTER TABLE payments_new RENAME TO payments;
CREATE INDEX payments_order ON payments (order_id, id);
CREATE UNIQUE INDEX payments_one_live ON payments (order_id) WHERE status IN ('PENDING', 'AUTHORIZED', 'SUCCESS');
CREATE INDEX payments_provider_id ON payments (provider, provider_payment_id);
CREATE INDEX payments_open_at_provider ON payments (id) WHERE provider_closed_at IS NULL;
CREATE INDEX payments_authorized ON payments (authorization_expires_at, id) WHERE status = 'AUTHORIZED';
