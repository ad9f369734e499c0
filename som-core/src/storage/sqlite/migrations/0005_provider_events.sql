-- What a real provider needs: the client secret a front end finishes the payment with, the
-- step the payer must take next (3-D Secure) while the payment is pending, lookups by the
-- provider's id (its events name it), and a ledger of the provider's events applied.
ALTER TABLE payments ADD COLUMN client_secret TEXT;
ALTER TABLE payments ADD COLUMN next_action TEXT;
CREATE INDEX payments_provider_id ON payments (provider, provider_payment_id);

CREATE TABLE inbound_events (
    provider    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, event_id)
);
