-- Quotas between researchers (see the Postgres migration).
ALTER TABLE api_tokens ADD COLUMN lakes TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(lakes));

CREATE TABLE owner_quotas (
    owner       TEXT    PRIMARY KEY,
    max_running INTEGER NOT NULL CHECK (max_running >= 0),
    set_by      TEXT    NOT NULL,
    at          INTEGER NOT NULL
);
