-- Console sessions (see the Postgres migration).
CREATE TABLE console_sessions (
    hash        TEXT    PRIMARY KEY,
    token_hash  TEXT    NOT NULL,
    csrf        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
