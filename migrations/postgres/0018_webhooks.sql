-- Webhooks (docs/operations.md, "Webhooks"): a job may name a URL called each time it ends.
ALTER TABLE jobs ADD COLUMN webhook TEXT;

-- The outbox: one row per end of a job that names a webhook, written in the transaction that
-- ends it, so no end is lost; the elected scheduler sends it, signed, and tries again with
-- backoff (at least once: a leader that dies mid-try leaves it to be tried again). A row
-- leaves once delivered or given up (the journal keeps each try), or with its job.
CREATE TABLE webhook_deliveries (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      BIGINT      NOT NULL,
    url         TEXT        NOT NULL,
    body        JSONB       NOT NULL,
    attempts    INTEGER     NOT NULL DEFAULT 0,
    next_at     TIMESTAMPTZ NOT NULL,
    last_error  TEXT,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);
