-- API tokens: bearer tokens of the HTTP API, stored as SHA-256 hashes (the token itself is
-- shown once, at creation). Each has an owner (whose jobs it sees) and a role.
CREATE TABLE api_tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner       TEXT        NOT NULL,
    role        TEXT        NOT NULL CHECK (role IN ('researcher', 'operator', 'admin')),
    hash        TEXT        NOT NULL UNIQUE,
    label       TEXT        NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
