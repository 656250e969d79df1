-- How a scope's adaptive rate moves (see the Postgres migration).
ALTER TABLE budgets ADD COLUMN ramp TEXT;
