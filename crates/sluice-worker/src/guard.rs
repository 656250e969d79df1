//! The provider guard: the [`CallGate`] every provider HTTP attempt of this process passes.
//!
//! - **Budget**: a call spends one token of its scope and every ancestor. Tokens are leased
//!   from the database in small batches (one round trip per batch, not per call) and held at
//!   most `hold`; what is left then is forfeited, never returned — so with many workers on
//!   many machines calls stay within `burst + rate × T` per scope over any window T (the
//!   store keeps `rate × hold` tokens of headroom for exactly this).
//! - **Breakers**: every process reads the shared breaker rows (refreshed every
//!   `breaker_refresh`); an open breaker refuses at once, without a database round trip;
//!   after the cooldown the database hands out a single probe. Answers are reported back:
//!   throttling and freezes move the shared breaker and cut the scope's adaptive rate.
//!
//! A database that cannot be reached refuses calls (`Unavailable`): nothing goes unmetered.

use crate::metrics;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::breaker::Admission;
use sluice_core::{
    Breaker, BreakerConfig, BreakerState, CallClass, CallGate, Clock, Permit, Refusal,
};
use sluice_store::{BreakerOp, BreakerUpdateParams, BudgetTakeParams, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct GuardConfig {
    pub breaker: BreakerConfig,
    /// How long leased tokens may be held before they are forfeited.
    pub hold: Duration,
    /// The largest batch of tokens leased at once.
    pub max_batch: u32,
    /// How long a call waits for a token before the task is deferred.
    pub max_wait: Duration,
    /// How stale this process's view of the breakers may be.
    pub breaker_refresh: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            breaker: BreakerConfig::default(),
            hold: Duration::from_millis(250),
            max_batch: 16,
            max_wait: Duration::from_secs(10),
            breaker_refresh: Duration::from_secs(1),
        }
    }
}

/// Tokens of one scope leased by this process.
#[derive(Debug)]
struct Lease {
    tokens: u32,
    expires: Instant,
    batch: u32,
}

#[derive(Debug, Default)]
struct Breakers {
    fetched: Option<Instant>,
    by_scope: HashMap<String, Breaker>,
}

#[derive(Debug)]
pub struct ProviderGuard {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    cfg: GuardConfig,
    leases: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Lease>>>>,
    breakers: Mutex<Breakers>,
    refresh: tokio::sync::Mutex<()>,
}

impl ProviderGuard {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, cfg: GuardConfig) -> Self {
        metrics::init_provider();
        ProviderGuard {
            store,
            clock,
            cfg,
            leases: Mutex::new(HashMap::new()),
            breakers: Mutex::new(Breakers::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn cached_breaker(&self, scope: &str) -> Option<Breaker> {
        let b = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        b.by_scope.get(scope).copied()
    }

    fn remember(&self, scope: &str, b: Breaker) {
        let mut all = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        all.by_scope.insert(scope.to_string(), b);
    }

    /// Re-reads every breaker when this process's view is older than `breaker_refresh`.
    async fn refresh_breakers(&self) -> Result<(), Refusal> {
        let stale = |b: &Breakers| {
            b.fetched
                .is_none_or(|f| f.elapsed() >= self.cfg.breaker_refresh)
        };
        if !stale(&self.breakers.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let _one = self.refresh.lock().await;
        if !stale(&self.breakers.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let rows = self
            .store
            .breaker_list()
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let mut b = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        b.by_scope = rows.into_iter().map(|r| (r.scope, r.breaker)).collect();
        b.fetched = Some(Instant::now());
        for (scope, br) in &b.by_scope {
            metrics::BREAKER_STATE
                .with_label_values(&[scope])
                .set(match br.state {
                    BreakerState::Closed => 0,
                    BreakerState::HalfOpen => 1,
                    BreakerState::Open => 2,
                });
        }
        Ok(())
    }

    async fn update(&self, scope: &str, op: BreakerOp) -> Result<Admission, Refusal> {
        let u = self
            .store
            .breaker_update(BreakerUpdateParams {
                scope: scope.to_string(),
                op,
                cfg: self.cfg.breaker,
                now: self.now(),
            })
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        if let Some(from) = u.changed_from {
            tracing::warn!(scope, from = from.as_str(), to = u.row.breaker.state.as_str(),
                probe_after = ?u.row.breaker.probe_after, "provider breaker changed");
        }
        self.remember(scope, u.row.breaker);
        Ok(u.admission)
    }

    /// The breaker's word on a call of `scope`: go, go as the probe, or not now.
    async fn check_breaker(&self, scope: &str) -> Result<bool, Refusal> {
        self.refresh_breakers().await?;
        let Some(b) = self.cached_breaker(scope) else {
            return Ok(false);
        };
        let now = self.now();
        match b.state {
            BreakerState::Closed => Ok(false),
            BreakerState::Open if b.probe_after.is_some_and(|at| now < at) => {
                Err(Refusal::BreakerOpen {
                    scope: scope.to_string(),
                    until: b.probe_after,
                })
            }
            // Cooldown over, or half-open: the database decides who carries the probe.
            _ => match self.update(scope, BreakerOp::Admit).await? {
                Admission::Allowed => Ok(false),
                Admission::Probe => Ok(true),
                Admission::Rejected { until } => Err(Refusal::BreakerOpen {
                    scope: scope.to_string(),
                    until,
                }),
            },
        }
    }

    fn lease_of(&self, scope: &str) -> Arc<tokio::sync::Mutex<Lease>> {
        let mut all = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(scope.to_string())
            .or_insert_with(|| {
                metrics::init_scope(scope);
                Arc::new(tokio::sync::Mutex::new(Lease {
                    tokens: 0,
                    expires: Instant::now(),
                    batch: 1,
                }))
            })
            .clone()
    }

    /// One token of `scope`, from this process's lease or a new batch from the database.
    async fn token(&self, scope: &str) -> Result<(), Refusal> {
        let lease = self.lease_of(scope);
        let mut l = lease.lock().await;
        if l.tokens > 0 && Instant::now() < l.expires {
            l.tokens -= 1;
            return Ok(());
        }
        // Batch size follows use: a lease used up doubles the next batch, one that expired
        // with tokens left (forfeited) halves it.
        if l.tokens > 0 {
            metrics::TOKENS_FORFEITED
                .with_label_values(&[scope])
                .inc_by(u64::from(l.tokens));
            l.batch = (l.batch / 2).max(1);
        } else {
            l.batch = (l.batch * 2).min(self.cfg.max_batch.max(1));
        }
        l.tokens = 0;
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let asked = Instant::now();
            let grant = self
                .store
                .budget_take(BudgetTakeParams {
                    scope: scope.to_string(),
                    n: l.batch,
                    hold: self.cfg.hold,
                    now: self.now(),
                })
                .await
                .map_err(|e| Refusal::Unavailable(e.to_string()))?;
            if grant > 0 {
                l.tokens = grant - 1;
                l.expires = asked + self.cfg.hold;
                metrics::BUDGET_WAIT.observe(started.elapsed().as_secs_f64());
                return Ok(());
            }
            if started.elapsed() >= self.cfg.max_wait {
                metrics::BUDGET_WAIT.observe(started.elapsed().as_secs_f64());
                return Err(Refusal::Budget {
                    scope: scope.to_string(),
                    waited: started.elapsed(),
                });
            }
            // Waiting for tokens to accrue: short sleeps, jittered so processes interleave.
            let jitter = Duration::from_micros(rand::random_range(0..=pause.as_micros() as u64));
            tokio::time::sleep(pause + jitter).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

#[async_trait]
impl CallGate for ProviderGuard {
    async fn admit(&self, scope: &str) -> Result<Permit, Refusal> {
        let r = async {
            let probe = self.check_breaker(scope).await?;
            if let Err(e) = self.token(scope).await {
                if probe {
                    // The probe will not go: let another take it now.
                    let _ = self.update(scope, BreakerOp::ProbeLost).await;
                }
                return Err(e);
            }
            Ok(Permit { probe })
        }
        .await;
        if let Err(e) = &r {
            let reason = match e {
                Refusal::BreakerOpen { .. } => "breaker_open",
                Refusal::Budget { .. } => "budget",
                Refusal::Unavailable(_) => "unavailable",
            };
            metrics::REFUSALS.with_label_values(&[scope, reason]).inc();
        }
        r
    }

    async fn report(&self, scope: &str, permit: Permit, class: CallClass) {
        metrics::CALLS
            .with_label_values(&[scope, class.as_str()])
            .inc();
        let op = match class {
            CallClass::Throttled => Some(BreakerOp::Throttled),
            CallClass::Frozen => Some(BreakerOp::Frozen),
            // The provider answered the probe: the account works again.
            CallClass::Ok | CallClass::Permanent if permit.probe => Some(BreakerOp::Success),
            // No answer to the probe: let another go rather than wait for its timeout.
            CallClass::Transient if permit.probe => Some(BreakerOp::ProbeLost),
            _ => None,
        };
        if let Some(op) = op
            && let Err(e) = self.update(scope, op).await
        {
            tracing::warn!(scope, error = %e, "could not record a provider answer");
        }
    }
}
