//! The scheduler: one leader at a time runs the passes that must not run everywhere at once —
//! lease rescue and the fairness rebalance (ADR 0006). Leadership is a lease row
//! (`leader_elect`) the leader renews every `ttl / 3`; standbys retry at the same pace and take
//! over within `ttl` of the leader's last renewal (a leader killed with SIGKILL included). A
//! leader that cannot renew stops acting before its lease ends, so two processes never act as
//! leader at once by their own clocks; the passes are guarded in the store anyway (rescues by
//! lease token, rebalances are re-tagging hints), so a late pass from a deposed leader is
//! harmless.

use crate::metrics;
use crate::{
    Cleaner, CleanerConfig, Notifier, NotifierConfig, Recurring, Rescuer, RescuerConfig,
    ResultObjects, ScheduleRunner,
};
use chrono::{DateTime, Utc};
use sluice_core::{Clock, TaskState};
use sluice_store::{JobFinishedParams, JobRebalanceParams, LeaderElectParams, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The role elected on (one leader per role).
    pub role: String,
    /// This process's id in the election (unique per process).
    pub holder: String,
    /// The leader's lease: a standby takes over at most this long after the leader's last
    /// renewal.
    pub ttl: Duration,
    pub rescue: RescuerConfig,
    /// How often the leader checks owners' strides (ADR 0006).
    pub rebalance_every: Duration,
    /// How often the leader reads the backlog, budgets, pauses and finished jobs into metrics.
    pub observe_every: Duration,
    /// Retention: how long finished jobs are kept, how often the leader removes them.
    pub clean: CleanerConfig,
    /// Webhooks: the secret they are signed with (none: no deliveries) and who may be called.
    pub notify: NotifierConfig,
    /// How often the leader looks for due recurring hunts.
    pub schedules_every: Duration,
}

impl SchedulerConfig {
    pub fn new(holder: impl Into<String>) -> Self {
        SchedulerConfig {
            role: "scheduler".into(),
            holder: holder.into(),
            ttl: Duration::from_secs(15),
            rescue: RescuerConfig::default(),
            rebalance_every: Duration::from_secs(2),
            observe_every: Duration::from_secs(5),
            clean: CleanerConfig::default(),
            notify: NotifierConfig::default(),
            schedules_every: Duration::from_secs(1),
        }
    }
}

#[derive(Debug)]
pub struct Scheduler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    cfg: SchedulerConfig,
    leading: Arc<AtomicBool>,
    results: Option<Arc<dyn ResultObjects>>,
    schedules: Option<Arc<dyn ScheduleRunner>>,
}

impl Scheduler {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, cfg: SchedulerConfig) -> Self {
        Scheduler {
            store,
            clock,
            cfg,
            leading: Arc::new(AtomicBool::new(false)),
            results: None,
            schedules: None,
        }
    }

    /// What makes recurring hunts' jobs (it plans hunts, which this crate cannot); without it
    /// this leader runs no schedules.
    pub fn with_schedules(mut self, runner: Arc<dyn ScheduleRunner>) -> Self {
        self.schedules = Some(runner);
        self
    }

    /// Where the jobs' result objects are, so retention removes them with their jobs and sweeps
    /// orphans (without it, only rows are removed).
    pub fn with_results(mut self, results: Arc<dyn ResultObjects>) -> Self {
        self.results = Some(results);
        self
    }

    /// True while this process is the leader (for status lines and tests).
    pub fn leading(&self) -> Arc<AtomicBool> {
        self.leading.clone()
    }

    /// Campaigns, and while leading runs the passes, until `stop` is cancelled; then resigns so
    /// a standby takes over at once. Errors are logged, never fatal.
    pub async fn run(self, stop: CancellationToken) {
        let tick = (self.cfg.ttl / 3)
            .min(self.cfg.rescue.every)
            .min(self.cfg.rebalance_every)
            .min(self.cfg.observe_every)
            .min(self.cfg.clean.every)
            .min(self.cfg.notify.every)
            .min(self.cfg.schedules_every)
            .max(Duration::from_millis(50));
        let rescuer = Rescuer::new(self.store.clone(), self.clock.clone(), self.cfg.rescue);
        let cleaner = Cleaner::new(
            self.store.clone(),
            self.results.clone(),
            self.cfg.clean.clone(),
        );
        let notifier = Notifier::new(self.store.clone(), self.cfg.notify.clone());
        let (mut last_clean, mut last_sweep) = (None, None);
        let mut clean: Option<tokio::task::JoinHandle<()>> = None;
        let mut last_notify = None;
        let mut notify: Option<tokio::task::JoinHandle<()>> = None;
        let recurring = self
            .schedules
            .clone()
            .map(|r| Recurring::new(self.store.clone(), r));
        let mut last_recur = None;
        let mut recur: Option<tokio::task::JoinHandle<()>> = None;
        // Until when this process may act as leader, by its own clock: its lease's length
        // measured from *before* the election round that granted it.
        let mut lead_until: Option<Instant> = None;
        let (mut last_renew, mut last_rescue, mut last_rebalance) = (None, None, None);
        let mut last_observe = None;
        // Jobs finished after this instant are still to be observed (time to answer).
        let mut finished_after: Option<DateTime<Utc>> = None;
        let due = |last: Option<Instant>, every: Duration| {
            last.is_none_or(|t: Instant| t.elapsed() >= every)
        };
        loop {
            if due(last_renew, self.cfg.ttl / 3) || lead_until.is_none() {
                let asked = Instant::now();
                match self.elect().await {
                    Ok(l) if l.is(&self.cfg.holder) => {
                        if lead_until.is_none() {
                            info!(
                                role = %l.name,
                                term = l.term,
                                retention = ?self.cfg.clean.retention,
                                "elected leader (retention: finished jobs kept this long, None: kept)"
                            );
                        }
                        lead_until = Some(asked + self.cfg.ttl);
                        last_renew = Some(asked);
                    }
                    Ok(l) => {
                        finished_after = None;
                        for h in [clean.take(), notify.take(), recur.take()]
                            .into_iter()
                            .flatten()
                        {
                            h.abort();
                        }
                        if lead_until.take().is_some() {
                            metrics::reset_leader_gauges();
                            warn!(role = %l.name, leader = %l.holder, term = l.term, "lost leadership");
                        }
                        last_renew = Some(asked);
                    }
                    Err(e) => warn!(error = %e, "leader election round failed"),
                }
            }
            // Stop acting a third of a lease before it could have ended unrenewed.
            if lead_until.is_some_and(|u| Instant::now() + self.cfg.ttl / 3 >= u) {
                warn!("leader lease not renewed in time: standing down");
                lead_until = None;
                for h in [clean.take(), notify.take(), recur.take()]
                    .into_iter()
                    .flatten()
                {
                    h.abort();
                }
                finished_after = None;
                metrics::reset_leader_gauges();
            }
            let leading = lead_until.is_some();
            self.leading.store(leading, Ordering::Relaxed);
            metrics::LEADER.set(i64::from(leading));
            if leading {
                if due(last_rescue, self.cfg.rescue.every) {
                    last_rescue = Some(Instant::now());
                    match rescuer.pass().await {
                        Ok(n) => metrics::RESCUED.inc_by(n as u64),
                        Err(e) => warn!(error = %e, "lease rescue pass failed"),
                    }
                }
                if due(last_rebalance, self.cfg.rebalance_every) {
                    last_rebalance = Some(Instant::now());
                    match self
                        .store
                        .job_rebalance(JobRebalanceParams { now: self.now() })
                        .await
                    {
                        Ok(0) => {}
                        Ok(n) => {
                            metrics::REBALANCED.inc_by(n as u64);
                            info!(jobs = n, "owners' jobs re-strided");
                        }
                        Err(e) => warn!(error = %e, "rebalance pass failed"),
                    }
                }
                // Retention and the sweep run in a task of their own, so a long pass never
                // holds up the lease renewal and the rescues; it stops with the leadership.
                if clean.as_ref().is_none_or(|h| h.is_finished())
                    && (due(last_clean, self.cfg.clean.every)
                        || due(last_sweep, self.cfg.clean.sweep_every))
                {
                    let sweep = last_sweep.is_some() && due(last_sweep, self.cfg.clean.sweep_every);
                    last_clean = Some(Instant::now());
                    if sweep || last_sweep.is_none() {
                        // The first sweep waits a full interval: a new leader does not list
                        // every result object at once.
                        last_sweep = Some(Instant::now());
                    }
                    let (cleaner, clock) = (cleaner.clone(), self.clock.clone());
                    clean = Some(tokio::spawn(async move {
                        if let Err(e) = cleaner.pass(clock.now()).await {
                            metrics::CLEANER_ERRORS.inc();
                            warn!(error = %e, "retention pass failed");
                        }
                        if sweep && let Err(e) = cleaner.sweep(clock.now()).await {
                            metrics::CLEANER_ERRORS.inc();
                            warn!(error = %e, "orphan result sweep failed");
                        }
                    }));
                }
                // Webhooks go out from a task of their own too: a slow receiver never holds up
                // the lease renewal, and a try cut short by a lost leadership is due again.
                if notifier.enabled()
                    && notify.as_ref().is_none_or(|h| h.is_finished())
                    && due(last_notify, self.cfg.notify.every)
                {
                    last_notify = Some(Instant::now());
                    let (notifier, clock) = (notifier.clone(), self.clock.clone());
                    notify = Some(tokio::spawn(async move {
                        if let Err(e) = notifier.pass(clock.now()).await {
                            warn!(error = %e, "webhook pass failed");
                        }
                    }));
                }
                // Recurring hunts plan their hunts (lake listing, SQL checks): off the loop too.
                if let Some(recurring) = &recurring
                    && recur.as_ref().is_none_or(|h| h.is_finished())
                    && due(last_recur, self.cfg.schedules_every)
                {
                    last_recur = Some(Instant::now());
                    let (recurring, clock) = (recurring.clone(), self.clock.clone());
                    recur = Some(tokio::spawn(async move {
                        if let Err(e) = recurring.pass(clock.now()).await {
                            warn!(error = %e, "recurring hunts pass failed");
                        }
                    }));
                }
                if due(last_observe, self.cfg.observe_every) {
                    last_observe = Some(Instant::now());
                    if let Err(e) = self.observe(&mut finished_after).await {
                        warn!(error = %e, "metrics pass failed");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
        }
        for h in [clean.take(), notify.take(), recur.take()]
            .into_iter()
            .flatten()
        {
            h.abort();
        }
        self.leading.store(false, Ordering::Relaxed);
        metrics::LEADER.set(0);
        metrics::reset_leader_gauges();
        if lead_until.is_some() {
            match self
                .store
                .leader_resign(&self.cfg.role, &self.cfg.holder, self.now())
                .await
            {
                Ok(_) => info!(role = %self.cfg.role, "resigned leadership"),
                Err(e) => {
                    warn!(error = %e, "resigning leadership failed; a standby takes over when the lease ends")
                }
            }
        }
    }

    /// Reads what the dashboard needs off the database: the backlog from the jobs' counters and
    /// the tasks' (by scope and state, folding the store's count deltas), budgets, pauses, and
    /// the jobs finished since the last pass (time to answer).
    async fn observe(
        &self,
        finished_after: &mut Option<DateTime<Utc>>,
    ) -> sluice_store::Result<()> {
        let now = self.now();
        metrics::OPEN_JOBS.reset();
        metrics::BACKLOG.reset();
        metrics::OLDEST_OPEN.reset();
        for b in self.store.job_backlog().await? {
            let p = b.priority.to_string();
            metrics::OPEN_JOBS.with_label_values(&[&p]).set(b.open_jobs);
            metrics::BACKLOG.with_label_values(&[&p]).set(b.open_tasks);
            let age = (now - b.oldest_created_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::OLDEST_OPEN.with_label_values(&[&p]).set(age);
            // The open jobs' time-to-answer series exist (at 0) before their first answer, so
            // a rate over them sees that answer.
            for outcome in ["succeeded", "partial", "failed", "cancelled"] {
                metrics::TIME_TO_ANSWER.with_label_values(&[&p, outcome]);
            }
        }
        // Read after the jobs' backlog: a job counted above has its tasks counted here.
        let tasks = self.store.task_backlog().await?;
        metrics::TASK_BACKLOG.reset();
        for c in &tasks.counts {
            if matches!(c.state, TaskState::Pending | TaskState::Running) {
                metrics::TASK_BACKLOG
                    .with_label_values(&[&c.scope, c.state.as_str()])
                    .set(c.tasks);
            }
        }
        let oldest = tasks.oldest_pending_at.map_or(0.0, |at| {
            (now - at).num_milliseconds().max(0) as f64 / 1000.0
        });
        metrics::OLDEST_PENDING
            .with_label_values::<&str>(&[])
            .set(oldest);
        for b in self.store.budget_list().await? {
            let rate = b.effective_rate(now);
            metrics::BUDGET_RATE
                .with_label_values(&[&b.scope])
                .set(b.rate);
            metrics::BUDGET_EFFECTIVE
                .with_label_values(&[&b.scope])
                .set(rate);
            metrics::BUDGET_TOKENS
                .with_label_values(&[&b.scope])
                .set(b.tokens_at(now));
        }
        metrics::PAUSES.set(self.store.pause_list().await?.len() as i64);
        // A finish commits a moment after the `finished_at` it records: look a few seconds
        // behind, and on taking over start a lease back (what the previous leader may have
        // missed; a job may then be observed by both, which a histogram tolerates).
        let until = now - chrono::Duration::seconds(5);
        let mut after = finished_after
            .unwrap_or(until - chrono::Duration::from_std(self.cfg.ttl).unwrap_or_default());
        loop {
            let page = self
                .store
                .job_finished(JobFinishedParams {
                    after,
                    until,
                    limit: 1000,
                })
                .await?;
            for j in &page {
                let secs = (j.finished_at - j.created_at).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::TIME_TO_ANSWER
                    .with_label_values(&[&j.priority.to_string(), j.state.as_str()])
                    .observe(secs);
            }
            match page.last() {
                Some(j) if page.len() == 1000 => after = j.finished_at,
                _ => break,
            }
        }
        *finished_after = Some(until);
        Ok(())
    }

    async fn elect(&self) -> sluice_store::Result<sluice_store::Leadership> {
        self.store
            .leader_elect(LeaderElectParams {
                name: self.cfg.role.clone(),
                holder: self.cfg.holder.clone(),
                ttl: self.cfg.ttl,
                now: self.now(),
            })
            .await
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
