//! The `sluice` binary, run as a user runs it: worker crashes (SIGKILL) and graceful shutdown
//! (SIGTERM) against a real PostgreSQL, bad input, and the embedded demo.

// Test code: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod console;
mod deploy;
mod guard;
mod isolation;
mod observe;

use sluice_core::{JobId, JobState, TaskState};
use sluice_store::{
    EventListParams, Job, Lease, PgStore, Store, StoreExt, Task, TaskFinish, TaskFinishParams,
    TaskOutcome,
};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env_remove("SLUICE_DATABASE_URL")
        .env("RUST_LOG", "info,sqlx=warn");
    c
}

fn run(args: &[&str]) -> Output {
    sluice()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running sluice")
}

/// A spawned `sluice` process that is killed if the test ends (or fails) before reaping it:
/// an orphaned worker keeps running and holds database connections. Its output goes to
/// /dev/null: a pipe nobody reads fills up and blocks it.
struct Proc(Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Proc {
    /// Starts `cmd` with no input and its output discarded.
    fn quiet(cmd: &mut Command, what: &str) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        Proc(child)
    }
}

/// Runs `cmd` with no input; it must succeed (else the panic shows all it printed). `what`
/// names what failed to start.
fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{cmd:?}:\n{}", printed(&out));
    out
}

/// Runs `cmd` with `input` on its standard input; `what` names what failed to start.
fn run_with_input(cmd: &mut Command, input: &str, what: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("output")
}

/// What a command printed: its standard output, then its standard error.
fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn_worker(url: &str, extra: &[&str]) -> Proc {
    Proc::quiet(
        sluice()
            .args(["worker", "--database-url", url, "--idle-poll", "50ms"])
            .args(extra),
        "spawning sluice worker",
    )
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn submit(store: &PgStore, lakes: usize, spec: serde_json::Value) -> Job {
    let p = sluice_store::testing::job_params("alice", lakes, 3, spec, chrono::Utc::now());
    sluice_store::testing::submit(store, p).await
}

async fn tasks(store: &PgStore, job: JobId) -> Vec<Task> {
    store.task_list_all(job).await.expect("task_list")
}

/// Polls until `cond` holds for the job's tasks.
async fn until_tasks(
    store: &PgStore,
    job: JobId,
    within: Duration,
    what: &str,
    cond: impl Fn(&[Task]) -> bool,
) -> Vec<Task> {
    let deadline = Instant::now() + within;
    loop {
        let t = tasks(store, job).await;
        if cond(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {t:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The IOC hunt for every needle of the lakes.
pub(crate) fn ioc_hunt(needles: &[serde_json::Value]) -> serde_json::Value {
    let mut hunt = serde_json::json!({"kind": "ioc", "ips": [], "hashes": [], "domains": []});
    for n in needles {
        let key = match n["kind"].as_str() {
            Some("ip") => "ips",
            Some("hash") => "hashes",
            _ => "domains",
        };
        hunt[key]
            .as_array_mut()
            .expect("array")
            .push(n["value"].clone());
    }
    hunt
}

/// `sluice submit` flags for every needle of the lakes.
pub(crate) fn ioc_flags(needles: &[serde_json::Value]) -> Vec<String> {
    let mut args = Vec::new();
    for n in needles {
        let flag = match n["kind"].as_str() {
            Some("ip") => "--ioc-ip",
            Some("hash") => "--ioc-hash",
            _ => "--ioc-domain",
        };
        args.push(flag.into());
        args.push(n["value"].as_str().expect("value").into());
    }
    args
}

/// Waits until the job has ended.
pub(crate) async fn until_job_ends(store: &PgStore, job: JobId, within: Duration) {
    let deadline = Instant::now() + within;
    while !store.job_get(job).await.expect("job").state.is_terminal() {
        assert!(Instant::now() < deadline, "job {job} did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every task of the job runs, then asks the worker to stop.
async fn sigterm_once_all_run(store: &PgStore, job: JobId, worker: &Child) {
    until_tasks(store, job, Duration::from_secs(20), "all running", |t| {
        t.iter().all(|t| t.state == TaskState::Running)
    })
    .await;
    signal(worker, libc::SIGTERM);
}

async fn kinds(store: &PgStore, job: JobId) -> Vec<String> {
    sluice_store::testing::kinds(store, job).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_tasks_are_rescued_and_its_late_completion_rejected() {
    let (store, url) = sluice_store::testing::pg_store().await;
    let job = submit(&store, 6, serde_json::json!({"kind": "sleep", "ms": 1500})).await;

    let mut victim = spawn_worker(
        &url,
        &[
            "--id",
            "victim",
            "--concurrency",
            "6",
            "--lease",
            "1s",
            "--scheduler",
            "false",
        ],
    );
    let held = until_tasks(
        &store,
        job.id,
        Duration::from_secs(20),
        "victim to claim all",
        |t| {
            t.iter().all(|t| {
                t.state == TaskState::Running && t.lease_owner.as_deref() == Some("victim")
            })
        },
    )
    .await;
    signal(&victim, libc::SIGKILL);
    let st = wait_exit(&mut victim, Duration::from_secs(5));
    assert!(!st.success(), "SIGKILL is not a clean exit");
    let stale: Vec<Lease> = held
        .iter()
        .map(|t| Lease {
            task_id: t.id,
            token: t.lease_token,
        })
        .collect();
    // Nothing moved: the dead worker's tasks are still leased to it.
    assert!(
        tasks(&store, job.id)
            .await
            .iter()
            .all(|t| t.state == TaskState::Running)
    );

    let mut rescuer = spawn_worker(
        &url,
        &["--id", "rescuer", "--concurrency", "6", "--lease", "1s"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let j = store.job_get(job.id).await.expect("job");
        if j.state.is_terminal() {
            break j;
        }
        assert!(Instant::now() < deadline, "job not finished: {j:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((done.state, done.counts.done), (JobState::Succeeded, 6));
    for t in tasks(&store, job.id).await {
        assert_eq!(t.state, TaskState::Succeeded);
        assert_eq!(t.attempt, 1, "the lost run spent one attempt");
        assert!(t.lease_token.0 >= 2, "claimed again with a new token");
    }
    let k = kinds(&store, job.id).await;
    assert_eq!(
        k.iter().filter(|k| *k == "task.rescued").count(),
        6,
        "{k:?}"
    );

    // The dead worker's late completion, with its stale tokens, is rejected; nothing doubles.
    let finishes = stale
        .iter()
        .map(|l| TaskFinish {
            lease: *l,
            outcome: TaskOutcome::Succeeded {
                rows: 999,
                result_uri: None,
            },
        })
        .collect();
    let r = store
        .task_finish(TaskFinishParams {
            finishes,
            now: chrono::Utc::now(),
        })
        .await
        .expect("finish");
    assert!(r.applied.is_empty());
    assert_eq!(r.rejected.len(), 6);
    let after = store.job_get(job.id).await.expect("job");
    assert_eq!((after.counts.done, after.rows_found), (6, 6));

    signal(&rescuer, libc::SIGTERM);
    assert!(wait_exit(&mut rescuer, Duration::from_secs(10)).success());
}

fn spawn_scheduler(url: &str, id: &str) -> Proc {
    Proc::quiet(
        sluice()
            .args(["scheduler", "--database-url", url, "--id", id])
            .args(["--leader-ttl", "1s", "--rescue-every", "200ms"]),
        "spawning sluice scheduler",
    )
}

/// The whole journal (a test's is small).
pub(crate) async fn journal(store: &PgStore) -> Vec<sluice_store::Event> {
    let all = EventListParams {
        limit: 100_000,
        ..Default::default()
    };
    store.event_list(all).await.expect("events")
}

/// The `leader.*` events so far: (kind, holder, term).
async fn leader_events(store: &PgStore) -> Vec<(String, String, i64)> {
    journal(store)
        .await
        .into_iter()
        .filter(|e| e.kind.starts_with("leader."))
        .map(|e| {
            let d = e.detail.unwrap_or_default();
            let holder = d["holder"].as_str().unwrap_or_default().to_string();
            (e.kind, holder, d["term"].as_i64().unwrap_or(-1))
        })
        .collect()
}

async fn until_leader_events(
    store: &PgStore,
    within: Duration,
    what: &str,
    ok: impl Fn(&[(String, String, i64)]) -> bool,
) -> Vec<(String, String, i64)> {
    let deadline = Instant::now() + within;
    loop {
        let ev = leader_events(store).await;
        if ok(&ev) {
            return ev;
        }
        assert!(Instant::now() < deadline, "{what}: {ev:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduler_leads_and_a_standby_takes_over_when_it_is_killed() {
    let (store, url) = sluice_store::testing::pg_store().await;
    let mut a = spawn_scheduler(&url, "a");
    let mut b = spawn_scheduler(&url, "b");
    let ev = until_leader_events(&store, Duration::from_secs(20), "a leader", |e| {
        !e.is_empty()
    })
    .await;
    let (_, first, term) = ev[0].clone();
    assert_eq!(term, 1);
    // Two schedulers, one leader: a second election would be a second event.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        leader_events(&store).await.len(),
        1,
        "one leader while it lives"
    );

    // The leader re-strides owners' jobs: two jobs of one owner get stride 2.
    let j1 = submit(&store, 4, serde_json::json!({"kind": "noop"})).await;
    let j2 = submit(&store, 4, serde_json::json!({"kind": "noop"})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kinds(&store, j1.id)
        .await
        .contains(&"job.restrided".to_string())
    {
        assert!(
            Instant::now() < deadline,
            "the leader never re-strided {:?}",
            j1.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        kinds(&store, j2.id)
            .await
            .contains(&"job.restrided".to_string())
    );

    // The leader dies without resigning; the standby takes over after the lease (1 s).
    let (leader, standby, other) = if first == "a" {
        (&mut a, &mut b, "b")
    } else {
        (&mut b, &mut a, "a")
    };
    signal(leader, libc::SIGKILL);
    wait_exit(leader, Duration::from_secs(5));
    // A task a dead worker held: only a leader rescues it.
    let ghost = store
        .task_claim(sluice_store::TaskClaimParams {
            worker: "ghost".into(),
            limit: 1,
            lease: Duration::from_millis(300),
            now: chrono::Utc::now(),
            skip_owners: Vec::new(),
            share: 0,
            prefer_scopes: Vec::new(),
        })
        .await
        .expect("claim");
    assert_eq!(ghost.len(), 1);
    let ev = until_leader_events(
        &store,
        Duration::from_secs(10),
        "the standby took over",
        |e| {
            e.iter()
                .any(|(k, h, t)| k == "leader.elected" && h == other && *t == 2)
        },
    )
    .await;
    assert_eq!(ev.len(), 2, "{ev:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = store.task_get(ghost[0].id()).await.expect("task");
        if t.state == TaskState::Pending {
            assert_eq!(t.attempt, 1, "a lost lease spends one attempt");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader never rescued {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A graceful stop resigns, so the next scheduler would not wait for the lease.
    signal(standby, libc::SIGTERM);
    assert!(wait_exit(standby, Duration::from_secs(10)).success());
    let ev = leader_events(&store).await;
    assert_eq!(
        ev.last().map(|e| (e.0.as_str(), e.1.as_str())),
        Some(("leader.resigned", other)),
        "{ev:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_back_long_tasks_without_spending_attempts() {
    let (store, url) = sluice_store::testing::pg_store().await;
    let job = submit(
        &store,
        4,
        serde_json::json!({"kind": "sleep", "ms": 60_000}),
    )
    .await;
    let mut w = spawn_worker(
        &url,
        &[
            "--id",
            "w",
            "--concurrency",
            "4",
            "--shutdown-grace",
            "300ms",
        ],
    );
    sigterm_once_all_run(&store, job.id, &w).await;
    let st = wait_exit(&mut w, Duration::from_secs(10));
    assert!(st.success(), "graceful exit: {st:?}");
    for t in tasks(&store, job.id).await {
        assert_eq!(
            (t.state, t.attempt, t.lease_owner.as_deref()),
            (TaskState::Pending, 0, None),
            "{t:?}"
        );
    }
    let k = kinds(&store, job.id).await;
    assert_eq!(
        k.iter().filter(|k| *k == "task.deferred").count(),
        4,
        "{k:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_short_tasks_finish_within_grace() {
    let (store, url) = sluice_store::testing::pg_store().await;
    let job = submit(&store, 3, serde_json::json!({"kind": "sleep", "ms": 700})).await;
    let mut w = spawn_worker(
        &url,
        &["--id", "w", "--concurrency", "3", "--shutdown-grace", "20s"],
    );
    sigterm_once_all_run(&store, job.id, &w).await;
    assert!(wait_exit(&mut w, Duration::from_secs(15)).success());
    let j = store.job_get(job.id).await.expect("job");
    assert_eq!((j.state, j.counts.done), (JobState::Succeeded, 3));
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_code() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let db = format!("sqlite://{}/x.db", dir.display());
    // (args, exit code, text stderr must contain)
    let cases: &[(&[&str], i32, &str)] = &[
        (&["worker", "--concurrency", "0"], 2, "--concurrency"),
        (&["worker", "--spare-slots", "-1"], 2, "unexpected argument"),
        (&["worker", "--spare-slots", "20000"], 2, "--spare-slots"),
        (&["worker", "--spare-slots", "two"], 2, "--spare-slots"),
        (&["worker", "--lease", "3d"], 2, "unknown unit"),
        (&["worker", "--lease", "-1s"], 2, "unexpected argument"),
        (&["worker", "--lease=1.5s"], 2, "not a duration"),
        (&["worker", "--scheduler", "maybe"], 2, "--scheduler"),
        (&["scheduler", "--leader-ttl", "soon"], 2, "not a duration"),
        (
            &["scheduler", "--leader-ttl", "10ms"],
            1,
            "--leader-ttl must be at least 300ms",
        ),
        (&["scheduler", "--rescue-every", "1d"], 2, "unknown unit"),
        (
            &["worker", "--task-memory-mib", "1"],
            2,
            "--task-memory-mib",
        ),
        (
            &["worker", "--task-timeout", "forever"],
            2,
            "not a duration",
        ),
        (&["server", "--listen", "localhost"], 2, "--listen"),
        (&["server", "--max-body-bytes", "10"], 2, "--max-body-bytes"),
        (
            &["server", "--max-backlog-tasks", "0"],
            2,
            "--max-backlog-tasks",
        ),
        (&["server", "--slots", "some"], 2, "--slots"),
        (&["backlog", "aws:1"], 2, "unexpected argument"),
        (&["status", "1", "--interval", "1s"], 2, "--watch"),
        (&["jobs", "--state", "done"], 2, "unknown state"),
        (&["jobs", "--limit", "0"], 2, "--limit"),
        (
            &["status", "1", "--watch", "--interval", "x"],
            2,
            "not a duration",
        ),
        (&["drain", "--timeout", "5s"], 2, "--wait"),
        (&["drain", "--end", "--wait"], 2, "cannot be used with"),
        (
            &["drain", "--wait", "--timeout", "soon"],
            2,
            "not a duration",
        ),
        (
            &["drain", "--end", "--database-url", &db],
            1,
            "no drain to end",
        ),
        (
            &["drain", "--reason", "", "--database-url", &db],
            1,
            "needs a reason",
        ),
        (&["cancel", "x"], 2, "invalid value"),
        (
            &["cancel", "1", "--reason", " ", "--database-url", &db],
            1,
            "reason must be 1 to 500 characters",
        ),
        (&["--url", "ftp://x", "status", "1"], 1, "not an http"),
        (&["--url", "http://h:1/v1", "jobs"], 1, "without a path"),
        (&["--url", "not a url", "jobs"], 1, "--url"),
        // The API's --url is global; a lake's location is positional, so the two never meet.
        (
            &[
                "lakes",
                "add",
                "x",
                "file:///tmp/",
                "--url",
                "http://x",
                "--scope",
                "a",
            ],
            1,
            "works on the database",
        ),
        (
            &["--url", "http://127.0.0.1:1", "status", "1"],
            1,
            "cannot reach the sluice API at http://127.0.0.1:1",
        ),
        (&["results", "1", "--limit", "0"], 2, "--limit"),
        (
            &["submit", "--ioc-ip", "10.0.0.1", "--max-attempts", "50"],
            2,
            "--max-attempts",
        ),
        (&["cancel", "424242", "--database-url", &db], 1, "not found"),
        (&["retry", "x"], 2, "invalid value"),
        (&["retry", "424242", "--database-url", &db], 1, "not found"),
        (
            &["--database-url", "mysql://x", "backlog"],
            1,
            "unsupported database url",
        ),
        (
            &["server", "--leader-ttl", "10ms"],
            1,
            "--leader-ttl must be at least 300ms",
        ),
        (
            &["tokens", "create", "--owner", "a", "--role", "root"],
            2,
            "invalid value 'root'",
        ),
        (&["tokens", "create", "--role", "admin"], 2, "--owner"),
        (
            &[
                "tokens",
                "create",
                "--owner",
                "",
                "--role",
                "admin",
                "--database-url",
                &db,
            ],
            1,
            "owner must be 1 to 200 characters",
        ),
        (&["tokens", "revoke", "abc"], 2, "invalid value"),
        (
            &["tokens", "revoke", "999", "--database-url", &db],
            1,
            "not found: token 999",
        ),
        (&["submit"], 1, "nothing to hunt"),
        (
            &[
                "submit",
                "--sql",
                "/nonexistent/q.sql",
                "--database-url",
                &db,
            ],
            1,
            "reading /nonexistent/q.sql",
        ),
        (
            &["submit", "--ioc-ip", "1.2.3", "--database-url", &db],
            1,
            "no registered lake",
        ),
        (&["results", "7", "--format", "xml"], 2, "invalid value"),
        (
            &[
                "lakes",
                "add",
                "x",
                "file:///nonexistent/",
                "--scope",
                "aws:1",
                "--database-url",
                &db,
            ],
            1,
            "reading lake x",
        ),
        (
            &[
                "lakes",
                "add",
                "x",
                "ftp://h/x/",
                "--scope",
                "aws:1",
                "--database-url",
                &db,
            ],
            1,
            "unsupported lake url scheme",
        ),
        (
            &["lakes", "generate", "--dir", "/tmp/x", "--count", "0"],
            2,
            "--count",
        ),
        (&["status", "not-a-number"], 2, "invalid value"),
        (&["bogus"], 2, "unrecognized subcommand"),
        (
            &["migrate", "--database-url", "mysql://root@localhost/x"],
            1,
            "unsupported database url",
        ),
        (
            &[
                "migrate",
                "--connect-timeout",
                "1s",
                "--database-url",
                "postgres://u:hunter2@127.0.0.1:1/x",
            ],
            1,
            "opening database postgres://u:***@127.0.0.1:1/x",
        ),
        (
            &["status", "42", "--database-url", &db],
            1,
            "not found: job 42",
        ),
        // The provider guard's verbs and flags.
        (
            &[
                "budget",
                "set",
                "aws:1",
                "--rate",
                "10",
                "--burst",
                "10",
                "--database-url",
                &db,
            ],
            1,
            "parent scope \"*\" has no budget: set it first",
        ),
        (
            &[
                "budget",
                "set",
                "*",
                "--rate=-5",
                "--burst",
                "1",
                "--database-url",
                &db,
            ],
            1,
            "rate must be a finite number >= 0",
        ),
        (
            &[
                "budget",
                "set",
                "*",
                "--rate",
                "NaN",
                "--burst",
                "1",
                "--database-url",
                &db,
            ],
            2,
            "must be a finite number",
        ),
        (
            &["budget", "set", "*", "--rate", "1", "--burst", "inf"],
            2,
            "must be a finite number",
        ),
        (
            &["budget", "set", "*", "--rate", "lots", "--burst", "1"],
            2,
            "invalid value",
        ),
        (&["budget", "set", "*", "--burst", "1"], 2, "--rate"),
        (
            &["breaker", "reset", "aws:404", "--database-url", &db],
            1,
            "has no breaker",
        ),
        (&["worker", "--provider-guard", "maybe"], 2, "invalid value"),
        (
            &["worker", "--budget-hold", "0ms", "--database-url", &db],
            1,
            "--budget-hold must be between",
        ),
        (
            &[
                "sim",
                "--dir",
                "/nonexistent",
                "--accounts",
                "/nonexistent/a.json",
            ],
            1,
            "reading /nonexistent/a.json",
        ),
        (&["sim", "--dir", "/tmp"], 2, "--accounts"),
        (
            &[
                "sim",
                "--listen",
                "nowhere",
                "--dir",
                "/tmp",
                "--accounts",
                "x",
            ],
            2,
            "invalid value",
        ),
    ];
    for (args, code, needle) in cases {
        // In the case's own folder: commands without --database-url open the default
        // `sluice.db` there, not a stale one in the source tree.
        let out = sluice()
            .args(*args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("running sluice");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        assert!(!err.contains("hunter2"), "password leaked: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
    for (text, needle) in [
        ("{not json", "accounts file"),
        (
            r#"{"accounts": {"../etc": {"buckets": [], "rate": 1, "burst": 1}}}"#,
            "letters, digits",
        ),
        (
            r#"{"accounts": {"1": {"buckets": ["b"], "rate": 1, "burst": 1, "freeze_after_secs": -1}}}"#,
            "freeze_after_secs",
        ),
        (r#"{"accounts": {}, "extra": true}"#, "unknown field"),
    ] {
        let f = dir.join("accounts.json");
        std::fs::write(&f, text).expect("write");
        let out = run(&[
            "sim",
            "--dir",
            &dir.display().to_string(),
            "--accounts",
            &f.display().to_string(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains(needle), "{text}: {err:?} lacks {needle:?}");
    }
    let out = run(&["migrate", "--database-url", &db]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_runs_end_to_end_on_the_embedded_store() {
    let dir = std::env::temp_dir().join(format!("sluice-demo-{}", rand::random::<u32>()));
    let d = dir.display().to_string();
    let demo = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "demo",
            "--data-dir",
            &d,
            "--lakes",
            "42",
            "--rows",
            "600",
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json output")
    };
    // Twice: the second run reuses the lakes and starts from a fresh database.
    for _ in 0..2 {
        let v = demo(&[]);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["exact"], true, "found exactly the planted needles: {v}");
        assert_eq!(v["lakes"], 42, "{v}");
        assert_eq!(v["sweep"]["lakes"]["done"], 42, "{v}");
        assert_eq!(v["sweep"]["owner"], "alice", "submitted over HTTP: {v}");
        assert_eq!(v["urgent"]["state"], "succeeded");
        assert!(v["needles_found"].as_u64().unwrap_or(0) > 0);
        assert_eq!(v["journal"]["job.succeeded"], 2);
        assert_eq!(v["attempts_spent"], 0, "{v}");
        assert!(v["worst_window"].as_f64().is_some_and(|w| w <= 1.0), "{v}");
    }
    // The outage: one account freezes mid-drain; its lakes wait behind an open breaker,
    // none fails, and the drain finishes under the budget once the account thaws.
    let v = demo(&["--outage", "--freeze-for", "4s"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["exact"], true, "{v}");
    let o = &v["outage"];
    assert!(
        o["frozen_at_secs"].is_number() && o["thawed_at_secs"].is_number(),
        "{v}"
    );
    assert_eq!(o["most_lakes_failed"], 0, "{v}");
    assert!(
        o["waiting"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().unwrap_or("").contains("breaker open"))),
        "the sweep said it waits on the breaker: {v}"
    );
    assert!(
        v["journal"]["breaker.opened"].as_u64().unwrap_or(0) >= 1,
        "{v}"
    );
    assert!(
        v["journal"]["breaker.closed"].as_u64().unwrap_or(0) >= 1,
        "{v}"
    );
    assert!(
        v["journal"]["breaker.probe_lost"].is_null(),
        "no probe lost: {v}"
    );
    assert_eq!(v["attempts_spent"], 0, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `sluice` with a database and results folder, failing the test on a non-zero exit.
/// Writes `count` lakes of `rows` rows with planted needles into `dir` and registers them:
/// the generator's manifest.
pub(crate) fn generate_lakes(
    db: &str,
    results: &std::path::Path,
    dir: &std::path::Path,
    count: u32,
    rows: u32,
    seed: u64,
) -> serde_json::Value {
    let (dir, count, rows, seed) = (
        dir.display().to_string(),
        count.to_string(),
        rows.to_string(),
        seed.to_string(),
    );
    let args = [
        "--output",
        "json",
        "lakes",
        "generate",
        "--dir",
        &dir,
        "--count",
        &count,
        "--rows",
        &rows,
        "--seed",
        &seed,
        "--register",
    ];
    serde_json::from_str(&sluice_ok(db, results, &args)).expect("manifest")
}

fn sluice_ok(db: &str, results: &std::path::Path, args: &[&str]) -> String {
    let mut cmd = sluice();
    cmd.args([
        "--database-url",
        db,
        "--results-dir",
        &results.display().to_string(),
    ])
    .args(args);
    String::from_utf8_lossy(&run_ok(&mut cmd, "running sluice").stdout).into_owned()
}

/// Generate 200 lakes → register → submit an IOC hunt for every planted needle → a worker
/// process runs the tasks → status shows every lake done → results are exactly the needles.
fn hunt_finds_exactly_the_needles(db: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let results = dir.path().join("results");
    let lakes = dir.path().join("lakes");
    let manifest: serde_json::Value = generate_lakes(db, &results, &lakes, 200, 900, 42);
    let needles = manifest["needles"].as_array().expect("needles");
    assert!(!needles.is_empty());
    let mut args = vec![
        "--output".to_string(),
        "json".to_string(),
        "submit".to_string(),
        "--lakes".to_string(),
        "lake-*".to_string(),
    ];
    args.extend(ioc_flags(needles));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let submitted: serde_json::Value =
        serde_json::from_str(&sluice_ok(db, &results, &args)).expect("submit json");
    assert_eq!(submitted["tasks"], 200);
    let job = submitted["job"].as_i64().expect("job id").to_string();
    // Before any worker ran: no results yet, and the table view says they are partial.
    let early = sluice_ok(db, &results, &["results", &job, "--format", "json"]);
    assert_eq!(early.trim(), "[]");
    let early = sluice_ok(db, &results, &["results", &job]);
    assert!(
        early.contains("0 rows") && early.contains("partial"),
        "{early}"
    );
    // The operator's view of the same backlog, from the store's counters.
    let backlog: serde_json::Value =
        serde_json::from_str(&sluice_ok(db, &results, &["--output", "json", "backlog"]))
            .expect("backlog json");
    assert_eq!(
        (backlog["pending"].as_i64(), backlog["running"].as_i64()),
        (Some(200), Some(0)),
        "{backlog}"
    );
    assert!(
        backlog["oldest_pending_secs"]
            .as_f64()
            .is_some_and(|s| s >= 0.0),
        "{backlog}"
    );
    assert_eq!(
        backlog["drain_secs"],
        serde_json::Value::Null,
        "no budget: no bound"
    );
    let text = sluice_ok(db, &results, &["backlog"]);
    assert!(text.contains("200 pending, 0 running"), "{text}");

    let mut worker = Proc::quiet(
        sluice()
            .args([
                "--database-url",
                db,
                "--results-dir",
                &results.display().to_string(),
            ])
            .args(["worker", "--idle-poll", "50ms", "--concurrency", "8"]),
        "worker",
    );
    // A researcher following the job: `status --watch` ends when the job does.
    let watcher = {
        let (db, results, job) = (db.to_string(), results.clone(), job.clone());
        std::thread::spawn(move || {
            sluice_ok(
                &db,
                &results,
                &["status", &job, "--watch", "--interval", "200ms"],
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        let s: serde_json::Value = serde_json::from_str(&sluice_ok(
            db,
            &results,
            &["--output", "json", "status", &job],
        ))
        .expect("status json");
        if s["state"] != "queued" && s["state"] != "running" {
            break s;
        }
        assert!(Instant::now() < deadline, "job not finished: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    signal(&worker, libc::SIGTERM);
    assert!(wait_exit(&mut worker, Duration::from_secs(20)).success());
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["lakes"]["done"], 200);
    assert_eq!(status["rows_found"].as_u64(), Some(needles.len() as u64));
    let watched = watcher.join().expect("watcher");
    assert!(
        watched.contains("succeeded: 200/200 lakes done")
            && watched.contains(&format!("{} rows found", needles.len())),
        "{watched}"
    );
    let backlog: serde_json::Value =
        serde_json::from_str(&sluice_ok(db, &results, &["--output", "json", "backlog"]))
            .expect("backlog json");
    assert_eq!(
        (
            &backlog["pending"],
            &backlog["running"],
            &backlog["oldest_pending_secs"]
        ),
        (
            &serde_json::json!(0),
            &serde_json::json!(0),
            &serde_json::Value::Null
        ),
        "{backlog}"
    );

    let explained = sluice_ok(db, &results, &["explain", &job]);
    for needle in [
        "job.submitted",
        "job.started",
        "job.succeeded",
        "task.succeeded       ×200",
        "task.claimed",
    ] {
        assert!(
            explained.contains(needle),
            "explain lacks {needle:?}:\n{explained}"
        );
    }
    let rows: serde_json::Value = serde_json::from_str(&sluice_ok(
        db,
        &results,
        &["results", &job, "--format", "json", "--limit", "1000"],
    ))
    .expect("results json");
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), needles.len());
    let mut want: Vec<(String, String)> = needles
        .iter()
        .map(|n| {
            (
                n["lake"].as_str().unwrap_or("").to_string(),
                n["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut got: Vec<(String, String)> = rows
        .iter()
        .flat_map(|r| {
            let lake = r["_lake"].as_str().unwrap_or("").to_string();
            ["src_ip", "dst_ip", "domain", "file_sha256"]
                .iter()
                .filter_map(|c| r[*c].as_str())
                .filter(|v| needles.iter().any(|n| n["value"] == *v))
                .map(|v| (lake.clone(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "results are exactly the planted needles");
}

#[test]
fn hunt_end_to_end_on_sqlite() {
    let dir = tempfile::tempdir().expect("tmp");
    hunt_finds_exactly_the_needles(&format!("sqlite://{}/sluice.db", dir.path().display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunt_end_to_end_on_postgres() {
    let (_store, url) = sluice_store::testing::pg_store().await;
    tokio::task::spawn_blocking(move || hunt_finds_exactly_the_needles(&url))
        .await
        .expect("e2e");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_metrics_are_served_and_pass_promtool() {
    let (store, url) = sluice_store::testing::pg_store().await;
    let job = submit(&store, 5, serde_json::json!({"kind": "noop"})).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut w = spawn_worker(&url, &["--metrics-listen", &addr]);
    until_job_ends(&store, job.id, Duration::from_secs(30)).await;
    // The outcome is recorded before the counter moves on; give the finisher a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = http_get(&addr, "/metrics");
    let (head, body) = resp.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for line in [
        "sluice_worker_tasks_claimed_total 5",
        "sluice_worker_task_outcomes_total{outcome=\"succeeded\"} 5",
        "sluice_worker_outcomes_rejected_total 0",
        // 16 slots and 2 spare ones (16 / 8) for owners not running their share.
        "sluice_worker_slots 18",
        "sluice_worker_spare_claims_total 0",
        "sluice_engine_rows_matched_total 0",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in:\n{body}"
        );
    }
    assert!(body.contains("# HELP sluice_worker_task_duration_seconds"));
    let out = run_with_input(
        Command::new("promtool").args(["check", "metrics"]),
        body,
        "promtool (Debian package prometheus) is needed: .ci/run installs it",
    );
    assert!(
        out.status.success(),
        "promtool check metrics: {}",
        printed(&out)
    );
    assert!(http_get(&addr, "/nope").starts_with("HTTP/1.1 404"));
    signal(&w, libc::SIGTERM);
    assert!(wait_exit(&mut w, Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_a_scope_back_on_every_worker_until_resumed() {
    let (store, url) = sluice_store::testing::pg_store().await;
    let cli = |args: &[&str]| {
        let out = sluice()
            .args(["--database-url", &url])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("sluice");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&[
        "pause",
        "--scope",
        "aws:1",
        "--reason",
        "provider incident INC-7",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("paused scope:aws:1"), "{out}");
    let job = submit(&store, 4, serde_json::json!({"kind": "noop"})).await;
    let mut w = spawn_worker(&url, &["--id", "w"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let j = store.job_get(job.id).await.expect("job");
    assert_eq!(
        (j.state, j.counts.done),
        (JobState::Queued, 0),
        "a paused scope's tasks must not run"
    );
    let (_, status, _) = cli(&["status", &job.id.to_string()]);
    assert!(
        status.contains("waiting: paused by") && status.contains("provider incident INC-7"),
        "{status}"
    );
    let (_, listed, _) = cli(&["pauses"]);
    assert!(
        listed.contains("scope:aws:1") && listed.contains("1 pauses in force"),
        "{listed}"
    );

    let (code, _, err) = cli(&["resume", "--scope", "aws:1"]);
    assert_eq!(code, Some(0), "{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.job_get(job.id).await.expect("job").state != JobState::Succeeded {
        assert!(Instant::now() < deadline, "job did not run after resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&w, libc::SIGTERM);
    assert!(wait_exit(&mut w, Duration::from_secs(10)).success());

    // (args, exit code, stderr contains)
    let bad: &[(&[&str], i32, &str)] = &[
        (&["pause", "--reason", "x"], 2, "required"),
        (
            &["pause", "--all", "--scope", "aws:1", "--reason", "x"],
            2,
            "cannot be used with",
        ),
        (&["pause", "--all"], 2, "--reason"),
        (&["pause", "--all", "--reason", " "], 1, "needs a reason"),
        (
            &["pause", "--job", "x", "--reason", "r"],
            2,
            "invalid value",
        ),
        (&["resume", "--job", "999"], 1, "not found"),
    ];
    for (args, want, needle) in bad {
        let (code, _, err) = cli(args);
        assert_eq!(code, Some(*want), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    // `--now`: running tasks are handed back (no attempt spent) and their runs stopped.
    let long = submit(
        &store,
        3,
        serde_json::json!({"kind": "sleep", "ms": 600_000}),
    )
    .await;
    let mut w = spawn_worker(&url, &["--id", "w-now", "--lease", "3s"]);
    until_tasks(
        &store,
        long.id,
        Duration::from_secs(20),
        "all running",
        |ts| ts.iter().all(|t| t.state == TaskState::Running),
    )
    .await;
    let (code, out, err) = cli(&[
        "pause",
        "--job",
        &long.id.to_string(),
        "--now",
        "--reason",
        "drill",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("3 running tasks handed back"), "{out}");
    for t in tasks(&store, long.id).await {
        assert_eq!((t.state, t.attempt), (TaskState::Pending, 0), "{t:?}");
    }
    // The worker notices at its next heartbeat, stops the runs, and its late outcomes are refused.
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&w, libc::SIGTERM);
    assert!(wait_exit(&mut w, Duration::from_secs(10)).success());
    let j = store.job_get(long.id).await.expect("job");
    assert_eq!(
        (j.state, j.counts.done, j.counts.failed),
        (JobState::Running, 0, 0)
    );
    for t in tasks(&store, long.id).await {
        assert_eq!((t.state, t.attempt), (TaskState::Pending, 0), "{t:?}");
    }
}

/// `sluice drain`: intake closes for every submitter, the wait ends (exit 0) only once the
/// accepted backlog is gone and times out (exit 3) while it is not; `--end` reopens.
#[test]
fn drain_refuses_new_jobs_and_waits_for_the_backlog() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = format!("sqlite://{}/d.db", dir.path().display());
    let results = dir.path().join("results");
    let lakes = dir.path().join("lakes").display().to_string();
    sluice_ok(
        &db,
        &results,
        &[
            "lakes",
            "generate",
            "--dir",
            &lakes,
            "--count",
            "3",
            "--rows",
            "100",
            "--register",
        ],
    );
    let submit = [
        "--output", "json", "submit", "--ioc-ip", "10.0.0.1", "--lakes", "lake-*",
    ];
    let job: serde_json::Value =
        serde_json::from_str(&sluice_ok(&db, &results, &submit)).expect("submit json");
    let job = job["job"].as_i64().expect("job").to_string();
    let run = |args: &[&str]| {
        sluice()
            .args([
                "--database-url",
                &db,
                "--results-dir",
                &results.display().to_string(),
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("sluice")
    };
    let out = run(&[
        "drain",
        "--reason",
        "db upgrade",
        "--wait",
        "--timeout",
        "1s",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("3 tasks pending") && text.contains("not drained"),
        "{text}"
    );
    let out = run(&submit);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("draining") && err.contains("db upgrade"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    sluice_ok(&db, &results, &["cancel", &job, "--reason", "not needed"]);
    let out = run(&["status", &job, "--watch"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a cancelled job is not a success"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled"));
    // Running it again adds work: refused like a submission while intake is closed.
    let out = run(&["retry", &job]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("draining"), "{err}");
    let listed = sluice_ok(&db, &results, &["jobs", "--state", "cancelled"]);
    assert!(
        listed
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{job} "))),
        "{listed}"
    );
    assert_eq!(
        sluice_ok(&db, &results, &["jobs", "--state", "running"])
            .lines()
            .count(),
        1
    );
    let out = run(&["--output", "json", "drain", "--wait"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("drain json");
    assert_eq!(
        (&v["drained"], &v["pending"]),
        (&serde_json::json!(true), &serde_json::json!(0)),
        "{v}"
    );
    // A submission that waits for intake goes in once intake reopens, exactly once.
    let waiting = {
        let (db, results) = (db.clone(), results.display().to_string());
        std::thread::spawn(move || {
            sluice()
                .args(["--database-url", &db, "--results-dir", &results])
                .args(["--output", "json", "submit", "--ioc-ip", "10.0.0.2"])
                .args(["--lakes", "lake-*", "--wait-intake", "60s"])
                .stdin(Stdio::null())
                .output()
                .expect("sluice")
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let jobs_while_closed = sluice_ok(&db, &results, &["jobs"]).lines().count();
    sluice_ok(&db, &results, &["drain", "--end"]);
    let out = waiting.join().expect("waiting submit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("submit json");
    assert_eq!(v["created"], true, "{v}");
    assert_eq!(
        sluice_ok(&db, &results, &["jobs"]).lines().count(),
        jobs_while_closed + 1
    );
    sluice_ok(&db, &results, &submit);
}

/// Settings come from flags, then `SLUICE_…` variables, then the TOML file, then defaults; the
/// file's values pass the same checks as flags; `config show` masks passwords.
#[test]
fn config_file_env_and_flags_in_that_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        "database_url = \"postgres://u:secret@db.example:5432/s\"\n[worker]\nconcurrency = 7\n",
    )
    .expect("write");
    let f = file.display().to_string();
    let show = |extra_env: &[(&str, &str)], args: &[&str]| -> serde_json::Value {
        let mut c = sluice();
        c.env_remove("SLUICE_WORKER_CONCURRENCY")
            .current_dir(dir.path())
            .args(["--config", &f, "--output", "json"])
            .args(args)
            .args(["config", "show"]);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let out = c.stdin(Stdio::null()).output().expect("sluice");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let mut by = serde_json::Map::new();
        for s in v.as_array().expect("array") {
            by.insert(
                s["setting"].as_str().expect("setting").into(),
                serde_json::json!([s["value"], s["source"]]),
            );
        }
        serde_json::Value::Object(by)
    };
    let v = show(&[], &[]);
    assert_eq!(
        v["database_url"],
        serde_json::json!(["postgres://u:***@db.example:5432/s", "file"])
    );
    assert_eq!(v["worker_concurrency"], serde_json::json!(["7", "file"]));
    assert_eq!(v["worker_lease"], serde_json::json!(["30s", "default"]));
    assert!(!v.to_string().contains(":secret@"), "{v}");
    let v = show(
        &[
            ("SLUICE_WORKER_CONCURRENCY", "9"),
            ("SLUICE_WEBHOOK_SECRET", "hush-0123456789abcdef"),
        ],
        &["--database-url", "sqlite://x.db"],
    );
    assert_eq!(v["worker_concurrency"], serde_json::json!(["9", "env"]));
    assert_eq!(v["webhook_secret"], serde_json::json!(["***", "env"]));
    assert_eq!(
        v["database_url"],
        serde_json::json!(["sqlite://x.db", "flag"])
    );

    // Hostile and malformed files: one clear line, exit 2, nothing run.
    let cases: &[(&str, &str)] = &[
        (
            "[worker]\nconcurency = 3\n",
            "unknown setting \"worker_concurency\"",
        ),
        ("[worker\n", "s.toml"),
        ("database_url = [\"a\"]\n", "not a setting value"),
        ("[worker]\nconcurrency = 0\n", "concurrency"),
        ("[worker]\nlease = \"3 days\"\n", "unknown unit"),
    ];
    for (text, want) in cases {
        std::fs::write(&file, text).expect("write");
        let out = sluice()
            .current_dir(dir.path())
            .args(["--config", &f, "worker"])
            .stdin(Stdio::null())
            .output()
            .expect("sluice");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert!(err.contains(want), "{text:?}: {err}");
    }
    let out = run(&["--config", "/nonexistent/s.toml", "config", "show"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading config /nonexistent/s.toml"));

    // Completions for the shells clap knows; others are bad usage.
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("drain"),
            "{shell}"
        );
    }
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2));
}

/// Processes started together on a fresh SQLite file all migrate it: one at a time, the
/// others find the migrations applied (six at once, twenty rounds).
#[test]
fn processes_started_together_migrate_a_fresh_sqlite_file() {
    for round in 0..20 {
        let dir = tempfile::tempdir().expect("tmp");
        let db = format!("sqlite://{}/s.db", dir.path().display());
        let procs: Vec<Child> = (0..6)
            .map(|_| {
                sluice()
                    .args(["--database-url", &db, "migrate"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("sluice")
            })
            .collect();
        for p in procs {
            let out = p.wait_with_output().expect("sluice");
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The hunts of one backlog (IOC hunts that overlap and differ in range, and a SQL hunt), each
/// as `submit` arguments.
fn backlog_hunts(needles: &[serde_json::Value], sql: &std::path::Path) -> Vec<Vec<String>> {
    let of = |kind: &str| -> Vec<serde_json::Value> {
        needles
            .iter()
            .filter(|n| n["kind"] == kind)
            .cloned()
            .collect()
    };
    let (ips, hashes, domains) = (of("ip"), of("hash"), of("domain"));
    let mut day: Vec<&str> = needles.iter().filter_map(|n| n["dt"].as_str()).collect();
    day.sort();
    let mid = format!("{}T00:00:00Z", day[day.len() / 2]);
    let mut hunts = vec![
        ioc_flags(&ips[..ips.len() / 2]),
        ioc_flags(&[&ips[ips.len() / 3..], &hashes[..]].concat()),
        [ioc_flags(&domains), vec!["--since".into(), mid.clone()]].concat(),
        [
            ioc_flags(&[&hashes[..], &domains[..1]].concat()),
            vec!["--until".into(), mid],
        ]
        .concat(),
        ioc_flags(needles),
        vec!["--ioc-ip".into(), "203.0.113.77".into()],
    ];
    hunts.push(vec!["--sql".into(), sql.display().to_string()]);
    hunts
}

/// Submits every hunt of [`backlog_hunts`], runs one worker with `--share-scan share` until
/// all have ended, and returns each job's result rows (sorted) and the worker's shared tasks.
fn drain_backlog(
    db: &str,
    results: &std::path::Path,
    hunts: &[Vec<String>],
    share: &str,
) -> (Vec<Vec<String>>, u64) {
    let mut jobs = Vec::new();
    for h in hunts {
        let mut args = vec!["--output", "json", "submit", "--lakes", "lake-*"];
        args.extend(h.iter().map(String::as_str));
        let submitted: serde_json::Value =
            serde_json::from_str(&sluice_ok(db, results, &args)).expect("submit json");
        jobs.push(submitted["job"].as_i64().expect("job id").to_string());
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = Proc::quiet(
        sluice()
            .args([
                "--database-url",
                db,
                "--results-dir",
                &results.display().to_string(),
            ])
            .args(["worker", "--idle-poll", "50ms", "--concurrency", "4"])
            .args(["--share-scan", share, "--metrics-listen", &addr]),
        "worker",
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut rows = Vec::new();
    for job in &jobs {
        loop {
            let s: serde_json::Value = serde_json::from_str(&sluice_ok(
                db,
                results,
                &["--output", "json", "status", job],
            ))
            .expect("status json");
            if s["state"] == "succeeded" {
                break;
            }
            assert!(
                s["state"] == "queued" || s["state"] == "running",
                "job {job}: {s}"
            );
            assert!(Instant::now() < deadline, "job {job} not finished: {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let got: serde_json::Value = serde_json::from_str(&sluice_ok(
            db,
            results,
            &["results", job, "--format", "json", "--limit", "100000"],
        ))
        .expect("results json");
        let mut lines: Vec<String> = got
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r.to_string())
            .collect();
        lines.sort();
        rows.push(lines);
    }
    let metrics = http_get(&addr, "/metrics");
    let shared = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_worker_tasks_shared_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    signal(&worker, libc::SIGTERM);
    assert!(wait_exit(&mut worker, Duration::from_secs(20)).success());
    (rows, shared)
}

/// A backlog of hunts over the same lakes, drained with shared scans and then again without:
/// every job gets the same rows either way, and the shared drain did share.
fn shared_scans_change_no_result(db: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let results = dir.path().join("results");
    let manifest = generate_lakes(db, &results, &dir.path().join("lakes"), 12, 900, 11);
    let needles = manifest["needles"].as_array().expect("needles").clone();
    assert!(needles.len() >= 6, "{needles:?}");
    let sql = dir.path().join("hunt.sql");
    let ip = needles
        .iter()
        .find(|n| n["kind"] == "ip")
        .and_then(|n| n["value"].as_str())
        .expect("an ip needle");
    std::fs::write(
        &sql,
        format!("SELECT * FROM events\nWHERE src_ip = '{ip}' OR dst_ip = '{ip}'"),
    )
    .expect("sql file");
    let hunts = backlog_hunts(&needles, &sql);
    let (shared_rows, shared) = drain_backlog(db, &results, &hunts, "64");
    let (alone_rows, none) = drain_backlog(db, &results, &hunts, "1");
    assert!(shared > 0, "the shared drain shared nothing");
    assert_eq!(none, 0);
    for (k, (s, a)) in shared_rows.iter().zip(&alone_rows).enumerate() {
        assert_eq!(s, a, "hunt {k}: {:?}", hunts[k]);
    }
    let found: usize = shared_rows.iter().map(Vec::len).sum();
    assert!(found > needles.len(), "{found} rows in all");
    assert!(shared_rows.iter().any(Vec::is_empty));
}

#[test]
fn shared_scans_change_no_result_on_sqlite() {
    let dir = tempfile::tempdir().expect("tmp");
    shared_scans_change_no_result(&format!("sqlite://{}/sluice.db", dir.path().display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_scans_change_no_result_on_postgres() {
    let (_store, url) = sluice_store::testing::pg_store().await;
    tokio::task::spawn_blocking(move || shared_scans_change_no_result(&url))
        .await
        .expect("e2e");
}
