-- The highest job id ever removed: new jobs take ids above it (see the Postgres migration).
CREATE TABLE job_id_floor (id INTEGER NOT NULL);
INSERT INTO job_id_floor VALUES (0);
