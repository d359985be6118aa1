-- The ledger decides when a delivery's job is on the bus, and which attempts really began.
--
-- parked: no job for this delivery is on JetStream; a worker's dispatcher publishes one when
--   the delivery comes due (quiet hours end, a retry's time comes, an earlier message to the
--   same recipient settles, or the stream was lost). A job that is not due is acknowledged
--   and parked rather than held on JetStream with a delayed nak, because a held message
--   counts against the consumer's MaxAckPending and enough of them stop the whole channel.
-- dispatches: how often a dispatcher published it; the job's `Nats-Msg-Id` carries the
--   number, so a dispatch repeated after a crash is dropped by JetStream as a duplicate
--   while a later one is not.
-- send_started_at: set just before the provider is called, cleared by the next claim. A
--   claim whose lease expired with it NULL never began sending: nothing can have gone out.
-- unknowns: attempts whose outcome is unknown (a timeout after the request went out, or a
--   worker lost mid-send); the channel's policy caps blind resends with it.
-- lane: the queue its job waits in (small, critical, bulk), decided by its fan-out, so that a
--   small or critical incident never queues behind a big fan-out. Older rows are bulk.
ALTER TABLE deliveries
    ADD COLUMN parked          boolean     NOT NULL DEFAULT false,
    ADD COLUMN dispatches      integer     NOT NULL DEFAULT 0,
    ADD COLUMN send_started_at timestamptz,
    ADD COLUMN unknowns        integer     NOT NULL DEFAULT 0,
    ADD COLUMN lane            text        NOT NULL DEFAULT 'bulk';

-- The dispatchers' queue: parked deliveries of one channel, by when they come due.
CREATE INDEX deliveries_parked ON deliveries (channel, coalesce(next_attempt_at, send_after, created_at))
    WHERE parked;

-- Which incarnation of each JetStream stream the ledger and the log were last published to.
-- A stream created anew (the server lost its store) has another creation time: whoever
-- notices first records it here and, in the same transaction, puts back in the queue what
-- the lost stream held, so the pipeline heals from PostgreSQL without an operator.
CREATE TABLE bus_streams (
    name        text        PRIMARY KEY,
    created     timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
