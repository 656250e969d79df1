//! Hunt isolation (ADR 0010) against a real `sluice server` on PostgreSQL: hostile hunts end
//! their own tasks — failed with the limit they hit, or refused at submit — while the server
//! answers `/healthz` throughout and another researcher's IOC hunt finds exactly its needles
//! without spending an attempt; a runner killed with SIGKILL mid-task (a poison pill) gets one
//! more run, then its task fails saying so.

use super::api::{http, wait_ready};
use super::{Proc, free_port, sluice, sluice_ok};
use sluice_core::JobId;
use sluice_store::{PgStore, Store, Task, TaskListParams};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A server on a fresh database with generated lakes, and a token per researcher.
struct Bench {
    _dir: tempfile::TempDir,
    addr: String,
    needles: Vec<serde_json::Value>,
    _server: Proc,
    server_pid: u32,
}

fn token(db: &str, results: &std::path::Path, owner: &str) -> String {
    let t: serde_json::Value = serde_json::from_str(&sluice_ok(
        db,
        results,
        &[
            "--output",
            "json",
            "tokens",
            "create",
            "--owner",
            owner,
            "--role",
            "researcher",
        ],
    ))
    .expect("token json");
    t["token"].as_str().expect("token").to_string()
}

fn start(db: &str, lakes: u32, extra: &[&str]) -> Bench {
    start_under(None, db, lakes, extra)
}

/// [`start`], the server started through `wrapper` (e.g. `prlimit --nofile=…`).
fn start_under(wrapper: Option<&[&str]>, db: &str, lakes: u32, extra: &[&str]) -> Bench {
    let dir = tempfile::tempdir().expect("tmp");
    let results = dir.path().join("results");
    let manifest: serde_json::Value =
        crate::generate_lakes(db, &results, &dir.path().join("lakes"), lakes, 400, 5);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = match wrapper {
        None => sluice(),
        Some(w) => {
            let mut c = std::process::Command::new(w[0]);
            c.args(&w[1..])
                .arg(env!("CARGO_BIN_EXE_sluice"))
                .env_remove("SLUICE_DATABASE_URL");
            c
        }
    };
    let server = Proc::quiet(
        cmd.args([
            "--database-url",
            db,
            "--results-dir",
            &results.display().to_string(),
        ])
        .args(["server", "--listen", &addr, "--idle-poll", "50ms"])
        .args(extra),
        "server",
    );
    wait_ready(&addr);
    Bench {
        needles: manifest["needles"].as_array().expect("needles").clone(),
        server_pid: server.id(),
        _server: server,
        addr,
        _dir: dir,
    }
}

fn submit(addr: &str, token: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (status, text) = http(addr, "POST", "/v1/jobs", token, Some(&body.to_string()));
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

fn job_state(addr: &str, token: &str, job: u64) -> serde_json::Value {
    let (status, text) = http(addr, "GET", &format!("/v1/jobs/{job}"), token, None);
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("job")
}

/// Polls a job until it has ended (within `within`), and returns it.
async fn ended(addr: &str, token: &str, job: u64, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let j = job_state(addr, token, job);
        if j["state"] != "queued" && j["state"] != "running" {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} not ended after {within:?}: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tasks(store: &PgStore, job: u64) -> Vec<Task> {
    store
        .task_list(TaskListParams {
            job_id: JobId(job as i64),
            limit: 1000,
            after: None,
        })
        .await
        .expect("tasks")
}

/// Submits, as `token`, the IOC hunt for every needle of the bench's lakes; returns its job.
fn hunt_the_needles(b: &Bench, token: &str, extra: serde_json::Value) -> u64 {
    let mut body = serde_json::json!({"hunt": crate::ioc_hunt(&b.needles)});
    if let (Some(o), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    let (status, body) = submit(&b.addr, token, &body);
    assert_eq!(status, 202, "{body}");
    body["job"].as_u64().expect("job")
}

/// Waits for a needle hunt and checks it succeeded with exactly the needles and no attempt
/// spent on any of its tasks.
async fn found_every_needle(b: &Bench, store: &PgStore, token: &str, job: u64, within: Duration) {
    let j = ended(&b.addr, token, job, within).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(
        j["rows_found"].as_u64(),
        Some(b.needles.len() as u64),
        "{j}"
    );
    for t in tasks(store, job).await {
        assert_eq!(
            t.attempt, 0,
            "task {:?} spent an attempt: {:?}",
            t.id, t.last_error
        );
    }
}

/// Polls `/healthz` every 50 ms until stopped: counts answers, failures and the slowest.
struct Health {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    slowest_ms: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

fn watch_health(addr: &str) -> Health {
    let (stop, ok, failed, slowest_ms) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let (s, o, f, w, addr) = (
        stop.clone(),
        ok.clone(),
        failed.clone(),
        slowest_ms.clone(),
        addr.to_string(),
    );
    let thread = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let t = Instant::now();
            let answered = std::net::TcpStream::connect(&addr).ok().and_then(|mut c| {
                use std::io::{Read, Write};
                c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                write!(
                    c,
                    "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                .ok()?;
                let mut out = String::new();
                c.read_to_string(&mut out).ok()?;
                out.starts_with("HTTP/1.1 200").then_some(())
            });
            match answered {
                Some(()) => o.fetch_add(1, Ordering::Relaxed),
                None => f.fetch_add(1, Ordering::Relaxed),
            };
            w.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    Health {
        stop,
        ok,
        failed,
        slowest_ms,
        thread,
    }
}

impl Health {
    fn finish(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.slowest_ms.load(Ordering::Relaxed),
        )
    }
}

const TIMEOUT_SECS: u64 = 6;

/// Whether `text` says one of the `|`-separated phrases.
fn mentions(text: &str, phrases: &str) -> bool {
    phrases.split('|').any(|p| text.contains(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_hunts_end_their_own_tasks_and_nobody_elses() {
    let (store, db) = sluice_store::testing::pg_store().await;
    let timeout = format!("{TIMEOUT_SECS}s");
    let b = tokio::task::block_in_place(|| {
        start(
            &db,
            6,
            &[
                "--concurrency",
                "4",
                "--task-timeout",
                &timeout,
                "--task-memory-mib",
                "128",
                "--task-result-mib",
                "16",
                "--task-result-rows",
                "50000",
            ],
        )
    });
    let results = std::env::temp_dir();
    let (mallory, bob) = (token(&db, &results, "mallory"), token(&db, &results, "bob"));
    let health = watch_health(&b.addr);
    let two = serde_json::json!({"names": ["lake-00000", "lake-00001"]});
    let deep = format!(
        "SELECT * FROM events WHERE {}src_ip = '1'{}",
        "(".repeat(200),
        ")".repeat(200)
    );
    let chain = format!(
        "SELECT * FROM events WHERE {}",
        (0..5000)
            .map(|i| format!("dst_port = {i}"))
            .collect::<Vec<_>>()
            .join(" OR ")
    );
    // (class, SQL, what the failure names: the task's error or the submit's refusal)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "memory through a scalar function",
            "SELECT length(repeat(file_sha256, 30000000)) FROM events".into(),
            "needed more than 128 MiB",
        ),
        (
            "a string blow-up",
            "SELECT lpad(domain, 2000000000, 'x') AS d FROM events".into(),
            "needed more than 128 MiB",
        ),
        (
            "a cross join",
            "SELECT count(*) FROM events a, events b, events c, events d WHERE a.bytes + b.bytes > c.bytes + d.bytes".into(),
            "longer than its limit of 6s",
        ),
        (
            "a CPU-heavy function",
            "SELECT levenshtein(repeat(domain, 3000), repeat(user, 3000)) FROM events".into(),
            "longer than its limit of 6s",
        ),
        (
            "a huge range",
            "SELECT count(DISTINCT value) FROM range(1, 10000000000)".into(),
            "table function 'range' not found|longer than its limit of 6s|needed more than 128 MiB",
        ),
        (
            "an endless recursive query",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r".into(),
            "longer than its limit of 6s|needed more than 128 MiB",
        ),
        (
            "results that expand enormously",
            "SELECT repeat(domain, 5000) AS d FROM events".into(),
            "passed the limit of 16 MiB",
        ),
        (
            "too many result rows",
            "SELECT a.src_ip FROM events a, events b".into(),
            "passed the limit of 50000 rows",
        ),
        ("deeply nested brackets", deep, "nests brackets more than 40 deep"),
        ("a very long predicate chain", chain, "more than 5000 operators"),
    ];
    let bob_job = hunt_the_needles(&b, &bob, serde_json::json!({"max_attempts": 3}));
    let mut hostile = Vec::new();
    for (class, sql, names) in &cases {
        let (status, body) = submit(
            &b.addr,
            &mallory,
            &serde_json::json!({"hunt": {"kind": "sql", "sql": sql, "lakes": two}, "max_attempts": 5}),
        );
        match status {
            202 => hostile.push((
                *class,
                body["job"].as_u64().expect("job"),
                *names,
                Instant::now(),
            )),
            400 => assert!(mentions(&body.to_string(), names), "{class}: {body}"),
            other => panic!("{class}: {other} {body}"),
        }
    }
    assert!(
        hostile.len() >= 7,
        "most classes reach a runner: {hostile:?}"
    );
    // Eight hostile validations at once (the longest chain allowed, constants that would take
    // minutes to fold): the API keeps answering, and each gets its answer.
    let long_chain = format!(
        "SELECT * FROM events WHERE {}",
        (0..1000)
            .map(|i| format!("src_ip = '10.0.{}.{}'", i / 250, i % 250))
            .collect::<Vec<_>>()
            .join(" OR ")
    );
    let checks: Vec<_> = (0..8)
        .map(|i| {
            let sql = if i % 2 == 0 {
                long_chain.clone()
            } else {
                "SELECT * FROM events WHERE levenshtein(repeat('a', 100000), repeat('b', 100000)) > 0".into()
            };
            let (addr, token) = (b.addr.clone(), mallory.clone());
            std::thread::spawn(move || {
                let body = serde_json::json!({"hunt": {"kind": "sql", "sql": sql}}).to_string();
                http(&addr, "POST", "/v1/validate", &token, Some(&body))
            })
        })
        .collect();
    // Each is checked, or told the server is busy (503, try again) — never a crash, a stall
    // of the API, or a hunt called invalid for the server's sake.
    for c in checks {
        let (status, body) = c.join().expect("validation thread");
        match status {
            200 => {}
            503 => assert!(body.contains("busy"), "{body}"),
            _ => panic!("{status}: {body}"),
        }
    }
    // And the checks are not wedged by them: a plain hunt is checked (once a turn is free).
    let plain = serde_json::json!({"hunt": {"kind": "sql", "sql": "SELECT src_ip FROM events WHERE dst_port = 22"}}).to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http(&b.addr, "POST", "/v1/validate", &mallory, Some(&plain));
        if status == 200 {
            break;
        }
        assert!(
            status == 503 && Instant::now() < deadline,
            "{status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every hostile job fails within its timeout plus slack, naming its limit, and spends
    // no retry on it (a limit is permanent).
    let slack = Duration::from_secs(TIMEOUT_SECS * 2 + 60);
    for (class, job, names, at) in &hostile {
        // Within its timeout plus slack of its submission.
        let j = ended(&b.addr, &mallory, *job, slack.saturating_sub(at.elapsed())).await;
        assert_eq!(j["state"], "failed", "{class}: {j}");
        assert!(
            mentions(j["error"].as_str().unwrap_or(""), names),
            "{class}: the job says why: {j}"
        );
        for t in tasks(&store, *job).await {
            let err = t.last_error.clone().unwrap_or_default();
            assert!(mentions(&err, names), "{class}: task {:?}: {err}", t.id);
            // A limit is not retried — but a run stopped at its timeout that barely got the
            // CPU (this machine is busy with every class at once) is tried once more.
            let runs = if err.contains("longer than its limit") {
                1..=2
            } else {
                1..=1
            };
            assert!(
                runs.contains(&t.attempt),
                "{class}: {} runs: {err}",
                t.attempt
            );
        }
    }
    // Bob's hunt: succeeded, exactly its needles, no attempt spent.
    found_every_needle(&b, &store, &bob, bob_job, Duration::from_secs(120)).await;
    let (ok, failed, slowest) = health.finish();
    eprintln!("healthz: {ok} answers, {failed} failures, slowest {slowest} ms");
    assert_eq!(failed, 0, "/healthz failed {failed} times ({ok} answers)");
    assert!(ok > 20, "{ok}");
    // The server is the same process it was at the start.
    assert!(
        std::path::Path::new(&format!("/proc/{}", b.server_pid)).exists(),
        "the server died"
    );
}

/// The pids of `parent`'s hunt runners.
fn runners_of(parent: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && cmd.contains("__runner") {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_mid_task_is_a_poison_pill_retried_once() {
    let (store, db) = sluice_store::testing::pg_store().await;
    let b = tokio::task::block_in_place(|| {
        start(&db, 3, &["--concurrency", "2", "--task-timeout", "60s"])
    });
    let results = std::env::temp_dir();
    let (mallory, bob) = (token(&db, &results, "mallory"), token(&db, &results, "bob"));
    let slow = serde_json::json!({"hunt": {"kind": "sql",
        "sql": "SELECT count(*) FROM events a, events b, events c, events d WHERE a.bytes + b.bytes > c.bytes + d.bytes",
        "lakes": {"names": ["lake-00000"]}}, "max_attempts": 10});
    let (status, body) = submit(&b.addr, &mallory, &slow);
    assert_eq!(status, 202, "{body}");
    let job = body["job"].as_u64().expect("job");
    // Kill the runner of each run: the first crash is retried in a fresh runner, the second
    // fails the task.
    for run in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = &tasks(&store, job).await[0];
            if t.state == sluice_core::TaskState::Running && t.attempt == run {
                break;
            }
            assert!(Instant::now() < deadline, "run {run} never started: {t:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Give the runner the task, then SIGKILL every runner of the server (idle ones too:
        // the pool notices and starts new ones).
        tokio::time::sleep(Duration::from_millis(800)).await;
        let pids = runners_of(b.server_pid);
        assert!(!pids.is_empty(), "no runner found");
        for pid in pids {
            // SAFETY: kill(2) on a child process of the server we started.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    let j = ended(&b.addr, &mallory, job, Duration::from_secs(60)).await;
    assert_eq!(j["state"], "failed", "{j}");
    let t = &tasks(&store, job).await[0];
    let err = t.last_error.clone().unwrap_or_default();
    assert!(
        err.contains("crashed its runner (signal 9, SIGKILL)") && err.contains("second time"),
        "{err}"
    );
    assert_eq!(t.attempt, 2, "one retry, then failed: {t:?}");
    // The journal says so, run by run.
    let (status, events) = http(
        &b.addr,
        "GET",
        &format!("/v1/jobs/{job}/events"),
        &mallory,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        events.matches("crashed its runner (signal 9").count(),
        2,
        "{events}"
    );
    // The server is still there, and another researcher's hunt runs as usual.
    let bob_job = hunt_the_needles(&b, &bob, serde_json::json!({}));
    found_every_needle(&b, &store, &bob, bob_job, Duration::from_secs(60)).await;
}

/// A warm runner runs task after task: one slot (no spare), one runner, every lake of a hunt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_warm_runner_runs_task_after_task() {
    let (store, db) = sluice_store::testing::pg_store().await;
    let b = tokio::task::block_in_place(|| {
        start(&db, 5, &["--concurrency", "1", "--spare-slots", "0"])
    });
    let bob = token(&db, &std::env::temp_dir(), "bob");
    let job = hunt_the_needles(&b, &bob, serde_json::json!({}));
    found_every_needle(&b, &store, &bob, job, Duration::from_secs(60)).await;
    let (_, metrics) = http(&b.addr, "GET", "/metrics", "", None);
    let started: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_engine_runners_started_total"))
        .collect();
    assert_eq!(
        started,
        ["sluice_engine_runners_started_total 1"],
        "{started:?}"
    );
    assert_eq!(runners_of(b.server_pid).len(), 1);
    // The lake counters a runner moved reach the worker's /metrics.
    let rows = metrics
        .lines()
        .find(|l| l.starts_with("sluice_engine_rows_matched_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(rows, Some(b.needles.len() as u64), "{metrics}");
    // The same hunt again on the warm runner: its caches answer, no lake is listed again
    // (invariant 12, through a runner).
    let lists = |m: &str| -> Option<u64> {
        m.lines()
            .find(|l| l.starts_with("sluice_engine_lake_calls_total{op=\"list\"}"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    let before = lists(&metrics);
    assert!(before.is_some_and(|n| n > 0), "{metrics}");
    let again = hunt_the_needles(&b, &bob, serde_json::json!({}));
    found_every_needle(&b, &store, &bob, again, Duration::from_secs(60)).await;
    let (_, metrics) = http(&b.addr, "GET", "/metrics", "", None);
    assert_eq!(lists(&metrics), before, "a repeat hunt listed a lake again");
}

/// Five thousand clients that never finish their headers (slow loris) against a server
/// allowed 2,048 file descriptors: the connection cap keeps descriptors for the worker slots,
/// the header deadline frees the slots, and `/healthz` and a hunt in the same process still
/// complete. (An uncapped server accepts until it has no descriptor left: no probe answers,
/// no lake opens.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_clients_starve_neither_the_api_nor_the_hunts() {
    let (store, db) = sluice_store::testing::pg_store().await;
    let b = tokio::task::block_in_place(|| {
        start_under(
            Some(&["prlimit", "--nofile=2048:2048"]),
            &db,
            3,
            &[
                "--concurrency",
                "2",
                "--max-connections",
                "256",
                "--header-timeout",
                "2s",
            ],
        )
    });
    let bob = token(&db, &std::env::temp_dir(), "bob");
    // The flood: every client connects, sends half a request and waits.
    let addr: std::net::SocketAddr = b.addr.parse().expect("addr");
    // Waves of a thousand until more clients hold a socket than the server has descriptors
    // (an uncapped server would have taken them all and run out): at least 5,000 attempts.
    let mut held = Vec::new();
    let (mut attempts, started) = (0, Instant::now());
    while attempts < 5_000 || (held.len() < 2_100 && started.elapsed() < Duration::from_secs(60)) {
        let mut wave = tokio::task::JoinSet::new();
        for _ in 0..1_000 {
            wave.spawn(async move {
                let connect = tokio::net::TcpStream::connect(addr);
                let mut s = tokio::time::timeout(Duration::from_secs(3), connect)
                    .await
                    .ok()?
                    .ok()?;
                let half = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";
                tokio::io::AsyncWriteExt::write_all(&mut s, half)
                    .await
                    .ok()?;
                Some(s)
            });
        }
        attempts += 1_000;
        while let Some(r) = wave.join_next().await {
            if let Ok(Some(s)) = r {
                held.push(s);
            }
        }
    }
    assert!(
        held.len() >= 2_100,
        "only {} of {attempts} slow clients connected",
        held.len()
    );
    // While they hold their sockets: the probe answers, a hunt runs to the end.
    let probe = tokio::task::spawn_blocking({
        let addr = b.addr.clone();
        move || http(&addr, "GET", "/healthz", "", None)
    });
    let (status, body) = tokio::time::timeout(Duration::from_secs(90), probe)
        .await
        .expect("/healthz answered in time")
        .expect("probe");
    assert_eq!(status, 200, "{body}");
    let job = hunt_the_needles(&b, &bob, serde_json::json!({}));
    found_every_needle(&b, &store, &bob, job, Duration::from_secs(120)).await;
    drop(held);
}
