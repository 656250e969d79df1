//! Retention: the leader removes finished jobs past their retention (tasks, journal, result
//! objects) in bounded batches, and sweeps result objects nobody can read (a job gone, a
//! rejected claim's upload, an upload cut short by a crash).

use crate::metrics;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::JobId;
use sluice_store::{JobPurgeParams, PurgeSelect, PurgedJob, Store, StoreError, StoreExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// One result object: its key and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultObject {
    pub key: String,
    pub written: DateTime<Utc>,
}

/// Where jobs' result objects live (the binary implements it over object_store; the keys are
/// the tasks' `result_uri`s, under one prefix per job).
#[async_trait]
pub trait ResultObjects: Send + Sync + std::fmt::Debug {
    /// Removes every object of `job`; returns how many.
    async fn remove_job(&self, job: JobId) -> Result<u64, String>;
    /// The jobs that have objects.
    async fn jobs(&self) -> Result<Vec<JobId>, String>;
    /// The objects of `job`.
    async fn objects(&self, job: JobId) -> Result<Vec<ResultObject>, String>;
    /// Removes these objects; returns how many.
    async fn remove(&self, keys: &[String]) -> Result<u64, String>;
}

#[derive(Debug, Clone)]
pub struct CleanerConfig {
    /// How long a finished job without a retention of its own is kept; `None`: kept.
    pub retention: Option<Duration>,
    /// How often the leader removes expired jobs.
    pub every: Duration,
    /// Jobs per store call (each job in a transaction of its own).
    pub batch: u32,
    /// The most one pass works before it yields to the leader's other passes.
    pub budget: Duration,
    /// How often the leader sweeps orphan result objects.
    pub sweep_every: Duration,
    /// An object younger than this is never an orphan (its upload may still be committing).
    pub orphan_grace: Duration,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            // Keep: deleting is the operator's decision (`--retention`), not an upgrade's.
            retention: None,
            every: Duration::from_secs(60),
            batch: 20,
            budget: Duration::from_secs(10),
            sweep_every: Duration::from_secs(3600),
            orphan_grace: Duration::from_secs(3600),
        }
    }
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    pub jobs: u64,
    pub tasks: u64,
    pub objects: u64,
    /// The pass stopped at its budget with expired jobs left: the cleaner falls behind if this
    /// stays true.
    pub behind: bool,
}

#[derive(Debug, Clone)]
pub struct Cleaner {
    store: Arc<dyn Store>,
    results: Option<Arc<dyn ResultObjects>>,
    cfg: CleanerConfig,
}

impl Cleaner {
    pub fn new(
        store: Arc<dyn Store>,
        results: Option<Arc<dyn ResultObjects>>,
        cfg: CleanerConfig,
    ) -> Self {
        Cleaner {
            store,
            results,
            cfg,
        }
    }

    /// Removes jobs as `select` says, in batches, until none is left or the budget is spent;
    /// each job's objects go after its rows (an object whose removal fails is an orphan the
    /// sweep finds).
    pub async fn purge(
        &self,
        select: PurgeSelect,
        by: &str,
        now: DateTime<Utc>,
    ) -> sluice_store::Result<CleanReport> {
        let started = Instant::now();
        let mut report = CleanReport::default();
        loop {
            let batch = self
                .store
                .job_purge(JobPurgeParams {
                    select: select.clone(),
                    limit: self.cfg.batch,
                    by: by.to_string(),
                    now,
                })
                .await?;
            let full = batch.len() as u32 >= self.cfg.batch;
            for j in &batch {
                report.jobs += 1;
                report.tasks += j.tasks;
                report.objects += self.remove_objects(j).await;
            }
            metrics::CLEANER_JOBS.inc_by(batch.len() as u64);
            if !full || matches!(select, PurgeSelect::Job(_)) {
                return Ok(report);
            }
            if started.elapsed() >= self.cfg.budget {
                report.behind = true;
                return Ok(report);
            }
        }
    }

    async fn remove_objects(&self, j: &PurgedJob) -> u64 {
        let Some(results) = &self.results else {
            return 0;
        };
        match results.remove_job(j.id).await {
            Ok(n) => {
                metrics::CLEANER_OBJECTS.inc_by(n);
                n
            }
            Err(e) => {
                metrics::CLEANER_ERRORS.inc();
                warn!(job = %j.id, error = %e, "removing a purged job's results failed; the sweep retries");
                0
            }
        }
    }

    /// The leader's pass: finished jobs past their retention.
    pub async fn pass(&self, now: DateTime<Utc>) -> sluice_store::Result<CleanReport> {
        let default_secs = self.cfg.retention.map(|d| d.as_secs() as i64);
        let report = self
            .purge(PurgeSelect::Expired { default_secs }, "cleaner", now)
            .await?;
        metrics::CLEANER_BEHIND.set(i64::from(report.behind));
        if report.jobs > 0 {
            info!(
                jobs = report.jobs,
                tasks = report.tasks,
                objects = report.objects,
                "removed finished jobs past their retention"
            );
        }
        Ok(report)
    }

    /// Removes result objects nobody can read: every object of a job that no longer exists,
    /// and, of a finished job, the objects no task of it names (a zombie's upload, one cut
    /// short), once older than the grace. Objects of unfinished jobs are left alone.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, String> {
        let Some(results) = &self.results else {
            return Ok(0);
        };
        let grace = chrono::Duration::from_std(self.cfg.orphan_grace).unwrap_or_default();
        let old = |o: &ResultObject| o.written + grace <= now;
        let started = Instant::now();
        let mut removed = 0;
        for id in results.jobs().await? {
            if started.elapsed() >= self.cfg.budget * 6 {
                // The rest waits for the next sweep.
                break;
            }
            let orphans: Vec<String> = match self.store.job_get(id).await {
                // Gone (purged, or never ours: a restored database, a shared prefix): only
                // files older than the grace, like any orphan.
                Err(StoreError::NotFound(_)) => results
                    .objects(id)
                    .await?
                    .into_iter()
                    .filter(old)
                    .map(|o| o.key)
                    .collect(),
                Err(e) => return Err(e.to_string()),
                Ok(j) if !j.state.is_terminal() => continue,
                Ok(j) => {
                    let named: std::collections::HashSet<String> = self
                        .store
                        .task_list_all(j.id)
                        .await
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .filter_map(|t| t.result_uri)
                        .collect();
                    results
                        .objects(id)
                        .await?
                        .into_iter()
                        .filter(|o| !named.contains(&o.key) && old(o))
                        .map(|o| o.key)
                        .collect()
                }
            };
            if !orphans.is_empty() {
                removed += results.remove(&orphans).await?;
            }
        }
        metrics::CLEANER_ORPHANS.inc_by(removed);
        if removed > 0 {
            info!(objects = removed, "removed orphan result objects");
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed expectation should panic with its message.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use sluice_store::TaskOutcome;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// Result objects in memory: the store under test is a real (SQLite) one.
    #[derive(Debug, Default)]
    struct Objects(Mutex<BTreeMap<String, DateTime<Utc>>>);

    impl Objects {
        fn put(&self, key: &str, written: DateTime<Utc>) {
            self.0.lock().unwrap().insert(key.into(), written);
        }
        fn keys(&self) -> Vec<String> {
            self.0.lock().unwrap().keys().cloned().collect()
        }
    }

    fn job_of(key: &str) -> Option<JobId> {
        key.strip_prefix("jobs/")?
            .split('/')
            .next()?
            .parse()
            .ok()
            .map(JobId)
    }

    #[async_trait]
    impl ResultObjects for Objects {
        async fn remove_job(&self, job: JobId) -> Result<u64, String> {
            let keys: Vec<String> = self
                .keys()
                .into_iter()
                .filter(|k| job_of(k) == Some(job))
                .collect();
            self.remove(&keys).await
        }
        async fn jobs(&self) -> Result<Vec<JobId>, String> {
            let mut j: Vec<JobId> = self.keys().iter().filter_map(|k| job_of(k)).collect();
            j.dedup();
            Ok(j)
        }
        async fn objects(&self, job: JobId) -> Result<Vec<ResultObject>, String> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| job_of(k) == Some(job))
                .map(|(k, w)| ResultObject {
                    key: k.clone(),
                    written: *w,
                })
                .collect())
        }
        async fn remove(&self, keys: &[String]) -> Result<u64, String> {
            let mut m = self.0.lock().unwrap();
            Ok(keys.iter().filter(|k| m.remove(*k).is_some()).count() as u64)
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    async fn job(store: &dyn Store, owner: &str) -> JobId {
        let noop = serde_json::json!({"kind": "noop"});
        let p = sluice_store::testing::job_params(owner, 1, 1, noop, at(0));
        sluice_store::testing::submit(store, p).await.id
    }

    #[tokio::test]
    async fn retention_removes_rows_then_objects_and_the_sweep_only_orphans() {
        let store = sluice_store::connect("sqlite::memory:", Default::default())
            .await
            .unwrap();
        let done = job(store.as_ref(), "alice").await;
        let claimed = sluice_store::testing::claim(store.as_ref(), "w", 1, at(1)).await;
        let named = format!("jobs/{done}/1-1.parquet");
        let outcome = TaskOutcome::Succeeded {
            rows: 1,
            result_uri: Some(named.clone()),
        };
        sluice_store::testing::finish(store.as_ref(), claimed[0].lease, outcome, at(10)).await;
        let open = job(store.as_ref(), "bob").await;
        let objects = Arc::new(Objects::default());
        let zombie = format!("jobs/{done}/1-0.parquet");
        let young = format!("jobs/{done}/1-2.parquet");
        let running = format!("jobs/{open}/2-1.parquet");
        let gone = "jobs/999/5-1.parquet".to_string();
        objects.put(&named, at(10));
        objects.put(&zombie, at(5));
        objects.put(&young, at(3650));
        objects.put(&running, at(5));
        objects.put(&gone, at(5));
        let cleaner = Cleaner::new(
            store.clone(),
            Some(objects.clone()),
            CleanerConfig {
                retention: Some(Duration::from_secs(7200)),
                ..CleanerConfig::default()
            },
        );
        // An hour on: the zombie's upload and the vanished job's go; the committed result, the
        // young object and the running job's stay.
        assert_eq!(cleaner.sweep(at(3700)).await.unwrap(), 2);
        let mut want = vec![named.clone(), young.clone(), running.clone()];
        want.sort();
        assert_eq!(objects.keys(), want);
        // Before its retention nothing is purged; after it, the rows and then every object of
        // the job.
        assert_eq!(cleaner.pass(at(7209)).await.unwrap().jobs, 0);
        let r = cleaner.pass(at(7210)).await.unwrap();
        assert_eq!((r.jobs, r.tasks, r.objects, r.behind), (1, 1, 2, false));
        assert_eq!(objects.keys(), vec![running]);
        assert!(matches!(
            store.job_get(done).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(store.job_get(open).await.is_ok());
    }
}
