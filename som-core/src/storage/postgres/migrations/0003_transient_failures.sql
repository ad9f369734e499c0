-- Transient confirmation failures are counted per payment in the database, so that a retry
-- from another process (the CLI, another server) sees the same count.
ALTER TABLE payments ADD COLUMN transient_failures INTEGER NOT NULL DEFAULT 0;
