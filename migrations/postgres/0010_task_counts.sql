-- Tasks by scope and state, for the backlog metrics and `sluice backlog`, kept by the database
-- itself so no scrape or command counts the tasks table (DESIGN.md, data model).
--
-- A hot counter row per (scope, state) would serialise every claim and finish of a scope on one
-- row lock. Instead a statement-level trigger appends one delta row per (scope, state) that the
-- statement changed (insert-only, no row shared between writers), and `task_counts_fold` (the
-- scheduler leader's observation pass, `sluice backlog`) moves the deltas into `task_counts`.
-- A claim of 16 tasks of one scope adds two delta rows: pending -16, running +16. `est_calls`
-- sums the tasks' estimated provider calls (the drain ETA at the scope's budget).
CREATE TABLE task_counts (
    scope      TEXT   NOT NULL,
    state      TEXT   NOT NULL,
    tasks      BIGINT NOT NULL,
    est_calls  BIGINT NOT NULL,
    PRIMARY KEY (scope, state)
);

CREATE TABLE task_count_deltas (
    scope      TEXT   NOT NULL,
    state      TEXT   NOT NULL,
    tasks      BIGINT NOT NULL,
    est_calls  BIGINT NOT NULL
);

CREATE FUNCTION task_count_deltas_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_count_deltas (scope, state, tasks, est_calls)
        SELECT scope, state, count(*), sum(est_calls) FROM new_rows GROUP BY scope, state;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO task_count_deltas (scope, state, tasks, est_calls)
        SELECT scope, state, -count(*), -sum(est_calls) FROM old_rows GROUP BY scope, state;
    ELSE
        -- Most updates (heartbeats, re-tagging) move no task between states: nothing is written.
        INSERT INTO task_count_deltas (scope, state, tasks, est_calls)
        SELECT scope, state, sum(n), sum(c) FROM (
            SELECT scope, state, -count(*) AS n, -sum(est_calls) AS c
              FROM old_rows GROUP BY scope, state
            UNION ALL
            SELECT scope, state, count(*), sum(est_calls) FROM new_rows GROUP BY scope, state
        ) d GROUP BY scope, state HAVING sum(n) <> 0 OR sum(c) <> 0;
    END IF;
    RETURN NULL;
END
$$;

-- Creating the triggers locks `tasks` against writes until this migration commits, so the
-- initial count below and the deltas after it neither miss nor double a task.
CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_count_deltas_insert();
CREATE TRIGGER tasks_count_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_count_deltas_insert();
CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_count_deltas_insert();

INSERT INTO task_counts (scope, state, tasks, est_calls)
SELECT scope, state, count(*), sum(est_calls) FROM tasks GROUP BY scope, state;

-- The age of the oldest pending task is one probe of this index (it only holds pending tasks).
CREATE INDEX tasks_pending_since ON tasks (created_at) WHERE state = 'pending';
