//! What ships in deploy/ for running Sluice on many machines, checked as far as this machine
//! can: the compose file and the Kubernetes manifests against their schemas, every setting
//! they name is one the binary knows, the Prometheus configs pass promtool, and the probes they
//! point at are answered by real worker and scheduler processes. Also: JSON logs carry each
//! task's ids on every line of its run.

use super::{Proc, free_port, http_get, printed, run_ok, signal, sluice, submit, wait_exit};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn ok(cmd: &mut Command) -> String {
    printed(&run_ok(cmd, "command runs"))
}

/// `SLUICE_*` names in a text.
fn sluice_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("SLUICE_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
            .collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
    out
}

#[test]
fn deploy_manifests_pass_their_schemas_and_name_real_settings() {
    let dir = deploy();
    // Compose spec and Kubernetes API schemas (strict), probes on the listened port.
    ok(Command::new("python3").arg(dir.join("check-manifests.py")));
    // The compose Prometheus config loads, with the alert rules next to it as mounted.
    // (Debian's promtool is built without Kubernetes discovery: the ServiceMonitor is checked
    // by the script above instead.)
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::copy(
        dir.join("compose/prometheus.yml"),
        tmp.path().join("prometheus.yml"),
    )
    .expect("copy");
    std::fs::copy(
        dir.join("prometheus/alerts.yml"),
        tmp.path().join("alerts.yml"),
    )
    .expect("copy");
    ok(Command::new("promtool")
        .args(["check", "config", "prometheus.yml"])
        .current_dir(tmp.path()));
    // Every setting the deploy files give is one the binary reads.
    let mut known = BTreeSet::new();
    for cmd in [
        &["--help"][..],
        &["worker", "--help"],
        &["scheduler", "--help"],
        &["server", "--help"],
    ] {
        known.extend(sluice_vars(&ok(sluice().args(cmd))));
    }
    assert!(known.contains("SLUICE_METRICS_LISTEN"), "{known:?}");
    let files = [
        "compose/compose.yaml",
        "kubernetes/config.yaml",
        "kubernetes/secret.example.yaml",
        "kubernetes/scheduler.yaml",
        "kubernetes/worker.yaml",
        "kubernetes/server.yaml",
        "kubernetes/migrate-job.yaml",
        "systemd/worker.env.example",
        "systemd/sluice-worker.service",
        "systemd/sluice-scheduler.service",
        "systemd/sluice-server.service",
    ];
    for f in files {
        let text = std::fs::read_to_string(dir.join(f)).expect(f);
        for var in sluice_vars(&text) {
            // The compose file's own variable: which image to run.
            if var == "SLUICE_IMAGE" {
                continue;
            }
            assert!(known.contains(&var), "{f}: {var} is not a sluice setting");
        }
    }
}

fn get_status(addr: &str, path: &str) -> (u16, String) {
    let resp = http_get(addr, path);
    let status = resp
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"));
    let body = resp
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

fn until_status(addr: &str, path: &str, want: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            let (status, body) = get_status(addr, path);
            if status == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{addr}{path}: {status} {body}, wanted {want}"
            );
        }
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The probes the manifests use, answered by real processes: ready while the schema is
/// current, not ready (503, with the reason) when the database is behind the build, ready
/// again after `sluice migrate`; `/metrics` of the scheduler shows its leadership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_schedulers_answer_the_probes_the_manifests_use() {
    use sqlx::Connection;
    let (_store, url) = sluice_store::testing::pg_store().await;
    let (w_addr, s_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let spawn =
        |args: &[&str]| Proc::quiet(sluice().args(["--database-url", &url]).args(args), "spawn");
    let mut worker = spawn(&[
        "worker",
        "--scheduler",
        "false",
        "--metrics-listen",
        &w_addr,
    ]);
    let mut scheduler = spawn(&[
        "scheduler",
        "--leader-ttl",
        "1s",
        "--metrics-listen",
        &s_addr,
    ]);
    let (w, s) = (w_addr.clone(), s_addr.clone());
    tokio::task::spawn_blocking(move || {
        for addr in [&w, &s] {
            assert_eq!(until_status(addr, "/healthz", 200), "ok\n");
            assert_eq!(until_status(addr, "/readyz", 200), "ready\n");
        }
        // The scheduler's own series, once it has been elected.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = get_status(&s, "/metrics");
            if body.lines().any(|l| l == "sluice_scheduler_leader 1") {
                break;
            }
            assert!(Instant::now() < deadline, "never leader:\n{body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("probes");
    // As if a new build's processes had started before `sluice migrate`: the database lacks
    // their newest migration (its record is hidden, then put back).
    let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
    let flip = "UPDATE _sqlx_migrations SET version = -version \
                WHERE abs(version) = (SELECT max(abs(version)) FROM _sqlx_migrations)";
    sqlx::query(flip).execute(&mut c).await.expect("hide");
    let (w, s) = (w_addr.clone(), s_addr.clone());
    tokio::task::spawn_blocking(move || {
        for addr in [&w, &s] {
            let why = until_status(addr, "/readyz", 503);
            assert!(why.contains("run `sluice migrate`"), "{why}");
            // Alive all the same: liveness must not restart it for this.
            assert_eq!(get_status(addr, "/healthz").0, 200);
        }
    })
    .await
    .expect("not ready while behind");
    sqlx::query(flip).execute(&mut c).await.expect("put back");
    let (w, s) = (w_addr.clone(), s_addr.clone());
    tokio::task::spawn_blocking(move || {
        for addr in [&w, &s] {
            until_status(addr, "/readyz", 200);
        }
    })
    .await
    .expect("ready again");
    signal(&worker, libc::SIGTERM);
    signal(&scheduler, libc::SIGTERM);
    assert!(wait_exit(&mut worker, Duration::from_secs(30)).success());
    assert!(wait_exit(&mut scheduler, Duration::from_secs(30)).success());
}

/// `--log-format json`: one JSON object per line, and every line logged while a task runs
/// carries the task's job, task, lake and scope ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_task_ids_on_every_line() {
    let (store, url) = sluice_store::testing::pg_store().await;
    let job = submit(&store, 4, serde_json::json!({"kind": "noop"})).await;
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("worker.log");
    let mut worker = Proc(
        sluice()
            .env("RUST_LOG", "info,sqlx=warn,sluice_worker=debug")
            .args(["--database-url", &url, "--log-format", "json"])
            .args(["worker", "--idle-poll", "50ms", "--scheduler", "false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("worker"),
    );
    crate::until_job_ends(&store, job.id, Duration::from_secs(30)).await;
    signal(&worker, libc::SIGTERM);
    assert!(wait_exit(&mut worker, Duration::from_secs(30)).success());
    let text = std::fs::read_to_string(&log).expect("log");
    let mut finished = BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        let Some(span) = v.get("span").filter(|s| s["name"] == "task") else {
            continue;
        };
        for key in ["job", "task", "lake", "scope"] {
            assert!(span[key].is_string(), "{key} missing: {line}");
        }
        assert_eq!(span["job"], job.id.to_string(), "{line}");
        assert_eq!(span["scope"], "aws:1", "{line}");
        if v["message"] == "task finished" {
            finished.insert(span["task"].as_str().expect("task").to_string());
        }
    }
    let tasks: BTreeSet<String> = super::tasks(&store, job.id)
        .await
        .iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(
        finished, tasks,
        "one 'task finished' line per task:\n{text}"
    );
}
