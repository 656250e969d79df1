//! The scheduler's services: the provider guard (budgets and breakers on every provider call)
//! and the lease rescuer, which returns tasks whose worker stopped heartbeating to pending.

mod guard;
pub mod metrics;
mod rescuer;

pub use guard::{GuardConfig, ProviderGuard};
pub use rescuer::{Rescuer, RescuerConfig};
