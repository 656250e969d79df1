//! The scheduler's services. So far: the lease rescuer, which returns tasks whose worker
//! stopped heartbeating to pending. The release loop (budgets, breakers, pauses, fairness) and
//! leader election come with the provider guard.

mod rescuer;

pub use rescuer::{Rescuer, RescuerConfig};
