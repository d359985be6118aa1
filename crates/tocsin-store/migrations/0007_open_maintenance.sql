-- The maintenance clock asks every few seconds which maintenances are scheduled or under way.
-- Partial, so it stays tiny; its predicate reads `status`, which changes on few updates, so
-- the projection's other updates stay HOT.
CREATE INDEX incidents_open_maintenance ON incidents (incident_id)
    WHERE kind = 'maintenance' AND status IN ('scheduled', 'in_progress');
