-- Operator pauses (see the Postgres migration).
CREATE TABLE pauses (
    target     TEXT    PRIMARY KEY CHECK (target = 'all' OR target LIKE 'scope:_%' OR target LIKE 'owner:_%' OR target LIKE 'job:_%'),
    reason     TEXT    NOT NULL,
    paused_by  TEXT    NOT NULL,
    at         INTEGER NOT NULL
);
ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT '';
