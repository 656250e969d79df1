-- Runner crashes per task: a task that crashed a hunt runner is retried once at most
-- (ADR 0010).
ALTER TABLE tasks ADD COLUMN crashes integer NOT NULL DEFAULT 0;
