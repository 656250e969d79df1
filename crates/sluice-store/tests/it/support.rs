//! Test backends: a fresh Postgres schema per test on a real server, or a fresh in-memory
//! SQLite.

use chrono::{DateTime, TimeZone, Utc};
use sluice_store::{JobInsertParams, NewTask, SqliteStore, Store};
use std::sync::Arc;

pub async fn pg() -> Arc<dyn Store> {
    Arc::new(sluice_store::testing::pg_store().await.0)
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
        retention_secs: None,
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
