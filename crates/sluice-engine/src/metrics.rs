//! The engine's metrics (Prometheus, default registry). Object-store calls here are logical
//! calls to lakes; the provider budget counts HTTP attempts at the transport (provider guard).

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, Opts};
use std::sync::LazyLock;

/// Registers a static metric; see `sluice_worker::metrics::reg` for why this cannot fail.
#[allow(clippy::expect_used)]
fn reg<M: Collector + Clone + 'static>(m: prometheus::Result<M>) -> M {
    let m = m.expect("static metric definition is valid");
    prometheus::default_registry()
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

pub static ROWS_MATCHED: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "sluice_engine_rows_matched_total",
        "Result rows written by hunt tasks.",
    ))
});

pub static LAKE_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "sluice_engine_lake_calls_total",
            "Object-store calls made to lakes, by operation (list, get, head, get_ranges).",
        ),
        &["op"],
    ))
});

pub static BYTES_SCANNED: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "sluice_engine_bytes_scanned_total",
        "Bytes read from lakes.",
    ))
});

/// Creates every metric and label set, so each has a series from the first scrape on.
pub fn init() {
    LazyLock::force(&ROWS_MATCHED);
    LazyLock::force(&BYTES_SCANNED);
    for op in ["list", "get", "head", "get_ranges"] {
        LAKE_CALLS.with_label_values(&[op]);
    }
}
