//! Rows and parameters of the [`crate::Store`] methods.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_core::state::JobCounts;
use sluice_core::{JobId, JobState, LeaseToken, TaskEvent, TaskId, TaskState};
use sluice_core::{LakeAccess, QuotaTarget, Quotas, Rooms};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Tasks per round trip when inserting a job's tasks.
pub const TASK_INSERT_CHUNK: usize = 5_000;

#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Pool size (Postgres). SQLite always uses one connection: it has one writer anyway.
    pub max_connections: u32,
    /// Postgres schema to create (if missing) and use; `None`: the server's default.
    pub schema: Option<String>,
    /// Application name shown in `pg_stat_activity`.
    pub application_name: Option<String>,
    /// How long to wait for a connection before giving up (default 10 s).
    pub connect_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub owner: String,
    pub idempotency_key: Option<String>,
    pub spec: serde_json::Value,
    pub sql: Option<String>,
    pub state: JobState,
    pub priority: i16,
    pub counts: JobCounts,
    pub rows_found: i64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// How long the job is kept once finished; `None`: the cleaner's default; 0: kept.
    pub retention_secs: Option<i64>,
    /// Called (signed, retried) each time the job ends.
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    pub lake: String,
    pub scope: String,
    pub est_calls: i32,
    /// Whether a claim of another task of the lake may take this one along, to answer both
    /// with one scan (ADR 0014): a hunt the engine can share (an IOC hunt).
    #[serde(default)]
    pub shareable: bool,
}

#[derive(Debug, Clone)]
pub struct JobInsertParams {
    pub owner: String,
    pub idempotency_key: Option<String>,
    pub spec: serde_json::Value,
    pub sql: Option<String>,
    pub priority: i16,
    pub max_attempts: i32,
    /// How long the job is kept once finished; `None`: the cleaner's default; 0: kept.
    pub retention_secs: Option<i64>,
    /// Called when the job ends (checked by the API against the deployment's rules).
    pub webhook: Option<String>,
    pub tasks: Vec<NewTask>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct JobInserted {
    pub job: Job,
    /// False when the idempotency key returned an existing job.
    pub created: bool,
}

#[derive(Debug, Clone)]
pub struct JobCancelParams {
    pub id: JobId,
    pub by: String,
    pub reason: Option<String>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub job_id: JobId,
    pub lake: String,
    pub scope: String,
    pub state: TaskState,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_after: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_token: LeaseToken,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub est_calls: i32,
    pub rows_found: Option<i64>,
    pub result_uri: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The right to write one running task: only a claim hands one out, and the store rejects
/// it once the task was rescued, cancelled or claimed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    pub task_id: TaskId,
    pub token: LeaseToken,
}

#[derive(Debug, Clone)]
pub struct TaskClaimParams {
    pub worker: String,
    pub limit: u32,
    pub lease: Duration,
    pub now: DateTime<Utc>,
    /// Owners whose tasks this claim does not take (a worker's spare slots are for owners
    /// that are not already running their share in it).
    pub skip_owners: Vec<String>,
    /// With each lake of a shareable task claimed, up to this many more shareable pending
    /// tasks of that lake (other jobs'), under the same holds and in release order, for one
    /// shared scan (ADR 0014). Tasks that crashed a runner are never taken along, and nothing
    /// is while an owner quota is set. `0`: only `limit` tasks.
    pub share: u32,
    /// Scopes whose credentials the claimer holds (roles it assumed, ADR 0015): among the
    /// first [`prefer_window`]`(limit)` tasks in release order, theirs are taken first, so
    /// that workers keep to the accounts they hold credentials for instead of each assuming
    /// every role. Fairness gives way within that window only. Ignored while a quota is set.
    pub prefer_scopes: Vec<String>,
}

/// How far past the head of the release order a claim of `limit` tasks looks for tasks of its
/// preferred scopes: four claims' worth, and at least 64 (a worker whose slots free one at a
/// time claims one task at a time, and a window of four would rarely hold a preferred scope
/// among many accounts).
pub fn prefer_window(limit: u32) -> i64 {
    i64::from(limit).saturating_mul(4).max(64)
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTask {
    pub lease: Lease,
    pub job_id: JobId,
    /// The job's owner: CPU and spare slots are shared by owner.
    pub owner: String,
    pub lake: String,
    pub scope: String,
    /// Attempts already spent before this claim.
    pub attempt: i32,
    pub max_attempts: i32,
    /// Hunt runners this task crashed before this claim.
    pub crashes: i32,
    /// May run in one scan with other tasks of its lake ([`NewTask::shareable`]).
    pub shareable: bool,
    pub lease_expires_at: DateTime<Utc>,
}

impl ClaimedTask {
    pub fn id(&self) -> TaskId {
        self.lease.task_id
    }
}

#[derive(Debug, Clone)]
pub struct TaskHeartbeatParams {
    pub leases: Vec<Lease>,
    pub lease: Duration,
    pub now: DateTime<Utc>,
}

/// How a claimed task ended this time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TaskOutcome {
    Succeeded {
        rows: i64,
        result_uri: Option<String>,
    },
    /// Permanent failure, or a retryable one with no attempts left.
    Failed { error: String },
    /// Task-caused, retryable: back to pending after `run_after`, one attempt spent.
    Retry {
        run_after: DateTime<Utc>,
        error: String,
    },
    /// Not the task's fault (provider, pause, shutdown): back to pending, no attempt spent.
    Defer {
        run_after: DateTime<Utc>,
        reason: String,
    },
    /// The task's run killed the process that ran it (a signal, an abort): back to pending
    /// after `run_after`, one attempt spent and the crash counted (a second one fails it).
    Crashed {
        run_after: DateTime<Utc>,
        error: String,
    },
}

impl TaskOutcome {
    pub fn event(&self) -> TaskEvent {
        match self {
            TaskOutcome::Succeeded { .. } => TaskEvent::Complete,
            TaskOutcome::Failed { .. } => TaskEvent::Fail,
            TaskOutcome::Retry { .. } | TaskOutcome::Crashed { .. } => TaskEvent::Retry,
            TaskOutcome::Defer { .. } => TaskEvent::Defer,
        }
    }

    /// Runner crashes this outcome adds to the task's count.
    pub fn crashes(&self) -> i32 {
        i32::from(matches!(self, TaskOutcome::Crashed { .. }))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskFinish {
    pub lease: Lease,
    pub outcome: TaskOutcome,
}

#[derive(Debug, Clone)]
pub struct TaskFinishParams {
    pub finishes: Vec<TaskFinish>,
    pub now: DateTime<Utc>,
}

/// Which finishes were recorded and which were rejected (stale lease).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinishReport {
    pub applied: Vec<TaskId>,
    pub rejected: Vec<TaskId>,
}

/// Hands back (defers, no attempt spent) running tasks: a worker's, or a pause target's.
#[derive(Debug, Clone)]
pub struct TaskHandBackParams {
    pub of: HandBack,
    pub reason: String,
    pub now: DateTime<Utc>,
}

/// Which running tasks are handed back.
#[derive(Debug, Clone)]
pub enum HandBack {
    /// Every task leased to `worker` except `keep`: for a worker that cannot know which tasks
    /// a claim gave it because the claim's reply was lost.
    Worker { worker: String, keep: Vec<Lease> },
    /// Every running task of a pause target (`sluice pause --now`): their workers find the
    /// lease gone at the next heartbeat and stop; their late writes are rejected.
    Target(PauseTarget),
}

impl HandBack {
    /// (kind, text value, job id) for the backends' one filter.
    pub(crate) fn filter(&self) -> (&'static str, String, i64, Vec<i64>) {
        match self {
            HandBack::Worker { worker, keep } => (
                "worker",
                worker.clone(),
                0,
                keep.iter().map(|l| l.task_id.0).collect(),
            ),
            HandBack::Target(PauseTarget::All) => ("all", String::new(), 0, vec![]),
            HandBack::Target(PauseTarget::Scope(s)) => ("scope", s.clone(), 0, vec![]),
            HandBack::Target(PauseTarget::Owner(o)) => ("owner", o.clone(), 0, vec![]),
            HandBack::Target(PauseTarget::Job(j)) => ("job", String::new(), j.0, vec![]),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TaskRescueParams {
    pub limit: u32,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RescuedTask {
    pub id: TaskId,
    pub job_id: JobId,
    pub state: TaskState,
}

#[derive(Debug, Clone)]
pub struct TaskListParams {
    pub job_id: JobId,
    pub limit: u32,
    pub after: Option<TaskId>,
}

#[derive(Debug, Clone, Default)]
pub struct EventListParams {
    pub job_id: Option<JobId>,
    /// Only the provider events of this scope that belong to no job (breaker transitions,
    /// throttled and frozen answers). Not indexed: pass `after_id` to bound the scan.
    pub scope: Option<String>,
    pub after_id: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub job_id: Option<JobId>,
    pub task_id: Option<TaskId>,
    pub scope: Option<String>,
    pub kind: String,
    pub detail: Option<serde_json::Value>,
}

/// The longest retention a job may ask for: ten years.
pub const MAX_RETENTION_SECS: i64 = 10 * 366 * 86_400;

/// Which finished jobs a purge removes (their tasks, journal and result objects with them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeSelect {
    /// Jobs past their retention: their own, else `default_secs` (`None`: jobs without one of
    /// their own are kept).
    Expired { default_secs: Option<i64> },
    /// Jobs finished more than this many seconds ago, unless they are to be kept (retention 0).
    OlderThan { secs: i64 },
    /// This job, if it has finished.
    Job(JobId),
}

#[derive(Debug, Clone)]
pub struct JobPurgeParams {
    pub select: PurgeSelect,
    /// Most jobs this call removes (each in a transaction of its own).
    pub limit: u32,
    /// Who purges (journaled).
    pub by: String,
    pub now: DateTime<Utc>,
}

/// A job a purge removed, with what went with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgedJob {
    pub id: JobId,
    pub owner: String,
    pub tasks: u64,
    pub events: u64,
}

/// Checks shared by both backends before a job is written.
pub(crate) fn validate_job(p: &JobInsertParams) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    validate_owner(&p.owner)?;
    if let Some(r) = p.retention_secs
        && !(0..=MAX_RETENTION_SECS).contains(&r)
    {
        return Err(Invalid(format!(
            "retention must be 0 (keep) to {MAX_RETENTION_SECS} seconds (10 years), got {r}"
        )));
    }
    if p.max_attempts < 1 {
        return Err(Invalid(format!(
            "max_attempts must be at least 1, got {}",
            p.max_attempts
        )));
    }
    if let Some(k) = &p.idempotency_key
        && (k.is_empty() || k.len() > 255)
    {
        return Err(Invalid("idempotency key must be 1 to 255 bytes".into()));
    }
    if let Some(t) = p
        .tasks
        .iter()
        .find(|t| t.lake.is_empty() || t.scope.is_empty())
    {
        return Err(Invalid(format!("task with empty lake or scope: {t:?}")));
    }
    Ok(())
}

/// Per-job counter deltas of a batch of task transitions, applied in job-id order so that
/// concurrent transactions lock job rows in the same order.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JobDelta {
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub rows: i64,
}

impl JobDelta {
    pub fn add(&mut self, state: TaskState, rows: Option<i64>) {
        match state {
            TaskState::Succeeded => {
                self.done += 1;
                self.rows += rows.unwrap_or(0);
            }
            TaskState::Failed => self.failed += 1,
            TaskState::Cancelled => self.cancelled += 1,
            TaskState::Pending | TaskState::Running => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.done == 0 && self.failed == 0 && self.cancelled == 0
    }
}

/// What the job row becomes after a delta: new counts and, if the job just finished, its
/// new state (decided by the core state machine, not by SQL).
pub(crate) fn job_after(
    state: JobState,
    counts: JobCounts,
    d: &JobDelta,
) -> crate::Result<(JobCounts, Option<JobState>)> {
    let counts = JobCounts {
        total: counts.total,
        done: counts.done + d.done,
        failed: counts.failed + d.failed,
        cancelled: counts.cancelled + d.cancelled,
    };
    if state.is_terminal() {
        return Ok((counts, None));
    }
    match counts.outcome() {
        Some(o) => Ok((counts, Some(state.apply(sluice_core::JobEvent::Finish(o))?))),
        None => Ok((counts, None)),
    }
}

/// The task columns an outcome writes.
pub(crate) struct OutcomeColumns {
    pub state: TaskState,
    pub run_after: Option<DateTime<Utc>>,
    pub rows: Option<i64>,
    pub result_uri: Option<String>,
    pub error: Option<String>,
}

pub(crate) fn outcome_columns(o: &TaskOutcome) -> OutcomeColumns {
    // Every outcome is a legal move from running (see TaskState::apply); the fallback is
    // unreachable and would be rejected by the store's state guard anyway.
    let state = TaskState::Running
        .apply(o.event())
        .unwrap_or(TaskState::Running);
    let c = |run_after, rows, result_uri, error| OutcomeColumns {
        state,
        run_after,
        rows,
        result_uri,
        error,
    };
    match o {
        TaskOutcome::Succeeded { rows, result_uri } => {
            c(None, Some(*rows), result_uri.clone(), None)
        }
        TaskOutcome::Failed { error } => c(None, None, None, Some(error.clone())),
        TaskOutcome::Retry { run_after, error } | TaskOutcome::Crashed { run_after, error } => {
            c(Some(*run_after), None, None, Some(error.clone()))
        }
        TaskOutcome::Defer { run_after, reason } => {
            c(Some(*run_after), None, None, Some(reason.clone()))
        }
    }
}

/// A registered data source. `schema` is the engine's serialized Arrow schema: the store keeps
/// it opaque.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lake {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub scope: String,
    pub partition_cols: Vec<String>,
    pub schema: serde_json::Value,
    pub tags: std::collections::BTreeMap<String, String>,
    pub options: std::collections::BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct LakeInsertParams {
    pub name: String,
    pub url: String,
    pub scope: String,
    pub partition_cols: Vec<String>,
    pub schema: serde_json::Value,
    pub tags: std::collections::BTreeMap<String, String>,
    pub options: std::collections::BTreeMap<String, String>,
    pub now: DateTime<Utc>,
}

pub(crate) fn validate_lake(p: &LakeInsertParams) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    let name_ok = !p.name.is_empty()
        && p.name.len() <= 128
        && p.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(Invalid(format!(
            "lake name {:?} must be 1 to 128 characters of letters, digits, '-', '_' or '.'",
            p.name
        )));
    }
    if p.url.is_empty() || p.scope.is_empty() {
        return Err(Invalid("lake url and scope must not be empty".into()));
    }
    // Lake rows are read by every process and shown by `lakes list`: no long-lived secret
    // may land there, in the options or in the URL.
    if let Some(k) = p
        .options
        .keys()
        .find(|k| sluice_core::secrets::is_secret_key(k))
    {
        return Err(Invalid(format!(
            "lake option {k:?} would store a credential in the database: workers take \
             credentials from their environment or workload identity (AWS_* variables, an \
             instance or pod role), never from lake rows"
        )));
    }
    if sluice_core::secrets::redact_url(&p.url) != p.url {
        return Err(Invalid(
            "the lake url carries a credential: give the location only; workers take \
             credentials from their environment or workload identity"
                .into(),
        ));
    }
    Ok(())
}

pub use sluice_core::budget::{
    Budget, BudgetFeedback, MAX_BUDGET_DEPTH, MAX_DRY, ROOT_SCOPE, take_from_chain,
};

#[derive(Debug, Clone)]
pub struct BudgetSetParams {
    pub scope: String,
    /// The parent scope; `None` means the root (`*`), which must exist first. Ignored for `*`.
    pub parent: Option<String>,
    pub rate: f64,
    pub burst: f64,
    /// How the scope's adaptive rate moves; `None` keeps what it has (the defaults at first).
    pub ramp: Option<sluice_core::AdaptiveConfig>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct BudgetTakeParams {
    pub scope: String,
    /// Tokens wanted (a leased batch).
    pub n: u32,
    /// How long the taker may hold tokens before spending them (it forfeits what is left
    /// then). Grants keep `rate × hold` tokens in every bucket, so calls made up to `hold`
    /// after their grant still stay within `burst + rate × T` over any window T.
    pub hold: std::time::Duration,
    pub now: DateTime<Utc>,
}

pub(crate) fn validate_budget(p: &BudgetSetParams) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    if p.scope.is_empty() || p.scope.len() > 200 {
        return Err(Invalid("scope must be 1 to 200 characters".into()));
    }
    for (name, v) in [("rate", p.rate), ("burst", p.burst)] {
        if !v.is_finite() || v < 0.0 {
            return Err(Invalid(format!(
                "{name} must be a finite number >= 0, got {v}"
            )));
        }
    }
    if let Some(ramp) = &p.ramp {
        ramp.validate().map_err(Invalid)?;
    }
    if p.parent.as_deref() == Some(p.scope.as_str()) {
        return Err(Invalid(format!(
            "scope {:?} cannot be its own parent",
            p.scope
        )));
    }
    Ok(())
}

/// A scope's circuit breaker as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerRow {
    pub scope: String,
    pub breaker: sluice_core::Breaker,
    pub updated_at: DateTime<Utc>,
}

pub use sluice_core::BreakerOp;

#[derive(Debug, Clone)]
pub struct BreakerUpdateParams {
    pub scope: String,
    pub op: BreakerOp,
    pub cfg: sluice_core::BreakerConfig,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerUpdate {
    pub row: BreakerRow,
    /// The answer to [`BreakerOp::Admit`] (`Allowed` for the other ops).
    pub admission: sluice_core::breaker::Admission,
    /// The state before, when it changed.
    pub changed_from: Option<sluice_core::BreakerState>,
}

/// What an operator pauses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseTarget {
    All,
    Scope(String),
    Owner(String),
    Job(JobId),
}

impl PauseTarget {
    /// The stored key: `all`, `scope:S`, `owner:U`, `job:N`.
    pub fn key(&self) -> String {
        match self {
            PauseTarget::All => "all".into(),
            PauseTarget::Scope(s) => format!("scope:{s}"),
            PauseTarget::Owner(o) => format!("owner:{o}"),
            PauseTarget::Job(j) => format!("job:{j}"),
        }
    }

    /// The job a job pause holds back (its id is stored beside the key).
    pub fn job_id(&self) -> Option<i64> {
        match self {
            PauseTarget::Job(j) => Some(j.0),
            _ => None,
        }
    }

    pub fn parse(key: &str) -> Option<PauseTarget> {
        match key.split_once(':') {
            None if key == "all" => Some(PauseTarget::All),
            Some(("scope", s)) if !s.is_empty() => Some(PauseTarget::Scope(s.into())),
            Some(("owner", o)) if !o.is_empty() => Some(PauseTarget::Owner(o.into())),
            Some(("job", j)) => j.parse().ok().map(PauseTarget::Job),
            _ => None,
        }
    }
}

impl PauseTarget {
    /// Whether this pause holds back job `job` of `owner`, whose pending tasks are in `scopes`.
    pub fn holds(&self, job: JobId, owner: &str, scopes: &[String]) -> bool {
        match self {
            PauseTarget::All => true,
            PauseTarget::Owner(o) => o == owner,
            PauseTarget::Job(j) => *j == job,
            PauseTarget::Scope(s) => scopes.contains(s),
        }
    }
}

/// What holds tasks back from claims: typed, each kind read from its own table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// An operator's pause.
    Pause(PauseTarget),
    /// The scope's breaker is open or probing.
    Breaker(String),
    /// The scope's budget, or an ancestor's, is dry: its tasks are claimed last (ADR 0007).
    Dry(String),
    /// An owner's (or every owner's) quota of running tasks.
    Quota(QuotaTarget, i64),
    /// Tasks of `owner` running now (read only while a quota is set).
    Running(String, i64),
}

/// What one claim pass leaves alone, and how many tasks of each owner it may start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimSkip {
    pub scopes: Vec<String>,
    pub owners: Vec<String>,
    pub jobs: Vec<i64>,
    /// Owners with a limited room (more than 0), and their rooms, in the same order.
    pub room_owners: Vec<String>,
    pub rooms: Vec<i64>,
    /// The room of every owner not listed; `None`: unlimited.
    pub default_room: Option<i64>,
}

/// How a claim runs: what every pass skips, the dry scopes, whose tasks a first pass leaves
/// for a second, and the owners' rooms under their quotas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClaimPlan {
    pub skip: ClaimSkip,
    pub dry: Vec<String>,
    pub rooms: Rooms,
    /// Passes run so far (first the one without the dry scopes, when any is dry).
    pass: usize,
    /// The last pass came back short because an owner filled their room in it: run it again
    /// without them.
    again: bool,
}

impl ClaimPlan {
    fn passes(&self) -> usize {
        if self.dry.is_empty() { 1 } else { 2 }
    }

    /// Whether any owner's running tasks are limited.
    pub(crate) fn has_quotas(&self) -> bool {
        !self.rooms.owners.is_empty() || self.rooms.default.is_some()
    }

    /// What the next pass skips and may start; `None` when every pass has run.
    pub(crate) fn next_pass(&mut self) -> Option<ClaimSkip> {
        if self.again {
            self.again = false;
        } else {
            self.pass += 1;
        }
        if self.pass > self.passes() {
            return None;
        }
        let mut skip = self.skip.clone();
        if self.pass == 1 && !self.dry.is_empty() {
            skip.scopes.extend(self.dry.iter().cloned());
        }
        skip.owners.extend(self.rooms.full().map(str::to_string));
        for (o, r) in &self.rooms.owners {
            if *r > 0 {
                skip.room_owners.push(o.clone());
                skip.rooms.push(*r);
            }
        }
        skip.default_room = self.rooms.default;
        Some(skip)
    }

    /// A pass asked for `asked` tasks and got `got`: the owners' rooms shrink, and a pass cut
    /// short by a room that filled runs again.
    pub(crate) fn claimed(&mut self, got: &[ClaimedTask], asked: u32) {
        let mut filled = false;
        for t in got {
            filled |= self.rooms.take(&t.owner, 1);
        }
        self.again = filled && (got.len() as u32) < asked;
    }
}

/// The lakes whose other pending tasks a claim takes along (`p.share` more each), of the
/// tasks it claimed: none but a task that never crashed a runner (it runs alone, in a runner
/// of its own). `None`: nothing to take along.
pub(crate) fn lakes_to_share(p: &TaskClaimParams, claimed: &[ClaimedTask]) -> Option<Vec<String>> {
    if p.share == 0 {
        return None;
    }
    let lakes: BTreeSet<&str> = claimed
        .iter()
        .filter(|t| t.crashes == 0 && t.shareable)
        .map(|t| t.lake.as_str())
        .collect();
    (!lakes.is_empty()).then(|| lakes.into_iter().map(str::to_string).collect())
}

/// The claim under `holds`: `None` when everything is paused. Under a dry root every scope
/// is dry: nothing to prefer then.
pub(crate) fn claim_plan(holds: Vec<Hold>, skip_owners: &[String]) -> Option<ClaimPlan> {
    let mut skip = ClaimSkip {
        owners: skip_owners.to_vec(),
        ..ClaimSkip::default()
    };
    let mut dry = Vec::new();
    let mut quotas = Quotas::default();
    let mut running = BTreeMap::new();
    for h in holds {
        match h {
            Hold::Pause(PauseTarget::All) => return None,
            Hold::Pause(PauseTarget::Scope(s)) | Hold::Breaker(s) => skip.scopes.push(s),
            Hold::Pause(PauseTarget::Owner(o)) => skip.owners.push(o),
            Hold::Pause(PauseTarget::Job(j)) => skip.jobs.push(j.0),
            Hold::Dry(s) => dry.push(s),
            Hold::Quota(target, max) => quotas.set(target, max),
            Hold::Running(owner, n) => {
                running.insert(owner, n);
            }
        }
    }
    if dry.iter().any(|s| s == ROOT_SCOPE) {
        dry.clear();
    }
    Some(ClaimPlan {
        skip,
        dry,
        rooms: quotas.rooms(&running),
        ..ClaimPlan::default()
    })
}

impl std::fmt::Display for PauseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    pub target: PauseTarget,
    pub reason: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct PauseSetParams {
    pub target: PauseTarget,
    pub reason: String,
    pub by: String,
    pub now: DateTime<Utc>,
}

/// An operator's hold needs a reason (`who` reads it); reason and author are bounded.
fn check_reason(act: &str, noun: &str, who: &str, reason: &str, by: &str) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    if reason.trim().is_empty() {
        return Err(Invalid(format!(
            "{act} needs a reason (it is what {who} see)"
        )));
    }
    if reason.len() > 1000 || by.len() > 200 {
        return Err(Invalid(format!("{noun} reason or author too long")));
    }
    Ok(())
}

pub(crate) fn validate_pause(p: &PauseSetParams) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    check_reason("a pause", "pause", "researchers", &p.reason, &p.by)?;
    match &p.target {
        PauseTarget::Scope(s) | PauseTarget::Owner(s) if s.trim().is_empty() => {
            Err(Invalid("pause target must not be empty".into()))
        }
        _ => Ok(()),
    }
}

/// Intake closed by a drain: who, why and since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntakeHold {
    pub reason: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

impl IntakeHold {
    /// What a refused submitter reads.
    pub(crate) fn refusal(&self) -> crate::StoreError {
        crate::StoreError::Closed(format!(
            "the backlog is draining: no new jobs since {} ({}, by {}); `sluice drain --end` reopens intake",
            self.at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.reason,
            self.by
        ))
    }
}

#[derive(Debug, Clone)]
pub struct IntakeCloseParams {
    pub reason: String,
    pub by: String,
    pub now: DateTime<Utc>,
}

pub(crate) fn validate_intake(p: &IntakeCloseParams) -> crate::Result<()> {
    check_reason("closing intake", "intake", "submitters", &p.reason, &p.by)
}

/// One leader-election round for role `name`: take the lease if it is free or expired, renew it
/// if `holder` holds it.
#[derive(Debug, Clone)]
pub struct LeaderElectParams {
    pub name: String,
    pub holder: String,
    pub ttl: Duration,
    pub now: DateTime<Utc>,
}

pub use sluice_core::Leadership;

/// The leader's fairness pass: re-stride the open jobs of every owner whose number of open jobs
/// (at a priority) no longer matches their strides (ADR 0006).
#[derive(Debug, Clone)]
pub struct JobRebalanceParams {
    pub now: DateTime<Utc>,
}

/// The open backlog of one priority, from the jobs' counters (no scan of tasks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backlog {
    pub priority: i16,
    pub open_jobs: i64,
    /// Tasks of open jobs that are not finished (pending or running).
    pub open_tasks: i64,
    pub oldest_created_at: DateTime<Utc>,
}

/// Tasks of one scope in one state, from the counters the database keeps (no scan of tasks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCount {
    pub scope: String,
    pub state: TaskState,
    pub tasks: i64,
    /// The planner's estimate of these tasks' provider calls (drain time at a budget).
    pub est_calls: i64,
}

/// The task backlog: tasks by scope and state, and the oldest pending task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskBacklog {
    /// Every (scope, state) with at least one task, by scope then state.
    pub counts: Vec<TaskCount>,
    /// When the oldest task still pending was created (`None`: nothing is pending).
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// Builds a [`TaskBacklog`] from `(scope, state, tasks, est_calls)` counter rows.
pub(crate) fn task_backlog(
    rows: Vec<(String, String, i64, i64)>,
    oldest_pending_at: Option<DateTime<Utc>>,
) -> crate::Result<TaskBacklog> {
    let counts = rows
        .into_iter()
        .map(|(scope, state, tasks, est_calls)| {
            let state = TaskState::parse(&state)
                .ok_or_else(|| crate::StoreError::Corrupt(format!("unknown state {state:?}")))?;
            Ok(TaskCount {
                scope,
                state,
                tasks,
                est_calls,
            })
        })
        .collect::<crate::Result<_>>()?;
    Ok(TaskBacklog {
        counts,
        oldest_pending_at,
    })
}

/// A job that reached a terminal state, for time-to-answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedJob {
    pub id: JobId,
    pub priority: i16,
    pub state: JobState,
    pub created_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct JobFinishedParams {
    /// Jobs finished strictly after this instant…
    pub after: DateTime<Utc>,
    /// …and up to this one, inclusive, oldest first.
    pub until: DateTime<Utc>,
    pub limit: u32,
}

/// Readiness from the newest migration applied to the database and the newest this build
/// has: behind is not ready (run `sluice migrate`); ahead is fine (migrations only add).
pub(crate) fn schema_ready(applied: Option<i64>, built: i64) -> crate::Result<()> {
    match applied {
        None => Err(crate::StoreError::NotReady(
            "the database has no schema yet: run `sluice migrate`".into(),
        )),
        Some(v) if v < built => Err(crate::StoreError::NotReady(format!(
            "the database schema is at migration {v}, this build needs {built}: run `sluice migrate`"
        ))),
        Some(_) => Ok(()),
    }
}

pub use sluice_core::Role;

/// An API token as stored: its SHA-256 hash, never the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: i64,
    pub owner: String,
    pub role: Role,
    /// The lakes the token may hunt, list and read results of.
    pub lakes: LakeAccess,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct TokenInsertParams {
    pub owner: String,
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub lakes: LakeAccess,
    pub label: String,
    pub now: DateTime<Utc>,
}

/// A signed-in console session: the token it stands for (by hash) and the CSRF token every
/// change made with it must repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// Hex SHA-256 of the API token the session was opened with.
    pub token_hash: String,
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Console sessions one token may hold at once; a new sign-in ends the oldest beyond it.
pub const MAX_SESSIONS: i64 = 10;

#[derive(Debug, Clone)]
pub struct SessionInsertParams {
    /// Hex SHA-256 of the session id (the cookie's value); the id itself is never stored.
    pub hash: String,
    pub token_hash: String,
    pub csrf: String,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub(crate) fn validate_session(p: &SessionInsertParams) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    let hex64 = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex64(&p.hash) || !hex64(&p.token_hash) {
        return Err(Invalid(
            "session and token hashes must be 64 hex digits".into(),
        ));
    }
    if p.csrf.len() < 32 || p.csrf.len() > 128 {
        return Err(Invalid("a CSRF token has 32 to 128 characters".into()));
    }
    if p.expires_at <= p.now {
        return Err(Invalid("a session must expire after it starts".into()));
    }
    Ok(())
}

/// A recurring hunt: the submission it makes at every tick, and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub id: i64,
    pub owner: String,
    pub name: String,
    /// The submission each run makes (`hunt`, `priority`, `max_attempts`, `retention_secs`,
    /// `webhook`), as the API accepted it.
    pub request: serde_json::Value,
    pub every_secs: Option<i64>,
    pub cron: Option<String>,
    /// Each run hunts over the `range_secs` before its tick.
    pub range_secs: Option<i64>,
    /// The lakes the creating caller could hunt (used when no token made it).
    pub lakes: LakeAccess,
    /// The hash of the token that made it: each run takes that token's role and lakes as they
    /// are then; `None`: made on the database (the CLI without `--url`).
    pub token_hash: Option<String>,
    /// The tick due next.
    pub next_at: DateTime<Utc>,
    pub paused_at: Option<DateTime<Utc>>,
    pub paused_by: Option<String>,
    pub runs: i64,
    pub last_job_id: Option<JobId>,
    pub last_run_at: Option<DateTime<Utc>>,
    /// Why the last tick made no job (cleared by the next run that makes one).
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct ScheduleInsertParams {
    pub owner: String,
    pub name: String,
    pub request: serde_json::Value,
    pub every_secs: Option<i64>,
    pub cron: Option<String>,
    pub range_secs: Option<i64>,
    pub lakes: LakeAccess,
    pub token_hash: Option<String>,
    pub next_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Schedules one owner may have: each fans out to every lake it selects at every tick.
pub const MAX_SCHEDULES: i64 = 50;

/// What one tick of a schedule did.
#[derive(Debug, Clone)]
pub struct ScheduleRanParams {
    pub id: i64,
    /// The tick that was due (the schedule's `next_at` when it was taken): the update is
    /// guarded by it, so a tick is recorded once however many leaders fired it.
    pub tick: DateTime<Utc>,
    /// The tick due after it.
    pub next_at: DateTime<Utc>,
    /// The job it made, or why it made none.
    pub outcome: std::result::Result<JobId, String>,
    pub now: DateTime<Utc>,
}

pub(crate) fn validate_schedule(p: &ScheduleInsertParams) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    validate_owner(&p.owner)?;
    p.lakes.check().map_err(Invalid)?;
    let name_ok = !p.name.is_empty()
        && p.name.len() <= 100
        && p.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err(Invalid(format!(
            "a schedule's name is 1 to 100 letters, digits, '-', '_' or '.', got {:?}",
            p.name
        )));
    }
    if p.every_secs.is_some() == p.cron.is_some() {
        return Err(Invalid(
            "a schedule has an interval or a cron pattern".into(),
        ));
    }
    if !p.request.is_object() {
        return Err(Invalid("a schedule's request is a JSON object".into()));
    }
    Ok(())
}

pub(crate) fn validate_token(p: &TokenInsertParams) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    validate_owner(&p.owner)?;
    p.lakes.check().map_err(Invalid)?;
    if p.label.len() > 200 {
        return Err(Invalid("label must be at most 200 characters".into()));
    }
    if p.hash.len() != 64 || !p.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Invalid("token hash must be 64 hex digits".into()));
    }
    Ok(())
}

/// An owner's name: 1 to 200 characters, and not `*` (which names every owner in quotas).
pub(crate) fn validate_owner(owner: &str) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    if owner.trim().is_empty() || owner.chars().count() > 200 {
        return Err(Invalid("owner must be 1 to 200 characters".into()));
    }
    if owner == "*" {
        return Err(Invalid(
            "owner `*` is reserved (it names every owner in quotas)".into(),
        ));
    }
    Ok(())
}

/// A job's new priority, set by `by` (journaled); its unfinished tasks move with it.
#[derive(Debug, Clone)]
pub struct JobPriorityParams {
    pub id: JobId,
    pub priority: i32,
    pub by: String,
    pub now: DateTime<Utc>,
}

/// Run an ended job's failed and cancelled lakes again, asked by `by` (journaled).
#[derive(Debug, Clone)]
pub struct JobRerunParams {
    pub id: JobId,
    pub by: String,
    pub now: DateTime<Utc>,
}

/// A job's end to announce at its webhook (the outbox row of `webhook_deliveries`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub id: i64,
    pub job_id: JobId,
    pub url: String,
    /// What is sent: the job as it ended.
    pub body: serde_json::Value,
    /// Tries so far, this one included.
    pub attempt: i32,
}

/// How one try of a delivery went.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// Not delivered; tried again at `retry_at`, or given up (`None`).
    Failed {
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

/// An owner's quota of running tasks, as set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    pub target: QuotaTarget,
    pub max_running: i64,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// An owner's quota and their tasks running now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    pub max_running: i64,
    pub running: i64,
}

#[derive(Debug, Clone)]
pub struct QuotaSetParams {
    pub target: QuotaTarget,
    pub max_running: i64,
    pub by: String,
    pub now: DateTime<Utc>,
}

pub(crate) fn validate_quota(p: &QuotaSetParams) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    if let QuotaTarget::Owner(o) = &p.target {
        validate_owner(o)?;
    }
    if !(0..=1_000_000).contains(&p.max_running) {
        return Err(Invalid(format!(
            "max running tasks must be 0 to 1000000, got {}",
            p.max_running
        )));
    }
    Ok(())
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobListParams {
    /// Only this owner's jobs; `None`: everyone's.
    pub owner: Option<String>,
    pub state: Option<JobState>,
    /// Jobs with a smaller id than this (the cursor of the previous page).
    pub before: Option<JobId>,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> Hold {
        Hold::Pause(PauseTarget::Scope(s.into()))
    }

    #[test]
    fn claim_plan_sorts_holds_into_what_a_pass_skips() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // (holds, owners the worker skips, what each pass skips)
        type Case = (Vec<Hold>, Vec<String>, Option<Vec<ClaimSkip>>);
        let cases: Vec<Case> = vec![
            (vec![], vec![], Some(vec![ClaimSkip::default()])),
            (
                vec![scope("a"), Hold::Pause(PauseTarget::All)],
                vec![],
                None,
            ),
            (
                vec![
                    scope("a"),
                    Hold::Breaker("b".into()),
                    Hold::Pause(PauseTarget::Owner("eve".into())),
                    Hold::Pause(PauseTarget::Job(JobId(7))),
                    Hold::Dry("c".into()),
                ],
                s(&["bob"]),
                Some(vec![
                    ClaimSkip {
                        scopes: s(&["a", "b", "c"]),
                        owners: s(&["bob", "eve"]),
                        jobs: vec![7],
                        ..ClaimSkip::default()
                    },
                    ClaimSkip {
                        scopes: s(&["a", "b"]),
                        owners: s(&["bob", "eve"]),
                        jobs: vec![7],
                        ..ClaimSkip::default()
                    },
                ]),
            ),
            // Under a dry root every scope is dry: nothing to prefer.
            (
                vec![Hold::Dry("c".into()), Hold::Dry(ROOT_SCOPE.into())],
                vec![],
                Some(vec![ClaimSkip::default()]),
            ),
            // Quotas: a full owner is skipped, the others get their rooms.
            (
                vec![
                    Hold::Quota(QuotaTarget::Default, 3),
                    Hold::Quota(QuotaTarget::Owner("carol".into()), 10),
                    Hold::Running("alice".into(), 3),
                    Hold::Running("bob".into(), 1),
                ],
                vec![],
                Some(vec![ClaimSkip {
                    owners: s(&["alice"]),
                    room_owners: s(&["bob", "carol"]),
                    rooms: vec![2, 10],
                    default_room: Some(3),
                    ..ClaimSkip::default()
                }]),
            ),
        ];
        for (holds, skip_owners, want) in cases {
            let got = claim_plan(holds.clone(), &skip_owners)
                .map(|mut plan| std::iter::from_fn(|| plan.next_pass()).collect::<Vec<_>>());
            assert_eq!(got, want, "{holds:?}");
        }
    }

    fn claimed(owner: &str) -> ClaimedTask {
        ClaimedTask {
            job_id: JobId(1),
            owner: owner.into(),
            lake: "l".into(),
            scope: "s".into(),
            attempt: 1,
            max_attempts: 1,
            crashes: 0,
            shareable: false,
            lease: Lease {
                task_id: sluice_core::TaskId(1),
                token: sluice_core::LeaseToken(1),
            },
            lease_expires_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_pass_cut_short_by_a_filled_room_runs_again_without_that_owner() {
        let holds = vec![
            Hold::Quota(QuotaTarget::Owner("alice".into()), 2),
            Hold::Running("alice".into(), 1),
        ];
        let mut plan = claim_plan(holds, &[]).unwrap();
        let first = plan.next_pass().unwrap();
        assert_eq!(
            (first.room_owners.clone(), first.rooms.clone()),
            (vec!["alice".to_string()], vec![1])
        );
        // Asked for 8, got alice's one: her room is full, so the pass runs again without her.
        plan.claimed(&[claimed("alice")], 8);
        let again = plan.next_pass().unwrap();
        assert_eq!(again.owners, ["alice"]);
        assert!(again.room_owners.is_empty());
        // Short again, but nobody filled: the queue is empty, no third pass.
        plan.claimed(&[claimed("bob")], 7);
        assert_eq!(plan.next_pass(), None);
    }

    #[test]
    fn a_pause_holds_its_target_only() {
        let scopes = vec!["aws:1".to_string()];
        let cases = [
            (PauseTarget::All, true),
            (PauseTarget::Owner("alice".into()), true),
            (PauseTarget::Owner("bob".into()), false),
            (PauseTarget::Job(JobId(3)), true),
            (PauseTarget::Job(JobId(4)), false),
            (PauseTarget::Scope("aws:1".into()), true),
            (PauseTarget::Scope("aws:2".into()), false),
        ];
        for (t, want) in cases {
            assert_eq!(t.holds(JobId(3), "alice", &scopes), want, "{t}");
        }
    }
}
