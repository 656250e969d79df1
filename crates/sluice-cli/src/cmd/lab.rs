//! `sluice lab`: the provider-incident lab used by the invariant tests, `make replay-outage`
//! and `sluice demo --outage`. It lays out S3 lakes for the simulator (one bucket per account,
//! planted needles), writes the simulator's accounts file, and registers the lakes as
//! `s3://` lakes that reach the simulator over HTTP, with credentials from its metadata
//! endpoint — the same path a production worker takes to a cloud account.

use anyhow::{Context, Result};
use sluice_engine::Engine;
use sluice_engine::generate::{GenerateParams, Manifest, Needle, generate};
use sluice_store::{BudgetSetParams, LakeInsertParams, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Subcommand)]
pub enum LabCmd {
    /// Lay out S3 lakes for the simulator, write its accounts file, register the lakes.
    Setup(LabArgs),
    /// The outage replay: the same backlog with the guard off (the account freezes), then on
    /// with every task alone and with shared scans, beside one job and a small hunt alone.
    ReplayOutage(ReplayArgs),
}

impl LabCmd {
    pub async fn run(self, ctx: &crate::ctx::Ctx) -> Result<std::process::ExitCode> {
        use std::process::ExitCode;
        match self {
            LabCmd::Setup(args) => {
                let store = ctx.store("lab setup").await?;
                let engine = ctx.engine()?;
                let m = setup(store.as_ref(), &engine, &args).await?;
                println!("{}", serde_json::to_string_pretty(&m)?);
                Ok(ExitCode::SUCCESS)
            }
            LabCmd::ReplayOutage(args) => Ok(if replay(args).await? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// Folder for the simulator's buckets (`DIR/sim`) and accounts file (`DIR/accounts.json`).
    #[arg(long)]
    pub dir: PathBuf,
    /// Where the simulator will listen (lakes are registered with this endpoint).
    #[arg(long)]
    pub sim_url: String,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub accounts: u32,
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub lakes_per_account: u32,
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub rows: u32,
    /// The simulator's quota per account (requests/s) and its burst.
    #[arg(long, default_value_t = 200.0)]
    pub quota_rate: f64,
    #[arg(long, default_value_t = 200.0)]
    pub quota_burst: f64,
    /// An account over quota this long without a break freezes.
    #[arg(long, default_value_t = 2.0)]
    pub freeze_after: f64,
    #[arg(long, default_value_t = 30.0)]
    pub freeze_for: f64,
    /// Sluice's budget per account (calls/s and burst); none: unlimited (the guard off).
    #[arg(long)]
    pub budget_rate: Option<f64>,
    #[arg(long)]
    pub budget_burst: Option<f64>,
    /// Reach each account's lakes by assuming a role in it (STS AssumeRole, with an external
    /// id) from one IAM account whose own credentials come from its metadata endpoint; the
    /// AssumeRole calls are charged to the IAM account at the simulator and to scope `aws:sts`
    /// in Sluice (budgeted like an account when budgets are given).
    #[arg(long)]
    pub roles: bool,
}

/// The account the lab's workers run as when lakes are reached through roles.
pub const IAM_ACCOUNT: &str = "100000000000";

/// The role the lab's workers assume in `account`, and its external id.
pub fn role_of(account: &str) -> (String, String) {
    (
        format!("arn:aws:iam::{account}:role/sluice-hunter"),
        format!("sluice-{account}"),
    )
}

/// What was laid out: the accounts, every lake's account, and the planted needles.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LabManifest {
    pub sim_dir: PathBuf,
    pub accounts_file: PathBuf,
    pub accounts: Vec<String>,
    pub lakes: BTreeMap<String, String>,
    pub needles: Vec<Needle>,
    /// The account roles are assumed from (`--roles`).
    #[serde(default)]
    pub iam_account: Option<String>,
}

pub fn account_id(i: u32) -> String {
    format!("{}", 100_000_000_001u64 + u64::from(i))
}

pub fn bucket(account: &str) -> String {
    format!("acct-{account}")
}

/// Generates (or reuses) one account's lakes under its bucket folder.
async fn lakes_of(dir: &Path, prefix: &str, count: u32, rows: u32, seed: u64) -> Result<Manifest> {
    let manifest = dir.join("manifest.json");
    if let Ok(text) = std::fs::read_to_string(&manifest)
        && let Ok(m) = serde_json::from_str::<Manifest>(&text)
        && m.lakes.len() == count as usize
        && m.lakes
            .iter()
            .all(|l| l.rows == rows as usize && l.path.exists())
    {
        return Ok(m);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let mut p = GenerateParams::new(dir, count as usize, rows as usize, seed);
    p.days = 1;
    p.prefix = prefix.to_string();
    let m = tokio::task::spawn_blocking(move || generate(&p))
        .await
        .context("generator")??;
    // The manifest lives beside the lakes, not in the bucket listing of a lake.
    Ok(m)
}

pub async fn setup(store: &dyn Store, engine: &Engine, a: &LabArgs) -> Result<LabManifest> {
    let sim_dir = a.dir.join("sim");
    std::fs::create_dir_all(&sim_dir).with_context(|| format!("creating {}", sim_dir.display()))?;
    let sim_dir = std::fs::canonicalize(&sim_dir)?;
    let mut accounts_cfg = serde_json::Map::new();
    let mut out = LabManifest {
        sim_dir: sim_dir.clone(),
        accounts_file: std::fs::canonicalize(&a.dir)?.join("accounts.json"),
        accounts: Vec::new(),
        lakes: BTreeMap::new(),
        needles: Vec::new(),
        iam_account: a.roles.then(|| IAM_ACCOUNT.to_string()),
    };
    let now = chrono::Utc::now();
    // `accounts` accounts' worth of budget for `scope`, when budgets are given.
    let budget = |scope: &str, accounts: u32| {
        let p = a
            .budget_rate
            .zip(a.budget_burst)
            .map(|(rate, burst)| BudgetSetParams {
                scope: scope.to_string(),
                parent: None,
                rate: rate * f64::from(accounts),
                burst: burst * f64::from(accounts),
                ramp: None,
                now,
            });
        async move {
            if let Some(p) = p {
                store.budget_set(p).await?;
            }
            anyhow::Ok(())
        }
    };
    // An account of the simulator's accounts file.
    let account_cfg = |buckets: Vec<String>, external_id: Option<String>| {
        serde_json::json!({"buckets": buckets, "rate": a.quota_rate, "burst": a.quota_burst,
            "freeze_after_secs": a.freeze_after, "freeze_for_secs": a.freeze_for,
            "external_id": external_id})
    };
    // The provider-wide budget is the sum of the accounts' (the sim has no global quota).
    budget(sluice_store::ROOT_SCOPE, a.accounts).await?;
    if a.roles {
        accounts_cfg.insert(IAM_ACCOUNT.into(), account_cfg(Vec::new(), None));
        budget(sluice_engine::s3::DEFAULT_STS_SCOPE, 1).await?;
    }
    let mut probe: Option<(datafusion::arrow::datatypes::SchemaRef, Vec<String>)> = None;
    for i in 0..a.accounts {
        let account = account_id(i);
        let bucket = bucket(&account);
        let prefix = format!("a{i}");
        let m = lakes_of(
            &sim_dir.join(&bucket),
            &prefix,
            a.lakes_per_account,
            a.rows,
            7 + u64::from(i),
        )
        .await?;
        let (role, external_id) = role_of(&account);
        accounts_cfg.insert(
            account.clone(),
            account_cfg(vec![bucket.clone()], Some(external_id.clone())),
        );
        let scope = format!("aws:{account}");
        budget(&scope, 1).await?;
        if probe.is_none() {
            let l = &m.lakes[0];
            let local = l.local_ref(0);
            probe = Some(engine.discover(&local).await?);
        }
        let Some((schema, partition_cols)) = &probe else {
            unreachable!("set above")
        };
        let mut options: BTreeMap<String, String> = [
            ("endpoint", a.sim_url.clone()),
            ("allow_http", "true".into()),
            ("region", "us-east-1".into()),
            ("metadata_endpoint", format!("{}/acct/{account}", a.sim_url)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if a.roles {
            options.extend(
                [
                    (
                        "metadata_endpoint",
                        format!("{}/acct/{IAM_ACCOUNT}", a.sim_url),
                    ),
                    ("role_arn", role),
                    ("external_id", external_id),
                    ("sts_endpoint", format!("{}/sts/{IAM_ACCOUNT}", a.sim_url)),
                    ("sts_allow_http", "true".into()),
                ]
                .map(|(k, v)| (k.to_string(), v)),
            );
        }
        for l in &m.lakes {
            if store.lake_get(&l.name).await.is_ok() {
                store.lake_remove(&l.name).await?;
            }
            store
                .lake_insert(LakeInsertParams {
                    name: l.name.clone(),
                    url: format!("s3://{bucket}/{}/", l.name),
                    scope: scope.clone(),
                    partition_cols: partition_cols.clone(),
                    schema: sluice_engine::schema_to_json(schema),
                    tags: [("account".to_string(), account.clone())].into(),
                    options: options.clone(),
                    now,
                })
                .await?;
            out.lakes.insert(l.name.clone(), account.clone());
        }
        out.needles.extend(m.needles.iter().cloned());
        out.accounts.push(account);
    }
    let accounts = serde_json::json!({ "accounts": accounts_cfg });
    std::fs::write(&out.accounts_file, serde_json::to_string_pretty(&accounts)?)
        .with_context(|| format!("writing {}", out.accounts_file.display()))?;
    Ok(out)
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Folder for the lakes (reused between runs) and results.
    #[arg(long)]
    pub dir: PathBuf,
    /// A Postgres database the replay may fill (two schemas, one per run).
    #[arg(long)]
    pub database_url: String,
    /// Accounts (one, as in the incident: then the lower bound below is exact).
    #[arg(long, default_value_t = 1)]
    pub accounts: u32,
    #[arg(long, default_value_t = 100)]
    pub lakes_per_account: u32,
    #[arg(long, default_value_t = 600)]
    pub rows: u32,
    /// Jobs in the backlog (each hunts every lake).
    #[arg(long, default_value_t = 100)]
    pub jobs: u32,
    /// The provider's quota per account (requests/s, burst): below what the workers can push,
    /// as in the incident.
    #[arg(long, default_value_t = 400.0)]
    pub quota_rate: f64,
    /// Sluice's budget per account when the guard is on (calls/s; burst = one second).
    #[arg(long, default_value_t = 300.0)]
    pub budget_rate: f64,
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// The workers' `--share-scan` in the shared run (the incident and the unshared run take
    /// every task alone).
    #[arg(long, default_value_t = sluice_worker::DEFAULT_SHARE)]
    pub share_scan: u32,
    /// Reach the accounts' lakes through roles assumed from one IAM account (`lab setup
    /// --roles`): the summary counts the AssumeRole calls.
    #[arg(long)]
    pub roles: bool,
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,
    /// Longest each run may take.
    #[arg(long, default_value = "600s", value_parser = crate::parse_duration)]
    pub timeout: std::time::Duration,
}

/// The most calls in any window of k consecutive seconds, as a fraction of `burst + rate × k`.
pub fn worst_window(per_second: &[u64], rate: f64, burst: f64) -> (f64, usize, u64) {
    let mut worst = (0.0, 0, 0);
    for start in 0..per_second.len() {
        let mut sum = 0;
        for (k, n) in per_second[start..].iter().enumerate() {
            sum += n;
            let ratio = sum as f64 / (burst + rate * (k as f64 + 1.0));
            if ratio > worst.0 {
                worst = (ratio, k + 1, sum);
            }
        }
    }
    worst
}

struct RunReport {
    seconds: f64,
    drained: bool,
    calls: BTreeMap<String, Vec<u64>>,
    frozen_at: Option<f64>,
    /// AssumeRole calls the provider received.
    assume_role: u64,
    /// How long the urgent 3-lake hunt took from its submission.
    urgent: Option<f64>,
}

/// One run of the backlog: lays it out in a fresh schema, starts worker processes, prints a
/// line per second (calls seen by the provider, throttled, frozen, lakes done), stops when the
/// backlog is drained — or, with `stop_on_freeze`, a few seconds after an account froze.
async fn replay_run(
    a: &ReplayArgs,
    label: &str,
    budget: Option<f64>,
    stop_on_freeze: bool,
    share: u32,
    job_count: u32,
    urgent: bool,
) -> Result<RunReport> {
    use sluice_store::ConnectOptions;
    let slug = label.replace(' ', "_");
    let schema = format!("replay_{slug}_{}", std::process::id());
    let store = sluice_store::connect(
        &a.database_url,
        ConnectOptions {
            max_connections: 4,
            schema: Some(schema.clone()),
            application_name: Some("sluice-replay".into()),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
        },
    )
    .await?;
    let worker_url = format!(
        "{}{}options[search_path]={schema}",
        a.database_url,
        if a.database_url.contains('?') {
            "&"
        } else {
            "?"
        }
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let results = a.dir.join(format!("results-{slug}"));
    let engine = crate::ctx::engine(sluice_engine::EngineConfig::new(&results))?;
    let lab = LabArgs {
        dir: a.dir.clone(),
        sim_url: format!("http://127.0.0.1:{port}"),
        accounts: a.accounts,
        lakes_per_account: a.lakes_per_account,
        rows: a.rows,
        quota_rate: a.quota_rate,
        quota_burst: a.quota_rate,
        freeze_after: 2.0,
        freeze_for: 3600.0,
        budget_rate: budget,
        budget_burst: budget,
        roles: a.roles,
    };
    let m = setup(store.as_ref(), &engine, &lab).await?;
    let cfg = sluice_sim::SimConfig::from_json(&std::fs::read_to_string(&m.accounts_file)?)
        .map_err(anyhow::Error::msg)?;
    let sim = sluice_sim::Sim::new(cfg, &m.sim_dir)
        .map_err(anyhow::Error::msg)?
        .start(([127, 0, 0, 1], port).into())
        .await?;
    // The backlog: `jobs` hunts over every lake, each for a few of the planted needles.
    let spec = |i: usize| {
        use sluice_engine::generate::NeedleKind;
        let n = &m.needles[i % m.needles.len()];
        let one = |k: NeedleKind| {
            if n.kind == k {
                vec![n.value.clone()]
            } else {
                vec![]
            }
        };
        sluice_engine::HuntSpec::Ioc {
            ips: one(NeedleKind::Ip),
            hashes: one(NeedleKind::Hash),
            domains: one(NeedleKind::Domain),
            since: None,
            until: None,
            lakes: sluice_engine::LakeSelector::default(),
        }
    };
    let mut jobs = Vec::new();
    for i in 0..job_count as usize {
        let s = spec(i);
        let plan = sluice_hunt::plan(store.as_ref(), &s, &sluice_store::LakeAccess::all())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let sub = sluice_hunt::Submission {
            owner: format!("researcher-{}", i % 7),
            idempotency_key: None,
            priority: 0,
            max_attempts: 3,
        };
        jobs.push(
            store
                .job_insert(sluice_hunt::job_params(&s, &plan, &sub)?)
                .await?
                .job
                .id,
        );
    }
    let tasks = jobs.len() * m.lakes.len();
    println!(
        "\n== {label}: {} jobs x {} lakes = {tasks} tasks, {} accounts, provider quota {}/s per account{}, share-scan {share}",
        jobs.len(),
        m.lakes.len(),
        m.accounts.len(),
        a.quota_rate,
        budget.map_or(", no budget".into(), |b| format!(
            ", budget {b}/s per account"
        ))
    );
    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    for w in 0..a.workers {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(["--database-url", &worker_url, "--results-dir"])
            .arg(&results)
            .args([
                "worker",
                "--id",
                &format!("{slug}-w{w}"),
                "--idle-poll",
                "20ms",
            ])
            .args(["--concurrency", &a.concurrency.to_string()])
            .args(["--share-scan", &share.to_string()])
            .args([
                "--provider-guard",
                if budget.is_some() { "on" } else { "off" },
            ])
            .env("RUST_LOG", "warn,sqlx=error")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(
                a.dir.join(format!("{slug}-w{w}.log")),
            )?)
            .kill_on_drop(true);
        workers.push(cmd.spawn().context("starting a worker")?);
    }
    let started = std::time::Instant::now();
    // A small urgent hunt (3 lakes, another owner) submitted a second into the drain: how long
    // it takes behind the backlog.
    let urgent = if urgent {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let lakes: Vec<String> = m.lakes.keys().take(3).cloned().collect();
        let s = match spec(0) {
            sluice_engine::HuntSpec::Ioc {
                ips,
                hashes,
                domains,
                ..
            } => sluice_engine::HuntSpec::Ioc {
                ips,
                hashes,
                domains,
                since: None,
                until: None,
                lakes: sluice_engine::LakeSelector {
                    names: lakes,
                    ..Default::default()
                },
            },
            other => other,
        };
        let plan = sluice_hunt::plan(store.as_ref(), &s, &sluice_store::LakeAccess::all())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let sub = sluice_hunt::Submission {
            owner: "urgent".into(),
            idempotency_key: None,
            priority: 0,
            max_attempts: 3,
        };
        let job = store
            .job_insert(sluice_hunt::job_params(&s, &plan, &sub)?)
            .await?
            .job
            .id;
        let (store, at) = (store.clone(), std::time::Instant::now());
        Some(tokio::spawn(async move {
            loop {
                match store.job_get(job).await {
                    Ok(j) if j.state.is_terminal() => return at.elapsed().as_secs_f64(),
                    _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                }
            }
        }))
    } else {
        None
    };
    let mut frozen_at = None;
    let mut drained = false;
    let mut last = BTreeMap::<String, u64>::new();
    let mut last_t = 0.0;
    println!("   t   calls/s   throttled/s   frozen/s   lakes done");
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let t = started.elapsed().as_secs_f64();
        let dt = (t - last_t).max(1e-3);
        last_t = t;
        let counts = sim.counts();
        let mut done = 0;
        let mut all_done = true;
        for j in &jobs {
            let j = store.job_get(*j).await?;
            done += j.counts.done + j.counts.failed;
            all_done &= j.state.is_terminal();
        }
        all_done &= urgent.as_ref().is_none_or(|u| u.is_finished());
        let sum = |f: fn(&sluice_sim::Counts) -> u64| -> u64 {
            counts.get("*").map_or(0, |m| m.values().map(f).sum())
        };
        let (total, throttled, frozen) =
            (sum(|c| c.total), sum(|c| c.throttled), sum(|c| c.frozen));
        let prev = last.insert("total".into(), total).unwrap_or(0);
        let prev_t = last.insert("throttled".into(), throttled).unwrap_or(0);
        let prev_f = last.insert("frozen".into(), frozen).unwrap_or(0);
        let per_s = |now: u64, before: u64| (now - before) as f64 / dt;
        println!(
            "{:>4.0}s {:>9.0} {:>13.0} {:>10.0} {:>8}/{tasks}",
            t,
            per_s(total, prev),
            per_s(throttled, prev_t),
            per_s(frozen, prev_f),
            done
        );
        if frozen_at.is_none() && sim.state().accounts.values().any(|s| s.freezes > 0) {
            frozen_at = Some(t);
            println!("       ^ the provider froze an account (403 AccountProblem on every call)");
        }
        if all_done {
            drained = true;
            break;
        }
        if stop_on_freeze && frozen_at.is_some_and(|f| t - f >= 5.0) {
            break;
        }
        if started.elapsed() > a.timeout {
            println!("       stopped after {:?}", a.timeout);
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    for w in &mut workers {
        if let Some(pid) = w.id() {
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }
    for w in &mut workers {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), w.wait()).await;
    }
    sim.stop();
    let urgent = match urgent {
        Some(u) if u.is_finished() => u.await.ok(),
        Some(u) => {
            u.abort();
            None
        }
        None => None,
    };
    let assume_role = sim
        .counts()
        .iter()
        .filter(|(k, _)| k.as_str() != "*")
        .flat_map(|(_, per)| per.values().map(|c| c.assume_role))
        .sum();
    let mut calls = BTreeMap::new();
    for (account, per) in sim.counts() {
        let (Some(first), Some(last)) = (per.keys().min(), per.keys().max()) else {
            continue;
        };
        calls.insert(
            account,
            (*first..=*last)
                .map(|s| per.get(&s).map_or(0, |c| c.total))
                .collect(),
        );
    }
    Ok(RunReport {
        seconds,
        drained,
        calls,
        frozen_at,
        assume_role,
        urgent,
    })
}

pub async fn replay(a: ReplayArgs) -> Result<bool> {
    std::fs::create_dir_all(&a.dir)?;
    let budget = Some(a.budget_rate);
    let off = replay_run(&a, "guard off", None, true, 1, a.jobs, false).await?;
    let on = replay_run(&a, "guard on", budget, false, 1, a.jobs, false).await?;
    let shared = replay_run(&a, "shared", budget, false, a.share_scan, a.jobs, true).await?;
    let alone = replay_run(&a, "one job", budget, false, a.share_scan, 1, false).await?;
    let urgent = replay_run(&a, "urgent alone", budget, false, a.share_scan, 0, true).await?;
    let rate = a.budget_rate * f64::from(a.accounts);
    println!("\n== summary");
    println!(
        "guard off: {} after {:.0}s{}",
        if off.frozen_at.is_some() {
            "account FROZEN"
        } else {
            "no freeze"
        },
        off.frozen_at.unwrap_or(off.seconds),
        if off.drained {
            " (drained)"
        } else {
            " (stopped)"
        }
    );
    let (total, worst_on) = summarize("guard on", &on, &a, rate);
    let (total_shared, worst_shared) = summarize("shared", &shared, &a, rate);
    let (total_alone, worst_alone) = summarize("one job", &alone, &a, rate);
    println!(
        "shared scans: {total_shared} calls against {total} taking every task alone: {:.1}x fewer; drained in {:.1}s against {:.1}s for one job alone ({total_alone} calls): {:.2}x",
        total as f64 / total_shared.max(1) as f64,
        shared.seconds,
        alone.seconds,
        shared.seconds / alone.seconds
    );
    let secs = |r: &RunReport| {
        r.urgent
            .map_or("not finished".into(), |s| format!("{s:.2}s"))
    };
    println!(
        "a 3-lake hunt of another owner submitted 1 s into the shared drain: {} against {} alone",
        secs(&shared),
        secs(&urgent)
    );
    let safe = |r: &RunReport, worst: f64| r.drained && r.frozen_at.is_none() && worst <= 1.0;
    Ok(off.frozen_at.is_some()
        && safe(&on, worst_on)
        && safe(&shared, worst_shared)
        && safe(&alone, worst_alone))
}

/// Prints a guarded run's calls per account, its worst window and its drain against the lower
/// bound (calls / budget); returns its calls and worst window (fraction of `burst + rate x T`).
fn summarize(label: &str, run: &RunReport, a: &ReplayArgs, rate: f64) -> (u64, f64) {
    let total: u64 = run
        .calls
        .iter()
        .filter(|(k, _)| k.as_str() != "*")
        .map(|(_, v)| v.iter().sum::<u64>())
        .sum();
    let lower = total as f64 / rate;
    let mut worst_all: f64 = 0.0;
    let mut account_bound: f64 = 0.0;
    for (account, per) in run.calls.iter().filter(|(k, _)| k.as_str() != "*") {
        let (ratio, window, n) = worst_window(per, a.budget_rate, a.budget_rate);
        worst_all = worst_all.max(ratio);
        let calls = per.iter().sum::<u64>();
        account_bound = account_bound.max(calls as f64 / a.budget_rate);
        println!(
            "{label}, account {account}: {calls} calls (alone at its budget: {:.1}s); worst window {window}s: {n} calls = {ratio:.3} of burst + rate x T",
            calls as f64 / a.budget_rate
        );
    }
    if a.accounts > 1 {
        println!(
            "{label}: the busiest account bounds the drain at {account_bound:.1}s: ratio {:.3} to that bound",
            run.seconds / account_bound
        );
    }
    if a.roles {
        println!(
            "{label}: {} AssumeRole calls for {} accounts and {} workers",
            run.assume_role, a.accounts, a.workers
        );
    }
    println!(
        "{label}: {} in {:.1}s; {total} calls / {rate}/s budget = lower bound {lower:.1}s; ratio {:.3}; frozen: {}",
        if run.drained {
            "drained"
        } else {
            "NOT drained"
        },
        run.seconds,
        run.seconds / lower,
        run.frozen_at.is_some()
    );
    (total, worst_all)
}
