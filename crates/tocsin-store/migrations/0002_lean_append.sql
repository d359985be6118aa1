-- The append writes the idempotency key, the event and its outbox row in one statement, so
-- the references between them hold by construction. Their foreign keys cost a trigger-run
-- lookup per row on the hottest path, and the updated_at index stopped HOT updates of the
-- projection while no query reads it.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_event_id_fkey;
ALTER TABLE outbox DROP CONSTRAINT outbox_position_fkey;
DROP INDEX incidents_updated_at;
