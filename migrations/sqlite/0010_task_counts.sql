-- Tasks by scope and state, for the backlog metrics and `sluice backlog`, kept by triggers so
-- nothing counts the tasks table. SQLite has one writer at a time, so the counter rows are
-- updated in place (Postgres appends deltas instead: see its migration 0010).
CREATE TABLE task_counts (
    scope      TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    tasks      INTEGER NOT NULL,
    est_calls  INTEGER NOT NULL,
    PRIMARY KEY (scope, state)
);

CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_counts (scope, state, tasks, est_calls) VALUES (new.scope, new.state, 1, new.est_calls)
        ON CONFLICT (scope, state)
        DO UPDATE SET tasks = tasks + 1, est_calls = est_calls + new.est_calls;
END;

CREATE TRIGGER tasks_count_update AFTER UPDATE OF scope, state, est_calls ON tasks
    WHEN old.state IS NOT new.state OR old.scope IS NOT new.scope
        OR old.est_calls IS NOT new.est_calls
BEGIN
    INSERT INTO task_counts (scope, state, tasks, est_calls) VALUES (old.scope, old.state, -1, -old.est_calls)
        ON CONFLICT (scope, state)
        DO UPDATE SET tasks = tasks - 1, est_calls = est_calls - old.est_calls;
    INSERT INTO task_counts (scope, state, tasks, est_calls) VALUES (new.scope, new.state, 1, new.est_calls)
        ON CONFLICT (scope, state)
        DO UPDATE SET tasks = tasks + 1, est_calls = est_calls + new.est_calls;
END;

CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks
BEGIN
    INSERT INTO task_counts (scope, state, tasks, est_calls) VALUES (old.scope, old.state, -1, -old.est_calls)
        ON CONFLICT (scope, state)
        DO UPDATE SET tasks = tasks - 1, est_calls = est_calls - old.est_calls;
END;

INSERT INTO task_counts (scope, state, tasks, est_calls)
SELECT scope, state, count(*), sum(est_calls) FROM tasks GROUP BY scope, state;

CREATE INDEX tasks_pending_since ON tasks (created_at) WHERE state = 'pending';
