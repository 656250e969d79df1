//! The scheduler's services: the provider guard (budgets and breakers on every provider call),
//! the elected [`Scheduler`] (one leader runs lease rescue and the fairness rebalance), and the
//! lease rescuer, which returns tasks whose worker stopped heartbeating to pending.

mod guard;
mod leader;
pub mod metrics;
mod rescuer;

pub use guard::{GuardConfig, ProviderGuard};
pub use leader::{Scheduler, SchedulerConfig};
pub use rescuer::{Rescuer, RescuerConfig};
