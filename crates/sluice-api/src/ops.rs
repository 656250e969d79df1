//! Operator actions shared by the `/v1/admin` endpoints and the `sluice` CLI, so the two do the
//! same thing in the same order.

use sluice_store::{
    BreakerOp, BreakerRow, BreakerUpdateParams, HandBack, Pause, PauseSetParams, Result, Store,
    TaskHandBackParams,
};

/// Pauses a target; with `now`, then hands back its running tasks (no attempt spent). The
/// pause is in force first, so no new claim races the hand-back. Returns the pause and how
/// many tasks were handed back.
pub async fn pause(store: &dyn Store, p: PauseSetParams, now: bool) -> Result<(Pause, usize)> {
    let p = store.pause_set(p).await?;
    let handed_back = if now {
        store
            .task_hand_back(TaskHandBackParams {
                of: HandBack::Target(p.target.clone()),
                reason: format!("paused now: {}", p.reason),
                now: chrono::Utc::now(),
            })
            .await?
            .len()
    } else {
        0
    };
    Ok((p, handed_back))
}

/// Closes a scope's breaker now (slow start follows). `None`: the scope's breaker never
/// opened, so there is nothing to reset.
pub async fn breaker_reset(store: &dyn Store, scope: &str, by: &str) -> Result<Option<BreakerRow>> {
    if !store.breaker_list().await?.iter().any(|r| r.scope == scope) {
        return Ok(None);
    }
    let u = store
        .breaker_update(BreakerUpdateParams {
            scope: scope.to_string(),
            op: BreakerOp::Reset { by: by.to_string() },
            cfg: sluice_core::BreakerConfig::default(),
            now: chrono::Utc::now(),
        })
        .await?;
    Ok(Some(u.row))
}
