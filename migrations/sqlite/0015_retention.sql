-- Retention (see the Postgres migration).
ALTER TABLE jobs ADD COLUMN retention_secs INTEGER CHECK (retention_secs >= 0);
