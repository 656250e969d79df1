-- Circuit breakers, one row per scope that ever had one (no row: closed). `detail` is the
-- breaker's full state (sluice-core's Breaker); `hold_until` is when its scope's tasks may be
-- claimed again (open: the probe time; half-open: the probe's timeout), read by every claim.
CREATE TABLE breakers (
    scope       TEXT        PRIMARY KEY,
    state       TEXT        NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    hold_until  TIMESTAMPTZ,
    detail      JSONB       NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- A budget's adaptive rate (AIMD with slow start, sluice-core's Adaptive); NULL: full rate.
ALTER TABLE budgets ADD COLUMN adaptive JSONB;
