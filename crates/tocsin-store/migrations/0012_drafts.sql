-- Incidents held for approval: what an alert under a `hold` rule would have opened, kept
-- until an operator publishes or discards it. One per incident id (an alert group); a later
-- firing notification refreshes the pending draft. When the group resolves, a pending or
-- discarded draft is deleted (the occurrence is over; the next firing drafts anew). Nothing
-- here reaches the log or a customer until it is published.
CREATE TABLE drafts (
    incident_id     uuid        PRIMARY KEY,
    publisher       text        NOT NULL,
    idempotency_key text        NOT NULL,
    change          jsonb       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'published', 'discarded')),
    notifications   integer     NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    decided_by      text,
    decided_at      timestamptz
);
CREATE INDEX drafts_pending ON drafts (created_at) WHERE state = 'pending';
