-- When SOM ends a payment (its order cancelled, the payer declined), the provider's side of it
-- is closed too (a Stripe PaymentIntent cancelled), so that it can no longer be completed.
-- NULL until that is done; payments ended before this column existed are closed by the sweep.
ALTER TABLE payments ADD COLUMN provider_closed_at TIMESTAMPTZ;
CREATE INDEX payments_open_at_provider ON payments (id) WHERE provider_closed_at IS NULL;
