//! The researcher and lake verbs: `lakes`, `submit`, `validate`, `results`. Until the HTTP API
//! lands they talk to the database directly.

use crate::hunts::{self, PlanError, Submission};
use anyhow::{Context, Result, bail};
use sluice_core::JobId;
use sluice_engine::generate::{GenerateParams, generate};
use sluice_engine::{Engine, EngineConfig, HuntSpec, LakeSelector};
use sluice_store::{LakeInsertParams, Store, StoreError};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum LakesCmd {
    /// Register a lake: reads one Parquet footer to learn its schema and partitions.
    Add {
        name: String,
        /// file:///abs/path/, s3://bucket/prefix/ or memory://name/
        #[arg(long)]
        url: String,
        /// Provider scope its calls are charged to, e.g. aws:123456789012.
        #[arg(long)]
        scope: String,
        #[arg(long = "tag", value_parser = key_value)]
        tags: Vec<(String, String)>,
        /// Object-store options (endpoint, region, allow_http); never secrets.
        #[arg(long = "option", value_parser = key_value)]
        options: Vec<(String, String)>,
    },
    /// List registered lakes.
    List,
    /// Unregister a lake (its files are not touched).
    Remove { name: String },
    /// Write synthetic security-telemetry lakes with planted needles (and a manifest).
    Generate {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
        rows: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=366))]
        days: u32,
        /// Also register the lakes, spread over this many provider scopes.
        #[arg(long)]
        register: bool,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        accounts: u32,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct HuntArgs {
    /// SQL over the table `events`, from a file or `-` for standard input.
    #[arg(long, conflicts_with_all = ["ioc_ip", "ioc_hash", "ioc_domain"])]
    sql: Option<PathBuf>,
    /// IP address to hunt for (repeatable).
    #[arg(long = "ioc-ip")]
    ioc_ip: Vec<String>,
    /// SHA-256 file hash to hunt for (repeatable).
    #[arg(long = "ioc-hash")]
    ioc_hash: Vec<String>,
    /// Domain to hunt for (repeatable).
    #[arg(long = "ioc-domain")]
    ioc_domain: Vec<String>,
    /// Only events at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only events before this time (RFC 3339).
    #[arg(long)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Lakes to hunt: comma-separated names and globs (`lake-0*`); default all.
    #[arg(long)]
    lakes: Option<String>,
    /// Only lakes with this tag (repeatable; all must match).
    #[arg(long = "lake-tag", value_parser = key_value)]
    lake_tags: Vec<(String, String)>,
}

impl HuntArgs {
    pub fn spec(&self) -> Result<HuntSpec> {
        let mut lakes = LakeSelector {
            tags: self.lake_tags.iter().cloned().collect(),
            ..Default::default()
        };
        for part in self
            .lakes
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if part.contains(['*', '?']) {
                lakes.globs.push(part.to_string());
            } else {
                lakes.names.push(part.to_string());
            }
        }
        if let Some(path) = &self.sql {
            let sql = if path.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .context("reading SQL from standard input")?;
                s
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
            };
            if self.since.is_some() || self.until.is_some() {
                bail!("--since/--until apply to IOC hunts; put the time range in the SQL");
            }
            return Ok(HuntSpec::Sql { sql, lakes });
        }
        if self.ioc_ip.is_empty() && self.ioc_hash.is_empty() && self.ioc_domain.is_empty() {
            bail!(
                "nothing to hunt: give --sql FILE or at least one --ioc-ip, --ioc-hash or --ioc-domain"
            );
        }
        Ok(HuntSpec::Ioc {
            ips: self.ioc_ip.clone(),
            hashes: self.ioc_hash.clone(),
            domains: self.ioc_domain.clone(),
            since: self.since,
            until: self.until,
            lakes,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultFormat {
    Table,
    Json,
    Csv,
    Parquet,
}

pub fn engine(results_dir: &std::path::Path) -> Result<Arc<Engine>> {
    let e = Engine::new(EngineConfig::new(results_dir)).context("starting the query engine")?;
    Ok(Arc::new(e))
}

pub async fn lakes(
    store: &dyn Store,
    results_dir: &std::path::Path,
    cmd: LakesCmd,
    json: bool,
) -> Result<()> {
    let engine = engine(results_dir)?;
    match cmd {
        LakesCmd::Add {
            name,
            url,
            scope,
            tags,
            options,
        } => {
            let lake = register(
                store,
                &engine,
                &name,
                &url,
                &scope,
                tags.into_iter().collect(),
                options.into_iter().collect(),
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&lake)?);
            } else {
                println!(
                    "lake {} registered: {} ({} columns, partitions {:?})",
                    lake.name,
                    lake.url,
                    lake_columns(&lake),
                    lake.partition_cols
                );
            }
        }
        LakesCmd::List => {
            let lakes = store.lake_list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&lakes)?);
            } else {
                for l in &lakes {
                    let tags: Vec<String> =
                        l.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!(
                        "{:<24} {:<20} {} {}",
                        l.name,
                        l.scope,
                        l.url,
                        tags.join(",")
                    );
                }
                println!("{} lakes", lakes.len());
            }
        }
        LakesCmd::Remove { name } => {
            store.lake_remove(&name).await?;
            println!("lake {name} removed");
        }
        LakesCmd::Generate {
            dir,
            count,
            rows,
            seed,
            days,
            register: reg,
            accounts,
        } => {
            let mut p = GenerateParams::new(&dir, count as usize, rows as usize, seed);
            p.days = days;
            let m = tokio::task::spawn_blocking(move || generate(&p))
                .await
                .context("generator")??;
            if reg {
                for (i, l) in m.lakes.iter().enumerate() {
                    let abs = std::fs::canonicalize(&l.path)
                        .with_context(|| format!("{}", l.path.display()))?;
                    let scope = format!(
                        "aws:{}",
                        100_000_000_000u64 + (i as u64 % u64::from(accounts))
                    );
                    register(
                        store,
                        &engine,
                        &l.name,
                        &format!("file://{}/", abs.display()),
                        &scope,
                        BTreeMap::new(),
                        BTreeMap::new(),
                    )
                    .await?;
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                let bytes: u64 = m.lakes.iter().map(|l| l.bytes).sum();
                println!(
                    "{} lakes written to {} ({:.1} MB){}",
                    m.lakes.len(),
                    dir.display(),
                    bytes as f64 / 1e6,
                    if reg { ", registered" } else { "" }
                );
                println!(
                    "planted needles (manifest: {}):",
                    dir.join("manifest.json").display()
                );
                for n in &m.needles {
                    println!(
                        "  {:<66} {:<12} {} dt={} row {}",
                        n.value, n.column, n.lake, n.dt, n.row
                    );
                }
            }
        }
    }
    Ok(())
}

fn lake_columns(l: &sluice_store::Lake) -> usize {
    l.schema
        .get("fields")
        .and_then(|f| f.as_array())
        .map_or(0, Vec::len)
}

/// Reads a lake's schema and partitions from one footer and registers it.
pub(crate) async fn register(
    store: &dyn Store,
    engine: &Engine,
    name: &str,
    url: &str,
    scope: &str,
    tags: BTreeMap<String, String>,
    options: BTreeMap<String, String>,
) -> Result<sluice_store::Lake> {
    if let Ok(existing) = store.lake_get(name).await {
        bail!(
            "lake {name} already exists ({}): remove it first",
            existing.url
        );
    }
    let probe = sluice_engine::LakeRef {
        id: 0,
        name: name.to_string(),
        url: url.to_string(),
        scope: scope.to_string(),
        partition_cols: vec![],
        schema: sluice_engine::generate::telemetry_schema(),
        options: options.clone(),
    };
    let (schema, partition_cols) = engine
        .discover(&probe)
        .await
        .with_context(|| format!("reading lake {name} at {url}"))?;
    let lake = store
        .lake_insert(LakeInsertParams {
            name: name.to_string(),
            url: url.to_string(),
            scope: scope.to_string(),
            partition_cols,
            schema: sluice_engine::schema_to_json(&schema),
            tags,
            options,
            now: chrono::Utc::now(),
        })
        .await?;
    Ok(lake)
}

pub struct SubmitOpts {
    pub owner: String,
    pub priority: i16,
    pub idempotency_key: Option<String>,
    pub max_attempts: i32,
}

/// Prints the plan's problems and returns the error to exit with.
fn rejected(e: PlanError, json: bool) -> anyhow::Error {
    if let PlanError::Invalid(errors) = &e {
        if json {
            println!("{}", serde_json::json!({"valid": false, "errors": errors}));
        } else {
            for err in errors {
                eprintln!("  {err}");
            }
        }
        return anyhow::anyhow!(
            "the hunt is invalid ({} problem{})",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        );
    }
    anyhow::Error::new(e)
}

pub async fn validate(store: &dyn Store, args: &HuntArgs, json: bool) -> Result<()> {
    let spec = args.spec()?;
    let plan = hunts::plan(store, &spec)
        .await
        .map_err(|e| rejected(e, json))?;
    let names: Vec<&str> = plan.lakes.iter().map(|l| l.name.as_str()).collect();
    if json {
        println!(
            "{}",
            serde_json::json!({"valid": true, "sql": plan.compiled.sql, "lakes": names, "tasks": names.len(), "est_provider_calls": plan.est_calls})
        );
    } else {
        println!(
            "valid: {} lakes, {} tasks, about {} provider calls",
            names.len(),
            names.len(),
            plan.est_calls
        );
        println!("{}", plan.compiled.sql);
    }
    Ok(())
}

pub async fn submit(
    store: &dyn Store,
    args: &HuntArgs,
    opts: SubmitOpts,
    json: bool,
) -> Result<()> {
    let spec = args.spec()?;
    let plan = hunts::plan(store, &spec)
        .await
        .map_err(|e| rejected(e, json))?;
    let sub = Submission {
        owner: opts.owner,
        idempotency_key: opts.idempotency_key,
        priority: opts.priority,
        max_attempts: opts.max_attempts,
    };
    let inserted = store
        .job_insert(hunts::job_params(&spec, &plan, &sub)?)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => anyhow::anyhow!("{m}"),
            other => anyhow::Error::new(other),
        })?;
    let j = inserted.job;
    if json {
        println!(
            "{}",
            serde_json::json!({"job": j.id, "created": inserted.created, "tasks": j.counts.total, "est_provider_calls": plan.est_calls})
        );
    } else {
        let verb = if inserted.created {
            "submitted"
        } else {
            "already submitted (same idempotency key)"
        };
        println!(
            "job {} {verb}: {} lakes, about {} provider calls",
            j.id, j.counts.total, plan.est_calls
        );
    }
    Ok(())
}

pub async fn results(
    store: &dyn Store,
    results_dir: &std::path::Path,
    job: JobId,
    format: ResultFormat,
    offset: usize,
    limit: usize,
) -> Result<()> {
    let j = store.job_get(job).await?;
    let keys = hunts::result_keys(store, job).await?;
    let e = engine(results_dir)?;
    let batches = e.results(&keys, offset, limit).await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut out = std::io::stdout().lock();
    match format {
        ResultFormat::Table => {
            if rows > 0 {
                writeln!(
                    out,
                    "{}",
                    datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
                )?;
            }
            let partial = if j.state.is_terminal() {
                String::new()
            } else {
                format!(" (job {}: partial results)", j.state)
            };
            writeln!(
                out,
                "{rows} rows from {} lakes with matches{partial}",
                keys.len()
            )?;
        }
        ResultFormat::Json => {
            out.write_all(&hunts::encode(&batches, sluice_api::ResultFormat::Json)?)?;
            writeln!(out)?;
        }
        ResultFormat::Csv => {
            out.write_all(&hunts::encode(&batches, sluice_api::ResultFormat::Csv)?)?;
        }
        ResultFormat::Parquet => {
            use std::io::IsTerminal;
            if std::io::stdout().is_terminal() {
                bail!("refusing to write Parquet to a terminal: redirect to a file");
            }
            out.write_all(&hunts::encode(&batches, sluice_api::ResultFormat::Parquet)?)?;
        }
    }
    Ok(())
}

/// The timeline of a job from the journal: job events in order, task events grouped by kind
/// (count, first and last time, distinct errors), or every event with `all`.
pub async fn explain(store: &dyn Store, job: JobId, all: bool, json: bool) -> Result<()> {
    let j = store.job_get(job).await?;
    let mut events = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .event_list(sluice_store::EventListParams {
                job_id: Some(job),
                scope: None,
                after_id: after,
                limit: 5_000,
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        events.extend(page);
    }
    let provider = provider_events(store, job, &events).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"job": j, "events": events, "provider_events": provider})
        );
        return Ok(());
    }
    println!(
        "job {} ({}) {}: lakes {}/{} done, {} failed, {} cancelled; rows {}",
        j.id,
        j.owner,
        j.state,
        j.counts.done,
        j.counts.total,
        j.counts.failed,
        j.counts.cancelled,
        j.rows_found
    );
    if let Some(e) = &j.error {
        println!("error: {e}");
    }
    let detail =
        |d: &Option<serde_json::Value>| d.as_ref().map(|v| v.to_string()).unwrap_or_default();
    if all {
        for e in &events {
            let task = e.task_id.map(|t| format!(" task {t}")).unwrap_or_default();
            println!(
                "{} {:<20}{task} {}",
                e.at.to_rfc3339(),
                e.kind,
                detail(&e.detail)
            );
        }
        return Ok(());
    }
    struct Group {
        n: usize,
        first: chrono::DateTime<chrono::Utc>,
        last: chrono::DateTime<chrono::Utc>,
        why: Vec<String>,
    }
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for e in &events {
        if e.task_id.is_none() {
            println!("{} {:<20} {}", e.at.to_rfc3339(), e.kind, detail(&e.detail));
            continue;
        }
        let g = groups.entry(e.kind.clone()).or_insert(Group {
            n: 0,
            first: e.at,
            last: e.at,
            why: Vec::new(),
        });
        g.n += 1;
        g.last = e.at;
        let reason = e
            .detail
            .as_ref()
            .and_then(|d| d.get("error").or_else(|| d.get("reason")))
            .and_then(|v| v.as_str());
        if let Some(r) = reason
            && g.why.len() < 3
            && !g.why.iter().any(|w| w == r)
        {
            g.why.push(r.to_string());
        }
    }
    for (kind, g) in &groups {
        println!(
            "{kind:<20} ×{:<6} {} … {}",
            g.n,
            g.first.to_rfc3339(),
            g.last.to_rfc3339()
        );
        for w in &g.why {
            println!("{:<28}{w}", "");
        }
    }
    if !provider.is_empty() {
        println!("provider events of the job's scopes while it ran:");
        for e in &provider {
            println!(
                "{} {:<20} {} {}",
                e.at.to_rfc3339(),
                e.kind,
                e.scope.as_deref().unwrap_or(""),
                detail(&e.detail)
            );
        }
    }
    Ok(())
}

/// The provider events (breaker transitions, throttled and frozen answers) of the scopes a
/// job's lakes live in, from its submission to its end: why its tasks waited.
async fn provider_events(
    store: &dyn Store,
    job: JobId,
    events: &[sluice_store::Event],
) -> Result<Vec<sluice_store::Event>> {
    let (Some(first), j) = (events.first(), store.job_get(job).await?) else {
        return Ok(Vec::new());
    };
    let mut scopes = std::collections::BTreeSet::new();
    let mut after = None;
    loop {
        let page = store
            .task_list(sluice_store::TaskListParams {
                job_id: job,
                limit: 5_000,
                after,
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        scopes.extend(page.into_iter().map(|t| t.scope));
    }
    let mut out = Vec::new();
    for scope in scopes {
        let mut after = Some(first.id);
        loop {
            let page = store
                .event_list(sluice_store::EventListParams {
                    job_id: None,
                    scope: Some(scope.clone()),
                    after_id: after,
                    limit: 5_000,
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let done = j.finished_at.is_some_and(|f| last.at > f);
            out.extend(
                page.into_iter()
                    .filter(|e| j.finished_at.is_none_or(|f| e.at <= f)),
            );
            if done || out.len() > 10_000 {
                break;
            }
        }
    }
    out.sort_by_key(|e| e.id);
    Ok(out)
}

#[derive(Debug, clap::Subcommand)]
pub enum TokensCmd {
    /// Create an API token; it is printed once (only its hash is stored).
    Create {
        /// Whose jobs the token submits and sees.
        #[arg(long)]
        owner: String,
        /// researcher: own jobs; operator: every job; admin: also tokens.
        #[arg(long, value_enum)]
        role: TokenRole,
        /// A note to tell tokens apart (e.g. the laptop or service using it).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Every token (never the token itself).
    List,
    /// Revoke a token: requests with it get 401 from now on.
    Revoke { id: i64 },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TokenRole {
    Researcher,
    Operator,
    Admin,
}

impl From<TokenRole> for sluice_store::Role {
    fn from(r: TokenRole) -> Self {
        match r {
            TokenRole::Researcher => sluice_store::Role::Researcher,
            TokenRole::Operator => sluice_store::Role::Operator,
            TokenRole::Admin => sluice_store::Role::Admin,
        }
    }
}

pub async fn tokens(store: &dyn Store, cmd: TokensCmd, json: bool) -> Result<()> {
    let now = chrono::Utc::now();
    match cmd {
        TokensCmd::Create { owner, role, label } => {
            let token = sluice_api::new_token();
            let t = store
                .token_insert(sluice_store::TokenInsertParams {
                    owner,
                    role: role.into(),
                    hash: sluice_api::hash_token(&token),
                    label,
                    now,
                })
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": t.id, "owner": t.owner, "role": t.role, "token": token})
                );
            } else {
                println!("{token}");
                eprintln!(
                    "token {} for {} ({}): shown once, keep it secret; revoke with `sluice tokens revoke {}`",
                    t.id,
                    t.owner,
                    t.role.as_str(),
                    t.id
                );
            }
        }
        TokensCmd::List => {
            let all = store.token_list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!(
                    "{:>6} {:<20} {:<11} {:<24} {:<20} LABEL",
                    "ID", "OWNER", "ROLE", "CREATED", "REVOKED"
                );
                for t in all {
                    println!(
                        "{:>6} {:<20} {:<11} {:<24} {:<20} {}",
                        t.id,
                        t.owner,
                        t.role.as_str(),
                        t.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        t.revoked_at
                            .map_or("-".into(), |r| r.format("%Y-%m-%d %H:%M").to_string()),
                        t.label
                    );
                }
            }
        }
        TokensCmd::Revoke { id } => {
            let t = store.token_revoke(id, now).await?;
            if json {
                println!("{}", serde_json::to_string(&t)?);
            } else {
                println!("token {} of {} revoked", t.id, t.owner);
            }
        }
    }
    Ok(())
}

/// `sluice backlog`: the task counters by scope with each scope's drain bound.
pub async fn backlog(store: &dyn Store, json: bool) -> Result<()> {
    let now = chrono::Utc::now();
    let r = sluice_api::backlog::report(
        &store.task_backlog().await?,
        &store.budget_list().await?,
        now,
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let secs = |s: Option<f64>| match s {
        None => "unlimited".to_string(),
        Some(s) if s.is_infinite() => "never (rate 0)".to_string(),
        Some(s) => human_secs(s),
    };
    println!(
        "{:<28} {:>9} {:>9} {:>12}  {:<20} DRAIN AT BUDGET",
        "SCOPE", "PENDING", "RUNNING", "EST CALLS", "LIMITED BY"
    );
    for s in &r.scopes {
        println!(
            "{:<28} {:>9} {:>9} {:>12}  {:<20} {}",
            s.scope,
            s.pending,
            s.running,
            s.est_calls,
            s.limited_by.as_deref().unwrap_or("-"),
            secs(s.drain_secs)
        );
    }
    println!(
        "{} pending, {} running; oldest pending task waited {}; the backlog drains in {} at the current budgets, no sooner",
        r.pending,
        r.running,
        r.oldest_pending_secs.map_or("-".into(), human_secs),
        secs(r.drain_secs)
    );
    Ok(())
}

/// `95s` → `1m35s`, `4000s` → `1h06m`.
fn human_secs(s: f64) -> String {
    let s = s.ceil() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub struct DrainArgs {
    pub reason: String,
    pub by: String,
    pub wait: bool,
    pub timeout: Option<std::time::Duration>,
    pub end: bool,
}

/// `sluice drain`: closes (or with `--end` reopens) intake; with `--wait`, polls the task
/// counters until nothing is pending or running.
pub async fn drain(store: &dyn Store, a: DrainArgs, json: bool) -> Result<std::process::ExitCode> {
    use std::process::ExitCode;
    let now = chrono::Utc::now();
    if a.end {
        store.intake_open(&a.by, now).await.map_err(|e| match e {
            StoreError::NotFound(_) => anyhow::anyhow!("no drain to end: intake is open"),
            e => e.into(),
        })?;
        if json {
            println!("{}", serde_json::json!({"intake": "open"}));
        } else {
            println!("intake open: new jobs are accepted again");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let hold = store
        .intake_close(sluice_store::IntakeCloseParams {
            reason: a.reason,
            by: a.by,
            now,
        })
        .await?;
    let left = || async {
        let r = sluice_api::backlog::report(&store.task_backlog().await?, &[], now);
        Ok::<_, sluice_store::StoreError>((r.pending, r.running))
    };
    let (mut pending, mut running) = left().await?;
    if !json {
        println!(
            "intake closed ({}): new jobs are refused until `sluice drain --end`; {pending} tasks pending, {running} running",
            hold.reason
        );
    }
    let started = std::time::Instant::now();
    let mut drained = pending == 0 && running == 0;
    while a.wait && !drained {
        if a.timeout.is_some_and(|t| started.elapsed() >= t) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let (p, r) = left().await?;
        if !json && (p, r) != (pending, running) {
            println!("{p} tasks pending, {r} running");
        }
        (pending, running) = (p, r);
        drained = pending == 0 && running == 0;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"intake": "closed", "reason": hold.reason, "pending": pending,
                "running": running, "drained": drained})
        );
    } else if drained {
        println!("drained: nothing pending or running; intake stays closed");
    } else if a.wait {
        println!(
            "not drained after {:?}: {pending} tasks pending, {running} running (paused or held scopes wait; see `sluice backlog`)",
            started.elapsed()
        );
    }
    Ok(if a.wait && !drained {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// `sluice status JOB --watch`: a progress bar over the job's lakes with its state and why it
/// waits, redrawn every `interval` until the job ends (no bar when stderr is not a terminal or
/// with `--output json`, which prints the final job).
pub async fn watch(
    store: &dyn Store,
    job: JobId,
    interval: std::time::Duration,
    json: bool,
) -> Result<std::process::ExitCode> {
    let j = store.job_get(job).await?;
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(j.counts.total.max(0) as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} job {prefix} [{bar:40}] {pos}/{len} lakes {elapsed_precise} eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(j.id.to_string());
    let j = loop {
        let j = store.job_get(job).await?;
        bar.set_length(j.counts.total.max(0) as u64);
        bar.set_position((j.counts.done + j.counts.failed + j.counts.cancelled).max(0) as u64);
        if j.state.is_terminal() {
            break j;
        }
        let why = sluice_api::waits::wait_reasons(store, job).await?;
        let mut msg = format!("{}, {} rows", j.state, j.rows_found);
        if j.counts.failed > 0 {
            msg.push_str(&format!(", {} lakes failed", j.counts.failed));
        }
        if let Some(w) = why.first() {
            msg.push_str(&format!("; waiting: {w}"));
        }
        bar.set_message(msg);
        tokio::time::sleep(interval).await;
    };
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "job {} {}: {}/{} lakes done, {} failed, {} cancelled; {} rows found",
            j.id,
            j.state,
            j.counts.done,
            j.counts.total,
            j.counts.failed,
            j.counts.cancelled,
            j.rows_found
        );
        if let Some(e) = &j.error {
            println!("error: {e}");
        }
    }
    Ok(if j.state == sluice_core::JobState::Succeeded {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
