-- How a scope's adaptive rate moves (sluice-core's AdaptiveConfig as JSON: interval_secs,
-- start_fraction, min_fraction, increase); NULL: the defaults.
ALTER TABLE budgets ADD COLUMN ramp JSONB;
