//! Rows and parameters of the [`crate::Store`] methods.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_core::state::JobCounts;
use sluice_core::{EventKind, JobId, JobState, LeaseToken, TaskEvent, TaskId, TaskState};
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    pub lake: String,
    pub scope: String,
    pub est_calls: i32,
}

#[derive(Debug, Clone)]
pub struct JobInsertParams {
    pub owner: String,
    pub idempotency_key: Option<String>,
    pub spec: serde_json::Value,
    pub sql: Option<String>,
    pub priority: i16,
    pub max_attempts: i32,
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

/// Checks shared by both backends before a job is written.
pub(crate) fn validate_job(p: &JobInsertParams) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    if p.owner.trim().is_empty() {
        return Err(Invalid("owner must not be empty".into()));
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
    Ok(())
}

/// The root scope: the provider-wide budget.
pub const ROOT_SCOPE: &str = "*";

/// One scope's token bucket as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub scope: String,
    /// `None` only for the root scope.
    pub parent: Option<String>,
    pub rate: f64,
    pub burst: f64,
    pub tokens: f64,
    pub refilled_at: DateTime<Utc>,
    /// The adaptive rate under `rate` after throttling or in slow start; `None`: full rate.
    pub adaptive: Option<sluice_core::Adaptive>,
    /// Set when a take came back short: until then claims prefer other scopes' tasks
    /// (ADR 0007). In the past or `None`: not dry.
    pub dry_until: Option<DateTime<Utc>>,
}

impl Budget {
    /// The rate tokens accrue at now: `rate`, or less while cut back or ramping up.
    pub fn effective_rate(&self, now: DateTime<Utc>) -> f64 {
        match self.adaptive {
            Some(mut a) => a.grow(self.rate, now, &sluice_core::AdaptiveConfig::default()),
            None => self.rate,
        }
    }

    /// Tokens in the bucket at `now`, refilled at the effective rate since the last write.
    pub fn tokens_at(&self, now: DateTime<Utc>) -> f64 {
        let mut t = sluice_core::TokenBucket::from_parts(
            self.effective_rate(now),
            self.burst,
            self.tokens,
            self.refilled_at,
        );
        t.refill(now);
        t.tokens()
    }
}

#[derive(Debug, Clone)]
pub struct BudgetSetParams {
    pub scope: String,
    /// The parent scope; `None` means the root (`*`), which must exist first. Ignored for `*`.
    pub parent: Option<String>,
    pub rate: f64,
    pub burst: f64,
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

/// How the provider's answers move a scope's adaptive rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetFeedback {
    /// Halve the effective rate (AIMD).
    Throttled,
    /// Restart from a fraction of the rate, doubling per interval (a breaker closed, a
    /// pause lifted).
    SlowStart,
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
    if p.parent.as_deref() == Some(p.scope.as_str()) {
        return Err(Invalid(format!(
            "scope {:?} cannot be its own parent",
            p.scope
        )));
    }
    Ok(())
}

/// Takes up to `n` tokens from a chain of buckets (a scope and its ancestors, all refilled to
/// `now`): the grant is the smallest whole number of tokens every bucket has, and it is taken
/// from every bucket. Returns the grant and the buckets after the take.
pub(crate) fn take_from_chain(
    chain: &[Budget],
    n: u32,
    hold: std::time::Duration,
    now: DateTime<Utc>,
) -> (u32, Vec<Budget>) {
    let cfg = sluice_core::AdaptiveConfig::default();
    let mut adaptive: Vec<Option<sluice_core::Adaptive>> =
        chain.iter().map(|b| b.adaptive).collect();
    let mut buckets: Vec<sluice_core::TokenBucket> = chain
        .iter()
        .zip(adaptive.iter_mut())
        .map(|(b, a)| {
            // Tokens accrued since the last refill at the rate in force: the adaptive rate
            // as of now (growth is a function of time, so every taker sees the same).
            let rate = match a {
                Some(a) => a.grow(b.rate, now, &cfg),
                None => b.rate,
            };
            if a.is_some_and(|a| a.settled(b.rate)) {
                *a = None;
            }
            let mut t =
                sluice_core::TokenBucket::from_parts(rate, b.burst, b.tokens, b.refilled_at);
            t.refill(now);
            t
        })
        .collect();
    let headroom = |b: &Budget| (b.rate * hold.as_secs_f64()).min(b.burst - 1.0).max(0.0);
    let grant = buckets
        .iter()
        .zip(chain)
        .map(|(t, b)| (t.tokens() - headroom(b)).floor().max(0.0) as u64)
        .min()
        .unwrap_or(u64::from(n))
        .min(u64::from(n)) as u32;
    for t in &mut buckets {
        let got = t.take_up_to(grant, now);
        debug_assert_eq!(got, grant);
    }
    // A short grant marks every bucket that cannot grant one more token dry until it can;
    // a full grant clears the marks (see `dry_until`).
    let after = chain
        .iter()
        .zip(buckets)
        .zip(adaptive)
        .map(|((b, t), adaptive)| {
            let need = headroom(b) + 1.0 - t.tokens();
            Budget {
                tokens: t.tokens(),
                refilled_at: t.refilled_at(),
                adaptive,
                dry_until: (grant < n && need > 0.0).then(|| dry_until(need, t.rate(), now)),
                ..b.clone()
            }
        })
        .collect();
    (grant, after)
}

/// The longest a scope is marked dry: past it claims try the scope again even if no taker
/// has cleared the mark (a budget with rate 0, or takers that stopped asking).
pub const MAX_DRY: std::time::Duration = std::time::Duration::from_secs(60);

/// When a bucket short of `need` tokens, refilling at `rate`, can grant again.
fn dry_until(need: f64, rate: f64, now: DateTime<Utc>) -> DateTime<Utc> {
    let secs = if rate > 0.0 {
        (need / rate).min(MAX_DRY.as_secs_f64())
    } else {
        MAX_DRY.as_secs_f64()
    };
    now + chrono::Duration::microseconds((secs * 1e6).ceil() as i64)
}

/// Applies feedback to a budget's adaptive rate.
pub(crate) fn budget_feedback(b: &mut Budget, f: BudgetFeedback, now: DateTime<Utc>) {
    let cfg = sluice_core::AdaptiveConfig::default();
    // Refill at the old rate up to now first, so the change applies from now on.
    let mut a = b.adaptive;
    let rate = match &mut a {
        Some(a) => a.grow(b.rate, now, &cfg),
        None => b.rate,
    };
    let mut t = sluice_core::TokenBucket::from_parts(rate, b.burst, b.tokens, b.refilled_at);
    t.refill(now);
    b.tokens = t.tokens();
    b.refilled_at = t.refilled_at();
    b.adaptive = Some(match (f, a) {
        (BudgetFeedback::SlowStart, _) => sluice_core::Adaptive::slow_start(b.rate, now, &cfg),
        (BudgetFeedback::Throttled, a) => {
            let mut a = a.unwrap_or(sluice_core::Adaptive {
                effective: b.rate,
                ssthresh: b.rate,
                adjusted_at: now,
                cut_at: None,
            });
            a.on_throttle(b.rate, now, &cfg);
            a
        }
    });
    if f == BudgetFeedback::SlowStart {
        // A ramp starts from a low rate: a full bucket would release a burst at once.
        b.tokens = b.tokens.min((rate * 0.1).max(1.0));
    }
}

/// A scope's circuit breaker as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerRow {
    pub scope: String,
    pub breaker: sluice_core::Breaker,
    pub updated_at: DateTime<Utc>,
}

/// What happens to a breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakerOp {
    /// May a call go now? (open → half-open when the cooldown is over; one probe at a time)
    Admit,
    Success,
    Throttled,
    Frozen,
    /// The probe got no answer: another may go now.
    ProbeLost,
    /// An operator closes it (journaled with who).
    Reset {
        by: String,
    },
}

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

/// Applies an op to a breaker (pure; the backends load, call this, store and journal).
pub(crate) fn breaker_apply(
    b: &mut sluice_core::Breaker,
    op: &BreakerOp,
    cfg: &sluice_core::BreakerConfig,
    now: DateTime<Utc>,
) -> sluice_core::breaker::Admission {
    use sluice_core::breaker::Admission;
    match op {
        BreakerOp::Admit => return b.admit(now, cfg),
        BreakerOp::Success => b.on_success(now),
        BreakerOp::Throttled => b.on_throttle(now, cfg),
        BreakerOp::Frozen => b.on_frozen(now, cfg),
        BreakerOp::ProbeLost => b.on_probe_lost(now),
        BreakerOp::Reset { .. } => *b = sluice_core::Breaker::closed(now),
    }
    Admission::Allowed
}

/// Until when a breaker holds its scope's tasks back from claims.
pub(crate) fn breaker_hold_until(
    b: &sluice_core::Breaker,
    cfg: &sluice_core::BreakerConfig,
) -> Option<DateTime<Utc>> {
    use sluice_core::BreakerState::*;
    match b.state {
        Closed => None,
        Open => b.probe_after,
        HalfOpen => b.probe_started_at.map(|s| {
            s + chrono::Duration::from_std(cfg.probe_timeout).unwrap_or(chrono::Duration::MAX)
        }),
    }
}

/// The journal kind of a breaker op that changed or reported something.
pub(crate) fn breaker_event(
    op: &BreakerOp,
    from: sluice_core::BreakerState,
    to: sluice_core::BreakerState,
) -> Option<EventKind> {
    use sluice_core::BreakerState::*;
    match (op, from, to) {
        (BreakerOp::Reset { .. }, _, _) => Some(EventKind::BreakerReset),
        (_, a, b) if a == b => match op {
            BreakerOp::Throttled => Some(EventKind::ProviderThrottled),
            BreakerOp::Frozen => Some(EventKind::ProviderFrozen),
            _ => None,
        },
        (BreakerOp::ProbeLost, _, _) => Some(EventKind::BreakerProbeLost),
        (_, _, Open) => Some(EventKind::BreakerOpened),
        (_, _, HalfOpen) => Some(EventKind::BreakerHalfOpen),
        (_, _, Closed) => Some(EventKind::BreakerClosed),
    }
}

/// What a breaker op does to its scope's budget: a close (or a reset) starts it slow, a
/// throttle halves it.
pub(crate) fn breaker_budget_feedback(
    op: &BreakerOp,
    from: sluice_core::BreakerState,
    to: sluice_core::BreakerState,
) -> Option<BudgetFeedback> {
    let closing = to == sluice_core::BreakerState::Closed
        && (from != to || matches!(op, BreakerOp::Reset { .. }));
    if closing {
        Some(BudgetFeedback::SlowStart)
    } else if *op == BreakerOp::Throttled {
        Some(BudgetFeedback::Throttled)
    } else {
        None
    }
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

pub(crate) fn validate_pause(p: &PauseSetParams) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    if p.reason.trim().is_empty() {
        return Err(Invalid(
            "a pause needs a reason (it is what researchers see)".into(),
        ));
    }
    if p.reason.len() > 1000 || p.by.len() > 200 {
        return Err(Invalid("pause reason or author too long".into()));
    }
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
    use crate::StoreError::Invalid;
    if p.reason.trim().is_empty() {
        return Err(Invalid(
            "closing intake needs a reason (it is what submitters see)".into(),
        ));
    }
    if p.reason.len() > 1000 || p.by.len() > 200 {
        return Err(Invalid("intake reason or author too long".into()));
    }
    Ok(())
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

/// Who holds a role's lease after an election round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    pub name: String,
    pub holder: String,
    /// +1 at every change of holder: a fencing number for the leader's work.
    pub term: i64,
    pub expires_at: DateTime<Utc>,
    pub elected_at: DateTime<Utc>,
}

impl Leadership {
    pub fn is(&self, holder: &str) -> bool {
        self.holder == holder
    }
}

/// The leader's fairness pass: re-stride the open jobs of every owner whose number of open jobs
/// (at a priority) no longer matches their strides (ADR 0006).
#[derive(Debug, Clone)]
pub struct JobRebalanceParams {
    pub now: DateTime<Utc>,
}

/// The tag layout of one open job of an owner at a priority: `offset` is its place among the
/// owner's open jobs (by id), `stride` their number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobStride {
    pub job: i64,
    pub priority: i16,
    pub stride: i64,
    pub offset: i64,
}

/// Which jobs need new tags: every open job of an owner and priority whose strides disagree
/// with the owner's number of open jobs there. `open` is (job, owner, priority, stride) of the
/// open jobs, ordered by (owner, priority, id).
pub(crate) fn restrides(open: &[(i64, String, i16, i64)]) -> Vec<JobStride> {
    let mut out = Vec::new();
    for group in open.chunk_by(|a, b| a.1 == b.1 && a.2 == b.2) {
        let k = group.len() as i64;
        if group.iter().all(|j| j.3 == k) {
            continue;
        }
        out.extend(group.iter().enumerate().map(|(i, j)| JobStride {
            job: j.0,
            priority: j.2,
            stride: k,
            offset: i as i64,
        }));
    }
    out
}

/// One election round on the current lease (shared by both backends): the holder renews (same
/// term), anyone takes an expired lease (next term), otherwise nothing changes (`None`).
pub(crate) fn elect(
    cur: &Leadership,
    holder: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Option<Leadership> {
    if cur.holder == holder {
        Some(Leadership {
            expires_at,
            ..cur.clone()
        })
    } else if cur.expires_at <= now {
        Some(Leadership {
            name: cur.name.clone(),
            holder: holder.to_string(),
            term: cur.term + 1,
            expires_at,
            elected_at: now,
        })
    } else {
        None
    }
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

/// What an API token may do. Researchers see and act on their own jobs only; operators see
/// every job and use the operator endpoints; admins also manage tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Researcher,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Researcher => "researcher",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "researcher" => Some(Role::Researcher),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An API token as stored: its SHA-256 hash, never the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: i64,
    pub owner: String,
    pub role: Role,
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
    pub label: String,
    pub now: DateTime<Utc>,
}

pub(crate) fn validate_token(p: &TokenInsertParams) -> crate::Result<()> {
    use crate::StoreError::Invalid;
    if p.owner.trim().is_empty() || p.owner.len() > 200 {
        return Err(Invalid("owner must be 1 to 200 characters".into()));
    }
    if p.label.len() > 200 {
        return Err(Invalid("label must be at most 200 characters".into()));
    }
    if p.hash.len() != 64 || !p.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Invalid("token hash must be 64 hex digits".into()));
    }
    Ok(())
}

/// A page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct JobListParams {
    /// Only this owner's jobs; `None`: everyone's.
    pub owner: Option<String>,
    pub state: Option<JobState>,
    /// Jobs with a smaller id than this (the cursor of the previous page).
    pub before: Option<JobId>,
    pub limit: u32,
}
