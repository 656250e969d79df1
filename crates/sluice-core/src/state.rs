//! The job and task state machines. Every state change in Sluice goes through
//! [`TaskState::apply`] or [`JobState::apply`]; the store only persists what these allow.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A move the state machine does not allow, e.g. completing a task that is not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {event} from {from}")]
pub struct IllegalTransition {
    pub from: &'static str,
    pub event: &'static str,
}

impl IllegalTransition {
    pub(crate) fn new(from: &'static str, event: &'static str) -> IllegalTransition {
        IllegalTransition { from, event }
    }
}

macro_rules! str_enum {
    ($name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Where a task is. `pending` tasks are claimable once `run_after` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

str_enum!(TaskState {
    Pending => "pending",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
});

/// What the journal (`events.kind`) records: every kind written, named here only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    JobSubmitted,
    JobStarted,
    JobSucceeded,
    JobPartial,
    JobFailed,
    JobCancelled,
    JobRestrided,
    JobReprioritized,
    JobPurged,
    JobRerun,
    TaskClaimed,
    TaskSucceeded,
    TaskFailed,
    TaskRetried,
    TaskDeferred,
    TaskRescued,
    TaskRescuedFailed,
    TaskCancelled,
    TaskRerun,
    PauseSet,
    PauseCleared,
    QuotaSet,
    QuotaCleared,
    IntakeClosed,
    IntakeOpened,
    LeaderElected,
    LeaderResigned,
    BreakerOpened,
    BreakerHalfOpen,
    BreakerClosed,
    BreakerReset,
    BreakerProbeLost,
    ProviderThrottled,
    ProviderFrozen,
    WebhookDelivered,
    WebhookRetried,
    WebhookFailed,
    ScheduleFired,
    ScheduleSkipped,
    SchedulePaused,
    ScheduleResumed,
    ScheduleDeleted,
}

str_enum!(EventKind {
    JobSubmitted => "job.submitted",
    JobStarted => "job.started",
    JobSucceeded => "job.succeeded",
    JobPartial => "job.partial",
    JobFailed => "job.failed",
    JobCancelled => "job.cancelled",
    JobRestrided => "job.restrided",
    JobReprioritized => "job.reprioritized",
    JobPurged => "job.purged",
    JobRerun => "job.rerun",
    TaskClaimed => "task.claimed",
    TaskSucceeded => "task.succeeded",
    TaskFailed => "task.failed",
    TaskRetried => "task.retried",
    TaskDeferred => "task.deferred",
    TaskRescued => "task.rescued",
    TaskRescuedFailed => "task.rescued_failed",
    TaskCancelled => "task.cancelled",
    TaskRerun => "task.rerun",
    PauseSet => "pause.set",
    PauseCleared => "pause.cleared",
    QuotaSet => "quota.set",
    QuotaCleared => "quota.cleared",
    IntakeClosed => "intake.closed",
    IntakeOpened => "intake.opened",
    LeaderElected => "leader.elected",
    LeaderResigned => "leader.resigned",
    BreakerOpened => "breaker.opened",
    BreakerHalfOpen => "breaker.half_open",
    BreakerClosed => "breaker.closed",
    BreakerReset => "breaker.reset",
    BreakerProbeLost => "breaker.probe_lost",
    ProviderThrottled => "provider.throttled",
    ProviderFrozen => "provider.frozen",
    WebhookDelivered => "webhook.delivered",
    WebhookRetried => "webhook.retried",
    ScheduleFired => "schedule.fired",
    ScheduleSkipped => "schedule.skipped",
    SchedulePaused => "schedule.paused",
    ScheduleResumed => "schedule.resumed",
    ScheduleDeleted => "schedule.deleted",
    WebhookFailed => "webhook.failed",
});

impl EventKind {
    /// The entry of a job reaching `state`.
    pub fn of_job(state: JobState) -> EventKind {
        match state {
            JobState::Queued => EventKind::JobSubmitted,
            JobState::Running => EventKind::JobStarted,
            JobState::Succeeded => EventKind::JobSucceeded,
            JobState::Partial => EventKind::JobPartial,
            JobState::Failed => EventKind::JobFailed,
            JobState::Cancelled => EventKind::JobCancelled,
        }
    }
}

/// What can happen to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEvent {
    /// A worker took the lease.
    Claim,
    /// The worker finished it and recorded its result.
    Complete,
    /// A permanent failure, or a retryable one with no attempts left.
    Fail,
    /// A task-caused, retryable failure: back to pending, one attempt spent.
    Retry,
    /// Not the task's fault (provider throttled or frozen, breaker open, pause, worker shutting
    /// down): back to pending, no attempt spent.
    Defer,
    /// The lease ran out without a heartbeat (the worker died): back to pending, one attempt
    /// spent so that a task that kills its workers cannot loop forever.
    LeaseExpired,
    /// The lease ran out and no attempts are left.
    LeaseExpiredFinal,
    /// The job was cancelled.
    Cancel,
    /// Its ended job is run again for the lakes that failed or were cancelled: back to
    /// pending with fresh attempts.
    Rerun,
}

str_enum!(TaskEvent {
    Claim => "claim",
    Complete => "complete",
    Fail => "fail",
    Retry => "retry",
    Defer => "defer",
    LeaseExpired => "lease_expired",
    LeaseExpiredFinal => "lease_expired_final",
    Cancel => "cancel",
    Rerun => "rerun",
});

impl TaskEvent {
    /// Whether this event spends one of the task's attempts.
    pub fn spends_attempt(self) -> bool {
        matches!(
            self,
            TaskEvent::Retry
                | TaskEvent::Fail
                | TaskEvent::LeaseExpired
                | TaskEvent::LeaseExpiredFinal
        )
    }

    /// The journal entry of the event.
    pub fn journal_kind(self) -> EventKind {
        match self {
            TaskEvent::Claim => EventKind::TaskClaimed,
            TaskEvent::Complete => EventKind::TaskSucceeded,
            TaskEvent::Fail => EventKind::TaskFailed,
            TaskEvent::Retry => EventKind::TaskRetried,
            TaskEvent::Defer => EventKind::TaskDeferred,
            TaskEvent::LeaseExpired => EventKind::TaskRescued,
            TaskEvent::LeaseExpiredFinal => EventKind::TaskRescuedFailed,
            TaskEvent::Cancel => EventKind::TaskCancelled,
            TaskEvent::Rerun => EventKind::TaskRerun,
        }
    }
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }

    /// The one place that says which task moves are legal.
    pub fn apply(self, event: TaskEvent) -> Result<TaskState, IllegalTransition> {
        use TaskEvent as E;
        use TaskState as S;
        let next = match (self, event) {
            (S::Pending, E::Claim) => S::Running,
            (S::Running, E::Complete) => S::Succeeded,
            (S::Running, E::Fail) => S::Failed,
            (S::Running, E::Retry | E::Defer | E::LeaseExpired) => S::Pending,
            (S::Running, E::LeaseExpiredFinal) => S::Failed,
            (S::Pending | S::Running, E::Cancel) => S::Cancelled,
            (S::Failed | S::Cancelled, E::Rerun) => S::Pending,
            (from, event) => return Err(IllegalTransition::new(from.as_str(), event.as_str())),
        };
        Ok(next)
    }
}

/// Where a job is. "Paused" is not a stored state: it is computed from pauses and breakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    /// Finished, with some lakes failed and some succeeded.
    Partial,
    Failed,
    Cancelled,
}

str_enum!(JobState {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Partial => "partial",
    Failed => "failed",
    Cancelled => "cancelled",
});

/// What can happen to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobEvent {
    /// The first of its tasks was claimed.
    Start,
    /// Every task reached a terminal state; the outcome follows from the counts.
    Finish(JobOutcome),
    Cancel,
    /// An ended job with failed or cancelled lakes runs them again (`sluice retry`).
    Rerun,
}

/// How a job ended, from its task counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    Succeeded,
    Partial,
    Failed,
}

/// A job's progress counters, kept by the store as counters (never counted over tasks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobCounts {
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl JobCounts {
    /// Tasks that have not reached a terminal state.
    pub fn open(&self) -> i64 {
        self.total - self.done - self.failed - self.cancelled
    }

    /// The outcome once no task is open; `None` while some are.
    pub fn outcome(&self) -> Option<JobOutcome> {
        if self.open() > 0 {
            return None;
        }
        Some(if self.failed == 0 {
            JobOutcome::Succeeded
        } else if self.done == 0 {
            JobOutcome::Failed
        } else {
            JobOutcome::Partial
        })
    }
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    pub fn apply(self, event: JobEvent) -> Result<JobState, IllegalTransition> {
        use JobState as S;
        let next = match (self, event) {
            (S::Queued, JobEvent::Start) => S::Running,
            // A job with no tasks finishes straight from queued.
            (S::Queued | S::Running, JobEvent::Finish(o)) => match o {
                JobOutcome::Succeeded => S::Succeeded,
                JobOutcome::Partial => S::Partial,
                JobOutcome::Failed => S::Failed,
            },
            (S::Queued | S::Running, JobEvent::Cancel) => S::Cancelled,
            (S::Partial | S::Failed | S::Cancelled, JobEvent::Rerun) => S::Running,
            (from, event) => return Err(IllegalTransition::new(from.as_str(), event.name())),
        };
        Ok(next)
    }
}

impl JobEvent {
    pub fn name(self) -> &'static str {
        match self {
            JobEvent::Start => "start",
            JobEvent::Finish(_) => "finish",
            JobEvent::Cancel => "cancel",
            JobEvent::Rerun => "rerun",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_task(from: TaskState, event: TaskEvent, want: Option<TaskState>) {
        let got = from.apply(event).ok();
        assert_eq!(got, want, "{from} --{event}-->");
    }

    #[test]
    fn every_task_transition() {
        use TaskEvent as E;
        use TaskState as S;
        let legal: &[(S, E, S)] = &[
            (S::Pending, E::Claim, S::Running),
            (S::Running, E::Complete, S::Succeeded),
            (S::Running, E::Fail, S::Failed),
            (S::Running, E::Retry, S::Pending),
            (S::Running, E::Defer, S::Pending),
            (S::Running, E::LeaseExpired, S::Pending),
            (S::Running, E::LeaseExpiredFinal, S::Failed),
            (S::Pending, E::Cancel, S::Cancelled),
            (S::Running, E::Cancel, S::Cancelled),
            (S::Failed, E::Rerun, S::Pending),
            (S::Cancelled, E::Rerun, S::Pending),
        ];
        let events = E::ALL;
        // The full cross product: everything not listed as legal is rejected.
        for &from in S::ALL {
            for &event in events {
                check_task(from, event, legal_move(legal, from, event));
            }
        }
        for &s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
        assert_eq!(S::parse("paused"), None);
    }

    /// Where `event` takes `from` by the table of legal moves; `None`: nowhere (illegal).
    fn legal_move<S: Copy + PartialEq, E: PartialEq>(
        legal: &[(S, E, S)],
        from: S,
        event: E,
    ) -> Option<S> {
        legal
            .iter()
            .find(|(f, e, _)| *f == from && *e == event)
            .map(|t| t.2)
    }

    #[test]
    fn attempts_are_spent_only_for_task_caused_failures() {
        use TaskEvent as E;
        let cases = [
            (E::Claim, false),
            (E::Complete, false),
            (E::Fail, true),
            (E::Retry, true),
            (E::Defer, false),
            (E::LeaseExpired, true),
            (E::LeaseExpiredFinal, true),
            (E::Cancel, false),
            (E::Rerun, false),
        ];
        assert_eq!(cases.len(), E::ALL.len(), "every event has a case");
        for (event, spends) in cases {
            assert_eq!(event.spends_attempt(), spends, "{event}");
        }
    }

    #[test]
    fn every_job_transition() {
        use JobEvent as E;
        use JobState as S;
        let events = [
            E::Start,
            E::Finish(JobOutcome::Succeeded),
            E::Finish(JobOutcome::Partial),
            E::Finish(JobOutcome::Failed),
            E::Cancel,
            E::Rerun,
        ];
        let legal: &[(S, E, S)] = &[
            (S::Queued, E::Start, S::Running),
            (S::Queued, E::Finish(JobOutcome::Succeeded), S::Succeeded),
            (S::Queued, E::Finish(JobOutcome::Partial), S::Partial),
            (S::Queued, E::Finish(JobOutcome::Failed), S::Failed),
            (S::Running, E::Finish(JobOutcome::Succeeded), S::Succeeded),
            (S::Running, E::Finish(JobOutcome::Partial), S::Partial),
            (S::Running, E::Finish(JobOutcome::Failed), S::Failed),
            (S::Queued, E::Cancel, S::Cancelled),
            (S::Running, E::Cancel, S::Cancelled),
            (S::Partial, E::Rerun, S::Running),
            (S::Failed, E::Rerun, S::Running),
            (S::Cancelled, E::Rerun, S::Running),
        ];
        for &from in S::ALL {
            for &event in &events {
                let want = legal_move(legal, from, event);
                assert_eq!(from.apply(event).ok(), want, "{from} --{event:?}-->");
            }
        }
    }

    #[test]
    fn job_outcome_from_counts() {
        let c = |total, done, failed, cancelled| JobCounts {
            total,
            done,
            failed,
            cancelled,
        };
        let cases = [
            (c(0, 0, 0, 0), Some(JobOutcome::Succeeded)),
            (c(3, 2, 0, 0), None),
            (c(3, 3, 0, 0), Some(JobOutcome::Succeeded)),
            (c(3, 2, 1, 0), Some(JobOutcome::Partial)),
            (c(3, 0, 3, 0), Some(JobOutcome::Failed)),
            (c(3, 0, 2, 0), None),
        ];
        for (counts, want) in cases {
            assert_eq!(counts.outcome(), want, "{counts:?}");
        }
    }
}

impl TaskEvent {
    /// What a lease expiry means for a task that has spent `attempt` attempts of `max` and
    /// crashed a hunt runner `crashes` times: the lost run counts as one, and the last one
    /// fails the task. A task that crashed a runner before and now lost its worker too is a
    /// poison pill: it fails rather than go to a third process.
    pub fn on_lease_expiry(attempt: i32, max_attempts: i32, crashes: i32) -> TaskEvent {
        if crashes > 0 || attempt.saturating_add(1) >= max_attempts {
            TaskEvent::LeaseExpiredFinal
        } else {
            TaskEvent::LeaseExpired
        }
    }
}

#[cfg(test)]
mod expiry_tests {
    use super::*;

    #[test]
    fn lease_expiry_spends_an_attempt_and_the_last_one_fails() {
        let cases = [
            (0, 3, 0, TaskEvent::LeaseExpired),
            (1, 3, 0, TaskEvent::LeaseExpired),
            (2, 3, 0, TaskEvent::LeaseExpiredFinal),
            (5, 3, 0, TaskEvent::LeaseExpiredFinal),
            (0, 1, 0, TaskEvent::LeaseExpiredFinal),
            (i32::MAX, i32::MAX, 0, TaskEvent::LeaseExpiredFinal),
            // Crashed a runner, then its worker went: no third process.
            (1, 20, 1, TaskEvent::LeaseExpiredFinal),
        ];
        for (attempt, max, crashes, want) in cases {
            assert_eq!(
                TaskEvent::on_lease_expiry(attempt, max, crashes),
                want,
                "{attempt}/{max} crashes {crashes}"
            );
        }
    }
}
