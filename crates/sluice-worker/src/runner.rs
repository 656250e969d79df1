//! What a task does. The hunt engine plugs in here in a later issue; until then the built-in
//! kinds are `noop` and `sleep`, enough to run the queue end to end.

use async_trait::async_trait;
use serde::Deserialize;
use sluice_core::JobId;
use sluice_store::{ClaimedTask, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOutput {
    pub rows: i64,
    pub result_uri: Option<String>,
}

/// Why a run did not succeed; decides whether an attempt is spent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// The task can never succeed (bad spec, unknown column): fail it, no retry.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The task's own failure that may pass: retry with backoff, one attempt spent.
    #[error("transient: {0}")]
    Transient(String),
    /// Not the task's fault (provider throttled or frozen, breaker open): run it later,
    /// no attempt spent.
    #[error("deferred: {reason}")]
    Deferred {
        reason: String,
        retry_after: Duration,
    },
    /// The run was stopped (shutdown, lease lost): hand it back, no attempt spent.
    #[error("cancelled")]
    Cancelled,
    /// The process that ran the task died (a signal, an abort): retried once at most.
    #[error("crashed: {0}")]
    Crashed(String),
}

/// One of several claimed tasks of a lake run together, and what stops its run.
#[derive(Debug, Clone)]
pub struct Member {
    pub task: ClaimedTask,
    pub cancel: CancellationToken,
}

#[async_trait]
pub trait Runner: Send + Sync + std::fmt::Debug + 'static {
    /// Runs one claimed task; must return promptly with [`RunError::Cancelled`] once `cancel`
    /// fires.
    async fn run(
        &self,
        task: &ClaimedTask,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunError>;

    /// Scopes this runner holds credentials for that cost a provider call to get (roles it
    /// assumed): claims prefer their tasks (ADR 0015).
    fn held_scopes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Runs claimed tasks of one lake, one outcome each, in order. A runner that can answer
    /// several with one read of the lake does (a shared scan, ADR 0014); this one runs them
    /// one after another. A member's cancel stops its own run only.
    async fn run_shared(&self, members: &[Member]) -> Vec<Result<RunOutput, RunError>> {
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            out.push(self.run(&m.task, m.cancel.clone()).await);
        }
        out
    }
}

/// The built-in task kinds, chosen by the job spec's `kind`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BuiltinSpec {
    /// Does nothing: measures the queue itself.
    Noop,
    /// Sleeps, then succeeds; `fail_first` makes the first N attempts fail transiently.
    Sleep {
        ms: u64,
        #[serde(default)]
        fail_first: i32,
    },
}

type SpecCell = Arc<tokio::sync::OnceCell<Result<BuiltinSpec, String>>>;

/// Runs the built-in kinds; job specs are read once per job and cached. Concurrent runs of a
/// job whose spec is not cached yet wait for one read instead of each making their own.
#[derive(Debug)]
pub struct BuiltinRunner {
    store: Arc<dyn Store>,
    specs: Mutex<HashMap<JobId, SpecCell>>,
}

const SPEC_CACHE_MAX: usize = 10_000;

impl BuiltinRunner {
    pub fn new(store: Arc<dyn Store>) -> Self {
        BuiltinRunner {
            store,
            specs: Mutex::new(HashMap::new()),
        }
    }

    async fn spec(&self, job: JobId) -> Result<BuiltinSpec, RunError> {
        let cell = {
            let mut specs = self.specs.lock().unwrap_or_else(|p| p.into_inner());
            if specs.len() >= SPEC_CACHE_MAX && !specs.contains_key(&job) {
                specs.clear();
            }
            specs.entry(job).or_default().clone()
        };
        let parsed = cell
            .get_or_try_init(|| async {
                match self.store.job_get(job).await {
                    Ok(j) => Ok(serde_json::from_value::<BuiltinSpec>(j.spec)
                        .map_err(|e| format!("job {job}: not a task kind this worker runs: {e}"))),
                    Err(e @ StoreError::NotFound(_)) => Ok(Err(e.to_string())),
                    // Not cached: the next run of this job reads it again.
                    Err(e) => Err(RunError::Deferred {
                        reason: format!("reading job spec: {e}"),
                        retry_after: Duration::from_secs(1),
                    }),
                }
            })
            .await?;
        parsed.clone().map_err(RunError::Permanent)
    }
}

#[async_trait]
impl Runner for BuiltinRunner {
    async fn run(
        &self,
        task: &ClaimedTask,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunError> {
        run_builtin(&self.spec(task.job_id).await?, task, cancel).await
    }
}

/// Runs a task of a built-in kind (for runners that read the job spec themselves).
pub async fn run_builtin(
    spec: &BuiltinSpec,
    task: &ClaimedTask,
    cancel: CancellationToken,
) -> Result<RunOutput, RunError> {
    match *spec {
        BuiltinSpec::Noop => Ok(RunOutput::default()),
        BuiltinSpec::Sleep { ms, fail_first } => {
            tokio::select! {
                _ = cancel.cancelled() => return Err(RunError::Cancelled),
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            }
            if task.attempt < fail_first {
                return Err(RunError::Transient(format!(
                    "planted failure on attempt {}",
                    task.attempt + 1
                )));
            }
            Ok(RunOutput {
                rows: 1,
                result_uri: None,
            })
        }
    }
}
