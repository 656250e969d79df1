-- Console sessions (docs/adr/0013-console.md): a browser signs in with an API token once and
-- then carries a random session id in an HttpOnly cookie. Only the id's SHA-256 is kept, with
-- the hash of the token it stands for (a revoked token ends its sessions) and the CSRF token
-- every change must repeat in a header. Sign-out deletes the row; expired rows go at the next
-- sign-in.
CREATE TABLE console_sessions (
    hash        TEXT        PRIMARY KEY,
    token_hash  TEXT        NOT NULL,
    csrf        TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
