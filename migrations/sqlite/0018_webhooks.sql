-- Webhooks (see the Postgres migration).
ALTER TABLE jobs ADD COLUMN webhook TEXT;

CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      INTEGER NOT NULL,
    url         TEXT    NOT NULL,
    body        TEXT    NOT NULL CHECK (json_valid(body)),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,
    last_error  TEXT,
    created_at  INTEGER NOT NULL
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);
