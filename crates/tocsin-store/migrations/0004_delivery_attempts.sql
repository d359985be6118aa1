-- What the delivery workers need in the ledger: a claim with a lease (a crashed worker's
-- claim expires and another takes over), the retry schedule, and the outcome.
--
-- States: pending (recorded by the resolver), sending (claimed), retrying (a transient failure;
-- next_attempt_at says when), unknown (the provider may have it; the channel's policy
-- decides), delivered, failed (permanent), dead (retries exhausted), superseded (a newer
-- message for the same recipient and channel replaced it before it went out), skipped (the
-- subscriber was deleted or the endpoint disabled before it went out).
ALTER TABLE deliveries
    ADD COLUMN lease_owner      text,
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN next_attempt_at  timestamptz,
    ADD COLUMN provider_id      text,
    ADD COLUMN last_error       text,
    ADD COLUMN finished_at      timestamptz;

-- Dead letters by channel, for replays and dashboards.
CREATE INDEX deliveries_dead ON deliveries (channel, incident_id) WHERE state = 'dead';
-- Twilio status callbacks find a delivery by the provider's message id.
CREATE INDEX deliveries_provider_id ON deliveries (provider_id) WHERE provider_id IS NOT NULL;
