//! The verbs' output: the researcher verbs (`submit`, `validate`, `results`, `status
//! --watch`) print what the API answers (see `client`); the operator verbs (`lakes`,
//! `explain`, `tokens`, `backlog`, `drain`) work on the database.

use crate::client::{Client, report_invalid};
use anyhow::{Context, Result, bail};
use sluice_api::wire::SubmitRequest;
use sluice_core::JobId;
use sluice_engine::generate::{GenerateParams, generate};
use sluice_engine::{Engine, EngineConfig, HuntSpec, LakeSelector};
use sluice_store::{LakeInsertParams, Store};
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
        /// Where its Parquet files are: file:///abs/path/, s3://bucket/prefix/ or memory://name/
        #[arg(value_name = "LOCATION")]
        location: String,
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
            location,
            scope,
            tags,
            options,
        } => {
            let lake = register(
                store,
                &engine,
                &name,
                &location,
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

/// `sluice submit`: the API's answer, or the hunt's problems with their positions.
pub async fn submit(c: &Client, req: &SubmitRequest, key: Option<&str>, json: bool) -> Result<()> {
    let s = c
        .submit(req, key)
        .await
        .inspect_err(|e| report_invalid(e, json))?;
    if json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        let verb = if s.created {
            "submitted"
        } else {
            "already submitted (same idempotency key)"
        };
        println!(
            "job {} {verb}: {} lakes, about {} provider calls",
            s.job, s.tasks, s.est_provider_calls
        );
    }
    Ok(())
}

/// `sluice validate`: the submit's checks without the job, with its cost and how soon it
/// could finish.
pub async fn validate(c: &Client, req: &SubmitRequest, json: bool) -> Result<()> {
    let v = c
        .validate(req)
        .await
        .inspect_err(|e| report_invalid(e, json))?;
    if json {
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    println!(
        "valid: {} lakes, {} tasks, about {} provider calls",
        v.lakes.len(),
        v.tasks,
        v.est_provider_calls
    );
    let eta = |s: Option<f64>| s.map_or("no budget bounds it".to_string(), human_secs);
    println!(
        "soonest finish at the current budgets: {} alone, {} behind the backlog",
        eta(v.eta_alone_secs),
        eta(v.eta_with_backlog_secs)
    );
    if !v.intake_open {
        println!("intake is closed (a drain is in progress): a submit now is refused");
    }
    if let Some(sql) = &v.sql {
        println!("{sql}");
    }
    Ok(())
}

/// `sluice results`: a page of the job's results, as a table or passed through from the API
/// as JSON, CSV or Parquet.
pub async fn results(
    c: &Client,
    job: JobId,
    format: ResultFormat,
    offset: usize,
    limit: usize,
) -> Result<()> {
    use sluice_api::ResultFormat as F;
    let wire = match format {
        ResultFormat::Table | ResultFormat::Parquet => F::Parquet,
        ResultFormat::Json => F::Json,
        ResultFormat::Csv => F::Csv,
    };
    if format == ResultFormat::Parquet && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        bail!("refusing to write Parquet to a terminal: redirect to a file");
    }
    let page = c.results(job.0, wire, offset, limit).await?;
    let mut out = std::io::stdout().lock();
    if format != ResultFormat::Table {
        out.write_all(&page.body)?;
        if format == ResultFormat::Json {
            writeln!(out)?;
        }
        return Ok(());
    }
    let batches = if page.body.is_empty() {
        Vec::new()
    } else {
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            page.body,
        )?
        .build()?
        .collect::<Result<Vec<_>, _>>()?
    };
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows > 0 {
        writeln!(
            out,
            "{}",
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
        )?;
    }
    let partial = if page.partial {
        " (the job is still running: partial results)"
    } else {
        ""
    };
    writeln!(out, "{rows} rows from row {offset} of the results{partial}")?;
    if let Some(next) = page.next_cursor {
        writeln!(out, "more: --offset {next}")?;
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
pub async fn backlog(c: &Client, json: bool) -> Result<()> {
    let r = c.backlog().await?;
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

/// `95s` → `1m35s`, `4000s` → `1h06m` (seconds as the API gives them).
pub fn human_secs(s: f64) -> String {
    sluice_core::human_duration(std::time::Duration::from_secs(s.max(0.0).ceil() as u64))
}

pub struct DrainArgs {
    pub reason: String,
    pub wait: bool,
    pub timeout: Option<std::time::Duration>,
    pub end: bool,
}

/// `sluice drain`: closes (or with `--end` reopens) intake; with `--wait`, polls intake until
/// nothing is pending or running.
pub async fn drain(c: &Client, a: DrainArgs, json: bool) -> Result<std::process::ExitCode> {
    use std::process::ExitCode;
    if a.end {
        c.drain_end()
            .await
            .map_err(|e| match e.downcast_ref::<crate::client::ApiFailure>() {
                Some(f) if f.status == axum::http::StatusCode::NOT_FOUND => {
                    anyhow::anyhow!("no drain to end: intake is open")
                }
                _ => e,
            })?;
        if json {
            println!("{}", serde_json::json!({"intake": "open"}));
        } else {
            println!("intake open: new jobs are accepted again");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut v = c.drain(&a.reason).await?;
    let reason = v.reason.clone().unwrap_or_default();
    if !json {
        println!(
            "intake closed ({reason}): new jobs are refused until `sluice drain --end`; {} tasks pending, {} running",
            v.pending, v.running
        );
    }
    let started = std::time::Instant::now();
    while a.wait && !v.drained {
        if a.timeout.is_some_and(|t| started.elapsed() >= t) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let next = c.intake().await?;
        if !json && (next.pending, next.running) != (v.pending, v.running) {
            println!("{} tasks pending, {} running", next.pending, next.running);
        }
        v = next;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"intake": "closed", "reason": reason, "pending": v.pending,
                "running": v.running, "drained": v.drained})
        );
    } else if v.drained {
        println!("drained: nothing pending or running; intake stays closed");
    } else if a.wait {
        println!(
            "not drained after {:?}: {} tasks pending, {} running (paused or held scopes wait; see `sluice backlog`)",
            started.elapsed(),
            v.pending,
            v.running
        );
    }
    Ok(if a.wait && !v.drained {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// `sluice status JOB --watch`: a progress bar over the job's lakes with its state and why it
/// waits, redrawn every `interval` until the job ends (no bar when stderr is not a terminal or
/// with `--output json`, which prints the final job).
pub async fn watch(
    c: &Client,
    job: JobId,
    interval: std::time::Duration,
    json: bool,
) -> Result<std::process::ExitCode> {
    let j = c.job(job.0).await?;
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(j.lakes.total.max(0) as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} job {prefix} [{bar:40}] {pos}/{len} lakes {elapsed_precise}  {wide_msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(j.id.to_string());
    let j = loop {
        let j = c.job(job.0).await?;
        bar.set_length(j.lakes.total.max(0) as u64);
        bar.set_position((j.lakes.done + j.lakes.failed + j.lakes.cancelled).max(0) as u64);
        if sluice_core::JobState::parse(&j.state).is_some_and(|s| s.is_terminal()) {
            break j;
        }
        let mut msg = format!("{}, {} rows", j.state, j.rows_found);
        if j.lakes.failed > 0 {
            msg.push_str(&format!(", {} lakes failed", j.lakes.failed));
        }
        if let Some(eta) = j.eta_secs {
            msg.push_str(&format!(", eta {}", human_secs(eta)));
        }
        if let Some(w) = j.waiting.first() {
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
            j.lakes.done,
            j.lakes.total,
            j.lakes.failed,
            j.lakes.cancelled,
            j.rows_found
        );
        if let Some(e) = &j.error {
            println!("error: {e}");
        }
    }
    Ok(if j.state == "succeeded" {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
