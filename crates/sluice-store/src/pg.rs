//! The Postgres backend: many scheduler, worker and API processes on many machines share it.
//! Claims use `FOR UPDATE SKIP LOCKED`; each hot-path call is one statement (data-modifying
//! CTEs write the journal in the same round trip); job rows are locked in id order.

use crate::backend::{Backend, SqlStore, in_tx};
use crate::error::{Result, StoreError, from_sqlx};
use crate::model::*;
use crate::rows::{
    ClaimRow, IntakeRow, adaptive_json, budget_cols, intake_hold, job_cols, lease_end, read, state,
};
use crate::scripts;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::{EventKind, JobEvent, JobId, JobState, TaskEvent, TaskId, TaskState};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, Postgres, Row};
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The channel a job submission notifies; idle workers listen on it.
const TASKS_CHANNEL: &str = "sluice_tasks";

/// The Postgres backend; the store is [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgBackend {
    pool: PgPool,
    /// Woken by NOTIFYs on [`TASKS_CHANNEL`]; the listener starts with the first waiter.
    wake: std::sync::Arc<tokio::sync::Notify>,
    listening: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The advisory lock claims take turns on while an owner quota is set (with the schema's hash
/// as its second key).
const QUOTA_CLAIM_LOCK: i32 = 0x736c_7571; // "sluq"

fn is_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// What a claim does with the candidates `c` it locked: lease them, journal the claims and
/// start their jobs, in the same statement.
macro_rules! claim_tail {
    () => {
        "t AS ( \
            UPDATE tasks SET state = 'running', lease_owner = $3, \
                lease_token = tasks.lease_token + 1, lease_expires_at = $4, updated_at = $1 \
            FROM c WHERE tasks.id = c.id \
            RETURNING tasks.id, tasks.job_id, tasks.owner, tasks.lake, tasks.scope, tasks.attempt, \
                tasks.max_attempts, tasks.crashes, tasks.lease_token, tasks.shareable, tasks.priority, \
                tasks.seq), \
         ev AS ( \
            INSERT INTO events (at, job_id, task_id, scope, kind, detail) \
            SELECT $1, job_id, id, scope, $8::text, \
                jsonb_build_object('worker', $3::text, 'token', lease_token, 'attempt', attempt) \
            FROM t), \
         js AS ( \
            UPDATE jobs SET state = 'running', started_at = $1 \
            WHERE id IN (SELECT DISTINCT job_id FROM t) AND state = 'queued' RETURNING id), \
         jev AS ( \
            INSERT INTO events (at, job_id, kind) SELECT $1, id, $9::text FROM js) \
         SELECT id, job_id, owner, lake, scope, attempt, max_attempts, crashes, lease_token, \
             shareable FROM t \
         ORDER BY priority DESC, seq, id"
    };
}

impl PgBackend {
    /// One claim pass: up to `limit` tasks not in `skip`, claimed and journaled in one
    /// statement.
    async fn claim_rows<'e>(
        ex: impl sqlx::PgExecutor<'e>,
        p: &TaskClaimParams,
        limit: u32,
        expires: DateTime<Utc>,
        skip: &ClaimSkip,
    ) -> Result<Vec<ClaimedTask>> {
        // Rooms in play (a quota is set): every owner's next tasks, at most their room, from
        // one probe of `tasks_owner_claimable` each, then the first `limit` of those in
        // release order. A scan of the release order would walk a full owner's whole backlog
        // at every claim when it sits at the head of the queue.
        let limited = skip.default_room.is_some() || !skip.room_owners.is_empty();
        let prefer = !limited && !p.prefer_scopes.is_empty();
        let sql = if limited {
            concat!(
                "WITH o AS ( \
                    SELECT DISTINCT owner FROM jobs \
                    WHERE state IN ('queued', 'running') AND owner <> ALL ($6::text[])), \
                 c AS ( \
                    SELECT l.id FROM o CROSS JOIN LATERAL ( \
                        SELECT id, priority, seq FROM tasks \
                        WHERE tasks.owner = o.owner AND state = 'pending' AND run_after <= $1 \
                          AND scope <> ALL ($5::text[]) AND job_id <> ALL ($7::bigint[]) \
                        ORDER BY priority DESC, seq, id \
                        LIMIT LEAST($2, COALESCE( \
                            (SELECT q.room FROM unnest($10::text[], $11::bigint[]) AS q(owner, room) \
                             WHERE q.owner = o.owner), $12::bigint, $2)) \
                        FOR UPDATE SKIP LOCKED) l \
                    ORDER BY l.priority DESC, l.seq, l.id LIMIT $2), ",
                claim_tail!()
            )
        } else if prefer {
            // The head of the release order, a window of it, then the preferred scopes'
            // tasks first within the window (the rest of it is unlocked at commit).
            concat!(
                "WITH w AS ( \
                    SELECT id, scope, priority, seq FROM tasks WHERE state = 'pending' AND run_after <= $1 \
                      AND scope <> ALL ($5::text[]) AND owner <> ALL ($6::text[]) AND job_id <> ALL ($7::bigint[]) \
                    ORDER BY priority DESC, seq, id LIMIT $10 FOR UPDATE SKIP LOCKED), \
                 c AS ( \
                    SELECT id FROM w ORDER BY (scope = ANY ($11::text[])) DESC, priority DESC, seq, id \
                    LIMIT $2), ",
                claim_tail!()
            )
        } else {
            concat!(
                "WITH c AS ( \
                    SELECT id FROM tasks WHERE state = 'pending' AND run_after <= $1 \
                      AND scope <> ALL ($5::text[]) AND owner <> ALL ($6::text[]) AND job_id <> ALL ($7::bigint[]) \
                    ORDER BY priority DESC, seq, id LIMIT $2 FOR UPDATE SKIP LOCKED), ",
                claim_tail!()
            )
        };
        let mut q = sqlx::query(sql)
            .bind(p.now)
            .bind(i64::from(limit))
            .bind(&p.worker)
            .bind(expires)
            .bind(&skip.scopes)
            .bind(&skip.owners)
            .bind(&skip.jobs)
            .bind(EventKind::TaskClaimed.as_str())
            .bind(EventKind::JobStarted.as_str());
        if limited {
            q = q
                .bind(&skip.room_owners)
                .bind(&skip.rooms)
                .bind(skip.default_room);
        } else if prefer {
            q = q
                .bind(crate::model::prefer_window(limit))
                .bind(&p.prefer_scopes);
        }
        let rows = q.fetch_all(ex).await.map_err(from_sqlx)?;
        rows.iter()
            .map(|r| Ok(read::<ClaimRow, _>(r)?.leased_until(expires)))
            .collect()
    }

    /// Up to `per_lake` more pending tasks of each of `lakes`, not in `skip` and never one
    /// that crashed a runner, in release order: the tasks a shared scan takes along.
    async fn claim_along(
        &self,
        p: &TaskClaimParams,
        lakes: &[String],
        expires: DateTime<Utc>,
        skip: &ClaimSkip,
    ) -> Result<Vec<ClaimedTask>> {
        let sql = concat!(
            "WITH k AS (SELECT DISTINCT unnest($10::text[]) AS lake), \
             c AS ( \
                SELECT l.id FROM k CROSS JOIN LATERAL ( \
                    SELECT id FROM tasks \
                    WHERE tasks.lake = k.lake AND state = 'pending' AND run_after <= $1 \
                      AND shareable AND crashes = 0 AND scope <> ALL ($5::text[]) \
                      AND owner <> ALL ($6::text[]) AND job_id <> ALL ($7::bigint[]) \
                    ORDER BY priority DESC, seq, id LIMIT $2 \
                    FOR UPDATE SKIP LOCKED) l), ",
            claim_tail!()
        );
        let rows = sqlx::query(sql)
            .bind(p.now)
            .bind(i64::from(p.share))
            .bind(&p.worker)
            .bind(expires)
            .bind(&skip.scopes)
            .bind(&skip.owners)
            .bind(&skip.jobs)
            .bind(EventKind::TaskClaimed.as_str())
            .bind(EventKind::JobStarted.as_str())
            .bind(lakes)
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?;
        rows.iter()
            .map(|r| Ok(read::<ClaimRow, _>(r)?.leased_until(expires)))
            .collect()
    }

    /// Starts (once) the background listener that turns NOTIFYs into wake-ups. It reconnects
    /// by itself; while it is down, waiters simply time out and poll.
    fn ensure_listener(&self) {
        use std::sync::atomic::Ordering;
        if self.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let (pool, wake) = (self.pool.clone(), self.wake.clone());
        tokio::spawn(async move {
            loop {
                let listened: std::result::Result<(), sqlx::Error> = async {
                    // Stores in other schemas of the same database share the channel; the
                    // payload names the schema a job was submitted to.
                    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
                        .fetch_one(&pool)
                        .await?;
                    let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    l.listen(TASKS_CHANNEL).await?;
                    loop {
                        // `None` means the connection dropped and is being re-established;
                        // waking the waiters then makes them poll, covering what was missed.
                        if let Some(n) = l.try_recv().await?
                            && n.payload() != schema
                        {
                            continue;
                        }
                        wake.notify_waiters();
                    }
                }
                .await;
                if let Err(e) = listened {
                    tracing::debug!(error = %e, "task listener lost its connection; retrying");
                }
                if pool.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

/// The production store: many processes on many machines share it.
pub type PgStore = SqlStore<PgBackend>;

impl PgStore {
    pub async fn connect(url: &str, opts: ConnectOptions) -> Result<Self> {
        let mut o = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("bad postgres url: {e}")))?;
        o = o.application_name(opts.application_name.as_deref().unwrap_or("sluice"));
        if let Some(schema) = &opts.schema {
            if !is_schema_name(schema) {
                return Err(StoreError::Invalid(format!(
                    "schema name {schema:?} must match [a-z_][a-z0-9_]{{0,62}}"
                )));
            }
            let mut c = PgConnection::connect_with(&o).await.map_err(from_sqlx)?;
            c.execute(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .await
            .map_err(from_sqlx)?;
            c.close().await.map_err(from_sqlx)?;
            o = o.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(if opts.max_connections == 0 {
                10
            } else {
                opts.max_connections
            })
            .acquire_timeout(opts.connect_timeout.unwrap_or(Duration::from_secs(10)))
            .connect_with(o)
            .await
            .map_err(from_sqlx)?;
        Ok(SqlStore(PgBackend {
            pool,
            wake: std::sync::Arc::default(),
            listening: std::sync::Arc::default(),
        }))
    }

    pub fn pool(&self) -> &PgPool {
        &self.0.pool
    }
}

/// The scopes charged for a call of `scope`: itself if it has a budget, then its ancestors up
/// to the root (a scope without a budget is charged to the root alone).
async fn budget_chain(tx: &mut PgConnection, scope: &str) -> Result<Vec<String>> {
    let start: Option<String> = sqlx::query_scalar("SELECT scope FROM budgets WHERE scope = $1")
        .bind(scope)
        .fetch_optional(&mut *tx)
        .await
        .map_err(from_sqlx)?;
    let start = start.unwrap_or_else(|| ROOT_SCOPE.to_string());
    let chain: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE chain AS ( \
             SELECT scope, parent, 0 AS depth FROM budgets WHERE scope = $1 \
             UNION ALL \
             SELECT b.scope, b.parent, c.depth + 1 FROM budgets b JOIN chain c ON b.scope = c.parent \
             WHERE c.depth < $2) \
         SELECT scope FROM chain ORDER BY depth",
    )
    .bind(&start)
    .bind(MAX_BUDGET_DEPTH as i32 - 1)
    .fetch_all(&mut *tx)
    .await
    .map_err(from_sqlx)?;
    Ok(chain)
}

#[async_trait]
impl Backend for PgBackend {
    type D = Postgres;
    const NAME: &'static str = "postgres";

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn is_race(e: &sqlx::Error) -> bool {
        match e {
            sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001" | "40P01")),
            _ => false,
        }
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    async fn job_insert(&self, p: JobInsertParams) -> Result<JobInserted> {
        in_tx!(self, |tx| {
            async {
                // The job's tags (ADR 0006): its owner's open jobs at this priority share one
                // stream, and the job starts at the priority's current virtual time.
                let others: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM jobs WHERE owner = $1 AND priority = $2 \
                     AND state IN ('queued', 'running')",
                )
                .bind(&p.owner)
                .bind(p.priority)
                .fetch_one(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                let vtime = scripts::vtime::<Postgres>(&mut *tx, p.priority).await?;
                let stride = others + 1;
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO jobs (owner, idempotency_key, spec, sql, priority, lakes_total, created_at, stride, retention_secs, webhook) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (owner, idempotency_key) DO NOTHING RETURNING id",
                )
                .bind(&p.owner)
                .bind(&p.idempotency_key)
                .bind(&p.spec)
                .bind(&p.sql)
                .bind(p.priority)
                .bind(p.tasks.len() as i64)
                .bind(p.now)
                .bind(stride as i32)
                .bind(p.retention_secs)
                .bind(&p.webhook)
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                let Some(id) = id else {
                    return scripts::job_replay::<Postgres>(&mut *tx, &p).await;
                };
                // FOR SHARE: a drain closing intake waits for this transaction, or this one
                // sees the close and rolls back (migration 0011).
                let intake: Option<IntakeRow> = sqlx::query_as(
                    "SELECT closed, reason, closed_by, closed_at FROM intake FOR SHARE",
                )
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                if let Some(h) = intake.and_then(intake_hold) {
                    return Err(h.refusal());
                }
                for (c, chunk) in p.tasks.chunks(TASK_INSERT_CHUNK).enumerate() {
                    let first_seq = vtime + others + (c * TASK_INSERT_CHUNK) as i64 * stride;
                    let lakes: Vec<&str> = chunk.iter().map(|t| t.lake.as_str()).collect();
                    let scopes: Vec<&str> = chunk.iter().map(|t| t.scope.as_str()).collect();
                    let est: Vec<i32> = chunk.iter().map(|t| t.est_calls).collect();
                    let shareable: Vec<bool> = chunk.iter().map(|t| t.shareable).collect();
                    sqlx::query(
                        "INSERT INTO tasks (job_id, lake, scope, est_calls, priority, max_attempts, \
                             run_after, created_at, updated_at, seq, owner, shareable) \
                         SELECT $1, u.lake, u.scope, u.est, $5, $6, $7, $7, $7, $8 + (u.n - 1) * $10, $9, u.sh \
                         FROM unnest($2::text[], $3::text[], $4::int[], $11::bool[]) \
                             WITH ORDINALITY AS u(lake, scope, est, sh, n) ORDER BY u.n",
                    )
                    .bind(id)
                    .bind(&lakes)
                    .bind(&scopes)
                    .bind(&est)
                    .bind(p.priority)
                    .bind(p.max_attempts)
                    .bind(p.now)
                    .bind(first_seq)
                    .bind(&p.owner)
                    .bind(stride)
                    .bind(&shareable)
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                }
                sqlx::query(
                    "INSERT INTO events (at, job_id, kind, detail) VALUES ($1, $2, $6, \
                     jsonb_build_object('owner', $3::text, 'tasks', $4::bigint, 'priority', $5::int))",
                )
                .bind(p.now)
                .bind(id)
                .bind(&p.owner)
                .bind(p.tasks.len() as i64)
                .bind(i32::from(p.priority))
                .bind(EventKind::JobSubmitted.as_str())
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                // Delivered at commit: idle workers on every machine wake up and claim.
                sqlx::query("SELECT pg_notify($1, current_schema()::text)")
                    .bind(TASKS_CHANNEL)
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                if p.tasks.is_empty() {
                    // Nothing to run: the job is finished as soon as it exists.
                    let next = JobState::Queued.apply(JobEvent::Finish(sluice_core::state::JobOutcome::Succeeded))?;
                    sqlx::query("UPDATE jobs SET state = $2, finished_at = $3 WHERE id = $1")
                        .bind(id)
                        .bind(next.as_str())
                        .bind(p.now)
                        .execute(&mut *tx)
                        .await
                        .map_err(from_sqlx)?;
                }
                let row = sqlx::query(concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = $1"))
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                Ok(JobInserted { job: read::<Job, _>(&row)?, created: true })
            }
            .await
        })
    }

    async fn task_claim(
        &self,
        p: &TaskClaimParams,
        expires: DateTime<Utc>,
    ) -> Result<Vec<ClaimedTask>> {
        // The holds in force are read first and passed as arrays: a per-row lookup of the
        // pauses in the claim (NOT EXISTS, or a joined aggregate) cost 15-50 % of the claim's
        // time in the queue benchmark. A pause set between the two statements takes effect
        // at the next claim.
        let mut conn = self.conn().await?;
        let holds = scripts::holds::<Postgres>(&mut conn, p.now).await?;
        let Some(mut plan) = claim_plan(holds, &p.skip_owners) else {
            return Ok(Vec::new());
        };
        let mut claimed = Vec::new();
        if !plan.has_quotas() {
            drop(conn);
            while let Some(skip) = plan.next_pass() {
                let left = p.limit - claimed.len() as u32;
                if left == 0 {
                    break;
                }
                let got = Self::claim_rows(&self.pool, p, left, expires, &skip).await?;
                plan.claimed(&got, left);
                claimed.extend(got);
            }
            if let Some(lakes) = crate::model::lakes_to_share(p, &claimed) {
                let along = self.claim_along(p, &lakes, expires, &plan.skip).await?;
                claimed.extend(along);
            }
            return Ok(claimed);
        }
        // While a quota is set, claims take turns (one transaction-scoped advisory lock) and
        // count the running tasks after the previous claim committed: two workers never both
        // fill the same owner's last free room.
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(from_sqlx)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(QUOTA_CLAIM_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let holds = scripts::holds::<Postgres>(&mut tx, p.now).await?;
        if let Some(mut plan) = claim_plan(holds, &p.skip_owners) {
            while let Some(skip) = plan.next_pass() {
                let left = p.limit - claimed.len() as u32;
                if left == 0 {
                    break;
                }
                let got = Self::claim_rows(&mut *tx, p, left, expires, &skip).await?;
                plan.claimed(&got, left);
                claimed.extend(got);
            }
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(claimed)
    }

    async fn task_heartbeat(&self, p: TaskHeartbeatParams) -> Result<Vec<Lease>> {
        let expires = lease_end(p.now, p.lease)?;
        let ids: Vec<i64> = p.leases.iter().map(|l| l.task_id.0).collect();
        let tokens: Vec<i64> = p.leases.iter().map(|l| l.token.0).collect();
        let kept: Vec<i64> = sqlx::query_scalar(
            "UPDATE tasks SET lease_expires_at = $3 \
             FROM unnest($1::bigint[], $2::bigint[]) AS u(id, token) \
             WHERE tasks.id = u.id AND tasks.lease_token = u.token AND tasks.state = 'running' \
             RETURNING tasks.id",
        )
        .bind(&ids)
        .bind(&tokens)
        .bind(expires)
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let kept: HashSet<i64> = kept.into_iter().collect();
        Ok(p.leases
            .into_iter()
            .filter(|l| !kept.contains(&l.task_id.0))
            .collect())
    }

    async fn task_finish(&self, p: TaskFinishParams) -> Result<FinishReport> {
        let n = p.finishes.len();
        let (mut ids, mut tokens, mut states, mut spent, mut run_after) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut rows, mut uris, mut errors, mut kinds, mut crashes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for f in &p.finishes {
            let OutcomeColumns {
                state: st,
                run_after: ra,
                rows: r,
                result_uri: uri,
                error: err,
            } = outcome_columns(&f.outcome);
            ids.push(f.lease.task_id.0);
            tokens.push(f.lease.token.0);
            states.push(st.as_str());
            spent.push(i32::from(f.outcome.event().spends_attempt()));
            run_after.push(ra);
            rows.push(r);
            uris.push(uri);
            errors.push(err);
            kinds.push(f.outcome.event().journal_kind().as_str());
            crashes.push(f.outcome.crashes());
        }
        in_tx!(self, |tx| {
            async {
                let applied = sqlx::query(
                    "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::int[], \
                         $5::timestamptz[], $6::bigint[], $7::text[], $8::text[], $9::text[], $11::int[]) \
                         AS u(id, token, state, spent, run_after, rows_found, result_uri, error, kind, crashed)), \
                     t AS (UPDATE tasks SET state = u.state, attempt = tasks.attempt + u.spent, \
                         crashes = tasks.crashes + u.crashed, \
                         run_after = coalesce(u.run_after, tasks.run_after), \
                         rows_found = u.rows_found, result_uri = u.result_uri, \
                         last_error = coalesce(u.error, tasks.last_error), \
                         lease_owner = NULL, lease_expires_at = NULL, updated_at = $10 \
                       FROM u WHERE tasks.id = u.id AND tasks.lease_token = u.token \
                         AND tasks.state = 'running' \
                       RETURNING tasks.id, tasks.job_id, tasks.scope, tasks.state, tasks.rows_found, \
                         tasks.attempt, u.kind, u.error), \
                     ev AS (INSERT INTO events (at, job_id, task_id, scope, kind, detail) \
                       SELECT $10, job_id, id, scope, kind, jsonb_strip_nulls(jsonb_build_object( \
                         'attempt', attempt, 'rows', rows_found, 'error', error)) FROM t) \
                     SELECT id, job_id, state, rows_found FROM t",
                )
                .bind(&ids)
                .bind(&tokens)
                .bind(&states)
                .bind(&spent)
                .bind(&run_after)
                .bind(&rows)
                .bind(&uris)
                .bind(&errors)
                .bind(&kinds)
                .bind(p.now)
                .bind(&crashes)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                let mut deltas: BTreeMap<i64, JobDelta> = BTreeMap::new();
                let mut done = HashSet::with_capacity(applied.len());
                for r in &applied {
                    let id: i64 = r.try_get("id").map_err(from_sqlx)?;
                    let s: String = r.try_get("state").map_err(from_sqlx)?;
                    deltas
                        .entry(r.try_get("job_id").map_err(from_sqlx)?)
                        .or_default()
                        .add(state(&s, TaskState::parse)?, r.try_get("rows_found").map_err(from_sqlx)?);
                    done.insert(id);
                }
                scripts::jobs_apply::<Postgres>(&mut *tx, &deltas, p.now).await?;
                let (applied, rejected) = p.finishes.iter().map(|f| f.lease.task_id).partition(|id| done.contains(&id.0));
                Ok(FinishReport { applied, rejected })
            }
            .await
        })
    }

    async fn task_hand_back(&self, p: TaskHandBackParams) -> Result<Vec<TaskId>> {
        let (kind, value, job, keep) = p.of.filter();
        let ev = TaskEvent::Defer;
        let state = TaskState::Running.apply(ev)?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "WITH t AS (UPDATE tasks SET state = $4, run_after = $3, last_error = $5, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $3 \
               WHERE state = 'running' AND CASE $7::text \
                   WHEN 'worker' THEN lease_owner = $1 AND NOT (id = ANY($2)) \
                   WHEN 'all' THEN true WHEN 'scope' THEN scope = $1 \
                   WHEN 'owner' THEN owner = $1 WHEN 'job' THEN job_id = $8 ELSE false END \
               RETURNING id, job_id, scope, lease_token, lease_owner), \
             ev AS (INSERT INTO events (at, job_id, task_id, scope, kind, detail) \
               SELECT $3, job_id, id, scope, $6, \
                 jsonb_build_object('reason', $5::text, 'of', $7::text, 'token', lease_token) FROM t) \
             SELECT id FROM t ORDER BY id",
        )
        .bind(&value)
        .bind(&keep)
        .bind(p.now)
        .bind(state.as_str())
        .bind(&p.reason)
        .bind(ev.journal_kind().as_str())
        .bind(kind)
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(ids.into_iter().map(TaskId).collect())
    }

    async fn task_rescue_expired(&self, p: TaskRescueParams) -> Result<Vec<RescuedTask>> {
        in_tx!(self, |tx| {
            async {
                let cands = sqlx::query(
                    "SELECT id, lease_token, attempt, max_attempts, crashes FROM tasks \
                     WHERE state = 'running' AND lease_expires_at < $1 \
                     ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                )
                .bind(p.now)
                .bind(i64::from(p.limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                if cands.is_empty() {
                    return Ok(Vec::new());
                }
                let (mut ids, mut tokens, mut states, mut kinds) = (vec![], vec![], vec![], vec![]);
                for r in &cands {
                    let attempt: i32 = r.try_get("attempt").map_err(from_sqlx)?;
                    let max: i32 = r.try_get("max_attempts").map_err(from_sqlx)?;
                    let crashes: i32 = r.try_get("crashes").map_err(from_sqlx)?;
                    let ev = TaskEvent::on_lease_expiry(attempt, max, crashes);
                    ids.push(r.try_get::<i64, _>("id").map_err(from_sqlx)?);
                    tokens.push(r.try_get::<i64, _>("lease_token").map_err(from_sqlx)?);
                    states.push(TaskState::Running.apply(ev)?.as_str());
                    kinds.push(ev.journal_kind().as_str());
                }
                let rows = sqlx::query(
                    "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) \
                         AS u(id, token, state, kind)), \
                     t AS (UPDATE tasks SET state = u.state, attempt = tasks.attempt + 1, \
                         last_error = 'lease expired: worker ' || coalesce(tasks.lease_owner, '?') \
                             || ' stopped heartbeating', \
                         lease_owner = NULL, lease_expires_at = NULL, updated_at = $5 \
                       FROM u WHERE tasks.id = u.id AND tasks.lease_token = u.token \
                         AND tasks.state = 'running' \
                       RETURNING tasks.id, tasks.job_id, tasks.scope, tasks.state, tasks.attempt, \
                         u.token, u.kind), \
                     ev AS (INSERT INTO events (at, job_id, task_id, scope, kind, detail) \
                       SELECT $5, job_id, id, scope, kind, \
                         jsonb_build_object('attempt', attempt, 'stale_token', token) FROM t) \
                     SELECT id, job_id, state FROM t",
                )
                .bind(&ids)
                .bind(&tokens)
                .bind(&states)
                .bind(&kinds)
                .bind(p.now)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                let mut deltas: BTreeMap<i64, JobDelta> = BTreeMap::new();
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let s: String = r.try_get("state").map_err(from_sqlx)?;
                    let st = state(&s, TaskState::parse)?;
                    let job_id: i64 = r.try_get("job_id").map_err(from_sqlx)?;
                    deltas.entry(job_id).or_default().add(st, None);
                    out.push(RescuedTask { id: TaskId(r.try_get("id").map_err(from_sqlx)?), job_id: JobId(job_id), state: st });
                }
                scripts::jobs_apply::<Postgres>(&mut *tx, &deltas, p.now).await?;
                Ok(out)
            }
            .await
        })
    }

    async fn task_wait(&self, timeout: Duration) {
        self.ensure_listener();
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }

    async fn budget_take(&self, p: BudgetTakeParams) -> Result<u32> {
        in_tx!(self, |tx| {
            async {
                let chain = budget_chain(&mut *tx, &p.scope).await?;
                if chain.is_empty() {
                    return Ok(p.n); // no budget anywhere: unlimited
                }
                // Lock in scope order, the order every taker uses.
                let rows = sqlx::query(
                    concat!("SELECT ", budget_cols!(), " FROM budgets \
                     WHERE scope = ANY($1) ORDER BY scope FOR UPDATE"),
                )
                .bind(&chain)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                let budgets = rows.iter().map(read::<Budget, _>).collect::<Result<Vec<_>>>()?;
                let (grant, after) = take_from_chain(&budgets, p.n, p.hold, p.now);
                let dry: Vec<Option<DateTime<Utc>>> = after.iter().map(|b| b.dry_until).collect();
                let scopes: Vec<&str> = after.iter().map(|b| b.scope.as_str()).collect();
                let tokens: Vec<f64> = after.iter().map(|b| b.tokens).collect();
                let at: Vec<DateTime<Utc>> = after.iter().map(|b| b.refilled_at).collect();
                let adaptive: Vec<Option<serde_json::Value>> = after.iter().map(adaptive_json).collect();
                sqlx::query(
                    "UPDATE budgets SET tokens = u.tokens, refilled_at = u.at, adaptive = u.adaptive, dry_until = u.dry \
                     FROM unnest($1::text[], $2::float8[], $3::timestamptz[], $4::jsonb[], $5::timestamptz[]) \
                         AS u(scope, tokens, at, adaptive, dry) \
                     WHERE budgets.scope = u.scope",
                )
                .bind(&scopes)
                .bind(&tokens)
                .bind(&at)
                .bind(&adaptive)
                .bind(&dry)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                Ok(grant)
            }
            .await
        })
    }

    async fn job_backlog(&self) -> Result<Vec<Backlog>> {
        let rows: Vec<(i16, i64, i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT priority, count(*), \
                 COALESCE(sum(lakes_total - lakes_done - lakes_failed - lakes_cancelled), 0)::bigint, \
                 min(created_at) \
             FROM jobs WHERE state IN ('queued', 'running') GROUP BY priority ORDER BY priority DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(rows
            .into_iter()
            .map(
                |(priority, open_jobs, open_tasks, oldest_created_at)| Backlog {
                    priority,
                    open_jobs,
                    open_tasks,
                    oldest_created_at,
                },
            )
            .collect())
    }

    async fn task_backlog(&self) -> Result<TaskBacklog> {
        // Concurrent folds are safe: a delta row is deleted (and added) by exactly one of them.
        sqlx::query(
            "WITH d AS (DELETE FROM task_count_deltas RETURNING scope, state, tasks, est_calls) \
             INSERT INTO task_counts AS c (scope, state, tasks, est_calls) \
             SELECT scope, state, sum(tasks)::bigint, sum(est_calls)::bigint FROM d \
             GROUP BY scope, state ORDER BY scope, state \
             ON CONFLICT (scope, state) DO UPDATE \
             SET tasks = c.tasks + excluded.tasks, est_calls = c.est_calls + excluded.est_calls",
        )
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT scope, state, tasks, est_calls FROM task_counts WHERE tasks <> 0 \
             ORDER BY scope, state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let oldest_pending_at: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT min(created_at) FROM tasks WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await
                .map_err(from_sqlx)?;
        task_backlog(rows, oldest_pending_at)
    }
}
