-- The highest job id ever removed (retention): SQLite would hand a purged newest job's id to
-- the next job without it. Postgres's identity never reuses ids; the row is kept alike.
CREATE TABLE job_id_floor (id BIGINT NOT NULL);
INSERT INTO job_id_floor VALUES (0);
