//! Postgres under contention: many claimers, racing submitters.

use crate::support::{at, job, job_events, pg, submit_while_waiting};
use sluice_core::{JobState, TaskId};
use sluice_store::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Claimer `w`'s next claim of up to `limit` tasks (leases long enough never to expire here).
async fn claim(s: &Arc<dyn Store>, w: u32, limit: u32) -> Vec<ClaimedTask> {
    s.task_claim(TaskClaimParams {
        worker: format!("w{w}"),
        limit,
        lease: Duration::from_secs(300),
        now: at(1),
        skip_owners: Vec::new(),
        share: 0,
        prefer_scopes: Vec::new(),
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claimers_complete_ten_thousand_tasks_exactly_once() {
    let s = pg().await;
    let n = 10_000;
    // Two jobs so that completions of one batch touch several job rows (lock ordering).
    let a = s.job_insert(job("alice", n / 2)).await.unwrap().job;
    let b = s.job_insert(job("bob", n / 2)).await.unwrap().job;
    let mut handles = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = 0;
            loop {
                i += 1;
                let got = claim(&s, w, 1 + (w * 7 + i) % 60).await;
                if got.is_empty() {
                    break;
                }
                let finishes = succeeded(&got);
                let r = s
                    .task_finish(TaskFinishParams {
                        finishes,
                        now: at(2),
                    })
                    .await
                    .unwrap();
                assert!(
                    r.rejected.is_empty(),
                    "worker {w} lost a lease it held: {:?}",
                    r.rejected
                );
                mine.extend(r.applied);
            }
            mine
        }));
    }
    let mut all: Vec<TaskId> = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: HashSet<TaskId> = all.iter().copied().collect();
    assert_eq!(all.len(), n, "completions recorded");
    assert_eq!(unique.len(), n, "every task completed exactly once");
    for j in [a.id, b.id] {
        let j = s.job_get(j).await.unwrap();
        assert_eq!(
            (j.state, j.counts.done, j.rows_found),
            (JobState::Succeeded, (n / 2) as i64, (n / 2) as i64)
        );
    }
    let events = job_events(&s, a.id).await;
    let done = events.iter().filter(|e| e.kind == "task.succeeded").count();
    assert_eq!(done, n / 2);
    assert_eq!(
        events.iter().filter(|e| e.kind == "job.succeeded").count(),
        1
    );
    // The task counters saw every concurrent claim and finish: all succeeded, none left open.
    let backlog = s.task_backlog().await.unwrap();
    assert_eq!(backlog.oldest_pending_at, None);
    let succeeded: i64 = backlog
        .counts
        .iter()
        .map(|c| {
            assert_eq!(c.state, sluice_core::TaskState::Succeeded, "{c:?}");
            c.tasks
        })
        .sum();
    assert_eq!(succeeded, n as i64);
}

#[tokio::test]
async fn a_submission_in_another_schema_does_not_wake_this_one() {
    // Stores in two schemas of one database share the NOTIFY channel: a job submitted to one
    // must not wake the other's idle workers (they would claim from an empty table).
    let (mine, other) = (pg().await, pg().await);
    mine.task_wait(Duration::from_millis(100)).await; // starts the listener
    let waiter = submit_while_waiting(&mine, Duration::from_millis(1500), &other).await;
    let waited = waiter.await.unwrap();
    assert!(
        waited >= Duration::from_millis(1400),
        "woken after {waited:?} by another schema's submission"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_submits_with_one_idempotency_key_make_one_job() {
    let s = pg().await;
    let mut handles = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut p = job("alice", 50);
            p.idempotency_key = Some("same".into());
            s.job_insert(p).await.unwrap()
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for h in handles {
        let r = h.await.unwrap();
        ids.insert(r.job.id);
        created += usize::from(r.created);
    }
    assert_eq!((ids.len(), created), (1, 1));
    let id = *ids.iter().next().unwrap();
    let tasks = s
        .task_list(TaskListParams {
            job_id: id,
            limit: 1000,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(tasks.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_racing_with_completions_leaves_consistent_counts() {
    let s = pg().await;
    let j = s.job_insert(job("alice", 2_000)).await.unwrap().job;
    let claimed = s
        .task_claim(TaskClaimParams {
            worker: "w".into(),
            limit: 2_000,
            lease: Duration::from_secs(60),
            now: at(1),
            skip_owners: Vec::new(),
            share: 0,
            prefer_scopes: Vec::new(),
        })
        .await
        .unwrap();
    let finisher = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut applied = 0;
            for chunk in claimed.chunks(25) {
                let finishes = succeeded(chunk);
                applied += s
                    .task_finish(TaskFinishParams {
                        finishes,
                        now: at(2),
                    })
                    .await
                    .unwrap()
                    .applied
                    .len();
            }
            applied as i64
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cancel = s
        .job_cancel(JobCancelParams {
            id: j.id,
            by: "op".into(),
            reason: None,
            now: at(3),
        })
        .await;
    let applied = finisher.await.unwrap();
    let j = s.job_get(j.id).await.unwrap();
    assert_eq!(j.counts.done, applied);
    assert_eq!(j.counts.done + j.counts.cancelled, 2_000, "{j:?}");
    match cancel {
        Ok(_) => assert_eq!(j.state, JobState::Cancelled),
        Err(StoreError::Conflict(_)) => assert_eq!(j.state, JobState::Succeeded),
        Err(e) => panic!("{e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_takers_never_exceed_burst_plus_rate_times_window() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let s = pg().await;
    let (rate, burst) = (200.0, 20.0);
    s.budget_set(BudgetSetParams {
        scope: "*".into(),
        parent: None,
        rate,
        burst,
        ramp: None,
        now: at(0),
    })
    .await
    .unwrap();
    s.budget_set(BudgetSetParams {
        scope: "aws:1".into(),
        parent: None,
        rate: 1e6,
        burst: 1e6,
        ramp: None,
        now: at(0),
    })
    .await
    .unwrap();
    // A shared fake clock moving 1 ms per call, so the window is known exactly.
    let clock = Arc::new(AtomicI64::new(0));
    let mut handles = Vec::new();
    for w in 0..8 {
        let (s, clock) = (s.clone(), clock.clone());
        handles.push(tokio::spawn(async move {
            let mut got = 0u64;
            for _ in 0..100 {
                let ms = clock.fetch_add(1, Ordering::SeqCst);
                let scope = if w % 2 == 0 {
                    "aws:1"
                } else {
                    "gcp:unbudgeted"
                };
                let now = at(0) + chrono::Duration::milliseconds(ms);
                got += u64::from(
                    s.budget_take(BudgetTakeParams {
                        scope: scope.into(),
                        n: 3,
                        hold: Duration::ZERO,
                        now,
                    })
                    .await
                    .unwrap(),
                );
            }
            got
        }));
    }
    let mut granted = 0;
    for h in handles {
        granted += h.await.unwrap();
    }
    let window = clock.load(Ordering::SeqCst) as f64 / 1000.0;
    let bound = burst + rate * window;
    assert!(
        granted as f64 <= bound,
        "granted {granted} > burst + rate x T = {bound}"
    );
    assert!(
        granted as f64 >= bound * 0.5,
        "granted {granted}: takers starved (bound {bound})"
    );
}

#[tokio::test]
async fn a_schema_behind_the_build_is_not_ready() {
    use sqlx::Connection;
    let (store, url) = sluice_store::testing::pg_store().await;
    store.ready().await.unwrap();
    // As if this build's newest migration had not been applied yet (a rolling upgrade that
    // started the new workers before `sluice migrate`).
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let e = store.ready().await.unwrap_err();
    assert!(
        matches!(e, StoreError::NotReady(ref m) if m.contains("run `sluice migrate`")),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_submission_commits_after_a_drain_closed_intake() {
    // Submitters race a drain: once `intake_close` has returned, the set of jobs is final —
    // a submission that saw intake open either committed before the close or rolled back.
    let s = pg().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut submitters = Vec::new();
    for w in 0..4 {
        let (s, stop) = (s.clone(), stop.clone());
        submitters.push(tokio::spawn(async move {
            let mut refused = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Big enough that the tasks' insert takes a while after intake was read.
                match s.job_insert(job(&format!("u{w}"), 400)).await {
                    Ok(_) => {}
                    Err(StoreError::Closed(_)) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            refused
        }));
    }
    let count = |s: std::sync::Arc<dyn Store>| async move {
        s.job_list(JobListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.intake_close(IntakeCloseParams {
        reason: "race".into(),
        by: "t".into(),
        now: at(1),
    })
    .await
    .unwrap();
    let at_close = count(s.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut refused = 0;
    for h in submitters {
        refused += h.await.unwrap();
    }
    assert!(
        at_close > 0 && refused > 0,
        "{at_close} jobs, {refused} refused"
    );
    assert_eq!(
        count(s.clone()).await,
        at_close,
        "a job committed after the close"
    );
}

/// Every claimed task succeeded with one row.
fn succeeded(tasks: &[sluice_store::ClaimedTask]) -> Vec<TaskFinish> {
    tasks
        .iter()
        .map(|t| TaskFinish {
            lease: t.lease,
            outcome: TaskOutcome::Succeeded {
                rows: 1,
                result_uri: None,
            },
        })
        .collect()
}

/// Eight claimers race over one owner's backlog under a quota: at no moment do more of the
/// owner's tasks run than the quota, and every task still runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claimers_never_exceed_an_owners_quota() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let s = pg().await;
    let n = 400;
    let quota = 5;
    s.job_insert(job("alice", n)).await.unwrap();
    s.quota_set(QuotaSetParams {
        target: QuotaTarget::Owner("alice".into()),
        max_running: quota,
        by: "op".into(),
        now: at(0),
    })
    .await
    .unwrap();
    // Tasks held between a claim's return and their finish: never more than the database
    // counts as running, so a quota the claims overshoot shows up here.
    let held = Arc::new(AtomicI64::new(0));
    let peak = Arc::new(AtomicI64::new(0));
    let mut handles = Vec::new();
    for w in 0..8 {
        let (s, held, peak) = (s.clone(), held.clone(), peak.clone());
        handles.push(tokio::spawn(async move {
            let mut done = 0usize;
            let mut idle = 0;
            while idle < 50 {
                let got = claim(&s, w, 4).await;
                if got.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                idle = 0;
                let now = held.fetch_add(got.len() as i64, Ordering::SeqCst) + got.len() as i64;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(3)).await;
                held.fetch_sub(got.len() as i64, Ordering::SeqCst);
                done += got.len();
                s.task_finish(TaskFinishParams {
                    finishes: succeeded(&got),
                    now: at(2),
                })
                .await
                .unwrap();
            }
            done
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    assert_eq!(total, n, "every task ran exactly once");
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak <= quota,
        "{peak} of alice's tasks ran at once (quota {quota})"
    );
    assert!(peak >= 2, "the claimers ran in parallel at all ({peak})");
}
