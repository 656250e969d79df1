//! The scheduler's services: the elected [`Scheduler`] (one leader runs lease rescue, the
//! fairness rebalance, retention and the metrics pass), the lease rescuer, which returns tasks
//! whose worker stopped heartbeating to pending, the [`Cleaner`] (retention) and the
//! [`Notifier`] (webhooks) and [`Recurring`] (recurring hunts). The provider guard every worker's calls pass is
//! the worker's own (`sluice_worker::ProviderGuard`).

mod cleaner;
mod leader;
pub mod metrics;
mod notifier;
mod recurring;
mod rescuer;

pub use cleaner::{CleanReport, Cleaner, CleanerConfig, ResultObject, ResultObjects};
pub use leader::{Scheduler, SchedulerConfig};
pub use notifier::{Notifier, NotifierConfig};
pub use recurring::{Recurring, RunError, ScheduleRunner};
pub use rescuer::{Rescuer, RescuerConfig};
