-- Refunds, full and partial. Orders and payments gain the PARTIALLY_REFUNDED status and the
-- amounts refunded.

ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('CREATED', 'PAID', 'CANCELLED', 'PARTIALLY_REFUNDED', 'REFUNDED'));
ALTER TABLE orders ADD COLUMN refunded_minor BIGINT NOT NULL DEFAULT 0
    CHECK (refunded_minor BETWEEN 0 AND total_minor);
CREATE INDEX orders_created ON orders (created_at, id);

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('PENDING', 'SUCCESS', 'FAILED', 'CANCELLED', 'PARTIALLY_REFUNDED', 'REFUNDED'));
-- Refunds succeeded, and refunds succeeded or in flight: the database refuses to set aside
-- more than was captured, whatever the concurrency.
ALTER TABLE payments ADD COLUMN refunded_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN refund_reserved_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments ADD CONSTRAINT payments_refund_amounts
    CHECK (0 <= refunded_minor AND refunded_minor <= refund_reserved_minor AND refund_reserved_minor <= amount_minor);

CREATE TABLE refunds (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id         BIGINT NOT NULL REFERENCES payments (id),
    order_id           BIGINT NOT NULL REFERENCES orders (id),
    user_id            BIGINT NOT NULL REFERENCES users (id),
    amount_minor       BIGINT NOT NULL CHECK (amount_minor > 0),
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED')),
    provider_refund_id TEXT,
    reason             TEXT,
    failure_reason     TEXT,
    actor              TEXT NOT NULL,
    -- The caller's idempotency key (scope and key): the same request never makes two refunds.
    request_key        TEXT UNIQUE,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment_id, id);
CREATE INDEX refunds_pending ON refunds (created_at, id) WHERE status = 'PENDING';

-- Notifications can be listed per order.
ALTER TABLE outbox ADD COLUMN order_id BIGINT;
UPDATE outbox SET order_id = (payload::jsonb ->> 'order_id')::bigint;
CREATE INDEX outbox_order ON outbox (order_id, id);
