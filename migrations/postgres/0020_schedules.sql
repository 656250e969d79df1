-- Recurring hunts (docs/operations.md, "Recurring hunts"): a submission made again at every
-- tick of an interval or a cron pattern, by the elected scheduler. `next_at` is the tick due
-- next; a run moves it on with an update guarded by its old value, and the job it makes has
-- the idempotency key `schedule:<id>:<tick>`, so two leaders firing one tick make one job.
-- `token_hash` names the token that made it: each run takes that token's role and lakes as
-- they are then, and a revoked token pauses the schedule. `lakes` is the creating caller's
-- access, for schedules made without a token (the CLI on the database).
CREATE TABLE schedules (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner       TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    request     JSONB       NOT NULL,
    every_secs  BIGINT,
    cron        TEXT,
    range_secs  BIGINT,
    lakes       JSONB       NOT NULL DEFAULT '[]',
    token_hash  TEXT,
    next_at     TIMESTAMPTZ NOT NULL,
    paused_at   TIMESTAMPTZ,
    paused_by   TEXT,
    runs        BIGINT      NOT NULL DEFAULT 0,
    last_job_id BIGINT,
    last_run_at TIMESTAMPTZ,
    last_error  TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (owner, name),
    CHECK ((every_secs IS NULL) <> (cron IS NULL))
);

CREATE INDEX schedules_due ON schedules (next_at) WHERE paused_at IS NULL;
