//! Store integration tests: one conformance suite run against both backends (Postgres on a
//! real server, a fresh schema per test; SQLite in memory), plus Postgres concurrency tests.

mod conformance;
mod pg_concurrency;
mod support;
