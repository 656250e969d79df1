-- Quotas between researchers (docs/operations.md, "Researchers' quotas").
-- The lakes a token may hunt: a list of tag groups (sluice-core's LakeAccess); a lake is open
-- to the token when its tags match every tag of one group. '[]': every lake.
ALTER TABLE api_tokens ADD COLUMN lakes JSONB NOT NULL DEFAULT '[]';

-- The most tasks an owner may have running at once, across every worker. Owner '*': every
-- owner without a row of their own. No row: unlimited.
CREATE TABLE owner_quotas (
    owner       TEXT        PRIMARY KEY,
    max_running BIGINT      NOT NULL CHECK (max_running >= 0),
    set_by      TEXT        NOT NULL,
    at          TIMESTAMPTZ NOT NULL
);

-- While a quota is set, claims take each owner's next tasks (up to the owner's room) from
-- this index, instead of walking the release order past a full owner's whole backlog.
CREATE INDEX tasks_owner_claimable ON tasks (owner, priority DESC, seq, id) WHERE state = 'pending';
