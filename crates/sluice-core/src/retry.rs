//! The durable retry policy: when a task that failed for its own reasons runs again. A pure
//! function of the attempt number and a random draw, so it is tested without a clock or RNG.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
/// Jitter"): the delay before attempt `n + 1` is uniform in `[0, min(cap, base * 2^n)]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Attempts a task may spend before it fails for good; at least 1.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(600),
            max_attempts: 5,
        }
    }
}

/// What to do after a task-caused failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryDecision {
    RetryAfter(Duration),
    GiveUp,
}

impl RetryPolicy {
    /// The ceiling of the jittered delay after `spent` attempts (>= 1) have failed.
    pub fn ceiling(&self, spent: u32) -> Duration {
        let exp = spent.saturating_sub(1).min(63);
        let factor = 1u64.checked_shl(exp).unwrap_or(u64::MAX);
        let base = self.base.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(base.saturating_mul(factor)).min(self.cap)
    }

    /// `spent`: attempts spent including the one that just failed. `unit`: a random draw in
    /// `[0, 1)`; values outside are clamped, so a bad source cannot produce a huge delay.
    pub fn decide(&self, spent: u32, unit: f64) -> RetryDecision {
        if spent >= self.max_attempts.max(1) {
            return RetryDecision::GiveUp;
        }
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        RetryDecision::RetryAfter(self.ceiling(spent).mul_f64(unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: RetryPolicy, spent: u32, unit: f64, want: RetryDecision) {
        assert_eq!(
            policy.decide(spent, unit),
            want,
            "spent={spent} unit={unit}"
        );
    }

    #[test]
    fn full_jitter_exponential_with_cap_and_limit() {
        let p = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_attempts: 10,
        };
        let s = Duration::from_secs;
        use RetryDecision::*;
        let cases = [
            (1, 1.0, RetryAfter(s(1))),
            (2, 1.0, RetryAfter(s(2))),
            (3, 0.5, RetryAfter(s(2))),
            (4, 0.0, RetryAfter(s(0))),
            (6, 1.0, RetryAfter(s(32))),
            (7, 1.0, RetryAfter(s(60))), // capped
            (9, 1.0, RetryAfter(s(60))),
            (10, 0.3, GiveUp),
            (11, 0.3, GiveUp),
            (2, f64::NAN, RetryAfter(s(0))),
            (2, 7.0, RetryAfter(s(2))), // clamped draw
            (2, -1.0, RetryAfter(s(0))),
        ];
        for (spent, unit, want) in cases {
            check(p, spent, unit, want);
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = RetryPolicy {
            max_attempts: u32::MAX,
            ..RetryPolicy::default()
        };
        for spent in [63, 64, 65, 1000, u32::MAX - 1] {
            assert_eq!(p.ceiling(spent), p.cap);
        }
        let zero = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        check(zero, 1, 0.5, RetryDecision::GiveUp);
    }
}
