-- Self-service subscription from the status page (double opt-in), and the messages about a
-- subscription itself that the email and SMS workers send.

-- A visitor's sign-up until it is confirmed. Its id becomes the new subscriber's. Contact
-- details live here at most a day (`expires_at`); the hashes let the abuse limits count
-- sign-ups per address without reading addresses. No delivery ever reads this table, so
-- nothing reaches an address before its owner confirmed it.
CREATE TABLE signups (
    signup_id          uuid        PRIMARY KEY,
    email              text,
    phone              text,
    -- A webhook endpoint, where the operator offers them: confirmed through the email.
    webhook_url        text,
    preferences        jsonb       NOT NULL,
    email_hash         bytea,
    phone_hash         bytea,
    client_ip          inet        NOT NULL,
    -- A keyed digest of the code texted to the phone, and how often a code was tried.
    phone_code_digest  bytea,
    phone_code_expires_at timestamptz,
    phone_attempts     integer     NOT NULL DEFAULT 0,
    email_confirmed_at timestamptz,
    phone_confirmed_at timestamptz,
    -- The subscriber each confirmation joined (a new one, or one that had the address).
    email_subscriber   uuid,
    phone_subscriber   uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL
);
CREATE INDEX signups_by_client ON signups (client_ip, created_at);
CREATE INDEX signups_by_email ON signups (email_hash, created_at) WHERE email_hash IS NOT NULL;
CREATE INDEX signups_by_phone ON signups (phone_hash, created_at) WHERE phone_hash IS NOT NULL;
CREATE INDEX signups_expiry ON signups (expires_at);

-- Messages about a subscription (a confirmation link, a code, "you are already subscribed"),
-- outside the incident ledger. `claimed` holds a lease and has not begun; `sending` has
-- begun, and one whose worker vanished becomes `unknown`, never sent twice. Address and
-- content are blanked when the message is finished.
CREATE TABLE account_messages (
    message_id   bigserial   PRIMARY KEY,
    channel      text        NOT NULL CHECK (channel IN ('email', 'sms')),
    address      text        NOT NULL,
    content      jsonb       NOT NULL,
    state        text        NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'claimed', 'sending', 'sent', 'failed', 'unknown')),
    attempts     integer     NOT NULL DEFAULT 0,
    due_at       timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX account_messages_open ON account_messages (channel, due_at)
    WHERE state IN ('pending', 'claimed', 'sending');

-- The consent log records every step now, not only opt-outs: a sign-up asked for, its
-- confirmation, a change of preferences, an operator's import; `subscriber_id` and
-- `detail` say whose and how ("consent obtained at checkout", "confirmed by link").
ALTER TABLE consent_log DROP CONSTRAINT consent_log_action_check;
ALTER TABLE consent_log ADD CONSTRAINT consent_log_action_check
    CHECK (action IN ('opt_out', 'opt_in', 'subscribe', 'confirm', 'change', 'import'));
ALTER TABLE consent_log ADD COLUMN subscriber_id uuid;
ALTER TABLE consent_log ADD COLUMN detail text;
-- A change of preferences concerns a subscriber, not one address.
ALTER TABLE consent_log ALTER COLUMN channel DROP NOT NULL;
ALTER TABLE consent_log ALTER COLUMN address_hash DROP NOT NULL;
CREATE INDEX consent_log_subscriber ON consent_log (subscriber_id) WHERE subscriber_id IS NOT NULL;
