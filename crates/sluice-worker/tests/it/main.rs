//! The worker loop against real stores: retries and failures as the policy says, cancellation
//! reaching running tasks through the heartbeat, and a PostgreSQL restart in the middle of a
//! burn-down losing and doubling nothing.

// Test code: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice_core::{JobId, JobState, SystemClock, TaskState};
use sluice_store::{
    ConnectOptions, EventListParams, Job, JobCancelParams, PgStore, SqliteStore, Store, StoreExt,
};
use sluice_worker::{BuiltinRunner, Worker, WorkerConfig, WorkerStats};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

async fn sqlite() -> Arc<dyn Store> {
    let s = SqliteStore::connect("sqlite::memory:").await.unwrap();
    s.migrate().await.unwrap();
    Arc::new(s)
}

async fn submit(
    store: &Arc<dyn Store>,
    lakes: usize,
    max_attempts: i32,
    spec: serde_json::Value,
) -> Job {
    submit_as(store, "alice", lakes, max_attempts, spec).await
}

fn config() -> WorkerConfig {
    let mut c = WorkerConfig::new("test-worker");
    c.concurrency = 8;
    c.idle_poll = Duration::from_millis(10);
    c.retry.base = Duration::from_millis(20);
    c.retry.cap = Duration::from_millis(50);
    c
}

fn start(
    store: &Arc<dyn Store>,
    cfg: WorkerConfig,
) -> (CancellationToken, tokio::task::JoinHandle<WorkerStats>) {
    let stop = CancellationToken::new();
    let w = Worker::new(
        store.clone(),
        Arc::new(BuiltinRunner::new(store.clone())),
        Arc::new(SystemClock),
        cfg,
    );
    (stop.clone(), tokio::spawn(w.run(stop)))
}

/// Waits for the job to end, tolerating store errors (the database may be down meanwhile).
async fn finished(store: &Arc<dyn Store>, job: JobId, within: Duration) -> Job {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(j) = store.job_get(job).await
            && j.state.is_terminal()
        {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} did not finish within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn outcomes_follow_the_retry_policy() {
    // (spec, max_attempts, job state, task state, attempts spent, error contains)
    let cases = [
        (
            serde_json::json!({"kind": "sleep", "ms": 1, "fail_first": 2}),
            3,
            JobState::Succeeded,
            TaskState::Succeeded,
            2,
            "",
        ),
        (
            serde_json::json!({"kind": "sleep", "ms": 1, "fail_first": 9}),
            2,
            JobState::Failed,
            TaskState::Failed,
            2,
            "gave up after 2 attempts",
        ),
        (
            serde_json::json!({"kind": "sql", "sql": "select 1"}),
            5,
            JobState::Failed,
            TaskState::Failed,
            1,
            "not a task kind",
        ),
        (
            serde_json::json!({"kind": "sleep", "ms": "ten"}),
            5,
            JobState::Failed,
            TaskState::Failed,
            1,
            "not a task kind",
        ),
        (
            serde_json::json!({"kind": "noop"}),
            1,
            JobState::Succeeded,
            TaskState::Succeeded,
            0,
            "",
        ),
    ];
    for (spec, max, job_state, task_state, spent, err) in cases {
        let store = sqlite().await;
        let job = submit(&store, 3, max, spec.clone()).await;
        let (stop, w) = start(&store, config());
        let j = finished(&store, job.id, Duration::from_secs(20)).await;
        stop.cancel();
        w.await.unwrap();
        assert_eq!(j.state, job_state, "{spec}");
        for t in store.task_list_all(job.id).await.unwrap() {
            assert_eq!((t.state, t.attempt), (task_state, spent), "{spec}: {t:?}");
            assert!(
                t.last_error.clone().unwrap_or_default().contains(err),
                "{spec}: {:?}",
                t.last_error
            );
        }
    }
}

#[tokio::test]
async fn cancelling_a_job_stops_its_running_tasks_via_the_heartbeat() {
    let store = sqlite().await;
    let job = submit(
        &store,
        4,
        3,
        serde_json::json!({"kind": "sleep", "ms": 600_000}),
    )
    .await;
    let mut cfg = config();
    cfg.lease = Duration::from_secs(2);
    cfg.heartbeat_every = Duration::from_millis(50);
    cfg.shutdown_grace = Duration::from_millis(100);
    let (stop, w) = start(&store, cfg);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .task_list_all(job.id)
        .await
        .unwrap()
        .iter()
        .any(|t| t.state != TaskState::Running)
    {
        assert!(Instant::now() < deadline, "tasks never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store
        .job_cancel(JobCancelParams {
            id: job.id,
            by: "alice".into(),
            reason: None,
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    // The next heartbeat finds the leases gone and stops the runs; their hand-back is refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let stats = w.await.unwrap();
    assert_eq!(stats.rejected, 4, "{stats:?}");
    assert_eq!(
        stats.handed_back, 0,
        "runs were still going at shutdown: {stats:?}"
    );
    let j = store.job_get(job.id).await.unwrap();
    assert_eq!((j.state, j.counts.cancelled), (JobState::Cancelled, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_burn_down_loses_and_doubles_nothing() {
    tracing_subscriber_init();
    let cluster = sluice_store::testing::TempCluster::start();
    let opts = ConnectOptions {
        max_connections: 6,
        connect_timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let pg = PgStore::connect(&cluster.url(), opts).await.unwrap();
    pg.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(pg);
    let n = 1_500;
    let job = submit(&store, n, 3, serde_json::json!({"kind": "sleep", "ms": 10})).await;
    let mut cfg = config();
    cfg.concurrency = 20;
    let (stop, w) = start(&store, cfg);

    // Let a quarter finish, then pull the server out from under the worker.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.job_get(job.id).await.unwrap().counts.done < (n / 4) as i64 {
        assert!(Instant::now() < deadline, "burn-down did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.down();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !w.is_finished(),
        "the worker must ride out the outage, not exit"
    );
    cluster.up();

    let j = tokio::time::timeout(
        Duration::from_secs(60),
        finished(&store, job.id, Duration::from_secs(60)),
    )
    .await;
    let Ok(j) = j else {
        panic!(
            "job did not finish after the restart; server sessions:\n{}",
            sessions(&cluster.url()).await
        );
    };
    stop.cancel();
    w.await.unwrap();
    assert_eq!(
        (j.state, j.counts.done, j.rows_found),
        (JobState::Succeeded, n as i64, n as i64)
    );
    let of_job = EventListParams {
        job_id: Some(job.id),
        limit: 1000,
        ..Default::default()
    };
    let events = store.event_list_until(of_job, &|_| false).await.unwrap();
    let succeeded = events.iter().filter(|e| e.kind == "task.succeeded").count();
    assert_eq!(succeeded, n, "each task's result recorded exactly once");
    for t in store.task_list_all(job.id).await.unwrap() {
        assert_eq!(
            (t.state, t.attempt),
            (TaskState::Succeeded, 0),
            "the outage spent no attempt: {t:?}"
        );
    }
}

/// Logs to the test's captured output (shown when a test fails).
fn tracing_subscriber_init() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info,sqlx=warn")
        .try_init();
}

/// What the server's sessions are doing (for a failure message).
async fn sessions(url: &str) -> String {
    use sqlx::{Connection, Row};
    let Ok(mut c) = sqlx::PgConnection::connect(url).await else {
        return "(cannot connect)".into();
    };
    let rows = sqlx::query(
        "SELECT pid, state, coalesce(wait_event_type, '') || ':' || coalesce(wait_event, '') AS wait, \
         left(query, 120) AS query FROM pg_stat_activity WHERE backend_type = 'client backend'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap_or_default();
    rows.iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.get::<i32, _>("pid"),
                r.get::<Option<String>, _>("state").unwrap_or_default(),
                r.get::<String, _>("wait"),
                r.get::<Option<String>, _>("query").unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_wakes_on_submit_not_on_its_poll() {
    let (pg, _) = sluice_store::testing::pg_store().await;
    let store: Arc<dyn Store> = Arc::new(pg);
    let mut cfg = config();
    cfg.idle_poll = Duration::from_secs(60);
    let (stop, w) = start(&store, cfg);
    // Let it claim nothing and go idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = submit(&store, 3, 3, serde_json::json!({"kind": "noop"})).await;
    // Well under the 60 s poll: only the NOTIFY can have woken it.
    let j = finished(&store, job.id, Duration::from_secs(20)).await;
    assert_eq!(j.state, JobState::Succeeded);
    stop.cancel();
    w.await.unwrap();
}

/// DESIGN.md invariant 6 (fairness), measured: a 3-lake hunt submitted behind a big backlog
/// finishes in about the time it takes alone, because claims go round-robin across jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_hunt_behind_a_big_backlog_finishes_about_as_fast_as_alone() {
    let (pg, _url) = sluice_store::testing::pg_store().await;
    let store: Arc<dyn Store> = Arc::new(pg);
    let spec = serde_json::json!({"kind": "sleep", "ms": 20});
    let mut cfg = config();
    cfg.concurrency = 16;
    let (stop, w) = start(&store, cfg);
    // Alone: submit to an idle worker.
    let t = Instant::now();
    let alone = submit(&store, 3, 3, spec.clone()).await;
    finished(&store, alone.id, Duration::from_secs(10)).await;
    let alone_secs = t.elapsed().as_secs_f64();
    // Behind a backlog of 3,000 tasks (about 4 s of work for this worker).
    let big = submit(&store, 3_000, 3, spec.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let small = submit(&store, 3, 3, spec).await;
    finished(&store, small.id, Duration::from_secs(30)).await;
    let behind_secs = t.elapsed().as_secs_f64();
    let big_now = store.job_get(big.id).await.unwrap();
    eprintln!(
        "small hunt alone {alone_secs:.3}s, behind 3000 tasks {behind_secs:.3}s ({:.1}x); big job {}/{} done then",
        behind_secs / alone_secs,
        big_now.counts.done,
        big_now.counts.total
    );
    assert!(
        big_now.counts.done < big_now.counts.total / 2,
        "the backlog was mostly done: the test measured nothing ({big_now:?})"
    );
    // About as fast as alone: within one claim batch's worth of work, far from the backlog's ~4 s.
    assert!(
        behind_secs < (alone_secs * 5.0).max(0.5),
        "small hunt took {behind_secs:.3}s behind the backlog vs {alone_secs:.3}s alone"
    );
    stop.cancel();
    w.await.unwrap();
}

async fn running(store: &Arc<dyn Store>, job: JobId) -> usize {
    store
        .task_list_all(job)
        .await
        .unwrap()
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .count()
}

async fn submit_as(
    store: &Arc<dyn Store>,
    owner: &str,
    lakes: usize,
    max_attempts: i32,
    spec: serde_json::Value,
) -> Job {
    let p = sluice_store::testing::job_params(owner, lakes, max_attempts, spec, chrono::Utc::now());
    sluice_store::testing::submit(store.as_ref(), p).await
}

/// While one owner's tasks hold every regular slot, a spare slot takes another owner's task
/// at once; the busy owner never gets it. Without spare slots the other owner waits for a
/// regular slot: the mechanism, not luck, makes the difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_slot_starts_another_owners_task_while_one_owner_holds_every_slot() {
    for spare in [1, 0] {
        let store = sqlite().await;
        let mut cfg = config();
        cfg.concurrency = 2;
        cfg.spare = spare;
        let (stop, w) = start(&store, cfg);
        // alice: 6 tasks of 2 s, two at a time in the regular slots.
        let bulk = submit_as(
            &store,
            "alice",
            6,
            3,
            serde_json::json!({"kind": "sleep", "ms": 2_000}),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(&store, bulk.id).await < 2 {
            assert!(Instant::now() < deadline, "alice's tasks never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // alice holds both slots and has 4 tasks pending: the spare slot is not hers.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(running(&store, bulk.id).await, 2, "spare {spare}");
        let small = submit_as(
            &store,
            "bob",
            1,
            3,
            serde_json::json!({"kind": "sleep", "ms": 1}),
        )
        .await;
        let b = finished(&store, small.id, Duration::from_secs(20)).await;
        assert_eq!(b.state, JobState::Succeeded);
        let a = store.job_get(bulk.id).await.unwrap();
        if spare == 1 {
            assert_eq!(
                a.counts.done, 0,
                "bob's task waited for one of alice's: {:?}",
                a.counts
            );
        } else {
            assert!(
                a.counts.done >= 1,
                "without a spare slot bob's task cannot start before one of alice's ends: {:?}",
                a.counts
            );
        }
        stop.cancel();
        w.await.unwrap();
    }
}
