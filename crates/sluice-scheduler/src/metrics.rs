//! The scheduler's metrics (Prometheus, default registry): the provider guard's
//! (`sluice_provider_<name>_<unit>`) and the elected scheduler's (`sluice_scheduler_…`).

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use std::sync::LazyLock;

/// Registers a metric in the default registry. Every definition below is static with a valid,
/// unique name, and each is built once per process (LazyLock), so neither construction nor
/// registration can fail.
#[allow(clippy::expect_used)]
fn reg<M: Collector + Clone + 'static>(m: prometheus::Result<M>) -> M {
    let m = m.expect("static metric definition is valid");
    prometheus::default_registry()
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

pub static CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "sluice_provider_calls_total",
            "Provider HTTP attempts (credential fetches and retries included), by scope and answer class (ok, throttled, frozen, transient, permanent).",
        ),
        &["scope", "class"],
    ))
});

pub static REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "sluice_provider_refusals_total",
            "Calls the guard did not let go, by scope and reason (breaker_open, budget, unavailable); their tasks were deferred.",
        ),
        &["scope", "reason"],
    ))
});

pub static TOKENS_FORFEITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "sluice_provider_tokens_forfeited_total",
            "Leased budget tokens that expired unspent (never returned), by scope.",
        ),
        &["scope"],
    ))
});

pub static BREAKER_STATE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    reg(IntGaugeVec::new(
        Opts::new(
            "sluice_provider_breaker_state",
            "Circuit breaker state per scope as this process last read it: 0 closed, 1 half-open, 2 open.",
        ),
        &["scope"],
    ))
});

pub static BUDGET_WAIT: LazyLock<Histogram> = LazyLock::new(|| {
    reg(Histogram::with_opts(
        HistogramOpts::new(
            "sluice_provider_budget_wait_seconds",
            "Time a call waited for a budget token.",
        )
        .buckets(vec![0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]),
    ))
});

/// Registers every metric (so a scrape shows them before the first call).
pub fn init() {
    LazyLock::force(&CALLS);
    LazyLock::force(&REFUSALS);
    LazyLock::force(&TOKENS_FORFEITED);
    LazyLock::force(&BREAKER_STATE);
    LazyLock::force(&BUDGET_WAIT);
}

pub static LEADER: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "sluice_scheduler_leader",
        "1 while this process is the elected scheduler leader, else 0.",
    ))
});

pub static RESCUED: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "sluice_scheduler_rescued_tasks_total",
        "Tasks whose lease expired that this process, as leader, returned to pending or failed.",
    ))
});

pub static REBALANCED: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "sluice_scheduler_restrided_jobs_total",
        "Jobs this process, as leader, re-tagged because their owner's number of open jobs changed.",
    ))
});
