//! Transaction scripts written once for both databases ([`Db`]): each runs inside its caller's
//! transaction (`c` is the transaction's connection); the caller begins, commits and, on
//! PostgreSQL, retries a transaction that lost a serialization race.

use crate::db::{Args, Db, to_json};
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::rows::{JobCountsRow, Scalar, Ts, adaptive_json};
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
