-- Delivery jobs live in JetStream, which may lose acknowledged messages (the 2.9 server
-- does not fsync before acknowledging) or be purged. The ledger is the truth, so the
-- resolver republishes the jobs of deliveries left unworked for too long; requeued_at keeps
-- it from doing so again at every sweep.
ALTER TABLE deliveries ADD COLUMN requeued_at timestamptz;

-- The sweep looks only at deliveries still to be worked on.
CREATE INDEX deliveries_unsettled ON deliveries (created_at)
    WHERE state IN ('pending', 'retrying', 'sending');
