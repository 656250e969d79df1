//! The worker: claim → heartbeat → run → finish, with fencing tokens.
//!
//! Three loops share one in-flight table: the *claimer* takes batches of tasks while slots are
//! free and spawns each run; the *finisher* records outcomes in batches (one store round trip
//! for many tasks); the *heartbeater* extends the leases of everything in flight and stops the
//! runs whose lease was lost. A lease stays in the table until its outcome is recorded, so it
//! keeps being extended while the database is briefly unreachable.
//!
//! Shutdown (SIGTERM): stop claiming, let runs finish until the grace deadline, then cancel the
//! rest and hand them back as *deferred* (no attempt spent); flush every outcome; exit with
//! nothing of ours left `running`.

mod guard;
pub mod metrics;
mod runner;

pub use guard::{GuardConfig, ProviderGuard};
pub use runner::{BuiltinRunner, BuiltinSpec, Member, RunError, RunOutput, Runner, run_builtin};

use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use sluice_core::{Clock, RetryDecision, RetryPolicy};
use sluice_store::{
    ClaimedTask, HandBack, Lease, Store, TaskClaimParams, TaskFinish, TaskFinishParams,
    TaskHandBackParams, TaskHeartbeatParams, TaskOutcome,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Shown as the lease owner and in the journal.
    pub id: String,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Slots beyond `concurrency` for owners running fewer than this many tasks here: while
    /// one owner's sweep holds every slot, another owner's small hunt still starts at once.
    pub spare: usize,
    /// Most tasks taken by one claim.
    pub claim_batch: u32,
    pub lease: Duration,
    pub heartbeat_every: Duration,
    /// Wait before claiming again when nothing was runnable.
    pub idle_poll: Duration,
    /// Most outcomes recorded by one store call.
    pub finish_batch: usize,
    /// On shutdown, how long running tasks may take before they are handed back.
    pub shutdown_grace: Duration,
    /// On shutdown, how long to keep trying to record outcomes (the database may be down);
    /// what is still unrecorded then is rescued when its lease expires.
    pub flush_timeout: Duration,
    /// Backoff for task-caused retries; `max_attempts` comes from each task.
    pub retry: RetryPolicy,
    /// Most tasks of one lake run together in one slot (a shared scan, ADR 0014): a claim
    /// takes along up to this many less one of each lake it claims. `1`: no sharing.
    pub share: u32,
}

impl WorkerConfig {
    pub fn new(id: impl Into<String>) -> Self {
        WorkerConfig {
            id: id.into(),
            concurrency: 16,
            spare: 2,
            claim_batch: 64,
            lease: Duration::from_secs(30),
            heartbeat_every: Duration::from_secs(10),
            idle_poll: Duration::from_millis(500),
            finish_batch: 512,
            shutdown_grace: Duration::from_secs(20),
            flush_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            share: 1,
        }
    }
}

/// Most tasks of one lake a run answers together, by default (ADR 0014).
pub const DEFAULT_SHARE: u32 = 64;

/// A default worker id: host, pid and a random suffix, unique across restarts.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// What a worker did, returned when it stops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStats {
    pub claimed: u64,
    pub recorded: u64,
    /// Outcomes the store refused: the lease had been lost (rescued, cancelled).
    pub rejected: u64,
    /// Tasks handed back on shutdown.
    pub handed_back: u64,
}

#[derive(Debug, Default)]
struct Shared {
    /// Leases in flight (running or waiting to be recorded) and how to stop their run.
    inflight: Mutex<HashMap<Lease, CancellationToken>>,
    stats: Mutex<WorkerStats>,
    /// Tasks whose run has not returned (a shared run holds several).
    running: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn leases(&self) -> Vec<Lease> {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

#[derive(Debug)]
pub struct Worker {
    store: Arc<dyn Store>,
    runner: Arc<dyn Runner>,
    clock: Arc<dyn Clock>,
    cfg: WorkerConfig,
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        runner: Arc<dyn Runner>,
        clock: Arc<dyn Clock>,
        cfg: WorkerConfig,
    ) -> Self {
        Worker {
            store,
            runner,
            clock,
            cfg,
        }
    }

    /// Runs until `shutdown` is cancelled, then drains as described in the module docs.
    pub async fn run(self, shutdown: CancellationToken) -> WorkerStats {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::unbounded_channel::<TaskFinish>();
        // Cancelled when the grace period is over: in-flight runs are then handed back.
        let hard_stop = CancellationToken::new();
        let finisher = tokio::spawn(finish_loop(
            self.store.clone(),
            self.clock.clone(),
            shared.clone(),
            rx,
            self.cfg.finish_batch,
        ));
        let beats = CancellationToken::new();
        let heartbeater = tokio::spawn(heartbeat_loop(
            self.store.clone(),
            self.clock.clone(),
            shared.clone(),
            self.cfg.lease,
            self.cfg.heartbeat_every,
            beats.clone(),
        ));
        info!(worker = %self.cfg.id, concurrency = self.cfg.concurrency, "worker started");
        metrics::init();
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        // Spare slots take only tasks of owners running fewer than `spare` tasks here. They
        // are tried while the regular slots are full, and after a miss again once a job is
        // submitted (or an idle poll passes).
        let spare = Arc::new(Semaphore::new(self.cfg.spare));
        let mut spare_armed = self.cfg.spare > 0;
        let owners = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        metrics::SLOTS.add((self.cfg.concurrency.max(1) + self.cfg.spare) as i64);
        let mut runs = tokio::task::JoinSet::new();
        let mut backoff = store_backoff();
        // Set when a claim failed: it may have committed with its reply lost, leaving tasks
        // leased to us that we never heard of. They are handed back before the next claim.
        let mut uncertain = false;
        'claim: loop {
            let (first, spare_claim) = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'claim,
                p = slots.clone().acquire_owned() => match p { Ok(p) => (p, false), Err(_) => break 'claim },
                p = spare.clone().acquire_owned(), if spare_armed => match p { Ok(p) => (p, true), Err(_) => break 'claim },
                _ = self.store.task_wait(self.cfg.idle_poll), if !spare_armed && self.cfg.spare > 0 => {
                    spare_armed = true;
                    continue 'claim;
                }
            };
            if uncertain {
                match self
                    .hand_back(&shared, "claim reply lost: handed back")
                    .await
                {
                    Ok(()) => uncertain = false,
                    Err(wait) => {
                        drop(first);
                        tokio::select! {
                            _ = shutdown.cancelled() => break 'claim,
                            _ = tokio::time::sleep(wait) => continue 'claim,
                        }
                    }
                }
            }
            let mut permits = vec![first];
            let from = if spare_claim { &spare } else { &slots };
            while permits.len() < self.cfg.claim_batch.max(1) as usize {
                match from.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let skip_owners = if spare_claim {
                let owners = owners.lock().unwrap_or_else(|p| p.into_inner());
                owners
                    .iter()
                    .filter(|(_, n)| **n >= self.cfg.spare)
                    .map(|(o, _)| o.clone())
                    .collect()
            } else {
                Vec::new()
            };
            let timer = metrics::CLAIM_SECONDS.start_timer();
            let claimed = self
                .store
                .task_claim(TaskClaimParams {
                    worker: self.cfg.id.clone(),
                    limit: permits.len() as u32,
                    lease: self.cfg.lease,
                    now: self.clock.now(),
                    skip_owners,
                    // A spare slot is for an owner not running their share here: it takes
                    // that one task, not others along with it.
                    share: if spare_claim {
                        0
                    } else {
                        self.cfg.share.saturating_sub(1)
                    },
                    prefer_scopes: self.runner.held_scopes(),
                })
                .await;
            timer.observe_duration();
            let claimed = match claimed {
                Ok(c) => {
                    backoff = store_backoff();
                    metrics::CLAIMED.inc_by(c.len() as u64);
                    c
                }
                Err(e) => {
                    metrics::STORE_ERRORS.with_label_values(&["claim"]).inc();
                    uncertain = true;
                    let wait = backoff.next().unwrap_or(Duration::from_secs(5));
                    warn!(error = %e, retry_in = ?wait, "claim failed");
                    drop(permits);
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'claim,
                        _ = tokio::time::sleep(wait) => continue 'claim,
                    }
                }
            };
            let idle = claimed.is_empty();
            if spare_claim {
                metrics::SPARE_CLAIMED.inc_by(claimed.len() as u64);
                spare_armed = !idle;
            }
            shared
                .stats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .claimed += claimed.len() as u64;
            for group in by_lake(claimed, self.cfg.share.max(1) as usize) {
                let Some(permit) = permits.pop() else {
                    // More runs than slots would be a store bug; hand them back untouched.
                    for task in group {
                        let _ = tx.send(TaskFinish {
                            lease: task.lease,
                            outcome: defer_now(&self.clock, "worker over capacity"),
                        });
                    }
                    continue;
                };
                metrics::SHARED.inc_by(group.len().saturating_sub(1) as u64);
                shared
                    .running
                    .fetch_add(group.len(), std::sync::atomic::Ordering::Relaxed);
                let members: Vec<Member> = group
                    .into_iter()
                    .map(|task| Member {
                        task,
                        cancel: hard_stop.child_token(),
                    })
                    .collect();
                {
                    let mut inflight = shared.inflight.lock().unwrap_or_else(|p| p.into_inner());
                    let mut owners = owners.lock().unwrap_or_else(|p| p.into_inner());
                    for m in &members {
                        inflight.insert(m.task.lease, m.cancel.clone());
                        *owners.entry(m.task.owner.clone()).or_default() += 1;
                    }
                }
                let (runner, clock, retry, tx, owners, running) = (
                    self.runner.clone(),
                    self.clock.clone(),
                    self.cfg.retry,
                    tx.clone(),
                    owners.clone(),
                    shared.clone(),
                );
                metrics::SLOTS_BUSY.inc();
                // Every log line of the run (engine and provider guard included) carries the
                // task's ids; a shared run's, its first task's and how many run with it.
                let first = &members[0].task;
                let span = tracing::info_span!("task", job = %first.job_id, task = %first.id(),
                    lake = %first.lake, scope = %first.scope, attempt = first.attempt,
                    shared = members.len() - 1);
                runs.spawn(
                    async move {
                        let started = std::time::Instant::now();
                        let results = match &members[..] {
                            [one] => vec![runner.run(&one.task, one.cancel.clone()).await],
                            many => runner.run_shared(many).await,
                        };
                        drop(permit);
                        running
                            .running
                            .fetch_sub(members.len(), std::sync::atomic::Ordering::Relaxed);
                        metrics::SLOTS_BUSY.dec();
                        let secs = started.elapsed().as_secs_f64();
                        let mut results = results.into_iter();
                        for m in &members {
                            let task = &m.task;
                            {
                                let mut owners = owners.lock().unwrap_or_else(|p| p.into_inner());
                                if let Some(n) = owners.get_mut(&task.owner) {
                                    *n -= 1;
                                    if *n == 0 {
                                        owners.remove(&task.owner);
                                    }
                                }
                            }
                            let outcome = match results.next() {
                                Some(result) => {
                                    outcome_of(task, result, clock.now(), retry, rand::random())
                                }
                                // A runner that answered fewer tasks than it ran: not theirs.
                                None => defer_now(&clock, "no outcome from the run"),
                            };
                            let label = metrics::outcome_label(&outcome);
                            metrics::TASK_SECONDS
                                .with_label_values(&[label])
                                .observe(secs);
                            match &outcome {
                                TaskOutcome::Succeeded { rows, .. } => {
                                    debug!(task = %task.id(), outcome = label, rows, secs, "task finished")
                                }
                                TaskOutcome::Failed { error }
                                | TaskOutcome::Retry { error, .. }
                                | TaskOutcome::Crashed { error, .. } => {
                                    warn!(task = %task.id(), outcome = label, error, secs, "task finished")
                                }
                                TaskOutcome::Defer { reason, run_after } => {
                                    info!(task = %task.id(), outcome = label, reason, %run_after, secs, "task finished")
                                }
                            }
                            let _ = tx.send(TaskFinish {
                                lease: task.lease,
                                outcome,
                            });
                        }
                    }
                    .instrument(span),
                );
            }
            drop(permits);
            // Reap finished runs so the set does not grow.
            while runs.try_join_next().is_some() {}
            if idle && !spare_claim {
                // Woken early when a job is submitted; the poll is the safety net.
                tokio::select! {
                    _ = shutdown.cancelled() => break 'claim,
                    _ = self.store.task_wait(self.cfg.idle_poll) => {}
                }
            }
        }
        let running = runs.len();
        info!(worker = %self.cfg.id, running, grace = ?self.cfg.shutdown_grace, "worker stopping: no new claims");
        let drained = tokio::time::timeout(self.cfg.shutdown_grace, async {
            while runs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            let left = shared.running.load(std::sync::atomic::Ordering::Relaxed);
            info!(worker = %self.cfg.id, tasks = left, "grace period over: handing back running tasks");
            shared
                .stats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .handed_back += left as u64;
            metrics::HANDED_BACK.inc_by(left as u64);
            hard_stop.cancel();
            while runs.join_next().await.is_some() {}
        }
        drop(tx);
        // The finisher ends once every outcome is recorded (the channel is closed and empty).
        let abort = finisher.abort_handle();
        match tokio::time::timeout(self.cfg.flush_timeout, finisher).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "finisher ended abnormally"),
            Err(_) => {
                abort.abort();
                let left = shared.leases().len();
                tracing::error!(
                    worker = %self.cfg.id,
                    tasks = left,
                    "could not record every outcome before the flush timeout: these tasks are rescued when their leases expire"
                );
            }
        }
        beats.cancel();
        let _ = heartbeater.await;
        // Nothing of ours may stay running: hand back whatever a lost claim reply leased to us.
        if let Err(wait) = self.hand_back(&shared, "worker stopped: handed back").await {
            debug!(?wait, "final hand-back failed; leases expire instead");
        }
        let stats = *shared.stats.lock().unwrap_or_else(|p| p.into_inner());
        metrics::SLOTS.sub((self.cfg.concurrency.max(1) + self.cfg.spare) as i64);
        info!(worker = %self.cfg.id, ?stats, "worker stopped");
        stats
    }
}

impl Worker {
    /// Hands back every task leased to this worker that it is not tracking. On error returns
    /// how long to wait before trying again.
    async fn hand_back(&self, shared: &Shared, reason: &str) -> Result<(), Duration> {
        let keep = shared.leases();
        let p = TaskHandBackParams {
            of: HandBack::Worker {
                worker: self.cfg.id.clone(),
                keep,
            },
            reason: reason.into(),
            now: self.clock.now(),
        };
        match self.store.task_hand_back(p).await {
            Ok(back) => {
                metrics::HANDED_BACK.inc_by(back.len() as u64);
                if !back.is_empty() {
                    info!(worker = %self.cfg.id, tasks = back.len(), reason, "handed back tasks this worker was not running");
                }
                Ok(())
            }
            Err(e) => {
                metrics::STORE_ERRORS
                    .with_label_values(&["hand_back"])
                    .inc();
                warn!(error = %e, "hand-back failed");
                Err(Duration::from_millis(500))
            }
        }
    }
}

/// Claimed tasks in runs: shareable ones of one lake together, at most `most` a run, in claim
/// order (the first run holds the first task claimed). Any other task runs alone: one that
/// crashed a runner, or one no scan can share (a SQL hunt), which has a slot of its own.
fn by_lake(claimed: Vec<ClaimedTask>, most: usize) -> Vec<Vec<ClaimedTask>> {
    let mut runs: Vec<Vec<ClaimedTask>> = Vec::new();
    // Per lake, the run still taking tasks.
    let mut open: HashMap<String, usize> = HashMap::new();
    for task in claimed {
        if task.crashes > 0 || !task.shareable || most <= 1 {
            runs.push(vec![task]);
            continue;
        }
        match open.get(&task.lake) {
            Some(&i) if runs[i].len() < most => runs[i].push(task),
            _ => {
                open.insert(task.lake.clone(), runs.len());
                runs.push(vec![task]);
            }
        }
    }
    runs
}

fn store_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build()
}

fn defer_now(clock: &Arc<dyn Clock>, reason: &str) -> TaskOutcome {
    TaskOutcome::Defer {
        run_after: clock.now(),
        reason: reason.to_string(),
    }
}

fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

/// What a run's result means for the task. `unit`: a random draw for the retry jitter.
pub fn outcome_of(
    task: &ClaimedTask,
    result: Result<RunOutput, RunError>,
    now: DateTime<Utc>,
    retry: RetryPolicy,
    unit: f64,
) -> TaskOutcome {
    // The task's own failure: again after a backoff while attempts are left.
    let retried = |error: String, crashed: bool| {
        let spent = u32::try_from(task.attempt.saturating_add(1)).unwrap_or(u32::MAX);
        let policy = RetryPolicy {
            max_attempts: u32::try_from(task.max_attempts).unwrap_or(1),
            ..retry
        };
        match (policy.decide(spent, unit), crashed) {
            (RetryDecision::RetryAfter(d), false) => TaskOutcome::Retry {
                run_after: after(now, d),
                error,
            },
            (RetryDecision::RetryAfter(d), true) => TaskOutcome::Crashed {
                run_after: after(now, d),
                error,
            },
            (RetryDecision::GiveUp, _) => TaskOutcome::Failed {
                error: format!("gave up after {spent} attempts: {error}"),
            },
        }
    };
    match result {
        Ok(out) => TaskOutcome::Succeeded {
            rows: out.rows,
            result_uri: out.result_uri,
        },
        Err(RunError::Permanent(error)) => TaskOutcome::Failed { error },
        Err(RunError::Transient(error)) => retried(error, false),
        Err(RunError::Deferred {
            reason,
            retry_after,
        }) => TaskOutcome::Defer {
            run_after: after(now, retry_after),
            reason,
        },
        Err(RunError::Cancelled) => TaskOutcome::Defer {
            run_after: now,
            reason: "handed back: run cancelled".into(),
        },
        // A poison pill gets one more run, in a runner of its own, then fails.
        Err(RunError::Crashed(error)) if task.crashes > 0 => TaskOutcome::Failed {
            error: format!("{error} (the second time: not retried)"),
        },
        Err(RunError::Crashed(error)) => retried(error, true),
    }
}

async fn finish_loop(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<TaskFinish>,
    batch: usize,
) {
    let mut buf: Vec<TaskFinish> = Vec::with_capacity(batch);
    loop {
        if buf.is_empty() {
            match rx.recv().await {
                Some(f) => buf.push(f),
                None => return,
            }
        }
        while buf.len() < batch {
            match rx.try_recv() {
                Ok(f) => buf.push(f),
                Err(_) => break,
            }
        }
        let mut backoff = store_backoff();
        loop {
            let r = store
                .task_finish(TaskFinishParams {
                    finishes: buf.clone(),
                    now: clock.now(),
                })
                .await;
            match r {
                Ok(report) => {
                    let applied: std::collections::HashSet<_> = report.applied.iter().collect();
                    for f in buf.iter().filter(|f| applied.contains(&f.lease.task_id)) {
                        metrics::OUTCOMES
                            .with_label_values(&[metrics::outcome_label(&f.outcome)])
                            .inc();
                    }
                    metrics::REJECTED.inc_by(report.rejected.len() as u64);
                    if !report.rejected.is_empty() {
                        warn!(tasks = ?report.rejected, "outcomes rejected: lease lost (rescued or cancelled)");
                    }
                    let mut inflight = shared.inflight.lock().unwrap_or_else(|p| p.into_inner());
                    for f in &buf {
                        inflight.remove(&f.lease);
                    }
                    drop(inflight);
                    let mut s = shared.stats.lock().unwrap_or_else(|p| p.into_inner());
                    s.recorded += report.applied.len() as u64;
                    s.rejected += report.rejected.len() as u64;
                    break;
                }
                Err(e) => {
                    metrics::STORE_ERRORS.with_label_values(&["finish"]).inc();
                    // Keep the outcomes and try again: they are kept alive by the heartbeater
                    // meanwhile; if the lease runs out first the store rejects them cleanly.
                    let wait = backoff.next().unwrap_or(Duration::from_secs(5));
                    warn!(error = %e, tasks = buf.len(), retry_in = ?wait, "recording outcomes failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        buf.clear();
    }
}

async fn heartbeat_loop(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    lease: Duration,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let leases = shared.leases();
        if leases.is_empty() {
            continue;
        }
        match store
            .task_heartbeat(TaskHeartbeatParams {
                leases,
                lease,
                now: clock.now(),
            })
            .await
        {
            Ok(lost) => {
                if lost.is_empty() {
                    continue;
                }
                metrics::LEASES_LOST.inc_by(lost.len() as u64);
                warn!(tasks = lost.len(), "leases lost: stopping their runs");
                let inflight = shared.inflight.lock().unwrap_or_else(|p| p.into_inner());
                for l in &lost {
                    if let Some(c) = inflight.get(l) {
                        debug!(task_id = %l.task_id, "lease lost");
                        c.cancel();
                    }
                }
            }
            Err(e) => {
                metrics::STORE_ERRORS
                    .with_label_values(&["heartbeat"])
                    .inc();
                warn!(error = %e, "heartbeat failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{JobId, LeaseToken, TaskId};

    fn task(attempt: i32, max_attempts: i32, crashes: i32) -> ClaimedTask {
        ClaimedTask {
            lease: Lease {
                task_id: TaskId(1),
                token: LeaseToken(1),
            },
            job_id: JobId(1),
            owner: "o".into(),
            lake: "l".into(),
            scope: "s".into(),
            attempt,
            max_attempts,
            crashes,
            shareable: false,
            lease_expires_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_crash_is_retried_once_then_fails_and_other_errors_as_before() {
        let now = chrono::Utc::now();
        let check = |t: ClaimedTask, r: Result<RunOutput, RunError>| {
            outcome_of(&t, r, now, RetryPolicy::default(), 0.5)
        };
        let crash = || {
            Err(RunError::Crashed(
                "the hunt crashed its runner (signal 6, SIGABRT)".into(),
            ))
        };
        // (task, result, what the outcome must be)
        let cases: Vec<(ClaimedTask, Result<RunOutput, RunError>, &str)> = vec![
            (task(0, 5, 0), crash(), "crashed"),
            (task(1, 5, 1), crash(), "failed: second time"),
            (task(4, 5, 0), crash(), "failed: gave up"),
            (
                task(0, 5, 0),
                Err(RunError::Transient("io".into())),
                "retry",
            ),
            (
                task(0, 5, 1),
                Err(RunError::Permanent("limit".into())),
                "failed",
            ),
            (task(0, 5, 1), Err(RunError::Cancelled), "defer"),
        ];
        for (t, r, want) in cases {
            let got = check(t.clone(), r.clone());
            let ok = match (&got, want) {
                (TaskOutcome::Crashed { error, .. }, "crashed") => error.contains("signal 6"),
                (TaskOutcome::Failed { error }, "failed: second time") => {
                    error.contains("second time")
                }
                (TaskOutcome::Failed { error }, "failed: gave up") => {
                    error.contains("gave up after 5")
                }
                (TaskOutcome::Failed { .. }, "failed") => true,
                (TaskOutcome::Retry { .. }, "retry") => true,
                (TaskOutcome::Defer { .. }, "defer") => true,
                _ => false,
            };
            assert!(ok, "{t:?} {r:?}: {got:?}, want {want}");
        }
    }
}
