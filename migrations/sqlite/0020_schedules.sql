-- Recurring hunts (see the Postgres migration).
CREATE TABLE schedules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    owner       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    request     TEXT    NOT NULL CHECK (json_valid(request)),
    every_secs  INTEGER,
    cron        TEXT,
    range_secs  INTEGER,
    lakes       TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(lakes)),
    token_hash  TEXT,
    next_at     INTEGER NOT NULL,
    paused_at   INTEGER,
    paused_by   TEXT,
    runs        INTEGER NOT NULL DEFAULT 0,
    last_job_id INTEGER,
    last_run_at INTEGER,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    UNIQUE (owner, name),
    CHECK ((every_secs IS NULL) <> (cron IS NULL))
);

CREATE INDEX schedules_due ON schedules (next_at) WHERE paused_at IS NULL;
