//! Queue throughput: bulk-insert N no-op tasks into a fresh schema on Postgres, then burn them
//! down through the real worker loop (claim → run → finish, journal and job counters included)
//! and report tasks/s until the database shows the job finished. Prints one JSON line.

use anyhow::{Context, Result};
use async_trait::async_trait;
use clap::Parser;
use sluice_core::{JobId, TaskId};
use sluice_core::{JobState, SystemClock};
use sluice_store::{
    ClaimedTask, Event, EventListParams, FinishReport, Job, JobCancelParams, JobInserted, Lease,
    RescuedTask, Task, TaskClaimParams, TaskFinishParams, TaskHandBackParams, TaskHeartbeatParams,
    TaskListParams, TaskRescueParams,
};
use sluice_store::{ConnectOptions, JobInsertParams, NewTask, PgStore, Store};
use sluice_worker::{BuiltinRunner, Worker, WorkerConfig};
use sqlx::{Connection, Executor};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Tasks to burn down.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Worker loops (each with its own claimer, finisher and heartbeater) in this process.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 4000)]
    concurrency: usize,
    /// Most tasks per claim.
    #[arg(long, default_value_t = 2000)]
    claim_batch: u32,
    /// Most outcomes per finish call.
    #[arg(long, default_value_t = 4000)]
    finish_batch: usize,
    /// Lakes (tasks) per job: several jobs make completions touch several job rows.
    #[arg(long, default_value_t = 100_000)]
    job_size: usize,
    /// Without the task counters' triggers (ADR 0009): to measure what they cost, side by side.
    #[arg(long)]
    no_task_counters: bool,
    /// Set a quota of running tasks for every owner (`sluice quota set --default`): claims
    /// then take turns on an advisory lock and count running tasks. Above the slots, it
    /// measures what enforcing a quota costs without limiting anything.
    #[arg(long)]
    owner_quota: Option<i64>,
    /// Rounds of enqueue and burn-down in one schema (a line each), to watch table sizes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Purge each round's jobs (tasks, journal) while the next round burns down, and the last
    /// round's after it: what retention costs claims, and whether the tables stop growing.
    #[arg(long)]
    purge: bool,
    /// VACUUM the tables after each round (what autovacuum does in a steady state, given the
    /// time a bench round does not leave it).
    #[arg(long)]
    vacuum: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let url = sluice_store::testing::test_db_url().await;
    let schema = format!("bench_{}", sluice_store::testing::fresh_schema());
    let store = PgStore::connect(
        &url,
        ConnectOptions {
            max_connections: 4 * args.workers.max(1) as u32 + 2,
            schema: Some(schema.clone()),
            ..Default::default()
        },
    )
    .await
    .context("connecting")?;
    store.migrate().await?;
    if args.no_task_counters {
        sluice_store::testing::disable_task_counters(&store).await?;
    }
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(store.pool())
        .await?;
    let timed = Arc::new(Timed {
        inner: Arc::new(store),
        calls: Mutex::default(),
        claims: Mutex::default(),
    });
    let store: Arc<dyn Store> = timed.clone();
    if let Some(max_running) = args.owner_quota {
        store
            .quota_set(sluice_store::QuotaSetParams {
                target: sluice_store::QuotaTarget::Default,
                max_running,
                by: "bench".into(),
                now: chrono::Utc::now(),
            })
            .await?;
    }

    let mut previous: Vec<JobId> = Vec::new();
    for round in 1..=args.rounds {
        // The previous round's jobs go while this round burns down.
        let purger = args.purge.then(|| {
            let (store, ids) = (store.clone(), std::mem::take(&mut previous));
            tokio::spawn(async move { purge_jobs(store.as_ref(), &ids).await })
        });
        let line = run_round(&args, &store, &timed, &sync, &mut previous).await?;
        let purged = match purger {
            Some(h) => Some(h.await??),
            None => None,
        };
        if args.vacuum {
            vacuum(&url, &schema).await?;
        }
        let sizes = table_sizes(&url, &schema).await?;
        let mut line = line;
        line["round"] = round.into();
        line["purged_during"] = serde_json::json!(purged);
        line["table_bytes_after"] = sizes;
        println!("{line}");
    }
    if args.purge && !previous.is_empty() {
        let (jobs, secs) = purge_jobs(store.as_ref(), &previous).await?;
        vacuum(&url, &schema).await?;
        println!(
            "{}",
            serde_json::json!({
                "system": "sluice", "after": "last purge and VACUUM", "purged": [jobs, secs],
                "table_bytes_after": table_sizes(&url, &schema).await?,
            })
        );
    }
    let mut c = sqlx::PgConnection::connect(&url).await?;
    c.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .await?;
    Ok(())
}

/// One round: enqueue `--tasks` in jobs of `--job-size`, burn them down with the workers.
async fn run_round(
    args: &Args,
    store: &Arc<dyn Store>,
    timed: &Arc<Timed>,
    sync: &str,
    previous: &mut Vec<JobId>,
) -> Result<serde_json::Value> {
    let t = Instant::now();
    let mut jobs = Vec::new();
    let mut submits = Vec::new();
    let mut left = args.tasks;
    while left > 0 {
        let n = left.min(args.job_size.max(1));
        left -= n;
        let tasks = (0..n)
            .map(|i| NewTask {
                lake: format!("lake-{i:06}"),
                scope: format!("aws:{}", i % 16),
                est_calls: 1,
                shareable: false,
            })
            .collect();
        let one = Instant::now();
        let j = store
            .job_insert(JobInsertParams {
                retention_secs: None,
                webhook: None,
                owner: "bench".into(),
                idempotency_key: None,
                spec: serde_json::json!({"kind": "noop"}),
                sql: None,
                priority: 0,
                max_attempts: 3,
                tasks,
                now: chrono::Utc::now(),
            })
            .await?;
        submits.push(one.elapsed().as_secs_f64() * 1000.0);
        jobs.push(j.job.id);
    }
    let enqueue_secs = t.elapsed().as_secs_f64();
    // What the API and the leader read, with the whole round's backlog pending.
    let ms = |t: Instant| round(t.elapsed().as_secs_f64() * 1000.0);
    let t1 = Instant::now();
    store
        .job_list(sluice_store::JobListParams {
            owner: None,
            state: None,
            before: None,
            limit: 50,
        })
        .await?;
    let job_list_ms = ms(t1);
    let t1 = Instant::now();
    store.job_backlog().await?;
    let job_backlog_ms = ms(t1);
    let t1 = Instant::now();
    store.task_backlog().await?;
    let task_backlog_ms = ms(t1);
    let at_backlog = serde_json::json!({
        "pending": args.tasks,
        "submit_ms": percentiles(std::mem::take(&mut submits)),
        "job_list_50_ms": job_list_ms,
        "job_backlog_ms": job_backlog_ms,
        "task_backlog_ms": task_backlog_ms,
    });

    let stop = CancellationToken::new();
    let clock = Arc::new(SystemClock);
    let runner = Arc::new(BuiltinRunner::new(store.clone()));
    timed
        .calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    let t = Instant::now();
    let mut handles = Vec::new();
    for w in 0..args.workers.max(1) {
        let mut cfg = WorkerConfig::new(format!("bench-{w}"));
        cfg.concurrency = args.concurrency;
        cfg.claim_batch = args.claim_batch;
        cfg.finish_batch = args.finish_batch;
        cfg.idle_poll = Duration::from_millis(5);
        handles.push(tokio::spawn(
            Worker::new(store.clone(), runner.clone(), clock.clone(), cfg).run(stop.clone()),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    for id in &jobs {
        loop {
            let j = store.job_get(*id).await?;
            if j.state.is_terminal() {
                anyhow::ensure!(j.state == JobState::Succeeded, "job {id} ended {}", j.state);
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "burn-down did not finish: {j:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let process_secs = t.elapsed().as_secs_f64();
    stop.cancel();
    let mut claimed = 0;
    for h in handles {
        claimed += h.await?.claimed;
    }
    *previous = jobs.clone();
    let claims = std::mem::take(&mut *timed.claims.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(serde_json::json!({
        "system": "sluice",
        "tasks": args.tasks,
        "jobs": jobs.len(),
        "workers": args.workers,
        "concurrency": args.concurrency,
        "claim_batch": args.claim_batch,
        "synchronous_commit": sync,
        "task_counters": !args.no_task_counters,
        "owner_quota": args.owner_quota,
        "bulk": {"secs": round(enqueue_secs), "per_sec": (args.tasks as f64 / enqueue_secs).round()},
        "process": {"secs": round(process_secs), "per_sec_db": (args.tasks as f64 / process_secs).round(), "claimed": claimed},
        "store_calls": timed.report(),
        "claim_ms": percentiles(claims),
        "at_full_backlog": at_backlog,
    }))
}

/// Purges these finished jobs one by one; returns how many and how long it took.
async fn purge_jobs(store: &dyn Store, ids: &[JobId]) -> Result<(usize, f64)> {
    let t = Instant::now();
    let mut n = 0;
    for id in ids {
        n += store
            .job_purge(sluice_store::JobPurgeParams {
                select: sluice_store::PurgeSelect::Job(*id),
                limit: 1,
                by: "bench".into(),
                now: chrono::Utc::now(),
            })
            .await?
            .len();
    }
    Ok((n, round(t.elapsed().as_secs_f64())))
}

async fn vacuum(url: &str, schema: &str) -> Result<()> {
    sqlx::PgConnection::connect(url)
        .await?
        .execute(sqlx::AssertSqlSafe(format!(
            "VACUUM {schema}.tasks, {schema}.events, {schema}.jobs"
        )))
        .await?;
    Ok(())
}

/// Bytes of each table with its indexes.
async fn table_sizes(url: &str, schema: &str) -> Result<serde_json::Value> {
    let mut c = sqlx::PgConnection::connect(url).await?;
    let mut out = serde_json::Map::new();
    for t in ["tasks", "events", "jobs"] {
        let b: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT pg_total_relation_size('{schema}.{t}')"
        )))
        .fetch_one(&mut c)
        .await?;
        out.insert(t.into(), b.into());
    }
    Ok(out.into())
}

/// p50, p99 and max of claim latencies, in milliseconds.
fn percentiles(mut ms: Vec<f64>) -> serde_json::Value {
    if ms.is_empty() {
        return serde_json::Value::Null;
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    serde_json::json!({"p50": round(at(0.5)), "p99": round(at(0.99)), "max": round(at(1.0)), "n": ms.len()})
}

/// A store that times every call, to show where a burn-down spends its time.
#[derive(Debug)]
struct Timed {
    inner: Arc<dyn Store>,
    /// method -> (calls, items, total time)
    calls: Mutex<BTreeMap<&'static str, (u64, u64, Duration)>>,
    /// Each claim's latency, in milliseconds.
    claims: Mutex<Vec<f64>>,
}

impl Timed {
    fn note(&self, method: &'static str, items: usize, since: Instant) {
        let mut c = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let e = c.entry(method).or_default();
        e.0 += 1;
        e.1 += items as u64;
        e.2 += since.elapsed();
    }

    fn report(&self) -> serde_json::Value {
        let c = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        c.iter()
            .map(|(m, (n, items, d))| {
                let v = serde_json::json!({
                    "calls": n, "items": items, "total_secs": round(d.as_secs_f64()),
                    "mean_ms": round(d.as_secs_f64() * 1000.0 / (*n).max(1) as f64),
                });
                (m.to_string(), v)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[async_trait]
impl Store for Timed {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn migrate(&self) -> sluice_store::Result<()> {
        self.inner.migrate().await
    }
    async fn ready(&self) -> sluice_store::Result<()> {
        self.inner.ready().await
    }
    async fn job_list(&self, p: sluice_store::JobListParams) -> sluice_store::Result<Vec<Job>> {
        self.inner.job_list(p).await
    }
    async fn token_insert(
        &self,
        p: sluice_store::TokenInsertParams,
    ) -> sluice_store::Result<sluice_store::ApiToken> {
        self.inner.token_insert(p).await
    }
    async fn token_find(&self, hash: &str) -> sluice_store::Result<sluice_store::ApiToken> {
        self.inner.token_find(hash).await
    }
    async fn token_list(&self) -> sluice_store::Result<Vec<sluice_store::ApiToken>> {
        self.inner.token_list().await
    }
    async fn token_revoke(
        &self,
        id: i64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> sluice_store::Result<sluice_store::ApiToken> {
        self.inner.token_revoke(id, now).await
    }
    async fn session_insert(
        &self,
        p: sluice_store::SessionInsertParams,
    ) -> sluice_store::Result<()> {
        self.inner.session_insert(p).await
    }
    async fn session_find(
        &self,
        hash: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> sluice_store::Result<sluice_store::ConsoleSession> {
        self.inner.session_find(hash, now).await
    }
    async fn session_delete(&self, hash: &str) -> sluice_store::Result<()> {
        self.inner.session_delete(hash).await
    }
    async fn job_find_by_key(&self, owner: &str, key: &str) -> sluice_store::Result<Job> {
        self.inner.job_find_by_key(owner, key).await
    }
    async fn schedule_insert(
        &self,
        p: sluice_store::ScheduleInsertParams,
    ) -> sluice_store::Result<sluice_store::Schedule> {
        self.inner.schedule_insert(p).await
    }
    async fn schedule_get(&self, id: i64) -> sluice_store::Result<sluice_store::Schedule> {
        self.inner.schedule_get(id).await
    }
    async fn schedule_list(
        &self,
        owner: Option<&str>,
    ) -> sluice_store::Result<Vec<sluice_store::Schedule>> {
        self.inner.schedule_list(owner).await
    }
    async fn schedule_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> sluice_store::Result<Vec<sluice_store::Schedule>> {
        self.inner.schedule_due(now, limit).await
    }
    async fn schedule_ran(&self, p: sluice_store::ScheduleRanParams) -> sluice_store::Result<bool> {
        self.inner.schedule_ran(p).await
    }
    async fn schedule_pause(
        &self,
        id: i64,
        by: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> sluice_store::Result<sluice_store::Schedule> {
        self.inner.schedule_pause(id, by, now).await
    }
    async fn schedule_resume(
        &self,
        id: i64,
        by: &str,
        next_at: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> sluice_store::Result<sluice_store::Schedule> {
        self.inner.schedule_resume(id, by, next_at, now).await
    }
    async fn schedule_delete(
        &self,
        id: i64,
        by: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> sluice_store::Result<()> {
        self.inner.schedule_delete(id, by, now).await
    }
    async fn job_insert(&self, p: JobInsertParams) -> sluice_store::Result<JobInserted> {
        let (t, n) = (Instant::now(), p.tasks.len());
        let r = self.inner.job_insert(p).await;
        self.note("job_insert", n, t);
        r
    }
    async fn job_get(&self, id: JobId) -> sluice_store::Result<Job> {
        let t = Instant::now();
        let r = self.inner.job_get(id).await;
        self.note("job_get", 1, t);
        r
    }
    async fn job_cancel(&self, p: JobCancelParams) -> sluice_store::Result<Job> {
        self.inner.job_cancel(p).await
    }
    async fn task_claim(&self, p: TaskClaimParams) -> sluice_store::Result<Vec<ClaimedTask>> {
        let t = Instant::now();
        let r = self.inner.task_claim(p).await;
        self.note("task_claim", r.as_ref().map_or(0, Vec::len), t);
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(t.elapsed().as_secs_f64() * 1000.0);
        r
    }
    async fn task_heartbeat(&self, p: TaskHeartbeatParams) -> sluice_store::Result<Vec<Lease>> {
        let (t, n) = (Instant::now(), p.leases.len());
        let r = self.inner.task_heartbeat(p).await;
        self.note("task_heartbeat", n, t);
        r
    }
    async fn task_finish(&self, p: TaskFinishParams) -> sluice_store::Result<FinishReport> {
        let (t, n) = (Instant::now(), p.finishes.len());
        let r = self.inner.task_finish(p).await;
        self.note("task_finish", n, t);
        r
    }
    async fn task_hand_back(&self, p: TaskHandBackParams) -> sluice_store::Result<Vec<TaskId>> {
        self.inner.task_hand_back(p).await
    }
    async fn task_rescue_expired(
        &self,
        p: TaskRescueParams,
    ) -> sluice_store::Result<Vec<RescuedTask>> {
        self.inner.task_rescue_expired(p).await
    }
    async fn task_wait(&self, timeout: Duration) {
        self.inner.task_wait(timeout).await
    }
    async fn task_get(&self, id: TaskId) -> sluice_store::Result<Task> {
        self.inner.task_get(id).await
    }
    async fn task_list(&self, p: TaskListParams) -> sluice_store::Result<Vec<Task>> {
        self.inner.task_list(p).await
    }
    async fn lake_insert(
        &self,
        p: sluice_store::LakeInsertParams,
    ) -> sluice_store::Result<sluice_store::Lake> {
        self.inner.lake_insert(p).await
    }
    async fn lake_list(&self) -> sluice_store::Result<Vec<sluice_store::Lake>> {
        self.inner.lake_list().await
    }
    async fn lake_get(&self, name: &str) -> sluice_store::Result<sluice_store::Lake> {
        self.inner.lake_get(name).await
    }
    async fn lake_remove(&self, name: &str) -> sluice_store::Result<()> {
        self.inner.lake_remove(name).await
    }
    async fn budget_set(
        &self,
        p: sluice_store::BudgetSetParams,
    ) -> sluice_store::Result<sluice_store::Budget> {
        self.inner.budget_set(p).await
    }
    async fn budget_list(&self) -> sluice_store::Result<Vec<sluice_store::Budget>> {
        self.inner.budget_list().await
    }
    async fn budget_take(&self, p: sluice_store::BudgetTakeParams) -> sluice_store::Result<u32> {
        self.inner.budget_take(p).await
    }
    async fn budget_feedback(
        &self,
        scope: &str,
        f: sluice_store::BudgetFeedback,
        now: chrono::DateTime<chrono::Utc>,
    ) -> sluice_store::Result<()> {
        self.inner.budget_feedback(scope, f, now).await
    }
    async fn breaker_list(&self) -> sluice_store::Result<Vec<sluice_store::BreakerRow>> {
        self.inner.breaker_list().await
    }
    async fn breaker_update(
        &self,
        p: sluice_store::BreakerUpdateParams,
    ) -> sluice_store::Result<sluice_store::BreakerUpdate> {
        self.inner.breaker_update(p).await
    }
    async fn pause_set(
        &self,
        p: sluice_store::PauseSetParams,
    ) -> sluice_store::Result<sluice_store::Pause> {
        self.inner.pause_set(p).await
    }
    async fn pause_clear(
        &self,
        t: &sluice_store::PauseTarget,
        by: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> sluice_store::Result<()> {
        self.inner.pause_clear(t, by, now).await
    }
    async fn pause_list(&self) -> sluice_store::Result<Vec<sluice_store::Pause>> {
        self.inner.pause_list().await
    }
    async fn job_purge(
        &self,
        p: sluice_store::JobPurgeParams,
    ) -> sluice_store::Result<Vec<sluice_store::PurgedJob>> {
        self.inner.job_purge(p).await
    }
    async fn job_set_priority(
        &self,
        p: sluice_store::JobPriorityParams,
    ) -> sluice_store::Result<sluice_store::Job> {
        self.inner.job_set_priority(p).await
    }
    async fn job_rerun(
        &self,
        p: sluice_store::JobRerunParams,
    ) -> sluice_store::Result<sluice_store::Job> {
        self.inner.job_rerun(p).await
    }
    async fn webhook_take(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
        lease: Duration,
    ) -> sluice_store::Result<Vec<sluice_store::WebhookDelivery>> {
        self.inner.webhook_take(now, limit, lease).await
    }
    async fn webhook_record(
        &self,
        d: &sluice_store::WebhookDelivery,
        outcome: sluice_store::DeliveryOutcome,
        now: chrono::DateTime<chrono::Utc>,
    ) -> sluice_store::Result<()> {
        self.inner.webhook_record(d, outcome, now).await
    }
    async fn quota_set(
        &self,
        p: sluice_store::QuotaSetParams,
    ) -> sluice_store::Result<sluice_store::Quota> {
        self.inner.quota_set(p).await
    }
    async fn quota_clear(
        &self,
        target: &sluice_store::QuotaTarget,
        by: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> sluice_store::Result<()> {
        self.inner.quota_clear(target, by, now).await
    }
    async fn quota_list(&self) -> sluice_store::Result<Vec<sluice_store::Quota>> {
        self.inner.quota_list().await
    }
    async fn quota_usage(
        &self,
        owner: &str,
    ) -> sluice_store::Result<Option<sluice_store::QuotaUsage>> {
        self.inner.quota_usage(owner).await
    }
    async fn pause_list_for_job(
        &self,
        job: JobId,
    ) -> sluice_store::Result<Vec<sluice_store::Pause>> {
        self.inner.pause_list_for_job(job).await
    }
    async fn event_list(&self, p: EventListParams) -> sluice_store::Result<Vec<Event>> {
        self.inner.event_list(p).await
    }
    async fn leader_elect(
        &self,
        p: sluice_store::LeaderElectParams,
    ) -> sluice_store::Result<sluice_store::Leadership> {
        self.inner.leader_elect(p).await
    }
    async fn leader_resign(
        &self,
        name: &str,
        holder: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> sluice_store::Result<bool> {
        self.inner.leader_resign(name, holder, now).await
    }
    async fn job_backlog(&self) -> sluice_store::Result<Vec<sluice_store::Backlog>> {
        self.inner.job_backlog().await
    }
    async fn task_backlog(&self) -> sluice_store::Result<sluice_store::TaskBacklog> {
        self.inner.task_backlog().await
    }
    async fn intake_close(
        &self,
        p: sluice_store::IntakeCloseParams,
    ) -> sluice_store::Result<sluice_store::IntakeHold> {
        self.inner.intake_close(p).await
    }
    async fn intake_open(
        &self,
        by: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> sluice_store::Result<()> {
        self.inner.intake_open(by, now).await
    }
    async fn intake_get(&self) -> sluice_store::Result<Option<sluice_store::IntakeHold>> {
        self.inner.intake_get().await
    }
    async fn job_finished(
        &self,
        p: sluice_store::JobFinishedParams,
    ) -> sluice_store::Result<Vec<sluice_store::FinishedJob>> {
        self.inner.job_finished(p).await
    }
    async fn job_rebalance(
        &self,
        p: sluice_store::JobRebalanceParams,
    ) -> sluice_store::Result<usize> {
        self.inner.job_rebalance(p).await
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
