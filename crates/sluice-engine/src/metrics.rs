//! The engine's metrics (Prometheus, default registry). Object-store calls here are logical
//! calls to lakes; the provider budget counts HTTP attempts at the transport (provider guard).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};
use sluice_metrics::register;
use std::sync::LazyLock;

pub static ROWS_MATCHED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_engine_rows_matched_total",
        "Result rows written by hunt tasks.",
    ))
});

pub static ASSUME_ROLE: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_provider_assume_role_total",
        "Roles assumed (STS AssumeRole answered with credentials) by this process: about one per scope and role per credential lifetime.",
    ))
});

pub static LAKE_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "sluice_engine_lake_calls_total",
            "Object-store calls made to lakes, by operation (list, get, head, get_ranges).",
        ),
        &["op"],
    ))
});

pub static BYTES_SCANNED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_engine_bytes_scanned_total",
        "Bytes read from lakes.",
    ))
});

pub static BYTE_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "sluice_engine_byte_cache_total",
            "Lake reads through the byte cache by event: hit (served from memory), miss (read from the lake), eviction (a range dropped for room).",
        ),
        &["event"],
    ))
});

pub static BYTE_CACHE_SAVED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_engine_byte_cache_saved_bytes_total",
        "Lake bytes served from the byte cache instead of the lake.",
    ))
});

pub static BYTE_CACHE_BYTES: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(prometheus::IntGauge::new(
        "sluice_engine_byte_cache_bytes",
        "Lake bytes held in the byte cache now.",
    ))
});

pub static RUNNERS_STARTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_engine_runners_started_total",
        "Hunt runner processes started by this worker.",
    ))
});

pub static RUNNERS_KILLED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new(
        "sluice_engine_runners_killed_total",
        "Hunt runner processes this worker killed (timeouts, cancels, recycling, shutdown).",
    ))
});

pub static RUNNER_DEATHS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        Opts::new(
            "sluice_engine_runner_deaths_total",
            "Hunt tasks ended by their runner's death, by cause (memory, cpu, limit, timeout, crash).",
        ),
        &["cause"],
    ))
});

pub static RUNNER_START_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register(Histogram::with_opts(
        HistogramOpts::new(
            "sluice_engine_runner_start_seconds",
            "Time from starting a hunt runner to its being ready.",
        )
        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
    ))
});

/// What a task did to this process's engine counters (a runner sends it to its worker, which
/// adds it to its own: the worker's `/metrics` is the one scraped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delta {
    pub rows: u64,
    pub bytes: u64,
    /// list, get, head, get_ranges
    pub calls: [u64; 4],
}

const OPS: [&str; 4] = ["list", "get", "head", "get_ranges"];

impl Delta {
    /// The counters now.
    pub fn now() -> Delta {
        let mut calls = [0; 4];
        for (c, op) in calls.iter_mut().zip(OPS) {
            *c = LAKE_CALLS.with_label_values(&[op]).get();
        }
        Delta {
            rows: ROWS_MATCHED.get(),
            bytes: BYTES_SCANNED.get(),
            calls,
        }
    }

    pub fn since(self, before: Delta) -> Delta {
        let mut calls = [0; 4];
        for (i, c) in calls.iter_mut().enumerate() {
            *c = self.calls[i].saturating_sub(before.calls[i]);
        }
        Delta {
            rows: self.rows.saturating_sub(before.rows),
            bytes: self.bytes.saturating_sub(before.bytes),
            calls,
        }
    }

    /// Adds a runner's delta to this process's counters.
    pub fn apply(self) {
        ROWS_MATCHED.inc_by(self.rows);
        BYTES_SCANNED.inc_by(self.bytes);
        for (c, op) in self.calls.iter().zip(OPS) {
            LAKE_CALLS.with_label_values(&[op]).inc_by(*c);
        }
    }
}

/// Creates every metric and label set, so each has a series from the first scrape on.
pub fn init() {
    LazyLock::force(&ROWS_MATCHED);
    LazyLock::force(&ASSUME_ROLE);
    LazyLock::force(&BYTES_SCANNED);
    for op in OPS {
        LAKE_CALLS.with_label_values(&[op]);
    }
    LazyLock::force(&RUNNERS_STARTED);
    LazyLock::force(&RUNNERS_KILLED);
    LazyLock::force(&RUNNER_START_SECONDS);
    for cause in ["memory", "cpu", "limit", "timeout", "crash"] {
        RUNNER_DEATHS.with_label_values(&[cause]);
    }
}
