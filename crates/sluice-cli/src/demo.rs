//! `sluice demo`: a needle hunt end to end on the embedded store, nothing to install. It
//! generates a few hundred security-telemetry lakes with planted needles, registers them,
//! submits an IOC hunt for the needles across every lake plus a small urgent SQL hunt, runs
//! them through the real worker, engine and scheduler, and prints what was found and where.

use crate::hunts::{self, HuntRunner, Submission};
use anyhow::{Context, Result, bail};
use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use sluice_core::{JobState, SystemClock};
use sluice_engine::generate::{GenerateParams, Manifest, generate};
use sluice_engine::{HuntSpec, LakeSelector};
use sluice_scheduler::{RescuerConfig, Scheduler, SchedulerConfig};
use sluice_store::{EventListParams, Job, Store};
use sluice_worker::{Worker, WorkerConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Folder for the demo's database, lakes and results (the database is recreated each run).
    #[arg(long, default_value = ".sluice")]
    data_dir: PathBuf,
    /// Lakes to generate.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    lakes: u32,
    /// Rows per lake.
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u32).range(3..=10_000_000))]
    rows: u32,
    /// Give up if the hunts have not finished by then.
    #[arg(long, default_value = "300s", value_parser = crate::parse_duration)]
    timeout: Duration,
}

const ACCOUNTS: u64 = 3;

fn remove_db(db: &std::path::Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing old {}", p.display()))?;
        }
    }
    Ok(())
}

/// Reuses generated lakes when the manifest matches the asked size; generates them otherwise.
async fn lakes(dir: PathBuf, count: u32, rows: u32) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(m) = serde_json::from_str::<Manifest>(&text)
        && m.lakes.len() == count as usize
        && m.lakes
            .iter()
            .all(|l| l.rows == (rows as usize / 3).max(1) * 3 && l.path.exists())
    {
        return Ok(m);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing old {}", dir.display()))?;
    }
    let p = GenerateParams::new(&dir, count as usize, rows as usize, 2026);
    tokio::task::spawn_blocking(move || generate(&p))
        .await
        .context("generator")?
        .context("generating lakes")
}

pub async fn run(args: DemoArgs, json: bool, connect_timeout: Duration) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let db = data_dir.join("demo.db");
    remove_db(&db)?;
    let store = crate::open_store(&format!("sqlite://{}", db.display()), connect_timeout).await?;
    let results_dir = data_dir.join("results");
    if results_dir.exists() {
        std::fs::remove_dir_all(&results_dir)?;
    }
    let engine = crate::commands::engine(&results_dir)?;
    let say = |s: String| {
        if !json {
            println!("{s}");
        }
    };

    let t = Instant::now();
    let manifest = lakes(data_dir.join("lakes"), args.lakes, args.rows).await?;
    let bytes: u64 = manifest.lakes.iter().map(|l| l.bytes).sum();
    say(format!(
        "sluice demo: {} lakes of security telemetry ({:.1} MB of Parquet, {} planted needles) in {}",
        manifest.lakes.len(),
        bytes as f64 / 1e6,
        manifest.needles.len(),
        data_dir.join("lakes").display()
    ));
    for (i, l) in manifest.lakes.iter().enumerate() {
        let url = format!("file://{}/", l.path.display());
        let scope = format!("aws:{}", 100_000_000_000 + i as u64 % ACCOUNTS);
        let tags = [("tenant".to_string(), format!("tenant-{}", i % 10))].into();
        crate::commands::register(
            store.as_ref(),
            &engine,
            &l.name,
            &url,
            &scope,
            tags,
            BTreeMap::new(),
        )
        .await?;
    }
    say(format!(
        "registered {} lakes across {ACCOUNTS} provider accounts ({:.1}s)",
        manifest.lakes.len(),
        t.elapsed().as_secs_f64()
    ));

    // The bulk sweep: every needle, every lake. Then an urgent hunt behind it.
    let sweep = HuntSpec::Ioc {
        ips: manifest.ips(),
        hashes: manifest.hashes(),
        domains: manifest.domains(),
        since: None,
        until: None,
        lakes: LakeSelector::default(),
    };
    let urgent = HuntSpec::Sql {
        sql: "SELECT host, count(*) AS connections, sum(bytes) AS bytes\nFROM events\nWHERE dst_port = 3389\nGROUP BY host\nORDER BY connections DESC\nLIMIT 3".into(),
        lakes: LakeSelector { tags: [("tenant".to_string(), "tenant-0".to_string())].into(), ..Default::default() },
    };
    let mut jobs = Vec::new();
    for (spec, owner, priority) in [
        (&sweep, "bulk-researcher", 0i16),
        (&urgent, "urgent-researcher", 10),
    ] {
        let plan = hunts::plan(store.as_ref(), spec)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let sub = Submission {
            owner: owner.into(),
            idempotency_key: None,
            priority,
            max_attempts: 3,
        };
        let j = store
            .job_insert(hunts::job_params(spec, &plan, &sub)?)
            .await?
            .job;
        say(format!(
            "submitted job {} for {owner}: {} lakes, priority {priority}",
            j.id, j.counts.total
        ));
        jobs.push(j);
    }

    let stop = CancellationToken::new();
    let clock = Arc::new(SystemClock);
    let mut cfg = WorkerConfig::new("demo-worker");
    cfg.concurrency = 8;
    cfg.idle_poll = Duration::from_millis(50);
    let runner = Arc::new(HuntRunner::new(store.clone(), engine.clone()));
    let worker =
        tokio::spawn(Worker::new(store.clone(), runner, clock.clone(), cfg).run(stop.clone()));
    let mut scfg = SchedulerConfig::new("demo");
    scfg.rescue = RescuerConfig {
        every: Duration::from_secs(1),
        batch: 1000,
    };
    let scheduler = tokio::spawn(Scheduler::new(store.clone(), clock, scfg).run(stop.clone()));

    let started = Instant::now();
    let mut done_at: BTreeMap<i64, f64> = BTreeMap::new();
    let finished: Vec<Job> = loop {
        let mut now = Vec::new();
        for j in &jobs {
            now.push(store.job_get(j.id).await?);
        }
        for j in &now {
            if j.state.is_terminal() {
                done_at
                    .entry(j.id.0)
                    .or_insert(started.elapsed().as_secs_f64());
            }
        }
        let line: Vec<String> = now
            .iter()
            .map(|j| {
                format!(
                    "job {} {:>9} {:>4}/{:<4} rows {}",
                    j.id,
                    j.state.as_str(),
                    j.counts.done,
                    j.counts.total,
                    j.rows_found
                )
            })
            .collect();
        say(format!("  {}", line.join("   ")));
        if now.iter().all(|j| j.state.is_terminal()) {
            break now;
        }
        if started.elapsed() > args.timeout {
            stop.cancel();
            bail!("the demo's hunts did not finish within {:?}", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop.cancel();
    worker.await.context("worker")?;
    let _ = scheduler.await;

    // What the sweep found, against what was planted.
    let keys = hunts::result_keys(store.as_ref(), finished[0].id).await?;
    let batches = engine.results(&keys, 0, 10_000).await?;
    let mut found: BTreeSet<(String, String, String)> = BTreeSet::new();
    for b in &batches {
        let col = |c: &str| -> Result<Vec<String>> {
            let a = cast(
                b.column_by_name(c).context("result column")?,
                &DataType::Utf8,
            )?;
            let a = a
                .as_any()
                .downcast_ref::<StringArray>()
                .context("strings")?
                .clone();
            Ok((0..a.len()).map(|i| a.value(i).to_string()).collect())
        };
        let (lakes, dts) = (col("_lake")?, col("dt")?);
        for c in ["src_ip", "dst_ip", "domain", "file_sha256"] {
            for (i, v) in col(c)?.into_iter().enumerate() {
                if manifest.needles.iter().any(|n| n.value == v) {
                    found.insert((lakes[i].clone(), dts[i].clone(), format!("{c}={v}")));
                }
            }
        }
    }
    let planted: BTreeSet<(String, String, String)> = manifest
        .needles
        .iter()
        .map(|n| {
            (
                n.lake.clone(),
                n.dt.clone(),
                format!("{}={}", n.column, n.value),
            )
        })
        .collect();
    let exact = found == planted && finished[0].rows_found as usize == planted.len();
    let ok = exact && finished.iter().all(|j| j.state == JobState::Succeeded);
    let journal = journal(store.as_ref()).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": ok, "exact": exact, "sweep": finished[0], "urgent": finished[1],
                "needles_planted": planted.len(), "needles_found": found.len(),
                "seconds": done_at, "journal": journal,
            })
        );
    } else {
        println!(
            "\nthe sweep (job {}) found {} rows; planted needles: {}",
            finished[0].id,
            finished[0].rows_found,
            planted.len()
        );
        for (lake, dt, what) in &found {
            println!("  {lake}  dt={dt}  {what}");
        }
        println!(
            "{}",
            if exact {
                "every planted needle was found, and nothing else"
            } else {
                "MISMATCH between planted and found needles"
            }
        );
        println!(
            "the urgent hunt (job {}, priority 10) finished after {:.1}s, the sweep after {:.1}s",
            finished[1].id,
            done_at.get(&finished[1].id.0).copied().unwrap_or_default(),
            done_at.get(&finished[0].id.0).copied().unwrap_or_default()
        );
        println!("journal (every decision, for `sluice explain`):");
        for (k, n) in &journal {
            println!("  {k:<16} {n}");
        }
        println!(
            "try: sluice --database-url sqlite://{} --results-dir {} results {}",
            db.display(),
            results_dir.display(),
            finished[0].id
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn journal(store: &dyn Store) -> Result<BTreeMap<String, usize>> {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store
            .event_list(EventListParams {
                job_id: None,
                scope: None,
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
    Ok(kinds)
}
