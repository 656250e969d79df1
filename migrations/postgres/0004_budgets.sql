-- Provider-call budgets: one token bucket per scope, in a tree under the root scope '*'. A call
-- is charged to its scope and every ancestor that has a row. Tokens are taken in small leased
-- batches (`budget_take`) and never returned.
CREATE TABLE budgets (
    scope       TEXT             PRIMARY KEY,
    parent      TEXT             REFERENCES budgets (scope),
    rate        DOUBLE PRECISION NOT NULL CHECK (rate >= 0),
    burst       DOUBLE PRECISION NOT NULL CHECK (burst >= 0),
    tokens      DOUBLE PRECISION NOT NULL,
    refilled_at TIMESTAMPTZ      NOT NULL,
    updated_at  TIMESTAMPTZ      NOT NULL,
    CHECK ((scope = '*') = (parent IS NULL))
);
