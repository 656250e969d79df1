-- Intake: `sluice drain` closes it so the backlog can empty; while closed, `job_insert` refuses
-- new jobs until `sluice drain --end`. One row, always there.
CREATE TABLE intake (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    closed     INTEGER NOT NULL DEFAULT 0,
    reason     TEXT    NOT NULL DEFAULT '',
    closed_by  TEXT    NOT NULL DEFAULT '',
    closed_at  INTEGER
);
INSERT INTO intake (id) VALUES (1);
