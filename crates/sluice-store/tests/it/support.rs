//! Test backends: a fresh Postgres schema per test (in database `sluice_test` on the server
//! `SLUICE_TEST_DATABASE_URL` points at) or a fresh in-memory SQLite.

use chrono::{DateTime, TimeZone, Utc};
use sluice_store::{ConnectOptions, JobInsertParams, NewTask, PgStore, SqliteStore, Store};
use sqlx::{Connection, Executor, PgConnection};
use std::sync::Arc;

pub fn server_url() -> String {
    std::env::var("SLUICE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

/// The test database, created on first use (racing creators are fine).
pub async fn test_db_url() -> String {
    let base = server_url();
    let base = base.trim_end_matches('/');
    let base = match base.rfind('/') {
        Some(i) if i > base.find("://").map_or(0, |s| s + 2) => &base[..i],
        _ => base,
    };
    let mut c = PgConnection::connect(&format!("{base}/postgres"))
        .await
        .unwrap_or_else(|e| panic!("postgres at {base} is needed for the store tests: {e}"));
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = 'sluice_test'")
            .fetch_optional(&mut c)
            .await
            .unwrap();
    if exists.is_none() {
        if let Err(e) = c.execute("CREATE DATABASE sluice_test").await {
            let code = e
                .as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.to_string());
            assert!(
                matches!(code.as_deref(), Some("42P04" | "23505")),
                "create database: {e}"
            );
        }
    }
    format!("{base}/sluice_test")
}

pub fn fresh_schema() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

pub async fn pg() -> Arc<dyn Store> {
    let url = test_db_url().await;
    let store = PgStore::connect(
        &url,
        ConnectOptions {
            max_connections: 12,
            schema: Some(fresh_schema()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

pub async fn sqlite() -> Arc<dyn Store> {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

pub fn job(owner: &str, lakes: usize) -> JobInsertParams {
    JobInsertParams {
        owner: owner.to_string(),
        idempotency_key: None,
        spec: serde_json::json!({"kind": "noop"}),
        sql: None,
        priority: 0,
        max_attempts: 3,
        tasks: (0..lakes)
            .map(|i| NewTask {
                lake: format!("lake-{i:05}"),
                scope: format!("aws:{}", i % 3),
                est_calls: 4,
            })
            .collect(),
        now: t0(),
    }
}
