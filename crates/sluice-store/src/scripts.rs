//! Transaction scripts written once for both databases ([`Db`]): each runs inside its caller's
//! transaction (`c` is the transaction's connection); the caller begins, commits and, on
//! PostgreSQL, retries a transaction that lost a serialization race.

use crate::db::{Args, Db, to_json};
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::rows::{
    JobCountsRow, Scalar, Ts, adaptive_json, budget_cols, intake_hold, job_cols, task_cols,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sluice_core::{EventKind, QuotaTarget};
use std::collections::BTreeMap;

/// A statement whose text ends with the database's row lock (see [`Db::FOR_UPDATE`]).
fn locking<D: Db>(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("{sql}{}", D::FOR_UPDATE))
}

/// One journal row.
pub(crate) async fn event_insert<D: Db>(
    c: &mut D::Connection,
    at: DateTime<Utc>,
    job_id: Option<i64>,
    task: Option<(i64, &str)>,
    kind: EventKind,
    detail: Option<Value>,
) -> Result<()> {
    let q = sqlx::query(
        "INSERT INTO events (at, job_id, task_id, scope, kind, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .arg(Ts(at))
    .arg(job_id)
    .arg(task.map(|t| t.0))
    .arg(task.map(|t| t.1.to_string()))
    .arg(kind.as_str())
    .arg(detail);
    D::execute(q, c).await?;
    Ok(())
}

/// Writes a budget's bucket and adaptive state back.
pub(crate) async fn budget_save<D: Db>(c: &mut D::Connection, b: &Budget) -> Result<()> {
    let q = sqlx::query(
        "UPDATE budgets SET tokens = $1, refilled_at = $2, adaptive = $3, dry_until = $4 \
         WHERE scope = $5",
    )
    .arg(b.tokens)
    .arg(Ts(b.refilled_at))
    .arg(adaptive_json(b))
    .arg(b.dry_until.map(Ts))
    .arg(b.scope.clone());
    D::execute(q, c).await?;
    Ok(())
}

/// Applies feedback to a scope's own budget, if it has one.
pub(crate) async fn budget_feedback_tx<D: Db>(
    c: &mut D::Connection,
    scope: &str,
    f: BudgetFeedback,
    now: DateTime<Utc>,
) -> Result<()> {
    let q = sqlx::query(locking::<D>(concat!(
        "SELECT ",
        budget_cols!(),
        " FROM budgets WHERE scope = $1"
    )))
    .arg(scope.to_string());
    let Some(row) = D::fetch_optional(q, c).await? else {
        return Ok(());
    };
    let mut b: Budget = D::read(&row)?;
    b.feedback(f, now);
    budget_save::<D>(c, &b).await
}

/// Applies counter deltas to jobs in id order (the lock order every transaction follows),
/// finishing and journaling the jobs whose last task ended.
pub(crate) async fn jobs_apply<D: Db>(
    c: &mut D::Connection,
    deltas: &BTreeMap<i64, JobDelta>,
    now: DateTime<Utc>,
) -> Result<()> {
    for (&job_id, d) in deltas.iter().filter(|(_, d)| !d.is_empty()) {
        let q = sqlx::query(locking::<D>(
            "SELECT state, lakes_total, lakes_done, lakes_failed, lakes_cancelled FROM jobs \
             WHERE id = $1",
        ))
        .arg(job_id);
        let row: JobCountsRow = D::read(&D::fetch_one(q, c).await?)?;
        let (before, counts) = row.into_parts()?;
        let (counts, next) = job_after(before, counts, d)?;
        let after = next.unwrap_or(before);
        let q = sqlx::query(
            "UPDATE jobs SET lakes_done = $1, lakes_failed = $2, lakes_cancelled = $3, \
                 rows_found = rows_found + $4, state = $5, \
                 finished_at = CASE WHEN $6 THEN $7 ELSE finished_at END \
             WHERE id = $8 \
             RETURNING rows_found, CAST(CASE WHEN webhook IS NULL THEN 0 ELSE 1 END AS BIGINT) AS hooked",
        )
        .arg(counts.done)
        .arg(counts.failed)
        .arg(counts.cancelled)
        .arg(d.rows)
        .arg(after.as_str())
        .arg(next.is_some())
        .arg(Ts(now))
        .arg(job_id);
        // Whether it names a webhook comes back with the update: the whole row is read only
        // for a job that ends and has one.
        let crate::rows::Pair(rows, hooked) = D::read(&D::fetch_one(q, c).await?)?;
        if next.is_some() {
            let detail = serde_json::json!({
                "done": counts.done, "failed": counts.failed, "cancelled": counts.cancelled,
                "rows": rows,
            });
            event_insert::<D>(
                c,
                now,
                Some(job_id),
                None,
                EventKind::of_job(after),
                Some(detail),
            )
            .await?;
            if hooked == 1 {
                let job = job_get::<D>(c, sluice_core::JobId(job_id)).await?;
                webhook_enqueue::<D>(c, &job, now).await?;
            }
        }
    }
    Ok(())
}

/// A breaker operation: the breaker row is created closed on first use, moved by the op,
/// journaled when it changes (or reports), and a close or reset starts the scope's budget
/// slow while a throttle halves it.
pub(crate) async fn breaker_update<D: Db>(
    c: &mut D::Connection,
    p: &BreakerUpdateParams,
) -> Result<BreakerUpdate> {
    if p.scope.is_empty() || p.scope.len() > 200 {
        return Err(StoreError::Invalid(
            "scope must be 1 to 200 characters".into(),
        ));
    }
    let closed = to_json(&sluice_core::Breaker::closed(p.now))?;
    let q = sqlx::query(
        "INSERT INTO breakers (scope, state, detail, updated_at) VALUES ($1, 'closed', $2, $3) \
         ON CONFLICT (scope) DO NOTHING",
    )
    .arg(p.scope.clone())
    .arg(closed)
    .arg(Ts(p.now));
    D::execute(q, c).await?;
    let q = sqlx::query(locking::<D>(
        "SELECT scope, detail, updated_at FROM breakers WHERE scope = $1",
    ))
    .arg(p.scope.clone());
    let mut row: BreakerRow = D::read(&D::fetch_one(q, c).await?)?;
    let before = row.breaker;
    let admission = p.op.apply(&mut row.breaker, &p.cfg, p.now);
    if row.breaker != before {
        row.updated_at = p.now;
        let q = sqlx::query(
            "UPDATE breakers SET state = $1, hold_until = $2, detail = $3, updated_at = $4 \
             WHERE scope = $5",
        )
        .arg(row.breaker.state.as_str())
        .arg(row.breaker.hold_until(&p.cfg).map(Ts))
        .arg(to_json(&row.breaker)?)
        .arg(Ts(p.now))
        .arg(p.scope.clone());
        D::execute(q, c).await?;
    }
    let to = row.breaker.state;
    if let Some(kind) = p.op.journal_kind(before.state, to) {
        let by = match &p.op {
            BreakerOp::Reset { by } => Some(by.as_str()),
            _ => None,
        };
        let q = sqlx::query("INSERT INTO events (at, scope, kind, detail) VALUES ($1, $2, $3, $4)")
            .arg(Ts(p.now))
            .arg(p.scope.clone())
            .arg(kind.as_str())
            .arg(
                serde_json::json!({"from": before.state.as_str(), "to": to.as_str(),
                "probe_after": row.breaker.probe_after, "by": by}),
            );
        D::execute(q, c).await?;
    }
    if let Some(f) = p.op.budget_feedback(before.state, to) {
        budget_feedback_tx::<D>(c, &p.scope, f, p.now).await?;
    }
    Ok(BreakerUpdate {
        row,
        admission,
        changed_from: (before.state != to).then_some(before.state),
    })
}

/// The one row `q` finds, or `NotFound(what)`.
async fn found<D, T>(c: &mut D::Connection, q: crate::db::Q<'_, D>, what: String) -> Result<T>
where
    D: Db + crate::db::Reads<T>,
{
    match D::fetch_optional(q, c).await? {
        Some(row) => D::read(&row),
        None => Err(StoreError::NotFound(what)),
    }
}

/// Every row `q` finds.
async fn all<D, T>(c: &mut D::Connection, q: crate::db::Q<'_, D>) -> Result<Vec<T>>
where
    D: Db + crate::db::Reads<T>,
{
    D::fetch_all(q, c).await?.iter().map(D::read).collect()
}

const TOKEN_COLS: &str = "id, owner, role, lakes, label, created_at, revoked_at";
const LAKE_COLS: &str = "id, name, url, scope, partition_cols, schema, tags, options, created_at";

pub(crate) async fn job_get<D: Db>(c: &mut D::Connection, id: sluice_core::JobId) -> Result<Job> {
    let q = sqlx::query(concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = $1")).arg(id.0);
    found::<D, _>(c, q, format!("job {id}")).await
}

pub(crate) async fn job_list<D: Db>(c: &mut D::Connection, p: &JobListParams) -> Result<Vec<Job>> {
    let q = sqlx::query(concat!(
        "SELECT ",
        job_cols!(),
        " FROM jobs WHERE ($1 IS NULL OR owner = $1) AND ($2 IS NULL OR state = $2) \
          AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    ))
    .arg(p.owner.clone())
    .arg(p.state.map(|s| s.as_str()))
    .arg(p.before.map(|j| j.0))
    .arg(i64::from(p.limit.min(1000)));
    all::<D, _>(c, q).await
}

pub(crate) async fn task_get<D: Db>(
    c: &mut D::Connection,
    id: sluice_core::TaskId,
) -> Result<Task> {
    let q = sqlx::query(concat!(
        "SELECT ",
        task_cols!(),
        " FROM tasks WHERE id = $1"
    ))
    .arg(id.0);
    found::<D, _>(c, q, format!("task {id}")).await
}

pub(crate) async fn task_list<D: Db>(
    c: &mut D::Connection,
    p: &TaskListParams,
) -> Result<Vec<Task>> {
    let q = sqlx::query(concat!(
        "SELECT ",
        task_cols!(),
        " FROM tasks WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .arg(p.job_id.0)
    .arg(p.after.map_or(0, |t| t.0))
    .arg(i64::from(p.limit));
    all::<D, _>(c, q).await
}

pub(crate) async fn token_insert<D: Db>(
    c: &mut D::Connection,
    p: &TokenInsertParams,
) -> Result<ApiToken> {
    validate_token(p)?;
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_tokens (owner, role, hash, label, created_at, lakes) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TOKEN_COLS}"
    )))
    .arg(p.owner.clone())
    .arg(p.role.as_str())
    .arg(p.hash.clone())
    .arg(p.label.clone())
    .arg(Ts(p.now))
    .arg(serde_json::json!(p.lakes));
    D::read(&D::fetch_one(q, c).await?)
}

pub(crate) async fn token_find<D: Db>(c: &mut D::Connection, hash: &str) -> Result<ApiToken> {
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TOKEN_COLS} FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL"
    )))
    .arg(hash.to_string());
    found::<D, _>(c, q, "token".into()).await
}

pub(crate) async fn token_list<D: Db>(c: &mut D::Connection) -> Result<Vec<ApiToken>> {
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TOKEN_COLS} FROM api_tokens ORDER BY id"
    )));
    all::<D, _>(c, q).await
}

pub(crate) async fn token_revoke<D: Db>(
    c: &mut D::Connection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<ApiToken> {
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
         RETURNING {TOKEN_COLS}"
    )))
    .arg(id)
    .arg(Ts(now));
    found::<D, _>(c, q, format!("token {id}")).await
}

/// Opens a session; sessions that expired before `now` go first (sign-ins are rare, so the
/// table stays small without a sweeper).
pub(crate) async fn session_insert<D: Db>(
    c: &mut D::Connection,
    p: &SessionInsertParams,
) -> Result<()> {
    crate::model::validate_session(p)?;
    let q = sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1").arg(Ts(p.now));
    D::execute(q, c).await?;
    // A token holds at most MAX_SESSIONS at once: signing in again and again (a script, a
    // leaked token) ends the oldest instead of growing the table.
    let q = sqlx::query(
        "DELETE FROM console_sessions WHERE token_hash = $1 AND hash NOT IN \
             (SELECT hash FROM console_sessions WHERE token_hash = $1 \
              ORDER BY created_at DESC, hash LIMIT $2)",
    )
    .arg(p.token_hash.clone())
    .arg(crate::model::MAX_SESSIONS - 1);
    D::execute(q, c).await?;
    let q = sqlx::query(
        "INSERT INTO console_sessions (hash, token_hash, csrf, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .arg(p.hash.clone())
    .arg(p.token_hash.clone())
    .arg(p.csrf.clone())
    .arg(Ts(p.now))
    .arg(Ts(p.expires_at));
    D::execute(q, c).await?;
    Ok(())
}

pub(crate) async fn session_find<D: Db>(
    c: &mut D::Connection,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<ConsoleSession> {
    let q = sqlx::query(
        "SELECT token_hash, csrf, created_at, expires_at FROM console_sessions \
         WHERE hash = $1 AND expires_at > $2",
    )
    .arg(hash.to_string())
    .arg(Ts(now));
    found::<D, _>(c, q, "session".into()).await
}

pub(crate) async fn session_delete<D: Db>(c: &mut D::Connection, hash: &str) -> Result<()> {
    let q = sqlx::query("DELETE FROM console_sessions WHERE hash = $1").arg(hash.to_string());
    D::execute(q, c).await?;
    Ok(())
}

const SCHEDULE_COLS: &str = "id, owner, name, request, every_secs, cron, range_secs, lakes, \
     token_hash, next_at, paused_at, paused_by, runs, last_job_id, last_run_at, last_error, created_at";

pub(crate) async fn schedule_insert<D: Db>(
    c: &mut D::Connection,
    p: &ScheduleInsertParams,
) -> Result<Schedule> {
    crate::model::validate_schedule(p)?;
    let q = sqlx::query("SELECT count(*) FROM schedules WHERE owner = $1 AND name = $2")
        .arg(p.owner.clone())
        .arg(p.name.clone());
    let Scalar(taken) = D::read(&D::fetch_one(q, c).await?)?;
    let q = sqlx::query("SELECT count(*) FROM schedules WHERE owner = $1").arg(p.owner.clone());
    let Scalar(held) = D::read(&D::fetch_one(q, c).await?)?;
    if held >= crate::model::MAX_SCHEDULES {
        return Err(StoreError::Conflict(format!(
            "{} has {held} schedules, the most one owner may have: delete one first",
            p.owner
        )));
    }
    if taken > 0 {
        return Err(StoreError::Conflict(format!(
            "{} already has a schedule named {:?}",
            p.owner, p.name
        )));
    }
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO schedules (owner, name, request, every_secs, cron, range_secs, lakes, \
             token_hash, next_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {SCHEDULE_COLS}"
    )))
    .arg(p.owner.clone())
    .arg(p.name.clone())
    .arg(p.request.clone())
    .arg(p.every_secs)
    .arg(p.cron.clone())
    .arg(p.range_secs)
    .arg(serde_json::json!(p.lakes))
    .arg(p.token_hash.clone())
    .arg(Ts(p.next_at))
    .arg(Ts(p.now));
    D::read(&D::fetch_one(q, c).await?)
}

pub(crate) async fn job_by_key<D: Db>(
    c: &mut D::Connection,
    owner: &str,
    key: &str,
) -> Result<Job> {
    let q = sqlx::query(concat!(
        "SELECT ",
        job_cols!(),
        " FROM jobs WHERE owner = $1 AND idempotency_key = $2"
    ))
    .arg(owner.to_string())
    .arg(key.to_string());
    found::<D, _>(
        c,
        q,
        format!("a job of {owner} with idempotency key {key:?}"),
    )
    .await
}

pub(crate) async fn schedule_get<D: Db>(c: &mut D::Connection, id: i64) -> Result<Schedule> {
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SCHEDULE_COLS} FROM schedules WHERE id = $1"
    )))
    .arg(id);
    found::<D, _>(c, q, format!("schedule {id}")).await
}

pub(crate) async fn schedule_list<D: Db>(
    c: &mut D::Connection,
    owner: Option<&str>,
) -> Result<Vec<Schedule>> {
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SCHEDULE_COLS} FROM schedules WHERE $1 IS NULL OR owner = $1 ORDER BY id"
    )))
    .arg(owner.map(str::to_string));
    all::<D, _>(c, q).await
}

pub(crate) async fn schedule_due<D: Db>(
    c: &mut D::Connection,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<Schedule>> {
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SCHEDULE_COLS} FROM schedules WHERE paused_at IS NULL AND next_at <= $1 \
         ORDER BY next_at, id LIMIT $2"
    )))
    .arg(Ts(now))
    .arg(i64::from(limit));
    all::<D, _>(c, q).await
}

/// Records a tick: moves `next_at` on from the tick (only if it still is the tick: another
/// leader may have recorded it first) and journals the run; whether this call recorded it.
pub(crate) async fn schedule_ran<D: Db>(
    c: &mut D::Connection,
    p: &ScheduleRanParams,
) -> Result<bool> {
    let (job, error) = match &p.outcome {
        Ok(j) => (Some(j.0), None),
        Err(e) => (None, Some(e.chars().take(2000).collect::<String>())),
    };
    let q = sqlx::query(
        "UPDATE schedules SET next_at = $3, last_run_at = $4, \
             runs = runs + CASE WHEN $5 IS NULL THEN 0 ELSE 1 END, \
             last_job_id = COALESCE($5, last_job_id), last_error = $6 \
         WHERE id = $1 AND next_at = $2",
    )
    .arg(p.id)
    .arg(Ts(p.tick))
    .arg(Ts(p.next_at))
    .arg(Ts(p.now))
    .arg(job)
    .arg(error.clone());
    if D::execute(q, c).await? == 0 {
        return Ok(false);
    }
    let (kind, detail) = match (job, error) {
        (Some(j), _) => (
            EventKind::ScheduleFired,
            serde_json::json!({"schedule": p.id, "tick": p.tick, "job": j}),
        ),
        (None, e) => (
            EventKind::ScheduleSkipped,
            serde_json::json!({"schedule": p.id, "tick": p.tick, "error": e}),
        ),
    };
    event_insert::<D>(c, p.now, job, None, kind, Some(detail)).await?;
    Ok(true)
}

/// Pauses (`Some(by)`) or resumes (`None`, due next at `next_at`) a schedule, journaled.
pub(crate) async fn schedule_hold<D: Db>(
    c: &mut D::Connection,
    id: i64,
    by: &str,
    pause: bool,
    next_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Schedule> {
    let q = if pause {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE schedules SET paused_at = COALESCE(paused_at, $2), \
                 paused_by = COALESCE(paused_by, $3) \
             WHERE id = $1 RETURNING {SCHEDULE_COLS}"
        )))
        .arg(id)
        .arg(Ts(now))
        .arg(by.to_string())
    } else {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE schedules SET paused_at = NULL, paused_by = NULL, \
                 next_at = CASE WHEN paused_at IS NULL THEN next_at ELSE $2 END \
             WHERE id = $1 RETURNING {SCHEDULE_COLS}"
        )))
        .arg(id)
        .arg(Ts(next_at))
    };
    let s: Schedule = found::<D, _>(c, q, format!("schedule {id}")).await?;
    let kind = if pause {
        EventKind::SchedulePaused
    } else {
        EventKind::ScheduleResumed
    };
    event_insert::<D>(
        c,
        now,
        None,
        None,
        kind,
        Some(serde_json::json!({"schedule": id, "by": by})),
    )
    .await?;
    Ok(s)
}

pub(crate) async fn schedule_delete<D: Db>(
    c: &mut D::Connection,
    id: i64,
    by: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let q = sqlx::query("DELETE FROM schedules WHERE id = $1").arg(id);
    if D::execute(q, c).await? == 0 {
        return Err(StoreError::NotFound(format!("schedule {id}")));
    }
    event_insert::<D>(
        c,
        now,
        None,
        None,
        EventKind::ScheduleDeleted,
        Some(serde_json::json!({"schedule": id, "by": by})),
    )
    .await
}

pub(crate) async fn lake_insert<D: Db>(
    c: &mut D::Connection,
    p: &LakeInsertParams,
) -> Result<Lake> {
    validate_lake(p)?;
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO lakes (name, url, scope, partition_cols, schema, tags, options, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {LAKE_COLS}"
    )))
    .arg(p.name.clone())
    .arg(p.url.clone())
    .arg(p.scope.clone())
    .arg(serde_json::json!(p.partition_cols))
    .arg(p.schema.clone())
    .arg(serde_json::json!(p.tags))
    .arg(serde_json::json!(p.options))
    .arg(Ts(p.now));
    match D::fetch_one(q, c).await {
        Ok(row) => D::read(&row),
        Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(format!(
            "lake {:?} already exists",
            p.name
        ))),
        Err(e) => Err(e),
    }
}

pub(crate) async fn lake_list<D: Db>(c: &mut D::Connection) -> Result<Vec<Lake>> {
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LAKE_COLS} FROM lakes ORDER BY name"
    )));
    all::<D, _>(c, q).await
}

pub(crate) async fn lake_get<D: Db>(c: &mut D::Connection, name: &str) -> Result<Lake> {
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LAKE_COLS} FROM lakes WHERE name = $1"
    )))
    .arg(name.to_string());
    found::<D, _>(c, q, format!("lake {name:?}")).await
}

/// Unregisters a lake, refused while tasks of it are unfinished: a lake registered again
/// under the name must not receive tasks (nor show its results to tokens) planned against
/// the one removed.
pub(crate) async fn lake_remove<D: Db>(c: &mut D::Connection, name: &str) -> Result<()> {
    let q = sqlx::query(
        "SELECT count(*) FROM tasks WHERE state IN ('pending', 'running') AND lake = $1",
    )
    .arg(name.to_string());
    let Scalar(open) = D::read(&D::fetch_one(q, c).await?)?;
    if open > 0 {
        return Err(StoreError::Conflict(format!(
            "lake {name:?} has {open} unfinished tasks: cancel their jobs or let them finish first"
        )));
    }
    let q = sqlx::query("DELETE FROM lakes WHERE name = $1").arg(name.to_string());
    if D::execute(q, c).await? == 0 {
        return Err(StoreError::NotFound(format!("lake {name:?}")));
    }
    Ok(())
}

pub(crate) async fn budget_list<D: Db>(c: &mut D::Connection) -> Result<Vec<Budget>> {
    let q = sqlx::query(concat!(
        "SELECT ",
        budget_cols!(),
        " FROM budgets ORDER BY scope"
    ));
    all::<D, _>(c, q).await
}

pub(crate) async fn breaker_list<D: Db>(c: &mut D::Connection) -> Result<Vec<BreakerRow>> {
    let q = sqlx::query("SELECT scope, detail, updated_at FROM breakers ORDER BY scope");
    all::<D, _>(c, q).await
}

pub(crate) async fn pause_list<D: Db>(c: &mut D::Connection) -> Result<Vec<Pause>> {
    let q = sqlx::query("SELECT target, reason, paused_by, at FROM pauses ORDER BY target");
    all::<D, _>(c, q).await
}

/// The pauses that hold a job back: of everything, its owner, itself, or a scope one of its
/// pending tasks is in ([`PauseTarget::holds`]).
pub(crate) async fn pause_list_for_job<D: Db>(
    c: &mut D::Connection,
    job: sluice_core::JobId,
) -> Result<Vec<Pause>> {
    let pauses = pause_list::<D>(c).await?;
    if pauses.is_empty() {
        return Ok(pauses);
    }
    let q = sqlx::query("SELECT owner AS v FROM jobs WHERE id = $1").arg(job.0);
    let Some(row) = D::fetch_optional(q, c).await? else {
        return Ok(Vec::new());
    };
    let crate::rows::Text { v: owner } = D::read(&row)?;
    let mut held = Vec::new();
    for p in pauses {
        let holds = match &p.target {
            PauseTarget::Scope(scope) => {
                let q = sqlx::query(
                    "SELECT count(*) AS v FROM (SELECT 1 FROM tasks \
                     WHERE job_id = $1 AND state = 'pending' AND scope = $2 LIMIT 1) t",
                )
                .arg(job.0)
                .arg(scope.clone());
                let Scalar(n) = D::read(&D::fetch_one(q, c).await?)?;
                n > 0
            }
            t => t.holds(job, &owner, &[]),
        };
        if holds {
            held.push(p);
        }
    }
    Ok(held)
}

/// What holds tasks back from claims now: pauses, open breakers, and dry budgets with every
/// scope under them.
pub(crate) async fn holds<D: Db>(c: &mut D::Connection, now: DateTime<Utc>) -> Result<Vec<Hold>> {
    let q = sqlx::query(
        "WITH RECURSIVE dry(scope) AS ( \
             SELECT scope FROM budgets WHERE dry_until > $1 \
             UNION SELECT b.scope FROM budgets b JOIN dry ON b.parent = dry.scope) \
         SELECT 'pause' AS kind, target AS v, CAST(NULL AS BIGINT) AS n FROM pauses \
         UNION ALL SELECT 'breaker', scope, NULL FROM breakers WHERE hold_until > $1 \
         UNION ALL SELECT 'dry', scope, NULL FROM dry \
         UNION ALL SELECT 'quota', owner, max_running FROM owner_quotas \
         UNION ALL SELECT 'running', owner, count(*) FROM tasks \
             WHERE state = 'running' AND EXISTS (SELECT 1 FROM owner_quotas) GROUP BY owner",
    )
    .arg(Ts(now));
    let rows: Vec<crate::rows::HoldRow> = all::<D, _>(c, q).await?;
    // A pause key nobody can read (corrupt data) is reported and skipped: it must not stop
    // every claim.
    Ok(rows
        .into_iter()
        .filter_map(|r| match r.hold() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable hold");
                None
            }
        })
        .collect())
}

/// One round of an election: the holder renews, or a candidate takes an expired lease (a new
/// term, journaled).
pub(crate) async fn leader_elect<D: Db>(
    c: &mut D::Connection,
    p: &LeaderElectParams,
) -> Result<Leadership> {
    let expires = crate::rows::lease_end(p.now, p.ttl)?;
    // The row exists from the first round on; its lock orders concurrent rounds.
    let q = sqlx::query(
        "INSERT INTO leaders (name, holder, term, expires_at, elected_at) \
         VALUES ($1, '', 0, $2, $2) ON CONFLICT (name) DO NOTHING",
    )
    .arg(p.name.clone())
    .arg(Ts(DateTime::UNIX_EPOCH));
    D::execute(q, c).await?;
    let q = sqlx::query(locking::<D>(
        "SELECT name, holder, term, expires_at, elected_at FROM leaders WHERE name = $1",
    ))
    .arg(p.name.clone());
    let cur: Leadership = D::read(&D::fetch_one(q, c).await?)?;
    let Some(next) = cur.elect(&p.holder, p.now, expires) else {
        return Ok(cur);
    };
    let q = sqlx::query(
        "UPDATE leaders SET holder = $2, term = $3, expires_at = $4, elected_at = $5 WHERE name = $1",
    )
    .arg(next.name.clone())
    .arg(next.holder.clone())
    .arg(next.term)
    .arg(Ts(next.expires_at))
    .arg(Ts(next.elected_at));
    D::execute(q, c).await?;
    if next.term != cur.term {
        let detail = serde_json::json!({
            "role": next.name, "holder": next.holder, "term": next.term,
            "previous": (!cur.holder.is_empty()).then_some(&cur.holder),
        });
        event_insert::<D>(c, p.now, None, None, EventKind::LeaderElected, Some(detail)).await?;
    }
    Ok(next)
}

pub(crate) async fn job_finished<D: Db>(
    c: &mut D::Connection,
    p: &JobFinishedParams,
) -> Result<Vec<FinishedJob>> {
    let q = sqlx::query(
        "SELECT id, priority, state, created_at, finished_at FROM jobs \
         WHERE finished_at > $1 AND finished_at <= $2 ORDER BY finished_at, id LIMIT $3",
    )
    .arg(Ts(p.after))
    .arg(Ts(p.until))
    .arg(i64::from(p.limit));
    all::<D, _>(c, q).await
}

pub(crate) async fn intake_get<D: Db>(c: &mut D::Connection) -> Result<Option<IntakeHold>> {
    let q = sqlx::query("SELECT closed, reason, closed_by, closed_at FROM intake");
    Ok(match D::fetch_optional(q, c).await? {
        Some(row) => intake_hold(D::read(&row)?),
        None => None,
    })
}

/// The buckets charged for a call of `scope`, the scope first ([`sluice_core::budget::chain`]),
/// read without locks: the rows of the scope (or the root, for a scope without a budget) and
/// its ancestors, one statement, whatever the number of budgets.
pub(crate) async fn budget_chain<D: Db>(c: &mut D::Connection, scope: &str) -> Result<Vec<Budget>> {
    let q = sqlx::query(concat!(
        "WITH RECURSIVE up(scope, depth) AS ( \
             SELECT COALESCE((SELECT scope FROM budgets WHERE scope = $1), $2), 0 \
             UNION ALL SELECT b.parent, up.depth + 1 FROM budgets b JOIN up ON b.scope = up.scope \
             WHERE b.parent IS NOT NULL AND up.depth < $3) \
         SELECT ",
        budget_cols!(),
        " FROM budgets WHERE scope IN (SELECT scope FROM up)"
    ))
    .arg(scope.to_string())
    .arg(ROOT_SCOPE)
    .arg(MAX_BUDGET_DEPTH as i64);
    let rows: Vec<Budget> = all::<D, _>(c, q).await?;
    let by_scope: BTreeMap<&str, &Budget> = rows.iter().map(|b| (b.scope.as_str(), b)).collect();
    match sluice_core::budget::chain(scope, |s| by_scope.get(s).copied()) {
        Ok(chain) => Ok(chain.into_iter().cloned().collect()),
        Err(c) => Err(StoreError::Corrupt(format!(
            "budget scopes form a cycle (or nest deeper than {MAX_BUDGET_DEPTH}) at {:?}",
            c.at
        ))),
    }
}

/// Sets a scope's rate and burst (creating its budget under its parent, which must exist);
/// the bucket keeps its tokens up to the new burst.
pub(crate) async fn budget_set<D: Db>(
    c: &mut D::Connection,
    p: &BudgetSetParams,
) -> Result<Budget> {
    validate_budget(p)?;
    let parent =
        (p.scope != ROOT_SCOPE).then(|| p.parent.clone().unwrap_or_else(|| ROOT_SCOPE.to_string()));
    if let Some(parent) = &parent {
        let chain = budget_chain::<D>(c, parent).await?;
        if chain.first().map(|b| &b.scope) != Some(parent) {
            return Err(StoreError::Invalid(format!(
                "parent scope {parent:?} has no budget: set it first"
            )));
        }
        if chain.len() >= MAX_BUDGET_DEPTH {
            return Err(StoreError::Invalid(format!(
                "{:?} under {parent:?} would nest budgets deeper than {MAX_BUDGET_DEPTH}",
                p.scope
            )));
        }
        if chain.iter().any(|b| b.scope == p.scope) {
            return Err(StoreError::Invalid(format!(
                "{:?} under {parent:?} would make a cycle",
                p.scope
            )));
        }
    }
    let ramp = p.ramp.as_ref().map(to_json).transpose()?;
    let q = sqlx::query(concat!(
        "INSERT INTO budgets (scope, parent, rate, burst, tokens, refilled_at, updated_at, ramp) \
         VALUES ($1, $2, $3, $4, $4, $5, $5, $6) \
         ON CONFLICT (scope) DO UPDATE SET parent = excluded.parent, rate = excluded.rate, \
             burst = excluded.burst, \
             tokens = CASE WHEN budgets.tokens < excluded.burst THEN budgets.tokens ELSE excluded.burst END, \
             ramp = COALESCE(excluded.ramp, budgets.ramp), \
             updated_at = excluded.updated_at, dry_until = NULL \
         RETURNING ",
        budget_cols!()
    ))
    .arg(p.scope.clone())
    .arg(parent)
    .arg(p.rate)
    .arg(p.burst)
    .arg(Ts(p.now))
    .arg(ramp);
    D::read(&D::fetch_one(q, c).await?)
}

/// Sets (or replaces) a pause, journaled.
pub(crate) async fn pause_set<D: Db>(c: &mut D::Connection, p: &PauseSetParams) -> Result<Pause> {
    validate_pause(p)?;
    let q = sqlx::query(
        "INSERT INTO pauses (target, reason, paused_by, at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (target) DO UPDATE SET reason = excluded.reason, \
             paused_by = excluded.paused_by, at = excluded.at \
         RETURNING target, reason, paused_by, at",
    )
    .arg(p.target.key())
    .arg(p.reason.clone())
    .arg(p.by.clone())
    .arg(Ts(p.now));
    let pause: Pause = D::read(&D::fetch_one(q, c).await?)?;
    let detail = serde_json::json!({"target": p.target.key(), "reason": p.reason, "by": p.by});
    event_insert::<D>(
        c,
        p.now,
        p.target.job_id(),
        None,
        EventKind::PauseSet,
        Some(detail),
    )
    .await?;
    Ok(pause)
}

/// Sets a job's priority and its unfinished tasks' (the claim orders by the task's), journaled.
/// The tasks are written before the job row, as everywhere (invariant 4).
pub(crate) async fn job_set_priority<D: Db>(
    c: &mut D::Connection,
    p: &JobPriorityParams,
) -> Result<Job> {
    let before = job_get::<D>(c, p.id).await?;
    if before.state.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "job {} already ended ({})",
            p.id, before.state
        )));
    }
    // The pending tasks take fair tags from the new priority's virtual time (each priority
    // has its own clock): a job moved down does not keep its place, a job moved up does not
    // queue behind everything there. The leader's next rebalance fixes the stride.
    let priority = i16::try_from(p.priority)
        .map_err(|_| StoreError::Invalid(format!("priority {} out of range", p.priority)))?;
    let v = vtime::<D>(c, priority).await?;
    let q = sqlx::query(
        "WITH r AS (SELECT id, row_number() OVER (ORDER BY seq, id) - 1 AS n \
             FROM tasks WHERE job_id = $1 AND state = 'pending') \
         UPDATE tasks SET priority = $2, \
             seq = $3 + r.n * (SELECT CAST(stride AS BIGINT) FROM jobs WHERE id = $1) \
         FROM r WHERE tasks.id = r.id AND tasks.state = 'pending'",
    )
    .arg(p.id.0)
    .arg(p.priority)
    .arg(v);
    D::execute(q, c).await?;
    let q = sqlx::query("UPDATE tasks SET priority = $2 WHERE job_id = $1 AND state = 'running'")
        .arg(p.id.0)
        .arg(p.priority);
    D::execute(q, c).await?;
    let q = sqlx::query(concat!(
        "UPDATE jobs SET priority = $2 WHERE id = $1 AND state IN ('queued', 'running') RETURNING ",
        job_cols!()
    ))
    .arg(p.id.0)
    .arg(p.priority);
    let Some(row) = D::fetch_optional(q, c).await? else {
        return Err(StoreError::Conflict(format!("job {} already ended", p.id)));
    };
    let job: Job = D::read(&row)?;
    let detail = serde_json::json!({"from": before.priority, "to": p.priority, "by": p.by});
    event_insert::<D>(
        c,
        p.now,
        Some(p.id.0),
        None,
        EventKind::JobReprioritized,
        Some(detail),
    )
    .await?;
    Ok(job)
}

/// Runs an ended job's failed and cancelled lakes again. Their tasks go back to pending with
/// fresh attempts and fair tags from the job's priority clock (as a job submitted now would
/// get), each journaled; the job goes back to running with those lakes no longer counted
/// failed or cancelled, and is no longer finished (the cleaner keeps it). The leader's next
/// rebalance fixes its owner's stride. Unlike the other scripts, which lock an open job's
/// tasks before its row, this one locks the job row first, as a purge does: an ended job's
/// tasks are written by nothing else, so the two cannot deadlock with a finish or a cancel.
pub(crate) async fn job_rerun<D: Db>(c: &mut D::Connection, p: &JobRerunParams) -> Result<Job> {
    let q = sqlx::query(locking::<D>(concat!(
        "SELECT ",
        job_cols!(),
        " FROM jobs WHERE id = $1"
    )))
    .arg(p.id.0);
    let before: Job = found::<D, _>(c, q, format!("job {}", p.id)).await?;
    let next = before
        .state
        .apply(sluice_core::JobEvent::Rerun)
        .map_err(|_| {
            StoreError::Conflict(if before.state.is_terminal() {
                format!(
                    "job {} succeeded: no failed or cancelled lakes to run again",
                    p.id
                )
            } else {
                format!(
                    "job {} is still {}: run its failed lakes again once it has ended",
                    p.id, before.state
                )
            })
        })?;
    if let Some(hold) = intake_get::<D>(c).await? {
        return Err(hold.refusal());
    }
    // With the job row locked, its failed and cancelled tasks cannot change (only a rerun or
    // a purge writes an ended job's tasks, and both lock the row first): the journal below
    // names exactly the tasks the update moves.
    const AGAIN: &str = "job_id = $1 AND state IN ('failed', 'cancelled')";
    // What each task ended with (its state, attempts, error) is in its earlier entries.
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO events (at, job_id, task_id, scope, kind, detail) \
         SELECT $2, job_id, id, scope, $3, $4 FROM tasks WHERE {AGAIN} ORDER BY id"
    )))
    .arg(p.id.0)
    .arg(Ts(p.now))
    .arg(sluice_core::TaskEvent::Rerun.journal_kind().as_str())
    .arg(Some(serde_json::json!({"by": p.by})));
    D::execute(q, c).await?;
    let v = vtime::<D>(c, before.priority).await?;
    let pending = sluice_core::TaskState::Failed.apply(sluice_core::TaskEvent::Rerun)?;
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH r AS (SELECT id, row_number() OVER (ORDER BY seq, id) - 1 AS n \
             FROM tasks WHERE {AGAIN}) \
         UPDATE tasks SET state = $2, attempt = 0, crashes = 0, run_after = $3, \
             lease_owner = NULL, lease_expires_at = NULL, rows_found = NULL, result_uri = NULL, \
             last_error = NULL, updated_at = $3, \
             seq = $4 + r.n * (SELECT CAST(stride AS BIGINT) FROM jobs WHERE id = $1) \
         FROM r WHERE tasks.id = r.id AND tasks.state IN ('failed', 'cancelled')"
    )))
    .arg(p.id.0)
    .arg(pending.as_str())
    .arg(Ts(p.now))
    .arg(v);
    let moved = D::execute(q, c).await? as i64;
    if moved == 0 {
        return Err(StoreError::Conflict(format!(
            "job {} has no failed or cancelled lakes to run again",
            p.id
        )));
    }
    let q = sqlx::query(concat!(
        "UPDATE jobs SET state = $2, lakes_failed = 0, lakes_cancelled = 0, \
             started_at = COALESCE(started_at, $3), finished_at = NULL, error = NULL \
         WHERE id = $1 AND state IN ('partial', 'failed', 'cancelled') RETURNING ",
        job_cols!()
    ))
    .arg(p.id.0)
    .arg(next.as_str())
    .arg(Ts(p.now));
    let Some(row) = D::fetch_optional(q, c).await? else {
        return Err(StoreError::Conflict(format!(
            "job {} was run again or removed meanwhile",
            p.id
        )));
    };
    let job: Job = D::read(&row)?;
    let detail = serde_json::json!({
        "by": p.by, "tasks": moved, "failed": before.counts.failed,
        "cancelled": before.counts.cancelled, "was": before.state.as_str(),
    });
    event_insert::<D>(
        c,
        p.now,
        Some(p.id.0),
        None,
        EventKind::JobRerun,
        Some(detail),
    )
    .await?;
    Ok(job)
}

/// The outbox row announcing that `job` ended, if it names a webhook (in the transaction that
/// ended it).
pub(crate) async fn webhook_enqueue<D: Db>(
    c: &mut D::Connection,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(url) = &job.webhook else {
        return Ok(());
    };
    let body = serde_json::json!({
        "type": "job.ended",
        "job": {
            "id": job.id.0,
            "owner": job.owner,
            "state": job.state.as_str(),
            "lakes": {
                "total": job.counts.total,
                "done": job.counts.done,
                "failed": job.counts.failed,
                "cancelled": job.counts.cancelled,
            },
            "rows_found": job.rows_found,
            "created_at": job.created_at,
            "finished_at": job.finished_at,
            "error": job.error,
        },
    });
    let q = sqlx::query(
        "INSERT INTO webhook_deliveries (job_id, url, body, next_at, created_at) \
         VALUES ($1, $2, $3, $4, $4)",
    )
    .arg(job.id.0)
    .arg(url.clone())
    .arg(body)
    .arg(Ts(now));
    D::execute(q, c).await?;
    Ok(())
}

/// Takes the deliveries that are due, oldest first: each is leased (not due again until
/// `lease` has passed) and its try counted.
pub(crate) async fn webhook_take<D: Db>(
    c: &mut D::Connection,
    now: DateTime<Utc>,
    limit: u32,
    lease: std::time::Duration,
) -> Result<Vec<WebhookDelivery>> {
    let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = $3 \
         WHERE id IN ({}) RETURNING id, job_id, url, body, attempts",
        locking::<D>(
            "SELECT id FROM webhook_deliveries WHERE next_at <= $1 ORDER BY next_at, id LIMIT $2"
        )
        .0
    )))
    .arg(Ts(now))
    .arg(i64::from(limit.clamp(1, 1000)))
    .arg(Ts(until));
    let rows: Vec<crate::rows::DeliveryRow> = all::<D, _>(c, q).await?;
    let mut out: Vec<WebhookDelivery> = rows
        .into_iter()
        .map(|r| WebhookDelivery {
            id: r.id,
            job_id: sluice_core::JobId(r.job_id),
            url: r.url,
            body: r.body,
            attempt: r.attempts,
        })
        .collect();
    // RETURNING gives no order: oldest first, as taken.
    out.sort_by_key(|d| d.id);
    Ok(out)
}

/// Records one try of a delivery, journaled on its job (the URL's host only: a webhook's path
/// often holds its secret). A delivered or given-up delivery leaves the outbox (the journal
/// keeps its story); a try another lease has taken over since is not recorded.
pub(crate) async fn webhook_record<D: Db>(
    c: &mut D::Connection,
    d: &WebhookDelivery,
    outcome: &DeliveryOutcome,
    now: DateTime<Utc>,
) -> Result<()> {
    let host = sluice_core::webhook::host_of(&d.url);
    let (q, kind, detail) = match outcome {
        DeliveryOutcome::Delivered { status } => (
            sqlx::query("DELETE FROM webhook_deliveries WHERE id = $1 AND attempts = $2")
                .arg(d.id)
                .arg(d.attempt),
            EventKind::WebhookDelivered,
            serde_json::json!({"delivery": d.id, "attempt": d.attempt, "host": host, "status": status}),
        ),
        DeliveryOutcome::Failed {
            error,
            retry_at: Some(at),
        } => (
            sqlx::query(
                "UPDATE webhook_deliveries SET next_at = $2, last_error = $3 \
                 WHERE id = $1 AND attempts = $4",
            )
            .arg(d.id)
            .arg(Ts(*at))
            .arg(error.clone())
            .arg(d.attempt),
            EventKind::WebhookRetried,
            serde_json::json!({"delivery": d.id, "attempt": d.attempt, "host": host, "error": error, "retry_at": at}),
        ),
        DeliveryOutcome::Failed {
            error,
            retry_at: None,
        } => (
            sqlx::query("DELETE FROM webhook_deliveries WHERE id = $1 AND attempts = $2")
                .arg(d.id)
                .arg(d.attempt),
            EventKind::WebhookFailed,
            serde_json::json!({"delivery": d.id, "attempt": d.attempt, "host": host, "error": error}),
        ),
    };
    if D::execute(q, c).await? == 0 {
        // Purged with its job meanwhile, or recorded by an earlier leader: nothing to say.
        return Ok(());
    }
    event_insert::<D>(c, now, Some(d.job_id.0), None, kind, Some(detail)).await
}

const FINISHED: &str =
    "state IN ('succeeded', 'partial', 'failed', 'cancelled') AND finished_at IS NOT NULL";

/// The finished jobs a purge removes, oldest first, at most `limit`.
pub(crate) async fn job_purge_select<D: Db>(
    c: &mut D::Connection,
    p: &JobPurgeParams,
) -> Result<Vec<i64>> {
    let limit = i64::from(p.limit.clamp(1, 10_000));
    let q = match &p.select {
        PurgeSelect::Job(id) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM jobs WHERE id = $1 AND {FINISHED}"
        )))
        .arg(id.0),
        PurgeSelect::OlderThan { secs } => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM jobs WHERE {FINISHED} \
               AND (retention_secs IS NULL OR retention_secs > 0) AND finished_at <= $1 \
             ORDER BY finished_at, id LIMIT $2"
        )))
        .arg(Ts(p.now - chrono::Duration::seconds(*secs)))
        .arg(limit),
        PurgeSelect::Expired { default_secs } => {
            let (a, b) = D::EPOCH_SECS;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM jobs WHERE {FINISHED} AND COALESCE(retention_secs, $1) > 0 \
                   AND {a}finished_at{b} + COALESCE(retention_secs, $1) <= $2 \
                 ORDER BY finished_at, id LIMIT $3"
            )))
            .arg(*default_secs)
            .arg(p.now.timestamp())
            .arg(limit)
        }
    };
    let rows: Vec<Scalar> = all::<D, _>(c, q).await?;
    Ok(rows.into_iter().map(|Scalar(id)| id).collect())
}

/// Removes one finished job with its journal, tasks and webhook deliveries, journaled as
/// `job.purged` without a job. `None` if it is gone or not finished. The job row is locked
/// first, as a rerun locks it: a job run again meanwhile is not finished any more when the
/// purge gets it (and a rerun that waited finds no job).
pub(crate) async fn job_purge_one<D: Db>(
    c: &mut D::Connection,
    id: i64,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Option<PurgedJob>> {
    let q = sqlx::query(locking::<D>(&format!(
        "SELECT owner AS v FROM jobs WHERE id = $1 AND {FINISHED}"
    )))
    .arg(id);
    let Some(row) = D::fetch_optional(q, c).await? else {
        return Ok(None);
    };
    let crate::rows::Text { v: owner } = D::read(&row)?;
    D::execute(
        sqlx::query("DELETE FROM webhook_deliveries WHERE job_id = $1").arg(id),
        c,
    )
    .await?;
    let events = D::execute(
        sqlx::query("DELETE FROM events WHERE job_id = $1").arg(id),
        c,
    )
    .await?;
    let tasks = D::execute(
        sqlx::query("DELETE FROM tasks WHERE job_id = $1").arg(id),
        c,
    )
    .await?;
    if D::execute(sqlx::query("DELETE FROM jobs WHERE id = $1").arg(id), c).await? == 0 {
        // Another purge took it first.
        return Ok(None);
    }
    let pause = PauseTarget::Job(sluice_core::JobId(id)).key();
    D::execute(
        sqlx::query("DELETE FROM pauses WHERE target = $1").arg(pause),
        c,
    )
    .await?;
    let q = sqlx::query("UPDATE job_id_floor SET id = $1 WHERE id < $1").arg(id);
    D::execute(q, c).await?;
    let detail =
        serde_json::json!({"job": id, "owner": owner, "tasks": tasks, "events": events, "by": by});
    event_insert::<D>(c, now, None, None, EventKind::JobPurged, Some(detail)).await?;
    Ok(Some(PurgedJob {
        id: sluice_core::JobId(id),
        owner,
        tasks,
        events,
    }))
}

/// Sets an owner's (or the default) quota of running tasks, journaled.
pub(crate) async fn quota_set<D: Db>(c: &mut D::Connection, p: &QuotaSetParams) -> Result<Quota> {
    validate_quota(p)?;
    let q = sqlx::query(
        "INSERT INTO owner_quotas (owner, max_running, set_by, at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (owner) DO UPDATE SET max_running = excluded.max_running, \
             set_by = excluded.set_by, at = excluded.at \
         RETURNING owner, max_running, set_by, at",
    )
    .arg(p.target.key().to_string())
    .arg(p.max_running)
    .arg(p.by.clone())
    .arg(Ts(p.now));
    let quota: Quota = D::read(&D::fetch_one(q, c).await?)?;
    let detail = serde_json::json!({"owner": p.target, "max_running": p.max_running, "by": p.by});
    event_insert::<D>(c, p.now, None, None, EventKind::QuotaSet, Some(detail)).await?;
    Ok(quota)
}

/// Removes a quota, journaled; `NotFound` when there is none.
pub(crate) async fn quota_clear<D: Db>(
    c: &mut D::Connection,
    target: &QuotaTarget,
    by: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    if let QuotaTarget::Owner(o) = target {
        validate_owner(o)?;
    }
    let q = sqlx::query("DELETE FROM owner_quotas WHERE owner = $1").arg(target.key().to_string());
    if D::execute(q, c).await? == 0 {
        return Err(StoreError::NotFound(format!("quota of {target}")));
    }
    let detail = serde_json::json!({"owner": target, "by": by});
    event_insert::<D>(c, now, None, None, EventKind::QuotaCleared, Some(detail)).await
}

/// The quota that applies to `owner` (their own, else the default) and their running tasks.
pub(crate) async fn quota_usage<D: Db>(
    c: &mut D::Connection,
    owner: &str,
) -> Result<Option<QuotaUsage>> {
    let q = sqlx::query(
        "SELECT max_running, (SELECT count(*) FROM tasks WHERE state = 'running' AND owner = $1) \
         FROM owner_quotas WHERE owner = $1 OR owner = '*' ORDER BY owner = '*' LIMIT 1",
    )
    .arg(owner.to_string());
    Ok(D::fetch_optional(q, c)
        .await?
        .map(|r| D::read(&r))
        .transpose()?
        .map(|crate::rows::Pair(max_running, running)| QuotaUsage {
            max_running,
            running,
        }))
}

pub(crate) async fn quota_list<D: Db>(c: &mut D::Connection) -> Result<Vec<Quota>> {
    let q = sqlx::query("SELECT owner, max_running, set_by, at FROM owner_quotas ORDER BY owner");
    all::<D, _>(c, q).await
}

/// Lifts a pause, journaled; `NotFound` when there is none. The caller starts the paused
/// budgets slow afterwards ([`slow_start_after_pause`]).
pub(crate) async fn pause_clear<D: Db>(
    c: &mut D::Connection,
    target: &PauseTarget,
    by: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let q = sqlx::query("DELETE FROM pauses WHERE target = $1").arg(target.key());
    if D::execute(q, c).await? == 0 {
        return Err(StoreError::NotFound(format!("pause of {target}")));
    }
    let detail = serde_json::json!({"target": target.key(), "by": by});
    event_insert::<D>(
        c,
        now,
        target.job_id(),
        None,
        EventKind::PauseCleared,
        Some(detail),
    )
    .await?;
    slow_start_after_pause::<D>(c, target, now).await
}

/// A lifted pause releases its backlog slowly (DESIGN.md invariant 5): the scope's budget,
/// or every budget for a global pause, restarts from slow start — in the same transaction as
/// the lift.
pub(crate) async fn slow_start_after_pause<D: Db>(
    c: &mut D::Connection,
    target: &PauseTarget,
    now: DateTime<Utc>,
) -> Result<()> {
    let scopes: Vec<String> = match target {
        PauseTarget::Scope(s) => vec![s.clone()],
        PauseTarget::All => budget_list::<D>(c)
            .await?
            .into_iter()
            .map(|b| b.scope)
            .collect(),
        PauseTarget::Owner(_) | PauseTarget::Job(_) => Vec::new(),
    };
    for s in scopes {
        budget_feedback_tx::<D>(c, &s, BudgetFeedback::SlowStart, now).await?;
    }
    Ok(())
}

/// Closes intake (a drain), journaled.
pub(crate) async fn intake_close<D: Db>(
    c: &mut D::Connection,
    p: &IntakeCloseParams,
) -> Result<IntakeHold> {
    validate_intake(p)?;
    let q =
        sqlx::query("UPDATE intake SET closed = $1, reason = $2, closed_by = $3, closed_at = $4")
            .arg(true)
            .arg(p.reason.clone())
            .arg(p.by.clone())
            .arg(Ts(p.now));
    D::execute(q, c).await?;
    let detail = serde_json::json!({"reason": p.reason, "by": p.by});
    event_insert::<D>(c, p.now, None, None, EventKind::IntakeClosed, Some(detail)).await?;
    Ok(IntakeHold {
        reason: p.reason.clone(),
        by: p.by.clone(),
        at: p.now,
    })
}

/// Reopens intake, journaled; `NotFound` when it is open.
pub(crate) async fn intake_open<D: Db>(
    c: &mut D::Connection,
    by: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let q = sqlx::query("UPDATE intake SET closed = $1 WHERE closed = $2")
        .arg(false)
        .arg(true);
    if D::execute(q, c).await? == 0 {
        return Err(StoreError::NotFound("a drain: intake is open".into()));
    }
    let detail = serde_json::json!({ "by": by });
    event_insert::<D>(c, now, None, None, EventKind::IntakeOpened, Some(detail)).await
}

/// Gives up a held lease at once (a scheduler shutting down), journaled; false when `holder`
/// does not hold it.
pub(crate) async fn leader_resign<D: Db>(
    c: &mut D::Connection,
    name: &str,
    holder: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let q = sqlx::query(
        "UPDATE leaders SET expires_at = $1 WHERE name = $2 AND holder = $3 AND expires_at > $1 \
         RETURNING term",
    )
    .arg(Ts(now))
    .arg(name.to_string())
    .arg(holder.to_string());
    let Some(row) = D::fetch_optional(q, c).await? else {
        return Ok(false);
    };
    let Scalar(term) = D::read(&row)?;
    let detail = serde_json::json!({"role": name, "holder": holder, "term": term});
    event_insert::<D>(c, now, None, None, EventKind::LeaderResigned, Some(detail)).await?;
    Ok(true)
}

/// The virtual time of a priority (ADR 0006): the newest tag running, else the oldest tag
/// pending, else 0. New jobs start their tags here.
pub(crate) async fn vtime<D: Db>(c: &mut D::Connection, priority: i16) -> Result<i64> {
    let q = sqlx::query(
        "SELECT CAST(COALESCE( \
             (SELECT max(seq) FROM tasks WHERE state = 'running' AND priority = $1), \
             (SELECT min(seq) FROM tasks WHERE state = 'pending' AND priority = $1), 0) AS BIGINT)",
    )
    .arg(priority);
    let Scalar(v) = D::read(&D::fetch_one(q, c).await?)?;
    Ok(v)
}

/// The leader's fairness pass (ADR 0006): re-tags the pending tasks of every open job whose
/// owner's number of open jobs at its priority changed. Tasks first, then the job row: the
/// lock order of every transaction.
pub(crate) async fn job_rebalance<D: Db>(
    c: &mut D::Connection,
    p: &JobRebalanceParams,
) -> Result<usize> {
    let q = sqlx::query(
        "SELECT id, owner, priority, CAST(stride AS BIGINT) AS stride FROM jobs \
         WHERE state IN ('queued', 'running') ORDER BY owner, priority, id",
    );
    let open: Vec<sluice_core::fair::OpenJob> = all::<D, _>(c, q).await?;
    let todo = sluice_core::fair::restrides(&open);
    let mut vtimes: std::collections::HashMap<i16, i64> = Default::default();
    for js in &todo {
        let v = match vtimes.get(&js.priority) {
            Some(v) => *v,
            None => {
                let v = vtime::<D>(c, js.priority).await?;
                *vtimes.entry(js.priority).or_insert(v)
            }
        };
        let q = sqlx::query(
            "WITH r AS (SELECT id, row_number() OVER (ORDER BY seq, id) - 1 AS n \
                 FROM tasks WHERE job_id = $1 AND state = 'pending') \
             UPDATE tasks SET seq = $2 + r.n * $3 FROM r \
             WHERE tasks.id = r.id AND tasks.state = 'pending'",
        )
        .arg(js.job)
        .arg(v + js.offset)
        .arg(js.stride);
        D::execute(q, c).await?;
        let q = sqlx::query("UPDATE jobs SET stride = $1 WHERE id = $2")
            .arg(js.stride as i32)
            .arg(js.job);
        D::execute(q, c).await?;
        let detail = serde_json::json!({"stride": js.stride, "offset": js.offset, "vtime": v});
        event_insert::<D>(
            c,
            p.now,
            Some(js.job),
            None,
            EventKind::JobRestrided,
            Some(detail),
        )
        .await?;
    }
    Ok(todo.len())
}

/// Cancels a job: its unfinished tasks (each journaled), then the job. Tasks are locked
/// first, then the job row: the lock order of every transaction. A job that finished
/// meanwhile is a conflict, not a second end.
pub(crate) async fn job_cancel<D: Db>(c: &mut D::Connection, p: &JobCancelParams) -> Result<Job> {
    let q = sqlx::query("SELECT state AS v FROM jobs WHERE id = $1").arg(p.id.0);
    let crate::rows::Text { v } = found::<D, _>(c, q, format!("job {}", p.id)).await?;
    let before = crate::rows::state(&v, sluice_core::JobState::parse)?;
    let next = before
        .apply(sluice_core::JobEvent::Cancel)
        .map_err(|_| StoreError::Conflict(format!("job {} is already {before}", p.id)))?;
    const OPEN: &str = "job_id = $1 AND state IN ('pending', 'running')";
    // Locks the open tasks (without sending their ids back), so the journal below names
    // exactly the tasks the update cancels.
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) AS v FROM ({}) l",
        locking::<D>(&format!("SELECT id FROM tasks WHERE {OPEN}")).0
    )))
    .arg(p.id.0);
    D::fetch_one(q, c).await?;
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO events (at, job_id, task_id, scope, kind) \
         SELECT $2, job_id, id, scope, $3 FROM tasks WHERE {OPEN}"
    )))
    .arg(p.id.0)
    .arg(Ts(p.now))
    .arg(EventKind::TaskCancelled.as_str());
    D::execute(q, c).await?;
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE tasks SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = $2 WHERE {OPEN}"
    )))
    .arg(p.id.0)
    .arg(Ts(p.now));
    let cancelled = D::execute(q, c).await? as i64;
    let error = format!(
        "cancelled by {}{}",
        p.by,
        p.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    let q = sqlx::query(concat!(
        "UPDATE jobs SET state = $2, lakes_cancelled = lakes_cancelled + $3, finished_at = $4, \
             error = $5 \
         WHERE id = $1 AND state IN ('queued', 'running') RETURNING ",
        job_cols!()
    ))
    .arg(p.id.0)
    .arg(next.as_str())
    .arg(cancelled)
    .arg(Ts(p.now))
    .arg(error);
    let Some(row) = D::fetch_optional(q, c).await? else {
        return Err(StoreError::Conflict(format!(
            "job {} finished meanwhile",
            p.id
        )));
    };
    let job: Job = D::read(&row)?;
    webhook_enqueue::<D>(c, &job, p.now).await?;
    let detail = serde_json::json!({"by": p.by, "reason": p.reason, "tasks_cancelled": cancelled});
    event_insert::<D>(
        c,
        p.now,
        Some(p.id.0),
        None,
        EventKind::JobCancelled,
        Some(detail),
    )
    .await?;
    Ok(job)
}

/// A page of the journal: one job's, one scope's own (not its jobs'), or everything's; each
/// filter is its own statement so that each gets the plan of its index.
pub(crate) async fn event_list<D: Db>(
    c: &mut D::Connection,
    p: &EventListParams,
) -> Result<Vec<Event>> {
    const COLS: &str = "SELECT id, at, job_id, task_id, scope, kind, detail FROM events";
    let after = p.after_id.unwrap_or(0);
    let limit = i64::from(p.limit);
    let q = match (p.job_id, &p.scope) {
        (Some(_), Some(_)) => return Ok(Vec::new()), // job events are never scope-only events
        (None, Some(scope)) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "{COLS} WHERE scope = $1 AND job_id IS NULL AND id > $2 ORDER BY id LIMIT $3"
        )))
        .arg(scope.clone()),
        (Some(job), None) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "{COLS} WHERE job_id = $1 AND id > $2 ORDER BY job_id, id LIMIT $3"
        )))
        .arg(job.0),
        (None, None) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "{COLS} WHERE $1 IS NULL AND id > $2 ORDER BY id LIMIT $3"
        )))
        .arg(None::<i64>),
    };
    all::<D, _>(c, q.arg(after).arg(limit)).await
}

/// The newest migration applied, `None` on a database nobody has migrated (no migrations
/// table).
pub(crate) async fn schema_version<D: Db>(c: &mut D::Connection) -> Result<Option<i64>> {
    let q = sqlx::query("SELECT max(version) AS v FROM _sqlx_migrations WHERE success");
    match D::fetch_one(q, c).await {
        Ok(row) => {
            let crate::rows::MaybeScalar(v) = D::read(&row)?;
            Ok(v)
        }
        Err(StoreError::Database(e)) if e.to_string().contains("_sqlx_migrations") => Ok(None),
        Err(e) => Err(e),
    }
}

/// A submission whose idempotency key its owner used before: the same job again, or a
/// conflict naming what differs (the hunt, its lakes, the priority, the attempts).
pub(crate) async fn job_replay<D: Db>(
    c: &mut D::Connection,
    p: &JobInsertParams,
) -> Result<JobInserted> {
    let q = sqlx::query(concat!(
        "SELECT ",
        job_cols!(),
        " FROM jobs WHERE owner = $1 AND idempotency_key = $2"
    ))
    .arg(p.owner.clone())
    .arg(p.idempotency_key.clone());
    let job: Job = D::read(&D::fetch_one(q, c).await?)?;
    let q =
        sqlx::query("SELECT CAST(max(max_attempts) AS BIGINT) AS v FROM tasks WHERE job_id = $1")
            .arg(job.id.0);
    let crate::rows::MaybeScalar(attempts) = D::read(&D::fetch_one(q, c).await?)?;
    let differs = if job.spec != p.spec || job.sql != p.sql {
        Some("hunt".to_string())
    } else if job.counts.total != p.tasks.len() as i64 {
        Some(format!(
            "set of lakes ({} lakes, not {})",
            job.counts.total,
            p.tasks.len()
        ))
    } else if job.priority != p.priority {
        Some(format!("priority ({}, not {})", job.priority, p.priority))
    } else if attempts.is_some_and(|a| a != i64::from(p.max_attempts)) {
        Some(format!(
            "max_attempts ({}, not {})",
            attempts.unwrap_or_default(),
            p.max_attempts
        ))
    } else if job.webhook != p.webhook {
        Some("webhook".to_string())
    } else if job.retention_secs != p.retention_secs {
        let shown =
            |r: Option<i64>| r.map_or_else(|| "the server's".to_string(), |r| r.to_string());
        Some(format!(
            "retention_secs ({}, not {})",
            shown(job.retention_secs),
            shown(p.retention_secs)
        ))
    } else {
        None
    };
    if let Some(what) = differs {
        return Err(StoreError::Conflict(format!(
            "idempotency key already used by job {} with a different {what}",
            job.id
        )));
    }
    Ok(JobInserted {
        job,
        created: false,
    })
}
