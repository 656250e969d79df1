-- Circuit breakers and adaptive budget rates (see the Postgres migration).
CREATE TABLE breakers (
    scope       TEXT    PRIMARY KEY,
    state       TEXT    NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    hold_until  INTEGER,
    detail      TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
);
ALTER TABLE budgets ADD COLUMN adaptive TEXT;
