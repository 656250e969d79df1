-- Fair release order (ADR 0006). `seq` becomes a task's virtual-time tag: a job's tasks are
-- tagged V + offset + i * stride at submit, where V is the current virtual time of its priority
-- (start-time fair queueing: a new job neither jumps ahead of nor starves the jobs already
-- draining) and stride is the number of open jobs its owner has at that priority (so owners,
-- not jobs, share the workers). The leader re-strides an owner's jobs when that number changes.
ALTER TABLE tasks ALTER COLUMN seq TYPE BIGINT;
ALTER TABLE jobs ADD COLUMN stride INTEGER NOT NULL DEFAULT 1 CHECK (stride >= 1);
CREATE INDEX jobs_open ON jobs (owner, priority, id) WHERE state IN ('queued', 'running');

-- Leader election: one row per role, held by a lease its holder renews. `term` grows by one
-- at every change of holder (a fencing number for the leader's work and its log lines).
CREATE TABLE leaders (
    name        TEXT        PRIMARY KEY,
    holder      TEXT        NOT NULL,
    term        BIGINT      NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    elected_at  TIMESTAMPTZ NOT NULL
);

-- The scheduler's metrics pass reads the jobs finished since its last pass (time to answer).
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
