//! The API's Prometheus metrics (`sluice_api_*`) and `/metrics`, which serves every metric of
//! the process (the default registry).

use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{HistogramVec, IntCounterVec};
use sluice_metrics::register;
use std::sync::LazyLock;

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(IntCounterVec::new(
        prometheus::Opts::new(
            "sluice_api_requests_total",
            "HTTP API requests by route template, method and status code",
        ),
        &["route", "method", "status"],
    ))
});

pub static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(HistogramVec::new(
        prometheus::HistogramOpts::new(
            "sluice_api_request_duration_seconds",
            "HTTP API request latency by route template",
        )
        .buckets(vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
        &["route"],
    ))
});

pub fn init() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&DURATION);
}

/// A method as a label: one the API serves, else `other` (a client may send any token as a
/// method; each would be a new series).
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *m {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times every request. Every label comes from a closed set: the route template
/// (`/v1/jobs/{id}`, not the id; unmatched paths count as `unmatched`), the method
/// ([`method_label`]) and the status code the API answered.
pub async fn observe(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method = method_label(req.method());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    DURATION
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    REQUESTS
        .with_label_values(&[&route, method, resp.status().as_str()])
        .inc();
    resp
}

pub async fn serve() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, sluice_metrics::CONTENT_TYPE)],
        sluice_metrics::render(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn invented_methods_share_one_label() {
        use axum::http::Method;
        let cases = [
            ("GET", "GET"),
            ("DELETE", "DELETE"),
            ("BREW", "other"),
            ("XYZZY", "other"),
            ("get", "other"),
        ];
        for (m, want) in cases {
            let m = Method::from_bytes(m.as_bytes()).expect("a method token");
            assert_eq!(super::method_label(&m), want);
        }
    }
}
