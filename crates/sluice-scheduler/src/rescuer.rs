//! The lease rescuer: every pass returns expired leases to pending (one attempt spent) or fails
//! them when no attempts are left. The elected [`crate::Scheduler`] runs it on its leader; a
//! pass is safe anywhere anyway: the store guards each rescue by state and lease token and
//! skips rows another rescuer holds.

use sluice_core::Clock;
use sluice_store::{Store, TaskRescueParams};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

#[derive(Debug, Clone, Copy)]
pub struct RescuerConfig {
    pub every: Duration,
    /// Most tasks rescued per store call; a pass repeats calls until fewer come back.
    pub batch: u32,
}

impl Default for RescuerConfig {
    fn default() -> Self {
        RescuerConfig {
            every: Duration::from_secs(5),
            batch: 1_000,
        }
    }
}

#[derive(Debug)]
pub struct Rescuer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    cfg: RescuerConfig,
}

impl Rescuer {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, cfg: RescuerConfig) -> Self {
        Rescuer { store, clock, cfg }
    }

    /// One pass: rescues every lease expired by now. Returns how many tasks it moved.
    pub async fn pass(&self) -> Result<usize, sluice_store::StoreError> {
        let mut total = 0;
        loop {
            let got = self
                .store
                .task_rescue_expired(TaskRescueParams {
                    limit: self.cfg.batch,
                    now: self.clock.now(),
                })
                .await?;
            total += got.len();
            for t in &got {
                info!(task_id = %t.id, job_id = %t.job_id, to = %t.state, "lease expired: task rescued");
            }
            if got.len() < self.cfg.batch as usize {
                return Ok(total);
            }
        }
    }
}
