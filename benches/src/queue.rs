//! Queue throughput: bulk-insert N no-op tasks into a fresh schema on Postgres, then burn them
//! down through the real worker loop (claim → run → finish, journal and job counters included)
//! and report tasks/s until the database shows the job finished. Prints one JSON line.

use anyhow::{Context, Result};
use clap::Parser;
use sluice_core::{JobState, SystemClock};
use sluice_store::{ConnectOptions, JobInsertParams, NewTask, PgStore, Store};
use sluice_worker::{BuiltinRunner, Worker, WorkerConfig};
use sqlx::{Connection, Executor};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Tasks to burn down.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Worker loops (each with its own claimer, finisher and heartbeater) in this process.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    /// Most tasks per claim.
    #[arg(long, default_value_t = 500)]
    claim_batch: u32,
    /// Most outcomes per finish call.
    #[arg(long, default_value_t = 1000)]
    finish_batch: usize,
    /// Lakes (tasks) per job: several jobs make completions touch several job rows.
    #[arg(long, default_value_t = 100_000)]
    job_size: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let url = sluice_store::testing::test_db_url().await;
    let schema = format!("bench_{}", sluice_store::testing::fresh_schema());
    let store = PgStore::connect(
        &url,
        ConnectOptions {
            max_connections: 4 * args.workers.max(1) as u32 + 2,
            schema: Some(schema.clone()),
            ..Default::default()
        },
    )
    .await
    .context("connecting")?;
    store.migrate().await?;
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(store.pool())
        .await?;
    let store: Arc<dyn Store> = Arc::new(store);

    let t = Instant::now();
    let mut jobs = Vec::new();
    let mut left = args.tasks;
    while left > 0 {
        let n = left.min(args.job_size.max(1));
        left -= n;
        let tasks = (0..n)
            .map(|i| NewTask {
                lake: format!("lake-{i:06}"),
                scope: format!("aws:{}", i % 16),
                est_calls: 1,
            })
            .collect();
        let j = store
            .job_insert(JobInsertParams {
                owner: "bench".into(),
                idempotency_key: None,
                spec: serde_json::json!({"kind": "noop"}),
                sql: None,
                priority: 0,
                max_attempts: 3,
                tasks,
                now: chrono::Utc::now(),
            })
            .await?;
        jobs.push(j.job.id);
    }
    let enqueue_secs = t.elapsed().as_secs_f64();

    let stop = CancellationToken::new();
    let clock = Arc::new(SystemClock);
    let runner = Arc::new(BuiltinRunner::new(store.clone()));
    let t = Instant::now();
    let mut handles = Vec::new();
    for w in 0..args.workers.max(1) {
        let mut cfg = WorkerConfig::new(format!("bench-{w}"));
        cfg.concurrency = args.concurrency;
        cfg.claim_batch = args.claim_batch;
        cfg.finish_batch = args.finish_batch;
        cfg.idle_poll = Duration::from_millis(5);
        handles.push(tokio::spawn(
            Worker::new(store.clone(), runner.clone(), clock.clone(), cfg).run(stop.clone()),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    for id in &jobs {
        loop {
            let j = store.job_get(*id).await?;
            if j.state.is_terminal() {
                anyhow::ensure!(j.state == JobState::Succeeded, "job {id} ended {}", j.state);
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "burn-down did not finish: {j:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let process_secs = t.elapsed().as_secs_f64();
    stop.cancel();
    let mut claimed = 0;
    for h in handles {
        claimed += h.await?.claimed;
    }
    println!(
        "{}",
        serde_json::json!({
            "system": "sluice",
            "tasks": args.tasks,
            "jobs": jobs.len(),
            "workers": args.workers,
            "concurrency": args.concurrency,
            "claim_batch": args.claim_batch,
            "synchronous_commit": sync,
            "bulk": {"secs": round(enqueue_secs), "per_sec": (args.tasks as f64 / enqueue_secs).round()},
            "process": {"secs": round(process_secs), "per_sec_db": (args.tasks as f64 / process_secs).round(), "claimed": claimed},
        })
    );
    let mut c = sqlx::PgConnection::connect(&url).await?;
    c.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .await?;
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
