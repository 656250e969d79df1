-- Budget-aware release (see the Postgres migration).
ALTER TABLE budgets ADD COLUMN dry_until INTEGER;
