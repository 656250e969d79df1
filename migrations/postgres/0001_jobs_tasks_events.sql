-- Jobs (one per hunt), tasks (one per job and lake) and the events journal.
-- Job progress is kept as counters on the job row: nothing on a hot path counts tasks.

CREATE TABLE jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner            TEXT        NOT NULL,
    idempotency_key  TEXT,
    spec             JSONB       NOT NULL,
    sql              TEXT,
    state            TEXT        NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'succeeded', 'partial', 'failed', 'cancelled')),
    priority         SMALLINT    NOT NULL DEFAULT 0,
    lakes_total      BIGINT      NOT NULL DEFAULT 0,
    lakes_done       BIGINT      NOT NULL DEFAULT 0,
    lakes_failed     BIGINT      NOT NULL DEFAULT 0,
    lakes_cancelled  BIGINT      NOT NULL DEFAULT 0,
    rows_found       BIGINT      NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    error            TEXT,
    CONSTRAINT jobs_owner_idempotency_key UNIQUE (owner, idempotency_key)
);

CREATE INDEX jobs_owner_id ON jobs (owner, id DESC);

CREATE TABLE tasks (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id           BIGINT      NOT NULL REFERENCES jobs (id),
    lake             TEXT        NOT NULL,
    scope            TEXT        NOT NULL,
    state            TEXT        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         SMALLINT    NOT NULL DEFAULT 0,
    attempt          INTEGER     NOT NULL DEFAULT 0,
    max_attempts     INTEGER     NOT NULL CHECK (max_attempts >= 1),
    run_after        TIMESTAMPTZ NOT NULL,
    lease_owner      TEXT,
    -- Fencing token: +1 at every claim; every write of a running task is guarded by it.
    lease_token      BIGINT      NOT NULL DEFAULT 0,
    lease_expires_at TIMESTAMPTZ,
    est_calls        INTEGER     NOT NULL DEFAULT 0,
    calls_spent      INTEGER     NOT NULL DEFAULT 0,
    rows_found       BIGINT,
    result_uri       TEXT,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
) WITH (fillfactor = 85);

-- The btree indexes cover only open rows, so finishing a task (running -> terminal) adds an
-- entry to the primary key alone: claim, lease rescue and cancel read these partial indexes.
CREATE INDEX tasks_claimable ON tasks (priority DESC, id) WHERE state = 'pending';
CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_job_open ON tasks (job_id) WHERE state IN ('pending', 'running');
-- Listing a job's tasks in any state: tasks of a job are inserted together, so a BRIN index
-- on job_id stays selective and costs next to nothing to maintain.
CREATE INDEX tasks_job ON tasks USING brin (job_id);

-- The journal is append-only and written on every task move, so it carries one btree (per job,
-- for `sluice explain` and the job timeline) and BRIN indexes on its insertion-ordered columns
-- instead of a btree primary key: two index insertions per row fewer on the hottest path.
CREATE TABLE events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY,
    at       TIMESTAMPTZ NOT NULL,
    job_id   BIGINT,
    task_id  BIGINT,
    scope    TEXT,
    kind     TEXT        NOT NULL,
    detail   JSONB
);

CREATE INDEX events_job ON events (job_id, id) WHERE job_id IS NOT NULL;
CREATE INDEX events_id ON events USING brin (id);
CREATE INDEX events_at ON events USING brin (at);
