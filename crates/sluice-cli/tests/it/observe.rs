//! What ships in deploy/ for Prometheus and Grafana, checked against the real thing: promtool
//! on the rules, their unit tests and the config; and a real Prometheus scraping a worker
//! during a hunt at the provider simulator, answering every dashboard panel's query.

use super::guard::{Lab, LabSize, stop, wait_done};
use super::{Proc, free_port, printed, run_ok};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = run_ok(
        Command::new("promtool").args(args).current_dir(dir),
        "promtool (Debian package prometheus) is needed: .ci/run installs it",
    );
    printed(&out)
}

#[test]
fn alert_rules_config_and_their_unit_tests_pass_promtool() {
    let dir = deploy().join("prometheus");
    let rules = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(rules.contains("SUCCESS: 9 rules found"), "{rules}");
    promtool(&["test", "rules", "alerts_test.yml"], &dir);
    promtool(&["check", "config", "prometheus.yml"], &dir);
    // Every alert has a unit test and a runbook entry that exists.
    let alerts = std::fs::read_to_string(dir.join("alerts.yml")).expect("alerts");
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).expect("tests");
    let runbook = std::fs::read_to_string(deploy().join("../docs/operations.md")).expect("ops");
    for name in alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no unit test"
        );
        let anchor = format!("<a id=\"alert-{}\"></a>", name.to_lowercase());
        assert!(
            runbook.contains(&anchor),
            "{name} has no runbook entry ({anchor})"
        );
    }
}

/// Every (panel title, PromQL) of the dashboard, with Grafana's variables made concrete.
fn dashboard_queries() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(deploy().join("grafana/sluice-dashboard.json")).expect("dashboard");
    let d: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let vars = d["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
        "a datasource variable"
    );
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().expect("title").to_string();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            out.push((title.clone(), expr.replace("$__rate_interval", "15s")));
        }
    }
    out
}

/// GET over HTTP/1.0 (no chunked answer to decode); returns the body.
fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A range query over the test's span: (error, number of series).
fn query_range(prom: &str, expr: &str, start: i64, end: i64) -> (Option<String>, usize) {
    let body = get(
        prom,
        &format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step=1",
            encode(expr)
        ),
    );
    let v: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return (Some(format!("{e}: {body}")), 0),
    };
    if v["status"] != "success" {
        return (Some(v["error"].to_string()), 0);
    }
    // Series with at least one real number (not only NaN).
    let n = v["data"]["result"].as_array().map_or(0, |r| {
        r.iter()
            .filter(|s| {
                s["values"].as_array().is_some_and(|vals| {
                    vals.iter().any(|p| {
                        p[1].as_str()
                            .is_some_and(|x| x.parse::<f64>().is_ok_and(|x| !x.is_nan()))
                    })
                })
            })
            .count()
    });
    (None, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_answers_from_a_real_prometheus() {
    let queries = dashboard_queries();
    let (store, url) = sluice_store::testing::pg_store().await;
    let lab = Lab::new(
        &url,
        LabSize {
            accounts: 2,
            lakes_per_account: 10,
            budget: 60,
            ..LabSize::default()
        },
        &[],
    )
    .await;
    let metrics = format!("127.0.0.1:{}", free_port());
    let started = chrono::Utc::now().timestamp() - 1;
    // `sluice server`: its API listener serves /metrics for the API, the scheduler and the
    // worker slots alike (Prometheus' own scrapes are API requests the API panels see).
    let worker = lab.server("s1", &["--listen", &metrics]);

    // A real Prometheus scraping the server every second.
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .expect("config");
    let prom = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let _prometheus = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus) is needed: .ci/run installs it"),
    );

    // Prometheus up and scraping the worker before the hunt starts, so the hunt is seen.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&get(&prom, "/api/v1/query?query=up")).unwrap_or_default();
        if v["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the worker: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The hunt is submitted under a pause and let go once Prometheus has seen it waiting: the
    // leader reads the backlog every few seconds, and a fast hunt could otherwise finish
    // between two of its passes.
    lab.cli(&["pause", "--all", "--reason", "dashboard test"].map(String::from))
        .await;
    let job = lab.submit("*").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = encode("max(sluice_tasks_backlog_tasks) > 0");
        let v: serde_json::Value =
            serde_json::from_str(&get(&prom, &format!("/api/v1/query?query={q}")))
                .unwrap_or_default();
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(Instant::now() < deadline, "the backlog never showed: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lab.cli(&["resume", "--all"].map(String::from)).await;
    wait_done(&store, &[job], Duration::from_secs(120)).await;

    // The leader observes finished jobs a few seconds behind; Prometheus scrapes every second.
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let end = chrono::Utc::now().timestamp();
        let mut missing = Vec::new();
        for (title, expr) in &queries {
            let (err, n) = query_range(&prom, expr, started, end);
            if let Some(e) = err {
                panic!("panel {title:?}: query {expr:?} failed: {e}");
            }
            if n == 0 {
                missing.push(format!("{title}: {expr}"));
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    stop(vec![worker]).await;
    assert!(
        missing.is_empty(),
        "panels without data:\n{}",
        missing.join("\n")
    );
    assert!(queries.len() >= 19, "{}", queries.len());
}
