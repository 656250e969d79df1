//! The researcher verbs: `submit`, `validate`, `status` (and `--watch`), `jobs`, `cancel`,
//! `retry`, `results` through the API (see `client`), and `explain`, which reads the journal.

use crate::client::report_invalid;
use crate::ctx::{Ctx, Render, human_secs, line};
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use sluice_api::wire::{JobView, SubmitRequest, Submitted, Validated};
use sluice_core::JobId;
use sluice_engine::{HuntSpec, LakeSelector};
use sluice_store::{Store, StoreExt};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
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

/// `sluice submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Who the job belongs to (default `cli`; with --url it is the token's owner).
    #[arg(long, env = "SLUICE_OWNER")]
    pub owner: Option<String>,
    /// Same key and same hunt: the same job is returned instead of a second one.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// When intake is closed (a drain, the backlog cap: 503), wait for it to reopen and submit
    /// then, for at most this long (default 24h); the retries carry one idempotency key, so
    /// the hunt is submitted once.
    #[arg(long, value_name = "MAX", num_args = 0..=1, default_missing_value = "24h",
        value_parser = crate::parse_duration)]
    wait_intake: Option<Duration>,
}

/// What a submission holds: the hunt and the job's settings (`submit`, `schedules create`).
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    hunt: HuntArgs,
    /// Higher runs first: -100 to 100.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i16).range(-100..=100))]
    priority: i16,
    /// How long the finished job is kept (`90d`, `0`: until purged); default: the server's
    /// `--retention`.
    #[arg(long, value_parser = crate::parse_retention)]
    retention: Option<std::time::Duration>,
    /// Call this URL when the job ends: a signed POST with the job as it ended (tried again
    /// with backoff until it answers 2xx; https unless the server allows http).
    #[arg(long)]
    webhook: Option<String>,
    /// Attempts per lake before it counts as failed (provider trouble spends none).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=20))]
    max_attempts: i32,
}

impl JobArgs {
    /// The submission these flags describe.
    pub fn request(&self) -> Result<SubmitRequest> {
        Ok(SubmitRequest {
            hunt: serde_json::to_value(self.hunt.spec()?)?,
            priority: self.priority,
            max_attempts: Some(self.max_attempts),
            retention_secs: self.retention.map(|d| d.as_secs() as i64),
            webhook: self.webhook.clone(),
        })
    }
}

/// The API refused the submission for now (intake closed): when to try again.
fn busy(e: &anyhow::Error) -> Option<Duration> {
    let f = e.downcast_ref::<crate::client::ApiFailure>()?;
    (f.status == axum::http::StatusCode::SERVICE_UNAVAILABLE).then(|| {
        let secs = f.retry_after.as_deref().and_then(|s| s.parse().ok());
        Duration::from_secs(secs.unwrap_or(5))
    })
}

impl SubmitArgs {
    /// The API's answer, or the hunt's problems with their positions.
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        if ctx.url.is_some() && self.owner.is_some() {
            bail!(
                "--owner (or SLUICE_OWNER) does not apply with --url: jobs belong to the token's owner"
            );
        }
        let c = ctx.api(self.owner.as_deref().unwrap_or("cli")).await?;
        let req = self.job.request()?;
        // Retries after a refusal must not make a second job if a reply was lost.
        let key = match (&self.idempotency_key, self.wait_intake) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(_)) => Some(format!("wait-intake-{}", sluice_api::new_token())),
            (None, None) => None,
        };
        let started = std::time::Instant::now();
        let s = loop {
            match c.submit(&req, key.as_deref()).await {
                Ok(s) => break s,
                Err(e) => {
                    let Some(after) = busy(&e) else {
                        report_invalid(&e, ctx.json());
                        return Err(e);
                    };
                    let Some(max) = self.wait_intake else {
                        return Err(e.context(
                            "intake is closed (`sluice submit --wait-intake` waits for it)",
                        ));
                    };
                    let left = max.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        return Err(e.context(format!(
                            "intake still closed after waiting {}",
                            sluice_core::human_duration(max)
                        )));
                    }
                    // Polled at least every 5 s: intake may reopen before Retry-After says.
                    let wait = after.min(Duration::from_secs(5)).min(left);
                    if !ctx.json() {
                        eprintln!(
                            "{}; trying again in {}",
                            sluice_core::error_line(e.as_ref()),
                            sluice_core::human_duration(wait)
                        );
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        };
        ctx.show(&s)?;
        Ok(ExitCode::SUCCESS)
    }
}

impl Render for Submitted {
    fn render(&self, out: &mut String) {
        let verb = if self.created {
            "submitted"
        } else {
            "already submitted (same idempotency key)"
        };
        line!(
            out,
            "job {} {verb}: {} lakes, about {} provider calls",
            self.job,
            self.tasks,
            self.est_provider_calls
        );
    }
}

/// `sluice validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    hunt: HuntArgs,
}

impl ValidateArgs {
    /// The submit's checks without the job, with its cost and how soon it could finish.
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let c = ctx.api("cli").await?;
        let req = SubmitRequest {
            hunt: serde_json::to_value(self.hunt.spec()?)?,
            priority: 0,
            max_attempts: None,
            retention_secs: None,
            webhook: None,
        };
        let v = c
            .validate(&req)
            .await
            .inspect_err(|e| report_invalid(e, ctx.json()))?;
        ctx.show(&v)?;
        Ok(ExitCode::SUCCESS)
    }
}

impl Render for Validated {
    fn render(&self, out: &mut String) {
        line!(
            out,
            "valid: {} lakes, {} tasks, about {} provider calls",
            self.lakes.len(),
            self.tasks,
            self.est_provider_calls
        );
        let eta = |s: Option<f64>| s.map_or("no budget bounds it".to_string(), human_secs);
        line!(
            out,
            "soonest finish at the current budgets: {} alone, {} behind the backlog",
            eta(self.eta_alone_secs),
            eta(self.eta_with_backlog_secs)
        );
        if !self.intake_open {
            line!(
                out,
                "intake is closed (a drain is in progress): a submit now is refused"
            );
        }
        if let Some(sql) = &self.sql {
            line!(out, "{sql}");
        }
    }
}

/// `sluice status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Job id.
    job: JobId,
    /// Follow the job with a progress bar and why it waits, until it ends; exits 0 if it
    /// succeeded, 1 otherwise (partial, failed, cancelled).
    #[arg(long)]
    watch: bool,
    /// How often `--watch` polls.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration, requires = "watch")]
    interval: Duration,
}

impl StatusArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let c = ctx.api("cli").await?;
        let mut j = c.job(self.job.0).await?;
        if self.watch {
            // The job followed until it ends, then shown as without --watch.
            let mut p = Progress::new(ctx.json(), &[("", &j)]);
            while !is_over(&j) {
                p.update(std::slice::from_ref(&j));
                tokio::time::sleep(self.interval.max(Duration::from_millis(100))).await;
                j = c.job(self.job.0).await?;
            }
            p.clear();
        }
        ctx.show(&j)?;
        Ok(if !self.watch || j.state == "succeeded" {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

/// `lakes 3/10 done, 1 failed, 0 cancelled`.
fn lakes_done(done: i64, total: i64, failed: i64, cancelled: i64) -> String {
    format!("lakes {done}/{total} done, {failed} failed, {cancelled} cancelled")
}

fn is_over(j: &JobView) -> bool {
    sluice_core::JobState::parse(&j.state).is_some_and(|s| s.is_terminal())
}

impl Render for JobView {
    fn render(&self, out: &mut String) {
        let j = self;
        if is_over(j) {
            line!(
                out,
                "job {} {}: {}/{} lakes done, {} failed, {} cancelled; {} rows found",
                j.id,
                j.state,
                j.lakes.done,
                j.lakes.total,
                j.lakes.failed,
                j.lakes.cancelled,
                j.rows_found
            );
        } else {
            line!(out, "job {} ({}) {}", j.id, j.owner, j.state);
            let l = &j.lakes;
            let lakes = lakes_done(l.done, l.total, l.failed, l.cancelled);
            line!(out, "{lakes}; rows found {}", j.rows_found);
        }
        if let Some(e) = &j.error {
            line!(out, "error: {e}");
        }
        for why in &j.waiting {
            line!(out, "waiting: {why}");
        }
        if let Some(eta) = j.eta_secs.filter(|_| !is_over(j)) {
            line!(
                out,
                "eta: {} at the pace of its lakes so far",
                human_secs(eta)
            );
        }
    }
}

/// `sluice jobs`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct JobsArgs {
    #[command(subcommand)]
    cmd: Option<JobsCmd>,
    #[arg(long)]
    owner: Option<String>,
    /// queued, running, succeeded, partial, failed or cancelled.
    #[arg(long, value_parser = parse_job_state)]
    state: Option<sluice_core::JobState>,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
}

fn parse_job_state(s: &str) -> Result<sluice_core::JobState, String> {
    sluice_core::JobState::parse(s).ok_or_else(|| {
        format!("unknown state {s:?}: queued, running, succeeded, partial, failed or cancelled")
    })
}

#[derive(Debug, clap::Subcommand)]
pub enum JobsCmd {
    /// Remove finished jobs now, with their tasks, timeline and result objects (admin). The
    /// elected scheduler does this by itself past `--retention`.
    Purge(PurgeArgs),
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct PurgeArgs {
    /// This finished job, whatever its retention.
    #[arg(long)]
    job: Option<JobId>,
    /// Finished jobs that finished longer ago (`90d`), but those kept with retention 0.
    #[arg(long, value_parser = crate::parse_retention)]
    older_than: Option<std::time::Duration>,
}

impl PurgeArgs {
    async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let c = ctx.api("cli").await?;
        let req = sluice_api::wire::PurgeRequest {
            job: self.job.map(|j| j.0),
            older_than_secs: self.older_than.map(|d| d.as_secs() as i64),
        };
        // At most 20 jobs a call: go on while more may match.
        let mut total = sluice_api::wire::Purged {
            jobs: Vec::new(),
            tasks: 0,
            objects: 0,
            more: false,
        };
        loop {
            let p = c.purge(&req).await?;
            total.jobs.extend(&p.jobs);
            total.tasks += p.tasks;
            total.objects += p.objects;
            if !p.more {
                break;
            }
        }
        if let Some(j) = self.job
            && total.jobs.is_empty()
        {
            anyhow::bail!(
                "job {j} was not purged: it has not finished (cancel it first) or does not exist"
            );
        }
        ctx.show_as(&total, purged)?;
        Ok(ExitCode::SUCCESS)
    }
}

fn purged(p: &sluice_api::wire::Purged, out: &mut String) {
    line!(
        out,
        "{} finished jobs removed ({} tasks, {} result objects)",
        p.jobs.len(),
        p.tasks,
        p.objects
    );
}

impl JobsArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        if let Some(JobsCmd::Purge(p)) = self.cmd {
            return p.run(ctx).await;
        }
        let c = ctx.api("cli").await?;
        let jobs = c
            .jobs(
                self.owner.as_deref(),
                self.state.map(|s| s.as_str()),
                self.limit,
            )
            .await?;
        ctx.show_as(jobs.as_slice(), job_list)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Jobs newest first, one line each.
fn job_list(jobs: &[JobView], out: &mut String) {
    line!(
        out,
        "{:>8}  {:<16} {:<10} {:>13}  {:>8}  SUBMITTED",
        "JOB",
        "OWNER",
        "STATE",
        "LAKES DONE",
        "ROWS"
    );
    for j in jobs {
        line!(
            out,
            "{:>8}  {:<16} {:<10} {:>13}  {:>8}  {}",
            j.id,
            j.owner,
            j.state,
            format!("{}/{}", j.lakes.done, j.lakes.total),
            j.rows_found,
            j.created_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
}

/// `sluice cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    job: JobId,
    /// Who cancels (with --url: the token's owner).
    #[arg(long, env = "USER", default_value = "operator")]
    by: String,
    /// Why (kept in the job's timeline).
    #[arg(long)]
    reason: Option<String>,
}

impl CancelArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let c = ctx.api(&self.by).await?;
        let j = c.cancel(self.job.0, self.reason.as_deref()).await?;
        ctx.show_as(&j, cancelled)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// `sluice webhook-key`: the caller's key (with --url: the token owner's).
pub async fn webhook_key(ctx: &Ctx) -> Result<ExitCode> {
    let c = ctx.api("cli").await?;
    let k = c.webhook_key().await?;
    ctx.show_as(&k, |k, out| {
        line!(out, "{}", k["key"].as_str().unwrap_or_default());
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `sluice retry`.
#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    job: JobId,
    /// Who asks (with --url: the token's owner).
    #[arg(long, env = "USER", default_value = "operator")]
    by: String,
}

impl RetryArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let c = ctx.api(&self.by).await?;
        let j = c.retry(self.job.0).await?;
        ctx.show_as(&j, rerun)?;
        Ok(ExitCode::SUCCESS)
    }
}

fn rerun(j: &JobView, out: &mut String) {
    let (id, total) = (j.id, j.lakes.total);
    let open = open_lakes(j);
    line!(
        out,
        "job {id} runs again: {open} of {total} lakes to go (`sluice status {id}`)"
    );
}

/// The lakes of `j` not finished yet.
fn open_lakes(j: &JobView) -> i64 {
    j.lakes.total - j.lakes.done - j.lakes.failed - j.lakes.cancelled
}

/// `sluice priority`.
#[derive(Debug, clap::Args)]
pub struct PriorityArgs {
    job: JobId,
    /// -100 to 100, higher first (researchers: up to the server's ceiling for them).
    #[arg(allow_negative_numbers = true, value_parser = clap::value_parser!(i16).range(-100..=100))]
    priority: i16,
    /// Who sets it (with --url: the token's owner).
    #[arg(long, env = "USER", default_value = "operator")]
    by: String,
}

impl PriorityArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let c = ctx.api(&self.by).await?;
        let j = c.set_priority(self.job.0, self.priority).await?;
        ctx.show_as(&j, reprioritized)?;
        Ok(ExitCode::SUCCESS)
    }
}

fn reprioritized(j: &JobView, out: &mut String) {
    let open = open_lakes(j);
    line!(
        out,
        "job {} now at priority {}: its {} unfinished lakes move with it",
        j.id,
        j.priority,
        open
    );
}

fn cancelled(j: &JobView, out: &mut String) {
    line!(
        out,
        "job {} cancelled: {} of {} lakes had finished",
        j.id,
        j.lakes.done + j.lakes.failed,
        j.lakes.total
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultFormat {
    Table,
    Json,
    Csv,
    Parquet,
}

/// `sluice results`.
#[derive(Debug, clap::Args)]
pub struct ResultsArgs {
    job: JobId,
    #[arg(long, value_enum, default_value_t = ResultFormat::Table)]
    format: ResultFormat,
    /// Rows to print: 1 to 100000.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    limit: u32,
    /// Rows to skip (a previous page's "next: --offset N").
    #[arg(long, default_value_t = 0)]
    offset: usize,
}

impl ResultsArgs {
    /// A page of the job's results, as a table or passed through from the API as JSON, CSV
    /// or Parquet (the format is the data's, not `--output`'s).
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let c = ctx.api("cli").await?;
        let (job, format, offset, limit) =
            (self.job, self.format, self.offset, self.limit as usize);
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
        // Lake data goes to a terminal with its control characters escaped (a cell holding
        // an escape sequence must not rewrite the screen); a file gets the data as it is.
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let mut out = std::io::stdout().lock();
        if format != ResultFormat::Table {
            match format {
                ResultFormat::Csv if tty => {
                    out.write_all(for_terminal(&String::from_utf8_lossy(&page.body)).as_bytes())?
                }
                _ => out.write_all(&page.body)?,
            }
            if format == ResultFormat::Json {
                writeln!(out)?;
            }
            return Ok(ExitCode::SUCCESS);
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
            let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?;
            let table = table.to_string();
            writeln!(
                out,
                "{}",
                if tty {
                    for_terminal(&table)
                } else {
                    table.into()
                }
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
        Ok(ExitCode::SUCCESS)
    }
}

/// Text for a terminal: control characters (escape sequences among them) written as escapes
/// (`\u{1b}`), line breaks kept.
fn for_terminal(s: &str) -> std::borrow::Cow<'_, str> {
    let shown = |c: char| !c.is_control() || c == '\n';
    if s.chars().all(shown) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if shown(c) {
                c.to_string()
            } else {
                c.escape_default().to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// `sluice explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    job: JobId,
    /// Every event, not grouped.
    #[arg(long)]
    all: bool,
}

impl ExplainArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let store = ctx.store("explain").await?;
        ctx.show(&timeline(store.as_ref(), self.job, self.all).await?)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// A job's timeline from the journal: job events in order, task events grouped by kind
/// (count, first and last time, distinct errors), or every event with `all`; and the
/// provider events of its scopes while it ran.
#[derive(serde::Serialize)]
struct Timeline {
    job: sluice_store::Job,
    events: Vec<sluice_store::Event>,
    provider_events: Vec<sluice_store::Event>,
    #[serde(skip)]
    all: bool,
}

async fn timeline(store: &dyn Store, job: JobId, all: bool) -> Result<Timeline> {
    let mut j = store.job_get(job).await?;
    // Its webhook's host only: the path and query often hold the receiver's secret.
    j.webhook = j.webhook.as_deref().map(sluice_core::webhook::host_of);
    let of_job = sluice_store::EventListParams {
        job_id: Some(job),
        scope: None,
        after_id: None,
        limit: 5_000,
    };
    let events = store.event_list_until(of_job, &|_| false).await?;
    let provider_events = provider_events(store, job, &events).await?;
    Ok(Timeline {
        job: j,
        events,
        provider_events,
        all,
    })
}

impl Render for Timeline {
    fn render(&self, out: &mut String) {
        let j = &self.job;
        let c = &j.counts;
        let lakes = lakes_done(c.done, c.total, c.failed, c.cancelled);
        line!(
            out,
            "job {} ({}) {}: {lakes}; rows {}",
            j.id,
            j.owner,
            j.state,
            j.rows_found
        );
        if let Some(e) = &j.error {
            line!(out, "error: {e}");
        }
        let detail =
            |d: &Option<serde_json::Value>| d.as_ref().map(|v| v.to_string()).unwrap_or_default();
        // One event a line: when, what, the task's id (for a task's event), details.
        let event_line = |out: &mut String, e: &sluice_store::Event| {
            let task = e.task_id.map(|t| format!(" task {t}")).unwrap_or_default();
            line!(
                out,
                "{} {:<20}{task} {}",
                e.at.to_rfc3339(),
                e.kind,
                detail(&e.detail)
            );
        };
        if self.all {
            for e in &self.events {
                event_line(out, e);
            }
            return;
        }
        struct Group {
            n: usize,
            first: chrono::DateTime<chrono::Utc>,
            last: chrono::DateTime<chrono::Utc>,
            why: Vec<String>,
        }
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for e in &self.events {
            if e.task_id.is_none() {
                event_line(out, e);
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
            line!(
                out,
                "{kind:<20} ×{:<6} {} … {}",
                g.n,
                g.first.to_rfc3339(),
                g.last.to_rfc3339()
            );
            for w in &g.why {
                line!(out, "{:<28}{w}", "");
            }
        }
        if !self.provider_events.is_empty() {
            line!(out, "provider events of the job's scopes while it ran:");
            for e in &self.provider_events {
                line!(
                    out,
                    "{} {:<20} {} {}",
                    e.at.to_rfc3339(),
                    e.kind,
                    e.scope.as_deref().unwrap_or(""),
                    detail(&e.detail)
                );
            }
        }
    }
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
    let scopes: std::collections::BTreeSet<String> = store
        .task_list_all(job)
        .await?
        .into_iter()
        .map(|t| t.scope)
        .collect();
    let mut out = Vec::new();
    for scope in scopes {
        let of_scope = sluice_store::EventListParams {
            job_id: None,
            scope: Some(scope),
            after_id: Some(first.id),
            limit: 5_000,
        };
        // Up to the job's end, and at most about 10,000 rows a scope.
        let ended = |e: &sluice_store::Event| j.finished_at.is_some_and(|f| e.at > f);
        let pages = std::sync::atomic::AtomicUsize::new(0);
        let stop = |e: &sluice_store::Event| {
            ended(e) || pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 1
        };
        let page = store.event_list_until(of_scope, &stop).await?;
        out.extend(page.into_iter().filter(|e| !ended(e)));
    }
    out.sort_by_key(|e| e.id);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_reach_a_terminal_escaped() {
        let cases = [
            ("plain, text\n", "plain, text\n"),
            (
                "\u{1b}[2J\u{1b}]0;pwned\u{7}",
                "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}",
            ),
            ("a\rb\tc\u{9b}d", "a\\rb\\tc\\u{9b}d"),
            ("ümlaut ✓\n", "ümlaut ✓\n"),
        ];
        for (raw, shown) in cases {
            assert_eq!(super::for_terminal(raw), shown, "{raw:?}");
        }
    }
}
