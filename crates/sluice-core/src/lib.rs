//! Sluice's domain: ids, the job and task state machines, the durable retry policy, and the
//! token-bucket and circuit-breaker maths. Pure: no I/O, no async runtime, no clock reads
//! except through [`Clock`].

pub mod breaker;
pub mod bucket;
pub mod clock;
pub mod human;
pub mod ids;
pub mod provider;
pub mod retry;
pub mod state;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use bucket::TokenBucket;
pub use clock::{Clock, ManualClock, SystemClock};
pub use human::{human_bytes, human_duration};
pub use ids::{JobId, LeaseToken, TaskId};
pub use provider::{Adaptive, AdaptiveConfig, CallClass, CallGate, OpenGate, Permit, Refusal};
pub use retry::{RetryDecision, RetryPolicy};
pub use state::{EventKind, IllegalTransition, JobEvent, JobState, TaskEvent, TaskState};
