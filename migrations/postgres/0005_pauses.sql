-- Operator pauses: a paused target's pending tasks are not claimed, by any process, until the
-- pause is lifted; running ones finish. Targets: 'all', 'scope:<scope>', 'owner:<owner>',
-- 'job:<id>'. Tasks carry their job's owner so the claim can check owner pauses without a join.
CREATE TABLE pauses (
    target     TEXT        PRIMARY KEY CHECK (target = 'all' OR target LIKE 'scope:_%' OR target LIKE 'owner:_%' OR target LIKE 'job:_%'),
    reason     TEXT        NOT NULL,
    paused_by  TEXT        NOT NULL,
    at         TIMESTAMPTZ NOT NULL
);
ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT '';
