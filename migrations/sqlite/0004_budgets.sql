-- Provider-call budgets: one token bucket per scope, in a tree under the root scope '*'.
CREATE TABLE budgets (
    scope       TEXT    PRIMARY KEY,
    parent      TEXT    REFERENCES budgets (scope),
    rate        REAL    NOT NULL CHECK (rate >= 0),
    burst       REAL    NOT NULL CHECK (burst >= 0),
    tokens      REAL    NOT NULL,
    refilled_at INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    CHECK ((scope = '*') = (parent IS NULL))
);
