-- Budget-aware release: a take that came back short marks the limiting buckets dry until they
-- have refilled enough for the next grant. Claims prefer tasks of scopes that are not dry (nor
-- under a dry ancestor), so an exhausted scope does not fill worker slots with tasks that can
-- only wait while other scopes' tasks queue behind them.
ALTER TABLE budgets ADD COLUMN dry_until TIMESTAMPTZ;
