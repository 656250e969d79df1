//! `sluice`: one binary for every role. Errors are printed as one line; exit codes: 0 success,
//! 1 failure (including a demo whose jobs did not all succeed), 2 bad usage, 3 a wait that
//! timed out (`sluice drain --wait --timeout`).

mod client;
mod commands;
mod config;
mod demo;
mod hunts;
mod lab;
mod provider;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use sluice_core::{JobId, SystemClock};
use sluice_scheduler::{RescuerConfig, Scheduler, SchedulerConfig};
use sluice_store::{ConnectOptions, Store};
use sluice_worker::{Worker, WorkerConfig};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Durable, budget-aware job scheduler for hunts across many data lakes"
)]
struct Cli {
    /// Database: postgres://USER@HOST:PORT/DB or sqlite://PATH (embedded, one process).
    #[arg(
        long,
        global = true,
        env = "SLUICE_DATABASE_URL",
        default_value = "sqlite://sluice.db"
    )]
    database_url: String,

    /// Folder where task results (Parquet) are written and read.
    #[arg(
        long,
        global = true,
        env = "SLUICE_RESULTS_DIR",
        default_value = "sluice-results"
    )]
    results_dir: std::path::PathBuf,

    /// How long to wait for the database before giving up.
    #[arg(long, global = true, env = "SLUICE_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// Log format on stderr.
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,

    /// A sluice server's API, e.g. http://sluice.internal:8080: the researcher verbs
    /// (`submit`, `validate`, `status`, `jobs`, `cancel`, `results`) and the operator verbs
    /// (`backlog`, `pause`, `resume`, `pauses`, `drain`, `budget`, `breaker`) then go through
    /// it with --token instead of opening the database.
    #[arg(long, global = true, env = "SLUICE_URL")]
    url: Option<String>,

    /// The API token for --url, from `sluice tokens create` (its owner owns what you submit).
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Output of commands that print results.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,

    /// A TOML file of settings (default: ./sluice.toml if it exists). Its names are the
    /// environment variables' without `SLUICE_`: `database_url = "…"`, `[worker]
    /// concurrency = 32`. Flags beat the environment, which beats the file.
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    config: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Every setting with its value and where it came from (flag, env, file, default).
    Show,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply database migrations (also done at every start-up).
    Migrate,
    /// Claim and run tasks until SIGTERM/SIGINT, then hand back what is unfinished.
    Worker(WorkerArgs),
    /// Stand for election as the scheduler until SIGTERM/SIGINT: the one leader rescues expired
    /// leases and keeps the release order fair across owners; the others stand by.
    Scheduler(SchedulerArgs),
    /// Show a job's state and progress.
    Status {
        /// Job id.
        job: JobId,
        /// Follow the job with a progress bar and why it waits, until it ends; exits 0 if it
        /// succeeded, 1 otherwise (partial, failed, cancelled).
        #[arg(long)]
        watch: bool,
        /// How often `--watch` polls.
        #[arg(long, default_value = "1s", value_parser = parse_duration, requires = "watch")]
        interval: Duration,
    },
    /// Jobs, newest first.
    Jobs {
        #[arg(long)]
        owner: Option<String>,
        /// queued, running, succeeded, partial, failed or cancelled.
        #[arg(long, value_parser = parse_job_state)]
        state: Option<sluice_core::JobState>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Cancel a job: its pending tasks never run, running ones lose their lease (their late
    /// results are rejected).
    Cancel {
        job: JobId,
        /// Who cancels (with --url: the token's owner).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
        /// Why (kept in the job's timeline).
        #[arg(long)]
        reason: Option<String>,
    },
    /// A job's timeline from the journal: what happened to it and why.
    Explain {
        job: JobId,
        /// Every event, not grouped.
        #[arg(long)]
        all: bool,
    },
    /// Pause a target: its pending tasks are not claimed (on any machine) until resumed; running
    /// tasks finish.
    Pause {
        #[command(flatten)]
        target: PauseTargetArgs,
        /// Why (shown to researchers in `status`).
        #[arg(long)]
        reason: String,
        /// Who pauses (default: $USER; with --url: the token's owner).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
        /// Also hand back the target's running tasks now (no attempt spent); their workers
        /// stop them at their next heartbeat. Without it, running tasks finish.
        #[arg(long)]
        now: bool,
    },
    /// Lift a pause.
    Resume {
        #[command(flatten)]
        target: PauseTargetArgs,
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// The pauses in force.
    Pauses,
    /// The effective settings (flags, environment, config file, defaults), secrets masked.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print a shell completion script: `sluice completions bash > /etc/bash_completion.d/sluice`.
    Completions { shell: clap_complete::Shell },
    /// Unfinished tasks by provider scope, the oldest pending task's age, and the soonest the
    /// backlog can drain at the current budgets (from the store's counters; no task scan).
    Backlog,
    /// Stop intake so the backlog can empty: from now on new jobs are refused on every
    /// process (the API answers 503 with Retry-After) until `sluice drain --end`; accepted jobs
    /// go on, nothing is dropped. With `--wait`, exits 0 once nothing is pending or running, or
    /// 3 when `--timeout` passes first.
    Drain {
        /// Why (submitters see it).
        #[arg(long, default_value = "draining the backlog")]
        reason: String,
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
        /// Wait until the backlog is empty.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (exit 3); intake stays closed.
        #[arg(long, requires = "wait", value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// Open intake again instead.
        #[arg(long, conflicts_with_all = ["wait", "timeout"])]
        end: bool,
    },
    /// Register, list, remove or generate lakes.
    #[command(subcommand)]
    Lakes(commands::LakesCmd),
    /// Submit a hunt (SQL or IOCs): validated first, then one task per selected lake.
    Submit {
        #[command(flatten)]
        hunt: commands::HuntArgs,
        /// Who the job belongs to (default `cli`; with --url it is the token's owner).
        #[arg(long, env = "SLUICE_OWNER")]
        owner: Option<String>,
        /// Higher runs first: -100 to 100.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i16).range(-100..=100))]
        priority: i16,
        /// Same key and same hunt: the same job is returned instead of a second one.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Attempts per lake before it counts as failed (provider trouble spends none).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=20))]
        max_attempts: i32,
    },
    /// Check a hunt without submitting it: errors with line and column, lakes, cost.
    Validate {
        #[command(flatten)]
        hunt: commands::HuntArgs,
    },
    /// A job's results so far (partial while it runs), in task order.
    Results {
        job: JobId,
        #[arg(long, value_enum, default_value_t = commands::ResultFormat::Table)]
        format: commands::ResultFormat,
        /// Rows to print: 1 to 100000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// Rows to skip (a previous page's "next: --offset N").
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// The HTTP API, a scheduler candidate and a worker in one process.
    Server(ServerArgs),
    /// API tokens: create (printed once), list, revoke.
    #[command(subcommand)]
    Tokens(commands::TokensCmd),
    /// The embedded demo: SQLite, no server to install; runs a bulk and an urgent job end to end.
    Demo(demo::DemoArgs),
    /// Provider call budgets per scope (token buckets under the root `*`).
    #[command(subcommand)]
    Budget(provider::BudgetCmd),
    /// Circuit breakers per scope.
    #[command(subcommand)]
    Breaker(provider::BreakerCmd),
    /// Run the provider simulator (an S3 server with quotas, throttling and account freezes).
    Sim(provider::SimArgs),
    /// The provider-incident lab (tests, `make replay-outage`).
    #[command(subcommand, hide = true)]
    Lab(LabCmd),
}

#[derive(Debug, Subcommand)]
enum LabCmd {
    /// Lay out S3 lakes for the simulator, write its accounts file, register the lakes.
    Setup(lab::LabArgs),
    /// The outage replay: the same backlog with the guard off (the account freezes), then on.
    ReplayOutage(lab::ReplayArgs),
}

/// Exactly one pause target.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
struct PauseTargetArgs {
    /// Everything.
    #[arg(long)]
    all: bool,
    /// One provider scope, e.g. aws:123456789012.
    #[arg(long)]
    scope: Option<String>,
    /// One owner's jobs.
    #[arg(long)]
    owner: Option<String>,
    /// One job.
    #[arg(long)]
    job: Option<JobId>,
}

impl PauseTargetArgs {
    fn target(&self) -> sluice_store::PauseTarget {
        use sluice_store::PauseTarget as T;
        match (self.all, &self.scope, &self.owner, self.job) {
            (_, Some(s), _, _) => T::Scope(s.clone()),
            (_, _, Some(o), _) => T::Owner(o.clone()),
            (_, _, _, Some(j)) => T::Job(j),
            _ => T::All,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
struct ElectionArgs {
    /// The scheduler leader's lease: a standby takes over at most this long after the leader
    /// stops renewing it (crash, SIGKILL, lost database).
    #[arg(long, env = "SLUICE_LEADER_TTL", default_value = "15s", value_parser = parse_duration)]
    leader_ttl: Duration,
}

impl ElectionArgs {
    fn check(&self) -> Result<()> {
        if self.leader_ttl < Duration::from_millis(300) {
            anyhow::bail!("--leader-ttl must be at least 300ms");
        }
        Ok(())
    }

    fn config(&self, holder: String, rescue_every: Duration) -> Result<SchedulerConfig> {
        self.check()?;
        let mut cfg = SchedulerConfig::new(holder);
        cfg.ttl = self.leader_ttl;
        cfg.rescue = RescuerConfig {
            every: rescue_every,
            ..Default::default()
        };
        Ok(cfg)
    }
}

#[derive(Debug, Clone, clap::Args)]
struct SchedulerArgs {
    #[command(flatten)]
    election: ElectionArgs,
    /// This process's id in the election (default: host-pid-random).
    #[arg(long, env = "SLUICE_SCHEDULER_ID")]
    id: Option<String>,
    /// How often the leader rescues expired leases.
    #[arg(long, env = "SLUICE_RESCUE_EVERY", default_value = "5s", value_parser = parse_duration)]
    rescue_every: Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9465).
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, clap::Args)]
struct WorkerArgs {
    /// Tasks run at once.
    #[arg(long, env = "SLUICE_WORKER_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// Slots beyond --concurrency kept for owners that run fewer than this many tasks here, so
    /// one owner's sweep holding every slot does not make another owner's small hunt wait
    /// (default: concurrency / 8, rounded up; 0: none).
    #[arg(long, env = "SLUICE_WORKER_SPARE_SLOTS", value_parser = clap::value_parser!(u32).range(0..=10_000))]
    spare_slots: Option<u32>,
    /// Most tasks taken per claim.
    #[arg(long, env = "SLUICE_WORKER_CLAIM_BATCH", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    claim_batch: u32,
    /// Lease length: a task whose worker stops heartbeating is rescued this long after.
    #[arg(long, env = "SLUICE_WORKER_LEASE", default_value = "30s", value_parser = parse_duration)]
    lease: Duration,
    /// How long running tasks may take to finish after SIGTERM before they are handed back.
    #[arg(long, env = "SLUICE_WORKER_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// Wait between claims when nothing is runnable.
    #[arg(long, env = "SLUICE_WORKER_IDLE_POLL", default_value = "500ms", value_parser = parse_duration)]
    idle_poll: Duration,
    /// Also stand for election as the scheduler in this process (one leader among all
    /// processes runs lease rescue and the fairness rebalance; the others stand by).
    #[arg(long, env = "SLUICE_WORKER_SCHEDULER", default_value_t = true, action = clap::ArgAction::Set)]
    scheduler: bool,
    #[command(flatten)]
    election: ElectionArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9464).
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Worker id shown as lease owner (default: host-pid-random).
    #[arg(long, env = "SLUICE_WORKER_ID")]
    id: Option<String>,
    /// Longest a hunt task may run; past it the task is killed and fails (no retry).
    #[arg(long, env = "SLUICE_TASK_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    task_timeout: Duration,
    /// Memory one hunt task may use, in MiB; a task over it fails (no retry).
    #[arg(long, env = "SLUICE_TASK_MEMORY_MIB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    task_memory_mib: u64,
    /// Most result rows one hunt task may write (per lake); past it the task fails.
    #[arg(long, env = "SLUICE_TASK_RESULT_ROWS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    task_result_rows: u64,
    /// Most result data one hunt task may write, in MiB (in memory, before compression).
    #[arg(long, env = "SLUICE_TASK_RESULT_MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    task_result_mib: u64,
    /// Where hunts run: `process` — in runner processes with OS limits, so a hunt that runs
    /// out of memory or crashes ends its task, never this process (ADR 0010); `none` — in this
    /// process (for comparison and tests only).
    #[arg(long, env = "SLUICE_ISOLATION", value_enum, default_value_t = Isolation::Process)]
    isolation: Isolation,
    /// How long a lake's file listing is reused before it is listed again (new files show up
    /// after this).
    #[arg(long, env = "SLUICE_LAKE_LIST_TTL", default_value = "5m", value_parser = parse_duration)]
    lake_list_ttl: Duration,
    /// Threads that run query plans (a runtime separate from the one that talks to the database).
    #[arg(long, env = "SLUICE_CPU_THREADS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    cpu_threads: u32,
    #[command(flatten)]
    guard: provider::GuardArgs,
}

impl WorkerArgs {
    fn spare_slots(&self) -> usize {
        self.spare_slots
            .unwrap_or_else(|| self.concurrency.div_ceil(8)) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Isolation {
    Process,
    None,
}

/// A worker's totals on stdout at exit, for scripts (`--output json` only).
fn print_stats(output: Output, stats: Option<sluice_worker::WorkerStats>) {
    if let (Output::Json, Some(s)) = (output, stats) {
        println!(
            "{}",
            serde_json::json!({"claimed": s.claimed, "recorded": s.recorded,
                "rejected": s.rejected, "handed_back": s.handed_back})
        );
    }
}

/// The worker's query engine: its limits, and provider calls through the guard (or not, with
/// `--provider-guard off`). `sluice server` also reads results with it.
fn worker_engine(
    store: &Arc<dyn Store>,
    results_dir: &std::path::Path,
    args: &WorkerArgs,
) -> Result<Arc<sluice_engine::Engine>> {
    let mut ecfg = sluice_engine::EngineConfig::new(results_dir);
    ecfg.timeout = args.task_timeout;
    ecfg.memory_limit = usize::try_from(args.task_memory_mib << 20).unwrap_or(usize::MAX);
    ecfg.cpu_threads = args.cpu_threads as usize;
    ecfg.list_ttl = args.lake_list_ttl;
    ecfg.max_result_rows = args.task_result_rows;
    ecfg.max_result_bytes = args.task_result_mib << 20;
    let guard: Arc<dyn sluice_core::CallGate> = match args.guard.provider_guard {
        provider::GuardMode::On => Arc::new(sluice_scheduler::ProviderGuard::new(
            store.clone(),
            Arc::new(SystemClock),
            args.guard.config()?,
        )),
        provider::GuardMode::Off => {
            tracing::warn!("provider guard off: calls are not budgeted and breakers are ignored");
            Arc::new(sluice_core::OpenGate)
        }
    };
    Ok(Arc::new(
        sluice_engine::Engine::new(ecfg)
            .context("starting the query engine")?
            .with_gate(guard),
    ))
}

/// The runner processes of a worker: this binary started as a runner, with the engine's
/// limits; as many kept warm as the worker has slots, started before its first claim so the
/// first tasks do not wait for them.
pub(crate) async fn runner_pool(
    engine: Arc<sluice_engine::Engine>,
    slots: usize,
) -> Result<Arc<sluice_engine::isolate::RunnerPool>> {
    let program = std::env::current_exe().context("locating this binary to start hunt runners")?;
    let runner = sluice_engine::isolate::RunnerConfig::from_engine(engine.config())
        .context("the results folder")?;
    let cfg = sluice_engine::isolate::PoolConfig {
        program,
        runner,
        max_idle: slots,
    };
    let pool = Arc::new(sluice_engine::isolate::RunnerPool::new(cfg, engine));
    let ready = pool.prewarm(slots).await;
    tracing::info!(runners = ready, "hunt runners ready");
    Ok(pool)
}

/// Runs a worker (and, with `--scheduler true`, a scheduler candidate) on `engine` until `stop`
/// is cancelled and the worker has drained.
async fn run_worker(
    store: Arc<dyn Store>,
    engine: Arc<sluice_engine::Engine>,
    args: &WorkerArgs,
    stop: CancellationToken,
) -> Result<sluice_worker::WorkerStats> {
    let clock = Arc::new(SystemClock);
    let mut cfg = WorkerConfig::new(
        args.id
            .clone()
            .unwrap_or_else(sluice_worker::default_worker_id),
    );
    cfg.concurrency = args.concurrency as usize;
    cfg.spare = args.spare_slots();
    cfg.claim_batch = args.claim_batch;
    cfg.lease = args.lease.max(Duration::from_millis(100));
    cfg.heartbeat_every = cfg.lease / 3;
    cfg.shutdown_grace = args.shutdown_grace;
    cfg.idle_poll = args.idle_poll;
    let scheduler = if args.scheduler {
        let every = (cfg.lease / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let s = Scheduler::new(
            store.clone(),
            clock.clone(),
            args.election.config(cfg.id.clone(), every)?,
        );
        Some(tokio::spawn(s.run(stop.clone())))
    } else {
        None
    };
    let exec = match args.isolation {
        Isolation::Process => {
            let slots = args.concurrency as usize + args.spare_slots();
            hunts::Executor::Isolated(runner_pool(engine, slots).await?)
        }
        Isolation::None => {
            tracing::warn!("hunt isolation off: a hunt that runs out of memory ends this process");
            hunts::Executor::InProcess(engine)
        }
    };
    let runner = Arc::new(hunts::HuntRunner::with(store.clone(), exec));
    let worker = Worker::new(store.clone(), runner, clock, cfg);
    let stats = worker.run(stop.clone()).await;
    if let Some(s) = scheduler {
        stop.cancel();
        let _ = s.await;
    }
    Ok(stats)
}

#[derive(Debug, Clone, clap::Args)]
struct ServerArgs {
    /// Where the HTTP API listens (also serves /metrics, /healthz, /readyz).
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Largest request body accepted, in bytes (413 beyond).
    #[arg(long, env = "SLUICE_API_MAX_BODY_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..=(64 << 20)))]
    max_body_bytes: u64,
    /// Submissions get 503 + Retry-After while this many lakes of open jobs are unfinished.
    #[arg(long, env = "SLUICE_API_MAX_BACKLOG", value_parser = clap::value_parser!(i64).range(1..))]
    max_backlog_tasks: Option<i64>,
    /// Also run hunt tasks in this process (`false`: API and scheduler only).
    #[arg(long, env = "SLUICE_SERVER_SLOTS", default_value_t = true, action = clap::ArgAction::Set)]
    slots: bool,
    #[command(flatten)]
    worker: WorkerArgs,
}

fn parse_job_state(s: &str) -> Result<sluice_core::JobState, String> {
    sluice_core::JobState::parse(s).ok_or_else(|| {
        format!("unknown state {s:?}: queued, running, succeeded, partial, failed or cancelled")
    })
}

/// Parses `250ms`, `30s`, `5m`, `1h` (a bare number is seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s, 5m or 1h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        u if u.starts_with('.') => {
            return Err(format!(
                "{s:?} is not a duration: use whole numbers, e.g. 1500ms for 1.5s"
            ));
        }
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use ms, s, m or h")),
    };
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err(format!("{s:?} is longer than a week"));
    }
    Ok(d)
}

/// Serves `/metrics` (Prometheus text format), `/healthz` (the process is up) and `/readyz`
/// (the database answers, its schema is current and the process is not shutting down) until
/// `stop` is cancelled.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    store: Arc<dyn Store>,
    draining: CancellationToken,
    stop: CancellationToken,
) -> Result<()> {
    use axum::http::StatusCode;
    use axum::http::header::CONTENT_TYPE;
    sluice_worker::metrics::init();
    sluice_engine::metrics::init();
    let ready = move || {
        let (store, draining) = (store.clone(), draining.clone());
        async move {
            if draining.is_cancelled() {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting down\n".to_string(),
                );
            }
            match tokio::time::timeout(Duration::from_secs(5), store.ready()).await {
                Ok(Ok(())) => (StatusCode::OK, "ready\n".to_string()),
                Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
                Err(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database did not answer within 5s\n".to_string(),
                ),
            }
        }
    };
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    sluice_worker::metrics::render(),
                )
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(ready));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics listener {addr}"))?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

fn init_logs(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => b.compact().init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

/// Where the researcher verbs send their requests.
struct Conn {
    url: Option<String>,
    token: Option<String>,
    database_url: String,
    results_dir: std::path::PathBuf,
    connect_timeout: Duration,
}

/// The API client of the researcher verbs: the server at `--url`, or the API run in this
/// process on the database as `owner` (with the admin role: whoever can open the database can
/// change it anyway).
async fn client(conn: &Conn, owner: &str) -> Result<client::Client> {
    if let Some(url) = &conn.url {
        return client::Client::remote(url, conn.token.clone(), conn.connect_timeout);
    }
    let store = open_store(&conn.database_url, conn.connect_timeout).await?;
    let engine = commands::engine(&conn.results_dir)?;
    let api = sluice_api::Api {
        store: store.clone(),
        planner: Arc::new(hunts::HuntPlanner {
            store: store.clone(),
        }),
        results: Arc::new(hunts::EngineResults { store, engine }),
        cfg: sluice_api::ApiConfig::default(),
    };
    Ok(client::Client::local(
        api,
        sluice_api::Caller {
            owner: owner.to_string(),
            role: sluice_store::Role::Admin,
        },
    ))
}

pub(crate) async fn open_store(url: &str, connect_timeout: Duration) -> Result<Arc<dyn Store>> {
    let opts = ConnectOptions {
        max_connections: 16,
        application_name: Some("sluice".into()),
        connect_timeout: Some(connect_timeout),
        ..Default::default()
    };
    sluice_store::connect(url, opts)
        .await
        .with_context(|| format!("opening database {}", sluice_store::redact_url(url)))
}

/// Cancels the token at the first SIGTERM or SIGINT; a second one exits at once.
fn on_signals(token: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n == 0 {
                tracing::info!(
                    "shutdown requested: finishing in-flight tasks (signal again to exit now)"
                );
                token.cancel();
            } else {
                tracing::warn!(
                    "second signal: exiting now; unfinished leases are rescued after they expire"
                );
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

async fn run(
    cli: Cli,
    settings: (
        config::FileSettings,
        std::collections::BTreeMap<String, String>,
    ),
) -> Result<ExitCode> {
    let conn = Conn {
        url: cli.url.clone(),
        token: cli.token.clone(),
        database_url: cli.database_url.clone(),
        results_dir: cli.results_dir.clone(),
        connect_timeout: cli.connect_timeout,
    };
    // The verbs that only work on the database must not quietly open the default one when
    // the user meant the server at --url.
    let db_only = match &cli.command {
        Command::Migrate => Some("migrate"),
        Command::Tokens(_) => Some("tokens"),
        Command::Lakes(_) => Some("lakes"),
        Command::Explain { .. } => Some("explain"),
        _ => None,
    };
    if let (Some(verb), Some(url)) = (db_only, &cli.url) {
        anyhow::bail!(
            "`sluice {verb}` works on the database, not through the API at {url}: give --database-url and drop --url (and SLUICE_URL)"
        );
    }
    match cli.command {
        Command::Migrate => {
            let store = open_store(&cli.database_url, cli.connect_timeout).await?;
            println!("migrations applied ({})", store.backend());
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(args) => {
            args.election.check()?;
            let store = open_store(&cli.database_url, cli.connect_timeout).await?;
            let stop = CancellationToken::new();
            on_signals(stop.clone())?;
            // Metrics stay up while the worker drains, and stop when it has.
            let metrics_stop = CancellationToken::new();
            if let Some(addr) = args.metrics_listen {
                serve_metrics(addr, store.clone(), stop.clone(), metrics_stop.clone()).await?;
            }
            let engine = worker_engine(&store, &cli.results_dir, &args)?;
            let stats = run_worker(store, engine, &args, stop).await?;
            metrics_stop.cancel();
            print_stats(cli.output, Some(stats));
            Ok(ExitCode::SUCCESS)
        }
        Command::Server(args) => {
            args.worker.election.check()?;
            let store = open_store(&cli.database_url, cli.connect_timeout).await?;
            let stop = CancellationToken::new();
            on_signals(stop.clone())?;
            // One engine: the slots run hunts on it and the API reads results with it (without
            // slots it only reads results).
            let engine = if args.slots {
                worker_engine(&store, &cli.results_dir, &args.worker)?
            } else {
                commands::engine(&cli.results_dir)?
            };
            let api = sluice_api::Api {
                store: store.clone(),
                planner: Arc::new(hunts::HuntPlanner {
                    store: store.clone(),
                }),
                results: Arc::new(hunts::EngineResults {
                    store: store.clone(),
                    engine: engine.clone(),
                }),
                cfg: sluice_api::ApiConfig {
                    max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
                    max_backlog_tasks: args.max_backlog_tasks,
                },
            };
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("binding the API listener {}", args.listen))?;
            tracing::info!(addr = %listener.local_addr().unwrap_or(args.listen), "serving the API");
            // The API stops taking requests at the first signal; the worker then drains.
            let api_stop = stop.clone();
            let server = tokio::spawn(async move {
                axum::serve(listener, sluice_api::router(api))
                    .with_graceful_shutdown(async move { api_stop.cancelled().await })
                    .await
            });
            let metrics_stop = CancellationToken::new();
            if let Some(addr) = args.worker.metrics_listen {
                serve_metrics(addr, store.clone(), stop.clone(), metrics_stop.clone()).await?;
            }
            let stats = if args.slots {
                Some(run_worker(store, engine, &args.worker, stop.clone()).await?)
            } else {
                // No task slots: still a scheduler candidate unless told otherwise.
                let id = args
                    .worker
                    .id
                    .clone()
                    .unwrap_or_else(sluice_worker::default_worker_id);
                let scheduler = if args.worker.scheduler {
                    let cfg = args.worker.election.config(id, Duration::from_secs(5))?;
                    Some(tokio::spawn(
                        Scheduler::new(store, Arc::new(SystemClock), cfg).run(stop.clone()),
                    ))
                } else {
                    None
                };
                stop.cancelled().await;
                if let Some(s) = scheduler {
                    let _ = s.await;
                }
                None
            };
            metrics_stop.cancel();
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "API server stopped"),
                Err(e) => tracing::warn!(error = %e, "API server task failed"),
            }
            print_stats(cli.output, stats);
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens(cmd) => {
            let store = open_store(&cli.database_url, cli.connect_timeout).await?;
            commands::tokens(store.as_ref(), cmd, cli.output == Output::Json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scheduler(args) => {
            // Settings are checked before anything is opened.
            let id = args.id.unwrap_or_else(sluice_worker::default_worker_id);
            let cfg = args
                .election
                .config(id, args.rescue_every.max(Duration::from_millis(100)))?;
            let store = open_store(&cli.database_url, cli.connect_timeout).await?;
            let stop = CancellationToken::new();
            on_signals(stop.clone())?;
            let metrics_stop = CancellationToken::new();
            if let Some(addr) = args.metrics_listen {
                serve_metrics(addr, store.clone(), stop.clone(), metrics_stop.clone()).await?;
            }
            Scheduler::new(store, Arc::new(SystemClock), cfg)
                .run(stop)
                .await;
            metrics_stop.cancel();
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs {
            owner,
            state,
            limit,
        } => {
            let c = client(&conn, "cli").await?;
            let jobs = c
                .jobs(owner.as_deref(), state.map(|s| s.as_str()), limit)
                .await?;
            if cli.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                println!(
                    "{:>8}  {:<16} {:<10} {:>13}  {:>8}  SUBMITTED",
                    "JOB", "OWNER", "STATE", "LAKES DONE", "ROWS"
                );
                for j in &jobs {
                    println!(
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { job, by, reason } => {
            let c = client(&conn, &by).await?;
            let j = c.cancel(job.0, reason.as_deref()).await?;
            if cli.output == Output::Json {
                println!("{}", serde_json::to_string(&j)?);
            } else {
                println!(
                    "job {} cancelled: {} of {} lakes had finished",
                    j.id,
                    j.lakes.done + j.lakes.failed,
                    j.lakes.total
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            job,
            watch: true,
            interval,
        } => {
            let c = client(&conn, "cli").await?;
            commands::watch(
                &c,
                job,
                interval.max(Duration::from_millis(100)),
                cli.output == Output::Json,
            )
            .await
        }
        Command::Status { job, .. } => {
            let c = client(&conn, "cli").await?;
            let j = c.job(job.0).await?;
            match cli.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&j)?),
                Output::Text => {
                    println!("job {} ({}) {}", j.id, j.owner, j.state);
                    println!(
                        "lakes {}/{} done, {} failed, {} cancelled; rows found {}",
                        j.lakes.done,
                        j.lakes.total,
                        j.lakes.failed,
                        j.lakes.cancelled,
                        j.rows_found
                    );
                    if let Some(e) = &j.error {
                        println!("error: {e}");
                    }
                    for why in &j.waiting {
                        println!("waiting: {why}");
                    }
                    if let Some(eta) = j.eta_secs {
                        println!(
                            "eta: {} at the pace of its lakes so far",
                            commands::human_secs(eta)
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            demo::run(args, cli.output == Output::Json, cli.connect_timeout).await
        }
        Command::Budget(cmd) => {
            let c = client(&conn, "cli").await?;
            provider::budget(&c, cmd, cli.output == Output::Json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Breaker(cmd) => {
            let by = match &cmd {
                provider::BreakerCmd::Reset { by, .. } => by.clone(),
                provider::BreakerCmd::List => "cli".into(),
            };
            let c = client(&conn, &by).await?;
            provider::breaker(&c, cmd, cli.output == Output::Json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lab(LabCmd::Setup(args)) => {
            let store = open_store(&cli.database_url, cli.connect_timeout).await?;
            let engine = commands::engine(&cli.results_dir)?;
            let m = lab::setup(store.as_ref(), &engine, &args).await?;
            println!("{}", serde_json::to_string_pretty(&m)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Lab(LabCmd::ReplayOutage(args)) => Ok(if lab::replay(args).await? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Sim(args) => {
            let stop = CancellationToken::new();
            on_signals(stop.clone())?;
            provider::sim(args, stop).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { job, all } => {
            let store = open_store(&cli.database_url, cli.connect_timeout).await?;
            commands::explain(store.as_ref(), job, all, cli.output == Output::Json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause {
            target,
            reason,
            by,
            now,
        } => {
            let c = client(&conn, &by).await?;
            let p = c
                .pause(&sluice_api::wire::PauseRequest {
                    target: target.target().key(),
                    reason,
                    now,
                })
                .await?;
            if cli.output == Output::Json {
                println!("{}", serde_json::to_string(&p)?);
            } else {
                println!(
                    "paused {}: {} (by {})",
                    p.pause.target, p.pause.reason, p.pause.by
                );
                if now {
                    println!(
                        "{} running tasks handed back (no attempt spent)",
                        p.handed_back
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume { target, by } => {
            let c = client(&conn, &by).await?;
            let r = c.resume(&target.target().key()).await?;
            println!("resumed {}", r.resumed);
            Ok(ExitCode::SUCCESS)
        }
        Command::Pauses => {
            let c = client(&conn, "cli").await?;
            let pauses = c.pauses().await?;
            if cli.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&pauses)?);
            } else {
                for p in &pauses {
                    println!(
                        "{:<32} since {}  by {}: {}",
                        p.target,
                        p.at.to_rfc3339(),
                        p.by,
                        p.reason
                    );
                }
                println!("{} pauses in force", pauses.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Drain {
            reason,
            by,
            wait,
            timeout,
            end,
        } => {
            let c = client(&conn, &by).await?;
            commands::drain(
                &c,
                commands::DrainArgs {
                    reason,
                    wait,
                    timeout,
                    end,
                },
                cli.output == Output::Json,
            )
            .await
        }
        Command::Config(ConfigCmd::Show) => {
            let (file, flags) = settings;
            let shown = config::show(&Cli::command(), &file, &flags);
            if cli.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                if let Some(p) = &file.path {
                    println!("# config file: {}", p.display());
                }
                for s in &shown {
                    println!(
                        "{:<32} {:<48} {:?}",
                        s.setting,
                        s.value.as_deref().unwrap_or("-"),
                        s.source
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Backlog => {
            let c = client(&conn, "cli").await?;
            commands::backlog(&c, cli.output == Output::Json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lakes(cmd) => {
            let store = open_store(&cli.database_url, cli.connect_timeout).await?;
            commands::lakes(
                store.as_ref(),
                &cli.results_dir,
                cmd,
                cli.output == Output::Json,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit {
            hunt,
            owner,
            priority,
            idempotency_key,
            max_attempts,
        } => {
            if cli.url.is_some() && owner.is_some() {
                anyhow::bail!(
                    "--owner (or SLUICE_OWNER) does not apply with --url: jobs belong to the token's owner"
                );
            }
            let c = client(&conn, owner.as_deref().unwrap_or("cli")).await?;
            let req = sluice_api::wire::SubmitRequest {
                hunt: serde_json::to_value(hunt.spec()?)?,
                priority,
                max_attempts: Some(max_attempts),
            };
            commands::submit(
                &c,
                &req,
                idempotency_key.as_deref(),
                cli.output == Output::Json,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { hunt } => {
            let c = client(&conn, "cli").await?;
            let req = sluice_api::wire::SubmitRequest {
                hunt: serde_json::to_value(hunt.spec()?)?,
                priority: 0,
                max_attempts: None,
            };
            commands::validate(&c, &req, cli.output == Output::Json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Results {
            job,
            format,
            limit,
            offset,
        } => {
            let c = client(&conn, "cli").await?;
            commands::results(&c, job, format, offset, limit as usize).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    use clap::FromArgMatches;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // A hunt runner started by a worker: nothing of the CLI (no configuration file, no
    // runtime of its own) before it has put its limits on itself.
    if args
        .get(1)
        .is_some_and(|a| a == sluice_engine::isolate::RUNNER_VERB)
    {
        init_logs(LogFormat::Pretty, "warn");
        let config = args.get(2).and_then(|a| a.to_str()).unwrap_or("");
        return ExitCode::from(
            u8::try_from(sluice_engine::isolate::runner_main(config)).unwrap_or(2),
        );
    }
    // Before anything else: the file's settings become environment defaults for clap.
    let file = match config::load(&args, &Cli::command()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let matches = Cli::command().get_matches_from(&args);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // Global settings given as flags, for `sluice config show`.
    let mut flags = std::collections::BTreeMap::new();
    for a in Cli::command().get_arguments() {
        if let Some(env) = a.get_env()
            && matches.value_source(a.get_id().as_str())
                == Some(clap::parser::ValueSource::CommandLine)
            && let Some(v) = matches
                .get_raw(a.get_id().as_str())
                .and_then(|mut v| v.next())
        {
            flags.insert(
                env.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            );
        }
    }
    // The demo tells its own story on stdout; its logs (RUST_LOG) are for debugging it.
    let default_logs = match cli.command {
        Command::Demo(_) => "error",
        _ => "info,sqlx=warn",
    };
    init_logs(cli.log_format, default_logs);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, (file, flags))) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_or_explain() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("30", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
        }
        for bad in [
            "",
            "s",
            "-5s",
            "1.5s",
            "3d",
            "99999999999999999999s",
            "200h",
            "5 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
