//! Transaction scripts written once for both databases ([`Db`]): each runs inside its caller's
//! transaction (`c` is the transaction's connection); the caller begins, commits and, on
//! PostgreSQL, retries a transaction that lost a serialization race.

use crate::db::{Args, Db, to_json};
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::rows::{JobCountsRow, Scalar, Ts, adaptive_json, intake_hold, job_cols, task_cols};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sluice_core::EventKind;
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
    let q = sqlx::query(locking::<D>(
        "SELECT scope, parent, rate, burst, tokens, refilled_at, adaptive, dry_until \
         FROM budgets WHERE scope = $1",
    ))
    .arg(scope.to_string());
    let Some(row) = D::fetch_optional(q, c).await? else {
        return Ok(());
    };
    let mut b: Budget = D::read(&row)?;
    budget_feedback(&mut b, f, now);
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
             WHERE id = $8 RETURNING rows_found",
        )
        .arg(counts.done)
        .arg(counts.failed)
        .arg(counts.cancelled)
        .arg(d.rows)
        .arg(after.as_str())
        .arg(next.is_some())
        .arg(Ts(now))
        .arg(job_id);
        let Scalar(rows) = D::read(&D::fetch_one(q, c).await?)?;
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
    let admission = breaker_apply(&mut row.breaker, &p.op, &p.cfg, p.now);
    if row.breaker != before {
        row.updated_at = p.now;
        let q = sqlx::query(
            "UPDATE breakers SET state = $1, hold_until = $2, detail = $3, updated_at = $4 \
             WHERE scope = $5",
        )
        .arg(row.breaker.state.as_str())
        .arg(breaker_hold_until(&row.breaker, &p.cfg).map(Ts))
        .arg(to_json(&row.breaker)?)
        .arg(Ts(p.now))
        .arg(p.scope.clone());
        D::execute(q, c).await?;
    }
    let to = row.breaker.state;
    if let Some(kind) = breaker_event(&p.op, before.state, to) {
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
    if let Some(f) = breaker_budget_feedback(&p.op, before.state, to) {
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

const TOKEN_COLS: &str = "id, owner, role, label, created_at, revoked_at";
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
        "INSERT INTO api_tokens (owner, role, hash, label, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {TOKEN_COLS}"
    )))
    .arg(p.owner.clone())
    .arg(p.role.as_str())
    .arg(p.hash.clone())
    .arg(p.label.clone())
    .arg(Ts(p.now));
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

pub(crate) async fn lake_remove<D: Db>(c: &mut D::Connection, name: &str) -> Result<()> {
    let q = sqlx::query("DELETE FROM lakes WHERE name = $1").arg(name.to_string());
    if D::execute(q, c).await? == 0 {
        return Err(StoreError::NotFound(format!("lake {name:?}")));
    }
    Ok(())
}

pub(crate) async fn budget_list<D: Db>(c: &mut D::Connection) -> Result<Vec<Budget>> {
    let q = sqlx::query(
        "SELECT scope, parent, rate, burst, tokens, refilled_at, adaptive, dry_until \
         FROM budgets ORDER BY scope",
    );
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
/// pending tasks is in.
pub(crate) async fn pause_list_for_job<D: Db>(
    c: &mut D::Connection,
    job: sluice_core::JobId,
) -> Result<Vec<Pause>> {
    let q = sqlx::query(
        "SELECT p.target, p.reason, p.paused_by, p.at FROM pauses p, jobs j WHERE j.id = $1 AND ( \
             p.target IN ('all', 'owner:' || j.owner, 'job:' || j.id) \
             OR (p.target LIKE 'scope:%' AND EXISTS (SELECT 1 FROM tasks t \
                 WHERE t.job_id = j.id AND t.state = 'pending' AND 'scope:' || t.scope = p.target))) \
         ORDER BY p.target",
    )
    .arg(job.0);
    all::<D, _>(c, q).await
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
    let Some(next) = elect(&cur, &p.holder, p.now, expires) else {
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
