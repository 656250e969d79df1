//! Store integration tests: one conformance suite run against both backends (Postgres on a
//! real server, a fresh schema per test; SQLite in memory), plus Postgres concurrency tests.

// Test code: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod pg_concurrency;
mod support;
