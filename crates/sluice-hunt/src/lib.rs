//! Hunts end to end, where the store and the engine meet: planning a submission (select lakes,
//! validate, one task per lake; the API's [`sluice_api::Planner`]), running a task (the
//! worker's [`Runner`]), reading results (the API's [`sluice_api::ResultReader`]).

use async_trait::async_trait;
use sluice_core::JobId;
use sluice_engine::validate::{HuntError, validate};
use sluice_engine::{CompiledHunt, Engine, EngineError, HuntSpec, LakeRef, TaskRun};
use sluice_store::{
    ClaimedTask, JobInsertParams, Lake, LakeAccess, NewTask, Store, StoreError, StoreExt,
};
use sluice_worker::{BuiltinSpec, Member, RunError, RunOutput, Runner, run_builtin};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Provider calls a task is expected to make before caches warm up: one LIST, one footer per
/// file (3 daily files in the generated layout) and a few reads. Refined by the provider guard.
const EST_CALLS_PER_LAKE: i32 = 8;

/// How long a worker trusts its copy of a lake's registration.
const LAKE_TTL: Duration = Duration::from_secs(60);

pub fn lake_ref(l: &Lake) -> Result<LakeRef, EngineError> {
    Ok(LakeRef {
        id: l.id,
        name: l.name.clone(),
        url: l.url.clone(),
        scope: l.scope.clone(),
        partition_cols: l.partition_cols.clone(),
        schema: sluice_engine::schema_from_json(&l.schema)?,
        options: l.options.clone(),
    })
}

/// What a hunt flow step can fail with, besides a refused plan or a task's outcome.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("encoding the hunt: {0}")]
    Json(#[from] serde_json::Error),
    #[error("encoding results: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("encoding results: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
}

type Result<T, E = FlowError> = std::result::Result<T, E>;

/// A hunt checked and ready to become a job.
#[derive(Debug)]
pub struct Plan {
    pub compiled: CompiledHunt,
    pub lakes: Vec<Lake>,
    pub est_calls: i64,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<HuntError>),
    #[error("no registered lake matches the selector")]
    NoLakes,
    /// The checks could not run now (too many at once): try again.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Selects the lakes (of those open to `access`), validates the hunt against their schema,
/// estimates the cost. Nothing is written and no lake is read. A lake closed to `access` is
/// treated as unregistered, even when named.
pub async fn plan(
    store: &dyn Store,
    spec: &HuntSpec,
    access: &LakeAccess,
) -> Result<Plan, PlanError> {
    let lakes: Vec<Lake> = store
        .lake_list()
        .await?
        .into_iter()
        .filter(|l| access.allows(&l.tags) && spec.lakes().matches(&l.name, &l.tags))
        .collect();
    let Some(first) = lakes.first() else {
        return Err(PlanError::NoLakes);
    };
    // Every selected lake must have the schema the hunt is checked against.
    if let Some(other) = lakes
        .iter()
        .find(|l| l.schema != first.schema || l.partition_cols != first.partition_cols)
    {
        return Err(PlanError::Invalid(vec![HuntError {
            line: 0,
            column: 0,
            message: format!(
                "lakes {} and {} have different schemas: select one kind of lake per hunt",
                first.name, other.name
            ),
            hint: None,
        }]));
    }
    let schema = sluice_engine::schema_from_json(&first.schema)
        .map_err(|e| PlanError::Invalid(vec![plain(e)]))?;
    let compiled = validate(spec, &schema, &first.partition_cols)
        .await
        .map_err(|errors| {
            if sluice_engine::validate::is_busy(&errors) {
                PlanError::Busy(errors[0].message.clone())
            } else {
                PlanError::Invalid(errors)
            }
        })?;
    let est_calls = lakes.len() as i64 * i64::from(EST_CALLS_PER_LAKE);
    Ok(Plan {
        compiled,
        lakes,
        est_calls,
    })
}

fn plain(e: EngineError) -> HuntError {
    HuntError::plain(e.to_string())
}

/// The API over `store`, planning hunts and reading results with `engine`.
pub fn api(
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    cfg: sluice_api::ApiConfig,
) -> sluice_api::Api {
    sluice_api::Api {
        store: store.clone(),
        planner: Arc::new(HuntPlanner {
            store: store.clone(),
        }),
        results: Arc::new(EngineResults { store, engine }),
        cfg,
    }
}

/// Recurring hunts' jobs for the elected scheduler, made by the API's own submission path
/// (the same checks and plan as `POST /v1/jobs`).
#[derive(Debug)]
pub struct ScheduledHunts {
    pub api: sluice_api::Api,
}

#[async_trait]
impl sluice_scheduler::ScheduleRunner for ScheduledHunts {
    async fn run(
        &self,
        schedule: &sluice_store::Schedule,
        first: chrono::DateTime<chrono::Utc>,
        last: chrono::DateTime<chrono::Utc>,
    ) -> Result<sluice_core::JobId, sluice_scheduler::RunError> {
        use sluice_scheduler::RunError;
        sluice_api::run_schedule(&self.api, schedule, first, last)
            .await
            .map_err(|e| {
                if e.is_transient() {
                    RunError::Unavailable(e.detail())
                } else {
                    RunError::Refused(e.detail())
                }
            })
    }
}

/// The API's planner: a submitted hunt (JSON) checked and planned like `sluice submit` does.
#[derive(Debug)]
pub struct HuntPlanner {
    pub store: Arc<dyn Store>,
}

#[async_trait]
impl sluice_api::Planner for HuntPlanner {
    async fn plan(
        &self,
        hunt: &serde_json::Value,
        access: &LakeAccess,
    ) -> Result<sluice_api::Planned, sluice_api::Rejection> {
        use sluice_api::Rejection;
        let invalid = |message: String| Rejection::Invalid(vec![HuntError::plain(message)]);
        let spec: HuntSpec =
            serde_json::from_value(hunt.clone()).map_err(|e| invalid(format!("hunt: {e}")))?;
        let p = plan(self.store.as_ref(), &spec, access)
            .await
            .map_err(|e| match e {
                PlanError::Invalid(errors) => Rejection::Invalid(errors),
                PlanError::NoLakes => Rejection::NoLakes,
                PlanError::Busy(m) => Rejection::Busy(m),
                PlanError::Store(e) => Rejection::Store(e),
            })?;
        // The owner and submission options are the API's to fill in.
        let sub = Submission {
            owner: "api".into(),
            idempotency_key: None,
            priority: 0,
            max_attempts: 1,
        };
        let params = job_params(&spec, &p, &sub).map_err(|e| invalid(e.to_string()))?;
        Ok(sluice_api::Planned {
            spec: params.spec,
            sql: params.sql,
            tasks: params.tasks,
            est_calls: p.est_calls,
        })
    }
}

/// The API's result reader: the job's committed result objects, read with the engine.
#[derive(Debug)]
pub struct EngineResults {
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
}

#[async_trait]
impl sluice_api::ResultReader for EngineResults {
    async fn page(
        &self,
        job: &sluice_store::Job,
        access: &LakeAccess,
        format: sluice_api::ResultFormat,
        offset: usize,
        limit: usize,
    ) -> Result<sluice_api::ResultPage, String> {
        let keys = result_keys(self.store.as_ref(), job.id, access)
            .await
            .map_err(|e| e.to_string())?;
        let (batches, truncated) = self
            .engine
            .results_page(&keys, offset, limit)
            .await
            .map_err(|e| e.to_string())?;
        Ok(sluice_api::ResultPage {
            rows: batches.iter().map(|b| b.num_rows()).sum(),
            body: encode(&batches, format).map_err(|e| e.to_string())?,
            truncated,
        })
    }

    async fn remove(&self, job: JobId) -> Result<u64, String> {
        use sluice_scheduler::ResultObjects;
        StoredResults::new(self.engine.results_store())
            .remove_job(job)
            .await
    }
}

/// Result rows as JSON (an array of objects), CSV (with a header) or Parquet.
pub fn encode(
    batches: &[datafusion::arrow::record_batch::RecordBatch],
    format: sluice_api::ResultFormat,
) -> Result<Vec<u8>> {
    use sluice_api::ResultFormat as F;
    let mut out = Vec::new();
    match format {
        F::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut out);
            let refs: Vec<&datafusion::arrow::record_batch::RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            // An empty writer writes `[]` itself on finish.
            w.finish()?;
        }
        F::Csv => {
            let mut w = datafusion::arrow::csv::Writer::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
        }
        F::Parquet => {
            if let Some(first) = batches.first() {
                let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(
                    &mut out,
                    first.schema(),
                    None,
                )?;
                for b in batches {
                    w.write(b)?;
                }
                w.close()?;
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct Submission {
    pub owner: String,
    pub idempotency_key: Option<String>,
    pub priority: i16,
    pub max_attempts: i32,
}

pub fn job_params(spec: &HuntSpec, plan: &Plan, sub: &Submission) -> Result<JobInsertParams> {
    Ok(JobInsertParams {
        owner: sub.owner.clone(),
        idempotency_key: sub.idempotency_key.clone(),
        spec: serde_json::to_value(spec)?,
        sql: Some(plan.compiled.sql.clone()),
        priority: sub.priority,
        max_attempts: sub.max_attempts,
        retention_secs: None,
        webhook: None,
        tasks: interleave_scopes(&plan.lakes)
            .into_iter()
            .map(|l| NewTask {
                lake: l.name.clone(),
                scope: l.scope.clone(),
                est_calls: EST_CALLS_PER_LAKE,
                shareable: matches!(spec, HuntSpec::Ioc { .. }),
            })
            .collect(),
        now: chrono::Utc::now(),
    })
}

/// The lakes in task order: round-robin across provider scopes (each scope's lakes keep
/// their order). Claims take a job's tasks in this order, so a job over many accounts keeps
/// every account busy instead of queueing all its workers behind one account's budget.
pub fn interleave_scopes(lakes: &[Lake]) -> Vec<&Lake> {
    let mut by_scope: Vec<(&str, std::collections::VecDeque<&Lake>)> = Vec::new();
    for l in lakes {
        match by_scope.iter_mut().find(|(s, _)| *s == l.scope) {
            Some((_, q)) => q.push_back(l),
            None => by_scope.push((&l.scope, [l].into())),
        }
    }
    let mut out = Vec::with_capacity(lakes.len());
    while out.len() < lakes.len() {
        for (_, q) in &mut by_scope {
            if let Some(l) = q.pop_front() {
                out.push(l);
            }
        }
    }
    out
}

/// The keys of a job's committed results, in task order.
/// The committed result objects of a job's succeeded tasks, in task order, of the lakes open
/// to `access`. For a limited token, a task's lake must still be the one it was planned
/// against: registered (a removed lake is closed) before the task was created (a lake
/// registered again under the name, maybe with other tags, is another lake).
pub async fn result_keys(
    store: &dyn Store,
    job: JobId,
    access: &LakeAccess,
) -> Result<Vec<String>> {
    let open: Option<HashMap<String, chrono::DateTime<chrono::Utc>>> = if access.is_all() {
        None
    } else {
        Some(
            store
                .lake_list()
                .await?
                .into_iter()
                .filter(|l| access.allows(&l.tags))
                .map(|l| (l.name, l.created_at))
                .collect(),
        )
    };
    let is_open = |t: &sluice_store::Task| match &open {
        None => true,
        Some(o) => o.get(&t.lake).is_some_and(|since| *since <= t.created_at),
    };
    Ok(store
        .task_list_all(job)
        .await?
        .into_iter()
        .filter(|t| t.state == sluice_core::TaskState::Succeeded && is_open(t))
        .filter_map(|t| t.result_uri)
        .collect())
}

/// What a job's spec asks a worker to do, read once per job.
#[derive(Debug)]
enum JobKind {
    Hunt(HuntSpec),
    Builtin(BuiltinSpec),
    /// Neither: the task fails permanently with this message.
    Unknown(String),
}

/// A job's kind, filled by the first run that needs it (concurrent runs wait for that one read).
type KindCell = Arc<tokio::sync::OnceCell<Arc<JobKind>>>;

/// Where a worker's hunts run.
#[derive(Debug)]
pub enum Executor {
    /// In runner processes with OS limits (the default; ADR 0010).
    Isolated(Arc<sluice_engine::isolate::RunnerPool>),
    /// In this process, on the worker's engine (`--isolation none`: tests and the in-process
    /// side of the isolation benchmarks).
    InProcess(Arc<Engine>),
}

/// The worker's runner: hunts run on the engine, the built-in kinds (noop, sleep) as
/// [`run_builtin`] does. Job specs and lakes are read once and cached.
#[derive(Debug)]
pub struct HuntRunner {
    store: Arc<dyn Store>,
    exec: Executor,
    /// Runners stage results in a local folder; with results kept elsewhere (`--results-url`)
    /// the worker uploads each committed file there.
    upload: Option<Upload>,
    /// Per job: what its tasks do, read once even when many of them start at the same moment.
    jobs: Mutex<HashMap<JobId, KindCell>>,
    /// Lakes by name, with when they were read: re-read after [`LAKE_TTL`] so a lake removed
    /// and registered again is picked up without a restart.
    lakes: Mutex<HashMap<String, (std::time::Instant, Arc<LakeRef>)>>,
}

impl HuntRunner {
    pub fn with(store: Arc<dyn Store>, exec: Executor) -> Self {
        HuntRunner {
            store,
            exec,
            upload: None,
            jobs: Mutex::default(),
            lakes: Mutex::default(),
        }
    }

    /// Results staged by runners in `staging` are uploaded to `to` (and removed here).
    pub fn with_upload(
        mut self,
        staging: std::path::PathBuf,
        to: Arc<dyn object_store::ObjectStore>,
    ) -> Self {
        self.upload = Some(Upload { staging, to });
        self
    }

    async fn kind(&self, job: JobId) -> Result<Arc<JobKind>, RunError> {
        let cell = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            if jobs.len() > 10_000 && !jobs.contains_key(&job) {
                jobs.clear();
            }
            jobs.entry(job).or_default().clone()
        };
        let kind = cell
            .get_or_try_init(|| async {
                let j = self.store.job_get(job).await.map_err(store_err)?;
                let kind = match serde_json::from_value::<HuntSpec>(j.spec.clone()) {
                    Ok(h) => JobKind::Hunt(h),
                    Err(_) => match serde_json::from_value::<BuiltinSpec>(j.spec) {
                        Ok(b) => JobKind::Builtin(b),
                        Err(e) => JobKind::Unknown(format!(
                            "job {job}: not a hunt or a task kind this worker runs: {e}"
                        )),
                    },
                };
                Ok::<_, RunError>(Arc::new(kind))
            })
            .await?;
        Ok(kind.clone())
    }

    async fn lake(&self, name: &str) -> Result<Arc<LakeRef>, RunError> {
        if let Some((at, l)) = self
            .lakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            && at.elapsed() < LAKE_TTL
        {
            return Ok(l.clone());
        }
        let lake = self.store.lake_get(name).await.map_err(store_err)?;
        let r = Arc::new(lake_ref(&lake).map_err(|e| RunError::Permanent(e.to_string()))?);
        self.lakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (std::time::Instant::now(), r.clone()));
        Ok(r)
    }
}

fn store_err(e: StoreError) -> RunError {
    match e {
        StoreError::NotFound(m) => RunError::Permanent(format!("not found: {m}")),
        other => RunError::Deferred {
            reason: format!("database: {other}"),
            retry_after: Duration::from_secs(1),
        },
    }
}

/// What an engine failure means for the task's attempts.
pub fn run_error(e: EngineError) -> RunError {
    match e {
        EngineError::User(m) | EngineError::Limit(m) => RunError::Permanent(m),
        EngineError::NotFound(m) => RunError::Permanent(format!("not found: {m}")),
        // Short: the scope's breaker, not the task's run_after, holds the scope back (claims
        // skip scopes whose breaker is open), so the task runs as soon as the scope may.
        EngineError::Throttled(m) => RunError::Deferred {
            reason: format!("provider throttled: {m}"),
            retry_after: Duration::from_secs(2),
        },
        EngineError::Frozen(m) => RunError::Deferred {
            reason: format!("provider account frozen: {m}"),
            retry_after: Duration::from_secs(2),
        },
        EngineError::Transient(m) | EngineError::Io(m) => RunError::Transient(m),
        EngineError::Refused {
            reason,
            retry_after,
        } => RunError::Deferred {
            reason,
            retry_after,
        },
        EngineError::Cancelled => RunError::Cancelled,
        EngineError::Crashed(m) => RunError::Crashed(m),
    }
}

#[async_trait]
impl Runner for HuntRunner {
    async fn run(
        &self,
        task: &ClaimedTask,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunError> {
        let kind = self.kind(task.job_id).await?;
        let spec = match kind.as_ref() {
            JobKind::Hunt(h) => h,
            JobKind::Builtin(b) => return run_builtin(b, task, cancel).await,
            JobKind::Unknown(m) => return Err(RunError::Permanent(m.clone())),
        };
        let lake = self.lake(&task.lake).await?;
        let hunt = sluice_engine::compile(spec, &lake.partition_cols)
            .map_err(|e| RunError::Permanent(e.to_string()))?;
        let run = TaskRun {
            job_id: task.job_id.0,
            task_id: task.id().0,
            token: task.lease.token.0,
            lake: lake.as_ref().clone(),
            hunt,
        };
        let out = match &self.exec {
            Executor::InProcess(engine) => engine.run(run, cancel).await,
            // A task that crashed a runner before runs in a runner of its own.
            Executor::Isolated(pool) => {
                let how = sluice_engine::isolate::RunOptions {
                    owner: &task.owner,
                    fresh: task.crashes > 0,
                    retried: task.attempt > 0,
                };
                pool.run(run, how, cancel).await
            }
        }
        .map_err(run_error)?;
        self.committed(task, out).await
    }

    fn held_scopes(&self) -> Vec<String> {
        // The worker's engine holds the roles, for itself and its runners alike.
        match &self.exec {
            Executor::InProcess(engine) => engine.held_scopes(),
            Executor::Isolated(pool) => pool.engine().held_scopes(),
        }
    }

    /// IOC hunts of one lake answer with one scan over the union of their indicators, each
    /// task keeping the rows its own hunt matches (ADR 0014); any other task runs alone, in
    /// order. A scan the runner could not finish (a limit, a crash) is run again task by
    /// task, so that sharing never changes what a task gets.
    async fn run_shared(&self, members: &[Member]) -> Vec<Result<RunOutput, RunError>> {
        let mut out: Vec<Option<Result<RunOutput, RunError>>> = vec![None; members.len()];
        // Scans of indicator hunts, as member indices; each scan within MAX_IOCS.
        let mut scans: Vec<(Vec<usize>, Vec<sluice_engine::hunt::IocSpec>, usize)> = Vec::new();
        let mut alone = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let ioc = match self.kind(m.task.job_id).await {
                Ok(kind) => match kind.as_ref() {
                    JobKind::Hunt(h) if m.task.crashes == 0 => sluice_engine::hunt::IocSpec::of(h),
                    _ => None,
                },
                Err(e) => {
                    out[i] = Some(Err(e));
                    continue;
                }
            };
            let Some(ioc) = ioc else {
                alone.push(i);
                continue;
            };
            let n = ioc.len();
            match scans
                .iter_mut()
                .find(|(_, _, total)| total + n <= sluice_core::hunt::MAX_IOCS)
            {
                Some((idx, specs, total)) => {
                    idx.push(i);
                    specs.push(ioc);
                    *total += n;
                }
                None => scans.push((vec![i], vec![ioc], n)),
            }
        }
        // In claim order: the run holding the first task claimed goes first.
        let mut units: Vec<(Vec<usize>, Vec<sluice_engine::hunt::IocSpec>)> = alone
            .into_iter()
            .map(|i| (vec![i], Vec::new()))
            .chain(scans.into_iter().map(|(idx, specs, _)| (idx, specs)))
            .collect();
        units.sort_by_key(|(idx, _)| idx[0]);
        for (idx, specs) in units {
            let picked: Vec<&Member> = idx.iter().map(|&i| &members[i]).collect();
            let results = if picked.len() > 1 {
                self.scan(&picked, &specs).await
            } else {
                self.each_alone(&picked).await
            };
            for (&i, r) in idx.iter().zip(results) {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or(Err(RunError::Cancelled)))
            .collect()
    }
}

impl HuntRunner {
    /// One scan answering `members` (IOC hunts of one lake, with their `specs`).
    async fn scan(
        &self,
        members: &[&Member],
        specs: &[sluice_engine::hunt::IocSpec],
    ) -> Vec<Result<RunOutput, RunError>> {
        let first = &members[0].task;
        let lake = match self.lake(&first.lake).await {
            Ok(l) => l,
            Err(e) => return vec![Err(e); members.len()],
        };
        let scan = sluice_engine::hunt::IocSpec::compile_shared(specs, &lake.partition_cols);
        let filters: Vec<Result<String, EngineError>> = specs
            .iter()
            .map(|s| s.predicate(&lake.partition_cols))
            .collect();
        let (Ok(hunt), true) = (scan, filters.iter().all(Result::is_ok)) else {
            // A hunt that does not compile fails on its own, as it would alone.
            return self.each_alone(members).await;
        };
        let run = sluice_engine::ScanRun {
            lake: lake.as_ref().clone(),
            hunt,
            members: members
                .iter()
                .zip(filters)
                .map(|(m, f)| sluice_engine::ScanMember {
                    job_id: m.task.job_id.0,
                    task_id: m.task.id().0,
                    token: m.task.lease.token.0,
                    filter: f.unwrap_or_default(),
                })
                .collect(),
        };
        // The scan stops when every member's run is stopped.
        let cancel = CancellationToken::new();
        let stopped = futures::future::join_all(members.iter().map(|m| m.cancel.cancelled()));
        let scanned = async {
            match &self.exec {
                Executor::InProcess(engine) => engine.scan(run, cancel.clone()).await,
                Executor::Isolated(pool) => {
                    let how = sluice_engine::isolate::RunOptions {
                        owner: &first.owner,
                        fresh: false,
                        retried: members.iter().any(|m| m.task.attempt > 0),
                    };
                    pool.scan(run, how, cancel.clone()).await
                }
            }
        };
        tokio::pin!(scanned);
        let outputs = tokio::select! {
            o = &mut scanned => o,
            _ = stopped => {
                cancel.cancel();
                scanned.await
            }
        };
        match outputs {
            // Only the engine's own answers per member are taken: a crash or a cancel is a
            // run's, never one member's (a runner that says so is not believed).
            Ok(outputs)
                if !outputs.iter().any(|o| {
                    matches!(o, Err(EngineError::Crashed(_) | EngineError::Cancelled))
                }) =>
            {
                let mut out = Vec::with_capacity(members.len());
                for (m, o) in members.iter().zip(outputs) {
                    out.push(match o {
                        // A member stopped meanwhile (its job cancelled, its lease lost) is
                        // not recorded: its result would be refused anyway.
                        Ok(o) if m.cancel.is_cancelled() => {
                            self.discard(&o).await;
                            Err(RunError::Cancelled)
                        }
                        Ok(o) => self.committed(&m.task, o).await,
                        Err(e) => Err(run_error(e)),
                    });
                }
                out
            }
            Ok(outputs) => {
                for o in outputs.iter().flatten() {
                    self.discard(o).await;
                }
                self.each_alone(members).await
            }
            // Scope-wide answers (the provider or the gate said no, every member was
            // stopped) are every member's alike.
            Err(
                e @ (EngineError::Throttled(_)
                | EngineError::Frozen(_)
                | EngineError::Refused { .. }
                | EngineError::Cancelled),
            ) => vec![Err(run_error(e)); members.len()],
            // Any other failure of the scan as a whole (a limit, a crash, unreadable data, a
            // file gone) may be one member's range or indicators: each task alone decides
            // whose it is, so that sharing never changes a task's outcome.
            Err(_) => self.each_alone(members).await,
        }
    }

    /// Each member run alone, in order; one already stopped is not started.
    async fn each_alone(&self, members: &[&Member]) -> Vec<Result<RunOutput, RunError>> {
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            out.push(if m.cancel.is_cancelled() {
                Err(RunError::Cancelled)
            } else {
                self.run(&m.task, m.cancel.clone()).await
            });
        }
        out
    }

    /// Removes what a run staged for a result that will not be recorded (results uploaded by
    /// the worker); an object written straight to the results store is left to the sweep.
    async fn discard(&self, out: &sluice_engine::TaskOutput) {
        if let (Some(up), Some(key)) = (&self.upload, &out.result_uri)
            && sluice_engine::is_result_key(key)
        {
            let _ = tokio::fs::remove_file(up.staging.join(key)).await;
        }
    }

    /// A run's output, checked (a runner runs researchers' SQL: the key it reports is
    /// checked, never trusted) and uploaded where results are kept.
    async fn committed(
        &self,
        task: &ClaimedTask,
        out: sluice_engine::TaskOutput,
    ) -> Result<RunOutput, RunError> {
        // Another job's key would show that job's rows to this job's owner.
        if let Some(key) = &out.result_uri {
            let want = sluice_engine::result_key(task.job_id.0, task.id().0, task.lease.token.0);
            if *key != want {
                return Err(RunError::Crashed(format!(
                    "the runner reported result {key:?}, not this task's {want:?}"
                )));
            }
            if let (Some(up), Executor::Isolated(_)) = (&self.upload, &self.exec) {
                // Before the finish commits the key: a key recorded is always readable. The
                // results store being down is not the hunt's fault: no attempt is spent.
                up.put(key).await.map_err(|e| RunError::Deferred {
                    reason: e,
                    retry_after: Duration::from_secs(30),
                })?;
            }
        }
        Ok(RunOutput {
            rows: out.rows,
            result_uri: out.result_uri,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_alternate_scopes_in_lake_order() {
        let lake = |name: &str, scope: &str| Lake {
            id: 0,
            name: name.into(),
            url: String::new(),
            scope: scope.into(),
            partition_cols: vec![],
            schema: serde_json::Value::Null,
            tags: Default::default(),
            options: Default::default(),
            created_at: chrono::Utc::now(),
        };
        let lakes = [
            lake("a0", "aws:1"),
            lake("a1", "aws:1"),
            lake("a2", "aws:1"),
            lake("b0", "aws:2"),
            lake("c0", "aws:3"),
            lake("c1", "aws:3"),
        ];
        let order: Vec<&str> = interleave_scopes(&lakes)
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(order, ["a0", "b0", "c0", "a1", "c1", "a2"]);
        assert!(interleave_scopes(&[]).is_empty());
    }

    /// The API documents the hunt the planner reads: one type, described in full.
    #[test]
    fn the_openapi_document_describes_the_hunt() {
        let doc = serde_json::to_value(sluice_api::routes().1).expect("openapi");
        let hunt = &doc["components"]["schemas"]["Hunt"];
        let text = hunt.to_string();
        for field in ["sql", "ips", "hashes", "domains", "since", "until", "lakes"] {
            assert!(
                text.contains(&format!("\"{field}\"")),
                "{field} missing: {hunt}"
            );
        }
        assert_eq!(
            doc["components"]["schemas"]["SubmitRequest"]["properties"]["hunt"]["$ref"],
            "#/components/schemas/Hunt"
        );
    }
}

/// Where a worker uploads what its runners staged.
#[derive(Debug)]
struct Upload {
    staging: std::path::PathBuf,
    to: Arc<dyn object_store::ObjectStore>,
}

impl Upload {
    async fn put(&self, key: &str) -> Result<(), String> {
        use std::os::unix::fs::OpenOptionsExt;
        use tokio::io::AsyncWriteExt;
        let local = self.staging.join(key);
        let gone = || async {
            let _ = tokio::fs::remove_file(&local).await;
        };
        // Not through a link a runner planted, and a plain file only.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&local)
            .and_then(|f| {
                if f.metadata()?.is_file() {
                    Ok(f)
                } else {
                    Err(std::io::Error::other("not a regular file"))
                }
            });
        let mut file = match file {
            Ok(f) => tokio::fs::File::from_std(f),
            Err(e) => {
                gone().await;
                return Err(format!("staged result {}: {e}", local.display()));
            }
        };
        let mut w = object_store::buffered::BufWriter::new(
            self.to.clone(),
            object_store::path::Path::from(key),
        );
        let sent = async {
            tokio::io::copy(&mut file, &mut w).await?;
            w.shutdown().await
        }
        .await;
        gone().await;
        if let Some(dir) = local.parent() {
            // Empty once its job's last staged file went.
            let _ = tokio::fs::remove_dir(dir).await;
        }
        if let Err(e) = sent {
            let _ = w.abort().await;
            return Err(format!("uploading result {key}: {e}"));
        }
        Ok(())
    }
}

/// Jobs' result objects where the engine keeps them (`jobs/{job}/…`), for retention and the
/// orphan sweep.
#[derive(Debug)]
pub struct StoredResults {
    objects: Arc<dyn object_store::ObjectStore>,
}

impl StoredResults {
    pub fn new(objects: Arc<dyn object_store::ObjectStore>) -> Self {
        StoredResults { objects }
    }

    fn prefix(job: JobId) -> object_store::path::Path {
        object_store::path::Path::from(format!("jobs/{}", job.0))
    }
}

#[async_trait]
impl sluice_scheduler::ResultObjects for StoredResults {
    async fn remove_job(&self, job: JobId) -> Result<u64, String> {
        let keys: Vec<String> = self
            .objects(job)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        self.remove(&keys).await
    }

    async fn jobs(&self) -> Result<Vec<JobId>, String> {
        let root = object_store::path::Path::from("jobs");
        let listed = self
            .objects
            .list_with_delimiter(Some(&root))
            .await
            .map_err(|e| e.to_string())?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(|f| f.parse::<i64>().ok()))
            .map(JobId)
            .collect())
    }

    async fn objects(&self, job: JobId) -> Result<Vec<sluice_scheduler::ResultObject>, String> {
        use futures::TryStreamExt;
        let metas: Vec<object_store::ObjectMeta> = self
            .objects
            .list(Some(&Self::prefix(job)))
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(metas
            .into_iter()
            .map(|m| sluice_scheduler::ResultObject {
                key: m.location.to_string(),
                written: m.last_modified,
            })
            .collect())
    }

    /// Removes result-shaped keys only (never what a link or a stray file put in the listing),
    /// in batches (one DeleteObjects request per 1,000 on S3).
    async fn remove(&self, keys: &[String]) -> Result<u64, String> {
        use futures::StreamExt;
        let paths: Vec<object_store::Result<object_store::path::Path>> = keys
            .iter()
            .filter(|k| sluice_engine::is_result_key(k))
            .map(|k| Ok(object_store::path::Path::from(k.as_str())))
            .collect();
        let mut results = self
            .objects
            .delete_stream(futures::stream::iter(paths).boxed());
        let mut n = 0;
        while let Some(r) = results.next().await {
            match r {
                Ok(_) => n += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(n)
    }
}
