//! The scheduler's services: the elected [`Scheduler`] (one leader runs lease rescue, the
//! fairness rebalance and the metrics pass) and the lease rescuer, which returns tasks whose
//! worker stopped heartbeating to pending. The provider guard every worker's calls pass is
//! the worker's own (`sluice_worker::ProviderGuard`).

mod leader;
pub mod metrics;
mod rescuer;

pub use leader::{Scheduler, SchedulerConfig};
pub use rescuer::{Rescuer, RescuerConfig};
