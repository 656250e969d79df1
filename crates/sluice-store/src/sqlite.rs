//! The SQLite backend: the embedded default for one process on one machine (`sluice demo`,
//! a laptop). One connection, so every transaction is serialized; WAL with full sync so a
//! committed write survives a crash. Timestamps are stored as microseconds since the epoch.

use crate::backend::{Backend, SqlStore};
use crate::db::to_json;
use crate::error::{Result, StoreError, from_sqlx};
use crate::model::*;
use crate::rows::{
    ClaimRow, ExpiredRow, IntakeRow, RunningRow, intake_hold, job_cols, lease_end, read,
};
use crate::scripts;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::{EventKind, JobEvent, JobId, JobState, TaskEvent, TaskId, TaskState};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// The SQLite backend; the store is [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    pool: SqlitePool,
    /// One process: a submission wakes idle workers directly.
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// The file beside the database that processes lock while they migrate it (`None` in
    /// memory).
    migrate_lock: Option<std::path::PathBuf>,
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_us(v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| StoreError::Corrupt(format!("bad timestamp {v}")))
}

fn from_us_opt(v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(from_us).transpose()
}

async fn job_fetch(tx: &mut Transaction<'static, Sqlite>, id: i64) -> Result<Job> {
    let row = sqlx::query(concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(from_sqlx)?
        .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
    read::<Job, _>(&row)
}

/// Journals `ev` of the running task `t`, a move this backend made by hand (hand-back, rescue).
async fn journal_move(
    tx: &mut Transaction<'static, Sqlite>,
    now: DateTime<Utc>,
    t: &RunningRow,
    ev: TaskEvent,
    detail: serde_json::Value,
) -> Result<()> {
    let task = Some((t.id, t.scope.as_str()));
    scripts::event_insert::<Sqlite>(
        tx,
        now,
        Some(t.job_id),
        task,
        ev.journal_kind(),
        Some(detail),
    )
    .await
}

/// One claim pass in the caller's transaction: up to `limit` tasks not in `skip`, in
/// release order, journaled, their jobs started.
async fn claim_pass(
    tx: &mut Transaction<'static, Sqlite>,
    p: &TaskClaimParams,
    limit: u32,
    expires: DateTime<Utc>,
    skip: &ClaimSkip,
) -> Result<Vec<ClaimedTask>> {
    let rooms = to_json(&skip.room_owners.iter().zip(&skip.rooms).collect::<Vec<_>>())?.to_string();
    // Preferred scopes (ADR 0015), never while a quota is set.
    let quotas = skip.default_room.is_some() || !skip.room_owners.is_empty();
    let prefer: &[String] = if quotas { &[] } else { &p.prefer_scopes };
    let rows = sqlx::query(
        "UPDATE tasks SET state = 'running', lease_owner = ?, lease_token = lease_token + 1, \
             lease_expires_at = ?, updated_at = ? \
         WHERE id IN (SELECT id FROM ( \
             SELECT c.id, row_number() OVER (PARTITION BY c.owner ORDER BY c.priority DESC, c.seq, c.id) AS rn, \
                 COALESCE(q.room, ?) AS room \
             FROM (SELECT id, owner, priority, seq FROM ( \
                 SELECT id, owner, priority, seq, scope FROM tasks WHERE state = 'pending' AND run_after <= ? \
                 AND tasks.scope NOT IN (SELECT value FROM json_each(?)) \
                 AND tasks.owner NOT IN (SELECT value FROM json_each(?)) \
                 AND tasks.job_id NOT IN (SELECT value FROM json_each(?)) \
                 AND (? IS NULL OR ? > 0 OR tasks.owner IN \
                     (SELECT json_extract(value, '$[0]') FROM json_each(?))) \
                 ORDER BY priority DESC, seq, id LIMIT ?) \
                 ORDER BY scope IN (SELECT value FROM json_each(?)) DESC, priority DESC, seq, id \
                 LIMIT ?) c \
             LEFT JOIN (SELECT json_extract(value, '$[0]') AS owner, json_extract(value, '$[1]') AS room FROM json_each(?)) q \
                 ON q.owner = c.owner) \
             WHERE room IS NULL OR rn <= room) \
         RETURNING id, job_id, owner, lake, scope, attempt, max_attempts, crashes, lease_token, shareable, priority, seq",
    )
    .bind(&p.worker)
    .bind(us(expires))
    .bind(us(p.now))
    .bind(skip.default_room)
    .bind(us(p.now))
    .bind(to_json(&skip.scopes)?.to_string())
    .bind(to_json(&skip.owners)?.to_string())
    .bind(to_json(&skip.jobs)?.to_string())
    // An owner without a room of their own under a default of 0 has no candidate at all (so
    // their tasks at the head of the queue cannot fill every pass with nothing).
    .bind(skip.default_room)
    .bind(skip.default_room)
    .bind(rooms.clone())
    .bind(if prefer.is_empty() {
        i64::from(limit)
    } else {
        crate::model::prefer_window(limit)
    })
    .bind(to_json(&prefer)?.to_string())
    .bind(i64::from(limit))
    .bind(rooms)
    .fetch_all(&mut **tx)
    .await
    .map_err(from_sqlx)?;
    journal_claims(tx, p, &rows, expires).await
}

/// Up to `p.share` more pending tasks of each of `lakes`, not in `skip` and never one that
/// crashed a runner, in release order: the tasks a shared scan takes along.
async fn claim_along(
    tx: &mut Transaction<'static, Sqlite>,
    p: &TaskClaimParams,
    lakes: &[String],
    expires: DateTime<Utc>,
    skip: &ClaimSkip,
) -> Result<Vec<ClaimedTask>> {
    let mut rows = Vec::new();
    for lake in lakes {
        rows.extend(
            sqlx::query(
                "UPDATE tasks SET state = 'running', lease_owner = ?, lease_token = lease_token + 1, \
                     lease_expires_at = ?, updated_at = ? \
                 WHERE id IN (SELECT id FROM tasks WHERE lake = ? AND state = 'pending' \
                     AND run_after <= ? AND shareable AND crashes = 0 \
                     AND scope NOT IN (SELECT value FROM json_each(?)) \
                     AND owner NOT IN (SELECT value FROM json_each(?)) \
                     AND job_id NOT IN (SELECT value FROM json_each(?)) \
                     ORDER BY priority DESC, seq, id LIMIT ?) \
                 RETURNING id, job_id, owner, lake, scope, attempt, max_attempts, crashes, lease_token, shareable, priority, seq",
            )
            .bind(&p.worker)
            .bind(us(expires))
            .bind(us(p.now))
            .bind(lake)
            .bind(us(p.now))
            .bind(to_json(&skip.scopes)?.to_string())
            .bind(to_json(&skip.owners)?.to_string())
            .bind(to_json(&skip.jobs)?.to_string())
            .bind(i64::from(p.share))
            .fetch_all(&mut **tx)
            .await
            .map_err(from_sqlx)?,
        );
    }
    journal_claims(tx, p, &rows, expires).await
}

/// Journals claimed `rows` (one `task.claimed` each), starts their queued jobs, and hands the
/// tasks out in release order.
async fn journal_claims(
    tx: &mut Transaction<'static, Sqlite>,
    p: &TaskClaimParams,
    rows: &[sqlx::sqlite::SqliteRow],
    expires: DateTime<Utc>,
) -> Result<Vec<ClaimedTask>> {
    let mut out = Vec::with_capacity(rows.len());
    let mut jobs = std::collections::BTreeSet::new();
    for r in rows {
        let t = read::<ClaimRow, _>(r)?.leased_until(expires);
        let detail =
            serde_json::json!({"worker": p.worker, "token": t.lease.token.0, "attempt": t.attempt});
        scripts::event_insert::<Sqlite>(
            tx,
            p.now,
            Some(t.job_id.0),
            Some((t.id().0, &t.scope)),
            EventKind::TaskClaimed,
            Some(detail),
        )
        .await?;
        jobs.insert(t.job_id.0);
        let order = (
            -i64::from(r.try_get::<i16, _>("priority").map_err(from_sqlx)?),
            r.try_get::<i64, _>("seq").map_err(from_sqlx)?,
        );
        out.push((order, t));
    }
    for job_id in jobs {
        let started = sqlx::query(
            "UPDATE jobs SET state = 'running', started_at = ? WHERE id = ? AND state = 'queued'",
        )
        .bind(us(p.now))
        .bind(job_id)
        .execute(&mut **tx)
        .await
        .map_err(from_sqlx)?;
        if started.rows_affected() > 0 {
            scripts::event_insert::<Sqlite>(
                tx,
                p.now,
                Some(job_id),
                None,
                EventKind::JobStarted,
                None,
            )
            .await?;
        }
    }
    // RETURNING has no defined order: hand tasks out in release order.
    out.sort_by_key(|(order, t)| (*order, t.id()));
    Ok(out.into_iter().map(|(_, t)| t).collect())
}

/// The embedded default store: one process on one machine.
pub type SqliteStore = SqlStore<SqliteBackend>;

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let o = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("bad sqlite url: {e}")))?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let migrate_lock = (!in_memory).then(|| {
            let mut p = o.get_filename().as_os_str().to_owned();
            p.push(".migrate-lock");
            std::path::PathBuf::from(p)
        });
        let o = o
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // Opening turns a fresh file to WAL, which needs the file alone: SQLite answers
        // "database is locked" to a second process doing the same at that instant, without
        // waiting out the busy timeout. Processes started together take turns (as they do to
        // migrate).
        let _opening = match &migrate_lock {
            Some(path) => Some(crate::backend::lock_file(path.clone()).await?),
            None => None,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // An in-memory database lives as long as its one connection: never recycle it.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(o)
            .await
            .map_err(from_sqlx)?;
        Ok(SqlStore(SqliteBackend {
            pool,
            wake: std::sync::Arc::default(),
            migrate_lock,
        }))
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    type D = Sqlite;
    const NAME: &'static str = "sqlite";

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn migrate_lock(&self) -> Option<&std::path::Path> {
        self.migrate_lock.as_deref()
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(from_sqlx)
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    async fn job_insert(&self, p: JobInsertParams) -> Result<JobInserted> {
        let mut tx = self.begin().await?;
        let spec = p.spec.to_string();
        // The job's tags (ADR 0006): its owner's open jobs at this priority share one stream,
        // and the job starts at the priority's current virtual time.
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE owner = ? AND priority = ? \
             AND state IN ('queued', 'running')",
        )
        .bind(&p.owner)
        .bind(p.priority)
        .fetch_one(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let vtime = scripts::vtime::<Sqlite>(&mut tx, p.priority).await?;
        let stride = others + 1;
        let id: Option<i64> = sqlx::query_scalar(
            // Ids above any ever purged: an id is never reused (caches, pauses and result
            // keys name jobs by id).
            "INSERT INTO jobs (id, owner, idempotency_key, spec, sql, priority, lakes_total, created_at, stride, retention_secs, webhook) \
             VALUES (max((SELECT COALESCE(max(id), 0) FROM jobs), (SELECT id FROM job_id_floor)) + 1, \
                 ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner, idempotency_key) DO NOTHING RETURNING id",
        )
        .bind(&p.owner)
        .bind(&p.idempotency_key)
        .bind(&spec)
        .bind(&p.sql)
        .bind(p.priority)
        .bind(p.tasks.len() as i64)
        .bind(us(p.now))
        .bind(stride)
        .bind(p.retention_secs)
        .bind(&p.webhook)
        .fetch_optional(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let Some(id) = id else {
            return scripts::job_replay::<Sqlite>(&mut tx, &p).await;
        };
        let intake: Option<IntakeRow> =
            sqlx::query_as("SELECT closed, reason, closed_by, closed_at FROM intake")
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        if let Some(h) = intake.and_then(intake_hold) {
            return Err(h.refusal());
        }
        for (c, chunk) in p.tasks.chunks(TASK_INSERT_CHUNK).enumerate() {
            let first_seq = vtime + others + (c * TASK_INSERT_CHUNK) as i64 * stride;
            // One statement per chunk: the tasks travel as one JSON array.
            let arr =
                serde_json::to_string(chunk).map_err(|e| StoreError::Invalid(e.to_string()))?;
            sqlx::query(
                "INSERT INTO tasks (job_id, lake, scope, est_calls, priority, max_attempts, run_after, \
                     created_at, updated_at, seq, owner, shareable) \
                 SELECT ?, json_extract(value, '$.lake'), json_extract(value, '$.scope'), \
                     json_extract(value, '$.est_calls'), ?, ?, ?, ?, ?, ? + key * ?, ?, \
                     json_extract(value, '$.shareable') \
                 FROM json_each(?) ORDER BY key",
            )
            .bind(id)
            .bind(p.priority)
            .bind(p.max_attempts)
            .bind(us(p.now))
            .bind(us(p.now))
            .bind(us(p.now))
            .bind(first_seq)
            .bind(stride)
            .bind(&p.owner)
            .bind(arr)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        }
        let detail =
            serde_json::json!({"owner": p.owner, "tasks": p.tasks.len(), "priority": p.priority});
        scripts::event_insert::<Sqlite>(
            &mut tx,
            p.now,
            Some(id),
            None,
            EventKind::JobSubmitted,
            Some(detail),
        )
        .await?;
        if p.tasks.is_empty() {
            let next = JobState::Queued
                .apply(JobEvent::Finish(sluice_core::state::JobOutcome::Succeeded))?;
            sqlx::query("UPDATE jobs SET state = ?, finished_at = ? WHERE id = ?")
                .bind(next.as_str())
                .bind(us(p.now))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        }
        let job = job_fetch(&mut tx, id).await?;
        tx.commit().await.map_err(from_sqlx)?;
        self.wake.notify_waiters();
        Ok(JobInserted { job, created: true })
    }

    async fn task_claim(
        &self,
        p: &TaskClaimParams,
        expires: DateTime<Utc>,
    ) -> Result<Vec<ClaimedTask>> {
        // One writer: the holds and every pass in one transaction, so a pause that commits
        // first holds its tasks back from this claim.
        let mut tx = self.begin().await?;
        let holds = scripts::holds::<Sqlite>(&mut tx, p.now).await?;
        let mut claimed = Vec::new();
        if let Some(mut plan) = claim_plan(holds, &p.skip_owners) {
            while let Some(skip) = plan.next_pass() {
                let left = p.limit - claimed.len() as u32;
                if left == 0 {
                    break;
                }
                let got = claim_pass(&mut tx, p, left, expires, &skip).await?;
                plan.claimed(&got, left);
                claimed.extend(got);
            }
            if !plan.has_quotas()
                && let Some(lakes) = crate::model::lakes_to_share(p, &claimed)
            {
                let along = claim_along(&mut tx, p, &lakes, expires, &plan.skip).await?;
                claimed.extend(along);
            }
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(claimed)
    }

    async fn task_heartbeat(&self, p: TaskHeartbeatParams) -> Result<Vec<Lease>> {
        let expires = us(lease_end(p.now, p.lease)?);
        let mut tx = self.begin().await?;
        let mut lost = Vec::new();
        for l in p.leases {
            let r = sqlx::query(
                "UPDATE tasks SET lease_expires_at = ? WHERE id = ? AND lease_token = ? AND state = 'running'",
            )
            .bind(expires)
            .bind(l.task_id.0)
            .bind(l.token.0)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            if r.rows_affected() == 0 {
                lost.push(l);
            }
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(lost)
    }

    async fn task_finish(&self, p: TaskFinishParams) -> Result<FinishReport> {
        let mut tx = self.begin().await?;
        let mut report = FinishReport::default();
        let mut deltas: BTreeMap<i64, JobDelta> = BTreeMap::new();
        for f in &p.finishes {
            let OutcomeColumns {
                state: st,
                run_after,
                rows,
                result_uri: uri,
                error: err,
            } = outcome_columns(&f.outcome);
            let ev = f.outcome.event();
            let row = sqlx::query(
                "UPDATE tasks SET state = ?, attempt = attempt + ?, crashes = crashes + ?, \
                     run_after = coalesce(?, run_after), \
                     rows_found = ?, result_uri = ?, last_error = coalesce(?, last_error), \
                     lease_owner = NULL, lease_expires_at = NULL, updated_at = ? \
                 WHERE id = ? AND lease_token = ? AND state = 'running' \
                 RETURNING job_id, scope, attempt",
            )
            .bind(st.as_str())
            .bind(i32::from(ev.spends_attempt()))
            .bind(f.outcome.crashes())
            .bind(run_after.map(us))
            .bind(rows)
            .bind(&uri)
            .bind(&err)
            .bind(us(p.now))
            .bind(f.lease.task_id.0)
            .bind(f.lease.token.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            let Some(row) = row else {
                report.rejected.push(f.lease.task_id);
                continue;
            };
            let job_id: i64 = row.try_get("job_id").map_err(from_sqlx)?;
            let scope: String = row.try_get("scope").map_err(from_sqlx)?;
            let attempt: i32 = row.try_get("attempt").map_err(from_sqlx)?;
            let mut detail = serde_json::json!({"attempt": attempt});
            if let Some(r) = rows {
                detail["rows"] = r.into();
            }
            if let Some(e) = &err {
                detail["error"] = e.clone().into();
            }
            scripts::event_insert::<Sqlite>(
                &mut tx,
                p.now,
                Some(job_id),
                Some((f.lease.task_id.0, &scope)),
                ev.journal_kind(),
                Some(detail),
            )
            .await?;
            deltas.entry(job_id).or_default().add(st, rows);
            report.applied.push(f.lease.task_id);
        }
        scripts::jobs_apply::<Sqlite>(&mut tx, &deltas, p.now).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(report)
    }

    async fn task_hand_back(&self, p: TaskHandBackParams) -> Result<Vec<TaskId>> {
        let (kind, value, job, keep) = p.of.filter();
        let keep: std::collections::HashSet<i64> = keep.into_iter().collect();
        let ev = TaskEvent::Defer;
        let state = TaskState::Running.apply(ev)?;
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT id, job_id, scope, lease_token FROM tasks WHERE state = 'running' AND CASE ?1 \
                 WHEN 'worker' THEN lease_owner = ?2 WHEN 'all' THEN 1 WHEN 'scope' THEN scope = ?2 \
                 WHEN 'owner' THEN owner = ?2 WHEN 'job' THEN job_id = ?3 ELSE 0 END ORDER BY id",
        )
        .bind(kind)
        .bind(&value)
        .bind(job)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let mut out = Vec::new();
        for r in &rows {
            let t: RunningRow = read(r)?;
            if keep.contains(&t.id) {
                continue;
            }
            sqlx::query(
                "UPDATE tasks SET state = ?, run_after = ?, last_error = ?, lease_owner = NULL, \
                     lease_expires_at = NULL, updated_at = ? WHERE id = ? AND lease_token = ? AND state = 'running'",
            )
            .bind(state.as_str())
            .bind(us(p.now))
            .bind(&p.reason)
            .bind(us(p.now))
            .bind(t.id)
            .bind(t.lease_token)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            let detail =
                serde_json::json!({"reason": p.reason, "of": kind, "token": t.lease_token});
            journal_move(&mut tx, p.now, &t, ev, detail).await?;
            out.push(TaskId(t.id));
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(out)
    }

    async fn task_rescue_expired(&self, p: TaskRescueParams) -> Result<Vec<RescuedTask>> {
        let mut tx = self.begin().await?;
        let cands = sqlx::query(
            "SELECT id, job_id, scope, lease_token, lease_owner, attempt, max_attempts, crashes FROM tasks \
             WHERE state = 'running' AND lease_expires_at < ? ORDER BY lease_expires_at LIMIT ?",
        )
        .bind(us(p.now))
        .bind(i64::from(p.limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let mut out = Vec::with_capacity(cands.len());
        let mut deltas: BTreeMap<i64, JobDelta> = BTreeMap::new();
        for r in &cands {
            let e: ExpiredRow = read(r)?;
            let (t, attempt) = (&e.task, e.attempt);
            let ev = TaskEvent::on_lease_expiry(attempt, e.max_attempts, e.crashes);
            let st = TaskState::Running.apply(ev)?;
            let done = sqlx::query(
                "UPDATE tasks SET state = ?, attempt = attempt + 1, last_error = ?, lease_owner = NULL, \
                     lease_expires_at = NULL, updated_at = ? \
                 WHERE id = ? AND lease_token = ? AND state = 'running'",
            )
            .bind(st.as_str())
            .bind(format!("lease expired: worker {} stopped heartbeating", e.lease_owner.as_deref().unwrap_or("?")))
            .bind(us(p.now))
            .bind(t.id)
            .bind(t.lease_token)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            if done.rows_affected() == 0 {
                continue;
            }
            let detail = serde_json::json!({"attempt": attempt + 1, "stale_token": t.lease_token});
            journal_move(&mut tx, p.now, t, ev, detail).await?;
            deltas.entry(t.job_id).or_default().add(st, None);
            out.push(RescuedTask {
                id: TaskId(t.id),
                job_id: JobId(t.job_id),
                state: st,
            });
        }
        scripts::jobs_apply::<Sqlite>(&mut tx, &deltas, p.now).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(out)
    }

    async fn task_wait(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }

    async fn budget_take(&self, p: BudgetTakeParams) -> Result<u32> {
        let mut tx = self.begin().await?;
        let chain = scripts::budget_chain::<Sqlite>(&mut tx, &p.scope).await?;
        if chain.is_empty() {
            return Ok(p.n);
        }
        let (grant, after) = take_from_chain(&chain, p.n, p.hold, p.now);
        for b in &after {
            scripts::budget_save::<Sqlite>(&mut tx, b).await?;
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(grant)
    }

    async fn job_backlog(&self) -> Result<Vec<Backlog>> {
        let rows: Vec<(i16, i64, i64, i64)> = sqlx::query_as(
            "SELECT priority, count(*), \
                 COALESCE(sum(lakes_total - lakes_done - lakes_failed - lakes_cancelled), 0), \
                 min(created_at) \
             FROM jobs WHERE state IN ('queued', 'running') GROUP BY priority ORDER BY priority DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        rows.into_iter()
            .map(|(priority, open_jobs, open_tasks, oldest)| {
                Ok(Backlog {
                    priority,
                    open_jobs,
                    open_tasks,
                    oldest_created_at: from_us(oldest)?,
                })
            })
            .collect()
    }

    async fn task_backlog(&self) -> Result<TaskBacklog> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT scope, state, tasks, est_calls FROM task_counts WHERE tasks <> 0 \
             ORDER BY scope, state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let oldest: Option<i64> =
            sqlx::query_scalar("SELECT min(created_at) FROM tasks WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await
                .map_err(from_sqlx)?;
        task_backlog(rows, from_us_opt(oldest)?)
    }
}
