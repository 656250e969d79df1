//! `sluice demo`: the whole queue on the embedded store, no server to install. A 300-lake bulk
//! job and a small urgent job (submitted after it, higher priority, one planted transient
//! failure) run through the real worker, rescuer and store; the journal shows every decision.

use anyhow::{Context, Result};
use sluice_core::{JobState, SystemClock};
use sluice_scheduler::{Rescuer, RescuerConfig};
use sluice_store::{EventListParams, JobInsertParams, NewTask};
use sluice_worker::{BuiltinRunner, Worker, WorkerConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Folder for the demo's database (recreated at every run).
    #[arg(long, default_value = ".sluice")]
    data_dir: PathBuf,
    /// Lakes in the bulk job.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    lakes: u32,
    /// Give up if the jobs have not finished by then.
    #[arg(long, default_value = "120s", value_parser = crate::parse_duration)]
    timeout: Duration,
}

const SCOPES: [&str; 3] = ["aws:111111111111", "aws:222222222222", "aws:333333333333"];

fn tasks(n: u32, prefix: &str) -> Vec<NewTask> {
    (0..n)
        .map(|i| NewTask {
            lake: format!("{prefix}-{i:04}"),
            scope: SCOPES[i as usize % SCOPES.len()].to_string(),
            est_calls: 4,
        })
        .collect()
}

pub async fn run(args: DemoArgs, json: bool, connect_timeout: Duration) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let db = args.data_dir.join("demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing old {}", p.display()))?;
        }
    }
    let url = format!("sqlite://{}", db.display());
    let store = crate::open_store(&url, connect_timeout).await?;
    let clock = Arc::new(SystemClock);
    let now = chrono::Utc::now();

    let bulk = store
        .job_insert(JobInsertParams {
            owner: "bulk-researcher".into(),
            idempotency_key: Some("demo-bulk".into()),
            spec: serde_json::json!({"kind": "sleep", "ms": 25}),
            sql: None,
            priority: 0,
            max_attempts: 3,
            tasks: tasks(args.lakes, "lake"),
            now,
        })
        .await?
        .job;
    let urgent = store
        .job_insert(JobInsertParams {
            owner: "urgent-researcher".into(),
            idempotency_key: Some("demo-urgent".into()),
            spec: serde_json::json!({"kind": "sleep", "ms": 20, "fail_first": 1}),
            sql: None,
            priority: 10,
            max_attempts: 3,
            tasks: tasks(3, "incident-lake"),
            now,
        })
        .await?
        .job;
    if !json {
        println!("sluice demo: embedded store at {}", db.display());
        println!(
            "submitted job {} (bulk, {} lakes) and job {} (urgent, 3 lakes, priority 10)",
            bulk.id, args.lakes, urgent.id
        );
    }

    let stop = CancellationToken::new();
    let mut cfg = WorkerConfig::new("demo-worker");
    cfg.concurrency = 32;
    cfg.idle_poll = Duration::from_millis(50);
    cfg.lease = Duration::from_secs(10);
    cfg.heartbeat_every = Duration::from_secs(3);
    cfg.retry.base = Duration::from_millis(100);
    cfg.retry.cap = Duration::from_millis(500);
    let worker = Worker::new(
        store.clone(),
        Arc::new(BuiltinRunner::new(store.clone())),
        clock.clone(),
        cfg,
    );
    let worker = tokio::spawn(worker.run(stop.clone()));
    let rescuer = Rescuer::new(
        store.clone(),
        clock,
        RescuerConfig {
            every: Duration::from_secs(1),
            batch: 1000,
        },
    );
    let rescuer = tokio::spawn(rescuer.run(stop.clone()));

    let started = Instant::now();
    let mut urgent_done_at = None;
    let (b, u) = loop {
        let b = store.job_get(bulk.id).await?;
        let u = store.job_get(urgent.id).await?;
        if u.state.is_terminal() && urgent_done_at.is_none() {
            urgent_done_at = Some(started.elapsed());
        }
        if !json {
            println!(
                "  bulk {:>9} {:>4}/{:<4}  urgent {:>9} {}/{}",
                b.state.as_str(),
                b.counts.done,
                b.counts.total,
                u.state.as_str(),
                u.counts.done,
                u.counts.total
            );
        }
        if b.state.is_terminal() && u.state.is_terminal() {
            break (b, u);
        }
        if started.elapsed() > args.timeout {
            stop.cancel();
            anyhow::bail!("demo did not finish within {:?}", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.cancel();
    let stats = worker.await.context("worker task")?;
    let _ = rescuer.await;

    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store
            .event_list(EventListParams {
                job_id: None,
                after_id: after,
                limit: 5_000,
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for e in &page {
            *kinds.entry(e.kind.clone()).or_default() += 1;
        }
    }
    let ok = b.state == JobState::Succeeded && u.state == JobState::Succeeded;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": ok, "bulk": b, "urgent": u,
                "urgent_seconds": urgent_done_at.map(|d| d.as_secs_f64()),
                "total_seconds": started.elapsed().as_secs_f64(),
                "journal": kinds, "worker": {"claimed": stats.claimed, "recorded": stats.recorded},
            })
        );
    } else {
        println!(
            "bulk job {}: {} ({} lakes) in {:.1}s; urgent job {}: {} in {:.1}s despite one planted failure per lake",
            b.id,
            b.state,
            b.counts.done,
            started.elapsed().as_secs_f64(),
            u.id,
            u.state,
            urgent_done_at.unwrap_or_default().as_secs_f64()
        );
        println!("journal (sluice explain reads this):");
        for (k, n) in &kinds {
            println!("  {k:<16} {n}");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
