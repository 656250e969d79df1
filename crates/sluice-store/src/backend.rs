//! One [`Store`] over a thin per-database [`Backend`] (River's driver layering): every method
//! is written here once, as a transaction script of [`crate::scripts`], except the operations
//! where a database's own statements pay — PostgreSQL's one-statement CTEs on the claim path
//! (insert, claim, heartbeat, finish, hand-back, rescue, the token take) and the backlog
//! aggregates. Those the backend overrides, whole.

use crate::Store;
use crate::db::Db;
use crate::error::{Result, from_sqlx};
use crate::model::*;
use crate::scripts;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::{JobId, QuotaTarget, TaskId};

/// What differs between PostgreSQL and SQLite: connections, transactions, migrations and the
/// operations written per database for speed.
#[async_trait]
pub(crate) trait Backend: Send + Sync + std::fmt::Debug + 'static {
    type D: Db;
    /// `postgres` or `sqlite`.
    const NAME: &'static str;

    fn pool(&self) -> &sqlx::Pool<Self::D>;

    /// A write transaction (SQLite takes the write lock up front: `BEGIN IMMEDIATE`).
    async fn begin(&self) -> Result<sqlx::Transaction<'static, Self::D>> {
        self.pool().begin().await.map_err(from_sqlx)
    }

    /// A connection of the pool, for a statement outside a transaction.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Self::D>> {
        self.pool().acquire().await.map_err(from_sqlx)
    }

    /// Whether a transaction that failed with `e` lost a race and may run again.
    fn is_race(_e: &sqlx::Error) -> bool {
        false
    }

    /// The database's migrations (`migrations/postgres`, `migrations/sqlite`).
    fn migrator(&self) -> &'static sqlx::migrate::Migrator;

    /// A file every process locks while it migrates, where the database cannot serialize
    /// migrations itself (SQLite; Postgres takes an advisory lock).
    fn migrate_lock(&self) -> Option<&std::path::Path> {
        None
    }
    async fn job_insert(&self, p: JobInsertParams) -> Result<JobInserted>;
    /// Claims up to `p.limit` (> 0) pending tasks runnable at `p.now`, in release order,
    /// under the holds in force ([`claim_plan`]: passes from [`ClaimPlan::next_pass`]), leased
    /// until `expires` and journaled.
    async fn task_claim(
        &self,
        p: &TaskClaimParams,
        expires: DateTime<Utc>,
    ) -> Result<Vec<ClaimedTask>>;
    async fn task_heartbeat(&self, p: TaskHeartbeatParams) -> Result<Vec<Lease>>;
    async fn task_finish(&self, p: TaskFinishParams) -> Result<FinishReport>;
    async fn task_hand_back(&self, p: TaskHandBackParams) -> Result<Vec<TaskId>>;
    async fn task_rescue_expired(&self, p: TaskRescueParams) -> Result<Vec<RescuedTask>>;
    async fn task_wait(&self, timeout: std::time::Duration);
    async fn budget_take(&self, p: BudgetTakeParams) -> Result<u32>;
    async fn job_backlog(&self) -> Result<Vec<Backlog>>;
    async fn task_backlog(&self) -> Result<TaskBacklog>;
}

/// Times a transaction that lost a race (deadlock, serialization failure) is run again.
pub(crate) const RACE_RETRIES: usize = 5;

/// Runs `$body` — an expression using `$c`, the connection of a fresh transaction of backend
/// `$b` — and commits; runs it again when it lost a race.
macro_rules! in_tx {
    ($b:expr, |$c:ident| $body:expr) => {{
        let b = $b;
        let mut tries = 0;
        loop {
            let mut tx = $crate::backend::Backend::begin(b).await?;
            let r = {
                let $c = &mut *tx;
                $body
            };
            let r = match r {
                Ok(v) => tx
                    .commit()
                    .await
                    .map_err($crate::error::from_sqlx)
                    .map(|_| v),
                Err(e) => Err(e),
            };
            match r {
                Err($crate::error::StoreError::Unavailable(e))
                    if tries < $crate::backend::RACE_RETRIES && $crate::backend::is_race_of(b, &e) =>
                {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "transaction lost a race, running it again");
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use in_tx;

pub(crate) fn is_race_of<B: Backend>(_b: &B, e: &sqlx::Error) -> bool {
    B::is_race(e)
}

/// The store over backend `B` (see the module docs).
#[derive(Debug, Clone)]
pub struct SqlStore<B>(pub(crate) B);

#[async_trait]
impl<B: Backend> Store for SqlStore<B>
where
    <B::D as sqlx::Database>::Connection: sqlx::migrate::Migrate,
{
    fn backend(&self) -> &'static str {
        B::NAME
    }
    async fn migrate(&self) -> Result<()> {
        // Processes started together on a fresh SQLite file would each apply the first
        // migration ("table already exists"): one at a time, the others then find it done.
        let _lock = match self.0.migrate_lock() {
            Some(path) => Some(lock_file(path.to_path_buf()).await?),
            None => None,
        };
        self.0.migrator().run(self.0.pool()).await?;
        Ok(())
    }
    async fn ready(&self) -> Result<()> {
        let built = self.0.migrator().iter().map(|m| m.version).max();
        let applied = scripts::schema_version::<B::D>(&mut *self.0.conn().await?).await?;
        schema_ready(applied, built.unwrap_or(0))
    }

    async fn token_insert(&self, p: TokenInsertParams) -> Result<ApiToken> {
        scripts::token_insert::<B::D>(&mut *self.0.conn().await?, &p).await
    }
    async fn token_find(&self, hash: &str) -> Result<ApiToken> {
        scripts::token_find::<B::D>(&mut *self.0.conn().await?, hash).await
    }
    async fn token_list(&self) -> Result<Vec<ApiToken>> {
        scripts::token_list::<B::D>(&mut *self.0.conn().await?).await
    }
    async fn token_revoke(&self, id: i64, now: DateTime<Utc>) -> Result<ApiToken> {
        scripts::token_revoke::<B::D>(&mut *self.0.conn().await?, id, now).await
    }

    async fn session_insert(&self, p: SessionInsertParams) -> Result<()> {
        scripts::session_insert::<B::D>(&mut *self.0.conn().await?, &p).await
    }
    async fn session_find(&self, hash: &str, now: DateTime<Utc>) -> Result<ConsoleSession> {
        scripts::session_find::<B::D>(&mut *self.0.conn().await?, hash, now).await
    }
    async fn session_delete(&self, hash: &str) -> Result<()> {
        scripts::session_delete::<B::D>(&mut *self.0.conn().await?, hash).await
    }

    async fn job_find_by_key(&self, owner: &str, key: &str) -> Result<Job> {
        scripts::job_by_key::<B::D>(&mut *self.0.conn().await?, owner, key).await
    }
    async fn schedule_insert(&self, p: ScheduleInsertParams) -> Result<Schedule> {
        in_tx!(&self.0, |c| scripts::schedule_insert::<B::D>(c, &p).await)
    }
    async fn schedule_get(&self, id: i64) -> Result<Schedule> {
        scripts::schedule_get::<B::D>(&mut *self.0.conn().await?, id).await
    }
    async fn schedule_list(&self, owner: Option<&str>) -> Result<Vec<Schedule>> {
        scripts::schedule_list::<B::D>(&mut *self.0.conn().await?, owner).await
    }
    async fn schedule_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Schedule>> {
        scripts::schedule_due::<B::D>(&mut *self.0.conn().await?, now, limit).await
    }
    async fn schedule_ran(&self, p: ScheduleRanParams) -> Result<bool> {
        in_tx!(&self.0, |c| scripts::schedule_ran::<B::D>(c, &p).await)
    }
    async fn schedule_pause(&self, id: i64, by: &str, now: DateTime<Utc>) -> Result<Schedule> {
        in_tx!(&self.0, |c| scripts::schedule_hold::<B::D>(
            c, id, by, true, now, now
        )
        .await)
    }
    async fn schedule_resume(
        &self,
        id: i64,
        by: &str,
        next_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Schedule> {
        in_tx!(&self.0, |c| scripts::schedule_hold::<B::D>(
            c, id, by, false, next_at, now
        )
        .await)
    }
    async fn schedule_delete(&self, id: i64, by: &str, now: DateTime<Utc>) -> Result<()> {
        in_tx!(&self.0, |c| scripts::schedule_delete::<B::D>(
            c, id, by, now
        )
        .await)
    }

    async fn job_insert(&self, p: JobInsertParams) -> Result<JobInserted> {
        validate_job(&p)?;
        self.0.job_insert(p).await
    }
    async fn job_get(&self, id: JobId) -> Result<Job> {
        scripts::job_get::<B::D>(&mut *self.0.conn().await?, id).await
    }
    async fn job_list(&self, p: JobListParams) -> Result<Vec<Job>> {
        scripts::job_list::<B::D>(&mut *self.0.conn().await?, &p).await
    }
    async fn job_cancel(&self, p: JobCancelParams) -> Result<Job> {
        in_tx!(&self.0, |c| scripts::job_cancel::<B::D>(c, &p).await)
    }

    async fn task_claim(&self, p: TaskClaimParams) -> Result<Vec<ClaimedTask>> {
        if p.limit == 0 {
            return Ok(Vec::new());
        }
        let expires = crate::rows::lease_end(p.now, p.lease)?;
        self.0.task_claim(&p, expires).await
    }
    async fn task_heartbeat(&self, p: TaskHeartbeatParams) -> Result<Vec<Lease>> {
        if p.leases.is_empty() {
            return Ok(Vec::new());
        }
        self.0.task_heartbeat(p).await
    }
    async fn task_finish(&self, p: TaskFinishParams) -> Result<FinishReport> {
        if p.finishes.is_empty() {
            return Ok(FinishReport::default());
        }
        self.0.task_finish(p).await
    }
    async fn task_hand_back(&self, p: TaskHandBackParams) -> Result<Vec<TaskId>> {
        self.0.task_hand_back(p).await
    }
    async fn task_rescue_expired(&self, p: TaskRescueParams) -> Result<Vec<RescuedTask>> {
        self.0.task_rescue_expired(p).await
    }
    async fn task_wait(&self, timeout: std::time::Duration) {
        self.0.task_wait(timeout).await
    }
    async fn task_get(&self, id: TaskId) -> Result<Task> {
        scripts::task_get::<B::D>(&mut *self.0.conn().await?, id).await
    }
    async fn task_list(&self, p: TaskListParams) -> Result<Vec<Task>> {
        scripts::task_list::<B::D>(&mut *self.0.conn().await?, &p).await
    }

    async fn lake_insert(&self, p: LakeInsertParams) -> Result<Lake> {
        scripts::lake_insert::<B::D>(&mut *self.0.conn().await?, &p).await
    }
    async fn lake_list(&self) -> Result<Vec<Lake>> {
        scripts::lake_list::<B::D>(&mut *self.0.conn().await?).await
    }
    async fn lake_get(&self, name: &str) -> Result<Lake> {
        scripts::lake_get::<B::D>(&mut *self.0.conn().await?, name).await
    }
    async fn lake_remove(&self, name: &str) -> Result<()> {
        scripts::lake_remove::<B::D>(&mut *self.0.conn().await?, name).await
    }

    async fn budget_set(&self, p: BudgetSetParams) -> Result<Budget> {
        in_tx!(&self.0, |c| scripts::budget_set::<B::D>(c, &p).await)
    }
    async fn budget_list(&self) -> Result<Vec<Budget>> {
        scripts::budget_list::<B::D>(&mut *self.0.conn().await?).await
    }
    async fn budget_take(&self, p: BudgetTakeParams) -> Result<u32> {
        if p.n == 0 {
            return Ok(0);
        }
        self.0.budget_take(p).await
    }
    async fn budget_feedback(
        &self,
        scope: &str,
        f: BudgetFeedback,
        now: DateTime<Utc>,
    ) -> Result<()> {
        in_tx!(&self.0, |c| scripts::budget_feedback_tx::<B::D>(
            c, scope, f, now
        )
        .await)
    }

    async fn breaker_list(&self) -> Result<Vec<BreakerRow>> {
        scripts::breaker_list::<B::D>(&mut *self.0.conn().await?).await
    }
    async fn breaker_update(&self, p: BreakerUpdateParams) -> Result<BreakerUpdate> {
        in_tx!(&self.0, |c| scripts::breaker_update::<B::D>(c, &p).await)
    }

    async fn job_purge(&self, p: JobPurgeParams) -> Result<Vec<PurgedJob>> {
        let ids = scripts::job_purge_select::<B::D>(&mut *self.0.conn().await?, &p).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let purged = in_tx!(&self.0, |c| scripts::job_purge_one::<B::D>(
                c, id, &p.by, p.now
            )
            .await)?;
            out.extend(purged);
        }
        Ok(out)
    }
    async fn job_set_priority(&self, p: JobPriorityParams) -> Result<Job> {
        if !(-100..=100).contains(&p.priority) {
            return Err(crate::StoreError::Invalid(format!(
                "priority must be -100 to 100, got {}",
                p.priority
            )));
        }
        in_tx!(&self.0, |c| scripts::job_set_priority::<B::D>(c, &p).await)
    }
    async fn job_rerun(&self, p: JobRerunParams) -> Result<Job> {
        in_tx!(&self.0, |c| scripts::job_rerun::<B::D>(c, &p).await)
    }
    async fn webhook_take(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: std::time::Duration,
    ) -> Result<Vec<WebhookDelivery>> {
        in_tx!(&self.0, |c| scripts::webhook_take::<B::D>(
            c, now, limit, lease
        )
        .await)
    }
    async fn webhook_record(
        &self,
        d: &WebhookDelivery,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<()> {
        in_tx!(&self.0, |c| scripts::webhook_record::<B::D>(
            c, d, &outcome, now
        )
        .await)
    }
    async fn quota_set(&self, p: QuotaSetParams) -> Result<Quota> {
        in_tx!(&self.0, |c| scripts::quota_set::<B::D>(c, &p).await)
    }
    async fn quota_clear(&self, target: &QuotaTarget, by: &str, now: DateTime<Utc>) -> Result<()> {
        in_tx!(&self.0, |c| scripts::quota_clear::<B::D>(
            c, target, by, now
        )
        .await)
    }
    async fn quota_list(&self) -> Result<Vec<Quota>> {
        scripts::quota_list::<B::D>(&mut *self.0.conn().await?).await
    }
    async fn quota_usage(&self, owner: &str) -> Result<Option<QuotaUsage>> {
        scripts::quota_usage::<B::D>(&mut *self.0.conn().await?, owner).await
    }

    async fn pause_set(&self, p: PauseSetParams) -> Result<Pause> {
        in_tx!(&self.0, |c| scripts::pause_set::<B::D>(c, &p).await)
    }
    async fn pause_clear(&self, target: &PauseTarget, by: &str, now: DateTime<Utc>) -> Result<()> {
        in_tx!(&self.0, |c| scripts::pause_clear::<B::D>(
            c, target, by, now
        )
        .await)
    }
    async fn pause_list(&self) -> Result<Vec<Pause>> {
        scripts::pause_list::<B::D>(&mut *self.0.conn().await?).await
    }
    async fn pause_list_for_job(&self, job: JobId) -> Result<Vec<Pause>> {
        scripts::pause_list_for_job::<B::D>(&mut *self.0.conn().await?, job).await
    }

    async fn intake_close(&self, p: IntakeCloseParams) -> Result<IntakeHold> {
        in_tx!(&self.0, |c| scripts::intake_close::<B::D>(c, &p).await)
    }
    async fn intake_open(&self, by: &str, now: DateTime<Utc>) -> Result<()> {
        in_tx!(&self.0, |c| scripts::intake_open::<B::D>(c, by, now).await)
    }
    async fn intake_get(&self) -> Result<Option<IntakeHold>> {
        scripts::intake_get::<B::D>(&mut *self.0.conn().await?).await
    }

    async fn event_list(&self, p: EventListParams) -> Result<Vec<Event>> {
        scripts::event_list::<B::D>(&mut *self.0.conn().await?, &p).await
    }

    async fn leader_elect(&self, p: LeaderElectParams) -> Result<Leadership> {
        in_tx!(&self.0, |c| scripts::leader_elect::<B::D>(c, &p).await)
    }
    async fn leader_resign(&self, name: &str, holder: &str, now: DateTime<Utc>) -> Result<bool> {
        in_tx!(&self.0, |c| scripts::leader_resign::<B::D>(
            c, name, holder, now
        )
        .await)
    }

    async fn job_rebalance(&self, p: JobRebalanceParams) -> Result<usize> {
        in_tx!(&self.0, |c| scripts::job_rebalance::<B::D>(c, &p).await)
    }
    async fn job_backlog(&self) -> Result<Vec<Backlog>> {
        self.0.job_backlog().await
    }
    async fn task_backlog(&self) -> Result<TaskBacklog> {
        self.0.task_backlog().await
    }
    async fn job_finished(&self, p: JobFinishedParams) -> Result<Vec<FinishedJob>> {
        scripts::job_finished::<B::D>(&mut *self.0.conn().await?, &p).await
    }
}

/// Opens and locks `path` (exclusively, waiting for other processes); the lock lasts as long
/// as the returned file.
pub(crate) async fn lock_file(path: std::path::PathBuf) -> Result<std::fs::File> {
    let locked = tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        f.lock()?;
        Ok::<_, std::io::Error>(f)
    })
    .await;
    match locked {
        Ok(Ok(f)) => Ok(f),
        Ok(Err(e)) => Err(crate::StoreError::Invalid(format!(
            "locking the database for its migrations: {e}"
        ))),
        Err(e) => Err(crate::StoreError::Invalid(format!(
            "locking the database for its migrations: {e}"
        ))),
    }
}
