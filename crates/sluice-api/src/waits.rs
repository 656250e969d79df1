//! Why a job waits, in words, from the pauses, breakers and budgets its tasks are held by:
//! shown by `GET /v1/jobs/{id}` and `sluice status`.

use sluice_core::{BreakerState, JobId};
use sluice_store::{Result, Store};

/// Why a job's unfinished tasks wait, one line each: pauses, then breakers and exhausted
/// budgets of their scopes (with the lakes waiting behind each).
pub async fn wait_reasons(store: &dyn Store, job: JobId) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in store.pause_list_for_job(job).await? {
        out.push(format!(
            "paused by operator {} ({}) since {} [{}]",
            p.by,
            p.reason,
            p.at.format("%Y-%m-%d %H:%M:%S UTC"),
            p.target
        ));
    }
    let now = chrono::Utc::now();
    let breakers = store.breaker_list().await?;
    let dry: Vec<sluice_store::Budget> = store
        .budget_list()
        .await?
        .into_iter()
        .filter(|b| b.dry_until.is_some_and(|t| t > now))
        .collect();
    if dry.is_empty()
        && breakers
            .iter()
            .all(|b| b.breaker.state == BreakerState::Closed)
    {
        return Ok(out);
    }
    let mut waiting: std::collections::BTreeMap<String, usize> = Default::default();
    let mut after = None;
    loop {
        let page = store
            .task_list(sluice_store::TaskListParams {
                job_id: job,
                limit: 1000,
                after,
            })
            .await?;
        for t in &page {
            if !t.state.is_terminal() {
                *waiting.entry(t.scope.clone()).or_default() += 1;
            }
        }
        match page.last() {
            Some(t) if page.len() == 1000 => after = Some(t.id),
            _ => break,
        }
    }
    for r in breakers {
        let Some(n) = waiting.get(&r.scope) else {
            continue;
        };
        let b = r.breaker;
        let why = match b.state {
            BreakerState::Closed => continue,
            BreakerState::Open => format!(
                "provider {} {}, breaker open until {}",
                r.scope,
                if b.frozen {
                    "froze the account"
                } else {
                    "throttling"
                },
                b.probe_after
                    .map_or("-".into(), |t| t.format("%H:%M:%S UTC").to_string())
            ),
            BreakerState::HalfOpen => format!(
                "provider {}: probing whether it accepts calls again",
                r.scope
            ),
        };
        out.push(format!("{why} ({n} lakes waiting)"));
    }
    for b in dry {
        let Some(n) = waiting.get(&b.scope) else {
            continue;
        };
        out.push(format!(
            "provider budget of {} exhausted ({:.1} calls/s now), its tasks run after other scopes' ({n} lakes waiting)",
            b.scope,
            b.effective_rate(now)
        ));
    }
    Ok(out)
}
