-- Claims interleave jobs: `seq` is a task's position within its job (0, 1, 2, …), and pending
-- tasks are claimed by (priority, seq, id). A 3-lake hunt submitted behind a 5,000-lake job
-- has its tasks claimed next to the bulk job's, not after it.
ALTER TABLE tasks ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
DROP INDEX tasks_claimable;
CREATE INDEX tasks_claimable ON tasks (priority DESC, seq, id) WHERE state = 'pending';
