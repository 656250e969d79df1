//! Sluice's domain: ids, the job and task state machines, the durable retry policy, the
//! token-bucket, budget and circuit-breaker maths, fair tags and leader election. Pure: no
//! I/O, no async runtime, no clock reads except through [`Clock`].

pub mod access;
pub mod breaker;
pub mod bucket;
pub mod budget;
pub mod clock;
pub mod election;
pub mod fair;
pub mod human;
pub mod hunt;
pub mod ids;
pub mod provider;
pub mod retry;
pub mod schedule;
pub mod secrets;
pub mod state;
pub mod webhook;

pub use access::{LakeAccess, PriorityCeiling, QuotaTarget, Quotas, Role, Rooms};
pub use breaker::{Breaker, BreakerConfig, BreakerOp, BreakerState};
pub use bucket::TokenBucket;
pub use budget::{Budget, BudgetFeedback, MAX_BUDGET_DEPTH, MAX_DRY, ROOT_SCOPE};
pub use clock::{Clock, ManualClock, SystemClock};
pub use election::Leadership;
pub use human::{error_line, human_bytes, human_duration};
pub use ids::{JobId, LeaseToken, TaskId};
pub use provider::{Adaptive, AdaptiveConfig, CallClass, CallGate, OpenGate, Permit, Refusal};
pub use retry::{RetryDecision, RetryPolicy};
pub use state::{EventKind, IllegalTransition, JobEvent, JobState, TaskEvent, TaskState};
pub use webhook::{DeliveryPolicy, WebhookRules, WebhookSecret};
