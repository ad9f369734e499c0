-- After payment: fulfilments (parcels of an order's items with tracking) and returns (items sent
-- back, ending in a refund). Orders gain where their goods are, beside their payment status.
-- A fulfilment's or return's lines are kept with it as JSON ([{"item_id": 7001, "quantity": 1}]);
-- the quantities are checked against the order's other rows while the order's row is locked.

ALTER TABLE orders ADD COLUMN fulfillment_status TEXT NOT NULL DEFAULT 'UNFULFILLED'
    CHECK (fulfillment_status IN ('UNFULFILLED', 'PARTIALLY_FULFILLED', 'FULFILLED', 'DELIVERED',
                                  'PARTIALLY_RETURNED', 'RETURNED'));

CREATE TABLE fulfillments (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id        BIGINT NOT NULL REFERENCES orders (id),
    user_id         BIGINT NOT NULL REFERENCES users (id),
    status          TEXT NOT NULL CHECK (status IN ('PENDING', 'SHIPPED', 'DELIVERED', 'CANCELLED')),
    items           TEXT NOT NULL,
    carrier         TEXT,
    tracking_number TEXT,
    tracking_url    TEXT,
    actor           TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    shipped_at      TIMESTAMPTZ,
    delivered_at    TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX fulfillments_order ON fulfillments (order_id, id);
CREATE INDEX fulfillments_status ON fulfillments (status, id);

CREATE TABLE returns (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id     BIGINT NOT NULL REFERENCES orders (id),
    user_id      BIGINT NOT NULL REFERENCES users (id),
    status       TEXT NOT NULL CHECK (status IN ('REQUESTED', 'APPROVED', 'RECEIVED', 'REFUNDED', 'REJECTED')),
    items        TEXT NOT NULL,
    reason       TEXT,
    note         TEXT,
    refund_id    BIGINT REFERENCES refunds (id),
    refund_minor BIGINT,
    actor        TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX returns_order ON returns (order_id, id);
CREATE INDEX returns_status ON returns (status, id);
CREATE UNIQUE INDEX returns_refund ON returns (refund_id) WHERE refund_id IS NOT NULL;
