//! The provider simulator: a real S3-protocol server (s3s over a local folder, one bucket per
//! sub-folder) in which every bucket belongs to an *account*, as in a cloud provider.
//!
//! In front of S3 it does what the provider did in the incident (MISSION.md): it enforces
//! request quotas per account and provider-wide (token buckets), answers `503 SlowDown` over
//! quota, and **freezes** an account that stays over quota too long — every request of that
//! account then gets `403 AccountProblem` until the freeze ends or an admin lifts it. It serves
//! an instance-metadata credential endpoint per account (`/acct/{account}/latest/…`, counted
//! against the account's quota like every other call), and STS `AssumeRole` at
//! `POST /sts/{caller}` (the query API: counted, throttled and frozen as the *calling*
//! account's calls; it answers with credentials of the role's account, checking the account's
//! `external_id` when it has one), and counts every request it receives,
//! per account per second, so tests check the budget from the provider's side.
//!
//! Admin endpoints (never counted or throttled), under `/_sim/`:
//! `GET counts`, `GET state`, `POST freeze/{account}?secs=N`, `POST unfreeze/{account}`,
//! `POST throttle/{account}?secs=N`, `POST latency?ms=N`, `POST drop/{account}?secs=N`.

mod config;
mod server;

pub use config::{AccountConfig, Quota, SimConfig};
pub use server::{Counts, Sim, SimHandle, SimState};

/// The access key the credential endpoint hands out for an account (and the one the S3 layer
/// accepts for it).
pub fn access_key(account: &str) -> String {
    format!("SIMAK{account}")
}

/// The secret key of `account`'s access key (the simulator's, well known: it guards nothing).
pub fn secret_key(account: &str) -> String {
    format!("sim-secret-{account}")
}
