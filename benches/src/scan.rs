//! Needle-hunt scan benchmark: Sluice's per-lake engine against DuckDB on the same generated
//! Parquet files, in the same run, plus object-store calls and bytes read per lake with bloom
//! filters on and off. Prints JSON lines; `benches/scan.sh` adds DuckDB and the summary.
//!
//! The hunt is the demo's: every planted IP, hash and domain, over every lake, one task per
//! lake as Sluice runs it (a fresh sandboxed session per lake, caches shared by the worker).

use anyhow::{Context, Result};
use clap::Parser;
use sluice_engine::counting::Counts;
use sluice_engine::generate::{GenerateParams, Manifest, generate};
use sluice_engine::{Engine, EngineConfig, EngineError, HuntSpec, LakeRef, LakeSelector, TaskRun};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Where the lakes are (generated there if the manifest is missing or differs).
    #[arg(long, default_value = "target/scan-lakes")]
    dir: PathBuf,
    #[arg(long, default_value_t = 8)]
    lakes: usize,
    /// Rows per lake (3 daily files each).
    #[arg(long, default_value_t = 4_000_000)]
    rows: usize,
    #[arg(long, default_value_t = 128 * 1024)]
    row_group_rows: usize,
    /// Lakes hunted at once (worker slots).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// The `sluice` binary: also run the hunt in runner processes (as a worker does by
    /// default) and print it beside the in-process runs, to measure what isolation costs.
    #[arg(long)]
    runner: Option<PathBuf>,
    /// The engine's byte cache of lake reads, in MiB (the warm run is also measured without).
    #[arg(long, default_value_t = 256)]
    byte_cache_mib: u64,
}

fn manifest(args: &Args) -> Result<Manifest> {
    if let Ok(text) = std::fs::read_to_string(args.dir.join("manifest.json"))
        && let Ok(m) = serde_json::from_str::<Manifest>(&text)
        && m.lakes.len() == args.lakes
        && m.lakes.iter().all(|l| l.rows == args.rows / 3 * 3)
    {
        return Ok(m);
    }
    let mut p = GenerateParams::new(&args.dir, args.lakes, args.rows, 2026);
    p.row_group_rows = args.row_group_rows;
    let t = Instant::now();
    let m = generate(&p)?;
    eprintln!(
        "generated {} lakes in {:.1}s",
        m.lakes.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(m)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let m = manifest(&args)?;
    let bytes: u64 = m.lakes.iter().map(|l| l.bytes).sum();
    let spec = HuntSpec::Ioc {
        ips: m.ips(),
        hashes: m.hashes(),
        domains: m.domains(),
        since: None,
        until: None,
        lakes: LakeSelector::default(),
    };
    let scratch = tempfile_dir()?;
    let mut lakes = Vec::new();
    let probe_engine = Engine::new(EngineConfig::new(&scratch))?;
    for (i, l) in m.lakes.iter().enumerate() {
        let abs = std::fs::canonicalize(&l.path)?;
        let mut lake = LakeRef {
            id: i as i64 + 1,
            name: l.name.clone(),
            url: format!("file://{}/", abs.display()),
            scope: "local".into(),
            partition_cols: vec![],
            schema: sluice_engine::generate::telemetry_schema(),
            options: BTreeMap::new(),
        };
        (lake.schema, lake.partition_cols) = probe_engine.discover(&lake).await?;
        lakes.push(lake);
    }
    drop(probe_engine);
    // The same needles in an IOC list at its documented size: the rest are hashes no lake
    // holds, so bloom filters and statistics must still skip what holds no needle.
    let (ips, domains) = (m.ips(), m.domains());
    let mut hashes = m.hashes();
    let pad = sluice_engine::hunt::MAX_IOCS - ips.len() - domains.len() - hashes.len();
    hashes.extend((0..pad).map(|i| format!("{:064x}", 0xdead_0000_u64 + i as u64)));
    let ioc_10k = HuntSpec::Ioc {
        ips,
        hashes,
        domains,
        since: None,
        until: None,
        lakes: LakeSelector::default(),
    };
    // Cold (first hunt: LIST and footers), warm (repeat on the same worker, with and without
    // the byte cache), bloom off, and the 10,000-IOC hunt (cold).
    let cache = args.byte_cache_mib << 20;
    for (label, spec, bloom, repeat, cache) in [
        ("cold", &spec, true, false, cache),
        ("warm", &spec, true, true, cache),
        ("warm_no_cache", &spec, true, true, 0),
        ("no_bloom", &spec, false, false, cache),
        ("ioc_10k", &ioc_10k, true, false, cache),
    ] {
        let counts = Arc::new(Counts::default());
        let mut cfg = EngineConfig::new(&scratch);
        cfg.byte_cache_bytes = cache;
        let engine = Arc::new(Engine::new(cfg)?.with_call_counts(counts.clone()));
        let mut hunt = sluice_engine::compile(spec, &lakes[0].partition_cols)?;
        hunt.options.insert(
            "datafusion.execution.parquet.bloom_filter_on_read".into(),
            bloom.to_string(),
        );
        let passes = if repeat { 2 } else { 1 };
        let mut secs = 0.0;
        let mut rows = 0;
        for pass in 0..passes {
            let before = counts.snapshot();
            let t = Instant::now();
            rows = run_all(&On::Engine(engine.clone()), &lakes, &hunt, args.concurrency).await?;
            // A fast wrong answer is worth nothing: every needle, and only needles.
            anyhow::ensure!(
                rows as usize == m.needles.len(),
                "{label}: found {rows} rows, planted {}",
                m.needles.len()
            );
            if pass + 1 == passes {
                secs = t.elapsed().as_secs_f64();
                let c = counts.snapshot().since(&before);
                println!(
                    "{}",
                    serde_json::json!({
                        "system": "sluice", "run": label, "lakes": lakes.len(), "bytes_on_disk": bytes,
                        "rows_found": rows, "needles": m.needles.len(), "secs": (secs * 1000.0).round() / 1000.0,
                        "sql_bytes": hunt.sql.len(),
                        "per_lake": {
                            "calls": c.calls() as f64 / lakes.len() as f64,
                            "list": c.list as f64 / lakes.len() as f64,
                            "footer_reads": c.footer as f64 / lakes.len() as f64,
                            "bytes_read": c.bytes as f64 / lakes.len() as f64,
                        },
                    })
                );
            }
        }
        let _ = (secs, rows);
    }
    // The same hunt in runner processes (ADR 0010): a pool of `concurrency` warm runners,
    // cold (first hunt, new runners) then warm (repeat: runners and their caches reused).
    if let Some(program) = &args.runner {
        let hunt = sluice_engine::compile(&spec, &lakes[0].partition_cols)?;
        let mut cfg = EngineConfig::new(&scratch);
        cfg.byte_cache_bytes = cache;
        let engine = Arc::new(Engine::new(cfg)?);
        let pool = Arc::new(sluice_engine::isolate::RunnerPool::new(
            sluice_engine::isolate::PoolConfig {
                program: program.clone(),
                runner: sluice_engine::isolate::RunnerConfig::from_engine(engine.config())?,
                max_idle: args.concurrency,
            },
            engine,
        ));
        // A worker starts its runners before its first claim.
        pool.prewarm(args.concurrency).await;
        let on = On::Runners(pool);
        for label in ["isolated_cold", "isolated_warm"] {
            let t = Instant::now();
            let rows = run_all(&on, &lakes, &hunt, args.concurrency).await?;
            anyhow::ensure!(
                rows as usize == m.needles.len(),
                "{label}: found {rows} rows, planted {}",
                m.needles.len()
            );
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({
                    "system": "sluice", "run": label, "lakes": lakes.len(), "bytes_on_disk": bytes,
                    "rows_found": rows, "needles": m.needles.len(),
                    "secs": (secs * 1000.0).round() / 1000.0,
                })
            );
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Where a task runs: in this process, or in a runner process (as a worker runs it).
#[derive(Clone)]
enum On {
    Engine(Arc<Engine>),
    Runners(Arc<sluice_engine::isolate::RunnerPool>),
}

impl On {
    async fn run(&self, run: TaskRun) -> Result<sluice_engine::TaskOutput, EngineError> {
        match self {
            On::Engine(e) => e.run(run, CancellationToken::new()).await,
            On::Runners(pool) => {
                let how = sluice_engine::isolate::RunOptions {
                    owner: "bench",
                    fresh: false,
                    retried: false,
                };
                pool.run(run, how, CancellationToken::new()).await
            }
        }
    }
}

async fn run_all(
    on: &On,
    lakes: &[LakeRef],
    hunt: &sluice_engine::CompiledHunt,
    concurrency: usize,
) -> Result<i64> {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, lake) in lakes.iter().enumerate() {
        let permit = sem.clone().acquire_owned().await?;
        let (on, lake, hunt) = (on.clone(), lake.clone(), hunt.clone());
        tasks.spawn(async move {
            let run = TaskRun {
                job_id: 1,
                task_id: i as i64 + 1,
                token: 1,
                lake,
                hunt,
            };
            let r = on.run(run).await;
            drop(permit);
            r
        });
    }
    let mut rows = 0;
    while let Some(r) = tasks.join_next().await {
        rows += r.context("task")??.rows;
    }
    Ok(rows)
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("sluice-scan-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
