-- API tokens (see the Postgres migration).
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY,
    owner       TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('researcher', 'operator', 'admin')),
    hash        TEXT    NOT NULL UNIQUE,
    label       TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
