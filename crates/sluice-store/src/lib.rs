//! All of Sluice's SQL. The [`Store`] trait is the one seam between Sluice and its database;
//! [`PgStore`] is the production backend (many processes on many machines), [`SqliteStore`]
//! the embedded default (one process). Both pass the same conformance suite
//! (`tests/it/conformance.rs`).
//!
//! Every write of a running task is guarded by its lease token (fencing): a worker that lost
//! its lease — rescued after expiry, cancelled — has its late writes rejected, never applied.

mod backend;
mod db;
mod error;
mod model;
mod pg;
mod rows;
mod scripts;
mod sqlite;
#[doc(hidden)]
pub mod testing;

pub use error::{Result, StoreError};
pub use model::*;
pub use pg::PgStore;
pub use sluice_core::{LakeAccess, QuotaTarget};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::{JobId, TaskId};
use std::sync::Arc;

/// Everything Sluice asks of its database. Methods are named entity-then-verb and take a
/// `…Params` struct; none reads the clock (callers pass `now`).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which backend this is (`postgres` or `sqlite`).
    fn backend(&self) -> &'static str;

    /// Applies pending migrations (idempotent; safe to run from many processes at once).
    async fn migrate(&self) -> Result<()>;

    /// Stores a new API token (its hash); the hash must be unique.
    async fn token_insert(&self, p: TokenInsertParams) -> Result<ApiToken>;

    /// The live (not revoked) token with this hash; [`StoreError::NotFound`] otherwise.
    async fn token_find(&self, hash: &str) -> Result<ApiToken>;

    async fn token_list(&self) -> Result<Vec<ApiToken>>;

    /// Revokes a token from `now` on (revoking twice keeps the first time).
    async fn token_revoke(&self, id: i64, now: DateTime<Utc>) -> Result<ApiToken>;

    /// Opens a console session (its id's hash) for the token with `token_hash`, until
    /// `expires_at`; sessions already expired are removed on the way.
    async fn session_insert(&self, p: SessionInsertParams) -> Result<()>;

    /// The unexpired session with this hash; [`StoreError::NotFound`] otherwise. Whether its
    /// token is still live is [`Store::token_find`]'s to say.
    async fn session_find(&self, hash: &str, now: DateTime<Utc>) -> Result<ConsoleSession>;

    /// Ends a session (sign-out); ending one that is gone is not an error.
    async fn session_delete(&self, hash: &str) -> Result<()>;

    /// The job `owner` submitted with idempotency key `key`; [`StoreError::NotFound`] if none.
    async fn job_find_by_key(&self, owner: &str, key: &str) -> Result<Job>;

    /// Stores a recurring hunt; a name the owner already uses, or an owner at
    /// [`MAX_SCHEDULES`], is a [`StoreError::Conflict`].
    async fn schedule_insert(&self, p: ScheduleInsertParams) -> Result<Schedule>;

    async fn schedule_get(&self, id: i64) -> Result<Schedule>;

    /// Every schedule (of `owner` only, if given), oldest first.
    async fn schedule_list(&self, owner: Option<&str>) -> Result<Vec<Schedule>>;

    /// Unpaused schedules whose tick is due at `now`, earliest first.
    async fn schedule_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Schedule>>;

    /// Records what a due tick did and moves the schedule to its next tick, journaled
    /// (`schedule.fired` on the job, or `schedule.skipped`) — unless the tick was recorded
    /// already (another leader fired it): `false` then, and nothing is written.
    async fn schedule_ran(&self, p: ScheduleRanParams) -> Result<bool>;

    /// Holds a schedule's ticks until resumed (pausing twice keeps the first pause).
    async fn schedule_pause(&self, id: i64, by: &str, now: DateTime<Utc>) -> Result<Schedule>;

    /// Lets a paused schedule run again from `next_at` (ticks missed while paused are not
    /// made up); resuming one that runs changes nothing but the journal.
    async fn schedule_resume(
        &self,
        id: i64,
        by: &str,
        next_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Schedule>;

    /// Removes a schedule (the jobs it made stay).
    async fn schedule_delete(&self, id: i64, by: &str, now: DateTime<Utc>) -> Result<()>;

    /// Whether this process can serve: the database answers and its schema has every
    /// migration this build knows ([`StoreError::NotReady`] if not). Backs `/readyz`.
    async fn ready(&self) -> Result<()>;

    /// Inserts a job and its tasks in one transaction (tasks in chunks of one round trip each).
    /// With an idempotency key already used by the owner: the same spec returns the existing
    /// job (`created: false`), another spec is a [`StoreError::Conflict`].
    async fn job_insert(&self, p: JobInsertParams) -> Result<JobInserted>;

    async fn job_get(&self, id: JobId) -> Result<Job>;

    /// Jobs newest first, filtered by owner and state, one page (at most 1,000) after a cursor.
    async fn job_list(&self, p: JobListParams) -> Result<Vec<Job>>;

    /// Cancels a job and every task of it that is not finished; running tasks lose their lease
    /// (their workers' late writes are rejected). Cancelling a finished job is a conflict.
    async fn job_cancel(&self, p: JobCancelParams) -> Result<Job>;

    /// Claims up to `limit` runnable tasks (pending, `run_after` passed) in release order,
    /// each with a fresh lease token. Concurrent claimers never get the same task.
    async fn task_claim(&self, p: TaskClaimParams) -> Result<Vec<ClaimedTask>>;

    /// Extends the leases still held; returns the leases that were lost (cancelled, rescued or
    /// claimed by another worker), whose work should stop.
    async fn task_heartbeat(&self, p: TaskHeartbeatParams) -> Result<Vec<Lease>>;

    /// Records the outcomes of finished leases in one transaction, updating job counters and
    /// finishing jobs whose last task this was. Writes with a stale lease are rejected.
    async fn task_finish(&self, p: TaskFinishParams) -> Result<FinishReport>;

    /// Defers every task leased to a worker except the leases it still knows about (no
    /// attempt spent); returns the tasks handed back. A worker calls it after a claim whose
    /// reply it never got, instead of leaving those tasks until their lease expires.
    async fn task_hand_back(&self, p: TaskHandBackParams) -> Result<Vec<TaskId>>;

    /// Returns tasks whose lease expired to pending (one attempt spent), or fails them when no
    /// attempts are left. Guarded by state and token, so a racing completion wins or loses
    /// cleanly.
    async fn task_rescue_expired(&self, p: TaskRescueParams) -> Result<Vec<RescuedTask>>;

    /// Waits until new tasks may be claimable (a job was submitted, on any process for
    /// Postgres) or `timeout` passes. A hint, not a guarantee: callers poll anyway.
    async fn task_wait(&self, timeout: std::time::Duration);

    async fn task_get(&self, id: TaskId) -> Result<Task>;

    /// The tasks of a job, by id (operator and test use; not a hot path).
    async fn task_list(&self, p: TaskListParams) -> Result<Vec<Task>>;

    /// Registers a lake; a name already taken is a [`StoreError::Conflict`].
    async fn lake_insert(&self, p: LakeInsertParams) -> Result<Lake>;

    /// Every registered lake, by name.
    async fn lake_list(&self) -> Result<Vec<Lake>>;

    async fn lake_get(&self, name: &str) -> Result<Lake>;

    /// Unregisters a lake (tasks already created for it keep their lake name).
    async fn lake_remove(&self, name: &str) -> Result<()>;

    /// Creates or changes a scope's budget (rate calls/s, burst). A new budget starts full; a
    /// changed one keeps its tokens, clamped to the new burst.
    async fn budget_set(&self, p: BudgetSetParams) -> Result<Budget>;

    /// Every budget, by scope.
    async fn budget_list(&self) -> Result<Vec<Budget>>;

    /// Leases up to `n` call tokens for `scope`, charged to the scope and every ancestor that
    /// has a budget (scopes without one are unlimited). Tokens taken are never returned, so over
    /// any window of T seconds at most `burst + rate × T` are granted per bucket, across all
    /// processes (and, with `hold`, spent). Tokens accrue at the budget's effective rate.
    async fn budget_take(&self, p: BudgetTakeParams) -> Result<u32>;

    /// Moves a scope's adaptive rate (a no-op for a scope without its own budget).
    async fn budget_feedback(
        &self,
        scope: &str,
        f: BudgetFeedback,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Every breaker that ever left the closed state, by scope.
    async fn breaker_list(&self) -> Result<Vec<BreakerRow>>;

    /// Applies one op to a scope's breaker in one transaction, for every process to see:
    /// transitions and provider refusals are journaled; a close (or reset) starts the scope's
    /// budget slow; a throttle cuts its adaptive rate. While open (or probing) the scope's
    /// tasks are not claimed.
    async fn breaker_update(&self, p: BreakerUpdateParams) -> Result<BreakerUpdate>;

    /// Pauses a target (replacing an earlier pause of the same target): from the next claim on,
    /// on every process, its pending tasks are not claimed; running ones finish. Journaled.
    async fn pause_set(&self, p: PauseSetParams) -> Result<Pause>;

    /// Removes finished jobs as `p.select` says, oldest first, at most `p.limit`, each with its
    /// tasks and journal in a transaction of its own (no claim-path lock is taken: finished
    /// tasks are never claimed). Journaled as `job.purged`. The caller removes the jobs'
    /// result objects afterwards (an object left by a crash in between is an orphan the
    /// cleaner's sweep removes).
    async fn job_purge(&self, p: JobPurgeParams) -> Result<Vec<PurgedJob>>;

    /// Sets a job's priority and its unfinished tasks'; a finished job is a conflict. Journaled.
    async fn job_set_priority(&self, p: JobPriorityParams) -> Result<Job>;

    /// Runs an ended job (partial, failed or cancelled) again for its failed and cancelled
    /// lakes: those tasks go back to pending with fresh attempts, the job back to running;
    /// its succeeded lakes and their results stay. A job still open, or one that succeeded,
    /// is a conflict; a closed intake (a drain) refuses it like a submission. Journaled.
    async fn job_rerun(&self, p: JobRerunParams) -> Result<Job>;

    /// Takes up to `limit` webhook deliveries that are due, oldest first, each for `lease`
    /// (a sender that dies mid-try leaves it due again after that), counting the try.
    async fn webhook_take(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: std::time::Duration,
    ) -> Result<Vec<WebhookDelivery>>;

    /// Records how a try went (delivered, to be tried again, given up), journaled on the job.
    async fn webhook_record(
        &self,
        d: &WebhookDelivery,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Sets the most tasks an owner (or every owner without a quota of their own) may have
    /// running at once, across every worker: claims skip an owner at the limit. Journaled.
    async fn quota_set(&self, p: QuotaSetParams) -> Result<Quota>;

    /// Removes a quota; [`StoreError::NotFound`] if there was none. Journaled.
    async fn quota_clear(&self, target: &QuotaTarget, by: &str, now: DateTime<Utc>) -> Result<()>;

    /// Every quota set.
    async fn quota_list(&self) -> Result<Vec<Quota>>;

    /// The quota that applies to `owner` (their own, else the default), if any, and how many
    /// of their tasks run now.
    async fn quota_usage(&self, owner: &str) -> Result<Option<QuotaUsage>>;

    /// Lifts a pause; [`StoreError::NotFound`] if the target was not paused. Journaled.
    async fn pause_clear(&self, target: &PauseTarget, by: &str, now: DateTime<Utc>) -> Result<()>;

    /// Every pause in force.
    async fn pause_list(&self) -> Result<Vec<Pause>>;

    /// The pauses that hold back a job: all, its owner, itself, or a scope of one of its
    /// pending tasks.
    async fn pause_list_for_job(&self, job: JobId) -> Result<Vec<Pause>>;

    /// Closes intake (`sluice drain`): once this commits, `job_insert` refuses new jobs on every
    /// process with [`StoreError::Closed`] (repeating an accepted idempotent submission still
    /// returns its job), and no submission that saw intake open is still uncommitted. Closing
    /// again replaces the reason. Journaled (`intake.closed`).
    async fn intake_close(&self, p: IntakeCloseParams) -> Result<IntakeHold>;

    /// Reopens intake; [`StoreError::NotFound`] if it was open. Journaled (`intake.opened`).
    async fn intake_open(&self, by: &str, now: DateTime<Utc>) -> Result<()>;

    /// The hold on intake, if it is closed.
    async fn intake_get(&self) -> Result<Option<IntakeHold>>;

    /// The journal, oldest first.
    async fn event_list(&self, p: EventListParams) -> Result<Vec<Event>>;

    /// One leader-election round: `holder` takes role `name` if its lease is free or expired,
    /// or renews it if it already holds it. Returns who holds the role now (maybe another
    /// process). A change of holder bumps `term` and is journaled (`leader.elected`).
    async fn leader_elect(&self, p: LeaderElectParams) -> Result<Leadership>;

    /// Gives up role `name` if `holder` holds it (its lease ends now, a standby takes over at
    /// its next round). Returns whether it was held.
    async fn leader_resign(&self, name: &str, holder: &str, now: DateTime<Utc>) -> Result<bool>;

    /// The leader's fairness pass (ADR 0006): owners whose number of open jobs at a priority
    /// changed get their jobs' pending tasks re-tagged at the current virtual time, interleaved,
    /// with that number as stride. Returns how many jobs were re-strided.
    async fn job_rebalance(&self, p: JobRebalanceParams) -> Result<usize>;

    /// The open backlog per priority, from the open jobs' counters (no scan of tasks).
    async fn job_backlog(&self) -> Result<Vec<Backlog>>;

    /// Tasks by scope and state, from counters the database keeps up to date on every task
    /// write (triggers; on Postgres as insert-only deltas that this call folds in), and the
    /// creation time of the oldest pending task (one index probe). Never counts `tasks`.
    async fn task_backlog(&self) -> Result<TaskBacklog>;

    /// Jobs that finished in `(after, until]`, oldest first (for time-to-answer).
    async fn job_finished(&self, p: JobFinishedParams) -> Result<Vec<FinishedJob>>;
}

/// Whole listings on top of the paged ones.
#[async_trait]
pub trait StoreExt: Store {
    /// Every task of a job, in id order (pages of 5,000).
    async fn task_list_all(&self, job_id: JobId) -> Result<Vec<Task>> {
        let mut out = Vec::new();
        loop {
            let page = self
                .task_list(TaskListParams {
                    job_id,
                    limit: 5_000,
                    after: out.last().map(|t: &Task| t.id),
                })
                .await?;
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page);
        }
    }

    /// The journal rows `p` selects from `p.after_id` on, in id order, until `stop` says so
    /// of the last row read (pages of `p.limit`).
    async fn event_list_until(
        &self,
        mut p: EventListParams,
        stop: &(dyn for<'e> Fn(&'e Event) -> bool + Sync),
    ) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        loop {
            let page = self.event_list(p.clone()).await?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            p.after_id = Some(last.id);
            let done = stop(last);
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }
}

impl<T: Store + ?Sized> StoreExt for T {}

/// Opens the store a URL names: `postgres://…`/`postgresql://…` or `sqlite://PATH`
/// (`sqlite::memory:` for a throwaway one), and applies migrations.
pub async fn connect(url: &str, opts: ConnectOptions) -> Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(PgStore::connect(url, opts).await?)
        } else if url.starts_with("sqlite:") {
            Arc::new(SqliteStore::connect(url).await?)
        } else {
            return Err(StoreError::Invalid(format!(
                "unsupported database url {:?}: expected postgres://… or sqlite://…",
                redact_url(url)
            )));
        };
    store.migrate().await?;
    Ok(store)
}

pub use sluice_core::secrets::redact_url;
