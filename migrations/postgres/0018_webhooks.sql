-- Webhooks (docs/operations.md, "Webhooks"): a job may name a URL called each time it ends.
ALTER TABLE jobs ADD COLUMN webhook TEXT;

-- The outbox: one row per end of a job that names a webhook, written in the transaction that
-- ends it, so no end is announced twice or lost; the elected scheduler sends it, signed, and
-- tries again with backoff. Removed with its job.
CREATE TABLE webhook_deliveries (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      BIGINT      NOT NULL,
    url         TEXT        NOT NULL,
    body        JSONB       NOT NULL,
    state       TEXT        NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts    INTEGER     NOT NULL DEFAULT 0,
    next_at     TIMESTAMPTZ NOT NULL,
    last_error  TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    done_at     TIMESTAMPTZ
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);
