//! Hunt isolation: tasks run in *runner* processes that a worker starts, keeps warm and
//! supervises, so one researcher's query can end its own task but never the worker, the API
//! or anyone else's task (ADR 0010).
//!
//! - **Hard limits, set by the runner on itself before it reads a task**: `RLIMIT_DATA`
//!   (memory: DataFusion's pool does not see what scalar functions allocate, and arrow aborts
//!   the process when an allocation fails), `RLIMIT_CPU` per task, `RLIMIT_NOFILE`,
//!   `RLIMIT_FSIZE` (results), no core dumps, the kernel's out-of-memory killer pointed at it,
//!   and SIGKILL when the worker dies.
//! - **The worker keeps time**: a task past its timeout is SIGKILLed whatever it computes.
//! - **A death is read, not guessed**: an abort after `memory allocation of … failed` is the
//!   memory limit, SIGXCPU the CPU limit, SIGXFSZ the result limit — each a permanent, named
//!   failure; any other death is a crash ([`EngineError::Crashed`]), which the worker retries
//!   once at most.
//! - **Provider calls still pass the worker's gate**: a runner's [`CallGate`] and S3
//!   credential provider are clients of its worker over the runner's pipes, so budgets,
//!   breakers, the single probe and the one credential cache per scope stay the worker's.
//! - **CPU is shared by owner**: a runner's threads get a nice value from how many tasks its
//!   task's owner is running in this worker, so an owner's many tasks weigh less than another
//!   owner's one ([`nice_for`]).
//!
//! The wire is one JSON object per line over the runner's stdin and stdout; its stderr is the
//! runner's log, kept (the last lines) to read a death by.

use crate::engine::{Engine, EngineConfig, ScanOutputs, ScanRun, TaskOutput, TaskRun};
use crate::s3::{CredentialSource, Credentials};
use crate::{EngineError, sys};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_core::{CallClass, CallGate, Permit, Refusal};
use sluice_core::{human_bytes, human_duration};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// What a runner needs to know, handed to it as JSON when it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerConfig {
    pub results_dir: PathBuf,
    /// DataFusion's memory pool for one task.
    pub memory_limit: usize,
    /// The process's memory limit above the pool: the runtime, caches and thread stacks.
    pub headroom: usize,
    pub cpu_threads: usize,
    pub target_partitions: usize,
    pub list_ttl: Duration,
    /// The task timeout (the worker kills at it; the runner's CPU limit follows from it).
    pub timeout: Duration,
    pub max_result_rows: u64,
    pub max_result_bytes: u64,
    /// The runner's cache of lake bytes (its memory limit grows by as much).
    #[serde(default)]
    pub byte_cache_bytes: u64,
    pub max_open_files: u64,
    /// The worker's pid: a runner whose parent is already another process exits at once.
    pub parent: u32,
}

impl RunnerConfig {
    /// A runner with the limits of `cfg` (the worker's engine configuration).
    pub fn from_engine(cfg: &EngineConfig) -> std::io::Result<Self> {
        Ok(RunnerConfig {
            results_dir: std::fs::canonicalize(&cfg.results_dir)?,
            memory_limit: cfg.memory_limit,
            headroom: DEFAULT_HEADROOM,
            cpu_threads: cfg.cpu_threads,
            target_partitions: cfg.target_partitions,
            list_ttl: cfg.list_ttl,
            timeout: cfg.timeout,
            max_result_rows: cfg.max_result_rows,
            max_result_bytes: cfg.max_result_bytes,
            byte_cache_bytes: cfg.byte_cache_bytes,
            max_open_files: 1024,
            parent: std::process::id(),
        })
    }

    /// The runner's `RLIMIT_DATA`.
    pub fn data_limit(&self) -> u64 {
        (self.memory_limit as u64)
            .saturating_add(self.headroom as u64)
            .saturating_add(self.byte_cache_bytes)
    }

    /// CPU seconds one task may use: every plan thread busy for the whole timeout, and a
    /// little more — the worker's wall clock stops a task first; this catches a runner whose
    /// worker cannot.
    fn cpu_budget(&self) -> u64 {
        self.timeout
            .as_secs()
            .saturating_add(1)
            .saturating_mul(self.cpu_threads.max(1) as u64 + 1)
            .saturating_add(5)
    }
}

/// Memory a runner may use beyond its task's pool (measured: an idle runner's `VmData` is
/// about 60 MiB with two plan threads; a scan's buffers and caches need the rest).
pub const DEFAULT_HEADROOM: usize = 256 << 20;

/// Worker → runner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum ToRunner {
    Run {
        id: u64,
        task: Box<TaskRun>,
    },
    /// A shared scan (ADR 0014).
    Scan {
        id: u64,
        scan: Box<ScanRun>,
    },
    Admitted {
        rid: u64,
        result: Result<Permit, Refusal>,
    },
    Creds {
        rid: u64,
        result: Result<Credentials, EngineError>,
    },
}

/// Runner → worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum FromRunner {
    Ready,
    /// The runner has the task and starts it: a death from now on is the task's.
    Started {
        id: u64,
    },
    Admit {
        rid: u64,
        scope: String,
    },
    Report {
        scope: String,
        permit: Permit,
        class: CallClass,
    },
    Creds {
        rid: u64,
        scope: String,
        options: BTreeMap<String, String>,
    },
    Done {
        id: u64,
        result: Result<TaskOutput, EngineError>,
        #[serde(default)]
        metrics: crate::metrics::Delta,
    },
    Scanned {
        id: u64,
        result: Result<ScanOutputs, EngineError>,
        #[serde(default)]
        metrics: crate::metrics::Delta,
    },
}

/// What a runner was asked to do.
#[derive(Debug)]
enum Work {
    Task(TaskRun),
    Scan(ScanRun),
}

impl Work {
    fn lake(&self) -> &crate::engine::LakeRef {
        match self {
            Work::Task(t) => &t.lake,
            Work::Scan(s) => &s.lake,
        }
    }
}

/// A run's end as the worker's side reads it: each task's outcome (one for a task), or the
/// error that ended them all.
type Answer = Result<ScanOutputs, EngineError>;

/// Longest line either side accepts: a task (its lake's schema) or a result is far smaller.
const MAX_LINE: usize = 16 << 20;

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at the end of the stream.
async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<()>> {
    buf.clear();
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if buf.is_empty() { None } else { Some(()) });
        }
        if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&chunk[..i]);
            r.consume(i + 1);
            return Ok(Some(()));
        }
        let n = chunk.len();
        buf.extend_from_slice(chunk);
        r.consume(n);
        if buf.len() > MAX_LINE {
            return Err(std::io::Error::other("line too long"));
        }
    }
}

fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

// ---------------------------------------------------------------------------------------------
// The runner's side.

/// The runner's gate and credential provider: questions to its worker over the pipe.
#[derive(Debug)]
struct Remote {
    out: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<ToRunner>>>,
    next: AtomicU64,
}

impl Remote {
    async fn ask(&self, make: impl FnOnce(u64) -> FromRunner) -> Option<ToRunner> {
        let rid = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rid, tx);
        if self.out.send(encode(&make(rid))).is_err() {
            return None;
        }
        rx.await.ok()
    }

    fn answer(&self, rid: u64, msg: ToRunner) {
        let tx = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&rid);
        if let Some(tx) = tx {
            let _ = tx.send(msg);
        }
    }
}

#[async_trait]
impl CallGate for Remote {
    async fn admit(&self, scope: &str) -> Result<Permit, Refusal> {
        let scope = scope.to_string();
        match self
            .ask(|rid| FromRunner::Admit {
                rid,
                scope: scope.clone(),
            })
            .await
        {
            Some(ToRunner::Admitted { result, .. }) => result,
            _ => Err(Refusal::Unavailable(
                "the worker's provider gate did not answer".into(),
            )),
        }
    }

    async fn report(&self, scope: &str, permit: Permit, class: CallClass) {
        let _ = self.out.send(encode(&FromRunner::Report {
            scope: scope.to_string(),
            permit,
            class,
        }));
    }
}

#[async_trait]
impl CredentialSource for Remote {
    async fn credentials(
        &self,
        scope: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Credentials, EngineError> {
        match self
            .ask(|rid| FromRunner::Creds {
                rid,
                scope: scope.to_string(),
                options: options.clone(),
            })
            .await
        {
            Some(ToRunner::Creds { result, .. }) => result,
            _ => Err(EngineError::Transient(
                "the worker did not answer for credentials".into(),
            )),
        }
    }
}

/// The exit status of a runner that failed for its own reasons (its configuration, its
/// limits, its pipe) — not the hunt's: the task is handed back, no attempt spent.
pub const RUNNER_FAILED: i32 = 70;

/// A runner process's `main`: applies its limits, then runs the tasks its worker sends, one
/// at a time, until its stdin closes. Returns the process's exit code.
pub fn runner_main(config_json: &str) -> i32 {
    let cfg: RunnerConfig = match serde_json::from_str(config_json) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice runner: bad configuration: {e}");
            return RUNNER_FAILED;
        }
    };
    // Die with the worker; if it is already gone, do not start.
    if let Err(e) = sys::die_with_parent() {
        eprintln!("sluice runner: cannot tie this process to its worker: {e}");
        return RUNNER_FAILED;
    }
    if std::os::unix::process::parent_id() != cfg.parent {
        return 0;
    }
    sys::prefer_oom_kill();
    let limits = [
        (sys::Limit::Core, 0, 0),
        (sys::Limit::Data, cfg.data_limit(), cfg.data_limit()),
        (
            sys::Limit::OpenFiles,
            cfg.max_open_files,
            cfg.max_open_files,
        ),
        // Results are compressed below their in-memory cap; a file past it is not ours.
        (
            sys::Limit::FileSize,
            cfg.max_result_bytes.saturating_add(64 << 20),
            cfg.max_result_bytes.saturating_add(64 << 20),
        ),
    ];
    for (limit, soft, hard) in limits {
        if let Err(e) = sys::set_limit(limit, soft, hard) {
            eprintln!("sluice runner: cannot set {limit:?} to {soft}: {e}");
            return RUNNER_FAILED;
        }
    }
    // Nothing writable beyond the results folder (Landlock, where the kernel has it).
    match sys::confine_writes(&cfg.results_dir) {
        Ok(sys::Confined::Fully | sys::Confined::Partly) => {}
        Ok(sys::Confined::Not) => {
            eprintln!(
                "sluice runner: no Landlock on this kernel: file writes are confined by the engine's sandbox only"
            );
        }
        Err(e) => {
            eprintln!("sluice runner: cannot confine its file writes: {e}");
            return RUNNER_FAILED;
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice runner: cannot start its runtime: {e}");
            return RUNNER_FAILED;
        }
    };
    rt.block_on(serve(cfg))
}

async fn serve(cfg: RunnerConfig) -> i32 {
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let remote = Arc::new(Remote {
        out: out_tx.clone(),
        pending: Mutex::new(HashMap::new()),
        next: AtomicU64::new(1),
    });
    let mut ecfg = EngineConfig::new(&cfg.results_dir);
    ecfg.memory_limit = cfg.memory_limit;
    ecfg.cpu_threads = cfg.cpu_threads;
    ecfg.target_partitions = cfg.target_partitions;
    ecfg.list_ttl = cfg.list_ttl;
    // The worker kills at the timeout; the runner's own clock is a backstop only.
    ecfg.timeout = cfg.timeout + Duration::from_secs(5);
    ecfg.max_result_rows = cfg.max_result_rows;
    ecfg.max_result_bytes = cfg.max_result_bytes;
    ecfg.byte_cache_bytes = cfg.byte_cache_bytes;
    let engine = match Engine::new(ecfg) {
        Ok(e) => Arc::new(
            e.with_gate(remote.clone())
                .with_credential_source(remote.clone()),
        ),
        Err(e) => {
            eprintln!("sluice runner: cannot start the query engine: {e}");
            return RUNNER_FAILED;
        }
    };
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    // DataFusion's first plan in a process pays for its one-time set-up (function registry,
    // lazily built tables): pay it before saying ready, not in the first task.
    engine.warm_up().await;
    let _ = out_tx.send(encode(&FromRunner::Ready));
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut buf = Vec::new();
    let mut busy: Option<tokio::task::JoinHandle<()>> = None;
    let code = loop {
        match read_line(&mut stdin, &mut buf).await {
            Ok(Some(())) => {}
            Ok(None) => break 0,
            Err(e) => {
                eprintln!("sluice runner: reading from the worker: {e}");
                break RUNNER_FAILED;
            }
        }
        let msg: ToRunner = match serde_json::from_slice(&buf) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("sluice runner: a message it does not understand: {e}");
                break RUNNER_FAILED;
            }
        };
        let (id, work) = match msg {
            ToRunner::Run { id, task } => (id, Work::Task(*task)),
            ToRunner::Scan { id, scan } => (id, Work::Scan(*scan)),
            ToRunner::Admitted { rid, .. } | ToRunner::Creds { rid, .. } => {
                remote.answer(rid, msg);
                continue;
            }
        };
        match start(&cfg, &engine, &out_tx, id, work, busy.as_ref()) {
            Some(b) => busy = Some(b),
            None => break RUNNER_FAILED,
        }
    };
    drop(out_tx);
    drop(remote);
    writer.abort();
    code
}

/// Starts `work` in the runner; `None` when the runner cannot go on (it was sent a second
/// run while one runs, or cannot set its CPU limit).
fn start(
    cfg: &RunnerConfig,
    engine: &Arc<Engine>,
    out: &mpsc::UnboundedSender<Vec<u8>>,
    id: u64,
    work: Work,
    busy: Option<&tokio::task::JoinHandle<()>>,
) -> Option<tokio::task::JoinHandle<()>> {
    if busy.is_some_and(|b| !b.is_finished()) {
        eprintln!("sluice runner: a second task while one runs");
        return None;
    }
    // This task's CPU seconds, on top of what the runner used so far: the soft limit (SIGXCPU
    // ends the process), moved per task below an unchanged hard limit — raising a hard limit
    // needs a privilege a runner does not have.
    let budget = sys::cpu_seconds_used().saturating_add(cfg.cpu_budget());
    if let Err(e) = sys::set_soft_limit(sys::Limit::Cpu, budget) {
        eprintln!("sluice runner: cannot set its CPU limit: {e}");
        return None;
    }
    let _ = out.send(encode(&FromRunner::Started { id }));
    let (engine, out) = (engine.clone(), out.clone());
    Some(tokio::spawn(async move {
        use futures::FutureExt;
        let before = crate::metrics::Delta::now();
        // A panic ends the task with an answer, not with a silent runner.
        let panicked = |p: Box<dyn std::any::Any + Send>| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            EngineError::Transient(format!("the hunt panicked: {what}"))
        };
        let cancel = CancellationToken::new();
        let msg = match work {
            Work::Task(task) => {
                let result = std::panic::AssertUnwindSafe(engine.run(task, cancel))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|p| Err(panicked(p)));
                let metrics = crate::metrics::Delta::now().since(before);
                FromRunner::Done {
                    id,
                    result,
                    metrics,
                }
            }
            Work::Scan(scan) => {
                let result = std::panic::AssertUnwindSafe(engine.scan(scan, cancel))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|p| Err(panicked(p)));
                let metrics = crate::metrics::Delta::now().since(before);
                FromRunner::Scanned {
                    id,
                    result,
                    metrics,
                }
            }
        };
        let _ = out.send(encode(&msg));
    }))
}

// ---------------------------------------------------------------------------------------------
// The worker's side.

/// The verb a runner is started with (`PROGRAM __runner CONFIG-JSON`): internal, not in any
/// `--help`; the binary hands it to [`runner_main`] before anything else.
pub const RUNNER_VERB: &str = "__runner";

/// How a worker starts and keeps its runners.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The program that starts a runner with [`RUNNER_VERB`] and the runner's configuration.
    pub program: PathBuf,
    pub runner: RunnerConfig,
    /// Idle runners kept warm; more are started when all are busy, and stopped when done.
    pub max_idle: usize,
}

/// One runner process and the tasks that talk to it.
#[derive(Debug)]
struct Proc {
    child: tokio::process::Child,
    pid: u32,
    to: mpsc::UnboundedSender<Vec<u8>>,
    done: mpsc::UnboundedReceiver<(u64, Answer)>,
    /// The last lines of its stderr; complete once `stderr_eof` fires.
    tail: Arc<Mutex<VecDeque<String>>>,
    stderr_eof: Option<oneshot::Receiver<()>>,
    /// Lakes this runner read, and when: its caches hold their listing and footers for the
    /// listing TTL, so a task of one of them costs no LIST and no footer read there.
    seen: HashMap<String, std::time::Instant>,
    nice: i32,
    /// What the runner is working for: the id it last acknowledged, and the one provider
    /// scope its gate and credential questions may name.
    task: Arc<Mutex<RunnerTask>>,
}

/// The task a runner works on, as the worker's side of its pipe knows it.
#[derive(Debug, Default)]
struct RunnerTask {
    started: Option<u64>,
    scope: Option<String>,
    /// The task's lake's options: the only ones its credentials are fetched with (a runner
    /// runs researchers' SQL; what it sends is never trusted to name a role or an endpoint).
    options: BTreeMap<String, String>,
}

/// A runner's end, as a worker tells it.
fn death_of(
    status: Option<std::process::ExitStatus>,
    tail: &[String],
    cfg: &RunnerConfig,
) -> EngineError {
    use std::os::unix::process::ExitStatusExt;
    let last = tail
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string());
    let mentions = |s: &str| tail.iter().any(|l| l.contains(s));
    let Some(status) = status else {
        return EngineError::Crashed(
            "the hunt's runner vanished (its exit status is unknown)".into(),
        );
    };
    match status.signal() {
        Some(sys::SIGABRT) if mentions("memory allocation of") => EngineError::Limit(format!(
            "the hunt needed more than {} of memory",
            human_bytes(cfg.memory_limit as u64)
        )),
        Some(sys::SIGXCPU) => EngineError::Limit(format!(
            "the hunt used more CPU time than its limit ({}s for a {} task)",
            cfg.cpu_budget(),
            human_duration(cfg.timeout)
        )),
        Some(sys::SIGXFSZ) => EngineError::Limit(format!(
            "the hunt's results passed the file size limit of {}",
            human_bytes(cfg.max_result_bytes)
        )),
        Some(sig) => {
            let why = match (sig, &last) {
                (sys::SIGKILL, _) => {
                    " — killed from outside, e.g. by the kernel's out-of-memory killer".to_string()
                }
                (_, Some(l)) => format!(": {}", cut(l, 200)),
                _ => String::new(),
            };
            EngineError::Crashed(format!(
                "the hunt crashed its runner (signal {sig}, {}){why}",
                sys::signal_name(sig)
            ))
        }
        None if status.code() == Some(RUNNER_FAILED) => EngineError::Refused {
            reason: format!(
                "the hunt runner failed{}",
                last.map(|l| format!(": {}", cut(&l, 200)))
                    .unwrap_or_default()
            ),
            retry_after: Duration::from_secs(5),
        },
        None => EngineError::Crashed(format!(
            "the hunt's runner exited with status {}{}",
            status.code().unwrap_or(-1),
            last.map(|l| format!(": {}", cut(&l, 200)))
                .unwrap_or_default()
        )),
    }
}

fn cut(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The nice value of a task whose owner runs `k` tasks in this worker. CFS weighs nice `n`
/// about 1.25^-n, so `2 log1.25 k` weighs each of the k tasks 1/k² of a lone task, and all k
/// together 1/k: the owner with fewer tasks running gets the larger share of the CPU. Beside
/// a sweep of 16 tasks (nice 19), one task of a small hunt gets ~80 % of a core where an even
/// split per owner would give it half (twice as slow as alone); two sweeps of equal size
/// still share evenly. It is shortest-job-first by owner, as a researcher waiting for a
/// 3-lake answer behind a 5,000-lake sweep expects.
pub fn nice_for(k: usize) -> i32 {
    if k <= 1 {
        return 0;
    }
    (2.0 * (k as f64).ln() / 1.25f64.ln())
        .round()
        .clamp(0.0, 19.0) as i32
}

/// How to run one task in a runner pool.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions<'a> {
    /// Whose task it is: CPU is shared by owner.
    pub owner: &'a str,
    /// In a runner of its own, started for it and stopped after (a task that crashed a
    /// runner before).
    pub fresh: bool,
    /// The task ran before (a timeout that barely got the CPU is retried once only).
    pub retried: bool,
}

/// Per owner, the runners running its tasks (pid → nice).
type Owners = HashMap<String, HashMap<u32, i32>>;

/// A worker's runners: started on demand, kept warm, killed at a timeout or a cancel,
/// replaced when they die.
#[derive(Debug)]
pub struct RunnerPool {
    cfg: PoolConfig,
    /// The worker's engine: its gate and credential providers serve every runner.
    engine: Arc<Engine>,
    idle: Mutex<Vec<Proc>>,
    owners: Mutex<Owners>,
    next: AtomicU64,
}

impl RunnerPool {
    pub fn new(cfg: PoolConfig, engine: Arc<Engine>) -> Self {
        crate::metrics::init();
        let worst = (cfg.max_idle as u64).saturating_mul(cfg.runner.data_limit());
        if let Some(limit) = sys::container_memory_limit()
            && worst > limit
        {
            warn!(
                slots = cfg.max_idle,
                per_runner = %human_bytes(cfg.runner.data_limit()),
                container = %human_bytes(limit),
                "the slots' runners may together use more memory than this container may: the container's limit would end the worker with them; lower --concurrency or --task-memory-mib"
            );
        }
        RunnerPool {
            cfg,
            engine,
            idle: Mutex::new(Vec::new()),
            owners: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// The worker's engine (its gate and credential providers serve every runner).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Starts up to `n` runners ahead of the first tasks (a worker starts with warm runners);
    /// returns how many are idle and ready.
    pub async fn prewarm(&self, n: usize) -> usize {
        let want = n.min(self.cfg.max_idle);
        let have = self.idle.lock().unwrap_or_else(|p| p.into_inner()).len();
        let started = futures::future::join_all((have..want).map(|_| self.spawn())).await;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        for p in started.into_iter().flatten() {
            if idle.len() < self.cfg.max_idle {
                idle.push(p);
            }
        }
        idle.len()
    }

    /// Starts a runner and waits for it to say it is ready.
    async fn spawn(&self) -> Result<Proc, EngineError> {
        let config = serde_json::to_string(&self.cfg.runner)
            .map_err(|e| EngineError::Io(format!("runner configuration: {e}")))?;
        let mut cmd = tokio::process::Command::new(&self.cfg.program);
        cmd.arg(RUNNER_VERB)
            .arg(config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            // Nothing of the worker's environment (database URLs, tokens, cloud secrets)
            // reaches a process that runs researchers' SQL; credentials come over the pipe.
            .env_clear();
        for (k, v) in std::env::vars_os() {
            let Some(name) = k.to_str() else { continue };
            if passes_to_runner(name) {
                cmd.env(&k, v);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let started = std::time::Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            not_started(format!(
                "starting a hunt runner ({}): {e}",
                self.cfg.program.display()
            ))
        })?;
        let pid = child.id().unwrap_or(0);
        let (stdin, stdout, stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => return Err(not_started("a hunt runner without pipes".into())),
            };
        // stderr: the runner's log, and the last lines to read its death by.
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (eof_tx, eof_rx) = oneshot::channel();
        {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(stderr);
                let mut buf = Vec::new();
                while let Ok(Some(())) = read_line(&mut r, &mut buf).await {
                    let line = cut(&String::from_utf8_lossy(&buf), 1000);
                    warn!(runner = pid, "{line}");
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if t.len() >= 32 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
                let _ = eof_tx.send(());
            });
        }
        // stdin: one writer task.
        let (to, mut to_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            let mut stdin = stdin;
            while let Some(line) = to_rx.recv().await {
                if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
        });
        // stdout: questions to answer, and the task's end.
        let (done_tx, done) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let task = Arc::new(Mutex::new(RunnerTask::default()));
        tokio::spawn(serve_runner(
            pid,
            stdout,
            to.clone(),
            done_tx,
            ready_tx,
            self.engine.clone(),
            task.clone(),
        ));
        let mut proc = Proc {
            child,
            pid,
            to,
            done,
            tail,
            stderr_eof: Some(eof_rx),
            seen: HashMap::new(),
            nice: 0,
            task,
        };
        match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
            Ok(Ok(())) => {
                crate::metrics::RUNNERS_STARTED.inc();
                crate::metrics::RUNNER_START_SECONDS.observe(started.elapsed().as_secs_f64());
                debug!(
                    runner = pid,
                    secs = started.elapsed().as_secs_f64(),
                    "hunt runner started"
                );
                Ok(proc)
            }
            _ => {
                let e = self.death(&mut proc).await;
                Err(not_started(format!("a hunt runner did not start: {e}")))
            }
        }
    }

    /// Waits for a runner that ended (or is being killed) and says why it ended.
    async fn death(&self, p: &mut Proc) -> EngineError {
        let status = tokio::time::timeout(Duration::from_secs(5), p.child.wait())
            .await
            .ok()
            .and_then(|s| s.ok());
        if let Some(eof) = p.stderr_eof.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), eof).await;
        }
        let tail: Vec<String> = p
            .tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        death_of(status, &tail, &self.cfg.runner)
    }

    async fn kill(&self, p: &mut Proc) {
        let _ = p.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), p.child.wait()).await;
        crate::metrics::RUNNERS_KILLED.inc();
    }

    /// An idle runner for a task of `lake` at nice `nice`, or a new one. Prefers one whose
    /// caches hold the lake (no LIST, no footer reads: provider calls saved), the most recent
    /// reader first, then one that may run at that nice value.
    async fn take(&self, lake: &str, nice: i32, fresh: bool) -> Result<Proc, EngineError> {
        if !fresh {
            let ttl = self.cfg.runner.list_ttl;
            let picked = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let score = |p: &Proc| {
                    let read = p.seen.get(lake).filter(|at| at.elapsed() < ttl);
                    (read.is_some(), p.nice <= nice, read.copied())
                };
                let best = (0..idle.len()).max_by_key(|&i| score(&idle[i]));
                best.map(|i| idle.swap_remove(i))
            };
            if let Some(mut p) = picked {
                if p.child.try_wait().ok().flatten().is_none() {
                    return Ok(p);
                }
                let e = self.death(&mut p).await;
                warn!(runner = p.pid, error = %e, "an idle hunt runner had ended");
            }
        }
        self.spawn().await
    }

    /// Returns a runner to the idle set, or stops it when enough are idle or it has grown.
    async fn give_back(&self, p: Proc) {
        let grown = sys::data_bytes(p.pid).is_some_and(|b| {
            b > self.cfg.runner.data_limit() / 2 + (self.cfg.runner.headroom as u64) / 2
        });
        let p = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.cfg.max_idle && !grown {
                idle.push(p);
                None
            } else {
                Some(p)
            }
        };
        let Some(mut p) = p else { return };
        if grown {
            debug!(runner = p.pid, "hunt runner recycled: its memory grew");
        }
        self.kill(&mut p).await;
    }

    /// Gives `p` the nice value of a task of `owner`, and raises the owner's other runners to
    /// it. Returns false when `p` cannot be lowered to it (no privilege): use a fresh runner.
    fn prioritize(&self, owner: &str, p: &mut Proc) -> bool {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let mine = owners.entry(owner.to_string()).or_default();
        let target = nice_for(mine.len() + 1);
        if p.nice != target {
            if let Err(e) = sys::renice(p.pid, target) {
                debug!(runner = p.pid, from = p.nice, to = target, error = %e, "cannot renice a runner");
                if target < p.nice {
                    return false;
                }
            } else {
                p.nice = target;
            }
        }
        for (pid, nice) in mine.iter_mut() {
            if *nice < target && sys::renice(*pid, target).is_ok() {
                *nice = target;
            }
        }
        mine.insert(p.pid, p.nice);
        true
    }

    /// The runner `pid` no longer works for `owner`; returns the nice value it was given
    /// meanwhile (others of the owner's tasks may have raised it).
    fn release(&self, owner: &str, pid: u32) -> Option<i32> {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let mine = owners.get_mut(owner)?;
        let nice = mine.remove(&pid);
        if mine.is_empty() {
            owners.remove(owner);
        }
        nice
    }

    /// Runs one task in a runner.
    pub async fn run(
        &self,
        task: TaskRun,
        how: RunOptions<'_>,
        cancel: CancellationToken,
    ) -> Result<TaskOutput, EngineError> {
        let mut outputs = self.run_work(Work::Task(task), how, cancel).await?;
        match (outputs.pop(), outputs.is_empty()) {
            (Some(one), true) => one,
            _ => Err(EngineError::Transient(
                "the hunt runner answered a task with other than one outcome".into(),
            )),
        }
    }

    /// Runs a shared scan in a runner: one outcome per member, in member order.
    pub async fn scan(
        &self,
        scan: ScanRun,
        how: RunOptions<'_>,
        cancel: CancellationToken,
    ) -> Result<ScanOutputs, EngineError> {
        let members = scan.members.len();
        let outputs = self.run_work(Work::Scan(scan), how, cancel).await?;
        if outputs.len() != members {
            return Err(EngineError::Transient(format!(
                "the hunt runner answered a scan of {members} tasks with {} outcomes",
                outputs.len()
            )));
        }
        Ok(outputs)
    }

    async fn run_work(&self, work: Work, how: RunOptions<'_>, cancel: CancellationToken) -> Answer {
        let RunOptions {
            owner,
            fresh,
            retried,
        } = how;
        let lake = work.lake().name.clone();
        let target = {
            let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
            nice_for(owners.get(owner).map_or(0, |m| m.len()) + 1)
        };
        let mut p = tokio::select! {
            _ = cancel.cancelled() => return Err(EngineError::Cancelled),
            p = self.take(&lake, target, fresh) => p?,
        };
        if !self.prioritize(owner, &mut p) {
            self.kill(&mut p).await;
            p = self.spawn().await?;
            self.prioritize(owner, &mut p);
        }
        let pid = p.pid;
        let result = self.run_on(&mut p, work, retried, cancel).await;
        if let Some(nice) = self.release(owner, pid) {
            p.nice = p.nice.max(nice);
        }
        // A runner that hit a limit, crashed or was stopped is not kept (nor a fresh one: it
        // ran a suspect); any other is kept warm.
        let spent_by = |e: &EngineError| {
            matches!(
                e,
                EngineError::Limit(_) | EngineError::Crashed(_) | EngineError::Cancelled
            )
        };
        let spent = match &result {
            Err(e) => spent_by(e),
            Ok(outputs) => outputs.iter().any(|o| o.as_ref().is_err_and(spent_by)),
        };
        let alive = p.child.try_wait().ok().flatten().is_none();
        if !fresh && !spent && alive {
            if p.seen.len() >= 4096 {
                // Bounded: forget what the caches have dropped by now anyway.
                let ttl = self.cfg.runner.list_ttl;
                p.seen.retain(|_, at| at.elapsed() < ttl);
                if p.seen.len() >= 4096 {
                    p.seen.clear();
                }
            }
            p.seen.insert(lake, std::time::Instant::now());
            self.give_back(p).await;
        } else if alive {
            self.kill(&mut p).await;
        }
        result
    }

    async fn run_on(
        &self,
        p: &mut Proc,
        work: Work,
        retried: bool,
        cancel: CancellationToken,
    ) -> Answer {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let timeout = self.cfg.runner.timeout;
        {
            let mut t = p.task.lock().unwrap_or_else(|p| p.into_inner());
            t.started = None;
            t.scope = Some(work.lake().scope.clone());
            t.options = work.lake().options.clone();
        }
        // The last lines of stderr say why a runner died: this task's lines, not an earlier one's.
        p.tail.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let cpu_before = sys::cpu_seconds_of(p.pid).unwrap_or(0.0);
        let msg = match work {
            Work::Task(task) => ToRunner::Run {
                id,
                task: Box::new(task),
            },
            Work::Scan(scan) => ToRunner::Scan {
                id,
                scan: Box::new(scan),
            },
        };
        if p.to.send(encode(&msg)).is_err() {
            let e = self.death(p).await;
            return Err(not_started(format!(
                "the hunt runner was gone before its task: {e}"
            )));
        }
        tokio::select! {
            done = p.done.recv() => match done {
                Some((got, result)) if got == id => result,
                Some((got, _)) => {
                    self.kill(p).await;
                    Err(EngineError::Transient(format!("the hunt runner answered task {got} for {id}")))
                }
                None => {
                    let e = self.death(p).await;
                    let started = p.task.lock().unwrap_or_else(|p| p.into_inner()).started == Some(id);
                    if !started {
                        // It died before it had the task: not the task's doing.
                        return Err(not_started(format!("the hunt runner ended before it started the task: {e}")));
                    }
                    crate::metrics::RUNNER_DEATHS.with_label_values(&[death_label(&e)]).inc();
                    info!(runner = p.pid, error = %e, "hunt runner died");
                    Err(e)
                }
            },
            _ = cancel.cancelled() => {
                self.kill(p).await;
                Err(EngineError::Cancelled)
            }
            _ = tokio::time::sleep(timeout) => {
                let cpu = sys::cpu_seconds_of(p.pid).unwrap_or(0.0) - cpu_before;
                self.kill(p).await;
                crate::metrics::RUNNER_DEATHS.with_label_values(&["timeout"]).inc();
                Err(timed_out(timeout, cpu, retried))
            }
        }
    }
}

/// A runner that could not be started is the worker's problem, not the task's: the task is
/// handed back without spending an attempt (and the log says why).
fn not_started(reason: String) -> EngineError {
    warn!(error = %reason, "hunt runner not started");
    EngineError::Refused {
        reason,
        retry_after: Duration::from_secs(5),
    }
}

/// What a run killed at its timeout means: the hunt's cost when it computed for a good part
/// of that time (the same hunt would again: permanent), the machine's when it barely got the
/// CPU (an overloaded worker: worth another attempt).
fn timed_out(timeout: Duration, cpu_secs: f64, retried: bool) -> EngineError {
    let limit = human_duration(timeout);
    // Once only: a hunt that is starved twice fails rather than wait out every attempt.
    if retried || cpu_secs >= timeout.as_secs_f64() / 4.0 {
        EngineError::Limit(format!("the hunt ran longer than its limit of {limit}"))
    } else {
        EngineError::Transient(format!(
            "the hunt ran longer than its limit of {limit} but computed for only {cpu_secs:.1}s of it (the worker was overloaded, or the lake slow to answer): tried again"
        ))
    }
}

fn death_label(e: &EngineError) -> &'static str {
    match e {
        EngineError::Limit(m) if m.contains("memory") => "memory",
        EngineError::Limit(m) if m.contains("CPU") => "cpu",
        EngineError::Limit(_) => "limit",
        _ => "crash",
    }
}

/// Environment variables a runner inherits — an allow-list: logging, locale, time zone,
/// proxies and CA certificates (to reach the provider), and the S3 settings that are not
/// credentials. Never credentials, database URLs or tokens.
fn passes_to_runner(name: &str) -> bool {
    const PASS: [&str; 22] = [
        "RUST_LOG",
        "RUST_BACKTRACE",
        "TZ",
        "LANG",
        "LC_ALL",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ALLOW_HTTP",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
    ];
    PASS.contains(&name)
}

/// Reads a runner's stdout: answers its gate and credential questions with the worker's own
/// gate and providers, and hands its task's end to the waiting run. When the runner ends,
/// a probe it was granted and never reported is reported lost, so the breaker lets another go.
async fn serve_runner(
    pid: u32,
    stdout: tokio::process::ChildStdout,
    to: mpsc::UnboundedSender<Vec<u8>>,
    done: mpsc::UnboundedSender<(u64, Answer)>,
    ready: oneshot::Sender<()>,
    engine: Arc<Engine>,
    task: Arc<Mutex<RunnerTask>>,
) {
    let gate = engine.gate();
    // Probes granted and not yet answered, per scope; `None` once the runner has ended (a
    // probe granted after that is reported lost at once).
    let probes: Arc<Mutex<Option<HashMap<String, u32>>>> =
        Arc::new(Mutex::new(Some(HashMap::new())));
    // A runner asks only for its task's scope: anything else is refused (and logged).
    let allowed = {
        let task = task.clone();
        move |scope: &str| {
            task.lock()
                .unwrap_or_else(|p| p.into_inner())
                .scope
                .as_deref()
                == Some(scope)
        }
    };
    let mut ready = Some(ready);
    let mut r = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        match read_line(&mut r, &mut buf).await {
            Ok(Some(())) => {}
            Ok(None) => break,
            Err(e) => {
                warn!(runner = pid, error = %e, "unreadable output from a hunt runner");
                break;
            }
        }
        let msg: FromRunner = match serde_json::from_slice(&buf) {
            Ok(m) => m,
            Err(e) => {
                warn!(runner = pid, error = %e, "a message from a hunt runner it does not understand");
                break;
            }
        };
        match msg {
            FromRunner::Ready => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            FromRunner::Started { id } => {
                task.lock().unwrap_or_else(|p| p.into_inner()).started = Some(id);
            }
            FromRunner::Admit { rid, scope } => {
                if !allowed(&scope) {
                    warn!(
                        runner = pid,
                        scope, "a hunt runner asked for a scope not its task's"
                    );
                    let result = Err(Refusal::Unavailable(format!(
                        "scope {scope} is not this task's"
                    )));
                    let _ = to.send(encode(&ToRunner::Admitted { rid, result }));
                    continue;
                }
                let (gate, to, probes) = (gate.clone(), to.clone(), probes.clone());
                tokio::spawn(async move {
                    let result = gate.admit(&scope).await;
                    if matches!(result, Ok(Permit { probe: true })) {
                        let late = {
                            let mut p = probes.lock().unwrap_or_else(|p| p.into_inner());
                            match p.as_mut() {
                                Some(m) => {
                                    *m.entry(scope.clone()).or_default() += 1;
                                    false
                                }
                                None => true,
                            }
                        };
                        if late {
                            // The runner ended while its probe was being granted.
                            gate.report(&scope, Permit { probe: true }, CallClass::Transient)
                                .await;
                        }
                    }
                    let _ = to.send(encode(&ToRunner::Admitted { rid, result }));
                });
            }
            FromRunner::Report {
                scope,
                permit,
                class,
            } => {
                if permit.probe {
                    let mut p = probes.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(n) = p.as_mut().and_then(|m| m.get_mut(&scope)) {
                        *n = n.saturating_sub(1);
                    }
                }
                let gate = gate.clone();
                tokio::spawn(async move { gate.report(&scope, permit, class).await });
            }
            FromRunner::Creds {
                rid,
                scope,
                options,
            } => {
                if !allowed(&scope) {
                    warn!(
                        runner = pid,
                        scope, "a hunt runner asked for credentials of a scope not its task's"
                    );
                    let result = Err(EngineError::User(format!(
                        "scope {scope} is not this task's"
                    )));
                    let _ = to.send(encode(&ToRunner::Creds { rid, result }));
                    continue;
                }
                // The task's lake's own options, whatever the runner sent: a runner naming
                // another role or STS endpoint would have the worker sign for it.
                let own = task
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .options
                    .clone();
                if options.iter().any(|(k, v)| own.get(k) != Some(v)) {
                    warn!(
                        runner = pid,
                        scope, "a hunt runner asked for credentials with options not its lake's"
                    );
                }
                let (engine, to) = (engine.clone(), to.clone());
                tokio::spawn(async move {
                    // Classified: a role refused is the lake's mistake, a throttled STS the
                    // provider's (no attempt spent), wherever the runner meets it.
                    let result = engine.credentials(&scope, &own).await;
                    let _ = to.send(encode(&ToRunner::Creds { rid, result }));
                });
            }
            FromRunner::Done {
                id,
                result,
                metrics,
            } => {
                metrics.apply();
                let _ = done.send((id, Ok(vec![result])));
            }
            FromRunner::Scanned {
                id,
                result,
                metrics,
            } => {
                metrics.apply();
                let _ = done.send((id, result));
            }
        }
    }
    let lost: Vec<(String, u32)> = probes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    for (scope, n) in lost {
        for _ in 0..n {
            gate.report(&scope, Permit { probe: true }, CallClass::Transient)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn cfg() -> RunnerConfig {
        RunnerConfig {
            results_dir: "/tmp".into(),
            memory_limit: 512 << 20,
            headroom: DEFAULT_HEADROOM,
            cpu_threads: 2,
            target_partitions: 2,
            list_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            max_result_rows: 10,
            max_result_bytes: 1 << 20,
            byte_cache_bytes: 0,
            max_open_files: 64,
            parent: 1,
        }
    }

    #[test]
    fn a_runner_death_is_named_by_its_cause() {
        // (exit status as wait(2) gives it, stderr tail, expected variant, text it contains)
        let sig = |s: i32| std::process::ExitStatus::from_raw(s);
        let code = |c: i32| std::process::ExitStatus::from_raw(c << 8);
        let cases: Vec<(Option<std::process::ExitStatus>, Vec<&str>, bool, &str)> = vec![
            (
                Some(sig(sys::SIGABRT)),
                vec!["memory allocation of 1920000000000 bytes failed"],
                true,
                "needed more than 512 MiB of memory",
            ),
            (Some(sig(sys::SIGXCPU)), vec![], true, "CPU time"),
            (
                Some(sig(sys::SIGXFSZ)),
                vec![],
                true,
                "file size limit of 1 MiB",
            ),
            (
                Some(sig(sys::SIGABRT)),
                vec![
                    "thread 'x' has overflowed its stack",
                    "fatal runtime error: stack overflow",
                ],
                false,
                "crashed its runner (signal 6, SIGABRT): fatal runtime error: stack overflow",
            ),
            (
                Some(sig(sys::SIGKILL)),
                vec![],
                false,
                "signal 9, SIGKILL) — killed from outside",
            ),
            (Some(sig(11)), vec![], false, "signal 11, SIGSEGV"),
            (
                Some(code(3)),
                vec!["boom"],
                false,
                "exited with status 3: boom",
            ),
            (None, vec![], false, "vanished"),
        ];
        // The runner's own failure is not the hunt's: handed back, no attempt.
        let own = death_of(
            Some(code(RUNNER_FAILED)),
            &["sluice runner: cannot set its CPU limit".to_string()],
            &cfg(),
        );
        assert!(
            matches!(own, EngineError::Refused { ref reason, .. } if reason.contains("cannot set")),
            "{own:?}"
        );
        for (status, tail, limit, text) in cases {
            let tail: Vec<String> = tail.into_iter().map(String::from).collect();
            let e = death_of(status, &tail, &cfg());
            match (&e, limit) {
                (EngineError::Limit(m), true) | (EngineError::Crashed(m), false) => {
                    assert!(m.contains(text), "{status:?}: {m}")
                }
                _ => panic!("{status:?} {tail:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn a_timeout_is_the_hunts_when_it_computed_and_the_machines_when_it_waited() {
        let t = Duration::from_secs(60);
        assert!(
            matches!(timed_out(t, 59.0, false), EngineError::Limit(ref m) if m.contains("limit of 1m"))
        );
        assert!(matches!(timed_out(t, 15.0, false), EngineError::Limit(_)));
        assert!(matches!(timed_out(t, 2.0, true), EngineError::Limit(_)));
        assert!(
            matches!(timed_out(t, 2.0, false), EngineError::Transient(ref m) if m.contains("only 2.0s"))
        );
    }

    #[test]
    fn an_owner_with_more_tasks_runs_them_nicer() {
        assert_eq!(nice_for(0), 0);
        assert_eq!(nice_for(1), 0);
        assert_eq!(nice_for(2), 6);
        assert_eq!(nice_for(4), 12);
        assert_eq!(nice_for(16), 19);
        assert_eq!(nice_for(10_000), 19);
        // An owner's k tasks weigh about 1/k of a lone task (1.25^-nice × k ≈ 1/k) until nice
        // reaches its floor at 19; never more than a lone task.
        for k in 2..=7usize {
            let weight = k as f64 * 1.25f64.powi(-nice_for(k));
            assert!(
                (0.8 / k as f64..=1.25 / k as f64).contains(&weight),
                "k={k}: {weight}"
            );
        }
        for k in 2..=64usize {
            assert!(k as f64 * 1.25f64.powi(-nice_for(k)) < 1.0, "k={k}");
        }
    }

    #[test]
    fn no_secret_reaches_a_runner() {
        for (name, passes) in [
            ("RUST_LOG", true),
            ("AWS_REGION", true),
            ("AWS_ENDPOINT_URL", true),
            ("AWS_ACCESS_KEY_ID", false),
            ("AWS_SECRET_ACCESS_KEY", false),
            ("AWS_SESSION_TOKEN", false),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", false),
            ("AWS_TOKEN", false),
            ("AWS_SECURITY_TOKEN", false),
            ("AWS_SHARED_CREDENTIALS_FILE", false),
            ("AWS_PROFILE", false),
            ("HTTPS_PROXY", true),
            ("SSL_CERT_FILE", true),
            ("SLUICE_DATABASE_URL", false),
            ("SLUICE_TOKEN", false),
            ("DATABASE_URL", false),
            ("PGPASSWORD", false),
            ("HOME", false),
        ] {
            assert_eq!(passes_to_runner(name), passes, "{name}");
        }
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let long = vec![b'x'; MAX_LINE + 10];
        let mut r = BufReader::new(&long[..]);
        let mut buf = Vec::new();
        assert!(read_line(&mut r, &mut buf).await.is_err());
        let two = b"{\"a\":1}\n{\"b\":2}".to_vec();
        let mut r = BufReader::new(&two[..]);
        assert!(read_line(&mut r, &mut buf).await.expect("line").is_some());
        assert_eq!(buf, b"{\"a\":1}");
        assert!(read_line(&mut r, &mut buf).await.expect("line").is_some());
        assert_eq!(buf, b"{\"b\":2}");
        assert!(read_line(&mut r, &mut buf).await.expect("eof").is_none());
    }
}
