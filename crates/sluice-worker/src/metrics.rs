//! The worker's metrics (Prometheus, default registry), declared beside the code that updates
//! them: `sluice_worker_<name>_<unit>`, and the provider guard's `sluice_provider_<name>_<unit>`.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use sluice_metrics::register;
use std::sync::LazyLock;

const TASK_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0,
];
const CALL_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

pub static SPARE_CLAIMED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_worker_spare_claims_total",
        "Tasks claimed into spare slots (for owners not already running their share here).",
    ))
});
pub static SHARED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_worker_tasks_shared_total",
        "Tasks run together with another task of their lake (a shared scan), beyond the first of each run.",
    ))
});
pub static CLAIMED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_worker_tasks_claimed_total",
        "Tasks claimed by this process's workers.",
    ))
});

pub static OUTCOMES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "sluice_worker_task_outcomes_total",
            "Task outcomes recorded, by outcome (succeeded, failed, retried, deferred).",
        ),
        &["outcome"],
    ))
});

pub static REJECTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_worker_outcomes_rejected_total",
        "Outcomes the store refused because the lease was lost (rescued, cancelled).",
    ))
});

pub static LEASES_LOST: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_worker_leases_lost_total",
        "Leases a heartbeat found lost; their runs were stopped.",
    ))
});

pub static HANDED_BACK: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_worker_tasks_handed_back_total",
        "Tasks handed back without spending an attempt (shutdown, lost claim reply).",
    ))
});

pub static STORE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "sluice_worker_store_errors_total",
            "Failed store calls, by operation (claim, finish, heartbeat, hand_back).",
        ),
        &["op"],
    ))
});

pub static TASK_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(HistogramVec::new(
        HistogramOpts::new(
            "sluice_worker_task_duration_seconds",
            "Run time of a task, by outcome.",
        )
        .buckets(TASK_BUCKETS.to_vec()),
        &["outcome"],
    ))
});

pub static CLAIM_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register(Histogram::with_opts(
        HistogramOpts::new(
            "sluice_worker_claim_duration_seconds",
            "Time of one claim call to the store.",
        )
        .buckets(CALL_BUCKETS.to_vec()),
    ))
});

pub static SLOTS_BUSY: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "sluice_worker_slots_busy",
        "Task slots running a task now.",
    ))
});

pub static SLOTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "sluice_worker_slots",
        "Task slots of the workers in this process.",
    ))
});

/// Creates every metric and label set, so each has a series from the first scrape on.
pub fn init() {
    LazyLock::force(&CLAIMED);
    LazyLock::force(&SPARE_CLAIMED);
    LazyLock::force(&REJECTED);
    LazyLock::force(&LEASES_LOST);
    LazyLock::force(&HANDED_BACK);
    LazyLock::force(&CLAIM_SECONDS);
    LazyLock::force(&SLOTS_BUSY);
    LazyLock::force(&SLOTS);
    for o in ["succeeded", "failed", "retried", "crashed", "deferred"] {
        OUTCOMES.with_label_values(&[o]);
        TASK_SECONDS.with_label_values(&[o]);
    }
    for op in ["claim", "finish", "heartbeat", "hand_back"] {
        STORE_ERRORS.with_label_values(&[op]);
    }
}

/// The label of an outcome.
pub fn outcome_label(o: &sluice_store::TaskOutcome) -> &'static str {
    match o {
        sluice_store::TaskOutcome::Succeeded { .. } => "succeeded",
        sluice_store::TaskOutcome::Failed { .. } => "failed",
        sluice_store::TaskOutcome::Retry { .. } => "retried",
        sluice_store::TaskOutcome::Crashed { .. } => "crashed",
        sluice_store::TaskOutcome::Defer { .. } => "deferred",
    }
}

// The provider guard's (`guard.rs`): every provider call of this process.

pub static CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "sluice_provider_calls_total",
            "Provider HTTP attempts (credential fetches and retries included), by scope and answer class (ok, throttled, frozen, transient, permanent).",
        ),
        &["scope", "class"],
    ))
});

pub static REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "sluice_provider_refusals_total",
            "Calls the guard did not let go, by scope and reason (breaker_open, budget, unavailable); their tasks were deferred.",
        ),
        &["scope", "reason"],
    ))
});

pub static TOKENS_FORFEITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "sluice_provider_tokens_forfeited_total",
            "Leased budget tokens that expired unspent (never returned), by scope.",
        ),
        &["scope"],
    ))
});

pub static BREAKER_STATE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(IntGaugeVec::new(
        Opts::new(
            "sluice_provider_breaker_state",
            "Circuit breaker state per scope as this process last read it: 0 closed, 1 half-open, 2 open.",
        ),
        &["scope"],
    ))
});

pub static BUDGET_WAIT: LazyLock<Histogram> = LazyLock::new(|| {
    register(Histogram::with_opts(
        HistogramOpts::new(
            "sluice_provider_budget_wait_seconds",
            "Time a call waited for a budget token.",
        )
        .buckets(vec![0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]),
    ))
});

/// Registers every metric (so a scrape shows them before the first call).
pub fn init_provider() {
    LazyLock::force(&CALLS);
    LazyLock::force(&REFUSALS);
    LazyLock::force(&TOKENS_FORFEITED);
    LazyLock::force(&BREAKER_STATE);
    LazyLock::force(&BUDGET_WAIT);
}

/// Creates a scope's series at zero the first time this process calls into it, so dashboards
/// and alerts see "no throttling" as 0 rather than as no data.
pub fn init_scope(scope: &str) {
    for class in ["ok", "throttled", "frozen", "transient", "permanent"] {
        CALLS.with_label_values(&[scope, class]);
    }
    for reason in ["breaker_open", "budget", "unavailable"] {
        REFUSALS.with_label_values(&[scope, reason]);
    }
    TOKENS_FORFEITED.with_label_values(&[scope]);
    BREAKER_STATE.with_label_values(&[scope]);
}
