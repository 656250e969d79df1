-- Jobs, tasks and the events journal for the embedded (single-process) store.
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC).

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    owner            TEXT    NOT NULL,
    idempotency_key  TEXT,
    spec             TEXT    NOT NULL CHECK (json_valid(spec)),
    sql              TEXT,
    state            TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'succeeded', 'partial', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    lakes_total      INTEGER NOT NULL DEFAULT 0,
    lakes_done       INTEGER NOT NULL DEFAULT 0,
    lakes_failed     INTEGER NOT NULL DEFAULT 0,
    lakes_cancelled  INTEGER NOT NULL DEFAULT 0,
    rows_found       INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    error            TEXT,
    UNIQUE (owner, idempotency_key)
);

CREATE INDEX jobs_owner_id ON jobs (owner, id DESC);

CREATE TABLE tasks (
    id               INTEGER PRIMARY KEY,
    job_id           INTEGER NOT NULL REFERENCES jobs (id),
    lake             TEXT    NOT NULL,
    scope            TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    run_after        INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER,
    est_calls        INTEGER NOT NULL DEFAULT 0,
    calls_spent      INTEGER NOT NULL DEFAULT 0,
    rows_found       INTEGER,
    result_uri       TEXT,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE INDEX tasks_claimable ON tasks (priority DESC, id) WHERE state = 'pending';
CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_job ON tasks (job_id);  -- SQLite has no BRIN: one plain index

CREATE TABLE events (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    job_id   INTEGER,
    task_id  INTEGER,
    scope    TEXT,
    kind     TEXT    NOT NULL,
    detail   TEXT
);

CREATE INDEX events_job ON events (job_id, id) WHERE job_id IS NOT NULL;
