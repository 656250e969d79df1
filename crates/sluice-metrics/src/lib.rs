//! The process's Prometheus plumbing, over the default registry: registering a static metric
//! ([`register`]) and rendering every metric of the process ([`render`]). The metrics themselves
//! are declared in each crate's `metrics.rs`, beside the code that updates them.

use prometheus::core::Collector;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Registers a metric in the default registry and returns it, for a static:
/// `LazyLock::new(|| register(IntCounter::new(…)))`. Every definition is static with a valid,
/// unique name, and each is built once per process (the `LazyLock`), so neither construction
/// nor registration can fail.
#[allow(clippy::expect_used)]
pub fn register<M: Collector + Clone + 'static>(m: prometheus::Result<M>) -> M {
    let m = m.expect("static metric definition is valid");
    prometheus::default_registry()
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

/// The default registry in the Prometheus text format.
pub fn render() -> String {
    let mut buf = String::new();
    let families = prometheus::gather();
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut buf) {
        tracing::warn!(error = %e, "rendering metrics failed");
    }
    buf
}
