-- Nothing to do: SQLite has no autovacuum to tune (see the Postgres migration). Kept so that both
-- backends number their migrations alike.
SELECT 1;
