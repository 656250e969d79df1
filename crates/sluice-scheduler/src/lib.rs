//! The scheduler's services: the elected [`Scheduler`] (one leader runs lease rescue, the
//! fairness rebalance, retention and the metrics pass), the lease rescuer, which returns tasks
//! whose worker stopped heartbeating to pending, and the [`Cleaner`] (retention). The provider guard every worker's calls pass is
//! the worker's own (`sluice_worker::ProviderGuard`).

mod cleaner;
mod leader;
pub mod metrics;
mod rescuer;

pub use cleaner::{CleanReport, Cleaner, CleanerConfig, ResultObject, ResultObjects};
pub use leader::{Scheduler, SchedulerConfig};
pub use rescuer::{Rescuer, RescuerConfig};
