-- Intake: `sluice drain` closes it so the backlog can empty. While closed, `job_insert` refuses
-- new jobs on every process (API and CLI alike) until `sluice drain --end`. One row, always
-- there: a submission reads it FOR SHARE in its own transaction, so once a drain's close has
-- committed, no submission that saw intake open is still uncommitted — the drain's view of the
-- backlog after that moment misses nothing.
CREATE TABLE intake (
    id         BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (id),
    closed     BOOLEAN     NOT NULL DEFAULT FALSE,
    reason     TEXT        NOT NULL DEFAULT '',
    closed_by  TEXT        NOT NULL DEFAULT '',
    closed_at  TIMESTAMPTZ
);
INSERT INTO intake DEFAULT VALUES;
