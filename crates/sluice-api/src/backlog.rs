//! The backlog as operators read it (`sluice backlog`): unfinished tasks per provider scope,
//! from the store's task counters, and how long draining them takes at the current budgets.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_core::TaskState;
use sluice_store::{Budget, TaskBacklog};
use std::collections::BTreeMap;

/// One scope's unfinished tasks and the soonest they can drain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScopeBacklog {
    pub scope: String,
    pub pending: i64,
    pub running: i64,
    /// The planner's estimate of the provider calls these tasks still make.
    pub est_calls: i64,
    /// The budget that bounds the drain (this scope's or an ancestor's); `None`: unlimited.
    pub limited_by: Option<String>,
    /// Seconds to drain at the current effective rates, no sooner (`None`: unlimited).
    pub drain_secs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BacklogReport {
    pub scopes: Vec<ScopeBacklog>,
    pub pending: i64,
    pub running: i64,
    /// Age of the oldest pending task (`None`: nothing pending).
    pub oldest_pending_secs: Option<f64>,
    /// Seconds until the whole backlog can have drained at the current budgets: a lower bound
    /// (enough workers assumed). `None` when no budget limits it.
    pub drain_secs: Option<f64>,
}

/// The budgets a scope's calls are charged to, as `budget_take` charges them; a cycle
/// (corrupt rows) ends the walk instead of looping.
fn chain<'a>(scope: &str, budgets: &'a BTreeMap<&str, &'a Budget>) -> Vec<&'a Budget> {
    sluice_core::budget::chain(scope, |s| budgets.get(s).copied()).unwrap_or_else(|c| c.walked)
}

/// Drain times from the counters and budgets: every budget must pass the calls of all the
/// scopes charged to it, at its effective rate now; a scope drains no sooner than the slowest
/// budget on its chain, the backlog no sooner than the slowest budget overall.
pub fn report(backlog: &TaskBacklog, budgets: &[Budget], now: DateTime<Utc>) -> BacklogReport {
    let mut scopes: BTreeMap<&str, ScopeBacklog> = BTreeMap::new();
    for c in &backlog.counts {
        if !matches!(c.state, TaskState::Pending | TaskState::Running) {
            continue;
        }
        let s = scopes.entry(&c.scope).or_insert_with(|| ScopeBacklog {
            scope: c.scope.clone(),
            pending: 0,
            running: 0,
            est_calls: 0,
            limited_by: None,
            drain_secs: None,
        });
        if c.state == TaskState::Pending {
            s.pending += c.tasks;
        } else {
            s.running += c.tasks;
        }
        s.est_calls += c.est_calls;
    }
    let by_scope: BTreeMap<&str, &Budget> = budgets.iter().map(|b| (b.scope.as_str(), b)).collect();
    let mut charged: BTreeMap<&str, i64> = BTreeMap::new();
    for s in scopes.values() {
        for b in chain(&s.scope, &by_scope) {
            *charged.entry(&b.scope).or_default() += s.est_calls;
        }
    }
    let secs = |b: &Budget| -> f64 {
        let calls = charged.get(b.scope.as_str()).copied().unwrap_or(0) as f64;
        let rate = b.effective_rate(now);
        if calls <= 0.0 {
            0.0
        } else if rate > 0.0 {
            calls / rate
        } else {
            f64::INFINITY
        }
    };
    let mut total: Option<f64> = None;
    for s in scopes.values_mut() {
        if let Some((b, t)) = chain(&s.scope, &by_scope)
            .into_iter()
            .map(|b| (b, secs(b)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
        {
            s.limited_by = Some(b.scope.clone());
            s.drain_secs = Some(t);
            total = Some(total.map_or(t, |x: f64| x.max(t)));
        }
    }
    let scopes: Vec<ScopeBacklog> = scopes.into_values().collect();
    BacklogReport {
        pending: scopes.iter().map(|s| s.pending).sum(),
        running: scopes.iter().map(|s| s.running).sum(),
        oldest_pending_secs: backlog
            .oldest_pending_at
            .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
        drain_secs: total,
        scopes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_store::TaskCount;

    fn budget(scope: &str, parent: Option<&str>, rate: f64) -> Budget {
        Budget {
            scope: scope.into(),
            parent: parent.map(String::from),
            rate,
            burst: rate,
            tokens: 0.0,
            refilled_at: now(),
            adaptive: None,
            ramp: Default::default(),
            dry_until: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn count(scope: &str, state: TaskState, tasks: i64, est_calls: i64) -> TaskCount {
        TaskCount {
            scope: scope.into(),
            state,
            tasks,
            est_calls,
        }
    }

    #[test]
    fn drain_time_is_set_by_the_slowest_budget_on_each_chain() {
        let backlog = TaskBacklog {
            counts: vec![
                count("aws:1", TaskState::Pending, 10, 100),
                count("aws:1", TaskState::Running, 2, 20),
                count("aws:1", TaskState::Succeeded, 50, 500),
                count("aws:2", TaskState::Pending, 5, 300),
                count("gcp:9", TaskState::Pending, 1, 40),
            ],
            oldest_pending_at: Some(now() - chrono::Duration::seconds(90)),
        };
        // aws:1 at 10/s (120 calls: 12 s); aws:2 at 100/s (300 calls: 3 s); gcp:9 has no
        // budget and is charged to the root alone. The root at 20/s carries all 460: 23 s.
        let budgets = [
            budget("*", None, 20.0),
            budget("aws:1", Some("*"), 10.0),
            budget("aws:2", Some("*"), 100.0),
        ];
        let r = report(&backlog, &budgets, now());
        type Row<'a> = (&'a str, i64, i64, i64, Option<&'a str>, Option<f64>);
        let got: Vec<Row<'_>> = r
            .scopes
            .iter()
            .map(|s| {
                (
                    s.scope.as_str(),
                    s.pending,
                    s.running,
                    s.est_calls,
                    s.limited_by.as_deref(),
                    s.drain_secs,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("aws:1", 10, 2, 120, Some("*"), Some(23.0)),
                ("aws:2", 5, 0, 300, Some("*"), Some(23.0)),
                ("gcp:9", 1, 0, 40, Some("*"), Some(23.0)),
            ]
        );
        assert_eq!((r.pending, r.running), (16, 2));
        assert_eq!(r.drain_secs, Some(23.0));
        assert_eq!(r.oldest_pending_secs, Some(90.0));

        // A generous root: each account's own budget bounds it.
        let budgets = [
            budget("*", None, 1000.0),
            budget("aws:1", Some("*"), 10.0),
            budget("aws:2", Some("*"), 100.0),
        ];
        let r = report(&backlog, &budgets, now());
        let got: Vec<(Option<&str>, Option<f64>)> = r
            .scopes
            .iter()
            .map(|s| (s.limited_by.as_deref(), s.drain_secs))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("aws:1"), Some(12.0)),
                (Some("aws:2"), Some(3.0)),
                (Some("*"), Some(0.46)),
            ]
        );
        assert_eq!(r.drain_secs, Some(12.0));
    }

    #[test]
    fn no_budget_means_no_bound_and_a_zero_rate_never_drains() {
        let backlog = TaskBacklog {
            counts: vec![count("aws:1", TaskState::Pending, 3, 30)],
            oldest_pending_at: None,
        };
        let r = report(&backlog, &[], now());
        assert_eq!((r.drain_secs, r.scopes[0].drain_secs), (None, None));
        let r = report(&backlog, &[budget("*", None, 0.0)], now());
        assert_eq!(r.drain_secs, Some(f64::INFINITY));
        // Corrupt rows that form a cycle end the walk.
        let r = report(
            &backlog,
            &[
                budget("aws:1", Some("x"), 10.0),
                budget("x", Some("aws:1"), 5.0),
            ],
            now(),
        );
        assert_eq!(r.drain_secs, Some(6.0));
        assert_eq!(report(&TaskBacklog::default(), &[], now()).scopes, vec![]);
    }
}
