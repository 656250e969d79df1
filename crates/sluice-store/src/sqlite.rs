//! The SQLite backend: the embedded default for one process on one machine (`sluice demo`,
//! a laptop). One connection, so every transaction is serialized; WAL with full sync so a
//! committed write survives a crash. Timestamps are stored as microseconds since the epoch.

use crate::error::{Result, StoreError, from_sqlx};
use crate::model::*;
use crate::rows::{ClaimRow, IntakeRow, intake_hold, job_cols, lease_end, read};
use crate::scripts;
use crate::{Store, StoreExt};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::{EventKind, JobEvent, JobId, JobState, TaskEvent, TaskId, TaskState};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One process: a submission wakes idle workers directly.
    wake: std::sync::Arc<tokio::sync::Notify>,
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

/// The virtual time of a priority (ADR 0006): the newest tag running, else the oldest tag
/// pending, else 0. New jobs start their tags here.
async fn vtime(tx: &mut Transaction<'static, Sqlite>, priority: i16) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT COALESCE((SELECT max(seq) FROM tasks WHERE state = 'running' AND priority = ?1), \
             (SELECT min(seq) FROM tasks WHERE state = 'pending' AND priority = ?1), 0)",
    )
    .bind(priority)
    .fetch_one(&mut **tx)
    .await
    .map_err(from_sqlx)
}

impl SqliteStore {
    /// A connection of the pool, for a statement outside a transaction.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Sqlite>> {
        self.pool.acquire().await.map_err(from_sqlx)
    }

    pub async fn connect(url: &str) -> Result<Self> {
        let o = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("bad sqlite url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // An in-memory database lives as long as its one connection: never recycle it.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(o)
            .await
            .map_err(from_sqlx)?;
        Ok(SqliteStore {
            pool,
            wake: std::sync::Arc::default(),
        })
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(from_sqlx)
    }
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

/// Claims up to `limit` runnable tasks in release order, skipping paused targets, scopes
/// with open breakers, the scopes in the JSON array `skip` and the owners `p` skips.
async fn claim_rows(
    tx: &mut Transaction<'static, Sqlite>,
    p: &TaskClaimParams,
    limit: u32,
    expires: DateTime<Utc>,
    skip: Option<&str>,
) -> Result<Vec<SqliteRow>> {
    let skip_owners =
        serde_json::to_string(&p.skip_owners).map_err(|e| StoreError::Invalid(e.to_string()))?;
    sqlx::query(
        "UPDATE tasks SET state = 'running', lease_owner = ?, lease_token = lease_token + 1, \
             lease_expires_at = ?, updated_at = ? \
         WHERE id IN (SELECT id FROM tasks WHERE state = 'pending' AND run_after <= ? \
             AND NOT EXISTS (SELECT 1 FROM pauses WHERE target IN ('all', 'scope:' || tasks.scope, \
                 'owner:' || tasks.owner, 'job:' || tasks.job_id)) \
             AND NOT EXISTS (SELECT 1 FROM breakers WHERE breakers.scope = tasks.scope AND hold_until > ?) \
             AND (? IS NULL OR tasks.scope NOT IN (SELECT value FROM json_each(?))) \
             AND tasks.owner NOT IN (SELECT value FROM json_each(?)) \
             ORDER BY priority DESC, seq, id LIMIT ?) \
         RETURNING id, job_id, owner, lake, scope, attempt, max_attempts, crashes, lease_token, priority, seq",
    )
    .bind(&p.worker)
    .bind(us(expires))
    .bind(us(p.now))
    .bind(us(p.now))
    .bind(us(p.now))
    .bind(skip)
    .bind(skip)
    .bind(skip_owners)
    .bind(i64::from(limit))
    .fetch_all(&mut **tx)
    .await
    .map_err(from_sqlx)
}

/// The budgets charged for a call of `scope`, nearest first (see the Postgres backend).
async fn budget_chain(tx: &mut Transaction<'static, Sqlite>, scope: &str) -> Result<Vec<Budget>> {
    let mut chain: Vec<Budget> = Vec::new();
    let mut next = Some(scope.to_string());
    let mut first = true;
    while let Some(s) = next.take() {
        let row = sqlx::query(
            "SELECT scope, parent, rate, burst, tokens, refilled_at, adaptive, dry_until FROM budgets WHERE scope = ?",
        )
        .bind(&s)
        .fetch_optional(&mut **tx)
        .await
        .map_err(from_sqlx)?;
        match row {
            Some(r) => {
                let b = read::<Budget, _>(&r)?;
                if chain.len() > 32 || chain.iter().any(|c| c.scope == b.scope) {
                    return Err(StoreError::Corrupt(format!(
                        "budget scopes form a cycle at {:?}",
                        b.scope
                    )));
                }
                next = b.parent.clone();
                chain.push(b);
            }
            // A scope without a budget is charged to the root alone.
            None if first && s != ROOT_SCOPE => next = Some(ROOT_SCOPE.to_string()),
            None => {}
        }
        first = false;
    }
    Ok(chain)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ready(&self) -> Result<()> {
        let built = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            match sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
            {
                Ok(v) => v,
                // No migrations table: a database nobody has migrated.
                Err(sqlx::Error::Database(e)) if e.message().contains("_sqlx_migrations") => None,
                Err(e) => return Err(from_sqlx(e)),
            };
        schema_ready(applied, built)
    }

    async fn job_insert(&self, p: JobInsertParams) -> Result<JobInserted> {
        validate_job(&p)?;
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
        let vtime = vtime(&mut tx, p.priority).await?;
        let stride = others + 1;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO jobs (owner, idempotency_key, spec, sql, priority, lakes_total, created_at, stride) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner, idempotency_key) DO NOTHING RETURNING id",
        )
        .bind(&p.owner)
        .bind(&p.idempotency_key)
        .bind(&spec)
        .bind(&p.sql)
        .bind(p.priority)
        .bind(p.tasks.len() as i64)
        .bind(us(p.now))
        .bind(stride)
        .fetch_optional(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let Some(id) = id else {
            let existing = sqlx::query(concat!(
                "SELECT ",
                job_cols!(),
                " FROM jobs WHERE owner = ? AND idempotency_key = ?"
            ))
            .bind(&p.owner)
            .bind(&p.idempotency_key)
            .fetch_one(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            let job = read::<Job, _>(&existing)?;
            if job.spec != p.spec || job.sql != p.sql || job.counts.total != p.tasks.len() as i64 {
                return Err(StoreError::Conflict(format!(
                    "idempotency key already used by job {} with a different request",
                    job.id
                )));
            }
            return Ok(JobInserted {
                job,
                created: false,
            });
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
                     created_at, updated_at, seq, owner) \
                 SELECT ?, json_extract(value, '$.lake'), json_extract(value, '$.scope'), \
                     json_extract(value, '$.est_calls'), ?, ?, ?, ?, ?, ? + key * ?, ? \
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

    async fn job_get(&self, id: JobId) -> Result<Job> {
        scripts::job_get::<Sqlite>(&mut *self.conn().await?, id).await
    }

    async fn job_list(&self, p: JobListParams) -> Result<Vec<Job>> {
        scripts::job_list::<Sqlite>(&mut *self.conn().await?, &p).await
    }

    async fn token_insert(&self, p: TokenInsertParams) -> Result<ApiToken> {
        scripts::token_insert::<Sqlite>(&mut *self.conn().await?, &p).await
    }

    async fn token_find(&self, hash: &str) -> Result<ApiToken> {
        scripts::token_find::<Sqlite>(&mut *self.conn().await?, hash).await
    }

    async fn token_list(&self) -> Result<Vec<ApiToken>> {
        scripts::token_list::<Sqlite>(&mut *self.conn().await?).await
    }

    async fn token_revoke(&self, id: i64, now: DateTime<Utc>) -> Result<ApiToken> {
        scripts::token_revoke::<Sqlite>(&mut *self.conn().await?, id, now).await
    }

    async fn job_cancel(&self, p: JobCancelParams) -> Result<Job> {
        let mut tx = self.begin().await?;
        let job = job_fetch(&mut tx, p.id.0).await?;
        let next = job
            .state
            .apply(JobEvent::Cancel)
            .map_err(|_| StoreError::Conflict(format!("job {} is already {}", p.id, job.state)))?;
        let cancelled = sqlx::query(
            "UPDATE tasks SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, updated_at = ? \
             WHERE job_id = ? AND state IN ('pending', 'running') RETURNING id, scope",
        )
        .bind(us(p.now))
        .bind(p.id.0)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        for r in &cancelled {
            let id: i64 = r.try_get("id").map_err(from_sqlx)?;
            let scope: String = r.try_get("scope").map_err(from_sqlx)?;
            scripts::event_insert::<Sqlite>(
                &mut tx,
                p.now,
                Some(p.id.0),
                Some((id, &scope)),
                EventKind::TaskCancelled,
                None,
            )
            .await?;
        }
        let error = format!(
            "cancelled by {}{}",
            p.by,
            p.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        sqlx::query(
            "UPDATE jobs SET state = ?, lakes_cancelled = lakes_cancelled + ?, finished_at = ?, error = ? WHERE id = ?",
        )
        .bind(next.as_str())
        .bind(cancelled.len() as i64)
        .bind(us(p.now))
        .bind(error)
        .bind(p.id.0)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let detail =
            serde_json::json!({"by": p.by, "reason": p.reason, "tasks_cancelled": cancelled.len()});
        scripts::event_insert::<Sqlite>(
            &mut tx,
            p.now,
            Some(p.id.0),
            None,
            EventKind::JobCancelled,
            Some(detail),
        )
        .await?;
        let job = job_fetch(&mut tx, p.id.0).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(job)
    }

    async fn task_claim(&self, p: TaskClaimParams) -> Result<Vec<ClaimedTask>> {
        if p.limit == 0 {
            return Ok(Vec::new());
        }
        let expires = lease_end(p.now, p.lease)?;
        let mut tx = self.begin().await?;
        // Scopes whose budget (or an ancestor's) is dry are released last: only when nothing
        // else is runnable. Under a dry root every scope is dry: nothing to prefer.
        let dry: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE dry(scope) AS ( \
                 SELECT scope FROM budgets WHERE dry_until > ? \
                 UNION SELECT b.scope FROM budgets b JOIN dry ON b.parent = dry.scope) \
             SELECT scope FROM dry",
        )
        .bind(us(p.now))
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let mut rows = Vec::new();
        if !dry.is_empty() && !dry.iter().any(|s| s == ROOT_SCOPE) {
            let dry =
                serde_json::to_string(&dry).map_err(|e| StoreError::Invalid(e.to_string()))?;
            rows = claim_rows(&mut tx, &p, p.limit, expires, Some(&dry)).await?;
        }
        let preferred = rows.len();
        let left = p.limit - rows.len() as u32;
        if left > 0 {
            rows.extend(claim_rows(&mut tx, &p, left, expires, None).await?);
        }
        let mut out = Vec::with_capacity(rows.len());
        let mut jobs = std::collections::BTreeSet::new();
        let mut order = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let t = read::<ClaimRow, _>(r)?.leased_until(expires);
            let detail = serde_json::json!({"worker": p.worker, "token": t.lease.token.0, "attempt": t.attempt});
            scripts::event_insert::<Sqlite>(
                &mut tx,
                p.now,
                Some(t.job_id.0),
                Some((t.id().0, &t.scope)),
                EventKind::TaskClaimed,
                Some(detail),
            )
            .await?;
            jobs.insert(t.job_id.0);
            order.push((
                i >= preferred,
                -i64::from(r.try_get::<i16, _>("priority").map_err(from_sqlx)?),
                r.try_get::<i64, _>("seq").map_err(from_sqlx)?,
            ));
            out.push(t);
        }
        for job_id in jobs {
            let started = sqlx::query("UPDATE jobs SET state = 'running', started_at = ? WHERE id = ? AND state = 'queued'")
                .bind(us(p.now))
                .bind(job_id)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            if started.rows_affected() > 0 {
                scripts::event_insert::<Sqlite>(
                    &mut tx,
                    p.now,
                    Some(job_id),
                    None,
                    EventKind::JobStarted,
                    None,
                )
                .await?;
            }
        }
        tx.commit().await.map_err(from_sqlx)?;
        // RETURNING has no defined order: hand tasks out in release order, the tasks of
        // scopes that are not dry first.
        let mut keyed: Vec<_> = order.into_iter().zip(out).collect();
        keyed.sort_by_key(|(key, t)| (*key, t.id()));
        Ok(keyed.into_iter().map(|(_, t)| t).collect())
    }

    async fn task_heartbeat(&self, p: TaskHeartbeatParams) -> Result<Vec<Lease>> {
        if p.leases.is_empty() {
            return Ok(Vec::new());
        }
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
        if p.finishes.is_empty() {
            return Ok(FinishReport::default());
        }
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
            let id: i64 = r.try_get("id").map_err(from_sqlx)?;
            if keep.contains(&id) {
                continue;
            }
            let job_id: i64 = r.try_get("job_id").map_err(from_sqlx)?;
            let scope: String = r.try_get("scope").map_err(from_sqlx)?;
            let token: i64 = r.try_get("lease_token").map_err(from_sqlx)?;
            sqlx::query(
                "UPDATE tasks SET state = ?, run_after = ?, last_error = ?, lease_owner = NULL, \
                     lease_expires_at = NULL, updated_at = ? WHERE id = ? AND lease_token = ? AND state = 'running'",
            )
            .bind(state.as_str())
            .bind(us(p.now))
            .bind(&p.reason)
            .bind(us(p.now))
            .bind(id)
            .bind(token)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            let detail = serde_json::json!({"reason": p.reason, "of": kind, "token": token});
            scripts::event_insert::<Sqlite>(
                &mut tx,
                p.now,
                Some(job_id),
                Some((id, &scope)),
                ev.journal_kind(),
                Some(detail),
            )
            .await?;
            out.push(TaskId(id));
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
            let id: i64 = r.try_get("id").map_err(from_sqlx)?;
            let job_id: i64 = r.try_get("job_id").map_err(from_sqlx)?;
            let scope: String = r.try_get("scope").map_err(from_sqlx)?;
            let token: i64 = r.try_get("lease_token").map_err(from_sqlx)?;
            let owner: Option<String> = r.try_get("lease_owner").map_err(from_sqlx)?;
            let attempt: i32 = r.try_get("attempt").map_err(from_sqlx)?;
            let ev = TaskEvent::on_lease_expiry(
                attempt,
                r.try_get("max_attempts").map_err(from_sqlx)?,
                r.try_get("crashes").map_err(from_sqlx)?,
            );
            let st = TaskState::Running.apply(ev)?;
            let done = sqlx::query(
                "UPDATE tasks SET state = ?, attempt = attempt + 1, last_error = ?, lease_owner = NULL, \
                     lease_expires_at = NULL, updated_at = ? \
                 WHERE id = ? AND lease_token = ? AND state = 'running'",
            )
            .bind(st.as_str())
            .bind(format!("lease expired: worker {} stopped heartbeating", owner.as_deref().unwrap_or("?")))
            .bind(us(p.now))
            .bind(id)
            .bind(token)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            if done.rows_affected() == 0 {
                continue;
            }
            let detail = serde_json::json!({"attempt": attempt + 1, "stale_token": token});
            scripts::event_insert::<Sqlite>(
                &mut tx,
                p.now,
                Some(job_id),
                Some((id, &scope)),
                ev.journal_kind(),
                Some(detail),
            )
            .await?;
            deltas.entry(job_id).or_default().add(st, None);
            out.push(RescuedTask {
                id: TaskId(id),
                job_id: JobId(job_id),
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

    async fn task_get(&self, id: TaskId) -> Result<Task> {
        scripts::task_get::<Sqlite>(&mut *self.conn().await?, id).await
    }

    async fn task_list(&self, p: TaskListParams) -> Result<Vec<Task>> {
        scripts::task_list::<Sqlite>(&mut *self.conn().await?, &p).await
    }

    async fn lake_insert(&self, p: LakeInsertParams) -> Result<Lake> {
        scripts::lake_insert::<Sqlite>(&mut *self.conn().await?, &p).await
    }

    async fn lake_list(&self) -> Result<Vec<Lake>> {
        scripts::lake_list::<Sqlite>(&mut *self.conn().await?).await
    }

    async fn lake_get(&self, name: &str) -> Result<Lake> {
        scripts::lake_get::<Sqlite>(&mut *self.conn().await?, name).await
    }

    async fn lake_remove(&self, name: &str) -> Result<()> {
        scripts::lake_remove::<Sqlite>(&mut *self.conn().await?, name).await
    }

    async fn budget_set(&self, p: BudgetSetParams) -> Result<Budget> {
        validate_budget(&p)?;
        let parent = (p.scope != ROOT_SCOPE)
            .then(|| p.parent.clone().unwrap_or_else(|| ROOT_SCOPE.to_string()));
        let mut tx = self.begin().await?;
        if let Some(parent) = &parent {
            let chain = budget_chain(&mut tx, parent).await?;
            if chain.first().map(|b| &b.scope) != Some(parent) {
                return Err(StoreError::Invalid(format!(
                    "parent scope {parent:?} has no budget: set it first"
                )));
            }
            if chain.iter().any(|b| b.scope == p.scope) {
                return Err(StoreError::Invalid(format!(
                    "{:?} under {parent:?} would make a cycle",
                    p.scope
                )));
            }
        }
        let row = sqlx::query(
            "INSERT INTO budgets (scope, parent, rate, burst, tokens, refilled_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (scope) DO UPDATE SET parent = excluded.parent, rate = excluded.rate, \
                 burst = excluded.burst, tokens = min(budgets.tokens, excluded.burst), \
                 updated_at = excluded.updated_at, dry_until = NULL \
             RETURNING scope, parent, rate, burst, tokens, refilled_at, adaptive, dry_until",
        )
        .bind(&p.scope)
        .bind(&parent)
        .bind(p.rate)
        .bind(p.burst)
        .bind(p.burst)
        .bind(us(p.now))
        .bind(us(p.now))
        .fetch_one(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let b = read::<Budget, _>(&row)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(b)
    }

    async fn budget_list(&self) -> Result<Vec<Budget>> {
        scripts::budget_list::<Sqlite>(&mut *self.conn().await?).await
    }

    async fn budget_take(&self, p: BudgetTakeParams) -> Result<u32> {
        if p.n == 0 {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let chain = budget_chain(&mut tx, &p.scope).await?;
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

    async fn budget_feedback(
        &self,
        scope: &str,
        f: BudgetFeedback,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        scripts::budget_feedback_tx::<Sqlite>(&mut tx, scope, f, now).await?;
        tx.commit().await.map_err(from_sqlx)
    }

    async fn breaker_list(&self) -> Result<Vec<BreakerRow>> {
        scripts::breaker_list::<Sqlite>(&mut *self.conn().await?).await
    }

    async fn breaker_update(&self, p: BreakerUpdateParams) -> Result<BreakerUpdate> {
        let mut tx = self.begin().await?;
        let update = scripts::breaker_update::<Sqlite>(&mut tx, &p).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(update)
    }

    async fn pause_set(&self, p: PauseSetParams) -> Result<Pause> {
        validate_pause(&p)?;
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "INSERT INTO pauses (target, reason, paused_by, at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (target) DO UPDATE SET reason = excluded.reason, paused_by = excluded.paused_by, \
                 at = excluded.at \
             RETURNING target, reason, paused_by, at",
        )
        .bind(p.target.key())
        .bind(&p.reason)
        .bind(&p.by)
        .bind(us(p.now))
        .fetch_one(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let pause = read::<Pause, _>(&row)?;
        let detail = serde_json::json!({"target": p.target.key(), "reason": p.reason, "by": p.by});
        scripts::event_insert::<Sqlite>(
            &mut tx,
            p.now,
            p.target.job_id(),
            None,
            EventKind::PauseSet,
            Some(detail),
        )
        .await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(pause)
    }

    async fn pause_clear(&self, target: &PauseTarget, by: &str, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin().await?;
        let r = sqlx::query("DELETE FROM pauses WHERE target = ?")
            .bind(target.key())
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("pause of {target}")));
        }
        let detail = serde_json::json!({"target": target.key(), "by": by});
        scripts::event_insert::<Sqlite>(
            &mut tx,
            now,
            target.job_id(),
            None,
            EventKind::PauseCleared,
            Some(detail),
        )
        .await?;
        tx.commit().await.map_err(from_sqlx)?;
        self.slow_start_after_pause(target, now).await
    }

    async fn intake_close(&self, p: IntakeCloseParams) -> Result<IntakeHold> {
        validate_intake(&p)?;
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE intake SET closed = 1, reason = ?, closed_by = ?, closed_at = ?")
            .bind(&p.reason)
            .bind(&p.by)
            .bind(us(p.now))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let detail = serde_json::json!({"reason": p.reason, "by": p.by});
        scripts::event_insert::<Sqlite>(
            &mut tx,
            p.now,
            None,
            None,
            EventKind::IntakeClosed,
            Some(detail),
        )
        .await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(IntakeHold {
            reason: p.reason,
            by: p.by,
            at: p.now,
        })
    }

    async fn intake_open(&self, by: &str, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("UPDATE intake SET closed = 0 WHERE closed")
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("a drain: intake is open".into()));
        }
        let detail = serde_json::json!({ "by": by });
        scripts::event_insert::<Sqlite>(
            &mut tx,
            now,
            None,
            None,
            EventKind::IntakeOpened,
            Some(detail),
        )
        .await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(())
    }

    async fn intake_get(&self) -> Result<Option<IntakeHold>> {
        scripts::intake_get::<Sqlite>(&mut *self.conn().await?).await
    }

    async fn pause_list(&self) -> Result<Vec<Pause>> {
        scripts::pause_list::<Sqlite>(&mut *self.conn().await?).await
    }

    async fn pause_list_for_job(&self, job: JobId) -> Result<Vec<Pause>> {
        scripts::pause_list_for_job::<Sqlite>(&mut *self.conn().await?, job).await
    }

    async fn leader_elect(&self, p: LeaderElectParams) -> Result<Leadership> {
        let mut tx = self.begin().await?;
        let leader = scripts::leader_elect::<Sqlite>(&mut tx, &p).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(leader)
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

    async fn job_finished(&self, p: JobFinishedParams) -> Result<Vec<FinishedJob>> {
        scripts::job_finished::<Sqlite>(&mut *self.conn().await?, &p).await
    }

    async fn leader_resign(&self, name: &str, holder: &str, now: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.begin().await?;
        let term: Option<i64> = sqlx::query_scalar(
            "UPDATE leaders SET expires_at = ? WHERE name = ? AND holder = ? AND expires_at > ? \
             RETURNING term",
        )
        .bind(us(now))
        .bind(name)
        .bind(holder)
        .bind(us(now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        if let Some(term) = term {
            let detail = serde_json::json!({"role": name, "holder": holder, "term": term});
            scripts::event_insert::<Sqlite>(
                &mut tx,
                now,
                None,
                None,
                EventKind::LeaderResigned,
                Some(detail),
            )
            .await?;
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(term.is_some())
    }

    async fn job_rebalance(&self, p: JobRebalanceParams) -> Result<usize> {
        let mut tx = self.begin().await?;
        let open: Vec<(i64, String, i16, i64)> = sqlx::query_as(
            "SELECT id, owner, priority, stride FROM jobs WHERE state IN ('queued', 'running') \
             ORDER BY owner, priority, id",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let todo = restrides(&open);
        let mut vtimes: std::collections::HashMap<i16, i64> = Default::default();
        for js in &todo {
            let v = match vtimes.get(&js.priority) {
                Some(v) => *v,
                None => {
                    let v = vtime(&mut tx, js.priority).await?;
                    *vtimes.entry(js.priority).or_insert(v)
                }
            };
            sqlx::query(
                "WITH r AS (SELECT id, row_number() OVER (ORDER BY seq, id) - 1 AS n \
                     FROM tasks WHERE job_id = ? AND state = 'pending') \
                 UPDATE tasks SET seq = ? + r.n * ? FROM r WHERE tasks.id = r.id",
            )
            .bind(js.job)
            .bind(v + js.offset)
            .bind(js.stride)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            sqlx::query("UPDATE jobs SET stride = ? WHERE id = ?")
                .bind(js.stride)
                .bind(js.job)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            let detail = serde_json::json!({"stride": js.stride, "offset": js.offset, "vtime": v});
            scripts::event_insert::<Sqlite>(
                &mut tx,
                p.now,
                Some(js.job),
                None,
                EventKind::JobRestrided,
                Some(detail),
            )
            .await?;
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(todo.len())
    }

    async fn event_list(&self, p: EventListParams) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, at, job_id, task_id, scope, kind, detail FROM events \
             WHERE (? IS NULL OR job_id = ?) AND (? IS NULL OR (scope = ? AND job_id IS NULL)) \
               AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(p.job_id.map(|j| j.0))
        .bind(p.job_id.map(|j| j.0))
        .bind(&p.scope)
        .bind(&p.scope)
        .bind(p.after_id.unwrap_or(0))
        .bind(i64::from(p.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        rows.iter().map(read::<Event, _>).collect()
    }
}
