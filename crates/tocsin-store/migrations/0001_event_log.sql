-- The append-only event log, publisher idempotency keys, the incident projection and the
-- transactional outbox. Released migrations are never edited: add a new file instead.

CREATE TABLE events (
    -- Global order of the log. Unique and increasing, but neither gapless nor commit order.
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL,
    incident_id     uuid        NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    kind            text        NOT NULL,
    publisher       text        NOT NULL,
    idempotency_key text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    data            jsonb       NOT NULL,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    -- Per-incident versions are unique; the append path makes them gapless.
    CONSTRAINT events_incident_version_key UNIQUE (incident_id, version)
);

-- The log is append-only: the database itself refuses to change or remove an event.
CREATE FUNCTION tocsin_refuse_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER events_refuse_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION tocsin_refuse_event_change();
CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION tocsin_refuse_event_change();

-- A publisher's idempotency key decides, through this primary key, whether a publish is new.
CREATE TABLE idempotency_keys (
    publisher       text        NOT NULL,
    idempotency_key text        NOT NULL,
    -- SHA-256 of the canonical request: the same key with another payload is refused.
    fingerprint     text        NOT NULL,
    event_id        uuid        NOT NULL
        REFERENCES events (event_id) DEFERRABLE INITIALLY DEFERRED,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (publisher, idempotency_key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- Current incident state: a projection, recomputable from the log at any time.
CREATE TABLE incidents (
    incident_id uuid        PRIMARY KEY,
    version     bigint      NOT NULL,
    kind        text        NOT NULL,
    status      text        NOT NULL,
    severity    text        NOT NULL,
    opened_at   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    state       jsonb       NOT NULL
);
CREATE INDEX incidents_updated_at ON incidents (updated_at DESC);

-- Events still to be relayed to JetStream. Written in the same transaction as the event.
CREATE TABLE outbox (
    position     bigint      PRIMARY KEY REFERENCES events (position),
    incident_id  uuid        NOT NULL,
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (position) WHERE published_at IS NULL;
