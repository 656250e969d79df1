-- Shared scans (ADR 0014): a claim takes along other shareable pending tasks of the lakes it
-- claimed, one probe of this index per lake, in release order. A task is shareable when the
-- engine can answer it in one scan with others (an IOC hunt); SQL hunts are not taken along.
ALTER TABLE tasks ADD COLUMN shareable INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_lake_claimable ON tasks (lake, priority DESC, seq, id)
    WHERE state = 'pending' AND shareable;
