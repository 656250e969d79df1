//! Recurring hunts: the elected leader makes each due schedule's job (docs/operations.md,
//! "Recurring hunts"). A tick is made once: the job's idempotency key names the schedule and
//! the tick, and the schedule moves on with an update guarded by the tick it was due at, so a
//! deposed leader that fires the same tick late gets the same job and records nothing. Ticks
//! missed while no leader ran are made up by one run over their ranges together (from the
//! range before the first to the latest tick); ticks of a paused schedule are not.

use crate::metrics;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::JobId;
use sluice_core::schedule::Cadence;
use sluice_store::{Schedule, ScheduleRanParams, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// Why a tick made no job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// Not for this tick (the hunt no longer checks, no lake is left, its token was revoked):
    /// recorded on the schedule, and its next tick comes as usual.
    Refused(String),
    /// The tick could not be tried now (the database is away, intake is closed by a drain): it
    /// stays due and is tried again every [`TRY_AGAIN`] — [`GIVE_UP_AFTER`] times, then it
    /// is recorded as refused.
    Unavailable(String),
}

/// How long a tick that could not be tried waits before the next try.
pub const TRY_AGAIN: chrono::Duration = chrono::Duration::seconds(30);
/// Tries of a tick that could not be tried before it is recorded as refused.
pub const GIVE_UP_AFTER: u32 = 10;

/// Makes the job of one tick; implemented by the binary, which plans hunts with the engine.
#[async_trait]
pub trait ScheduleRunner: Send + Sync + std::fmt::Debug {
    /// The job of `schedule` for its ticks `first..=last` (the same job however often it is
    /// asked for `last`), hunting from the range before `first` to `last`.
    async fn run(
        &self,
        schedule: &Schedule,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
    ) -> Result<JobId, RunError>;
}

/// A tick that could not be tried: when to try again, and how often it failed.
type Later = HashMap<i64, (DateTime<Utc>, u32)>;

#[derive(Debug, Clone)]
pub struct Recurring {
    store: Arc<dyn Store>,
    runner: Arc<dyn ScheduleRunner>,
    /// Ticks run per pass.
    batch: usize,
    /// This leader's memory of ticks to try again later (a new leader tries at once).
    later: Arc<Mutex<Later>>,
}

impl Recurring {
    pub fn new(store: Arc<dyn Store>, runner: Arc<dyn ScheduleRunner>) -> Self {
        Recurring {
            store,
            runner,
            batch: 20,
            later: Default::default(),
        }
    }

    fn later(&self) -> std::sync::MutexGuard<'_, Later> {
        self.later.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fires schedules due at `now` (up to the batch); returns how many ticks it recorded.
    pub async fn pass(&self, now: DateTime<Utc>) -> sluice_store::Result<usize> {
        let mut recorded = 0;
        let mut ran = 0;
        // More than the batch: those waiting to be tried again must not fill it.
        for s in self.store.schedule_due(now, 10 * self.batch as u32).await? {
            if ran >= self.batch {
                break;
            }
            if self.later().get(&s.id).is_some_and(|(at, _)| *at > now) {
                continue;
            }
            let cadence = match Cadence::new(s.every_secs, s.cron.as_deref(), s.created_at) {
                Ok(c) => c,
                Err(e) => {
                    // A row no API of this version would write: held, with the reason.
                    warn!(schedule = s.id, error = %e, "schedule with a bad cadence: paused");
                    let by = format!("sluice (bad cadence: {e})");
                    self.store.schedule_pause(s.id, &by, now).await?;
                    continue;
                }
            };
            ran += 1;
            let last = latest_tick(&cadence, s.next_at, now);
            let outcome = match self.runner.run(&s, s.next_at, last).await {
                Ok(job) => Ok(job),
                Err(RunError::Refused(why)) => Err(why),
                Err(RunError::Unavailable(why)) => {
                    let tries = self.later().get(&s.id).map_or(0, |(_, n)| *n) + 1;
                    if tries < GIVE_UP_AFTER {
                        metrics::SCHEDULE_RUNS
                            .with_label_values(&["deferred"])
                            .inc();
                        warn!(schedule = s.id, tries, error = %why, "schedule tick not tried now: again in 30 s");
                        self.later().insert(s.id, (now + TRY_AGAIN, tries));
                        continue;
                    }
                    Err(format!("not tried after {tries} attempts: {why}"))
                }
            };
            self.later().remove(&s.id);
            // Never fire twice for one tick, and never fall behind now.
            let next_at = cadence
                .next_after(now.max(s.next_at))
                .unwrap_or_else(far_future);
            let p = ScheduleRanParams {
                id: s.id,
                tick: s.next_at,
                next_at,
                outcome: outcome.clone(),
                now,
            };
            if self.store.schedule_ran(p).await? {
                recorded += 1;
                match outcome {
                    Ok(job) => {
                        metrics::SCHEDULE_RUNS.with_label_values(&["fired"]).inc();
                        info!(schedule = s.id, name = %s.name, owner = %s.owner, job_id = job.0, first = %s.next_at, last = %last, "schedule fired");
                    }
                    Err(why) => {
                        metrics::SCHEDULE_RUNS.with_label_values(&["skipped"]).inc();
                        warn!(schedule = s.id, name = %s.name, owner = %s.owner, tick = %s.next_at, error = %why, "schedule tick made no job");
                    }
                }
            }
        }
        Ok(recorded)
    }
}

/// The latest tick at or before `now`, counting from `due` (itself a tick, at or before now).
fn latest_tick(cadence: &Cadence, due: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    cadence.latest_at_or_before(now).map_or(due, |t| t.max(due))
}

/// When a schedule whose pattern never matches again is due: never, in a form both databases
/// keep.
fn far_future() -> DateTime<Utc> {
    use chrono::TimeZone;
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_store::{JobListParams, ScheduleInsertParams};
    use std::sync::Mutex;
    use std::time::Duration;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    /// Makes a tick's job the way the API does: one job per (schedule, tick) by its
    /// idempotency key. Remembers what it was asked; refuses or fails while told to.
    #[derive(Debug, Default)]
    struct Runs {
        store: Mutex<Option<Arc<dyn Store>>>,
        asked: Mutex<Vec<(DateTime<Utc>, DateTime<Utc>)>>,
        answer: Mutex<Option<RunError>>,
    }

    #[async_trait]
    impl ScheduleRunner for Runs {
        async fn run(
            &self,
            s: &Schedule,
            first: DateTime<Utc>,
            last: DateTime<Utc>,
        ) -> Result<JobId, RunError> {
            self.asked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((first, last));
            if let Some(e) = self
                .answer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return Err(e);
            }
            let store = self.store.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let Some(store) = store else {
                return Err(RunError::Unavailable("no store".into()));
            };
            let spec = serde_json::json!({"kind": "noop", "tick": last.timestamp(), "from": first.timestamp()});
            let p = sluice_store::JobInsertParams {
                idempotency_key: Some(format!("schedule:{}:{}", s.id, last.timestamp())),
                ..sluice_store::testing::job_params(&s.owner, 1, 3, spec, last)
            };
            store
                .job_insert(p)
                .await
                .map(|j| j.job.id)
                .map_err(|e| RunError::Unavailable(e.to_string()))
        }
    }

    async fn hourly(store: &dyn Store, every_secs: i64) -> Schedule {
        store
            .schedule_insert(ScheduleInsertParams {
                owner: "alice".into(),
                name: "sweep".into(),
                request: serde_json::json!({"hunt": {"kind": "noop"}}),
                every_secs: Some(every_secs),
                cron: None,
                range_secs: Some(3600),
                lakes: sluice_store::LakeAccess::all(),
                token_hash: None,
                next_at: at(every_secs),
                now: at(0),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The jobs made, by the tick they were made for.
    async fn ticks(store: &dyn Store) -> Vec<i64> {
        let jobs = store
            .job_list(JobListParams {
                owner: Some("alice".into()),
                state: None,
                before: None,
                limit: 1000,
            })
            .await
            .unwrap_or_default();
        let mut t: Vec<i64> = jobs
            .iter()
            .filter_map(|j| j.spec["tick"].as_i64())
            .collect();
        t.sort();
        t
    }

    #[tokio::test]
    async fn a_tick_makes_one_job_however_many_leaders_fire_it_and_missed_ticks_run_once() {
        let (store, _) = sluice_store::testing::pg_store().await;
        let store: Arc<dyn Store> = Arc::new(store);
        let s = hourly(store.as_ref(), 60).await;
        let runs = Arc::new(Runs::default());
        *runs.store.lock().unwrap_or_else(|p| p.into_inner()) = Some(store.clone());
        let a = Recurring::new(store.clone(), runs.clone());
        let b = Recurring::new(store.clone(), runs.clone());

        // Not due yet: nothing asked.
        assert_eq!(a.pass(at(59)).await.unwrap_or(9), 0);
        // Two leaders at once: one job, one record.
        let (x, y) = tokio::join!(a.pass(at(61)), b.pass(at(61)));
        assert_eq!(x.unwrap_or(9) + y.unwrap_or(9), 1);
        assert_eq!(ticks(store.as_ref()).await, vec![at(60).timestamp()]);
        // A leader that made tick 120's job and died before recording it: the next leader's
        // run gets the same job.
        runs.run(&s, at(120), at(120))
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(b.pass(at(121)).await.unwrap_or(9), 1);
        assert_eq!(
            ticks(store.as_ref()).await,
            vec![at(60).timestamp(), at(120).timestamp()]
        );
        let now = store
            .schedule_get(s.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((now.runs, now.next_at), (2, at(180)));

        // Ten minutes without a leader: one run, over the range ending at the latest tick.
        runs.asked.lock().unwrap_or_else(|p| p.into_inner()).clear();
        assert_eq!(a.pass(at(725)).await.unwrap_or(9), 1);
        assert_eq!(
            runs.asked.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            vec![(at(180), at(720))],
            "one run for the missed ticks 180 to 720"
        );
        let now = store
            .schedule_get(s.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((now.runs, now.next_at), (3, at(780)));

        // A tick the runner refuses is recorded as skipped and the schedule goes on.
        *runs.answer.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(RunError::Refused("no lake matches".into()));
        assert_eq!(a.pass(at(781)).await.unwrap_or(9), 1);
        let now = store
            .schedule_get(s.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (now.runs, now.next_at, now.last_error.as_deref()),
            (3, at(840), Some("no lake matches"))
        );
        // One that cannot be tried stays due, and is tried again after a while, not at once.
        *runs.answer.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(RunError::Unavailable("database away".into()));
        runs.asked.lock().unwrap_or_else(|p| p.into_inner()).clear();
        assert_eq!(a.pass(at(841)).await.unwrap_or(9), 0);
        assert_eq!(a.pass(at(850)).await.unwrap_or(9), 0);
        assert_eq!(
            runs.asked.lock().unwrap_or_else(|p| p.into_inner()).len(),
            1
        );
        *runs.answer.lock().unwrap_or_else(|p| p.into_inner()) = None;
        assert_eq!(a.pass(at(872)).await.unwrap_or(9), 1);
        let now = store
            .schedule_get(s.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((now.runs, now.next_at, now.last_error), (4, at(900), None));
        assert_eq!(ticks(store.as_ref()).await.len(), 4);
        // A tick that cannot be tried, try after try, is given up in the end, and says why.
        *runs.answer.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(RunError::Unavailable("intake closed".into()));
        let mut t = 901;
        for _ in 1..GIVE_UP_AFTER {
            assert_eq!(a.pass(at(t)).await.unwrap_or(9), 0);
            t += 31;
        }
        assert_eq!(a.pass(at(t)).await.unwrap_or(9), 1);
        let now = store
            .schedule_get(s.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            now.last_error
                .as_deref()
                .is_some_and(|e| e.contains("not tried after 10 attempts: intake closed")),
            "{now:?}"
        );
    }

    #[tokio::test]
    async fn leaders_that_change_mid_schedule_make_one_job_per_tick() {
        use crate::{Scheduler, SchedulerConfig};
        let (store, _) = sluice_store::testing::pg_store().await;
        let store: Arc<dyn Store> = Arc::new(store);
        let clock = Arc::new(sluice_core::ManualClock::new(at(0)));
        let s = hourly(store.as_ref(), 60).await;
        let runs = Arc::new(Runs::default());
        *runs.store.lock().unwrap_or_else(|p| p.into_inner()) = Some(store.clone());
        let start = |id: &str| {
            let mut cfg = SchedulerConfig::new(id);
            cfg.ttl = Duration::from_millis(300);
            cfg.schedules_every = Duration::from_millis(20);
            let stop = tokio_util::sync::CancellationToken::new();
            let run = Scheduler::new(store.clone(), clock.clone(), cfg)
                .with_schedules(runs.clone())
                .run(stop.clone());
            (tokio::spawn(run), stop)
        };
        let mut leaders = vec![start("a"), start("b")];
        for tick in 1..=8 {
            // The clock jumps a minute: every leader's lease looks stale to the others, so
            // two may act at once for a moment, which is the case to survive.
            clock.advance(chrono::Duration::seconds(60));
            if tick == 3 || tick == 6 {
                // The leader stops (which one does not matter); a new candidate joins.
                let (h, stop) = leaders.remove(0);
                stop.cancel();
                let _ = h.await;
                leaders.push(start(if tick == 3 { "c" } else { "d" }));
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let now = store
                    .schedule_get(s.id)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                if now.runs >= tick {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "tick {tick} never ran: {now:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        for (h, stop) in leaders {
            stop.cancel();
            let _ = h.await;
        }
        let made = ticks(store.as_ref()).await;
        let want: Vec<i64> = (1..=8).map(|i| at(60 * i).timestamp()).collect();
        assert_eq!(made, want, "one job per tick, none twice, none missed");
        let now = store
            .schedule_get(s.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((now.runs, now.next_at), (8, at(540)));
    }

    #[test]
    fn the_latest_passed_tick_is_found_from_the_due_one() {
        let anchor = DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let hourly = Cadence::new(Some(3600), None, anchor).unwrap_or_else(|e| panic!("{e}"));
        let h = |n: i64| anchor + chrono::Duration::hours(n);
        assert_eq!(latest_tick(&hourly, h(1), h(1)), h(1));
        assert_eq!(
            latest_tick(&hourly, h(1), h(1) + chrono::Duration::minutes(59)),
            h(1)
        );
        assert_eq!(
            latest_tick(&hourly, h(1), h(5) + chrono::Duration::minutes(3)),
            h(5)
        );
    }
}
