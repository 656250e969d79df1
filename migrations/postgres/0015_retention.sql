-- Retention (docs/operations.md, "Retention"): how long a finished job, its tasks, its journal
-- and its result objects are kept. NULL: the cleaner's default (`--retention`); 0: kept.
ALTER TABLE jobs ADD COLUMN retention_secs BIGINT CHECK (retention_secs >= 0);
