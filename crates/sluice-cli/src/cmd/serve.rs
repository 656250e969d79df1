//! The long-running verbs: `worker`, `scheduler`, `server` (API + scheduler + worker slots)
//! and `migrate`; their metrics listener and signal handling.

use crate::ctx::{Ctx, Output};
use anyhow::{Context, Result};
use sluice_core::SystemClock;
use sluice_hunt as hunts;
use sluice_scheduler::{RescuerConfig, Scheduler, SchedulerConfig};
use sluice_store::Store;
use sluice_worker::{Worker, WorkerConfig};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A scheduler that removes result files with their jobs, if it can reach the results store;
/// if not, it still rescues and rebalances (stopping those for want of a folder would be
/// worse), removes rows only, and says so (the files are swept once a leader can reach them).
fn with_results(s: Scheduler, ctx: &Ctx) -> Scheduler {
    match sluice_engine::results_store(&ctx.engine_config()) {
        Ok(r) => s.with_results(Arc::new(hunts::StoredResults::new(r))),
        Err(e) => {
            tracing::error!(error = %e, "cannot open the results store: retention will remove finished jobs' rows but not their result files");
            s
        }
    }
}

/// A scheduler that also runs recurring hunts, making their jobs as the API does.
fn with_schedules(
    s: Scheduler,
    store: &Arc<dyn Store>,
    engine: Arc<sluice_engine::Engine>,
) -> Scheduler {
    let api = hunts::api(store.clone(), engine, sluice_api::ApiConfig::default());
    s.with_schedules(Arc::new(hunts::ScheduledHunts { api }))
}

/// `sluice migrate`: applies the migrations (also done at every start-up).
pub async fn migrate(ctx: &Ctx) -> Result<ExitCode> {
    let store = ctx.store("migrate").await?;
    println!("migrations applied ({})", store.backend());
    Ok(ExitCode::SUCCESS)
}

impl WorkerArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        self.election.check()?;
        let store = ctx.store("worker").await?;
        let stop = CancellationToken::new();
        on_signals(stop.clone())?;
        // Metrics stay up while the worker drains, and stop when it has.
        let metrics_stop = serve_metrics(self.metrics_listen, &store, &stop).await?;
        let engine = worker_engine(&store, ctx, &self)?;
        let stats = run_worker(store, engine, &self, stop).await?;
        metrics_stop.cancel();
        print_stats(ctx.output, Some(stats));
        Ok(ExitCode::SUCCESS)
    }
}

impl SchedulerArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        // Settings are checked before anything is opened.
        let id = self.id.unwrap_or_else(sluice_worker::default_worker_id);
        let cfg = self
            .election
            .config(id, self.rescue_every.max(Duration::from_millis(100)))?;
        let store = ctx.store("scheduler").await?;
        let stop = CancellationToken::new();
        on_signals(stop.clone())?;
        let metrics_stop = serve_metrics(self.metrics_listen, &store, &stop).await?;
        let scheduler = with_results(
            Scheduler::new(store.clone(), Arc::new(SystemClock), cfg),
            ctx,
        );
        with_schedules(scheduler, &store, ctx.engine()?)
            .run(stop)
            .await;
        metrics_stop.cancel();
        Ok(ExitCode::SUCCESS)
    }
}

impl ServerArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        if self.header_timeout.is_zero() || self.request_timeout.is_zero() {
            anyhow::bail!("--header-timeout and --request-timeout must be more than 0");
        }
        self.worker.election.check()?;
        let store = ctx.store("server").await?;
        let stop = CancellationToken::new();
        on_signals(stop.clone())?;
        // One engine: the slots run hunts on it and the API reads results with it (without
        // slots it only reads results).
        let engine = if self.slots {
            worker_engine(&store, ctx, &self.worker)?
        } else {
            ctx.engine()?
        };
        let api = hunts::api(
            store.clone(),
            engine.clone(),
            sluice_api::ApiConfig {
                max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
                max_backlog_tasks: self.max_backlog_tasks,
                // With --metrics-listen the metrics are served there only.
                metrics: self.worker.metrics_listen.is_none(),
                priority: sluice_core::PriorityCeiling {
                    researcher: self.researcher_max_priority,
                },
                // A long poll answers before the server's own deadline cuts it off.
                max_wait: self.request_timeout.mul_f64(0.8),
                webhooks: self.worker.election.webhooks(),
                // Long polls take at most a quarter of the connections.
                max_waiting: (self.max_connections as usize / 4).max(1),
            },
        );
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("binding the API listener {}", self.listen))?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(self.listen), "serving the API");
        // The API stops taking requests at the first signal; the worker then drains.
        let api_stop = stop.clone();
        let limits = sluice_api::ServeConfig {
            max_connections: self.max_connections as usize,
            header_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
        };
        let server = tokio::spawn(async move {
            sluice_api::serve(listener, sluice_api::router(api), limits, async move {
                api_stop.cancelled().await
            })
            .await
        });
        let metrics_stop = serve_metrics(self.worker.metrics_listen, &store, &stop).await?;
        let stats = if self.slots {
            Some(run_worker(store, engine, &self.worker, stop.clone()).await?)
        } else {
            // No task slots: still a scheduler candidate unless told otherwise.
            let id = self
                .worker
                .id
                .clone()
                .unwrap_or_else(sluice_worker::default_worker_id);
            let scheduler = if self.worker.scheduler {
                let cfg = self.worker.election.config(id, Duration::from_secs(5))?;
                let scheduler = with_results(
                    Scheduler::new(store.clone(), Arc::new(SystemClock), cfg),
                    ctx,
                );
                Some(tokio::spawn(
                    with_schedules(scheduler, &store, engine.clone()).run(stop.clone()),
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
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "API server task failed");
        }
        print_stats(ctx.output, stats);
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ElectionArgs {
    /// The scheduler leader's lease: a standby takes over at most this long after the leader
    /// stops renewing it (crash, SIGKILL, lost database).
    #[arg(long, env = "SLUICE_LEADER_TTL", default_value = "15s", value_parser = crate::parse_duration)]
    leader_ttl: Duration,
    /// How long finished jobs are kept (their tasks, journal and result objects) unless a job
    /// says otherwise; `0` (the default): kept. The elected leader removes them: give every
    /// scheduler candidate the same value.
    #[arg(long, env = "SLUICE_RETENTION", default_value = "0", value_parser = crate::parse_retention)]
    retention: Duration,
    /// How often the leader removes finished jobs past their retention.
    #[arg(long, env = "SLUICE_CLEAN_EVERY", default_value = "1m", value_parser = crate::parse_duration)]
    clean_every: Duration,
    /// Sign webhook deliveries with this secret (at least 16 characters; receivers verify
    /// `Sluice-Signature` with it). Without it, no webhooks are sent and jobs naming one are
    /// refused. Give every server and scheduler candidate the same value.
    #[arg(long, env = "SLUICE_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Call http:// webhooks too (default: https only).
    #[arg(long, env = "SLUICE_WEBHOOK_ALLOW_HTTP")]
    webhook_allow_http: bool,
    /// Call webhooks on loopback, private and link-local addresses too (default: public
    /// addresses only, so a job cannot reach the metadata service or the internal network).
    #[arg(long, env = "SLUICE_WEBHOOK_ALLOW_PRIVATE")]
    webhook_allow_private: bool,
}

impl ElectionArgs {
    fn check(&self) -> Result<()> {
        if self.leader_ttl < Duration::from_millis(300) {
            anyhow::bail!("--leader-ttl must be at least 300ms");
        }
        if self
            .webhook_secret
            .as_ref()
            .is_some_and(|s| s.trim().chars().count() < 16)
        {
            anyhow::bail!(
                "--webhook-secret (SLUICE_WEBHOOK_SECRET) must be at least 16 characters"
            );
        }
        Ok(())
    }

    /// Which webhooks jobs may name: `None` without a secret (none are sent).
    fn webhooks(&self) -> Option<sluice_api::Webhooks> {
        let secret = self.webhook_secret.as_deref()?;
        Some(sluice_api::Webhooks {
            rules: sluice_core::WebhookRules {
                allow_http: self.webhook_allow_http,
                allow_private: self.webhook_allow_private,
            },
            secret: sluice_core::WebhookSecret::new(secret.trim().as_bytes()),
        })
    }

    fn config(&self, holder: String, rescue_every: Duration) -> Result<SchedulerConfig> {
        self.check()?;
        let mut cfg = SchedulerConfig::new(holder);
        cfg.ttl = self.leader_ttl;
        cfg.rescue = RescuerConfig {
            every: rescue_every,
            ..Default::default()
        };
        cfg.clean.retention = (!self.retention.is_zero()).then_some(self.retention);
        cfg.clean.every = self.clean_every.max(Duration::from_secs(1));
        if let Some(w) = self.webhooks() {
            cfg.notify.secret = Some(w.secret);
            cfg.notify.rules = w.rules;
        }
        Ok(cfg)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    election: ElectionArgs,
    /// This process's id in the election (default: host-pid-random).
    #[arg(long, env = "SLUICE_SCHEDULER_ID")]
    id: Option<String>,
    /// How often the leader rescues expired leases.
    #[arg(long, env = "SLUICE_RESCUE_EVERY", default_value = "5s", value_parser = crate::parse_duration)]
    rescue_every: Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9465).
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
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
    /// Most tasks of one lake a run answers together (a shared scan, ADR 0014): with each
    /// lake it claims, a worker takes along other jobs' pending tasks of that lake, and IOC
    /// hunts among them are answered by one read of the lake. 1: every task alone.
    #[arg(long, env = "SLUICE_WORKER_SHARE_SCAN", default_value_t = sluice_worker::DEFAULT_SHARE, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    share_scan: u32,
    /// Lease length: a task whose worker stops heartbeating is rescued this long after.
    #[arg(long, env = "SLUICE_WORKER_LEASE", default_value = "30s", value_parser = crate::parse_duration)]
    lease: Duration,
    /// How long running tasks may take to finish after SIGTERM before they are handed back.
    #[arg(long, env = "SLUICE_WORKER_SHUTDOWN_GRACE", default_value = "20s", value_parser = crate::parse_duration)]
    shutdown_grace: Duration,
    /// Wait between claims when nothing is runnable.
    #[arg(long, env = "SLUICE_WORKER_IDLE_POLL", default_value = "500ms", value_parser = crate::parse_duration)]
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
    #[arg(long, env = "SLUICE_TASK_TIMEOUT", default_value = "10m", value_parser = crate::parse_duration)]
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
    #[arg(long, env = "SLUICE_LAKE_LIST_TTL", default_value = "5m", value_parser = crate::parse_duration)]
    lake_list_ttl: Duration,
    /// Lake bytes each hunt runner keeps in memory for the next hunt over the same files, in
    /// MiB (0: none). A runner's memory limit grows by as much.
    #[arg(long, env = "SLUICE_BYTE_CACHE_MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    byte_cache_mib: u64,
    /// Threads that run query plans (a runtime separate from the one that talks to the database).
    #[arg(long, env = "SLUICE_CPU_THREADS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    cpu_threads: u32,
    #[command(flatten)]
    guard: crate::cmd::provider::GuardArgs,
}

impl WorkerArgs {
    fn spare_slots(&self) -> usize {
        self.spare_slots
            .unwrap_or_else(|| self.concurrency.div_ceil(8)) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
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
    ctx: &Ctx,
    args: &WorkerArgs,
) -> Result<Arc<sluice_engine::Engine>> {
    let mut ecfg = ctx.engine_config();
    ecfg.timeout = args.task_timeout;
    ecfg.memory_limit = usize::try_from(args.task_memory_mib << 20).unwrap_or(usize::MAX);
    ecfg.cpu_threads = args.cpu_threads as usize;
    ecfg.list_ttl = args.lake_list_ttl;
    ecfg.max_result_rows = args.task_result_rows;
    ecfg.max_result_bytes = args.task_result_mib << 20;
    ecfg.byte_cache_bytes = args.byte_cache_mib << 20;
    let guard: Arc<dyn sluice_core::CallGate> = match args.guard.provider_guard {
        crate::cmd::provider::GuardMode::On => Arc::new(sluice_worker::ProviderGuard::new(
            store.clone(),
            Arc::new(SystemClock),
            args.guard.config()?,
        )),
        crate::cmd::provider::GuardMode::Off => {
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
    cfg.share = args.share_scan;
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
        )
        .with_results(Arc::new(hunts::StoredResults::new(engine.results_store())));
        let s = with_schedules(s, &store, engine.clone());
        Some(tokio::spawn(s.run(stop.clone())))
    } else {
        None
    };
    // Runners stage results in the results folder; kept elsewhere, the worker uploads them.
    let upload = engine
        .config()
        .results_url
        .is_some()
        .then(|| (engine.config().results_dir.clone(), engine.results_store()));
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
    let mut runner = hunts::HuntRunner::with(store.clone(), exec);
    if let Some((staging, to)) = upload {
        let staging = std::fs::canonicalize(&staging)
            .with_context(|| format!("the results staging folder {}", staging.display()))?;
        runner = runner.with_upload(staging, to);
    }
    let runner = Arc::new(runner);
    let worker = Worker::new(store.clone(), runner, clock, cfg);
    let stats = worker.run(stop.clone()).await;
    if let Some(s) = scheduler {
        stop.cancel();
        let _ = s.await;
    }
    Ok(stats)
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Where the HTTP API listens (also serves /metrics, /healthz, /readyz).
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Largest request body accepted, in bytes (413 beyond).
    #[arg(long, env = "SLUICE_API_MAX_BODY_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..=(64 << 20)))]
    max_body_bytes: u64,
    /// Submissions get 503 + Retry-After while this many lakes of open jobs are unfinished.
    #[arg(long, env = "SLUICE_API_MAX_BACKLOG", value_parser = clap::value_parser!(i64).range(1..))]
    max_backlog_tasks: Option<i64>,
    /// The highest priority a researcher's token may give a job (operators and admins may set
    /// any, and re-prioritise any job with `sluice priority`).
    #[arg(long, env = "SLUICE_API_RESEARCHER_MAX_PRIORITY", default_value_t = sluice_core::access::DEFAULT_RESEARCHER_MAX_PRIORITY,
          value_parser = clap::value_parser!(i32).range(-100..=100), allow_negative_numbers = true)]
    researcher_max_priority: i32,
    /// Connections the API keeps open at once; more wait to be accepted (so slow or idle
    /// clients cannot take every file descriptor of the process).
    #[arg(long, env = "SLUICE_API_MAX_CONNECTIONS", default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// A client must send a request's headers within this, or it is disconnected.
    #[arg(long, env = "SLUICE_API_HEADER_TIMEOUT", default_value = "10s",
        value_parser = crate::parse_duration)]
    header_timeout: Duration,
    /// Longest a request may take (503 past it).
    #[arg(long, env = "SLUICE_API_REQUEST_TIMEOUT", default_value = "60s",
        value_parser = crate::parse_duration)]
    request_timeout: Duration,
    /// Also run hunt tasks in this process (`false`: API and scheduler only).
    #[arg(long, env = "SLUICE_SERVER_SLOTS", default_value_t = true, action = clap::ArgAction::Set)]
    slots: bool,
    #[command(flatten)]
    worker: WorkerArgs,
}

/// Serves `/metrics` (Prometheus text format), `/healthz` (the process is up) and `/readyz`
/// (the database answers, its schema is current and the process is not `draining`) on `addr`,
/// when there is one, until the token it returns is cancelled.
async fn serve_metrics(
    addr: Option<std::net::SocketAddr>,
    store: &Arc<dyn Store>,
    draining: &CancellationToken,
) -> Result<CancellationToken> {
    use axum::http::StatusCode;
    use axum::http::header::CONTENT_TYPE;
    let stop = CancellationToken::new();
    let Some(addr) = addr else {
        return Ok(stop);
    };
    let (store, draining) = (store.clone(), draining.clone());
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
                    [(CONTENT_TYPE, sluice_metrics::CONTENT_TYPE)],
                    sluice_metrics::render(),
                )
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(ready));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics listener {addr}"))?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /metrics, /healthz and /readyz");
    // Prometheus and the probes: a few connections, short deadlines.
    let limits = sluice_api::ServeConfig {
        max_connections: 64,
        header_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
    };
    let stopped = stop.clone();
    tokio::spawn(async move {
        sluice_api::serve(
            listener,
            app,
            limits,
            async move { stopped.cancelled().await },
        )
        .await;
    });
    Ok(stop)
}

/// Cancels the token at the first SIGTERM or SIGINT; a second one exits at once.
pub(crate) fn on_signals(token: CancellationToken) -> Result<()> {
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
