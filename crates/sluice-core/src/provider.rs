//! Provider calls as the domain sees them: how an answer is classified, and the adaptive rate
//! of a scope (AIMD with slow start) that sits under its configured budget.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the provider answered one HTTP attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallClass {
    Ok,
    /// 429, 503 SlowDown, `Throttling`: slow down.
    Throttled,
    /// 403 `AccountProblem` and kin: the provider refuses the whole account.
    Frozen,
    /// Worth trying again (other 5xx, 408, connection errors).
    Transient,
    /// The request itself is wrong (404, 400, 403 access denied): trying again does not help.
    Permanent,
}

impl CallClass {
    pub fn as_str(self) -> &'static str {
        match self {
            CallClass::Ok => "ok",
            CallClass::Throttled => "throttled",
            CallClass::Frozen => "frozen",
            CallClass::Transient => "transient",
            CallClass::Permanent => "permanent",
        }
    }
}

/// Why the provider guard does not let a call go now. Never the task's fault: a task that
/// meets one goes back to pending without spending an attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    /// The scope's breaker is open (`until`: when the next probe may go; `None`: a probe is
    /// in flight).
    #[error("provider scope {scope}: breaker open{}", until.map(|u| format!(" until {}", u.format("%H:%M:%S UTC"))).unwrap_or_default())]
    BreakerOpen {
        scope: String,
        until: Option<DateTime<Utc>>,
    },
    /// No token of the scope (or an ancestor) came within the wait limit.
    #[error("provider scope {scope}: call budget exhausted (waited {}s)", waited.as_secs())]
    Budget { scope: String, waited: Duration },
    /// The guard cannot reach its database: no call goes unmetered.
    #[error("provider guard unavailable: {0}")]
    Unavailable(String),
}

impl Refusal {
    /// When to try the task again.
    pub fn retry_after(&self, now: DateTime<Utc>) -> Duration {
        match self {
            Refusal::BreakerOpen {
                until: Some(until), ..
            } => (*until - now)
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_secs(1)),
            Refusal::BreakerOpen { until: None, .. } => Duration::from_secs(5),
            Refusal::Budget { .. } => Duration::from_secs(2),
            Refusal::Unavailable(_) => Duration::from_secs(5),
        }
    }
}

/// A call the gate let through; handed back with the answer's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permit {
    /// This call is the half-open breaker's single probe.
    pub probe: bool,
}

/// The one gate every provider HTTP attempt passes: it waits for a token of the scope (and
/// its ancestors) and checks the scope's breaker; the answer is reported back so throttling
/// and freezes move the breaker and the adaptive rate.
#[async_trait::async_trait]
pub trait CallGate: Send + Sync + std::fmt::Debug {
    async fn admit(&self, scope: &str) -> Result<Permit, Refusal>;
    async fn report(&self, scope: &str, permit: Permit, class: CallClass);
}

/// A gate that lets everything through (local lakes, tests, the guard switched off).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenGate;

#[async_trait::async_trait]
impl CallGate for OpenGate {
    async fn admit(&self, _: &str) -> Result<Permit, Refusal> {
        Ok(Permit { probe: false })
    }
    async fn report(&self, _: &str, _: Permit, _: CallClass) {}
}

/// Error codes with which providers refuse a whole account (DESIGN.md section 5).
pub const FROZEN_CODES: [&str; 4] = [
    "AccountProblem",
    "AllAccessDisabled",
    "AccountIsDisabled",
    "accountDisabled",
];
const THROTTLE_CODES: [&str; 5] = [
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
];

/// Classifies an HTTP answer by status and the provider's error code (from the S3 error body
/// or an `x-amz-error-code` header; empty if there is none).
pub fn classify(status: u16, code: &str) -> CallClass {
    if FROZEN_CODES.contains(&code) {
        return CallClass::Frozen;
    }
    if THROTTLE_CODES.contains(&code) || status == 429 {
        return CallClass::Throttled;
    }
    match status {
        200..=399 => CallClass::Ok,
        503 => CallClass::Throttled,
        408 | 500..=599 => CallClass::Transient,
        _ => CallClass::Permanent,
    }
}

/// The `<Code>` of an S3 XML error body.
pub fn s3_error_code(body: &str) -> &str {
    body.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map_or("", |(code, _)| code.trim())
}

/// How a scope's effective rate moves (stored per budget; JSON fields `interval_secs`,
/// `start_fraction`, `min_fraction`, `increase`, each optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// The unit of time of growth: slow start doubles once per interval, congestion avoidance
    /// adds `increase` of the configured rate once per interval.
    #[serde(rename = "interval_secs", with = "secs_f64")]
    pub interval: Duration,
    /// Slow start begins at this fraction of the configured rate.
    pub start_fraction: f64,
    /// A throttle never cuts below this fraction.
    pub min_fraction: f64,
    pub increase: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            interval: Duration::from_secs(2),
            start_fraction: 0.1,
            min_fraction: 0.02,
            increase: 0.05,
        }
    }
}

impl AdaptiveConfig {
    /// Checks the bounds: an interval from 10 ms to an hour, fractions in (0, 1].
    pub fn validate(&self) -> Result<(), String> {
        let secs = self.interval.as_secs_f64();
        if !(0.01..=3600.0).contains(&secs) {
            return Err(format!(
                "ramp interval must be 0.01 to 3600 seconds, got {secs}"
            ));
        }
        for (name, v) in [
            ("start_fraction", self.start_fraction),
            ("min_fraction", self.min_fraction),
            ("increase", self.increase),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!("ramp {name} must be in (0, 1], got {v}"));
            }
        }
        Ok(())
    }
}

/// A duration as fractional seconds in JSON.
mod secs_f64 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// A scope's effective rate under its configured rate: halved on throttling (at most once per
/// interval, so one burst of throttled answers is one cut), grown additively after that, and
/// ramped up from `start_fraction` by doubling (slow start) after a breaker closes or a pause
/// lifts — so a backlog is never released at once (DESIGN.md invariant 5).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adaptive {
    pub effective: f64,
    /// Below it the rate doubles per interval; above it it grows additively.
    pub ssthresh: f64,
    pub adjusted_at: DateTime<Utc>,
    pub cut_at: Option<DateTime<Utc>>,
}

fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Adaptive {
    /// Slow start from now.
    pub fn slow_start(rate: f64, now: DateTime<Utc>, cfg: &AdaptiveConfig) -> Self {
        Adaptive {
            effective: (rate * cfg.start_fraction).max(rate.min(1.0)),
            ssthresh: rate,
            adjusted_at: now,
            cut_at: None,
        }
    }

    /// The effective rate at `now` (growth since the last adjustment applied), never above
    /// `rate`. A clock that went backwards grows nothing.
    pub fn grow(&mut self, rate: f64, now: DateTime<Utc>, cfg: &AdaptiveConfig) -> f64 {
        let dt = secs_between(self.adjusted_at, now);
        let interval = cfg.interval.as_secs_f64().max(1e-3);
        if dt > 0.0 {
            let mut e = self.effective.max(rate * cfg.min_fraction);
            let mut left = dt / interval;
            if e < self.ssthresh {
                // Doubling until ssthresh: the intervals that takes, then the rest additively.
                let to_thresh = (self.ssthresh / e).log2().max(0.0);
                if left <= to_thresh {
                    e *= 2f64.powf(left);
                    left = 0.0;
                } else {
                    e = self.ssthresh;
                    left -= to_thresh;
                }
            }
            e += rate * cfg.increase * left;
            self.effective = e.min(rate);
            self.adjusted_at = now;
        }
        self.effective.min(rate)
    }

    /// The provider throttled: halve (once per interval).
    pub fn on_throttle(&mut self, rate: f64, now: DateTime<Utc>, cfg: &AdaptiveConfig) {
        self.grow(rate, now, cfg);
        let recent = self
            .cut_at
            .is_some_and(|c| c <= now && secs_between(c, now) < cfg.interval.as_secs_f64());
        if recent {
            return;
        }
        self.effective = (self.effective / 2.0).max(rate * cfg.min_fraction);
        self.ssthresh = self.effective;
        self.cut_at = Some(now);
    }

    /// At full rate and not in slow start: the state can be dropped.
    pub fn settled(&self, rate: f64) -> bool {
        self.effective >= rate && self.ssthresh >= rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::test_time as t;

    #[test]
    fn answers_are_classified() {
        let cases = [
            (200, "", CallClass::Ok),
            (206, "", CallClass::Ok),
            (304, "", CallClass::Ok),
            (503, "SlowDown", CallClass::Throttled),
            (503, "", CallClass::Throttled),
            (429, "", CallClass::Throttled),
            (400, "Throttling", CallClass::Throttled),
            (403, "AccountProblem", CallClass::Frozen),
            (403, "AllAccessDisabled", CallClass::Frozen),
            (403, "AccessDenied", CallClass::Permanent),
            (403, "", CallClass::Permanent),
            (404, "NoSuchKey", CallClass::Permanent),
            (500, "InternalError", CallClass::Transient),
            (408, "", CallClass::Transient),
        ];
        for (status, code, want) in cases {
            assert_eq!(classify(status, code), want, "{status} {code}");
        }
        let body =
            "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>x</Message></Error>";
        assert_eq!(s3_error_code(body), "SlowDown");
        assert_eq!(s3_error_code("garbage <Code>"), "");
        assert_eq!(s3_error_code(""), "");
    }

    #[test]
    fn slow_start_doubles_per_interval_then_grows_additively() {
        let cfg = AdaptiveConfig::default(); // 2 s interval, start 10 %, +5 %/interval
        let mut a = Adaptive::slow_start(100.0, t(0), &cfg);
        assert_eq!(a.effective, 10.0);
        let checks = [(2_000, 20.0), (4_000, 40.0), (6_000, 80.0)];
        for (at, want) in checks {
            let got = a.grow(100.0, t(at), &cfg);
            assert!((got - want).abs() < 1e-6, "at {at}: {got} != {want}");
        }
        // 80 -> 100 needs log2(1.25) = 0.32 intervals of doubling: full rate, capped.
        assert!((a.grow(100.0, t(8_000), &cfg) - 100.0).abs() < 1e-9);
        assert!(a.settled(100.0));
        // A clock that goes backwards changes nothing.
        assert_eq!(a.grow(100.0, t(1_000), &cfg), 100.0);
    }

    #[test]
    fn throttles_halve_once_per_interval_with_a_floor() {
        let cfg = AdaptiveConfig::default();
        let mut a = Adaptive::slow_start(100.0, t(0), &cfg);
        a.grow(100.0, t(20_000), &cfg);
        assert_eq!(a.effective, 100.0);
        a.on_throttle(100.0, t(20_000), &cfg);
        assert_eq!(a.effective, 50.0);
        // A burst of throttled answers within the interval is one cut.
        a.on_throttle(100.0, t(20_500), &cfg);
        assert!((a.effective - 51.25).abs() < 1e-6, "{}", a.effective);
        // Additive recovery: +5 per 2 s.
        let got = a.grow(100.0, t(24_500), &cfg);
        assert!((got - 61.25).abs() < 1e-6, "{got}");
        // Throttled every interval, cuts and additive growth settle at twice the increase.
        for i in 0..20 {
            a.on_throttle(100.0, t(30_000 + i * 2_000), &cfg);
        }
        assert!((a.effective - 5.0).abs() < 0.1, "{}", a.effective);
        // Without growth, cuts bottom out at 2 %.
        let flat = AdaptiveConfig {
            increase: 0.0,
            ..cfg
        };
        for i in 0..20 {
            a.on_throttle(100.0, t(80_000 + i * 2_000), &flat);
        }
        assert!(a.effective >= 2.0 && a.effective < 2.5, "{}", a.effective);
    }
}
