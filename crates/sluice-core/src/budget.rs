//! Budgets: one scope's token bucket as stored, and the rules that move it — a take from a
//! chain of buckets (a scope and its ancestors), the dry mark a short take leaves, and the
//! provider's feedback on the adaptive rate. Pure: the store loads a chain, calls these, and
//! writes the buckets back.

use crate::{Adaptive, AdaptiveConfig, TokenBucket};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The root scope: the provider-wide budget.
pub const ROOT_SCOPE: &str = "*";

/// The deepest a scope tree may be: a longer chain of parents is a cycle in the data.
pub const MAX_BUDGET_DEPTH: usize = 32;

/// The longest a scope is marked dry: past it claims try the scope again even if no taker
/// has cleared the mark (a budget with rate 0, or takers that stopped asking).
pub const MAX_DRY: Duration = Duration::from_secs(60);

/// One scope's token bucket as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub scope: String,
    /// `None` only for the root scope.
    pub parent: Option<String>,
    pub rate: f64,
    pub burst: f64,
    pub tokens: f64,
    pub refilled_at: DateTime<Utc>,
    /// The adaptive rate under `rate` after throttling or in slow start; `None`: full rate.
    pub adaptive: Option<Adaptive>,
    /// How this scope's adaptive rate moves (slow start, cuts, growth).
    #[serde(default)]
    pub ramp: AdaptiveConfig,
    /// Set when a take came back short: until then claims prefer other scopes' tasks
    /// (ADR 0007). In the past or `None`: not dry.
    pub dry_until: Option<DateTime<Utc>>,
}

/// How the provider's answers move a scope's adaptive rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetFeedback {
    /// Halve the effective rate (AIMD).
    Throttled,
    /// Restart from a fraction of the rate, doubling per interval (a breaker closed, a
    /// pause lifted).
    SlowStart,
}

impl Budget {
    /// The rate tokens accrue at now: `rate`, or less while cut back or ramping up.
    pub fn effective_rate(&self, now: DateTime<Utc>) -> f64 {
        match self.adaptive {
            Some(mut a) => a.grow(self.rate, now, &self.ramp),
            None => self.rate,
        }
    }

    /// Tokens in the bucket at `now`, refilled at the effective rate since the last write.
    pub fn tokens_at(&self, now: DateTime<Utc>) -> f64 {
        self.bucket_at(now).tokens()
    }

    /// The bucket refilled to `now` at the effective rate.
    fn bucket_at(&self, now: DateTime<Utc>) -> TokenBucket {
        let mut t = TokenBucket::from_parts(
            self.effective_rate(now),
            self.burst,
            self.tokens,
            self.refilled_at,
        );
        t.refill(now);
        t
    }

    /// Applies the provider's feedback to the adaptive rate, from `now` on.
    pub fn feedback(&mut self, f: BudgetFeedback, now: DateTime<Utc>) {
        // Refill at the old rate up to now first, so the change applies from now on.
        let t = self.bucket_at(now);
        let rate = t.rate();
        self.tokens = t.tokens();
        self.refilled_at = t.refilled_at();
        let mut a = self.adaptive;
        if let Some(a) = &mut a {
            a.grow(self.rate, now, &self.ramp);
        }
        self.adaptive = Some(match (f, a) {
            (BudgetFeedback::SlowStart, _) => Adaptive::slow_start(self.rate, now, &self.ramp),
            (BudgetFeedback::Throttled, a) => {
                let mut a = a.unwrap_or(Adaptive {
                    effective: self.rate,
                    ssthresh: self.rate,
                    adjusted_at: now,
                    cut_at: None,
                });
                a.on_throttle(self.rate, now, &self.ramp);
                a
            }
        });
        if f == BudgetFeedback::SlowStart {
            // A ramp starts from a low rate: a full bucket would release a burst at once.
            self.tokens = self.tokens.min((rate * self.ramp.start_fraction).max(1.0));
        }
    }
}

/// A chain of parents that loops (or is deeper than [`MAX_BUDGET_DEPTH`]): corrupt data.
#[derive(Debug, Clone, PartialEq)]
pub struct Cycle<'a> {
    /// The scope met a second time (or the one past the depth).
    pub at: String,
    /// The budgets walked before it.
    pub walked: Vec<&'a Budget>,
}

/// The budgets a call of `scope` is charged to, the scope first: its own and its ancestors',
/// or the root's alone for a scope without a budget.
pub fn chain<'a>(
    scope: &str,
    get: impl Fn(&str) -> Option<&'a Budget>,
) -> Result<Vec<&'a Budget>, Cycle<'a>> {
    let mut out: Vec<&Budget> = Vec::new();
    let mut next = match get(scope) {
        Some(b) => Some(b),
        None if scope != ROOT_SCOPE => get(ROOT_SCOPE),
        None => None,
    };
    while let Some(b) = next.take() {
        if out.len() >= MAX_BUDGET_DEPTH || out.iter().any(|o| o.scope == b.scope) {
            return Err(Cycle {
                at: b.scope.clone(),
                walked: out,
            });
        }
        out.push(b);
        next = b.parent.as_deref().and_then(&get);
    }
    Ok(out)
}

/// Takes up to `n` tokens from a chain of buckets (a scope and its ancestors): the grant is
/// the smallest whole number of tokens every bucket has, refilled to `now`, above a headroom
/// of `rate × hold` (calls made up to `hold` after their grant still stay within
/// `burst + rate × T`), and it is taken from every bucket. Returns the grant and the buckets
/// after the take; a short grant marks every bucket that cannot grant one more token dry
/// until it can, a full grant clears the marks.
pub fn take_from_chain(
    chain: &[Budget],
    n: u32,
    hold: Duration,
    now: DateTime<Utc>,
) -> (u32, Vec<Budget>) {
    let mut adaptive: Vec<Option<Adaptive>> = chain.iter().map(|b| b.adaptive).collect();
    let mut buckets: Vec<TokenBucket> = chain
        .iter()
        .zip(adaptive.iter_mut())
        .map(|(b, a)| {
            // Tokens accrued since the last refill at the rate in force: the adaptive rate
            // as of now (growth is a function of time, so every taker sees the same).
            let rate = match a {
                Some(a) => a.grow(b.rate, now, &b.ramp),
                None => b.rate,
            };
            if a.is_some_and(|a| a.settled(b.rate)) {
                *a = None;
            }
            let mut t = TokenBucket::from_parts(rate, b.burst, b.tokens, b.refilled_at);
            t.refill(now);
            t
        })
        .collect();
    let headroom = |b: &Budget| (b.rate * hold.as_secs_f64()).min(b.burst - 1.0).max(0.0);
    let grant = buckets
        .iter()
        .zip(chain)
        .map(|(t, b)| (t.tokens() - headroom(b)).floor().max(0.0) as u64)
        .min()
        .unwrap_or(u64::from(n))
        .min(u64::from(n)) as u32;
    for t in &mut buckets {
        let got = t.take_up_to(grant, now);
        debug_assert_eq!(got, grant);
    }
    let after = chain
        .iter()
        .zip(buckets)
        .zip(adaptive)
        .map(|((b, t), adaptive)| {
            let need = headroom(b) + 1.0 - t.tokens();
            Budget {
                tokens: t.tokens(),
                refilled_at: t.refilled_at(),
                adaptive,
                dry_until: (grant < n && need > 0.0).then(|| dry_until(need, t.rate(), now)),
                ..b.clone()
            }
        })
        .collect();
    (grant, after)
}

/// When a bucket short of `need` tokens, refilling at `rate`, can grant again.
fn dry_until(need: f64, rate: f64, now: DateTime<Utc>) -> DateTime<Utc> {
    let secs = if rate > 0.0 {
        (need / rate).min(MAX_DRY.as_secs_f64())
    } else {
        MAX_DRY.as_secs_f64()
    };
    now + chrono::Duration::microseconds((secs * 1e6).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
    }

    fn budget(scope: &str, parent: Option<&str>, rate: f64, burst: f64, tokens: f64) -> Budget {
        Budget {
            scope: scope.into(),
            parent: parent.map(Into::into),
            rate,
            burst,
            tokens,
            refilled_at: t0(),
            adaptive: None,
            ramp: AdaptiveConfig::default(),
            dry_until: None,
        }
    }

    #[test]
    fn a_take_grants_what_every_bucket_of_the_chain_has() {
        let secs = |s: i64| t0() + chrono::Duration::seconds(s);
        // (scope tokens, root tokens, wanted, at, grant, dry marks)
        let cases = [
            (10.0, 100.0, 4, secs(0), 4, [false, false]),
            (10.0, 3.0, 4, secs(0), 3, [false, true]),
            (2.0, 100.0, 4, secs(0), 2, [true, false]),
            // One second at rate 5 refills the scope to 5 + 2.
            (2.0, 100.0, 4, secs(1), 4, [false, false]),
            (0.0, 0.0, 1, secs(0), 0, [true, true]),
        ];
        for (mine, root, n, at, want, dry) in cases {
            let chain = [
                budget("aws:1", Some(ROOT_SCOPE), 5.0, 20.0, mine),
                budget(ROOT_SCOPE, None, 50.0, 200.0, root),
            ];
            let (grant, after) = take_from_chain(&chain, n, Duration::ZERO, at);
            assert_eq!(grant, want, "{mine} {root} {n}");
            for (b, (before, dry)) in after.iter().zip(chain.iter().zip(dry)) {
                assert_eq!(b.dry_until.is_some(), dry, "{} {mine} {root}", b.scope);
                assert!(b.tokens <= before.burst);
                assert!((b.tokens - (before.tokens_at(at) - f64::from(grant))).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn a_take_keeps_the_hold_headroom() {
        let chain = [budget("s", None, 10.0, 100.0, 25.0)];
        let (grant, _) = take_from_chain(&chain, 100, Duration::from_secs(2), t0());
        assert_eq!(grant, 5, "25 tokens less 10/s × 2 s of headroom");
    }

    #[test]
    fn slow_start_caps_the_bucket_and_ramps_from_a_fraction() {
        let mut b = budget("s", None, 100.0, 500.0, 500.0);
        b.feedback(BudgetFeedback::SlowStart, t0());
        assert_eq!(b.tokens, 10.0);
        assert_eq!(b.effective_rate(t0()), 10.0);
        let later = t0() + chrono::Duration::seconds(2);
        assert_eq!(b.effective_rate(later), 20.0, "doubles per interval");
        let mut fast = b.clone();
        fast.ramp.start_fraction = 0.5;
        fast.feedback(BudgetFeedback::SlowStart, t0());
        assert_eq!(
            fast.effective_rate(t0()),
            50.0,
            "a scope's own ramp applies"
        );
    }

    #[test]
    fn a_throttle_halves_once_per_interval() {
        let mut b = budget("s", None, 100.0, 500.0, 0.0);
        b.feedback(BudgetFeedback::Throttled, t0());
        b.feedback(BudgetFeedback::Throttled, t0());
        assert_eq!(b.effective_rate(t0()), 50.0);
    }

    #[test]
    fn the_chain_of_a_scope_without_a_budget_is_the_root() {
        let all = [
            budget(ROOT_SCOPE, None, 1.0, 1.0, 0.0),
            budget("org", Some(ROOT_SCOPE), 1.0, 1.0, 0.0),
            budget("acct", Some("org"), 1.0, 1.0, 0.0),
            budget("loop-a", Some("loop-b"), 1.0, 1.0, 0.0),
            budget("loop-b", Some("loop-a"), 1.0, 1.0, 0.0),
        ];
        let get = |s: &str| all.iter().find(|b| b.scope == s);
        let names =
            |s: &str| chain(s, get).map(|c| c.iter().map(|b| b.scope.clone()).collect::<Vec<_>>());
        assert_eq!(
            names("acct"),
            Ok(vec!["acct".into(), "org".into(), "*".into()])
        );
        assert_eq!(names("unknown"), Ok(vec!["*".into()]));
        assert_eq!(names("*"), Ok(vec!["*".into()]));
        let cycle = chain("loop-a", get).unwrap_err();
        assert_eq!(cycle.at, "loop-a");
        assert_eq!(cycle.walked.len(), 2);
        let none = |_: &str| None::<&Budget>;
        assert_eq!(chain("x", none), Ok(vec![]));
    }
}
