-- The task table is a queue: every claim and finish leaves a dead row version, and a claim
-- walks `tasks_claimable` from its head past the index entries of every task claimed since the
-- last vacuum. PostgreSQL's defaults vacuum a table once a fifth of it is dead: at a million
-- tasks that is 200,000 claims of growing walks, and its statistics go stale as a backlog is
-- inserted. Vacuum and analyze it by fixed counts instead (docs/benchmarks.md, "A million-task
-- backlog"). Needs autovacuum on, as it is by default.
ALTER TABLE tasks SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 20000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 100000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 20000,
    autovacuum_vacuum_cost_delay = 0
);
