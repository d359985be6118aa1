-- Subscribers and their preferences, their contact details kept apart, the delivery ledger,
-- and the append-only delivery trail. Released migrations are never edited.

-- Every change to any subscriber takes the next revision, so one number names the state of
-- all preferences a fan-out read.
CREATE SEQUENCE subscriber_revision_seq;

CREATE TABLE subscribers (
    subscriber_id uuid        PRIMARY KEY,
    -- The caller's own identifier, which may itself be personal (an email address, an account
    -- name): cleared when the subscriber is deleted.
    external_id   text,
    revision      bigint      NOT NULL,
    preferences   jsonb       NOT NULL,
    -- Copies of the preference fields the matching query filters on, so that it runs on
    -- columns rather than JSON. Written from `preferences` by the store, never by hand.
    min_severity  smallint    NOT NULL,
    components    text[],     -- NULL: every component
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX subscribers_external_id_key ON subscribers (external_id);

-- Personal data, and nothing else. Deleting a subscriber deletes this row: events, the ledger
-- and the trail refer to the subscriber by id only, so what remains is an anonymised trail.
CREATE TABLE subscriber_contacts (
    subscriber_id       uuid PRIMARY KEY REFERENCES subscribers (subscriber_id),
    email               text,
    phone               text,
    webhook_url         text,
    -- The `whsec_` signing secret. Stored as is, because signing needs the key itself.
    webhook_secret      text,
    webhook_disabled_at timestamptz,
    webhook_disabled_reason text
);

-- Every preference document each subscriber had, so "why was X not told?" can be answered
-- for any past fan-out from the revision it recorded. Contact details never enter it.
CREATE TABLE subscriber_revisions (
    revision      bigint      PRIMARY KEY,
    subscriber_id uuid        NOT NULL,
    -- NULL: the subscriber was deleted at this revision.
    preferences   jsonb,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriber_revisions_subscriber ON subscriber_revisions (subscriber_id, revision);

-- The delivery ledger: one row per job, keyed by the job's deterministic delivery key.
CREATE TABLE deliveries (
    delivery_key  text        PRIMARY KEY,
    incident_id   uuid        NOT NULL,
    event_id      uuid        NOT NULL,
    event_version bigint      NOT NULL,
    subscriber_id uuid        NOT NULL,
    channel       text        NOT NULL,
    state         text        NOT NULL DEFAULT 'pending',
    -- Quiet hours: not to be sent before this instant.
    send_after    timestamptz,
    attempts      integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Who was told about an incident (follow-ups reach them), and per recipient and channel in
-- event order (an update never overtakes the opening).
CREATE INDEX deliveries_recipient ON deliveries (incident_id, subscriber_id, channel, event_version);

-- The delivery trail: what fan-out and delivery did, per incident, for good. Append-only
-- like the event log, and kept apart from it so that publishers' incident versions (and their
-- `expected_version` checks) count only their own events.
CREATE TABLE delivery_trail (
    position     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  uuid        NOT NULL,
    event_id     uuid        NOT NULL,
    kind         text        NOT NULL,
    delivery_key text,
    data         jsonb       NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
-- One fan-out record per event: a resolver that replays an event cannot record it twice.
CREATE UNIQUE INDEX delivery_trail_resolved_key ON delivery_trail (event_id)
    WHERE kind = 'recipients_resolved';
CREATE INDEX delivery_trail_incident ON delivery_trail (incident_id, position);

CREATE TRIGGER delivery_trail_refuse_update_delete BEFORE UPDATE OR DELETE ON delivery_trail
    FOR EACH ROW EXECUTE FUNCTION tocsin_refuse_event_change();
CREATE TRIGGER delivery_trail_refuse_truncate BEFORE TRUNCATE ON delivery_trail
    FOR EACH STATEMENT EXECUTE FUNCTION tocsin_refuse_event_change();
