-- The component catalogue: the parts of the service customers know by name. Incidents name
-- components by `id`; messages show `name`. Listed in the order they were added.
CREATE TABLE components (
    id          text        PRIMARY KEY,
    name        text        NOT NULL,
    group_name  text,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX components_listing ON components (created_at, id);
