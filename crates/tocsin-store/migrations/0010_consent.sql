-- Opt-outs: a reader's own "stop", which no operator upsert undoes.
--
-- `suppressions` is the durable list, by address: the channel and a SHA-256 of the address
-- as stored (lowercased email, E.164 phone), never the address itself, so it can outlive the
-- subscriber whose address it was (an address re-imported later stays opted out) without
-- keeping personal data. `subscriber_contacts.opted_out` mirrors it per subscriber for the
-- hot paths (fan-out, send), kept in step by every write that changes either.
CREATE TABLE suppressions (
    channel      text        NOT NULL,
    address_hash bytea       NOT NULL,
    source       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, address_hash)
);

ALTER TABLE subscriber_contacts ADD COLUMN opted_out text[] NOT NULL DEFAULT '{}';

-- Who opted out or back in, when and how: the record consent law asks for. Append-only.
CREATE TABLE consent_log (
    id           bigserial   PRIMARY KEY,
    channel      text        NOT NULL,
    address_hash bytea       NOT NULL,
    action       text        NOT NULL CHECK (action IN ('opt_out', 'opt_in')),
    source       text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriber_contacts_phone ON subscriber_contacts (phone) WHERE phone IS NOT NULL;
CREATE INDEX subscriber_contacts_email ON subscriber_contacts (lower(email)) WHERE email IS NOT NULL;
