//! Test support shared by every crate's integration tests: a fresh Postgres schema per test on
//! a real server, in database `sluice_test` of the server `SLUICE_TEST_DATABASE_URL` names
//! (default `postgres://postgres@127.0.0.1:5432`).

use crate::{ConnectOptions, PgStore, Store};
use sqlx::{Connection, Executor, PgConnection};

pub fn server_url() -> String {
    std::env::var("SLUICE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

/// The URL of the test database, created on first use (racing creators are fine).
pub async fn test_db_url() -> String {
    let url = server_url();
    let url = url.trim_end_matches('/');
    let host_end = url.find("://").map_or(0, |s| s + 3);
    let base = match url[host_end..].find('/') {
        Some(i) => &url[..host_end + i],
        None => url,
    };
    let mut c = match PgConnection::connect(&format!("{base}/postgres")).await {
        Ok(c) => c,
        Err(e) => panic!(
            "a PostgreSQL server at {base} is needed by these tests (set SLUICE_TEST_DATABASE_URL): {e}"
        ),
    };
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = 'sluice_test'")
            .fetch_optional(&mut c)
            .await
            .unwrap_or_else(|e| panic!("querying pg_database: {e}"));
    if exists.is_none()
        && let Err(e) = c.execute("CREATE DATABASE sluice_test").await
    {
        let code = e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.to_string());
        // 42P04: exists; 23505: a concurrent creator won the race.
        assert!(
            matches!(code.as_deref(), Some("42P04" | "23505")),
            "create database sluice_test: {e}"
        );
    }
    format!("{base}/sluice_test")
}

/// A schema name no other test uses.
pub fn fresh_schema() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

/// A migrated store in a fresh schema, and a URL other processes can use to reach it.
pub async fn pg_store() -> (PgStore, String) {
    let url = test_db_url().await;
    let schema = fresh_schema();
    let store = PgStore::connect(
        &url,
        ConnectOptions {
            max_connections: 12,
            schema: Some(schema.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrating: {e}"));
    (store, format!("{url}?options[search_path]={schema}"))
}
