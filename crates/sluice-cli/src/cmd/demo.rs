//! `sluice demo`: a needle hunt end to end with nothing to install. It lays out a few hundred
//! security-telemetry lakes with planted needles in three simulated cloud accounts, starts the
//! provider simulator (a real S3 server with quotas and freezes) and a Sluice server (API,
//! scheduler, worker slots) in this process on an embedded SQLite store, submits a sweep for
//! every needle and an urgent SQL hunt through the HTTP API as two researchers, follows them,
//! and prints what was found and where. With `--outage` the provider freezes one account
//! mid-drain: its tasks wait behind an open breaker, nothing fails, and the drain resumes by
//! itself under the budget once the account thaws.

use crate::client::Client;
use crate::cmd::lab::{self, LabArgs, LabManifest};
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_api::wire::{JobView, SubmitRequest};
use sluice_core::SystemClock;
use sluice_engine::generate::NeedleKind;
use sluice_engine::{HuntSpec, LakeSelector};
use sluice_hunt::HuntRunner;
use sluice_scheduler::{RescuerConfig, Scheduler, SchedulerConfig};
use sluice_store::{EventListParams, Role, Store, StoreExt, TaskListParams, TokenInsertParams};
use sluice_worker::{GuardConfig, ProviderGuard};
use sluice_worker::{Worker, WorkerConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Folder for the demo's database, lakes and results (the database is recreated each run;
    /// the lakes are reused).
    #[arg(long, default_value = ".sluice")]
    data_dir: PathBuf,
    /// Lakes to lay out, shared among 3 provider accounts.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(3..=30_000))]
    lakes: u32,
    /// Rows per lake.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(3..=10_000_000))]
    rows: u32,
    /// Sluice's budget per account, in provider calls per second (the simulated provider
    /// allows 200/s and freezes an account that goes over for long).
    #[arg(long, default_value_t = 80.0, value_parser = budget_rate)]
    budget: f64,
    /// Freeze one account mid-drain (as the provider did in the incident) and watch its jobs
    /// pause, nothing fail, and the drain resume under the budget.
    #[arg(long)]
    outage: bool,
    /// How long the account stays frozen with `--outage`.
    #[arg(long, default_value = "6s", value_parser = crate::parse_duration, requires = "outage")]
    freeze_for: Duration,
    /// Give up if the hunts have not finished by then.
    #[arg(long, default_value = "300s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// Where the server's slots run hunts: in runner processes (`process`, as a worker does)
    /// or in the demo's own process (`none`, to compare the cost of isolation).
    #[arg(long, value_enum, default_value_t = crate::cmd::serve::Isolation::Process)]
    isolation: crate::cmd::serve::Isolation,
}

fn budget_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (1.0..=QUOTA).contains(&r) => Ok(r),
        _ => Err(format!(
            "{s:?}: the budget must be 1 to {QUOTA} calls/s (the simulated provider's quota)"
        )),
    }
}

const ACCOUNTS: u32 = 3;
/// The simulated provider's quota per account (calls/s and burst).
const QUOTA: f64 = 200.0;
/// Lakes of the urgent hunt.
const URGENT_LAKES: usize = 8;

fn remove_db(db: &std::path::Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing old {}", p.display()))?;
        }
    }
    Ok(())
}

fn local_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn token(store: &dyn Store, owner: &str) -> Result<String> {
    let token = sluice_api::new_token();
    store
        .token_insert(TokenInsertParams {
            lakes: sluice_store::LakeAccess::all(),
            owner: owner.into(),
            role: Role::Researcher,
            hash: sluice_api::hash_token(&token),
            label: "sluice demo".into(),
            now: chrono::Utc::now(),
        })
        .await?;
    Ok(token)
}

/// The freeze of `--outage`: when it began and ended, and what the jobs said meanwhile.
#[derive(Debug, Default, serde::Serialize)]
struct Outage {
    account: String,
    frozen_at_secs: Option<f64>,
    thawed_at_secs: Option<f64>,
    /// Every distinct reason a job gave for waiting during the outage.
    waiting: BTreeSet<String>,
    /// Lakes failed at any moment of the drain (must stay 0).
    most_lakes_failed: i64,
}

pub async fn run(args: DemoArgs, json: bool, connect_timeout: Duration) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let db = data_dir.join("demo.db");
    remove_db(&db)?;
    let db_url = format!("sqlite://{}", db.display());
    let store = crate::ctx::open_store(&db_url, connect_timeout).await?;
    let results_dir = data_dir.join("results");
    if results_dir.exists() {
        std::fs::remove_dir_all(&results_dir)?;
    }
    let t0 = Instant::now();

    // The provider: three accounts, their lakes in S3 buckets, Sluice's budget under the quota.
    let sim_url = format!("http://127.0.0.1:{}", local_port()?);
    let lab_args = LabArgs {
        dir: data_dir.join("lab"),
        sim_url: sim_url.clone(),
        accounts: ACCOUNTS,
        lakes_per_account: args.lakes.div_ceil(ACCOUNTS),
        rows: args.rows,
        quota_rate: QUOTA,
        quota_burst: QUOTA,
        freeze_after: 2.0,
        freeze_for: 30.0,
        budget_rate: Some(args.budget),
        budget_burst: Some(args.budget),
        roles: false,
    };
    let setup_engine = crate::ctx::engine(sluice_engine::EngineConfig::new(&results_dir))?;
    let m: LabManifest = lab::setup(store.as_ref(), &setup_engine, &lab_args).await?;
    drop(setup_engine);
    let sim_cfg = sluice_sim::SimConfig::from_json(&std::fs::read_to_string(&m.accounts_file)?)
        .map_err(anyhow::Error::msg)?;
    let sim_addr: std::net::SocketAddr = sim_url
        .trim_start_matches("http://")
        .parse()
        .context("simulator address")?;
    let sim = sluice_sim::Sim::new(sim_cfg, &m.sim_dir)
        .map_err(anyhow::Error::msg)?
        .start(sim_addr)
        .await
        .context("starting the provider simulator")?;

    // The server: API, scheduler and worker slots, provider calls through the guard. The demo
    // shortens the frozen-account cooldown (production default 15m) so the outage fits in a
    // minute.
    let stop = CancellationToken::new();
    let clock = Arc::new(SystemClock);
    let mut guard = GuardConfig::default();
    guard.breaker.frozen_cooldown = Duration::from_secs(2);
    guard.breaker.cooldown = Duration::from_secs(2);
    guard.breaker.max_cooldown = Duration::from_secs(4);
    let engine = Arc::new(
        sluice_engine::Engine::new(sluice_engine::EngineConfig::new(&results_dir))
            .context("starting the query engine")?
            .with_gate(Arc::new(ProviderGuard::new(
                store.clone(),
                clock.clone(),
                guard,
            ))),
    );
    let api = sluice_hunt::api(
        store.clone(),
        engine.clone(),
        sluice_api::ApiConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the API listener")?;
    let api_url = format!("http://{}", listener.local_addr()?);
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, sluice_api::router(api))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    let mut wcfg = WorkerConfig::new("demo-worker");
    wcfg.concurrency = 8;
    wcfg.spare = 1;
    wcfg.share = sluice_worker::DEFAULT_SHARE;
    wcfg.idle_poll = Duration::from_millis(50);
    let exec = match args.isolation {
        crate::cmd::serve::Isolation::Process => sluice_hunt::Executor::Isolated(
            crate::cmd::serve::runner_pool(engine.clone(), 9).await?,
        ),
        crate::cmd::serve::Isolation::None => sluice_hunt::Executor::InProcess(engine.clone()),
    };
    let runner = Arc::new(HuntRunner::with(store.clone(), exec));
    let worker =
        tokio::spawn(Worker::new(store.clone(), runner, clock.clone(), wcfg).run(stop.clone()));
    let mut scfg = SchedulerConfig::new("demo");
    scfg.rescue = RescuerConfig {
        every: Duration::from_secs(1),
        batch: 1000,
    };
    let scheduler =
        tokio::spawn(Scheduler::new(store.clone(), clock.clone(), scfg).run(stop.clone()));

    let outcome = drive(&args, json, &m, &store, &sim, &api_url, t0).await;
    stop.cancel();
    let _ = worker.await;
    let _ = scheduler.await;
    let _ = server.await;
    sim.stop();
    let d = outcome?;

    let journal = journal(store.as_ref()).await?;
    // Attempts are spent only by the hunt's own failures, never by the provider's.
    let mut attempts = 0;
    for j in [d.sweep.id, d.urgent.id] {
        let tasks = store
            .task_list(TaskListParams {
                job_id: sluice_core::JobId(j),
                limit: 100_000,
                after: None,
            })
            .await?;
        attempts += tasks.iter().map(|t| i64::from(t.attempt)).sum::<i64>();
    }
    let calls = d.calls_per_second;
    let mut worst: f64 = 0.0;
    let mut frozen_answers = 0;
    for (account, per) in &calls {
        worst = worst.max(lab::worst_window(&per.total, args.budget, args.budget).0);
        if account == &d.outage.account {
            frozen_answers = per.frozen.iter().sum::<u64>();
        }
    }
    let exact = d.found == d.planted && d.sweep.rows_found as usize == d.planted.len();
    let succeeded = d.sweep.state == "succeeded" && d.urgent.state == "succeeded";
    let ok = exact && succeeded && attempts == 0 && worst <= 1.0;
    // Hunt tasks through the slots per second, first submission to last job's end.
    let tasks = d.sweep.lakes.total + d.urgent.lakes.total;
    let last = d.seconds.values().copied().fold(0.0, f64::max);
    let tasks_per_second = if last > 0.0 { tasks as f64 / last } else { 0.0 };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": ok, "exact": exact, "lakes": m.lakes.len(), "sweep": d.sweep,
                "urgent": d.urgent, "needles_planted": d.planted.len(),
                "needles_found": d.found.len(), "seconds": d.seconds,
                "tasks_per_second": tasks_per_second,
                "attempts_spent": attempts, "worst_window": worst,
                "outage": args.outage.then_some(&d.outage),
                "provider_403s": frozen_answers, "journal": journal,
                "api_url": api_url, "token": d.token,
            })
        );
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    println!(
        "\nthe sweep (job {}) found {} rows; planted needles: {}",
        d.sweep.id,
        d.sweep.rows_found,
        d.planted.len()
    );
    for (lake, dt, what) in &d.found {
        println!("  {lake:<10} dt={dt}  {what}");
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
        "bob's urgent hunt (job {}, {URGENT_LAKES} lakes, priority 10) finished after {:.1}s; alice's sweep after {:.1}s",
        d.urgent.id,
        d.seconds.get(&d.urgent.id).copied().unwrap_or_default(),
        d.seconds.get(&d.sweep.id).copied().unwrap_or_default(),
    );
    println!(
        "{tasks} hunt tasks in {last:.1}s: {tasks_per_second:.1} tasks/s ({} isolation)",
        match args.isolation {
            crate::cmd::serve::Isolation::Process => "runner-process",
            crate::cmd::serve::Isolation::None => "no",
        }
    );
    if args.outage {
        let o = &d.outage;
        println!(
            "the outage: aws:{} frozen from {:.1}s to {:.1}s; its lakes waited, {} failed, {attempts} attempts spent; the frozen account saw {frozen_answers} calls (the breaker's probes), not the backlog",
            o.account,
            o.frozen_at_secs.unwrap_or_default(),
            o.thawed_at_secs.unwrap_or_default(),
            o.most_lakes_failed,
        );
    }
    println!(
        "provider calls per second, per account (budget {}/s; the simulated provider allows {QUOTA}/s):",
        args.budget
    );
    for (account, per) in &calls {
        let cells: Vec<String> = per.total.iter().map(|n| n.to_string()).collect();
        println!("  aws:{account}  {}", cells.join(" "));
    }
    println!(
        "worst window: {worst:.2} of burst + rate x T ({})",
        if worst <= 1.0 {
            "the budget held"
        } else {
            "OVER BUDGET"
        }
    );
    println!("journal (every decision, for `sluice explain`):");
    for (k, n) in &journal {
        println!("  {k:<20} {n}");
    }
    let base = format!(
        "sluice --database-url {db_url} --results-dir {}",
        results_dir.display()
    );
    println!("\nexplore further:");
    println!("  {base} explain {}", d.sweep.id);
    println!("  {base} results {} --format csv", d.sweep.id);
    println!("  {base} jobs");
    println!("  {base} server --listen 127.0.0.1:8080 &   # the API again, on this database");
    println!(
        "  export SLUICE_URL=http://127.0.0.1:8080 SLUICE_TOKEN={}   # alice's token",
        d.token
    );
    println!(
        "  sluice status {}; sluice results {}",
        d.sweep.id, d.sweep.id
    );
    println!(
        "  curl -H \"Authorization: Bearer $SLUICE_TOKEN\" $SLUICE_URL/v1/jobs/{}",
        d.sweep.id
    );
    if !args.outage {
        println!("  sluice demo --outage   # the provider freezes an account mid-drain");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Calls the simulator saw from one account, per second of the demo.
#[derive(Debug, Default)]
struct PerSecond {
    total: Vec<u64>,
    frozen: Vec<u64>,
}

struct Drive {
    sweep: JobView,
    urgent: JobView,
    token: String,
    seconds: BTreeMap<i64, f64>,
    planted: BTreeSet<(String, String, String)>,
    found: BTreeSet<(String, String, String)>,
    outage: Outage,
    calls_per_second: BTreeMap<String, PerSecond>,
}

/// Submits the two hunts through the API, follows them to the end (freezing an account
/// mid-drain with `--outage`), and reads the sweep's results back through the API.
async fn drive(
    args: &DemoArgs,
    json: bool,
    m: &LabManifest,
    store: &Arc<dyn Store>,
    sim: &sluice_sim::SimHandle,
    api_url: &str,
    t0: Instant,
) -> Result<Drive> {
    let say = |s: String| {
        if !json {
            println!("{s}");
        }
    };
    let bytes: u64 = walk_bytes(&m.sim_dir);
    say(format!(
        "sluice demo: {} lakes of security telemetry in {ACCOUNTS} provider accounts ({:.1} MB of Parquet, {} planted needles), ready in {:.1}s",
        m.lakes.len(),
        bytes as f64 / 1e6,
        m.needles.len(),
        t0.elapsed().as_secs_f64()
    ));
    say(format!(
        "  provider simulator: S3 at {}, quota {QUOTA} calls/s per account (over it long enough, an account freezes)",
        sim.url()
    ));
    say(format!(
        "  sluice server: API at {api_url}, budget {} calls/s per account, SQLite store",
        args.budget
    ));

    let alice = token(store.as_ref(), "alice").await?;
    let bob = token(store.as_ref(), "bob").await?;
    let timeout = Duration::from_secs(10);
    let as_alice = Client::remote(api_url, Some(alice.clone()), timeout)?;
    let as_bob = Client::remote(api_url, Some(bob), timeout)?;
    let values = |k: NeedleKind| -> Vec<String> {
        let set: BTreeSet<String> = m
            .needles
            .iter()
            .filter(|n| n.kind == k)
            .map(|n| n.value.clone())
            .collect();
        set.into_iter().collect()
    };
    let sweep = HuntSpec::Ioc {
        ips: values(NeedleKind::Ip),
        hashes: values(NeedleKind::Hash),
        domains: values(NeedleKind::Domain),
        since: None,
        until: None,
        lakes: LakeSelector::default(),
    };
    // The urgent hunt reads a few lakes of the last account (the outage freezes the first).
    let last = m.accounts.last().cloned().unwrap_or_default();
    let urgent = HuntSpec::Sql {
        sql: "SELECT host, count(*) AS connections, sum(bytes) AS bytes\nFROM events\nWHERE dst_port = 3389\nGROUP BY host\nORDER BY connections DESC\nLIMIT 3".into(),
        lakes: LakeSelector {
            names: m
                .lakes
                .iter()
                .filter(|(_, a)| **a == last)
                .map(|(n, _)| n.clone())
                .take(URGENT_LAKES)
                .collect(),
            ..Default::default()
        },
    };
    let submit = |spec: &HuntSpec, priority: i16| -> Result<SubmitRequest> {
        Ok(SubmitRequest {
            hunt: serde_json::to_value(spec)?,
            priority,
            max_attempts: Some(3),
            retention_secs: None,
            webhook: None,
        })
    };
    let s = as_alice.submit(&submit(&sweep, 0)?, None).await?;
    say(format!(
        "alice submits a sweep for every needle in every lake: job {}, {} lakes, about {} provider calls",
        s.job, s.tasks, s.est_provider_calls
    ));
    let u = as_bob.submit(&submit(&urgent, 10)?, None).await?;
    say(format!(
        "bob submits an urgent SQL hunt over {} lakes, priority 10: job {}",
        u.tasks, u.job
    ));
    let (sweep_id, urgent_id) = (s.job, u.job);

    let first = [as_alice.job(sweep_id).await?, as_bob.job(urgent_id).await?];
    let mut screen = Progress::new(
        json,
        &[("alice sweep", &first[0]), ("bob urgent", &first[1])],
    );
    let started = Instant::now();
    let sim_started = chrono::Utc::now().timestamp();
    let mut seconds = BTreeMap::new();
    let mut outage = Outage {
        account: m.accounts.first().cloned().unwrap_or_default(),
        ..Default::default()
    };
    let mut frozen_until: Option<Instant> = None;
    let mut last_wait = "";
    let mut ramping = false;
    let (sweep, urgent) = loop {
        let now = [as_alice.job(sweep_id).await?, as_bob.job(urgent_id).await?];
        let t = started.elapsed().as_secs_f64();
        for j in &now {
            if is_terminal(j) {
                seconds.entry(j.id).or_insert(t);
            }
        }
        screen.update(&now);
        let sweep = &now[0];
        outage.most_lakes_failed = outage.most_lakes_failed.max(sweep.lakes.failed);
        if args.outage {
            let finished = sweep.lakes.done + sweep.lakes.failed;
            if outage.frozen_at_secs.is_none() && finished * 4 >= sweep.lakes.total {
                sim.freeze(&outage.account, args.freeze_for.as_secs_f64());
                outage.frozen_at_secs = Some(t);
                frozen_until = Some(Instant::now() + args.freeze_for);
                screen.say(&format!(
                    "-- {t:.1}s: the provider FREEZES account {} (403 AccountProblem on every call) for {:?}",
                    outage.account, args.freeze_for
                ));
            }
            if frozen_until.is_some_and(|u| Instant::now() >= u) && outage.thawed_at_secs.is_none()
            {
                outage.thawed_at_secs = Some(t);
                screen.say(&format!(
                    "-- {t:.1}s: the provider thaws the account; Sluice finds out at the breaker's next probe"
                ));
            }
            if outage.frozen_at_secs.is_some() {
                // Each change of why the sweep waits: breaker open, probing, and the first
                // budget wait of the slow start after it closed (its figures move every poll).
                let why = sweep.waiting.first().cloned().unwrap_or_default();
                let kind = if why.contains("breaker open") {
                    "open"
                } else if why.contains("probing") {
                    "probing"
                } else if why.contains("budget") {
                    "budget"
                } else {
                    ""
                };
                if !kind.is_empty() && kind != last_wait && !(kind == "budget" && ramping) {
                    ramping |= kind == "budget";
                    screen.say(&format!("-- {t:.1}s: job {} waits: {why}", sweep.id));
                    outage.waiting.insert(why);
                }
                if !kind.is_empty() {
                    last_wait = kind;
                }
            }
        }
        if now.iter().all(is_terminal) {
            break (now[0].clone(), now[1].clone());
        }
        if started.elapsed() > args.timeout {
            screen.finish();
            bail!("the demo's hunts did not finish within {:?}", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    screen.finish();

    // What the sweep found (read through the API), against what was planted.
    let page = as_alice
        .results(sweep_id, sluice_api::ResultFormat::Parquet, 0, 100_000)
        .await?;
    let batches: Vec<RecordBatch> = if page.body.is_empty() {
        Vec::new()
    } else {
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            page.body,
        )?
        .build()?
        .collect::<Result<_, _>>()?
    };
    let needles: BTreeSet<&str> = m.needles.iter().map(|n| n.value.as_str()).collect();
    let mut found = BTreeSet::new();
    for b in &batches {
        let col = |c: &str| -> Result<Vec<String>> {
            let a = cast(
                b.column_by_name(c)
                    .with_context(|| format!("result column {c}"))?,
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
                if needles.contains(v.as_str()) {
                    found.insert((lakes[i].clone(), dts[i].clone(), format!("{c}={v}")));
                }
            }
        }
    }
    let planted = m
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
    let mut calls_per_second = BTreeMap::new();
    let last_second = chrono::Utc::now().timestamp();
    for (account, per) in sim.counts() {
        if account == "*" {
            continue;
        }
        let mut p = PerSecond::default();
        for s in sim_started..=last_second {
            let c = per.get(&s).cloned().unwrap_or_default();
            p.total.push(c.total);
            p.frozen.push(c.frozen);
        }
        calls_per_second.insert(account, p);
    }
    Ok(Drive {
        sweep,
        urgent,
        token: alice,
        seconds,
        planted,
        found,
        outage,
        calls_per_second,
    })
}

fn is_terminal(j: &JobView) -> bool {
    sluice_core::JobState::parse(&j.state).is_some_and(|s| s.is_terminal())
}

fn walk_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

async fn journal(store: &dyn Store) -> Result<BTreeMap<String, usize>> {
    let all = EventListParams {
        job_id: None,
        scope: None,
        after_id: None,
        limit: 5_000,
    };
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for e in store.event_list_until(all, &|_| false).await? {
        *kinds.entry(e.kind).or_default() += 1;
    }
    Ok(kinds)
}
