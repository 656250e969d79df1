//! The conformance suite: every test runs against Postgres and SQLite.

use crate::support::{at, job, job_events, submit_while_waiting, t0};
use sluice_core::{JobId, JobState, LeaseToken, TaskId, TaskState};
use sluice_store::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type S = Arc<dyn Store>;

macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(crate::support::pg().await).await })+
        }
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(crate::support::sqlite().await).await })+
        }
    };
}

conformance!(
    job_insert_writes_job_tasks_and_journal,
    a_scopes_ramp_is_kept_until_changed_and_drives_its_slow_start,
    budgets_nest_at_most_32_deep,
    idempotency_key_returns_same_job_or_conflicts,
    job_without_tasks_succeeds_at_once,
    malformed_job_input_is_rejected_and_nothing_written,
    claim_respects_order_limit_and_run_after,
    complete_counts_rows_and_finishes_job,
    stale_lease_writes_are_rejected,
    retry_spends_attempt_defer_does_not,
    a_runner_crash_is_counted_and_a_crashed_task_that_loses_its_worker_fails,
    failures_give_partial_or_failed_jobs,
    heartbeat_extends_and_reports_lost_leases,
    rescue_expired_leases_spends_attempts_then_fails,
    cancel_stops_pending_and_running_tasks,
    bulk_insert_crosses_chunks,
    missing_rows_are_not_found,
    every_state_change_is_journaled,
    global_journal_pages_through_every_job,
    hand_back_defers_unknown_leases_of_one_worker,
    lake_registry_round_trips_and_rejects_bad_names,
    task_wait_wakes_when_a_job_is_submitted,
    claims_interleave_jobs_of_equal_priority,
    budgets_charge_scope_and_ancestors,
    budget_input_is_checked,
    pauses_hold_back_claims_of_their_target_only,
    budget_hold_keeps_headroom_and_feedback_moves_the_rate,
    breakers_hold_back_their_scope_probe_once_and_close_with_slow_start,
    hand_back_of_a_pause_target_defers_only_its_running_tasks,
    a_new_job_neither_starves_nor_is_starved_by_a_draining_one,
    owners_share_the_claims_not_their_jobs,
    a_claim_skips_the_owners_it_is_told_to,
    one_leader_at_a_time_and_a_standby_takes_over,
    backlog_and_finished_jobs_come_from_the_job_rows,
    a_dry_budget_is_released_last_and_rediscovered,
    a_migrated_store_is_ready,
    tokens_are_found_by_hash_until_revoked,
    job_list_pages_newest_first_by_owner_and_state,
    task_counts_follow_every_move_of_a_task,
    a_drain_closes_intake_until_reopened,
    owner_quotas_cap_running_tasks_across_claims,
    a_new_priority_moves_a_jobs_unfinished_tasks,
    a_default_quota_of_zero_holds_back_only_owners_without_their_own,
    a_demoted_job_takes_its_place_in_the_new_priority,
    the_cleaner_removes_finished_jobs_past_their_retention_only,
    a_rerun_runs_failed_and_cancelled_lakes_again,
    every_end_of_a_job_naming_a_webhook_leaves_one_delivery,
    console_sessions_live_until_they_expire_or_sign_out,
    a_schedules_tick_is_recorded_once_however_many_leaders_fire_it,
    a_shared_claim_takes_along_other_jobs_tasks_of_its_lakes_under_the_holds,
    a_claim_prefers_its_scopes_within_a_window_of_the_head_only,
);

fn lease() -> Duration {
    Duration::from_secs(30)
}

async fn claim(s: &S, worker: &str, limit: u32, now: i64) -> Vec<ClaimedTask> {
    sluice_store::testing::claim(s.as_ref(), worker, limit, at(now)).await
}

async fn finish(s: &S, l: Lease, outcome: TaskOutcome, now: i64) -> FinishReport {
    sluice_store::testing::finish(s.as_ref(), l, outcome, at(now)).await
}

fn ok(rows: i64) -> TaskOutcome {
    TaskOutcome::Succeeded {
        rows,
        result_uri: Some(format!("mem://r/{rows}")),
    }
}

async fn kinds(s: &S, job: JobId) -> Vec<String> {
    sluice_store::testing::kinds(s.as_ref(), job).await
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

async fn job_insert_writes_job_tasks_and_journal(s: S) {
    let mut p = job("alice", 3);
    p.sql = Some("select 1".into());
    p.priority = 2;
    let j = s.job_insert(p).await.unwrap();
    assert!(j.created);
    assert_eq!(j.job.state, JobState::Queued);
    assert_eq!(j.job.counts.total, 3);
    assert_eq!(j.job.sql.as_deref(), Some("select 1"));
    assert_eq!(j.job.created_at, t0());
    assert_eq!(s.job_get(j.job.id).await.unwrap(), j.job);
    let tasks = s
        .task_list(TaskListParams {
            job_id: j.job.id,
            limit: 100,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(tasks.len(), 3);
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t.state, TaskState::Pending);
        assert_eq!(t.lake, format!("lake-{i:05}"));
        assert_eq!(
            (t.priority, t.max_attempts, t.attempt, t.est_calls),
            (2, 3, 0, 4)
        );
        assert_eq!(t.lease_token, LeaseToken(0));
    }
    // Paginated by id.
    let page = s
        .task_list(TaskListParams {
            job_id: j.job.id,
            limit: 2,
            after: Some(tasks[0].id),
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![tasks[1].id, tasks[2].id]
    );
    assert_eq!(kinds(&s, j.job.id).await, vec!["job.submitted"]);
}

async fn idempotency_key_returns_same_job_or_conflicts(s: S) {
    let mut p = job("alice", 2);
    p.idempotency_key = Some("k1".into());
    let first = s.job_insert(p.clone()).await.unwrap();
    let again = s.job_insert(p.clone()).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.job.id, again.job.id);
    let tasks = s
        .task_list(TaskListParams {
            job_id: first.job.id,
            limit: 100,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(tasks.len(), 2, "a replay must not add tasks");

    // A repeat that differs in anything is refused, naming the difference.
    type Mutate = Box<dyn Fn(&mut JobInsertParams)>;
    let cases: Vec<(&str, Mutate)> = vec![
        (
            "different hunt",
            Box::new(|o| o.spec = serde_json::json!({"kind": "noop", "x": 1})),
        ),
        (
            "set of lakes (2 lakes, not 1)",
            Box::new(|o| o.tasks.truncate(1)),
        ),
        ("priority (0, not 9)", Box::new(|o| o.priority = 9)),
        ("max_attempts (3, not 1)", Box::new(|o| o.max_attempts = 1)),
        (
            "retention_secs (the server's, not 0)",
            Box::new(|o| o.retention_secs = Some(0)),
        ),
    ];
    for (want, mutate) in cases {
        let mut other = p.clone();
        mutate(&mut other);
        let err = s.job_insert(other).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(ref m) if m.contains(want)),
            "{want}: {err:?}"
        );
    }

    let mut bob = p.clone();
    bob.owner = "bob".into();
    let b = s.job_insert(bob).await.unwrap();
    assert!(b.created, "keys are per owner");
    assert_ne!(b.job.id, first.job.id);
}

async fn job_without_tasks_succeeds_at_once(s: S) {
    let j = s.job_insert(job("alice", 0)).await.unwrap().job;
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.finished_at, Some(t0()));
    assert!(claim(&s, "w", 10, 0).await.is_empty());
}

async fn malformed_job_input_is_rejected_and_nothing_written(s: S) {
    type Mutate = Box<dyn Fn(&mut JobInsertParams)>;
    let cases: Vec<(&str, Mutate)> = vec![
        ("empty owner", Box::new(|p| p.owner = " ".into())),
        ("zero attempts", Box::new(|p| p.max_attempts = 0)),
        ("negative attempts", Box::new(|p| p.max_attempts = -4)),
        (
            "empty key",
            Box::new(|p| p.idempotency_key = Some(String::new())),
        ),
        (
            "huge key",
            Box::new(|p| p.idempotency_key = Some("k".repeat(300))),
        ),
        ("empty lake", Box::new(|p| p.tasks[1].lake = String::new())),
        (
            "empty scope",
            Box::new(|p| p.tasks[0].scope = String::new()),
        ),
    ];
    for (name, mutate) in cases {
        let mut p = job("alice", 2);
        mutate(&mut p);
        let err = s.job_insert(p).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{name}: {err:?}");
    }
    // Hostile strings are data, not SQL.
    let mut p = job("alice'); DROP TABLE jobs; --", 1);
    p.tasks[0].lake = "x' OR '1'='1".into();
    p.idempotency_key = Some("\u{0}ignored?".replace('\u{0}', "z"));
    let j = s.job_insert(p).await.unwrap().job;
    assert_eq!(j.owner, "alice'); DROP TABLE jobs; --");
    let t = claim(&s, "w", 10, 0).await;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].lake, "x' OR '1'='1");
}

async fn claim_respects_order_limit_and_run_after(s: S) {
    let low = s.job_insert(job("alice", 3)).await.unwrap().job;
    let mut hi = job("bob", 2);
    hi.priority = 5;
    let hi = s.job_insert(hi).await.unwrap().job;

    let first = claim(&s, "w1", 3, 1).await;
    assert_eq!(first.len(), 3);
    // Priority first, then release (insertion) order.
    assert_eq!(
        first.iter().map(|t| t.job_id).collect::<Vec<_>>(),
        vec![hi.id, hi.id, low.id]
    );
    assert!(
        first
            .windows(2)
            .all(|w| w[0].job_id != w[1].job_id || w[0].id() < w[1].id())
    );
    for t in &first {
        assert_eq!(t.lease.token, LeaseToken(1));
        assert_eq!(t.lease_expires_at, at(31));
        let row = s.task_get(t.id()).await.unwrap();
        assert_eq!(row.state, TaskState::Running);
        assert_eq!(row.lease_owner.as_deref(), Some("w1"));
    }
    assert_eq!(s.job_get(hi.id).await.unwrap().state, JobState::Running);
    assert_eq!(s.job_get(hi.id).await.unwrap().started_at, Some(at(1)));

    let rest = claim(&s, "w2", 10, 2).await;
    assert_eq!(rest.len(), 2);
    assert!(claim(&s, "w3", 10, 3).await.is_empty());
    assert!(claim(&s, "w3", 0, 3).await.is_empty());

    // A task deferred into the future is not claimable before its time.
    let t = &rest[0];
    let later = TaskOutcome::Defer {
        run_after: at(100),
        reason: "throttled".into(),
    };
    assert_eq!(finish(&s, t.lease, later, 4).await.applied, vec![t.id()]);
    assert!(claim(&s, "w3", 10, 99).await.is_empty());
    let again = claim(&s, "w3", 10, 100).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].lease.token,
        LeaseToken(2),
        "each claim gets a new token"
    );
}

async fn complete_counts_rows_and_finishes_job(s: S) {
    let j = s.job_insert(job("alice", 2)).await.unwrap().job;
    let t = claim(&s, "w", 10, 1).await;
    let r = finish(&s, t[0].lease, ok(7), 2).await;
    assert_eq!(
        r,
        FinishReport {
            applied: vec![t[0].id()],
            rejected: vec![]
        }
    );
    let mid = s.job_get(j.id).await.unwrap();
    assert_eq!(
        (mid.state, mid.counts.done, mid.rows_found, mid.finished_at),
        (JobState::Running, 1, 7, None)
    );
    let row = s.task_get(t[0].id()).await.unwrap();
    assert_eq!(row.state, TaskState::Succeeded);
    assert_eq!(row.rows_found, Some(7));
    assert_eq!(row.result_uri.as_deref(), Some("mem://r/7"));
    assert_eq!(row.lease_owner, None);

    // Both finishes of a batch in one call.
    let r = s
        .task_finish(TaskFinishParams {
            finishes: vec![TaskFinish {
                lease: t[1].lease,
                outcome: ok(5),
            }],
            now: at(3),
        })
        .await
        .unwrap();
    assert_eq!(r.applied, vec![t[1].id()]);
    let end = s.job_get(j.id).await.unwrap();
    assert_eq!(
        (end.state, end.counts.done, end.rows_found, end.finished_at),
        (JobState::Succeeded, 2, 12, Some(at(3)))
    );
    let k = kinds(&s, j.id).await;
    assert_eq!(count(&k, "job.succeeded"), 1);
}

async fn stale_lease_writes_are_rejected(s: S) {
    s.job_insert(job("alice", 1)).await.unwrap();
    let t = claim(&s, "zombie", 1, 0).await.remove(0);
    // The same lease cannot be used twice.
    assert_eq!(
        finish(
            &s,
            t.lease,
            TaskOutcome::Defer {
                run_after: at(0),
                reason: "x".into()
            },
            1
        )
        .await
        .applied
        .len(),
        1
    );
    assert_eq!(finish(&s, t.lease, ok(1), 1).await.rejected, vec![t.id()]);
    // Reclaimed by another worker: the old token is rejected, the new one accepted.
    let t2 = claim(&s, "alive", 1, 2).await.remove(0);
    assert_eq!(t2.id(), t.id());
    assert!(t2.lease.token > t.lease.token);
    let forged = Lease {
        task_id: t.id(),
        token: LeaseToken(t.lease.token.0 + 99),
    };
    assert_eq!(finish(&s, forged, ok(1), 3).await.rejected, vec![t.id()]);
    assert_eq!(finish(&s, t.lease, ok(1), 3).await.rejected, vec![t.id()]);
    let row = s.task_get(t.id()).await.unwrap();
    assert_eq!(
        (row.state, row.lease_owner.as_deref()),
        (TaskState::Running, Some("alive"))
    );
    assert_eq!(finish(&s, t2.lease, ok(2), 4).await.applied, vec![t.id()]);
    assert_eq!(s.task_get(t.id()).await.unwrap().rows_found, Some(2));
    // A mixed batch: applied and rejected reported separately.
    let missing = Lease {
        task_id: TaskId(987_654),
        token: LeaseToken(1),
    };
    let r = s
        .task_finish(TaskFinishParams {
            finishes: vec![
                TaskFinish {
                    lease: t2.lease,
                    outcome: ok(9),
                },
                TaskFinish {
                    lease: missing,
                    outcome: ok(9),
                },
            ],
            now: at(5),
        })
        .await
        .unwrap();
    assert_eq!(r.applied, vec![]);
    assert_eq!(r.rejected, vec![t.id(), TaskId(987_654)]);
    assert_eq!(
        s.task_get(t.id()).await.unwrap().rows_found,
        Some(2),
        "result recorded once"
    );
}

async fn retry_spends_attempt_defer_does_not(s: S) {
    s.job_insert(job("alice", 1)).await.unwrap();
    let t = claim(&s, "w", 1, 0).await.remove(0);
    finish(
        &s,
        t.lease,
        TaskOutcome::Defer {
            run_after: at(10),
            reason: "provider throttled".into(),
        },
        1,
    )
    .await;
    let row = s.task_get(t.id()).await.unwrap();
    assert_eq!(
        (row.state, row.attempt, row.run_after),
        (TaskState::Pending, 0, at(10))
    );
    assert_eq!(row.last_error.as_deref(), Some("provider throttled"));

    let t = claim(&s, "w", 1, 10).await.remove(0);
    assert_eq!(t.attempt, 0);
    finish(
        &s,
        t.lease,
        TaskOutcome::Retry {
            run_after: at(20),
            error: "disk hiccup".into(),
        },
        11,
    )
    .await;
    let row = s.task_get(t.id()).await.unwrap();
    assert_eq!(
        (row.state, row.attempt, row.run_after),
        (TaskState::Pending, 1, at(20))
    );
    let t = claim(&s, "w", 1, 20).await.remove(0);
    assert_eq!(t.attempt, 1);
    assert_eq!(t.max_attempts, 3);
}

async fn a_runner_crash_is_counted_and_a_crashed_task_that_loses_its_worker_fails(s: S) {
    let mut p = job("alice", 2);
    p.max_attempts = 10;
    let j = s.job_insert(p).await.unwrap().job;
    let ts = claim(&s, "w", 2, 0).await;
    assert!(ts.iter().all(|t| t.crashes == 0), "{ts:?}");
    // A crash spends an attempt, is counted, and the next claim says so.
    for t in &ts {
        finish(
            &s,
            t.lease,
            TaskOutcome::Crashed {
                run_after: at(5),
                error: "the hunt crashed its runner (signal 6, SIGABRT)".into(),
            },
            1,
        )
        .await;
    }
    let row = s.task_get(ts[0].id()).await.unwrap();
    assert_eq!((row.state, row.attempt), (TaskState::Pending, 1));
    assert!(
        row.last_error
            .unwrap_or_default()
            .contains("crashed its runner")
    );
    let again = claim(&s, "w2", 2, 5).await;
    assert_eq!(again.len(), 2);
    assert!(
        again.iter().all(|t| t.crashes == 1 && t.attempt == 1),
        "{again:?}"
    );
    // A deferral keeps the count (it is not the task's fault)...
    finish(
        &s,
        again[1].lease,
        TaskOutcome::Defer {
            run_after: at(6),
            reason: "provider throttled".into(),
        },
        6,
    )
    .await;
    let third = claim(&s, "w3", 1, 7).await;
    assert_eq!((third[0].id(), third[0].crashes), (again[1].id(), 1));
    // ...and a crashed task whose worker then vanishes is not handed to a third process:
    // its lease expiry fails it, with attempts to spare.
    let r = s
        .task_rescue_expired(TaskRescueParams {
            limit: 10,
            now: at(100),
        })
        .await
        .unwrap();
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r.iter().all(|t| t.state == TaskState::Failed), "{r:?}");
    let job = s.job_get(j.id).await.unwrap();
    assert_eq!((job.state, job.counts.failed), (JobState::Failed, 2));
}

async fn failures_give_partial_or_failed_jobs(s: S) {
    let partial = s.job_insert(job("alice", 2)).await.unwrap().job;
    let failed = s.job_insert(job("bob", 1)).await.unwrap().job;
    let ts = claim(&s, "w", 10, 0).await;
    let by_job: HashMap<JobId, Vec<&ClaimedTask>> = ts.iter().fold(HashMap::new(), |mut m, t| {
        m.entry(t.job_id).or_default().push(t);
        m
    });
    let boom = || TaskOutcome::Failed {
        error: "unknown column".into(),
    };
    finish(&s, by_job[&partial.id][0].lease, ok(1), 1).await;
    finish(&s, by_job[&partial.id][1].lease, boom(), 1).await;
    finish(&s, by_job[&failed.id][0].lease, boom(), 1).await;
    let p = s.job_get(partial.id).await.unwrap();
    assert_eq!(
        (p.state, p.counts.done, p.counts.failed),
        (JobState::Partial, 1, 1)
    );
    let f = s.job_get(failed.id).await.unwrap();
    assert_eq!((f.state, f.counts.failed), (JobState::Failed, 1));
    let row = s.task_get(by_job[&failed.id][0].id()).await.unwrap();
    assert_eq!((row.state, row.attempt), (TaskState::Failed, 1));
    assert_eq!(row.last_error.as_deref(), Some("unknown column"));
}

async fn heartbeat_extends_and_reports_lost_leases(s: S) {
    let j = s.job_insert(job("alice", 2)).await.unwrap().job;
    let ts = claim(&s, "w", 2, 0).await;
    let leases: Vec<Lease> = ts.iter().map(|t| t.lease).collect();
    let lost = s
        .task_heartbeat(TaskHeartbeatParams {
            leases: leases.clone(),
            lease: lease(),
            now: at(20),
        })
        .await
        .unwrap();
    assert!(lost.is_empty());
    assert_eq!(
        s.task_get(ts[0].id()).await.unwrap().lease_expires_at,
        Some(at(50))
    );
    // Not expired at 40 thanks to the heartbeat.
    let rescued = s
        .task_rescue_expired(TaskRescueParams {
            limit: 10,
            now: at(40),
        })
        .await
        .unwrap();
    assert!(rescued.is_empty());
    // Cancelled: both leases are lost.
    s.job_cancel(JobCancelParams {
        id: j.id,
        by: "op".into(),
        reason: None,
        now: at(41),
    })
    .await
    .unwrap();
    let lost = s
        .task_heartbeat(TaskHeartbeatParams {
            leases: leases.clone(),
            lease: lease(),
            now: at(42),
        })
        .await
        .unwrap();
    assert_eq!(lost, leases);
    assert!(
        s.task_heartbeat(TaskHeartbeatParams {
            leases: vec![],
            lease: lease(),
            now: at(42)
        })
        .await
        .unwrap()
        .is_empty()
    );
}

async fn rescue_expired_leases_spends_attempts_then_fails(s: S) {
    let mut p = job("alice", 2);
    p.max_attempts = 2;
    let j = s.job_insert(p).await.unwrap().job;
    let ts = claim(&s, "dead", 1, 0).await;
    let live = claim(&s, "live", 1, 20).await;
    // At 31 only the first lease (expires 30) has expired; the second (50) is untouched.
    let r = s
        .task_rescue_expired(TaskRescueParams {
            limit: 10,
            now: at(31),
        })
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![RescuedTask {
            id: ts[0].id(),
            job_id: j.id,
            state: TaskState::Pending
        }]
    );
    let row = s.task_get(ts[0].id()).await.unwrap();
    assert_eq!(
        (row.state, row.attempt, row.lease_owner),
        (TaskState::Pending, 1, None)
    );
    assert!(row.last_error.unwrap_or_default().contains("dead"));
    assert_eq!(
        s.task_get(live[0].id()).await.unwrap().state,
        TaskState::Running
    );
    // The dead worker's late completion is rejected.
    assert_eq!(
        finish(&s, ts[0].lease, ok(1), 32).await.rejected,
        vec![ts[0].id()]
    );
    // Second expiry: no attempts left, the task fails.
    let again = claim(&s, "dead2", 1, 33).await;
    assert_eq!(again[0].id(), ts[0].id());
    let r = s
        .task_rescue_expired(TaskRescueParams {
            limit: 10,
            now: at(64),
        })
        .await
        .unwrap();
    assert!(r.contains(&RescuedTask {
        id: ts[0].id(),
        job_id: j.id,
        state: TaskState::Failed
    }));
    // The live one (expired at 50 without heartbeat) was rescued too.
    assert_eq!(r.len(), 2);
    let job = s.job_get(j.id).await.unwrap();
    assert_eq!((job.counts.failed, job.state), (1, JobState::Running));
    let k = kinds(&s, j.id).await;
    assert_eq!(count(&k, "task.rescued"), 2);
    assert_eq!(count(&k, "task.rescued_failed"), 1);
}

async fn cancel_stops_pending_and_running_tasks(s: S) {
    let j = s.job_insert(job("alice", 3)).await.unwrap().job;
    let running = claim(&s, "w", 1, 0).await.remove(0);
    let c = s
        .job_cancel(JobCancelParams {
            id: j.id,
            by: "alice".into(),
            reason: Some("wrong ip".into()),
            now: at(1),
        })
        .await
        .unwrap();
    assert_eq!(c.state, JobState::Cancelled);
    assert_eq!(c.counts.cancelled, 3);
    assert_eq!(c.finished_at, Some(at(1)));
    assert_eq!(c.error.as_deref(), Some("cancelled by alice: wrong ip"));
    let tasks = s
        .task_list(TaskListParams {
            job_id: j.id,
            limit: 10,
            after: None,
        })
        .await
        .unwrap();
    assert!(tasks.iter().all(|t| t.state == TaskState::Cancelled));
    assert_eq!(
        finish(&s, running.lease, ok(1), 2).await.rejected,
        vec![running.id()]
    );
    assert!(claim(&s, "w", 10, 2).await.is_empty());
    let err = s
        .job_cancel(JobCancelParams {
            id: j.id,
            by: "x".into(),
            reason: None,
            now: at(3),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let err = s
        .job_cancel(JobCancelParams {
            id: JobId(424_242),
            by: "x".into(),
            reason: None,
            now: at(3),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(
        s.job_get(j.id).await.unwrap().counts.cancelled,
        3,
        "failed cancel changed nothing"
    );
}

async fn bulk_insert_crosses_chunks(s: S) {
    let n = TASK_INSERT_CHUNK * 2 + 17;
    let j = s.job_insert(job("alice", n)).await.unwrap().job;
    assert_eq!(j.counts.total, n as i64);
    let mut seen = 0;
    let mut last: Option<TaskId> = None;
    loop {
        let got = claim(&s, "w", 4_000, 1).await;
        if got.is_empty() {
            break;
        }
        for t in &got {
            assert!(last.is_none_or(|l| t.id() > l), "claimed in id order");
            last = Some(t.id());
        }
        seen += got.len();
    }
    assert_eq!(seen, n);
}

async fn missing_rows_are_not_found(s: S) {
    assert!(matches!(
        s.job_get(JobId(5)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.task_get(TaskId(5)).await,
        Err(StoreError::NotFound(_))
    ));
    let none = s
        .task_list(TaskListParams {
            job_id: JobId(5),
            limit: 10,
            after: None,
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    // A missing job is held by no pause, even when pauses exist.
    s.pause_set(PauseSetParams {
        target: PauseTarget::All,
        reason: "r".into(),
        by: "op".into(),
        now: t0(),
    })
    .await
    .unwrap();
    assert_eq!(s.pause_list_for_job(JobId(5)).await.unwrap(), vec![]);
}

async fn every_state_change_is_journaled(s: S) {
    let j = s.job_insert(job("alice", 1)).await.unwrap().job;
    let t = claim(&s, "w", 1, 0).await.remove(0);
    finish(
        &s,
        t.lease,
        TaskOutcome::Retry {
            run_after: at(1),
            error: "e".into(),
        },
        1,
    )
    .await;
    let t = claim(&s, "w", 1, 1).await.remove(0);
    finish(
        &s,
        t.lease,
        TaskOutcome::Defer {
            run_after: at(2),
            reason: "r".into(),
        },
        2,
    )
    .await;
    let t = claim(&s, "w", 1, 2).await.remove(0);
    finish(&s, t.lease, ok(3), 3).await;
    let mut k = kinds(&s, j.id).await;
    // job.started is written by the same statement as the first claim, in either order.
    let started = k.iter().position(|k| k == "job.started").unwrap();
    assert!((1..=2).contains(&started), "{k:?}");
    k.remove(started);
    assert_eq!(
        k,
        vec![
            "job.submitted",
            "task.claimed",
            "task.retried",
            "task.claimed",
            "task.deferred",
            "task.claimed",
            "task.succeeded",
            "job.succeeded",
        ]
    );
    let ev = s
        .event_list(EventListParams {
            job_id: Some(j.id),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let claimed: Vec<_> = ev.iter().filter(|e| e.kind == "task.claimed").collect();
    assert_eq!(claimed[2].task_id, Some(t.id()));
    assert_eq!(claimed[2].scope.as_deref(), Some("aws:0"));
    assert_eq!(
        claimed[2].detail.as_ref().and_then(|d| d["token"].as_i64()),
        Some(3)
    );
    assert_eq!(claimed[2].at, at(2));
    // Pagination by id.
    let after = s
        .event_list(EventListParams {
            job_id: Some(j.id),
            after_id: Some(ev[6].id),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].kind, "task.succeeded");
}

async fn global_journal_pages_through_every_job(s: S) {
    let a = s.job_insert(job("alice", 2)).await.unwrap().job;
    let b = s.job_insert(job("bob", 1)).await.unwrap().job;
    for t in claim(&s, "w", 10, 1).await {
        finish(&s, t.lease, ok(1), 2).await;
    }
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .event_list(EventListParams {
                after_id: after,
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 2);
        after = Some(last.id);
        all.extend(page);
    }
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ordered by id");
    let per = |j: JobId| all.iter().filter(|e| e.job_id == Some(j)).count();
    // submitted, started, succeeded + per task claimed and succeeded
    assert_eq!((per(a.id), per(b.id)), (3 + 2 * 2, 3 + 2));
    assert_eq!(all.len(), per(a.id) + per(b.id));
}

async fn hand_back_defers_unknown_leases_of_one_worker(s: S) {
    let j = s.job_insert(job("alice", 5)).await.unwrap().job;
    let mine = claim(&s, "w1", 3, 0).await;
    let other = claim(&s, "w2", 2, 0).await;
    // w1 knows only its first lease: the claim that gave it the other two "lost its reply".
    let back = s
        .task_hand_back(TaskHandBackParams {
            of: HandBack::Worker {
                worker: "w1".into(),
                keep: vec![mine[0].lease],
            },
            reason: "claim reply lost".into(),
            now: at(1),
        })
        .await
        .unwrap();
    assert_eq!(back, vec![mine[1].id(), mine[2].id()]);
    for t in &mine[1..] {
        let row = s.task_get(t.id()).await.unwrap();
        assert_eq!(
            (row.state, row.attempt, row.lease_owner),
            (TaskState::Pending, 0, None)
        );
        assert_eq!(row.last_error.as_deref(), Some("claim reply lost"));
    }
    assert_eq!(
        s.task_get(mine[0].id()).await.unwrap().state,
        TaskState::Running
    );
    for t in &other {
        assert_eq!(
            s.task_get(t.id()).await.unwrap().state,
            TaskState::Running,
            "another worker's lease"
        );
    }
    // Handed-back tasks are claimable again at once, and their old leases are dead.
    assert_eq!(claim(&s, "w3", 10, 1).await.len(), 2);
    assert_eq!(
        finish(&s, mine[1].lease, ok(1), 2).await.rejected,
        vec![mine[1].id()]
    );
    assert_eq!(count(&kinds(&s, j.id).await, "task.deferred"), 2);
    let none = s
        .task_hand_back(TaskHandBackParams {
            of: HandBack::Worker {
                worker: "nobody".into(),
                keep: vec![],
            },
            reason: "x".into(),
            now: at(3),
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn lake_registry_round_trips_and_rejects_bad_names(s: S) {
    let p = |name: &str| LakeInsertParams {
        name: name.into(),
        url: format!("file:///data/{name}/"),
        scope: "aws:1".into(),
        partition_cols: vec!["dt".into()],
        schema: serde_json::json!({"fields": [{"name": "ts"}]}),
        tags: [("tenant".to_string(), "acme".to_string())].into(),
        options: Default::default(),
        now: t0(),
    };
    let b = s.lake_insert(p("lake-b")).await.unwrap();
    let a = s.lake_insert(p("lake-a")).await.unwrap();
    assert_eq!(s.lake_get("lake-b").await.unwrap(), b);
    assert_eq!(b.partition_cols, vec!["dt"]);
    assert_eq!(b.tags["tenant"], "acme");
    assert_eq!(b.created_at, t0());
    let names: Vec<String> = s
        .lake_list()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, vec![a.name.clone(), b.name.clone()]);
    assert!(matches!(
        s.lake_insert(p("lake-a")).await,
        Err(StoreError::Conflict(_))
    ));
    for bad in ["", "a b", "../etc", "x;drop", &"n".repeat(200)] {
        assert!(
            matches!(s.lake_insert(p(bad)).await, Err(StoreError::Invalid(_))),
            "{bad:?}"
        );
    }
    // No credential is stored in a lake row: not as an option, not in the URL.
    let secret_option = |k: &str| {
        let mut l = p("lake-c");
        l.options = [(k.to_string(), "x".to_string())].into();
        l
    };
    let mut bad = vec![
        secret_option("aws_secret_access_key"),
        secret_option("aws_session_token"),
        secret_option("azure_storage_account_key"),
        secret_option("password"),
    ];
    let mut in_url = p("lake-c");
    in_url.url = "https://h/lake/?X-Amz-Signature=abc".into();
    bad.push(in_url);
    let mut user_pass = p("lake-c");
    user_pass.url = "https://u:pw@h/lake/".into();
    bad.push(user_pass);
    for l in bad {
        let e = s.lake_insert(l.clone()).await.unwrap_err();
        assert!(
            matches!(e, StoreError::Invalid(ref m) if m.contains("credential")),
            "{l:?}: {e:?}"
        );
    }
    let fine = secret_option("aws_skip_signature");
    s.lake_insert(fine).await.unwrap();
    s.lake_remove("lake-c").await.unwrap();
    s.lake_remove("lake-a").await.unwrap();
    assert!(matches!(
        s.lake_get("lake-a").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.lake_remove("lake-a").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.lake_list().await.unwrap().len(), 1);
    // A lake with unfinished tasks stays until they end (a lake registered again under its
    // name must not receive them).
    s.lake_insert(p("lake-00000")).await.unwrap();
    let j = s.job_insert(job("alice", 1)).await.unwrap().job;
    let e = s.lake_remove("lake-00000").await.unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict(ref m) if m.contains("1 unfinished tasks")),
        "{e:?}"
    );
    s.job_cancel(JobCancelParams {
        id: j.id,
        by: "alice".into(),
        reason: None,
        now: at(1),
    })
    .await
    .unwrap();
    s.lake_remove("lake-00000").await.unwrap();
}

async fn task_wait_wakes_when_a_job_is_submitted(s: S) {
    // A short wait starts the listener (Postgres) and shows the timeout works.
    let t = std::time::Instant::now();
    s.task_wait(Duration::from_millis(300)).await;
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "returned early without a submission"
    );
    let waiter = submit_while_waiting(&s, Duration::from_secs(60), &s).await;
    let waited = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("woken well before the 60 s timeout")
        .unwrap();
    assert!(waited < Duration::from_secs(20), "{waited:?}");
}

async fn claims_interleave_jobs_of_equal_priority(s: S) {
    // A bulk job first, a small one behind it: the small one's tasks are claimed next to the
    // bulk job's, not after all of them.
    let bulk = s.job_insert(job("bulk", 5)).await.unwrap().job;
    let small = s.job_insert(job("small", 2)).await.unwrap().job;
    let one_by_one: Vec<JobId> = {
        let mut v = Vec::new();
        for i in 0..7 {
            v.extend(claim(&s, "w", 1, i).await.iter().map(|t| t.job_id));
        }
        v
    };
    let (b, m) = (bulk.id, small.id);
    assert_eq!(one_by_one, vec![b, m, b, m, b, b, b]);
    // The same order within one batch claim.
    let bulk2 = s.job_insert(job("bulk", 3)).await.unwrap().job;
    let small2 = s.job_insert(job("small", 1)).await.unwrap().job;
    let batch: Vec<JobId> = claim(&s, "w", 10, 10)
        .await
        .iter()
        .map(|t| t.job_id)
        .collect();
    assert_eq!(batch, vec![bulk2.id, small2.id, bulk2.id, bulk2.id]);
}

fn budget(scope: &str, parent: Option<&str>, rate: f64, burst: f64) -> BudgetSetParams {
    BudgetSetParams {
        scope: scope.into(),
        parent: parent.map(Into::into),
        rate,
        burst,
        ramp: None,
        now: t0(),
    }
}

async fn budget_of(s: &S, scope: &str) -> Budget {
    let all = s.budget_list().await.unwrap();
    all.into_iter()
        .find(|b| b.scope == scope)
        .unwrap_or_else(|| panic!("no budget {scope}"))
}

async fn take(s: &S, scope: &str, n: u32, at_ms: i64) -> u32 {
    let now = t0() + chrono::Duration::milliseconds(at_ms);
    s.budget_take(BudgetTakeParams {
        scope: scope.into(),
        n,
        hold: Duration::ZERO,
        now,
    })
    .await
    .unwrap()
}

async fn budgets_charge_scope_and_ancestors(s: S) {
    // Nothing set: unlimited.
    assert_eq!(take(&s, "aws:1", 7, 0).await, 7);
    s.budget_set(budget("*", None, 10.0, 5.0)).await.unwrap();
    s.budget_set(budget("aws:1", None, 1.0, 2.0)).await.unwrap();
    let cases: &[(&str, u32, i64, u32)] = &[
        ("aws:1", 10, 0, 2),     // the scope's burst limits
        ("gcp:x", 10, 0, 3),     // no budget of its own: the root's remaining 3
        ("aws:1", 10, 0, 0),     // both empty
        ("aws:1", 10, 1_000, 1), // 1 s later: the scope refilled 1, the root 5 (burst)
        ("gcp:x", 10, 1_000, 4),
        ("gcp:x", 0, 1_000, 0),
        ("aws:1", 1, 500, 0), // the clock went back: nothing accrues
    ];
    for &(scope, n, at, want) in cases {
        assert_eq!(
            take(&s, scope, n, at).await,
            want,
            "take({scope}, {n}) at {at} ms"
        );
    }
    let list = s.budget_list().await.unwrap();
    assert_eq!(
        list.iter().map(|b| b.scope.as_str()).collect::<Vec<_>>(),
        vec!["*", "aws:1"]
    );
    assert_eq!(list[1].parent.as_deref(), Some("*"));
    assert_eq!(list[0].parent, None);
    // A child under aws:1 is charged to aws:1 and the root too.
    s.budget_set(budget("aws:1/eu", Some("aws:1"), 100.0, 100.0))
        .await
        .unwrap();
    assert_eq!(
        take(&s, "aws:1/eu", 10, 3_000).await,
        2,
        "aws:1 refilled 2 (burst)"
    );
    // Lowering a burst clamps the tokens held.
    let b = s
        .budget_set(BudgetSetParams {
            now: at(10),
            ..budget("*", None, 10.0, 1.0)
        })
        .await
        .unwrap();
    assert!(b.tokens <= 1.0, "{b:?}");
}

fn ramp(
    mut p: BudgetSetParams,
    f: impl FnOnce(&mut sluice_core::AdaptiveConfig),
) -> BudgetSetParams {
    let mut r = sluice_core::AdaptiveConfig::default();
    f(&mut r);
    p.ramp = Some(r);
    p
}

async fn a_scopes_ramp_is_kept_until_changed_and_drives_its_slow_start(s: S) {
    s.budget_set(budget("*", None, 1000.0, 1000.0))
        .await
        .unwrap();
    let b = s
        .budget_set(budget("aws:1", None, 100.0, 100.0))
        .await
        .unwrap();
    assert_eq!(
        b.ramp,
        sluice_core::AdaptiveConfig::default(),
        "the defaults at first"
    );
    let fast = ramp(budget("aws:1", None, 100.0, 100.0), |r| {
        r.start_fraction = 0.5;
        r.interval = Duration::from_millis(500);
    });
    let want = fast.ramp.unwrap();
    assert_eq!(s.budget_set(fast).await.unwrap().ramp, want);
    // A change of rate alone keeps the ramp.
    let b = s
        .budget_set(budget("aws:1", None, 200.0, 100.0))
        .await
        .unwrap();
    assert_eq!(b.ramp, want);
    // A breaker that closes starts the scope at its own start fraction.
    let op = |op| BreakerUpdateParams {
        scope: "aws:1".into(),
        op,
        cfg: sluice_core::BreakerConfig::default(),
        now: t0(),
    };
    s.breaker_update(op(BreakerOp::Frozen)).await.unwrap();
    s.breaker_update(op(BreakerOp::Reset { by: "op".into() }))
        .await
        .unwrap();
    let b = s.budget_list().await.unwrap();
    let b = b.iter().find(|b| b.scope == "aws:1").unwrap();
    assert_eq!(b.effective_rate(t0()), 100.0, "0.5 of 200 calls/s");
    assert_eq!(
        b.effective_rate(at(1)),
        200.0,
        "doubled twice in a second, capped"
    );
}

async fn budgets_nest_at_most_32_deep(s: S) {
    s.budget_set(budget("*", None, 10.0, 10.0)).await.unwrap();
    let mut parent = "*".to_string();
    for i in 1..MAX_BUDGET_DEPTH {
        let scope = format!("s{i}");
        s.budget_set(budget(&scope, Some(&parent), 1.0, 1.0))
            .await
            .unwrap();
        parent = scope;
    }
    // The deepest scope is charged to all 32 levels.
    assert_eq!(take(&s, &parent, 1, 0).await, 1);
    let e = s
        .budget_set(budget("too-deep", Some(&parent), 1.0, 1.0))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid(ref m) if m.contains("deeper than 32")),
        "{e:?}"
    );
}

async fn budget_input_is_checked(s: S) {
    let missing_root = s
        .budget_set(budget("aws:1", None, 1.0, 1.0))
        .await
        .unwrap_err();
    assert!(
        matches!(missing_root, StoreError::Invalid(ref m) if m.contains("set it first")),
        "{missing_root:?}"
    );
    s.budget_set(budget("*", None, 10.0, 10.0)).await.unwrap();
    s.budget_set(budget("a", None, 1.0, 1.0)).await.unwrap();
    s.budget_set(budget("b", Some("a"), 1.0, 1.0))
        .await
        .unwrap();
    let cases = [
        budget("x", None, -1.0, 1.0),
        budget("x", None, f64::NAN, 1.0),
        budget("x", None, 1.0, f64::INFINITY),
        budget("", None, 1.0, 1.0),
        budget("x", Some("nope"), 1.0, 1.0),
        budget("x", Some("x"), 1.0, 1.0),
        budget("a", Some("b"), 1.0, 1.0), // a -> b -> a
        ramp(budget("x", None, 1.0, 1.0), |r| r.start_fraction = 0.0),
        ramp(budget("x", None, 1.0, 1.0), |r| r.min_fraction = 1.5),
        ramp(budget("x", None, 1.0, 1.0), |r| r.increase = f64::NAN),
        ramp(budget("x", None, 1.0, 1.0), |r| r.interval = Duration::ZERO),
        ramp(budget("x", None, 1.0, 1.0), |r| {
            r.interval = Duration::from_secs(7200)
        }),
    ];
    for c in cases {
        let e = s.budget_set(c.clone()).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{c:?}: {e:?}");
    }
    assert_eq!(
        s.budget_list().await.unwrap().len(),
        3,
        "nothing written by a refused change"
    );
}

async fn pauses_hold_back_claims_of_their_target_only(s: S) {
    // Two owners, tasks in scopes aws:0, aws:1, aws:2 (round robin in `job`).
    let a = s.job_insert(job("alice", 3)).await.unwrap().job;
    let b = s.job_insert(job("bob", 3)).await.unwrap().job;
    let pause = |target: PauseTarget| PauseSetParams {
        target,
        reason: "provider incident".into(),
        by: "op".into(),
        now: t0(),
    };
    let claimable = |s: S| async move {
        let mut n = 0;
        // Claim everything claimable, then hand it back so the next case starts equal.
        let got = s
            .task_claim(TaskClaimParams {
                worker: "w".into(),
                limit: 100,
                lease: lease(),
                now: at(1),
                skip_owners: Vec::new(),
                share: 0,
                prefer_scopes: Vec::new(),
            })
            .await
            .unwrap();
        n += got.len();
        let finishes = got
            .iter()
            .map(|t| TaskFinish {
                lease: t.lease,
                outcome: TaskOutcome::Defer {
                    run_after: at(0),
                    reason: "probe".into(),
                },
            })
            .collect();
        s.task_finish(TaskFinishParams {
            finishes,
            now: at(1),
        })
        .await
        .unwrap();
        n
    };
    let cases: Vec<(PauseTarget, usize)> = vec![
        (PauseTarget::All, 0),
        (PauseTarget::Owner("alice".into()), 3),
        (PauseTarget::Job(b.id), 3),
        (PauseTarget::Scope("aws:1".into()), 4),
        (PauseTarget::Owner("nobody".into()), 6),
    ];
    for (target, want) in cases {
        let p = s.pause_set(pause(target.clone())).await.unwrap();
        assert_eq!(p.target, target);
        assert_eq!(
            s.pause_list().await.unwrap(),
            vec![p.clone()],
            "stored and listed"
        );
        assert_eq!(claimable(s.clone()).await, want, "paused {target}");
        let for_a = s.pause_list_for_job(a.id).await.unwrap();
        let applies = matches!(&target, PauseTarget::All | PauseTarget::Scope(_))
            || target == PauseTarget::Owner("alice".into());
        assert_eq!(
            for_a.len(),
            usize::from(applies),
            "{target} holds back job {}: {for_a:?}",
            a.id
        );
        s.pause_clear(&target, "op", at(2)).await.unwrap();
    }
    assert_eq!(claimable(s.clone()).await, 6, "all lifted");
    assert!(matches!(
        s.pause_clear(&PauseTarget::All, "op", at(3)).await,
        Err(StoreError::NotFound(_))
    ));
    // Re-pausing replaces the reason; bad input is refused.
    s.pause_set(pause(PauseTarget::All)).await.unwrap();
    let again = s
        .pause_set(PauseSetParams {
            reason: "freeze".into(),
            ..pause(PauseTarget::All)
        })
        .await
        .unwrap();
    assert_eq!(s.pause_list().await.unwrap(), vec![again]);
    for bad in [
        PauseSetParams {
            reason: " ".into(),
            ..pause(PauseTarget::All)
        },
        pause(PauseTarget::Scope("".into())),
        pause(PauseTarget::Owner(" ".into())),
    ] {
        assert!(matches!(
            s.pause_set(bad).await,
            Err(StoreError::Invalid(_))
        ));
    }
    // The journal says who paused what and why.
    let k = kinds(&s, b.id).await;
    assert_eq!(
        count(&k, "pause.set"),
        1,
        "the job pause is on the job's timeline: {k:?}"
    );
    assert_eq!(count(&k, "pause.cleared"), 1);
    for key in ["all", "scope:aws:1", "owner:alice", "job:42"] {
        assert_eq!(
            PauseTarget::parse(key).map(|t| t.key()),
            Some(key.to_string())
        );
    }
    for bad in ["", "scope:", "job:x", "owner:", "tenant:acme", "ALL"] {
        assert_eq!(PauseTarget::parse(bad), None, "{bad:?}");
    }
}

async fn budget_hold_keeps_headroom_and_feedback_moves_the_rate(s: S) {
    s.budget_set(budget("*", None, 1000.0, 1000.0))
        .await
        .unwrap();
    s.budget_set(budget("aws:1", None, 10.0, 10.0))
        .await
        .unwrap();
    let take_hold = |n: u32, at_ms: i64, hold_ms: u64| {
        let s = s.clone();
        async move {
            s.budget_take(BudgetTakeParams {
                scope: "aws:1".into(),
                n,
                hold: Duration::from_millis(hold_ms),
                now: t0() + chrono::Duration::milliseconds(at_ms),
            })
            .await
            .unwrap()
        }
    };
    // Holding tokens up to 300 ms keeps rate x hold = 3 in the bucket.
    assert_eq!(take_hold(100, 0, 300).await, 7);
    // A hold longer than the burst allows still leaves one token takeable.
    assert_eq!(take_hold(100, 10_000, 60_000).await, 1);
    // Throttled: the effective rate halves (once per interval) and tokens accrue slower.
    s.budget_feedback("aws:1", BudgetFeedback::Throttled, at(20))
        .await
        .unwrap();
    s.budget_feedback("aws:1", BudgetFeedback::Throttled, at(20))
        .await
        .unwrap();
    let b = budget_of(&s, "aws:1").await;
    assert_eq!(b.effective_rate(at(20)), 5.0);
    assert_eq!(take_hold(100, 20_000, 0).await, 10); // what had accrued before the cut
    assert_eq!(take_hold(100, 21_000, 0).await, 5); // one second at 5/s (+ a sliver of growth)
    // Slow start: from 10 % of the rate, a nearly empty bucket.
    s.budget_feedback("aws:1", BudgetFeedback::SlowStart, at(30))
        .await
        .unwrap();
    let b = budget_of(&s, "aws:1").await;
    assert_eq!(b.effective_rate(at(30)), 1.0);
    assert!(b.tokens <= 1.0, "{b:?}");
    // Growth is a function of time: doubled after one interval, full rate after a while.
    assert!((b.effective_rate(at(32)) - 2.0).abs() < 1e-9);
    assert_eq!(b.effective_rate(at(200)), 10.0);
    // Feedback for a scope without a budget is a no-op; lifting a scope pause starts slow.
    s.budget_feedback("gcp:none", BudgetFeedback::Throttled, at(30))
        .await
        .unwrap();
    s.budget_take(BudgetTakeParams {
        scope: "aws:1".into(),
        n: 1,
        hold: Duration::ZERO,
        now: at(300),
    })
    .await
    .unwrap();
    let target = PauseTarget::Scope("aws:1".into());
    s.pause_set(PauseSetParams {
        target: target.clone(),
        reason: "x".into(),
        by: "op".into(),
        now: at(300),
    })
    .await
    .unwrap();
    s.pause_clear(&target, "op", at(301)).await.unwrap();
    let b = budget_of(&s, "aws:1").await;
    assert_eq!(b.effective_rate(at(301)), 1.0, "{b:?}");
}

async fn breakers_hold_back_their_scope_probe_once_and_close_with_slow_start(s: S) {
    use sluice_core::BreakerState::*;
    use sluice_core::breaker::Admission;
    s.budget_set(budget("*", None, 1000.0, 1000.0))
        .await
        .unwrap();
    s.budget_set(budget("aws:1", None, 100.0, 100.0))
        .await
        .unwrap();
    let j = s.job_insert(job("alice", 6)).await.unwrap().job; // scopes aws:0, aws:1, aws:2
    let cfg = sluice_core::BreakerConfig {
        failure_threshold: 2,
        window: Duration::from_secs(10),
        cooldown: Duration::from_secs(5),
        frozen_cooldown: Duration::from_secs(60),
        max_cooldown: Duration::from_secs(600),
        probe_timeout: Duration::from_secs(30),
    };
    let op = |scope: &str, op: BreakerOp, secs: i64| BreakerUpdateParams {
        scope: scope.into(),
        op,
        cfg,
        now: at(secs),
    };
    // Nothing known: closed, admitted.
    let u = s
        .breaker_update(op("aws:1", BreakerOp::Admit, 0))
        .await
        .unwrap();
    assert_eq!(
        (u.admission, u.row.breaker.state, u.changed_from),
        (Admission::Allowed, Closed, None)
    );
    // One throttle: still closed (journaled), the budget's rate is cut.
    let u = s
        .breaker_update(op("aws:1", BreakerOp::Throttled, 1))
        .await
        .unwrap();
    assert_eq!(u.row.breaker.state, Closed);
    let b = budget_of(&s, "aws:1").await;
    assert_eq!(b.effective_rate(at(1)), 50.0);
    // A frozen account opens it at once with the long cooldown.
    let u = s
        .breaker_update(op("aws:1", BreakerOp::Frozen, 2))
        .await
        .unwrap();
    assert_eq!((u.row.breaker.state, u.changed_from), (Open, Some(Closed)));
    assert_eq!(u.row.breaker.probe_after, Some(at(62)));
    // Claims skip aws:1 on every process until the probe time, others go on.
    let got = claim(&s, "w", 100, 3).await;
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|t| t.scope != "aws:1"), "{got:?}");
    let list = s.breaker_list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].breaker.state, Open);
    // Before the cooldown: rejected with the time; after: one probe, then rejected.
    let u = s
        .breaker_update(op("aws:1", BreakerOp::Admit, 10))
        .await
        .unwrap();
    assert_eq!(
        u.admission,
        Admission::Rejected {
            until: Some(at(62))
        }
    );
    let u = s
        .breaker_update(op("aws:1", BreakerOp::Admit, 62))
        .await
        .unwrap();
    assert_eq!(
        (u.admission, u.changed_from),
        (Admission::Probe, Some(Open))
    );
    let u = s
        .breaker_update(op("aws:1", BreakerOp::Admit, 63))
        .await
        .unwrap();
    assert_eq!(u.admission, Admission::Rejected { until: None });
    // While probing, claims still hold the scope back (until the probe's timeout).
    let got = claim(&s, "w", 100, 63).await;
    assert!(got.is_empty(), "{got:?}");
    // The probe fails (frozen again): open with a doubled cooldown.
    let u = s
        .breaker_update(op("aws:1", BreakerOp::Frozen, 64))
        .await
        .unwrap();
    assert_eq!(u.row.breaker.probe_after, Some(at(64 + 120)));
    // The next probe succeeds: closed, the budget restarts slow.
    let u = s
        .breaker_update(op("aws:1", BreakerOp::Admit, 184))
        .await
        .unwrap();
    assert_eq!(u.admission, Admission::Probe);
    let u = s
        .breaker_update(op("aws:1", BreakerOp::Success, 185))
        .await
        .unwrap();
    assert_eq!(
        (u.row.breaker.state, u.changed_from),
        (Closed, Some(HalfOpen))
    );
    let b = budget_of(&s, "aws:1").await;
    assert_eq!(b.effective_rate(at(185)), 10.0);
    let got = claim(&s, "w", 100, 186).await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|t| t.scope == "aws:1"));
    // An operator reset is journaled with who did it.
    s.breaker_update(op("aws:2", BreakerOp::Frozen, 190))
        .await
        .unwrap();
    let u = s
        .breaker_update(op(
            "aws:2",
            BreakerOp::Reset {
                by: "ops-bob".into(),
            },
            191,
        ))
        .await
        .unwrap();
    assert_eq!(u.row.breaker.state, Closed);
    let events = s
        .event_list(EventListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let kinds: Vec<(&str, Option<&str>)> = events
        .iter()
        .filter(|e| e.kind.starts_with("breaker.") || e.kind.starts_with("provider."))
        .map(|e| (e.kind.as_str(), e.scope.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("provider.throttled", Some("aws:1")),
            ("breaker.opened", Some("aws:1")),
            ("breaker.half_open", Some("aws:1")),
            ("breaker.opened", Some("aws:1")),
            ("breaker.half_open", Some("aws:1")),
            ("breaker.closed", Some("aws:1")),
            ("breaker.opened", Some("aws:2")),
            ("breaker.reset", Some("aws:2")),
        ]
    );
    // The scope filter finds one scope's provider events only.
    let aws2 = s
        .event_list(EventListParams {
            scope: Some("aws:2".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let aws2: Vec<&str> = aws2.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(aws2, ["breaker.opened", "breaker.reset"]);
    let reset = events.iter().rfind(|e| e.kind == "breaker.reset").unwrap();
    assert_eq!(reset.detail.as_ref().unwrap()["by"], "ops-bob");
    let _ = j;
    // Bad input.
    let err = s
        .breaker_update(op("", BreakerOp::Admit, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}

async fn hand_back_of_a_pause_target_defers_only_its_running_tasks(s: S) {
    // Scopes aws:0, aws:1, aws:2 round robin; two owners.
    let a = s.job_insert(job("alice", 6)).await.unwrap().job;
    let b = s.job_insert(job("bob", 3)).await.unwrap().job;
    let c = s.job_insert(job("carol", 2)).await.unwrap().job;
    let running = claim(&s, "w", 100, 0).await;
    assert_eq!(running.len(), 11);
    let back = |target: PauseTarget, at_s: i64| {
        let s = s.clone();
        async move {
            s.task_hand_back(TaskHandBackParams {
                of: HandBack::Target(target),
                reason: "paused --now".into(),
                now: at(at_s),
            })
            .await
            .unwrap()
        }
    };
    let got = back(PauseTarget::Scope("aws:1".into()), 1).await;
    assert_eq!(got.len(), 4, "{got:?}"); // alice's 2, bob's 1 and carol's 1 in aws:1
    for id in &got {
        let t = s.task_get(*id).await.unwrap();
        assert_eq!(
            (t.scope.as_str(), t.state, t.attempt),
            ("aws:1", TaskState::Pending, 0)
        );
    }
    assert_eq!(back(PauseTarget::Owner("bob".into()), 2).await.len(), 2);
    assert_eq!(back(PauseTarget::Job(a.id), 3).await.len(), 4);
    assert_eq!(back(PauseTarget::All, 4).await.len(), 1);
    assert!(back(PauseTarget::All, 5).await.is_empty());
    // The workers' late finishes are rejected: nothing doubled.
    let r = finish(&s, running[0].lease, ok(1), 6).await;
    assert_eq!(r.rejected, vec![running[0].id()]);
    let _ = (b, c);
}

/// Claims one task at a time, finishing each before the next claim; returns the owners.
async fn drain_one_by_one(s: &S, n: usize, from: i64) -> Vec<JobId> {
    let mut v = Vec::new();
    for i in 0..n as i64 {
        let got = claim(s, "w", 1, from + i).await;
        for t in got {
            v.push(t.job_id);
            finish(s, t.lease, ok(0), from + i).await;
        }
    }
    v
}

async fn a_new_job_neither_starves_nor_is_starved_by_a_draining_one(s: S) {
    // Job A has drained 6 of its 10 tasks when B (another owner, 4 tasks) arrives. B starts
    // at the current virtual time: the two alternate. (With tags = position in job, B's
    // positions 0..3 would all come before A's 6..9: A would wait for all of B.)
    let a = s.job_insert(job("alice", 10)).await.unwrap().job.id;
    assert_eq!(drain_one_by_one(&s, 6, 0).await, vec![a; 6]);
    let mut p = job("bob", 4);
    p.now = at(6);
    let b = s.job_insert(p).await.unwrap().job.id;
    assert_eq!(
        drain_one_by_one(&s, 8, 7).await,
        vec![a, b, a, b, a, b, a, b]
    );
    assert_eq!(s.job_get(a).await.unwrap().state, JobState::Succeeded);
    assert_eq!(s.job_get(b).await.unwrap().state, JobState::Succeeded);
}

async fn owners_share_the_claims_not_their_jobs(s: S) {
    // heavy submits three jobs, light one: after the leader's rebalance, light gets half the
    // claims and heavy's three jobs share the other half in turn.
    let h: Vec<JobId> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(s.job_insert(job("heavy", 6)).await.unwrap().job.id);
        }
        v
    };
    let l = s.job_insert(job("light", 10)).await.unwrap().job.id;
    let rebalance = |n| {
        let s = s.clone();
        async move {
            s.job_rebalance(JobRebalanceParams { now: at(n) })
                .await
                .unwrap()
        }
    };
    assert_eq!(rebalance(1).await, 3, "heavy's three jobs get stride 3");
    assert_eq!(rebalance(2).await, 0, "nothing changed: nothing to do");
    let order = drain_one_by_one(&s, 8, 3).await;
    assert_eq!(order, vec![h[0], l, h[1], l, h[2], l, h[0], l]);
    let restrided = kinds(&s, h[1]).await;
    assert!(
        restrided.contains(&"job.restrided".to_string()),
        "{restrided:?}"
    );
    // One of heavy's jobs ends: the other two share heavy's half from now on.
    s.job_cancel(JobCancelParams {
        id: h[2],
        by: "t".into(),
        reason: None,
        now: at(20),
    })
    .await
    .unwrap();
    assert_eq!(rebalance(21).await, 2);
    let order = drain_one_by_one(&s, 6, 22).await;
    let light = order.iter().filter(|j| **j == l).count();
    assert_eq!(light, 3, "light keeps half the claims: {order:?}");
    assert!(order.contains(&h[0]) && order.contains(&h[1]), "{order:?}");
}

async fn a_claim_skips_the_owners_it_is_told_to(s: S) {
    // A worker's spare slot claims for owners other than the one filling its slots.
    let bulk = s.job_insert(job("bulk", 5)).await.unwrap().job.id;
    let small = s.job_insert(job("small", 2)).await.unwrap().job.id;
    let skipping = |owners: &[&str], limit| {
        let s = s.clone();
        let skip_owners = owners.iter().map(|o| o.to_string()).collect();
        async move {
            s.task_claim(TaskClaimParams {
                worker: "w".into(),
                limit,
                lease: lease(),
                now: at(1),
                skip_owners,
                share: 0,
                prefer_scopes: Vec::new(),
            })
            .await
            .unwrap()
        }
    };
    let got = skipping(&["bulk"], 10).await;
    assert_eq!(got.len(), 2, "only small's tasks: {got:?}");
    assert!(got.iter().all(|t| t.job_id == small && t.owner == "small"));
    assert!(skipping(&["bulk", "small"], 10).await.is_empty());
    let rest = skipping(&[], 10).await;
    assert_eq!(rest.len(), 5);
    assert!(rest.iter().all(|t| t.job_id == bulk && t.owner == "bulk"));
}

async fn one_leader_at_a_time_and_a_standby_takes_over(s: S) {
    let elect = |holder: &'static str, n: i64| {
        let s = s.clone();
        async move {
            s.leader_elect(LeaderElectParams {
                name: "scheduler".into(),
                holder: holder.into(),
                ttl: Duration::from_secs(10),
                now: at(n),
            })
            .await
            .unwrap()
        }
    };
    let check = |l: Leadership, holder: &str, term: i64, expires: i64| {
        assert_eq!(
            (l.holder.as_str(), l.term, l.expires_at),
            (holder, term, at(expires))
        );
    };
    check(elect("a", 0).await, "a", 1, 10);
    check(elect("b", 1).await, "a", 1, 10);
    check(elect("a", 5).await, "a", 1, 15); // renewed, same term
    check(elect("b", 14).await, "a", 1, 15);
    check(elect("b", 15).await, "b", 2, 25); // a stopped renewing: b takes over
    check(elect("a", 16).await, "b", 2, 25);
    assert!(
        !s.leader_resign("scheduler", "a", at(17)).await.unwrap(),
        "a is not the leader"
    );
    assert!(s.leader_resign("scheduler", "b", at(17)).await.unwrap());
    check(elect("a", 17).await, "a", 3, 27); // a resigned lease is free at once
    // Another role is elected on its own.
    let other = s
        .leader_elect(LeaderElectParams {
            name: "cleaner".into(),
            holder: "b".into(),
            ttl: Duration::from_secs(10),
            now: at(18),
        })
        .await
        .unwrap();
    assert_eq!((other.holder.as_str(), other.term), ("b", 1));
    let ev = s
        .event_list(EventListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let leader: Vec<(String, serde_json::Value)> = ev
        .into_iter()
        .filter(|e| e.kind.starts_with("leader."))
        .map(|e| (e.kind, e.detail.unwrap_or_default()))
        .collect();
    let summary: Vec<(String, String, i64)> = leader
        .iter()
        .map(|(k, d)| {
            (
                k.clone(),
                d["holder"].as_str().unwrap_or("").to_string(),
                d["term"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let want = [
        ("leader.elected", "a", 1),
        ("leader.elected", "b", 2),
        ("leader.resigned", "b", 2),
        ("leader.elected", "a", 3),
        ("leader.elected", "b", 1),
    ];
    let want: Vec<(String, String, i64)> = want
        .iter()
        .map(|(k, h, t)| (k.to_string(), h.to_string(), *t))
        .collect();
    assert_eq!(summary, want);
    assert_eq!(leader[1].1["previous"], "a");
}

async fn backlog_and_finished_jobs_come_from_the_job_rows(s: S) {
    assert_eq!(s.job_backlog().await.unwrap(), vec![]);
    let a = s.job_insert(job("alice", 4)).await.unwrap().job.id;
    let mut p = job("bob", 3);
    p.priority = 5;
    p.now = at(10);
    let b = s.job_insert(p).await.unwrap().job.id;
    let mut p = job("carol", 2);
    p.now = at(20);
    let c = s.job_insert(p).await.unwrap().job.id;
    // Two of b's tasks finish (priority 5 is claimed first); c is cancelled.
    for t in claim(&s, "w", 2, 30).await {
        assert_eq!(t.job_id, b);
        finish(&s, t.lease, ok(1), 31).await;
    }
    s.job_cancel(JobCancelParams {
        id: c,
        by: "t".into(),
        reason: None,
        now: at(40),
    })
    .await
    .unwrap();
    let backlog = s.job_backlog().await.unwrap();
    let want = vec![
        Backlog {
            priority: 5,
            open_jobs: 1,
            open_tasks: 1,
            oldest_created_at: at(10),
        },
        Backlog {
            priority: 0,
            open_jobs: 1,
            open_tasks: 4,
            oldest_created_at: t0(),
        },
    ];
    assert_eq!(backlog, want);
    // b finishes at 50.
    for t in claim(&s, "w", 1, 50).await {
        finish(&s, t.lease, ok(1), 50).await;
    }
    let fin = |after, until| {
        let s = s.clone();
        async move {
            s.job_finished(JobFinishedParams {
                after: at(after),
                until: at(until),
                limit: 10,
            })
            .await
            .unwrap()
            .into_iter()
            .map(|j| (j.id, j.priority, j.state, j.created_at, j.finished_at))
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        fin(0, 100).await,
        vec![
            (c, 0, JobState::Cancelled, at(20), at(40)),
            (b, 5, JobState::Succeeded, at(10), at(50)),
        ]
    );
    assert_eq!(
        fin(40, 50).await.len(),
        1,
        "after is exclusive, until inclusive"
    );
    assert_eq!(fin(50, 100).await, vec![]);
    let backlog = s.job_backlog().await.unwrap();
    assert_eq!(backlog.len(), 1);
    assert_eq!((backlog[0].priority, backlog[0].open_tasks), (0, 4));
    let _ = a;
}

async fn a_dry_budget_is_released_last_and_rediscovered(s: S) {
    s.budget_set(budget("*", None, 1000.0, 1000.0))
        .await
        .unwrap();
    s.budget_set(budget("aws:1", None, 1.0, 1.0)).await.unwrap();
    // aws:2 spends aws:1's budget too: it goes dry with it.
    s.budget_set(budget("aws:2", Some("aws:1"), 100.0, 100.0))
        .await
        .unwrap();
    // lake-i is in scope aws:(i % 3), released in lake order.
    s.job_insert(job("alice", 9)).await.unwrap();
    let lakes = |got: Vec<ClaimedTask>| got.into_iter().map(|t| t.lake).collect::<Vec<_>>();
    // A take that comes back empty marks aws:1 dry until it refills (1 s at 1/s).
    assert_eq!(take(&s, "aws:1", 1, 0).await, 1);
    assert_eq!(take(&s, "aws:1", 1, 0).await, 0);
    assert_eq!(
        lakes(claim(&s, "w", 2, 0).await),
        ["lake-00000", "lake-00003"],
        "aws:1 and its child aws:2 are skipped while dry"
    );
    // Refilled: the next claim finds aws:1 again without anyone clearing the mark.
    assert_eq!(lakes(claim(&s, "w", 1, 2).await), ["lake-00001"]);
    // Dry again; with one other task runnable, the rest of the claim falls back to the dry
    // scopes in release order rather than leave the slot idle.
    assert_eq!(take(&s, "aws:1", 1, 2_000).await, 1);
    assert_eq!(take(&s, "aws:1", 1, 2_000).await, 0);
    assert_eq!(
        lakes(claim(&s, "w", 2, 2).await),
        ["lake-00006", "lake-00002"]
    );
    // Setting the budget clears the mark at once.
    s.budget_set(BudgetSetParams {
        now: at(2),
        ..budget("aws:1", None, 5.0, 5.0)
    })
    .await
    .unwrap();
    assert_eq!(lakes(claim(&s, "w", 1, 2).await), ["lake-00004"]);
}

async fn a_migrated_store_is_ready(s: S) {
    s.ready().await.unwrap();
}

#[tokio::test]
async fn an_unmigrated_database_is_not_ready() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    let e = store.ready().await.unwrap_err();
    assert!(
        matches!(e, StoreError::NotReady(ref m) if m.contains("sluice migrate")),
        "{e:?}"
    );
    store.migrate().await.unwrap();
    store.ready().await.unwrap();
}

fn token(owner: &str, role: Role, hash: &str) -> TokenInsertParams {
    TokenInsertParams {
        owner: owner.into(),
        role,
        hash: hash.into(),
        lakes: LakeAccess::all(),
        label: "laptop".into(),
        now: t0(),
    }
}

async fn tokens_are_found_by_hash_until_revoked(s: S) {
    let h1 = "a".repeat(64);
    let h2 = "b".repeat(64);
    let t1 = s
        .token_insert(token("alice", Role::Researcher, &h1))
        .await
        .unwrap();
    let t2 = s
        .token_insert(token("ops", Role::Admin, &h2))
        .await
        .unwrap();
    assert_eq!(
        (t1.owner.as_str(), t1.role, t1.revoked_at),
        ("alice", Role::Researcher, None)
    );
    assert_eq!(s.token_find(&h1).await.unwrap(), t1);
    assert_eq!(s.token_find(&h2).await.unwrap().role, Role::Admin);
    assert!(matches!(
        s.token_find(&"c".repeat(64)).await,
        Err(StoreError::NotFound(_))
    ));
    // The same hash twice is refused (a token is only ever stored once).
    assert!(
        s.token_insert(token("mallory", Role::Admin, &h1))
            .await
            .is_err()
    );
    // A token limited to lakes by tags keeps its groups.
    let red = LakeAccess(vec![[("team".to_string(), "red".to_string())].into()]);
    let t3 = s
        .token_insert(TokenInsertParams {
            lakes: red.clone(),
            ..token("carol", Role::Researcher, &"e".repeat(64))
        })
        .await
        .unwrap();
    assert_eq!(t3.lakes, red);
    assert_eq!(s.token_find(&"e".repeat(64)).await.unwrap().lakes, red);
    assert!(t1.lakes.is_all(), "no groups: every lake");
    for bad in [
        token("", Role::Researcher, &"d".repeat(64)),
        token("*", Role::Researcher, &"d".repeat(64)),
        token("alice", Role::Researcher, "short"),
        token("alice", Role::Researcher, &"z".repeat(64)),
        TokenInsertParams {
            lakes: LakeAccess(vec![Default::default()]),
            ..token("alice", Role::Researcher, &"d".repeat(64))
        },
    ] {
        assert!(matches!(
            s.token_insert(bad).await,
            Err(StoreError::Invalid(_))
        ));
    }
    let r = s.token_revoke(t1.id, at(5)).await.unwrap();
    assert_eq!(r.revoked_at, Some(at(5)));
    assert_eq!(
        s.token_revoke(t1.id, at(9)).await.unwrap().revoked_at,
        Some(at(5))
    );
    assert!(matches!(
        s.token_find(&h1).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.token_revoke(999, at(9)).await,
        Err(StoreError::NotFound(_))
    ));
    let all = s.token_list().await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![t1.id, t2.id, t3.id]
    );
}

/// Claims everything claimable now; returns how many tasks each owner got.
async fn claimed_by_owner(
    s: &S,
    limit: u32,
    now: i64,
) -> (Vec<ClaimedTask>, HashMap<String, usize>) {
    let got = claim(s, "w", limit, now).await;
    let mut by = HashMap::new();
    for t in &got {
        *by.entry(t.owner.clone()).or_insert(0) += 1;
    }
    (got, by)
}

async fn owner_quotas_cap_running_tasks_across_claims(s: S) {
    // alice has a 40-lake bulk job at a higher priority; bob and carol one small job each.
    let mut bulk = job("alice", 40);
    bulk.priority = 5;
    s.job_insert(bulk).await.unwrap();
    s.job_insert(job("bob", 6)).await.unwrap();
    s.job_insert(job("carol", 6)).await.unwrap();
    let set = |target: QuotaTarget, max_running| QuotaSetParams {
        target,
        max_running,
        by: "op".into(),
        now: t0(),
    };
    s.quota_set(set(QuotaTarget::Default, 4)).await.unwrap();
    s.quota_set(set(QuotaTarget::Owner("carol".into()), 1))
        .await
        .unwrap();
    let listed = s.quota_list().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|q| (q.target.clone(), q.max_running))
            .collect::<Vec<_>>(),
        vec![
            (QuotaTarget::Default, 4),
            (QuotaTarget::Owner("carol".into()), 1)
        ]
    );
    // One claim of 100: alice's priority would take every slot; the quota keeps her at 4,
    // bob at the default 4, carol at her own 1. Claims in small batches reach the same.
    let (first, by) = claimed_by_owner(&s, 3, 1).await;
    assert_eq!(first.len(), 3);
    let (_, more) = claimed_by_owner(&s, 100, 1).await;
    let mut total = by.clone();
    for (o, n) in more {
        *total.entry(o).or_insert(0) += n;
    }
    let want: HashMap<String, usize> =
        [("alice".into(), 4), ("bob".into(), 4), ("carol".into(), 1)].into();
    assert_eq!(total, want, "running per owner under the quotas");
    let usage = |max_running, running| {
        Some(QuotaUsage {
            max_running,
            running,
        })
    };
    assert_eq!(s.quota_usage("alice").await.unwrap(), usage(4, 4));
    assert_eq!(
        s.quota_usage("carol").await.unwrap(),
        usage(1, 1),
        "her own beats the default"
    );
    assert_eq!(s.quota_usage("erin").await.unwrap(), usage(4, 0));
    assert!(
        claim(&s, "w", 100, 2).await.is_empty(),
        "every owner is at their limit"
    );
    // A finished task makes room for one more of its owner's, not more.
    s.task_finish(TaskFinishParams {
        finishes: vec![TaskFinish {
            lease: first[0].lease,
            outcome: TaskOutcome::Succeeded {
                rows: 0,
                result_uri: None,
            },
        }],
        now: at(3),
    })
    .await
    .unwrap();
    let (_, by) = claimed_by_owner(&s, 100, 3).await;
    assert_eq!(by, [(first[0].owner.clone(), 1)].into());
    // Raising a quota takes effect at the next claim; clearing it lifts the limit.
    s.quota_set(set(QuotaTarget::Owner("carol".into()), 3))
        .await
        .unwrap();
    assert_eq!(
        claimed_by_owner(&s, 100, 4).await.1,
        [("carol".into(), 2)].into()
    );
    s.quota_clear(&QuotaTarget::Default, "op", at(5))
        .await
        .unwrap();
    assert_eq!(s.quota_usage("alice").await.unwrap(), None);
    let (_, by) = claimed_by_owner(&s, 100, 5).await;
    assert_eq!(by.get("alice"), Some(&(40 - 5)), "{by:?}");
    assert!(matches!(
        s.quota_clear(&QuotaTarget::Default, "op", at(5)).await,
        Err(StoreError::NotFound(_))
    ));
    // Bad quotas change nothing.
    for bad in [
        set(QuotaTarget::Owner("dave".into()), -1),
        set(QuotaTarget::Owner(String::new()), 2),
        set(QuotaTarget::Owner("*".into()), 2),
    ] {
        assert!(
            matches!(s.quota_set(bad.clone()).await, Err(StoreError::Invalid(_))),
            "{bad:?}"
        );
    }
    assert_eq!(s.quota_list().await.unwrap().len(), 1);
    let kinds: Vec<String> = s
        .event_list(EventListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("quota."))
        .collect();
    assert_eq!(
        kinds,
        ["quota.set", "quota.set", "quota.set", "quota.cleared"]
    );
}

/// Claims and finishes every claimable task at `now` (the jobs they belong to finish then).
async fn finish_all(s: &S, now: i64) -> usize {
    let got = claim(s, "w", 1000, now).await;
    let finishes = got
        .iter()
        .map(|t| TaskFinish {
            lease: t.lease,
            outcome: TaskOutcome::Succeeded {
                rows: 1,
                result_uri: Some(format!("jobs/{}/{}.parquet", t.job_id, t.id())),
            },
        })
        .collect();
    s.task_finish(TaskFinishParams {
        finishes,
        now: at(now),
    })
    .await
    .unwrap();
    got.len()
}

async fn the_cleaner_removes_finished_jobs_past_their_retention_only(s: S) {
    let with = |owner: &str, retention_secs: Option<i64>| JobInsertParams {
        retention_secs,
        ..job(owner, 2)
    };
    let a = s.job_insert(with("alice", None)).await.unwrap().job;
    let keep = s.job_insert(with("bob", Some(0))).await.unwrap().job;
    let long = s.job_insert(with("carol", Some(100))).await.unwrap().job;
    assert_eq!(s.job_get(long.id).await.unwrap().retention_secs, Some(100));
    assert_eq!(finish_all(&s, 10).await, 6);
    // dave's job runs: one task claimed, one pending.
    let running = s.job_insert(job("dave", 2)).await.unwrap().job;
    assert_eq!(claim(&s, "w", 1, 11).await.len(), 1);
    let purge = |select, now| JobPurgeParams {
        select,
        limit: 100,
        by: "cleaner".into(),
        now: at(now),
    };
    let expired = |default_secs| PurgeSelect::Expired { default_secs };
    let ids = |v: Vec<PurgedJob>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
    // (what, when, purged)
    let cases = [
        (expired(Some(60)), 69, vec![]),
        (PurgeSelect::Job(running.id), 70, vec![]),
        (expired(None), 70, vec![]),
        (expired(Some(60)), 70, vec![a.id]),
        (expired(Some(60)), 109, vec![]),
        (expired(Some(60)), 110, vec![long.id]),
        (PurgeSelect::OlderThan { secs: 1 }, 10_000, vec![]),
    ];
    for (select, now, want) in cases {
        let got = s.job_purge(purge(select.clone(), now)).await.unwrap();
        assert_eq!(ids(got), want, "{select:?} at {now}");
    }
    // What went with alice's job: tasks, journal; what stays: the others, and one journal row
    // of the purge itself.
    assert!(matches!(
        s.job_get(a.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(s.task_list_all(a.id).await.unwrap().is_empty());
    let events = s
        .event_list(EventListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!events.iter().any(|e| e.job_id == Some(a.id)));
    let purged: Vec<&Event> = events.iter().filter(|e| e.kind == "job.purged").collect();
    assert_eq!(purged.len(), 2);
    assert_eq!(purged[0].detail.as_ref().unwrap()["job"], a.id.0);
    assert_eq!(purged[0].detail.as_ref().unwrap()["tasks"], 2);
    assert_eq!(s.job_get(keep.id).await.unwrap().state, JobState::Succeeded);
    assert_eq!(s.task_list_all(running.id).await.unwrap().len(), 2);
    // An operator's purge takes any finished job but one kept (retention 0) by age, and a
    // named finished job whatever its retention.
    let e = s.job_insert(with("erin", None)).await.unwrap().job;
    finish_all(&s, 200).await;
    s.pause_set(PauseSetParams {
        target: PauseTarget::Job(e.id),
        reason: "look".into(),
        by: "op".into(),
        now: at(200),
    })
    .await
    .unwrap();
    let got = s
        .job_purge(purge(PurgeSelect::OlderThan { secs: 10 }, 300))
        .await
        .unwrap();
    assert_eq!(ids(got), vec![e.id], "not bob's, kept");
    // The newest job's id is never handed out again, and its pause went with it.
    let next = s.job_insert(job("zed", 1)).await.unwrap().job;
    assert!(next.id > e.id, "{} reused", next.id);
    assert!(s.pause_list().await.unwrap().is_empty());
    let got = s
        .job_purge(purge(PurgeSelect::Job(keep.id), 300))
        .await
        .unwrap();
    assert_eq!(ids(got), vec![keep.id]);
    // Bad retentions are refused before anything is written.
    let bad = s.job_insert(with("frank", Some(-1))).await.unwrap_err();
    assert!(
        matches!(bad, StoreError::Invalid(ref m) if m.contains("retention")),
        "{bad:?}"
    );
    // dave's job is untouched: its task claimed at 11 still runs (the other finished at 200);
    // zed's one task waits.
    let counts = s.task_backlog().await.unwrap();
    let open: i64 = counts
        .counts
        .iter()
        .filter(|c| matches!(c.state, TaskState::Pending | TaskState::Running))
        .map(|c| c.tasks)
        .sum();
    assert_eq!(open, 2);
    assert_eq!(
        s.job_get(running.id).await.unwrap().state,
        JobState::Running
    );
}

async fn a_default_quota_of_zero_holds_back_only_owners_without_their_own(s: S) {
    // mallory's tasks sit at the head of the queue; carol has a quota of her own.
    let mut head = job("mallory", 20);
    head.priority = 10;
    s.job_insert(head).await.unwrap();
    s.job_insert(job("carol", 5)).await.unwrap();
    for (target, max_running) in [
        (QuotaTarget::Default, 0),
        (QuotaTarget::Owner("carol".into()), 10),
    ] {
        s.quota_set(QuotaSetParams {
            target,
            max_running,
            by: "op".into(),
            now: t0(),
        })
        .await
        .unwrap();
    }
    let (_, by) = claimed_by_owner(&s, 4, 1).await;
    assert_eq!(
        by,
        [("carol".into(), 4)].into(),
        "mallory's head does not block"
    );
    let (_, by) = claimed_by_owner(&s, 4, 1).await;
    assert_eq!(by, [("carol".into(), 1)].into());
}

async fn a_demoted_job_takes_its_place_in_the_new_priority(s: S) {
    // bob's priority-0 job has run for a while (its fair tags moved on); alice's priority-5 job
    // is then moved down to 0: it takes turns with bob's from now on, it does not go first on
    // the strength of tags from another priority's clock.
    let b = s.job_insert(job("bob", 8)).await.unwrap().job;
    for t in claim(&s, "w", 4, 1).await {
        s.task_finish(TaskFinishParams {
            finishes: vec![TaskFinish {
                lease: t.lease,
                outcome: TaskOutcome::Succeeded {
                    rows: 0,
                    result_uri: None,
                },
            }],
            now: at(1),
        })
        .await
        .unwrap();
    }
    let mut urgent = job("alice", 4);
    urgent.priority = 5;
    let a = s.job_insert(urgent).await.unwrap().job;
    s.job_set_priority(JobPriorityParams {
        id: a.id,
        priority: 0,
        by: "op".into(),
        now: at(2),
    })
    .await
    .unwrap();
    let next: Vec<JobId> = claim(&s, "w", 4, 3)
        .await
        .iter()
        .map(|t| t.job_id)
        .collect();
    assert_eq!(
        next.iter().filter(|j| **j == b.id).count(),
        2,
        "bob's and alice's tasks take turns: {next:?}"
    );
}

async fn a_new_priority_moves_a_jobs_unfinished_tasks(s: S) {
    let bulk = s.job_insert(job("alice", 6)).await.unwrap().job;
    let urgent = s.job_insert(job("bob", 2)).await.unwrap().job;
    // One of alice's tasks runs; then an operator puts bob's job first.
    let running = claim(&s, "w", 1, 1).await;
    assert_eq!(running[0].job_id, bulk.id);
    let j = s
        .job_set_priority(JobPriorityParams {
            id: urgent.id,
            priority: 50,
            by: "op".into(),
            now: at(2),
        })
        .await
        .unwrap();
    assert_eq!(j.priority, 50);
    let next = claim(&s, "w", 2, 3).await;
    assert!(next.iter().all(|t| t.job_id == urgent.id), "{next:?}");
    let events = job_events(&s, urgent.id).await;
    let e = events
        .iter()
        .find(|e| e.kind == "job.reprioritized")
        .expect("journaled");
    assert_eq!(
        e.detail,
        Some(serde_json::json!({"from": 0, "to": 50, "by": "op"}))
    );
    // Out of range, a missing job and a finished one change nothing.
    let set = |id, priority| JobPriorityParams {
        id,
        priority,
        by: "op".into(),
        now: at(4),
    };
    assert!(matches!(
        s.job_set_priority(set(bulk.id, 101)).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.job_set_priority(set(JobId(999), 1)).await,
        Err(StoreError::NotFound(_))
    ));
    s.job_cancel(JobCancelParams {
        id: bulk.id,
        by: "alice".into(),
        reason: None,
        now: at(5),
    })
    .await
    .unwrap();
    assert!(matches!(
        s.job_set_priority(set(bulk.id, 1)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.job_get(bulk.id).await.unwrap().priority, 0);
}

async fn job_list_pages_newest_first_by_owner_and_state(s: S) {
    let mut ids = Vec::new();
    for owner in ["alice", "bob", "alice", "alice"] {
        ids.push(s.job_insert(job(owner, 1)).await.unwrap().job.id);
    }
    s.job_cancel(JobCancelParams {
        id: ids[2],
        by: "alice".into(),
        reason: None,
        now: at(1),
    })
    .await
    .unwrap();
    let list = |owner: Option<&str>, state: Option<JobState>, before: Option<JobId>, limit| {
        JobListParams {
            owner: owner.map(Into::into),
            state,
            before,
            limit,
        }
    };
    let got = |v: Vec<Job>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        got(s.job_list(list(None, None, None, 10)).await.unwrap()),
        vec![ids[3], ids[2], ids[1], ids[0]]
    );
    let page1 = got(s
        .job_list(list(Some("alice"), None, None, 2))
        .await
        .unwrap());
    assert_eq!(page1, vec![ids[3], ids[2]]);
    let page2 = got(s
        .job_list(list(Some("alice"), None, Some(ids[2]), 2))
        .await
        .unwrap());
    assert_eq!(page2, vec![ids[0]]);
    assert_eq!(
        got(s
            .job_list(list(Some("alice"), Some(JobState::Cancelled), None, 10))
            .await
            .unwrap()),
        vec![ids[2]]
    );
    assert!(
        s.job_list(list(Some("carol"), None, None, 10))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The counters `task_backlog` reads must agree with the tasks themselves after every kind of
/// move: insert, claim, each outcome, heartbeat, rescue, hand-back, cancel and re-tagging.
async fn task_counts_follow_every_move_of_a_task(s: S) {
    async fn check(s: &S, jobs: &[JobId], step: &str) {
        let mut want: std::collections::BTreeMap<(String, &str), (i64, i64)> = Default::default();
        let mut oldest = None;
        for j in jobs {
            let tasks = s
                .task_list(TaskListParams {
                    job_id: *j,
                    limit: 1000,
                    after: None,
                })
                .await
                .unwrap();
            for t in tasks {
                let e = want.entry((t.scope.clone(), t.state.as_str())).or_default();
                *e = (e.0 + 1, e.1 + i64::from(t.est_calls));
                if t.state == TaskState::Pending {
                    oldest = Some(match oldest {
                        Some(o) if o < t.created_at => o,
                        _ => t.created_at,
                    });
                }
            }
        }
        let got = s.task_backlog().await.unwrap();
        let got_map: std::collections::BTreeMap<(String, &str), (i64, i64)> = got
            .counts
            .iter()
            .map(|c| ((c.scope.clone(), c.state.as_str()), (c.tasks, c.est_calls)))
            .collect();
        assert_eq!(got_map, want, "counts after {step}");
        assert_eq!(got.counts.len(), want.len(), "no zero rows after {step}");
        assert_eq!(got.oldest_pending_at, oldest, "oldest pending after {step}");
    }
    assert_eq!(s.task_backlog().await.unwrap(), TaskBacklog::default());
    let mut p = job("alice", 6);
    for (i, t) in p.tasks.iter_mut().enumerate() {
        t.est_calls = 1 + i as i32 * 10;
    }
    let a = s.job_insert(p).await.unwrap().job.id;
    let mut p = job("bob", 4);
    p.now = at(10);
    let b = s.job_insert(p).await.unwrap().job.id;
    let jobs = [a, b];
    check(&s, &jobs, "insert").await;

    let claimed = claim(&s, "w1", 6, 20).await;
    assert_eq!(claimed.len(), 6);
    check(&s, &jobs, "claim").await;
    s.task_heartbeat(TaskHeartbeatParams {
        leases: claimed.iter().map(|t| t.lease).collect(),
        lease: lease(),
        now: at(21),
    })
    .await
    .unwrap();
    check(&s, &jobs, "heartbeat").await;

    let outcomes = [
        ok(3),
        TaskOutcome::Failed {
            error: "bad".into(),
        },
        TaskOutcome::Retry {
            run_after: at(22),
            error: "flaky".into(),
        },
        TaskOutcome::Defer {
            run_after: at(22),
            reason: "throttled".into(),
        },
    ];
    for (t, o) in claimed.iter().zip(outcomes) {
        finish(&s, t.lease, o, 22).await;
    }
    check(&s, &jobs, "finish").await;

    // claimed[4] is handed back by its worker; claimed[5]'s lease runs out and is rescued.
    s.task_hand_back(TaskHandBackParams {
        of: HandBack::Worker {
            worker: "w1".into(),
            keep: vec![claimed[5].lease],
        },
        reason: "shutdown".into(),
        now: at(23),
    })
    .await
    .unwrap();
    check(&s, &jobs, "hand back").await;
    let rescued = s
        .task_rescue_expired(TaskRescueParams {
            limit: 100,
            now: at(120),
        })
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    check(&s, &jobs, "rescue").await;

    // Re-tagging moves no task between states.
    let mut p = job("alice", 2);
    p.now = at(121);
    let c = s.job_insert(p).await.unwrap().job.id;
    let jobs = [a, b, c];
    s.job_rebalance(JobRebalanceParams { now: at(122) })
        .await
        .unwrap();
    check(&s, &jobs, "rebalance").await;

    let running = claim(&s, "w2", 2, 130).await;
    s.job_cancel(JobCancelParams {
        id: b,
        by: "t".into(),
        reason: None,
        now: at(131),
    })
    .await
    .unwrap();
    check(&s, &jobs, "cancel").await;
    // A cancelled task's late finish is rejected and moves nothing.
    for t in running {
        finish(&s, t.lease, ok(1), 132).await;
    }
    check(&s, &jobs, "late finish").await;

    // Draining everything leaves only finished states.
    loop {
        let got = claim(&s, "w3", 100, 200).await;
        if got.is_empty() {
            break;
        }
        for t in got {
            finish(&s, t.lease, ok(0), 201).await;
        }
    }
    check(&s, &jobs, "drain").await;
    let left = s.task_backlog().await.unwrap();
    assert_eq!(left.oldest_pending_at, None);
    assert!(left.counts.iter().all(|c| matches!(
        c.state,
        TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
    )));
}

async fn a_drain_closes_intake_until_reopened(s: S) {
    assert_eq!(s.intake_get().await.unwrap(), None);
    assert!(matches!(
        s.intake_open("op", at(1)).await,
        Err(StoreError::NotFound(_))
    ));
    let keyed = |key: &str, lakes: usize| {
        let mut p = job("alice", lakes);
        p.idempotency_key = Some(key.into());
        p
    };
    let a = s.job_insert(keyed("k1", 2)).await.unwrap().job;
    let close = |reason: &str, now: i64| IntakeCloseParams {
        reason: reason.into(),
        by: "op".into(),
        now: at(now),
    };
    for bad in ["", "  ", &"r".repeat(1001)] {
        assert!(
            matches!(
                s.intake_close(close(bad, 2)).await,
                Err(StoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        s.intake_get().await.unwrap(),
        None,
        "a refused close closes nothing"
    );
    let hold = s.intake_close(close("upgrade", 3)).await.unwrap();
    assert_eq!(
        hold,
        IntakeHold {
            reason: "upgrade".into(),
            by: "op".into(),
            at: at(3)
        }
    );
    assert_eq!(s.intake_get().await.unwrap(), Some(hold));
    // New jobs are refused and leave nothing behind; a repeat of an accepted one is not new.
    match s.job_insert(keyed("k2", 3)).await {
        Err(StoreError::Closed(m)) => {
            assert!(m.contains("upgrade") && m.contains("drain --end"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let again = s.job_insert(keyed("k1", 2)).await.unwrap();
    assert_eq!((again.created, again.job.id), (false, a.id));
    assert!(matches!(
        s.job_insert(keyed("k1", 5)).await,
        Err(StoreError::Conflict(_))
    ));
    let jobs = s
        .job_list(JobListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let pending: i64 = s
        .task_backlog()
        .await
        .unwrap()
        .counts
        .iter()
        .map(|c| c.tasks)
        .sum();
    assert_eq!(pending, 2);
    // Closing again replaces the reason; reopening lets jobs in.
    s.intake_close(close("upgrade, take 2", 4)).await.unwrap();
    assert_eq!(
        s.intake_get().await.unwrap().map(|h| h.reason).as_deref(),
        Some("upgrade, take 2")
    );
    s.intake_open("op", at(5)).await.unwrap();
    assert_eq!(s.intake_get().await.unwrap(), None);
    assert!(matches!(
        s.intake_open("op", at(6)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(s.job_insert(keyed("k2", 3)).await.unwrap().created);
    let kinds: Vec<String> = s
        .event_list(EventListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("intake."))
        .collect();
    assert_eq!(kinds, ["intake.closed", "intake.closed", "intake.opened"]);
}

async fn a_rerun_runs_failed_and_cancelled_lakes_again(s: S) {
    // A partial job: one lake succeeded, two failed.
    let j = s.job_insert(job("alice", 3)).await.unwrap().job;
    let ts = claim(&s, "w", 3, 0).await;
    let boom = || TaskOutcome::Failed {
        error: "unknown column".into(),
    };
    finish(&s, ts[0].lease, ok(5), 1).await;
    finish(&s, ts[1].lease, boom(), 1).await;
    finish(&s, ts[2].lease, boom(), 1).await;
    assert_eq!(s.job_get(j.id).await.unwrap().state, JobState::Partial);
    let rerun = |id: JobId, now: i64| {
        s.job_rerun(JobRerunParams {
            id,
            by: "alice".into(),
            now: at(now),
        })
    };
    // Refused: an open job, a missing one, and any job while intake is closed (a drain).
    let open = s.job_insert(job("bob", 1)).await.unwrap().job;
    match rerun(open.id, 2).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("still queued"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rerun(JobId(999_999), 2).await,
        Err(StoreError::NotFound(_))
    ));
    s.intake_close(IntakeCloseParams {
        reason: "upgrade".into(),
        by: "op".into(),
        now: at(2),
    })
    .await
    .unwrap();
    assert!(matches!(rerun(j.id, 3).await, Err(StoreError::Closed(_))));
    let still = s.job_get(j.id).await.unwrap();
    assert_eq!((still.state, still.counts.failed), (JobState::Partial, 2));
    s.intake_open("op", at(3)).await.unwrap();
    // Run again: the failed lakes are pending with fresh attempts; the succeeded one and its
    // result stay; the job runs and is no longer finished (the cleaner keeps it).
    let again = rerun(j.id, 4).await.unwrap();
    assert_eq!(
        (
            again.state,
            again.counts.done,
            again.counts.failed,
            again.counts.open(),
            again.rows_found,
            again.finished_at
        ),
        (JobState::Running, 1, 0, 2, 5, None)
    );
    let kept = s.task_get(ts[0].id()).await.unwrap();
    assert_eq!(
        (kept.state, kept.result_uri.as_deref()),
        (TaskState::Succeeded, Some("mem://r/5"))
    );
    for t in &ts[1..] {
        let row = s.task_get(t.id()).await.unwrap();
        assert_eq!(
            (row.state, row.attempt, row.last_error, row.run_after),
            (TaskState::Pending, 0, None, at(4)),
            "{t:?}"
        );
    }
    let k = kinds(&s, j.id).await;
    assert_eq!((count(&k, "task.rerun"), count(&k, "job.rerun")), (2, 1));
    match rerun(j.id, 5).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("still running"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A zombie of the first run cannot finish a task that runs again.
    let late = finish(&s, ts[1].lease, ok(9), 5).await;
    assert_eq!(late.rejected, vec![ts[1].id()]);
    // They run again, and the job ends with every lake's rows.
    let second: Vec<ClaimedTask> = claim(&s, "w", 10, 6)
        .await
        .into_iter()
        .filter(|t| t.job_id == j.id)
        .collect();
    assert_eq!(second.len(), 2);
    for t in &second {
        assert!(t.lease.token > ts[1].lease.token, "a fresh lease");
        finish(&s, t.lease, ok(1), 7).await;
    }
    let done = s.job_get(j.id).await.unwrap();
    assert_eq!(
        (
            done.state,
            done.counts.done,
            done.counts.failed,
            done.rows_found
        ),
        (JobState::Succeeded, 3, 0, 7)
    );
    assert_eq!(done.finished_at, Some(at(7)));
    match rerun(j.id, 8).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("succeeded"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A cancelled job: its cancelled lakes run again.
    let c = s.job_insert(job("carol", 2)).await.unwrap().job;
    s.job_cancel(JobCancelParams {
        id: c.id,
        by: "op".into(),
        reason: None,
        now: at(9),
    })
    .await
    .unwrap();
    let again = rerun(c.id, 10).await.unwrap();
    assert_eq!(
        (again.state, again.counts.cancelled, again.counts.open()),
        (JobState::Running, 0, 2)
    );
}

async fn every_end_of_a_job_naming_a_webhook_leaves_one_delivery(s: S) {
    let hooked = |owner: &str, lakes: usize| JobInsertParams {
        webhook: Some(format!("https://hooks.example.com/{owner}")),
        ..job(owner, lakes)
    };
    let a = s.job_insert(hooked("alice", 1)).await.unwrap().job;
    let b = s.job_insert(hooked("bob", 2)).await.unwrap().job;
    let quiet = s.job_insert(job("carol", 1)).await.unwrap().job;
    assert_eq!(
        a.webhook.as_deref(),
        Some("https://hooks.example.com/alice")
    );
    let lease = Duration::from_secs(30);
    assert!(
        s.webhook_take(at(1), 10, lease).await.unwrap().is_empty(),
        "nothing ended yet"
    );
    // alice's and carol's jobs succeed; bob's is cancelled.
    for t in claim(&s, "w", 10, 1).await {
        if t.job_id != b.id {
            finish(&s, t.lease, ok(2), 2).await;
        }
    }
    s.job_cancel(JobCancelParams {
        id: b.id,
        by: "op".into(),
        reason: None,
        now: at(3),
    })
    .await
    .unwrap();
    let due = s.webhook_take(at(4), 10, lease).await.unwrap();
    let mut ends: Vec<(JobId, String, String, i32)> = due
        .iter()
        .map(|d| {
            (
                d.job_id,
                d.url.clone(),
                d.body["job"]["state"].as_str().unwrap_or("?").to_string(),
                d.attempt,
            )
        })
        .collect();
    ends.sort();
    assert_eq!(
        ends,
        vec![
            (
                a.id,
                "https://hooks.example.com/alice".into(),
                "succeeded".into(),
                1
            ),
            (
                b.id,
                "https://hooks.example.com/bob".into(),
                "cancelled".into(),
                1
            ),
        ],
        "one each, none for the job without a webhook ({:?})",
        quiet.id
    );
    // Taken: not due again until the lease passes, then tried again (a sender died).
    assert!(s.webhook_take(at(5), 10, lease).await.unwrap().is_empty());
    let again = s.webhook_take(at(40), 10, lease).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|d| d.attempt == 2));
    let (da, db) = match again[0].job_id == a.id {
        true => (&again[0], &again[1]),
        false => (&again[1], &again[0]),
    };
    s.webhook_record(da, DeliveryOutcome::Delivered { status: 204 }, at(41))
        .await
        .unwrap();
    s.webhook_record(
        db,
        DeliveryOutcome::Failed {
            error: "answered 500".into(),
            retry_at: Some(at(100)),
        },
        at(41),
    )
    .await
    .unwrap();
    // A second record of the same try (a deposed leader's) changes nothing.
    s.webhook_record(da, DeliveryOutcome::Delivered { status: 200 }, at(42))
        .await
        .unwrap();
    assert!(s.webhook_take(at(99), 10, lease).await.unwrap().is_empty());
    let last = s.webhook_take(at(100), 10, lease).await.unwrap();
    assert_eq!((last.len(), last[0].job_id, last[0].attempt), (1, b.id, 3));
    s.webhook_record(
        &last[0],
        DeliveryOutcome::Failed {
            error: "answered 500".into(),
            retry_at: None,
        },
        at(101),
    )
    .await
    .unwrap();
    assert!(
        s.webhook_take(at(10_000), 10, lease)
            .await
            .unwrap()
            .is_empty(),
        "given up"
    );
    let ka = kinds(&s, a.id).await;
    let kb = kinds(&s, b.id).await;
    assert_eq!(count(&ka, "webhook.delivered"), 1, "{ka:?}");
    assert_eq!(
        (count(&kb, "webhook.retried"), count(&kb, "webhook.failed")),
        (1, 1),
        "{kb:?}"
    );
    // A rerun ends the job again: a second delivery.
    s.job_rerun(JobRerunParams {
        id: b.id,
        by: "bob".into(),
        now: at(200),
    })
    .await
    .unwrap();
    for t in claim(&s, "w", 10, 201).await {
        finish(&s, t.lease, ok(1), 202).await;
    }
    let second = s.webhook_take(at(203), 10, lease).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].job_id, second[0].body["job"]["state"].as_str()),
        (b.id, Some("succeeded"))
    );
    // A purge takes the job's deliveries with it.
    s.job_purge(JobPurgeParams {
        select: PurgeSelect::Job(b.id),
        by: "op".into(),
        limit: 1,
        now: at(300),
    })
    .await
    .unwrap();
    assert!(
        s.webhook_take(at(10_000), 10, lease)
            .await
            .unwrap()
            .is_empty()
    );
    s.webhook_record(
        &second[0],
        DeliveryOutcome::Delivered { status: 200 },
        at(301),
    )
    .await
    .unwrap();
}

async fn console_sessions_live_until_they_expire_or_sign_out(s: S) {
    let open = |hash: &str, now, expires_at| SessionInsertParams {
        hash: hash.into(),
        token_hash: "a".repeat(64),
        csrf: "c".repeat(43),
        now,
        expires_at,
    };
    let (h1, h2) = ("1".repeat(64), "2".repeat(64));
    s.session_insert(open(&h1, t0(), at(3600))).await.unwrap();
    s.session_insert(open(&h2, t0(), at(60))).await.unwrap();
    let found = s.session_find(&h1, at(10)).await.unwrap();
    assert_eq!(
        (found.token_hash, found.csrf, found.expires_at),
        ("a".repeat(64), "c".repeat(43), at(3600))
    );
    // Past its expiry a session is gone, even before anything removed its row.
    assert!(matches!(
        s.session_find(&h2, at(60)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(s.session_find(&h2, at(59)).await.is_ok());
    // The next sign-in removes the expired row: going back in time does not revive it.
    s.session_insert(open(&"3".repeat(64), at(120), at(900)))
        .await
        .unwrap();
    assert!(s.session_find(&h2, at(59)).await.is_err());
    // Sign-out ends one session, and twice is not an error.
    s.session_delete(&h1).await.unwrap();
    s.session_delete(&h1).await.unwrap();
    assert!(s.session_find(&h1, at(10)).await.is_err());
    assert!(s.session_find(&"3".repeat(64), at(130)).await.is_ok());
    // The same id twice, malformed hashes, a short CSRF token or no lifetime: refused.
    for bad in [
        open(&"3".repeat(64), at(130), at(900)),
        open("short", t0(), at(60)),
        SessionInsertParams {
            csrf: "c".into(),
            ..open(&"4".repeat(64), t0(), at(60))
        },
        open(&"5".repeat(64), at(60), at(60)),
    ] {
        assert!(s.session_insert(bad.clone()).await.is_err(), "{bad:?}");
    }
    // One token holds at most MAX_SESSIONS: the next sign-in ends the oldest.
    let many: Vec<String> = (0..MAX_SESSIONS)
        .map(|i| format!("{:064x}", 1000 + i))
        .collect();
    for (i, h) in many.iter().enumerate() {
        s.session_insert(open(h, at(200 + i as i64), at(9000)))
            .await
            .unwrap();
    }
    let live = |hs: Vec<String>| {
        let s = s.clone();
        async move {
            let mut n = 0;
            for h in hs {
                n += i32::from(s.session_find(&h, at(300)).await.is_ok());
            }
            n
        }
    };
    assert!(
        s.session_find(&"3".repeat(64), at(300)).await.is_err(),
        "the oldest went"
    );
    assert_eq!(live(many.clone()).await, MAX_SESSIONS as i32);
    // Another token's sessions are not its to end.
    s.session_insert(SessionInsertParams {
        token_hash: "b".repeat(64),
        ..open(&"6".repeat(64), at(250), at(9000))
    })
    .await
    .unwrap();
    s.session_insert(open(&"7".repeat(64), at(260), at(9000)))
        .await
        .unwrap();
    assert!(s.session_find(&"6".repeat(64), at(300)).await.is_ok());
    assert!(
        s.session_find(&many[0], at(300)).await.is_err(),
        "the oldest went"
    );
    assert_eq!(live(many[1..].to_vec()).await, MAX_SESSIONS as i32 - 1);
}

fn schedule(
    owner: &str,
    name: &str,
    next_at: chrono::DateTime<chrono::Utc>,
) -> ScheduleInsertParams {
    ScheduleInsertParams {
        owner: owner.into(),
        name: name.into(),
        request: serde_json::json!({"hunt": {"kind": "ioc", "ips": ["10.0.0.1"]}}),
        every_secs: Some(3600),
        cron: None,
        range_secs: Some(86_400),
        lakes: LakeAccess::all(),
        token_hash: Some("f".repeat(64)),
        next_at,
        now: t0(),
    }
}

async fn a_schedules_tick_is_recorded_once_however_many_leaders_fire_it(s: S) {
    let daily = s
        .schedule_insert(schedule("alice", "daily-ips", at(60)))
        .await
        .unwrap();
    let other = s
        .schedule_insert(schedule("bob", "daily-ips", at(120)))
        .await
        .unwrap();
    assert_eq!(
        (daily.runs, daily.next_at, daily.paused_at, daily.range_secs),
        (0, at(60), None, Some(86_400))
    );
    assert!(matches!(
        s.schedule_insert(schedule("alice", "daily-ips", at(60)))
            .await,
        Err(StoreError::Conflict(_))
    ));
    for bad in [
        schedule("alice", "", at(60)),
        schedule("alice", "has space", at(60)),
        schedule("alice", &"x".repeat(101), at(60)),
        schedule("", "ok", at(60)),
        ScheduleInsertParams {
            cron: Some("0 * * * *".into()),
            ..schedule("alice", "both", at(60))
        },
        ScheduleInsertParams {
            every_secs: None,
            ..schedule("alice", "neither", at(60))
        },
        ScheduleInsertParams {
            request: serde_json::json!([1]),
            ..schedule("alice", "array", at(60))
        },
    ] {
        assert!(
            matches!(
                s.schedule_insert(bad.clone()).await,
                Err(StoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        s.schedule_list(Some("alice")).await.unwrap(),
        vec![daily.clone()]
    );
    assert_eq!(s.schedule_list(None).await.unwrap().len(), 2);
    assert!(s.schedule_due(at(59), 10).await.unwrap().is_empty());
    let due: Vec<i64> = s
        .schedule_due(at(120), 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(due, vec![daily.id, other.id], "earliest first");

    // Two leaders fire the same tick: one records it.
    let job = s.job_insert(job("alice", 1)).await.unwrap().job.id;
    let ran = |outcome: Result<JobId, String>| ScheduleRanParams {
        id: daily.id,
        tick: at(60),
        next_at: at(3660),
        outcome,
        now: at(61),
    };
    let (a, b) = tokio::join!(s.schedule_ran(ran(Ok(job))), s.schedule_ran(ran(Ok(job))));
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|r| **r).count(), 1);
    let after = s.schedule_get(daily.id).await.unwrap();
    assert_eq!(
        (
            after.runs,
            after.next_at,
            after.last_job_id,
            after.last_run_at,
            after.last_error.clone()
        ),
        (1, at(3660), Some(job), Some(at(61)), None)
    );
    let fired: Vec<_> = crate::support::job_events(&s, job)
        .await
        .into_iter()
        .filter(|e| e.kind == "schedule.fired")
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(
        fired[0].detail.as_ref().map(|d| d["schedule"].clone()),
        Some(daily.id.into())
    );
    // A late record of an old tick changes nothing.
    assert!(!s.schedule_ran(ran(Err("late".into()))).await.unwrap());
    // A tick that made no job says why and keeps the last job.
    let skipped = ScheduleRanParams {
        tick: at(3660),
        next_at: at(7260),
        outcome: Err("intake is closed".into()),
        ..ran(Ok(job))
    };
    assert!(s.schedule_ran(skipped).await.unwrap());
    let after = s.schedule_get(daily.id).await.unwrap();
    assert_eq!(
        (after.runs, after.last_job_id, after.last_error.as_deref()),
        (1, Some(job), Some("intake is closed"))
    );

    // Paused: never due; resumed: due from the tick it is given, not the ones it missed.
    let p = s.schedule_pause(daily.id, "alice", at(4000)).await.unwrap();
    assert_eq!(
        (p.paused_at, p.paused_by.as_deref()),
        (Some(at(4000)), Some("alice"))
    );
    let again = s.schedule_pause(daily.id, "ops", at(5000)).await.unwrap();
    assert_eq!(
        (again.paused_at, again.paused_by.as_deref()),
        (Some(at(4000)), Some("alice"))
    );
    assert!(
        !s.schedule_due(at(99_999), 10)
            .await
            .unwrap()
            .iter()
            .any(|d| d.id == daily.id)
    );
    let r = s
        .schedule_resume(daily.id, "alice", at(100_000), at(99_000))
        .await
        .unwrap();
    assert_eq!((r.paused_at, r.next_at), (None, at(100_000)));
    // Resuming a running schedule keeps its tick.
    let r = s
        .schedule_resume(daily.id, "alice", at(200_000), at(99_001))
        .await
        .unwrap();
    assert_eq!(r.next_at, at(100_000));
    for missing in [
        s.schedule_get(999).await.map(|_| ()),
        s.schedule_pause(999, "x", t0()).await.map(|_| ()),
        s.schedule_delete(999, "x", t0()).await,
    ] {
        assert!(
            matches!(missing, Err(StoreError::NotFound(_))),
            "{missing:?}"
        );
    }
    s.schedule_delete(daily.id, "alice", at(100_001))
        .await
        .unwrap();
    assert_eq!(s.schedule_list(None).await.unwrap(), vec![other.clone()]);
    // The job it made stays, found by its key too.
    assert_eq!(s.job_get(job).await.unwrap().id, job);
    let keyed = s
        .job_insert(JobInsertParams {
            idempotency_key: Some("schedule:9:60".into()),
            ..crate::support::job("carol", 1)
        })
        .await
        .unwrap()
        .job;
    assert_eq!(
        s.job_find_by_key("carol", "schedule:9:60")
            .await
            .unwrap()
            .id,
        keyed.id
    );
    for (owner, key) in [("alice", "schedule:9:60"), ("carol", "schedule:9:61")] {
        assert!(matches!(
            s.job_find_by_key(owner, key).await,
            Err(StoreError::NotFound(_))
        ));
    }
    // An owner holds at most MAX_SCHEDULES.
    for i in 0..MAX_SCHEDULES {
        s.schedule_insert(schedule("dave", &format!("s{i}"), at(60)))
            .await
            .unwrap();
    }
    let over = s
        .schedule_insert(schedule("dave", "one-more", at(60)))
        .await;
    assert!(
        matches!(over, Err(StoreError::Conflict(ref m)) if m.contains("the most one owner")),
        "{over:?}"
    );
    assert_eq!(other.token_hash, Some("f".repeat(64)));
}

async fn claim_sharing(s: &S, worker: &str, limit: u32, share: u32, now: i64) -> Vec<ClaimedTask> {
    s.task_claim(TaskClaimParams {
        worker: worker.into(),
        limit,
        lease: lease(),
        now: at(now),
        skip_owners: Vec::new(),
        share,
        prefer_scopes: Vec::new(),
    })
    .await
    .unwrap()
}

async fn a_shared_claim_takes_along_other_jobs_tasks_of_its_lakes_under_the_holds(s: S) {
    // Five owners' jobs over the same two lakes, in priority order a > b > c > d > e.
    let mut jobs = HashMap::new();
    for (owner, priority) in [("a", 5), ("b", 4), ("c", 3), ("d", 2), ("e", 1)] {
        let mut p = job(owner, 2);
        p.priority = priority;
        p.max_attempts = 5;
        jobs.insert(owner, s.job_insert(p).await.unwrap().job.id);
    }
    // x's job is one no scan can share (a SQL hunt): it is never taken along.
    let mut x = job("x", 2);
    for t in &mut x.tasks {
        t.shareable = false;
    }
    jobs.insert("x", s.job_insert(x).await.unwrap().job.id);
    let owner_of = |t: &ClaimedTask| t.owner.clone();
    let shape = |got: &[ClaimedTask]| -> Vec<(String, String)> {
        got.iter()
            .map(|t| (t.owner.clone(), t.lake.clone()))
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(o, l)| (o.to_string(), l.to_string()))
            .collect()
    };
    // b's first task crashes a runner: it runs alone from now on, never taken along.
    let b = s
        .task_claim(TaskClaimParams {
            worker: "w0".into(),
            limit: 1,
            lease: lease(),
            now: at(0),
            skip_owners: vec!["a".into()],
            share: 0,
            prefer_scopes: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(shape(&b), pairs(&[("b", "lake-00000")]));
    let crashed = TaskOutcome::Crashed {
        run_after: at(0),
        error: "the hunt crashed its runner (signal 6, SIGABRT)".into(),
    };
    assert_eq!(finish(&s, b[0].lease, crashed, 1).await.applied.len(), 1);
    // c's job is paused.
    s.pause_set(PauseSetParams {
        target: PauseTarget::Job(jobs["c"]),
        reason: "hold".into(),
        by: "op".into(),
        now: at(1),
    })
    .await
    .unwrap();
    // One task claimed, one more of its lake taken along, in release order: not b's (it
    // crashed), not c's (paused), never x's.
    let got = claim_sharing(&s, "w1", 1, 1, 2).await;
    assert_eq!(
        shape(&got),
        pairs(&[("a", "lake-00000"), ("d", "lake-00000")])
    );
    let got = claim_sharing(&s, "w1", 1, 10, 2).await;
    assert_eq!(
        shape(&got),
        pairs(&[
            ("a", "lake-00001"),
            ("b", "lake-00001"),
            ("d", "lake-00001"),
            ("e", "lake-00001"),
        ])
    );
    // Each task has its own lease and is journaled and started like any claim.
    for t in &got {
        let row = s.task_get(t.id()).await.unwrap();
        assert_eq!(
            (row.state, row.lease_owner.as_deref()),
            (TaskState::Running, Some("w1"))
        );
    }
    let mut claims = 0;
    for id in jobs.values() {
        claims += count(&kinds(&s, *id).await, "task.claimed");
    }
    assert_eq!(claims, 1 + 2 + 4);
    assert_eq!(s.job_get(jobs["e"]).await.unwrap().state, JobState::Running);
    // A fenced-out task of the scan leaves the others valid: d's job is cancelled meanwhile.
    s.job_cancel(JobCancelParams {
        id: jobs["d"],
        by: "op".into(),
        reason: None,
        now: at(3),
    })
    .await
    .unwrap();
    let finishes = got
        .iter()
        .map(|t| TaskFinish {
            lease: t.lease,
            outcome: ok(1),
        })
        .collect();
    let report = s
        .task_finish(TaskFinishParams {
            finishes,
            now: at(4),
        })
        .await
        .unwrap();
    let d = got.iter().find(|t| owner_of(t) == "d").unwrap();
    assert_eq!(report.rejected, vec![d.id()]);
    assert_eq!(report.applied.len(), 3);
    // While an owner quota is set nothing is taken along (the quota counts every start).
    // b's crashed task runs alone first; then e's is next, with f's and g's of its lake.
    let b = claim_sharing(&s, "w2", 1, 10, 5).await;
    assert_eq!(shape(&b), pairs(&[("b", "lake-00000")]));
    finish(&s, b[0].lease, ok(0), 5).await;
    for owner in ["f", "g"] {
        jobs.insert(owner, s.job_insert(job(owner, 2)).await.unwrap().job.id);
    }
    s.quota_set(QuotaSetParams {
        target: QuotaTarget::Default,
        max_running: 100,
        by: "op".into(),
        now: at(5),
    })
    .await
    .unwrap();
    let got = claim_sharing(&s, "w2", 1, 10, 6).await;
    assert_eq!(shape(&got), pairs(&[("e", "lake-00000")]), "{got:?}");
}

async fn a_claim_prefers_its_scopes_within_a_window_of_the_head_only(s: S) {
    // 70 tasks in release order: lake-00069's scope is aws:b, the others' aws:a.
    let mut p = job("alice", 70);
    for (i, t) in p.tasks.iter_mut().enumerate() {
        t.scope = if i == 69 { "aws:b" } else { "aws:a" }.into();
    }
    s.job_insert(p).await.unwrap();
    let claim = |limit: u32, prefer: &[&str]| TaskClaimParams {
        worker: "w".into(),
        limit,
        lease: lease(),
        now: at(1),
        skip_owners: Vec::new(),
        share: 0,
        prefer_scopes: prefer.iter().map(|p| p.to_string()).collect(),
    };
    let lakes = |got: Vec<ClaimedTask>| -> Vec<String> {
        let mut l: Vec<String> = got.into_iter().map(|t| t.lake).collect();
        l.sort();
        l
    };
    // aws:b's task is past the window (64 tasks for a claim of one): the head, as without a
    // preference.
    let got = s.task_claim(claim(1, &["aws:b"])).await.unwrap();
    assert_eq!(lakes(got), ["lake-00000"]);
    // Within the window of 4 x 18 it is taken first, the head fills the rest.
    let got = lakes(s.task_claim(claim(18, &["aws:b"])).await.unwrap());
    let mut want: Vec<String> = (1..=17).map(|i| format!("lake-{i:05}")).collect();
    want.push("lake-00069".into());
    assert_eq!(got, want);
    // Without a preference: the head.
    let got = s.task_claim(claim(1, &[])).await.unwrap();
    assert_eq!(lakes(got), ["lake-00018"]);
}
