-- The lake registry: one row per data source a hunt can fan out to.
CREATE TABLE lakes (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    url            TEXT    NOT NULL,
    scope          TEXT    NOT NULL,
    partition_cols TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(partition_cols)),
    schema         TEXT    NOT NULL CHECK (json_valid(schema)),
    tags           TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(tags)),
    options        TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(options)),
    created_at     INTEGER NOT NULL
);
