//! The per-scope circuit breaker: closed → open → half-open → closed. Throttling above a
//! threshold within a window opens it for a cooldown; an account-level freeze opens it at once
//! for a longer one; each reopening without a successful close in between doubles the cooldown
//! (up to a cap); half-open admits a single probe.

use crate::EventKind;
use crate::budget::BudgetFeedback;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BreakerConfig {
    /// Throttled answers within `window` that open the breaker.
    pub failure_threshold: u32,
    pub window: Duration,
    /// First cooldown after throttling.
    pub cooldown: Duration,
    /// First cooldown after an account freeze.
    pub frozen_cooldown: Duration,
    pub max_cooldown: Duration,
    /// A probe that has not reported by then is presumed lost and another is admitted.
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
            frozen_cooldown: Duration::from_secs(15 * 60),
            max_cooldown: Duration::from_secs(6 * 3600),
            probe_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Whether work of the scope may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Half-open: this caller carries the single probe.
    Probe,
    /// Not now; `until` is when the next probe may go (`None`: a probe is in flight).
    Rejected {
        until: Option<DateTime<Utc>>,
    },
}

/// Stored breaker state (one row per scope).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    pub state: BreakerState,
    pub failures: u32,
    pub window_start: DateTime<Utc>,
    pub opened_at: Option<DateTime<Utc>>,
    pub probe_after: Option<DateTime<Utc>>,
    pub probe_started_at: Option<DateTime<Utc>>,
    /// The cooldown of the last opening; the next opening before a close doubles it.
    pub last_cooldown: Option<Duration>,
    /// The last opening was an account freeze (not throttling).
    #[serde(default)]
    pub frozen: bool,
}

impl Breaker {
    pub fn closed(now: DateTime<Utc>) -> Self {
        Breaker {
            state: BreakerState::Closed,
            failures: 0,
            window_start: now,
            opened_at: None,
            probe_after: None,
            probe_started_at: None,
            last_cooldown: None,
            frozen: false,
        }
    }

    fn open(&mut self, now: DateTime<Utc>, first: Duration, cfg: &BreakerConfig) {
        let cooldown = match self.last_cooldown {
            Some(prev) => prev.saturating_mul(2).max(first),
            None => first,
        }
        .min(cfg.max_cooldown);
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.probe_after =
            Some(now + chrono::Duration::from_std(cooldown).unwrap_or(chrono::Duration::MAX));
        self.probe_started_at = None;
        self.last_cooldown = Some(cooldown);
        self.failures = 0;
        self.window_start = now;
    }

    /// May work of this scope go now? Moves open → half-open when the cooldown is over.
    pub fn admit(&mut self, now: DateTime<Utc>, cfg: &BreakerConfig) -> Admission {
        match self.state {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open => match self.probe_after {
                Some(at) if now < at => Admission::Rejected { until: Some(at) },
                _ => {
                    self.state = BreakerState::HalfOpen;
                    self.probe_started_at = Some(now);
                    Admission::Probe
                }
            },
            BreakerState::HalfOpen => {
                let lost = match self.probe_started_at {
                    None => true,
                    Some(started) => {
                        now < started
                            || (now - started)
                                .to_std()
                                .is_ok_and(|d| d >= cfg.probe_timeout)
                    }
                };
                if lost {
                    self.probe_started_at = Some(now);
                    Admission::Probe
                } else {
                    Admission::Rejected { until: None }
                }
            }
        }
    }

    /// A provider call of the scope succeeded. Closes a half-open breaker.
    pub fn on_success(&mut self, now: DateTime<Utc>) {
        if self.state == BreakerState::HalfOpen {
            *self = Breaker::closed(now);
        }
    }

    /// The provider throttled a call of the scope.
    pub fn on_throttle(&mut self, now: DateTime<Utc>, cfg: &BreakerConfig) {
        match self.state {
            BreakerState::HalfOpen => {
                self.open(now, cfg.cooldown, cfg);
                self.frozen = false;
            }
            BreakerState::Open => {}
            BreakerState::Closed => {
                let window =
                    chrono::Duration::from_std(cfg.window).unwrap_or(chrono::Duration::MAX);
                // A clock that went backwards, or a window that ran out, starts a new window.
                if now < self.window_start || now - self.window_start >= window {
                    self.window_start = now;
                    self.failures = 0;
                }
                self.failures = self.failures.saturating_add(1);
                if self.failures >= cfg.failure_threshold.max(1) {
                    self.open(now, cfg.cooldown, cfg);
                    self.frozen = false;
                }
            }
        }
    }

    /// The probe went out but no answer came (a connection error, or its caller gave up):
    /// back to open with the next probe due now, without growing the cooldown.
    pub fn on_probe_lost(&mut self, now: DateTime<Utc>) {
        if self.state == BreakerState::HalfOpen {
            self.state = BreakerState::Open;
            self.probe_after = Some(now);
            self.probe_started_at = None;
        }
    }

    /// The provider froze the account (403 account-level): open at once, long cooldown.
    pub fn on_frozen(&mut self, now: DateTime<Utc>, cfg: &BreakerConfig) {
        if self.state == BreakerState::Open {
            // Already open: a late answer from before the opening does not extend it.
            return;
        }
        self.open(now, cfg.frozen_cooldown, cfg);
        self.frozen = true;
    }
}

/// What happens to a breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakerOp {
    /// May a call go now? (open → half-open when the cooldown is over; one probe at a time)
    Admit,
    Success,
    Throttled,
    Frozen,
    /// The probe got no answer: another may go now.
    ProbeLost,
    /// An operator closes it (journaled with who).
    Reset {
        by: String,
    },
}

impl BreakerOp {
    /// Applies the op to `b`; the answer to [`BreakerOp::Admit`] (`Allowed` for the others).
    pub fn apply(&self, b: &mut Breaker, cfg: &BreakerConfig, now: DateTime<Utc>) -> Admission {
        match self {
            BreakerOp::Admit => return b.admit(now, cfg),
            BreakerOp::Success => b.on_success(now),
            BreakerOp::Throttled => b.on_throttle(now, cfg),
            BreakerOp::Frozen => b.on_frozen(now, cfg),
            BreakerOp::ProbeLost => b.on_probe_lost(now),
            BreakerOp::Reset { .. } => *b = Breaker::closed(now),
        }
        Admission::Allowed
    }

    /// The journal kind of this op moving a breaker `from` → `to`, when it changed or
    /// reported something.
    pub fn journal_kind(&self, from: BreakerState, to: BreakerState) -> Option<EventKind> {
        use BreakerState::*;
        match (self, from, to) {
            (BreakerOp::Reset { .. }, _, _) => Some(EventKind::BreakerReset),
            (_, a, b) if a == b => match self {
                BreakerOp::Throttled => Some(EventKind::ProviderThrottled),
                BreakerOp::Frozen => Some(EventKind::ProviderFrozen),
                _ => None,
            },
            (BreakerOp::ProbeLost, _, _) => Some(EventKind::BreakerProbeLost),
            (_, _, Open) => Some(EventKind::BreakerOpened),
            (_, _, HalfOpen) => Some(EventKind::BreakerHalfOpen),
            (_, _, Closed) => Some(EventKind::BreakerClosed),
        }
    }

    /// What this op does to the scope's budget: a close (or a reset) starts it slow, a
    /// throttle halves it.
    pub fn budget_feedback(&self, from: BreakerState, to: BreakerState) -> Option<BudgetFeedback> {
        let closing =
            to == BreakerState::Closed && (from != to || matches!(self, BreakerOp::Reset { .. }));
        if closing {
            Some(BudgetFeedback::SlowStart)
        } else if *self == BreakerOp::Throttled {
            Some(BudgetFeedback::Throttled)
        } else {
            None
        }
    }
}

impl Breaker {
    /// Until when the breaker holds its scope's tasks back from claims.
    pub fn hold_until(&self, cfg: &BreakerConfig) -> Option<DateTime<Utc>> {
        match self.state {
            BreakerState::Closed => None,
            BreakerState::Open => self.probe_after,
            BreakerState::HalfOpen => self.probe_started_at.map(|s| {
                s + chrono::Duration::from_std(cfg.probe_timeout).unwrap_or(chrono::Duration::MAX)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        crate::clock::test_time(s * 1000)
    }

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
            frozen_cooldown: Duration::from_secs(600),
            max_cooldown: Duration::from_secs(1000),
            probe_timeout: Duration::from_secs(60),
        }
    }

    #[derive(Debug)]
    enum Op {
        Throttle(i64),
        Frozen(i64),
        Success(i64),
        Admit(i64, Admission),
        Expect(BreakerState),
        Cooldown(u64),
    }

    fn check(ops: &[Op]) {
        let c = cfg();
        let mut b = Breaker::closed(t(0));
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::Throttle(at) => b.on_throttle(t(at), &c),
                Op::Frozen(at) => b.on_frozen(t(at), &c),
                Op::Success(at) => b.on_success(t(at)),
                Op::Admit(at, want) => assert_eq!(b.admit(t(at), &c), want, "op {i}: {op:?}"),
                Op::Expect(s) => assert_eq!(b.state, s, "op {i}"),
                Op::Cooldown(s) => {
                    assert_eq!(b.last_cooldown, Some(Duration::from_secs(s)), "op {i}")
                }
            }
        }
    }

    use Admission::*;
    use BreakerState::*;
    use Op::*;

    #[test]
    fn throttling_over_threshold_opens_then_probe_closes() {
        check(&[
            Throttle(1),
            Throttle(2),
            Expect(Closed),
            Admit(2, Allowed),
            Throttle(3),
            Expect(Open),
            Cooldown(30),
            Admit(10, Rejected { until: Some(t(33)) }),
            Admit(33, Probe),
            Expect(HalfOpen),
            Admit(34, Rejected { until: None }), // only one probe
            Success(35),
            Expect(Closed),
            Admit(35, Allowed),
        ]);
    }

    #[test]
    fn throttles_outside_the_window_do_not_add_up() {
        check(&[
            Throttle(0),
            Throttle(5),
            Throttle(11),
            Throttle(12),
            Expect(Closed),
            Throttle(13),
            Expect(Open),
        ]);
    }

    #[test]
    fn failed_probe_reopens_with_doubled_cooldown_up_to_cap() {
        check(&[
            Throttle(0),
            Throttle(0),
            Throttle(0),
            Cooldown(30),
            Admit(30, Probe),
            Throttle(31),
            Expect(Open),
            Cooldown(60),
            Admit(91, Probe),
            Throttle(91),
            Cooldown(120),
            Admit(211, Probe),
            Frozen(211),
            Cooldown(600), // frozen: at least the frozen cooldown
            Admit(811, Probe),
            Frozen(811),
            Cooldown(1000), // capped
            Admit(1811, Probe),
            Success(1812),
            Expect(Closed),
            Throttle(1813),
            Throttle(1813),
            Throttle(1813),
            Cooldown(30), // a close resets the growth
        ]);
    }

    #[test]
    fn freeze_opens_at_once_and_late_answers_do_not_extend() {
        check(&[
            Frozen(5),
            Expect(Open),
            Cooldown(600),
            Frozen(100),
            Throttle(100),
            Admit(
                604,
                Rejected {
                    until: Some(t(605)),
                },
            ),
            Admit(605, Probe),
        ]);
    }

    #[test]
    fn lost_probe_is_replaced_after_timeout_and_clock_backwards() {
        check(&[
            Frozen(0),
            Admit(600, Probe),
            Admit(659, Rejected { until: None }),
            Admit(660, Probe), // the first probe never reported
            Admit(100, Probe), // clock jumped back before the probe start: presume lost
            Success(101),
            Expect(Closed),
        ]);
    }

    #[test]
    fn success_while_closed_or_open_changes_nothing() {
        check(&[
            Success(0),
            Expect(Closed),
            Frozen(1),
            Success(2),
            Expect(Open),
        ]);
    }

    #[test]
    fn clock_backwards_starts_a_new_window() {
        check(&[
            Throttle(100),
            Throttle(101),
            Throttle(50),
            Expect(Closed),
            Throttle(51),
            Throttle(52),
            Expect(Open),
        ]);
    }

    #[test]
    fn ops_name_their_journal_kind_and_budget_feedback() {
        use BreakerState::*;
        let reset = BreakerOp::Reset { by: "op".into() };
        let cases = [
            (
                BreakerOp::Throttled,
                Closed,
                Closed,
                Some(EventKind::ProviderThrottled),
                Some(BudgetFeedback::Throttled),
            ),
            (
                BreakerOp::Throttled,
                Closed,
                Open,
                Some(EventKind::BreakerOpened),
                Some(BudgetFeedback::Throttled),
            ),
            (
                BreakerOp::Frozen,
                Open,
                Open,
                Some(EventKind::ProviderFrozen),
                None,
            ),
            (
                BreakerOp::Admit,
                Open,
                HalfOpen,
                Some(EventKind::BreakerHalfOpen),
                None,
            ),
            (BreakerOp::Admit, Closed, Closed, None, None),
            (
                BreakerOp::Success,
                HalfOpen,
                Closed,
                Some(EventKind::BreakerClosed),
                Some(BudgetFeedback::SlowStart),
            ),
            (BreakerOp::Success, Closed, Closed, None, None),
            (BreakerOp::ProbeLost, HalfOpen, HalfOpen, None, None),
            (
                BreakerOp::ProbeLost,
                HalfOpen,
                Open,
                Some(EventKind::BreakerProbeLost),
                None,
            ),
            (
                reset.clone(),
                Closed,
                Closed,
                Some(EventKind::BreakerReset),
                Some(BudgetFeedback::SlowStart),
            ),
            (
                reset,
                Open,
                Closed,
                Some(EventKind::BreakerReset),
                Some(BudgetFeedback::SlowStart),
            ),
        ];
        for (op, from, to, kind, feedback) in cases {
            assert_eq!(op.journal_kind(from, to), kind, "{op:?} {from:?}->{to:?}");
            assert_eq!(
                op.budget_feedback(from, to),
                feedback,
                "{op:?} {from:?}->{to:?}"
            );
        }
    }

    #[test]
    fn an_open_breaker_holds_until_its_probe_and_a_probe_until_its_timeout() {
        let cfg = BreakerConfig::default();
        let now = t(0);
        let mut b = Breaker::closed(now);
        assert_eq!(b.hold_until(&cfg), None);
        assert_eq!(
            BreakerOp::Frozen.apply(&mut b, &cfg, now),
            Admission::Allowed
        );
        assert_eq!(b.hold_until(&cfg), b.probe_after);
        let later = b.probe_after.unwrap();
        assert_eq!(
            BreakerOp::Admit.apply(&mut b, &cfg, later),
            Admission::Probe
        );
        let timeout = chrono::Duration::from_std(cfg.probe_timeout).unwrap();
        assert_eq!(b.hold_until(&cfg), Some(later + timeout));
    }
}
