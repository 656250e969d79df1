//! The elected scheduler's metrics (Prometheus, default registry): `sluice_scheduler_…`, and
//! what its leader reads off the database: `sluice_jobs_…`, `sluice_budget_…`,
//! `sluice_pauses_active`.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts};
use sluice_metrics::register;
use std::sync::LazyLock;

pub static LEADER: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "sluice_scheduler_leader",
        "1 while this process is the elected scheduler leader, else 0.",
    ))
});

pub static RESCUED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_scheduler_rescued_tasks_total",
        "Tasks whose lease expired that this process, as leader, returned to pending or failed.",
    ))
});

pub static REBALANCED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_scheduler_restrided_jobs_total",
        "Jobs this process, as leader, re-tagged because their owner's number of open jobs changed.",
    ))
});

/// Webhook tries by outcome (the leader's notifier): `delivered` (2xx), `retried` (to be tried
/// again), `failed` (given up).
pub static WEBHOOKS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new("sluice_webhook_deliveries_total", WEBHOOKS_HELP);
    register(prometheus::IntCounterVec::new(opts, &["outcome"]))
});

const WEBHOOKS_HELP: &str =
    "Webhook tries by outcome: delivered (2xx), retried (to be tried again), failed (given up).";

/// Schedule ticks by outcome (the leader's recurring hunts): `fired` (a job made), `skipped`
/// (the tick made none: invalid hunt, no lake, revoked token), `deferred` (tried again later).
pub static SCHEDULE_RUNS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "sluice_schedule_runs_total",
        "Schedule ticks by outcome: fired (a job made), skipped (the tick made none), deferred (tried again later).",
    );
    register(prometheus::IntCounterVec::new(opts, &["outcome"]))
});

pub static CLEANER_JOBS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_cleaner_jobs_purged_total",
        "Finished jobs removed with their tasks, journal and result objects (retention or purge).",
    ))
});

pub static CLEANER_OBJECTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_cleaner_objects_removed_total",
        "Result objects removed with their purged jobs.",
    ))
});

pub static CLEANER_ORPHANS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_cleaner_orphans_removed_total",
        "Result objects no task names (rejected claims, cut-short uploads, jobs gone) removed by the sweep.",
    ))
});

pub static CLEANER_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_cleaner_errors_total",
        "Cleaner passes or object removals that failed (retried at the next pass).",
    ))
});

pub static CLEANER_BEHIND: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "sluice_cleaner_behind",
        "1 when the leader's last retention pass stopped at its time budget with expired jobs left.",
    ))
});

// What the leader reads off the database every observation pass (ADR 0006); a standby exports
// none of them, so `max()`/`sum()` across processes never double-counts.

pub static OPEN_JOBS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(IntGaugeVec::new(
        Opts::new(
            "sluice_jobs_open",
            "Jobs queued or running, by priority (exported by the scheduler leader).",
        ),
        &["priority"],
    ))
});

pub static BACKLOG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(IntGaugeVec::new(
        Opts::new(
            "sluice_jobs_backlog_tasks",
            "Tasks of open jobs not finished yet (pending or running), by priority, from the jobs' counters (exported by the scheduler leader).",
        ),
        &["priority"],
    ))
});

pub static OLDEST_OPEN: LazyLock<GaugeVec> = LazyLock::new(|| {
    register(GaugeVec::new(
        Opts::new(
            "sluice_jobs_oldest_open_age_seconds",
            "Age of the oldest open job, by priority: how long the longest-waiting researcher has waited (exported by the scheduler leader).",
        ),
        &["priority"],
    ))
});

pub static TASK_BACKLOG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(IntGaugeVec::new(
        Opts::new(
            "sluice_tasks_backlog_tasks",
            "Tasks pending or running, by provider scope and state, from counters the database keeps (exported by the scheduler leader; scopes with none are absent).",
        ),
        &["scope", "state"],
    ))
});

/// Unlabelled, but a vector so that a standby exports nothing (like the other leader gauges).
pub static OLDEST_PENDING: LazyLock<GaugeVec> = LazyLock::new(|| {
    register(GaugeVec::new(
        Opts::new(
            "sluice_tasks_oldest_pending_age_seconds",
            "Age of the oldest task waiting to run (0 when none is pending), exported by the scheduler leader.",
        ),
        &[],
    ))
});

pub static TIME_TO_ANSWER: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(HistogramVec::new(
        HistogramOpts::new(
            "sluice_jobs_time_to_answer_seconds",
            "Time from a job's submission to its terminal state, by priority and outcome (observed by the scheduler leader).",
        )
        .buckets(vec![
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
            86400.0,
        ]),
        &["priority", "outcome"],
    ))
});

pub static BUDGET_RATE: LazyLock<GaugeVec> = LazyLock::new(|| {
    register(GaugeVec::new(
        Opts::new(
            "sluice_budget_rate_calls_per_second",
            "Configured provider-call budget per scope (exported by the scheduler leader).",
        ),
        &["scope"],
    ))
});

pub static BUDGET_EFFECTIVE: LazyLock<GaugeVec> = LazyLock::new(|| {
    register(GaugeVec::new(
        Opts::new(
            "sluice_budget_effective_rate_calls_per_second",
            "Rate tokens accrue at now per scope: the budget, or less after throttling (AIMD) or in slow start (exported by the scheduler leader).",
        ),
        &["scope"],
    ))
});

pub static BUDGET_TOKENS: LazyLock<GaugeVec> = LazyLock::new(|| {
    register(GaugeVec::new(
        Opts::new(
            "sluice_budget_tokens",
            "Tokens in each scope's bucket now (exported by the scheduler leader).",
        ),
        &["scope"],
    ))
});

pub static PAUSES: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "sluice_pauses_active",
        "Operator pauses in force (exported by the scheduler leader).",
    ))
});

/// Forgets what a leader exported, when this process stops leading.
pub fn reset_leader_gauges() {
    OPEN_JOBS.reset();
    BACKLOG.reset();
    OLDEST_OPEN.reset();
    TASK_BACKLOG.reset();
    OLDEST_PENDING.reset();
    BUDGET_RATE.reset();
    BUDGET_EFFECTIVE.reset();
    BUDGET_TOKENS.reset();
    PAUSES.set(0);
    CLEANER_BEHIND.set(0);
}
