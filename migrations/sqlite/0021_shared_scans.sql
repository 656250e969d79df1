-- Shared scans (ADR 0014): a claim takes along other pending tasks of the lakes it claimed,
-- one probe of this index per lake, in release order.
CREATE INDEX tasks_lake_claimable ON tasks (lake, priority DESC, seq, id) WHERE state = 'pending';
