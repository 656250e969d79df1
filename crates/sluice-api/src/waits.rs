//! Why a job waits, in words, from the pauses, breakers and budgets its tasks are held by,
//! and how long it has left: shown by `GET /v1/jobs/{id}` (and so `sluice status`).

use sluice_core::BreakerState;
use sluice_store::{Result, Store};

/// One reason a job's lakes wait.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    /// In words, with the lakes waiting behind it.
    pub text: String,
    /// The lakes cannot run until an operator or the provider lets them (a pause, an open or
    /// probing breaker), as opposed to running slower (an exhausted budget).
    pub held: bool,
}

/// Why a job's unfinished tasks wait: pauses, its owner's quota, then breakers and exhausted
/// budgets of their scopes (with the lakes waiting behind each).
pub async fn wait_reasons(store: &dyn Store, job: &sluice_store::Job) -> Result<Vec<Wait>> {
    let mut out = Vec::new();
    if let Some(u) = store.quota_usage(&job.owner).await?
        && u.running >= u.max_running
    {
        out.push(Wait {
            text: format!(
                "owner {} has {} tasks running, their quota: the rest start as those finish",
                job.owner, u.running
            ),
            held: false,
        });
    }
    let job = job.id;
    for p in store.pause_list_for_job(job).await? {
        out.push(Wait {
            text: format!(
                "paused by operator {} ({}) since {} [{}]",
                p.by,
                p.reason,
                p.at.format("%Y-%m-%d %H:%M:%S UTC"),
                p.target
            ),
            held: true,
        });
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
        out.push(Wait {
            text: format!("{why} ({n} lakes waiting)"),
            held: true,
        });
    }
    for b in dry {
        let Some(n) = waiting.get(&b.scope) else {
            continue;
        };
        out.push(Wait {
            text: format!(
                "provider budget of {} exhausted ({:.1} calls/s now), its tasks run after other scopes' ({n} lakes waiting)",
                b.scope,
                b.effective_rate(now)
            ),
            held: false,
        });
    }
    Ok(out)
}

/// Seconds until a job's last lake is done, at the pace its lakes have finished since it
/// started: `None` once it ended, until a first lake is done, and while a pause or breaker
/// holds some of its lakes (its past pace says nothing about when they are let go; the wait
/// reasons say until when).
pub fn eta_secs(
    j: &sluice_store::Job,
    waits: &[Wait],
    now: chrono::DateTime<chrono::Utc>,
) -> Option<f64> {
    if j.state.is_terminal() || waits.iter().any(|w| w.held) {
        return None;
    }
    let c = &j.counts;
    let finished = c.done + c.failed + c.cancelled;
    let elapsed = (now - j.started_at?).num_milliseconds() as f64 / 1000.0;
    if finished <= 0 || elapsed <= 0.0 {
        return None;
    }
    Some((c.total - finished).max(0) as f64 * elapsed / finished as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};
    use sluice_core::JobState;

    #[test]
    fn the_eta_follows_the_pace_so_far_and_says_nothing_while_held() {
        let now = Utc::now();
        let mut j = sluice_store::Job {
            id: sluice_core::JobId(1),
            owner: "alice".into(),
            idempotency_key: None,
            spec: serde_json::Value::Null,
            sql: None,
            state: JobState::Running,
            priority: 0,
            counts: sluice_core::state::JobCounts {
                total: 100,
                done: 20,
                failed: 5,
                cancelled: 0,
            },
            rows_found: 0,
            created_at: now - Duration::seconds(120),
            started_at: Some(now - Duration::seconds(100)),
            finished_at: None,
            error: None,
            retention_secs: None,
            webhook: None,
        };
        // 25 lakes in 100 s: the other 75 in 300 s.
        let eta = eta_secs(&j, &[], now).unwrap();
        assert!((eta - 300.0).abs() < 1e-6, "{eta}");
        let slow = Wait {
            text: "budget".into(),
            held: false,
        };
        assert!(eta_secs(&j, std::slice::from_ref(&slow), now).is_some());
        let held = Wait {
            text: "breaker".into(),
            held: true,
        };
        assert_eq!(eta_secs(&j, &[slow, held], now), None);
        j.counts.done = 0;
        j.counts.failed = 0;
        assert_eq!(eta_secs(&j, &[], now), None, "no pace before a first lake");
        j.counts.done = 100;
        j.state = JobState::Succeeded;
        assert_eq!(eta_secs(&j, &[], now), None);
    }
}
