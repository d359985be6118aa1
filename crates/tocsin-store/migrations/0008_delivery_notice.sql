-- A delivery that tells something other than its event's own message: a fallback notice
-- that one of the subscriber's channels stopped working ({"kind": "channel_failed", ...}).
-- NULL for every event message. Notice rows live beside an incident's messages, not in their
-- sequence: they neither supersede nor are superseded, and neither wait for nor hold back
-- the messages to the same recipient.
ALTER TABLE deliveries ADD COLUMN notice jsonb;
