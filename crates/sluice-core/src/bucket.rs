//! Token-bucket maths for provider-call budgets: `rate` tokens a second up to `burst`.
//! Over any window of T seconds at most `burst + rate * T` tokens can be taken.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled_at: DateTime<Utc>,
}

fn sane(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

impl TokenBucket {
    /// A full bucket. Negative, NaN or infinite `rate`/`burst` are treated as zero: a broken
    /// setting must stop calls, never unleash them.
    pub fn new(rate: f64, burst: f64, now: DateTime<Utc>) -> Self {
        let burst = sane(burst);
        TokenBucket {
            rate: sane(rate),
            burst,
            tokens: burst,
            refilled_at: now,
        }
    }

    /// A bucket restored from stored state (the store keeps `tokens` and `refilled_at`).
    pub fn from_parts(rate: f64, burst: f64, tokens: f64, refilled_at: DateTime<Utc>) -> Self {
        let burst = sane(burst);
        TokenBucket {
            rate: sane(rate),
            burst,
            tokens: sane(tokens).min(burst),
            refilled_at,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }
    pub fn burst(&self) -> f64 {
        self.burst
    }
    pub fn tokens(&self) -> f64 {
        self.tokens
    }
    pub fn refilled_at(&self) -> DateTime<Utc> {
        self.refilled_at
    }

    /// Adds what accrued since the last refill. A clock that went backwards adds nothing and
    /// does not move `refilled_at` back (so the time is not counted twice when it catches up).
    pub fn refill(&mut self, now: DateTime<Utc>) {
        if now <= self.refilled_at {
            return;
        }
        let elapsed = (now - self.refilled_at)
            .to_std()
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled_at = now;
    }

    /// Takes `n` tokens if all are there; otherwise takes none.
    pub fn try_take(&mut self, n: u32, now: DateTime<Utc>) -> bool {
        self.refill(now);
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes as many whole tokens as are there, at most `n` (leasing a batch of calls).
    pub fn take_up_to(&mut self, n: u32, now: DateTime<Utc>) -> u32 {
        self.refill(now);
        let got = self.tokens.floor().min(f64::from(n)).max(0.0);
        self.tokens -= got;
        got as u32
    }

    /// How long until `n` tokens are there; `None` if never (n above burst, or zero rate).
    pub fn time_until(&self, n: u32, now: DateTime<Utc>) -> Option<Duration> {
        let mut b = *self;
        b.refill(now);
        let n = f64::from(n);
        if b.tokens >= n {
            return Some(Duration::ZERO);
        }
        if n > b.burst || b.rate <= 0.0 {
            return None;
        }
        let secs = (n - b.tokens) / b.rate;
        Duration::try_from_secs_f64(secs).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::test_time as t;

    enum Op {
        Take(u32, i64, bool),
        TakeUpTo(u32, i64, u32),
        Until(u32, i64, Option<u64>),
    }

    fn check(mut b: TokenBucket, ops: &[Op]) {
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::Take(n, at, want) => assert_eq!(b.try_take(n, t(at)), want, "op {i}"),
                Op::TakeUpTo(n, at, want) => assert_eq!(b.take_up_to(n, t(at)), want, "op {i}"),
                Op::Until(n, at, want) => {
                    let got = b.time_until(n, t(at)).map(|d| d.as_millis() as u64);
                    assert_eq!(got, want, "op {i}");
                }
            }
        }
    }

    #[test]
    fn refill_take_and_wait() {
        use Op::*;
        // 10/s, burst 5, full at t=0.
        check(
            TokenBucket::new(10.0, 5.0, t(0)),
            &[
                Take(5, 0, true),
                Take(1, 0, false),
                Until(1, 0, Some(100)),
                Until(5, 0, Some(500)),
                Until(6, 0, None), // above burst: never
                Take(1, 100, true),
                TakeUpTo(10, 300, 2),
                TakeUpTo(10, 300, 0),
                Take(5, 100_000, true), // huge gap refills only to burst
                Take(1, 100_000, false),
            ],
        );
    }

    #[test]
    fn zero_rate_and_broken_settings_never_refill() {
        use Op::*;
        check(
            TokenBucket::new(0.0, 2.0, t(0)),
            &[
                Take(2, 0, true),
                Take(1, 1_000_000, false),
                Until(1, 0, None),
            ],
        );
        for (rate, burst) in [(f64::NAN, 5.0), (-1.0, 5.0), (f64::INFINITY, f64::INFINITY)] {
            let mut b = TokenBucket::new(rate, burst, t(0));
            assert!(b.try_take(0, t(10_000)));
            let infinite_burst = burst.is_infinite();
            // rate sanitised to 0: only the initial burst (0 if burst was infinite) is ever there
            assert_eq!(
                b.take_up_to(100, t(10_000)),
                if infinite_burst { 0 } else { 5 }
            );
            assert_eq!(b.take_up_to(100, t(99_000)), 0);
        }
    }

    #[test]
    fn clock_going_backwards_adds_nothing_and_is_not_double_counted() {
        use Op::*;
        check(
            TokenBucket::new(10.0, 10.0, t(0)),
            &[
                Take(10, 1_000, true),
                Take(1, 500, false),   // clock went back 500 ms: nothing accrued
                Take(1, 1_000, false), // caught up with the old refill time: still nothing
                Take(1, 1_100, true),  // 100 ms after it: one token
            ],
        );
    }

    #[test]
    fn taken_never_exceeds_burst_plus_rate_times_window() {
        // Greedy taker, 1 ms steps over 10 s: what it gets is bounded by burst + rate*T.
        let (rate, burst) = (7.0, 3.0);
        let mut b = TokenBucket::new(rate, burst, t(0));
        let mut taken = 0u64;
        for ms in 0..=10_000 {
            taken += u64::from(b.take_up_to(1000, t(ms)));
        }
        let bound = burst + rate * 10.0;
        assert!(taken as f64 <= bound, "{taken} > {bound}");
        assert!(taken as f64 >= bound - 1.0, "{taken} far below {bound}");
    }

    #[test]
    fn from_parts_clamps_stored_tokens() {
        let b = TokenBucket::from_parts(1.0, 5.0, 50.0, t(0));
        assert_eq!(b.tokens(), 5.0);
        let b = TokenBucket::from_parts(1.0, 5.0, -3.0, t(0));
        assert_eq!(b.tokens(), 0.0);
    }
}
