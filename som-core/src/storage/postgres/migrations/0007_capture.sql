-- Authorise now, capture later. Orders gain the AUTHORIZED status; payments gain AUTHORIZED,
-- VOIDED and EXPIRED, their capture method, the amount captured (refunds apply to it), when an
-- authorisation runs out, and the settlement (capture, void or expiry) claimed and not finished
-- yet.

ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('CREATED', 'AUTHORIZED', 'PAID', 'CANCELLED', 'PARTIALLY_REFUNDED', 'REFUNDED'));

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('PENDING', 'AUTHORIZED', 'SUCCESS', 'FAILED', 'CANCELLED', 'PARTIALLY_REFUNDED',
                      'REFUNDED', 'VOIDED', 'EXPIRED'));
ALTER TABLE payments ADD COLUMN capture_method TEXT NOT NULL DEFAULT 'automatic'
    CHECK (capture_method IN ('automatic', 'manual'));
ALTER TABLE payments ADD COLUMN captured_minor BIGINT NOT NULL DEFAULT 0;
UPDATE payments SET captured_minor = amount_minor WHERE status IN ('SUCCESS', 'PARTIALLY_REFUNDED', 'REFUNDED');
ALTER TABLE payments ADD CONSTRAINT payments_captured_amount CHECK (captured_minor BETWEEN 0 AND amount_minor);
ALTER TABLE payments ADD COLUMN authorization_expires_at TIMESTAMPTZ;
ALTER TABLE payments ADD COLUMN settle_action TEXT CHECK (settle_action IN ('capture', 'void', 'expire'));
ALTER TABLE payments ADD COLUMN settle_minor BIGINT;
ALTER TABLE payments ADD COLUMN settle_started_at TIMESTAMPTZ;
ALTER TABLE payments ADD COLUMN expiry_warned_at TIMESTAMPTZ;

DROP INDEX payments_one_live;
CREATE UNIQUE INDEX payments_one_live ON payments (order_id) WHERE status IN ('PENDING', 'AUTHORIZED', 'SUCCESS');
CREATE INDEX payments_authorized ON payments (authorization_expires_at, id) WHERE status = 'AUTHORIZED';
