//! The provider guard's invariants against the simulator over real HTTP, with two worker
//! processes: the budget holds at the provider, and a frozen account means paused jobs — no
//! failure, no attempt spent — that resume and finish with exactly the planted needles.

use super::{Proc, free_port, journal, run_ok, signal, sluice, wait_exit};
use sluice_core::{JobId, TaskState};
use sluice_sim::{Counts, Sim, SimConfig, SimHandle};
use sluice_store::{PgStore, Store, StoreExt};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Worker flags that make a breaker probe after a second (two at most), frozen or throttled.
const FAST_BREAKER: [&str; 6] = [
    "--breaker-frozen-cooldown",
    "1s",
    "--breaker-cooldown",
    "1s",
    "--breaker-max-cooldown",
    "2s",
];

pub(crate) struct Lab {
    _dir: Option<tempfile::TempDir>,
    url: String,
    results: String,
    sim: SimHandle,
    manifest: serde_json::Value,
}

/// Runs `cmd` (no standard input) off the runtime and returns its standard output; it must
/// succeed.
async fn succeeds(mut cmd: std::process::Command, what: &str) -> String {
    let what = what.to_string();
    let out = tokio::task::spawn_blocking(move || run_ok(&mut cmd, &what))
        .await
        .expect("join");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `sluice lab setup` makes: accounts of lakes in the simulator, each account with a
/// budget of `budget` calls/s (burst as much) under a provider quota of 1000/s, so that the
/// budget is what holds calls back.
pub(crate) struct LabSize {
    pub(crate) accounts: u32,
    pub(crate) lakes_per_account: u32,
    pub(crate) rows: u32,
    pub(crate) budget: u32,
}

impl Default for LabSize {
    /// Three accounts of twelve lakes of 300 rows, 40 calls/s each.
    fn default() -> LabSize {
        LabSize {
            accounts: 3,
            lakes_per_account: 12,
            rows: 300,
            budget: 40,
        }
    }
}

impl Lab {
    /// A lab of `size`, `lab setup` given `args` too.
    pub(crate) async fn new(url: &str, size: LabSize, args: &[&str]) -> Lab {
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let sim_url = format!("http://127.0.0.1:{port}");
        let results = dir.path().join("results").display().to_string();
        let mut cmd = sluice();
        cmd.args([
            "--database-url",
            url,
            "--results-dir",
            &results,
            "lab",
            "setup",
        ])
        .args([
            "--dir",
            &dir.path().display().to_string(),
            "--sim-url",
            &sim_url,
        ])
        .args([
            "--accounts",
            &size.accounts.to_string(),
            "--lakes-per-account",
            &size.lakes_per_account.to_string(),
            "--rows",
            &size.rows.to_string(),
            "--quota-rate",
            "1000",
            "--quota-burst",
            "1000",
            "--budget-rate",
            &size.budget.to_string(),
            "--budget-burst",
            &size.budget.to_string(),
        ])
        .args(args);
        let out = succeeds(cmd, "lab setup").await;
        let manifest: serde_json::Value = serde_json::from_str(&out).expect("manifest");
        let cfg = std::fs::read_to_string(manifest["accounts_file"].as_str().expect("file"))
            .expect("accounts file");
        let sim = Sim::new(
            SimConfig::from_json(&cfg).expect("accounts"),
            std::path::Path::new(manifest["sim_dir"].as_str().expect("dir")),
        )
        .expect("sim");
        let sim = sim
            .start(format!("127.0.0.1:{port}").parse().expect("addr"))
            .await
            .expect("sim listens");
        Lab {
            _dir: Some(dir),
            url: url.to_string(),
            results,
            sim,
            manifest,
        }
    }

    fn accounts(&self) -> Vec<String> {
        self.manifest["accounts"]
            .as_array()
            .expect("accounts")
            .iter()
            .map(|a| a.as_str().expect("account").to_string())
            .collect()
    }

    /// Submits an IOC hunt for every planted needle over the lakes matching `lakes`.
    pub(crate) async fn submit(&self, lakes: &str) -> JobId {
        let mut args: Vec<String> = ["--output", "json", "submit", "--lakes", lakes]
            .map(String::from)
            .to_vec();
        args.extend(crate::ioc_flags(
            self.manifest["needles"].as_array().expect("needles"),
        ));
        let out = self.cli(&args).await;
        let v: serde_json::Value = serde_json::from_str(&out).expect("submit json");
        JobId(v["job"].as_i64().expect("job id"))
    }

    pub(crate) async fn cli(&self, args: &[String]) -> String {
        let mut cmd = sluice();
        cmd.args(["--database-url", &self.url, "--results-dir", &self.results])
            .args(args);
        succeeds(cmd, &format!("sluice {args:?}")).await
    }

    /// Needles planted in lakes whose name matches the prefix.
    fn needles_in(&self, prefix: &str) -> usize {
        self.manifest["needles"]
            .as_array()
            .expect("needles")
            .iter()
            .filter(|n| n["lake"].as_str().is_some_and(|l| l.starts_with(prefix)))
            .count()
    }

    pub(crate) fn worker(&self, id: &str, extra: &[&str]) -> Proc {
        self.process("worker", id, extra)
    }

    /// `sluice server` (API, scheduler and worker slots) with the same settings as `worker`.
    pub(crate) fn server(&self, id: &str, extra: &[&str]) -> Proc {
        self.process("server", id, extra)
    }

    fn process(&self, verb: &str, id: &str, extra: &[&str]) -> Proc {
        // Logs to a file: a pipe nobody reads fills up and blocks the worker.
        let dir = self._dir.as_ref().expect("dir").path();
        let log = std::fs::File::create(dir.join(format!("{id}.log"))).expect("log");
        Proc(
            sluice()
                .args(["--database-url", &self.url, "--results-dir", &self.results])
                .args([
                    verb,
                    "--id",
                    id,
                    "--idle-poll",
                    "50ms",
                    "--concurrency",
                    "8",
                ])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect(verb),
        )
    }

    /// The simulator's per-second counts of one account.
    fn counts(&self, account: &str) -> BTreeMap<i64, Counts> {
        self.sim.counts().remove(account).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.sim.stop();
        // A failed test keeps its lab (worker logs, lakes) for a look.
        if std::thread::panicking()
            && let Some(d) = self._dir.take()
        {
            eprintln!("lab kept at {}", d.keep().display());
        }
    }
}

/// The most calls in any window of k consecutive seconds, against `burst + rate × k`.
fn worst_window(per_second: &BTreeMap<i64, Counts>, rate: f64, burst: f64) -> (f64, i64, u64) {
    let (Some(first), Some(last)) = (per_second.keys().next(), per_second.keys().last()) else {
        return (0.0, 0, 0);
    };
    let secs: Vec<u64> = (*first..=*last)
        .map(|s| per_second.get(&s).map_or(0, |c| c.total))
        .collect();
    let mut worst = (0.0, 0, 0);
    for start in 0..secs.len() {
        let mut sum = 0;
        for (k, n) in secs[start..].iter().enumerate() {
            sum += n;
            let bound = burst + rate * (k as f64 + 1.0);
            let ratio = sum as f64 / bound;
            if ratio > worst.0 {
                worst = (ratio, k as i64 + 1, sum);
            }
        }
    }
    worst
}

pub(crate) async fn wait_done(store: &PgStore, jobs: &[JobId], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut all = true;
        for j in jobs {
            all &= store.job_get(*j).await.expect("job").state.is_terminal();
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not finish within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn stop(mut workers: Vec<Proc>) {
    for w in &workers {
        signal(w, libc::SIGTERM);
    }
    for w in &mut workers {
        let st = wait_exit(w, Duration::from_secs(30));
        assert!(st.success(), "worker exited with {st}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_holds_at_the_provider_with_two_worker_processes() {
    let (store, url) = sluice_store::testing::pg_store().await;
    let size = LabSize {
        lakes_per_account: 30,
        ..LabSize::default()
    };
    // The bound is the lab's own budget (rate and burst alike), whatever the default becomes.
    let (rate, burst) = (f64::from(size.budget), f64::from(size.budget));
    let lab = Lab::new(&url, size, &[]).await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(lab.submit("a*").await);
    }
    let started = Instant::now();
    // No byte cache and no shared scans: the three jobs hunt the same lakes, and either would
    // spare the later jobs most of their calls, so the budget would not be what the workers
    // wait on. (Shared scans under the budget: `make replay-outage`, docs/benchmarks.md.)
    let uncached = ["--byte-cache-mib", "0", "--share-scan", "1"];
    let workers = vec![lab.worker("w1", &uncached), lab.worker("w2", &uncached)];
    wait_done(&store, &jobs, Duration::from_secs(180)).await;
    let took = started.elapsed().as_secs_f64();
    stop(workers).await;
    for j in &jobs {
        let j = store.job_get(*j).await.expect("job");
        assert_eq!(j.state, sluice_core::JobState::Succeeded, "{j:?}");
        assert_eq!(j.rows_found as usize, lab.needles_in("a"), "{j:?}");
    }
    let mut total = 0;
    for account in lab.accounts() {
        let counts = lab.counts(&account);
        let calls: u64 = counts.values().map(|c| c.total).sum();
        total += calls;
        let (ratio, window, n) = worst_window(&counts, rate, burst);
        let (first, last) = (
            counts.keys().min().copied().unwrap_or(0),
            counts.keys().max().copied().unwrap_or(0),
        );
        let timeline: Vec<u64> = (first..=last)
            .map(|s| counts.get(&s).map_or(0, |c| c.total))
            .collect();
        eprintln!("account {account} calls per second: {timeline:?}");
        eprintln!(
            "account {account}: {calls} calls, worst window {window}s: {n} calls = {ratio:.2} of burst + rate x T"
        );
        assert!(
            ratio <= 1.0,
            "account {account}: {n} calls in {window}s is over burst + rate x T"
        );
        assert!(
            counts.values().all(|c| c.throttled == 0 && c.frozen == 0),
            "{counts:?}"
        );
        // The budget was the bottleneck (so this test could fail): some second ran near the rate.
        let busiest = counts.values().map(|c| c.total).max().unwrap_or(0);
        assert!(
            busiest as f64 >= 0.6 * rate,
            "account {account}: busiest second {busiest}"
        );
    }
    let events = journal(&store).await;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        *kinds.entry(e.kind.as_str()).or_default() += 1;
    }
    eprintln!("journal: {kinds:?}");
    for j in &jobs {
        let j = store.job_get(*j).await.expect("job");
        eprintln!(
            "job {} started {:?} finished {:?}",
            j.id, j.started_at, j.finished_at
        );
    }
    let lower_bound = total as f64 / (3.0 * rate);
    eprintln!("{total} calls in {took:.1}s; budget lower bound {lower_bound:.1}s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_account_pauses_its_jobs_loses_nothing_and_resumes() {
    let (store, url) = sluice_store::testing::pg_store().await;
    let lab = Lab::new(&url, LabSize::default(), &["--freeze-for", "600"]).await;
    let job = lab.submit("a*").await;
    let breaker = FAST_BREAKER;
    let workers = vec![lab.worker("w1", &breaker), lab.worker("w2", &breaker)];
    let frozen = lab.accounts()[0].clone();
    let scope = format!("aws:{frozen}");
    // Freeze the first account once a few of its lakes are done: mid-drain.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = store
            .task_list_all(job)
            .await
            .expect("tasks")
            .iter()
            .filter(|t| t.scope == scope && t.state == TaskState::Succeeded)
            .count();
        if done >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress before the freeze");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lab.sim.freeze(&frozen, 600.0));
    // The other accounts drain; the frozen one's tasks wait, its breaker open.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        let tasks = store.task_list_all(job).await.expect("tasks");
        let others_done = tasks
            .iter()
            .filter(|t| t.scope != scope)
            .all(|t| t.state == TaskState::Succeeded);
        let status = lab.cli(&["status".into(), job.to_string()]).await;
        if others_done && status.contains("breaker open") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "other accounts did not drain: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.contains(&format!("provider {scope}")), "{status}");
    let j = store.job_get(job).await.expect("job");
    assert!(!j.state.is_terminal(), "the job must wait, not end: {j:?}");
    assert_eq!(j.counts.failed, 0);
    let breakers = lab.cli(&["breaker".into(), "list".into()]).await;
    assert!(breakers.contains(&scope), "{breakers}");
    // While frozen, the account sees probes only, not the backlog.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let frozen_answers: u64 = lab.counts(&frozen).values().map(|c| c.frozen).sum();
    assert!(
        frozen_answers <= 30,
        "{frozen_answers} calls hit the frozen account"
    );

    assert!(lab.sim.unfreeze(&frozen));
    wait_done(&store, &[job], Duration::from_secs(120)).await;
    stop(workers).await;
    let j = store.job_get(job).await.expect("job");
    assert_eq!(j.state, sluice_core::JobState::Succeeded, "{j:?}");
    assert_eq!(
        j.rows_found as usize,
        lab.needles_in("a"),
        "exactly the planted needles"
    );
    let tasks = store.task_list_all(job).await.expect("tasks");
    assert!(
        tasks.iter().all(|t| t.attempt == 0),
        "no attempt spent: {:?}",
        tasks.iter().filter(|t| t.attempt != 0).collect::<Vec<_>>()
    );
    // The journal tells the story for `explain`: opened, probed, closed.
    let events = journal(&store).await;
    let kinds: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.scope.as_deref() == Some(scope.as_str()))
        .map(|e| e.kind.as_str())
        .collect();
    for k in ["breaker.opened", "breaker.half_open", "breaker.closed"] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }
    // A probe runs to its answer even when its task fails around it (in a half-open scope the
    // probe's sibling reads are refused): no probe is lost and handed on, again and again.
    assert!(!kinds.contains("breaker.probe_lost"), "{kinds:?}");
    assert!(
        !events
            .iter()
            .any(|e| e.kind == "task.failed" || e.kind == "task.retried")
    );
    // `sluice explain` shows the job's own timeline and its scopes' provider events.
    let explain = lab.cli(&["explain".into(), job.to_string()]).await;
    for want in [
        "provider events of the job's scopes",
        "breaker.opened",
        "breaker.closed",
        "task.deferred",
    ] {
        assert!(explain.contains(want), "{want} missing from:\n{explain}");
    }
}

/// Budget-aware release: an account whose budget is exhausted does not fill the worker's
/// slots with tasks that can only wait for tokens while another account's hunt queues behind
/// them. Its tasks are released last, and found again once its budget allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_budget_does_not_hold_other_accounts_back() {
    let (store, url) = sluice_store::testing::pg_store().await;
    let lab = Lab::new(
        &url,
        LabSize {
            accounts: 2,
            rows: 200,
            budget: 1000,
            ..LabSize::default()
        },
        &[],
    )
    .await;
    let slow = lab.accounts()[0].clone();
    // One call every 5 s: a lake of the slow account needs several calls, so none of its
    // tasks can finish within 10 s.
    lab.cli(&[
        "budget".into(),
        "set".into(),
        format!("aws:{slow}"),
        "--rate".into(),
        "0.2".into(),
        "--burst".into(),
        "1".into(),
    ])
    .await;
    // The slow account's hunt comes first in release order, the other's right behind it.
    let a = lab.submit("a0*").await;
    let b = lab.submit("a1*").await;
    // Calls wait for tokens far longer than the test: without budget-aware release the
    // worker's 8 slots fill with the slow account's tasks and the second hunt never ends.
    let worker = lab.worker("w1", &["--budget-max-wait", "120s"]);
    wait_done(&store, &[b], Duration::from_secs(60)).await;
    let tasks_a = store.task_list_all(a).await.expect("tasks");
    let done_a = tasks_a
        .iter()
        .filter(|t| t.state == TaskState::Succeeded)
        .count();
    let jb = store.job_get(b).await.expect("job");
    assert_eq!(jb.state, sluice_core::JobState::Succeeded, "{jb:?}");
    assert_eq!(jb.rows_found as usize, lab.needles_in("a1"));
    assert_eq!(
        done_a, 0,
        "the other account's hunt finished behind the exhausted one's tasks"
    );
    // `status` says why the slow account's hunt waits (the mark is renewed by every empty
    // take; a full grant clears it for a moment, hence the retries).
    let want = format!("provider budget of aws:{slow} exhausted");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = lab.cli(&["status".into(), a.to_string()]).await;
        if status.contains(&want) {
            break;
        }
        assert!(Instant::now() < deadline, "{want} missing from:\n{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let budgets = lab.cli(&["budget".into(), "list".into()]).await;
    assert!(budgets.contains("DRY UNTIL"), "{budgets}");
    // The slow account's budget is raised: its tasks are found again and finish.
    lab.cli(&[
        "budget".into(),
        "set".into(),
        format!("aws:{slow}"),
        "--rate".into(),
        "1000".into(),
        "--burst".into(),
        "1000".into(),
    ])
    .await;
    wait_done(&store, &[a], Duration::from_secs(60)).await;
    stop(vec![worker]).await;
    let ja = store.job_get(a).await.expect("job");
    assert_eq!(ja.state, sluice_core::JobState::Succeeded, "{ja:?}");
    assert_eq!(ja.rows_found as usize, lab.needles_in("a0"));
    let tasks_a = store.task_list_all(a).await.expect("tasks");
    assert!(tasks_a.iter().all(|t| t.attempt == 0), "{tasks_a:?}");
}

/// A counter of a process's `/metrics` (0 when absent).
fn metric(addr: &str, name: &str) -> u64 {
    let body = super::http_get(addr, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lakes_in_other_accounts_are_hunted_through_one_assumed_role_per_account() {
    let (store, url) = sluice_store::testing::pg_store().await;
    let size = LabSize {
        lakes_per_account: 6,
        ..LabSize::default()
    };
    let lab = Lab::new(&url, size, &["--roles"]).await;
    let iam = lab.manifest["iam_account"]
        .as_str()
        .expect("iam account")
        .to_string();
    // STS (the IAM account's calls) throttles first: the tasks wait, no attempt spent.
    assert!(lab.sim.throttle(&iam, 2.0));
    let job = lab.submit("a*").await;
    let addrs: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let breaker = FAST_BREAKER;
    let workers: Vec<Proc> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut extra = vec!["--metrics-listen", a.as_str()];
            extra.extend(breaker);
            lab.worker(&format!("w{i}"), &extra)
        })
        .collect();
    wait_done(&store, &[job], Duration::from_secs(120)).await;
    let j = store.job_get(job).await.expect("job");
    assert_eq!(j.state, sluice_core::JobState::Succeeded, "{j:?}");
    assert_eq!(j.rows_found as usize, lab.needles_in("a"), "{j:?}");
    let tasks = store.task_list_all(job).await.expect("tasks");
    assert!(tasks.iter().all(|t| t.attempt == 0), "{tasks:?}");
    // One role assumed per account per credential lifetime in each worker, at most.
    let accounts = lab.accounts().len() as u64;
    let assumed: Vec<u64> = addrs
        .iter()
        .map(|a| metric(a, "sluice_provider_assume_role_total"))
        .collect();
    assert!(
        assumed.iter().all(|n| *n <= accounts) && assumed.iter().sum::<u64>() >= accounts,
        "roles assumed per worker: {assumed:?} for {accounts} accounts"
    );
    // The simulator saw them as the IAM account's calls; the lakes' accounts were never
    // asked for credentials (their lakes are reached through the role only).
    let sts: u64 = lab.counts(&iam).values().map(|c| c.assume_role).sum();
    assert!(
        sts >= assumed.iter().sum::<u64>(),
        "{sts} AssumeRole calls at the provider, {assumed:?} answered"
    );
    for account in lab.accounts() {
        let credential: u64 = lab.counts(&account).values().map(|c| c.credential).sum();
        assert_eq!(credential, 0, "account {account}");
    }
    // A role whose external id is wrong is refused: the hunt fails, not retried.
    let mut lake = store.lake_list().await.expect("lakes").remove(0);
    lake.options
        .insert("external_id".into(), "not-the-agreed-id".into());
    store
        .lake_insert(sluice_store::LakeInsertParams {
            name: "wrong-role".into(),
            url: lake.url.clone(),
            scope: "aws:wrong-role".into(),
            partition_cols: lake.partition_cols.clone(),
            schema: lake.schema.clone(),
            tags: Default::default(),
            options: lake.options.clone(),
            now: chrono::Utc::now(),
        })
        .await
        .expect("lake");
    let denied = lab.submit("wrong-role").await;
    wait_done(&store, &[denied], Duration::from_secs(60)).await;
    stop(workers).await;
    let j = store.job_get(denied).await.expect("job");
    assert_eq!(j.state, sluice_core::JobState::Failed, "{j:?}");
    let t = &store.task_list_all(denied).await.expect("tasks")[0];
    let error = t.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("AccessDenied") && t.attempt == 1,
        "{error} after {} attempts",
        t.attempt
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_sts_opens_its_own_breaker_and_the_hunts_wait_then_finish() {
    let (store, url) = sluice_store::testing::pg_store().await;
    let size = LabSize {
        accounts: 2,
        lakes_per_account: 4,
        ..LabSize::default()
    };
    let lab = Lab::new(&url, size, &["--roles", "--freeze-for", "600"]).await;
    let iam = lab.manifest["iam_account"]
        .as_str()
        .expect("iam account")
        .to_string();
    // The incident, exactly: the identity service refuses the account.
    assert!(lab.sim.freeze(&iam, 600.0));
    let job = lab.submit("a*").await;
    let breaker = FAST_BREAKER;
    let workers = vec![lab.worker("w1", &breaker)];
    let sts = sluice_engine::s3::DEFAULT_STS_SCOPE;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let breakers = lab.cli(&["breaker".into(), "list".into()]).await;
        if breakers.contains(sts) {
            break;
        }
        assert!(Instant::now() < deadline, "no breaker opened: {breakers}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let j = store.job_get(job).await.expect("job");
    assert!(!j.state.is_terminal() && j.counts.failed == 0, "{j:?}");
    assert!(lab.sim.unfreeze(&iam));
    wait_done(&store, &[job], Duration::from_secs(90)).await;
    stop(workers).await;
    let j = store.job_get(job).await.expect("job");
    assert_eq!(j.state, sluice_core::JobState::Succeeded, "{j:?}");
    assert_eq!(j.rows_found as usize, lab.needles_in("a"), "{j:?}");
    let tasks = store.task_list_all(job).await.expect("tasks");
    assert!(tasks.iter().all(|t| t.attempt == 0), "{tasks:?}");
    let kinds: BTreeSet<String> = journal(&store)
        .await
        .into_iter()
        .filter(|e| e.scope.as_deref() == Some(sts))
        .map(|e| e.kind)
        .collect();
    for k in ["breaker.opened", "breaker.closed"] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }
}
