//! Test backends: a fresh Postgres schema per test on a real server, or a fresh in-memory
//! SQLite.

use chrono::{DateTime, TimeZone, Utc};
use sluice_core::JobId;
use sluice_store::{
    Event, EventListParams, JobInsertParams, NewTask, SqliteStore, Store, StoreExt,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

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
        webhook: None,
        tasks: (0..lakes)
            .map(|i| NewTask {
                lake: format!("lake-{i:05}"),
                scope: format!("aws:{}", i % 3),
                est_calls: 4,
                shareable: true,
            })
            .collect(),
        now: t0(),
    }
}

/// Every event of a job, in order.
pub async fn job_events(s: &Arc<dyn Store>, job: JobId) -> Vec<Event> {
    let of_job = EventListParams {
        job_id: Some(job),
        limit: 1000,
        ..Default::default()
    };
    s.event_list_until(of_job, &|_| false).await.unwrap()
}

/// Starts `waiting.task_wait(timeout)`, submits a job to `submit_to` 200 ms later and returns
/// the waiter, which gives how long the wait took.
pub async fn submit_while_waiting(
    waiting: &Arc<dyn Store>,
    timeout: Duration,
    submit_to: &Arc<dyn Store>,
) -> JoinHandle<Duration> {
    let waiter = {
        let s = waiting.clone();
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            s.task_wait(timeout).await;
            t.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    submit_to.job_insert(job("alice", 1)).await.unwrap();
    waiter
}
