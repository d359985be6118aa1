-- The outbox becomes a plain queue: the relay deletes a row once JetStream has acknowledged
-- its event, instead of stamping it published and pruning it a day later. Each event then
-- costs the outbox one insert and one delete, where it cost an insert, an update (a new row
-- version and index entry, since the stamp was in the partial index's predicate) and a
-- delete; the relay's lag is a metric (tocsin_relay_lag_seconds) rather than a column.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN published_at;
