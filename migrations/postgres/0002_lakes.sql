-- The lake registry: one row per data source a hunt can fan out to.
CREATE TABLE lakes (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           TEXT        NOT NULL UNIQUE,
    url            TEXT        NOT NULL,
    scope          TEXT        NOT NULL,
    -- Hive partition columns (e.g. ["dt"]), in path order.
    partition_cols JSONB       NOT NULL DEFAULT '[]',
    -- The Arrow schema of the files (without partition columns), discovered at registration.
    schema         JSONB       NOT NULL,
    tags           JSONB       NOT NULL DEFAULT '{}',
    -- Connection options for the object store (endpoint, region, …); never secrets.
    options        JSONB       NOT NULL DEFAULT '{}',
    created_at     TIMESTAMPTZ NOT NULL
);
