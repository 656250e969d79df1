-- Fair release order (ADR 0006): `seq` is a task's virtual-time tag (SQLite integers are
-- already 64-bit). See the Postgres migration of the same number.
ALTER TABLE jobs ADD COLUMN stride INTEGER NOT NULL DEFAULT 1 CHECK (stride >= 1);
CREATE INDEX jobs_open ON jobs (owner, priority, id) WHERE state IN ('queued', 'running');

CREATE TABLE leaders (
    name        TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,
    term        INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    elected_at  INTEGER NOT NULL
);

-- The scheduler's metrics pass reads the jobs finished since its last pass (time to answer).
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
