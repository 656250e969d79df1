//! `sluice server` end to end: a token made with `sluice tokens`, a hunt submitted over HTTP,
//! validated by the real planner (SQL errors with line, column and hint), run by the server's
//! own worker slots, polled until the planted needles are found; a revoked token is refused.

use super::{Proc, free_port, run_with_input, signal, sluice, sluice_ok, wait_exit};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Waits (up to 30 s) until a `sluice server` at `addr` answers `/readyz` with 200.
pub(crate) fn wait_ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err()
        || http(addr, "GET", "/readyz", "", None).0 != 200
    {
        assert!(Instant::now() < deadline, "server never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request; returns (status, body).
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A token made with `sluice tokens create` (printed once): what it prints as JSON.
pub(crate) fn create_token(
    db: &str,
    results: &std::path::Path,
    owner: &str,
    role: &str,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec![
        "--output", "json", "tokens", "create", "--owner", owner, "--role", role,
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&super::sluice_ok(db, results, &args)).expect("token json")
}

/// Runs `test` off the runtime (it drives the server and the CLI with blocking calls) on a
/// fresh database, results and lakes folders and a free port: `test(db, results, lakes, addr)`.
async fn on_site(test: impl FnOnce(String, PathBuf, PathBuf, String) + Send + 'static) {
    let (_store, db) = sluice_store::testing::pg_store().await;
    let dir = tempfile::tempdir().expect("tmp");
    let (results, lakes) = (dir.path().join("results"), dir.path().join("lakes"));
    let addr = format!("127.0.0.1:{}", free_port());
    tokio::task::spawn_blocking(move || test(db, results, lakes, addr))
        .await
        .expect("test thread");
}

/// A token made with `sluice tokens create`, for `owner` with `role`.
pub(crate) fn token_of(db: &str, results: &std::path::Path, owner: &str, role: &str) -> String {
    create_token(db, results, owner, role, &[])["token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// Starts `sluice server` on `db` (results in `results`) at `addr` with `extra` flags and
/// `env`, and waits until it is ready.
pub(crate) fn start_server(
    db: &str,
    results: &std::path::Path,
    addr: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let mut cmd = sluice();
    cmd.args(["--database-url", db, "--results-dir"])
        .arg(results)
        .args(["server", "--listen", addr, "--idle-poll", "50ms"])
        .args(extra)
        .envs(env.iter().copied());
    let server = Proc::quiet(&mut cmd, "server");
    wait_ready(addr);
    server
}

/// Stops a server with SIGTERM; it must exit cleanly.
pub(crate) fn stop_server(mut server: Proc) {
    signal(&server, libc::SIGTERM);
    assert!(wait_exit(&mut server, Duration::from_secs(30)).success());
}

/// `sluice --url` (the server at `addr`) with `token`, `args` and `stdin`: its exit code,
/// standard output and standard error.
fn cli_at(
    addr: &str,
    token: Option<&str>,
    args: &[&str],
    stdin: &str,
) -> (Option<i32>, String, String) {
    let mut c = sluice();
    c.args(["--url", &format!("http://{addr}")])
        .env_remove("SLUICE_DATABASE_URL");
    if let Some(t) = token {
        c.args(["--token", t]);
    }
    let out = run_with_input(c.args(args), stdin, "sluice");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Submits `body` over HTTP (it must be accepted); the job's id.
pub(crate) fn submit_http(addr: &str, token: &str, body: &str) -> i64 {
    let (status, text) = http(addr, "POST", "/v1/jobs", token, Some(body));
    assert_eq!(status, 202, "{text}");
    serde_json::from_str::<serde_json::Value>(&text).expect("json")["job"]
        .as_i64()
        .expect("id")
}

/// Polls a job until it has succeeded (a failed job, or two minutes, fails the test).
pub(crate) fn until_succeeded(addr: &str, token: &str, id: i64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, text) = http(addr, "GET", &format!("/v1/jobs/{id}"), token, None);
        let j: serde_json::Value = serde_json::from_str(&text).expect("job");
        if j["state"] == "succeeded" {
            return j;
        }
        assert!(Instant::now() < deadline && j["state"] != "failed", "{j}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_researcher_submits_over_http_and_polls_until_the_needles_are_found() {
    on_site(|db, results, lakes, addr| {
        let manifest: serde_json::Value = crate::generate_lakes(&db, &results, &lakes, 20, 400, 11);
        let needles = manifest["needles"].as_array().expect("needles").clone();
        // A token made with the CLI, printed once.
        let make = |owner: &str, role: &str| token_of(&db, &results, owner, role);
        let token = make("alice", "researcher");
        let server = start_server(&db, &results, &addr, &["--concurrency", "4"], &[]);

        // A typo in the SQL: refused with its position and a hint, nothing submitted.
        let (status, body) = http(
            &addr,
            "POST",
            "/v1/jobs",
            &token,
            Some(r#"{"hunt": {"kind": "sql", "sql": "SELECT src_ipp FROM events"}}"#),
        );
        assert_eq!(status, 400, "{body}");
        let p: serde_json::Value = serde_json::from_str(&body).expect("problem");
        let e = &p["errors"][0];
        assert_eq!(
            (e["line"].as_u64(), e["column"].as_u64()),
            (Some(1), Some(8)),
            "{p}"
        );
        assert!(e["hint"].as_str().unwrap_or("").contains("src_ip"), "{p}");
        // A hunt field that does not exist is an error too, not a hunt for nothing.
        let (status, body) = http(
            &addr,
            "POST",
            "/v1/jobs",
            &token,
            Some(r#"{"hunt": {"kind": "ioc", "ipz": ["10.0.0.1"]}}"#),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("unknown field `ipz`"), "{body}");

        // The IOC hunt for every planted needle.
        let hunt = crate::ioc_hunt(&needles);
        let body = serde_json::json!({"hunt": hunt}).to_string();
        let (status, text) = http(&addr, "POST", "/v1/jobs", &token, Some(&body));
        assert_eq!(status, 202, "{text}");
        let submitted: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(submitted["tasks"], 20);
        let url = submitted["status_url"].as_str().expect("url").to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        let job = loop {
            let (status, text) = http(&addr, "GET", &url, &token, None);
            assert_eq!(status, 200, "{text}");
            let j: serde_json::Value = serde_json::from_str(&text).expect("job");
            if j["state"] != "queued" && j["state"] != "running" {
                break j;
            }
            assert!(Instant::now() < deadline, "job not finished: {j}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["lakes"]["done"], 20);
        assert_eq!(
            job["rows_found"].as_u64(),
            Some(needles.len() as u64),
            "{job}"
        );

        // The results over HTTP, in pages: exactly the needles.
        let mut found = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = format!("{url}/results?limit=2{cursor}");
            let (status, text) = http(&addr, "GET", &page, &token, None);
            assert_eq!(status, 200, "{text}");
            let rows: Vec<serde_json::Value> = serde_json::from_str(&text).expect("rows");
            found.extend(rows.iter().map(|r| r.to_string()));
            if rows.len() < 2 {
                break;
            }
            cursor = format!("&cursor={}", found.len());
        }
        assert_eq!(found.len(), needles.len(), "{found:?}");
        for n in &needles {
            let v = n["value"].as_str().expect("value");
            assert!(found.iter().any(|r| r.contains(v)), "{v} not in {found:?}");
        }
        let (status, csv) = http(
            &addr,
            "GET",
            &format!("{url}/results?format=csv"),
            &token,
            None,
        );
        assert_eq!(status, 200);
        assert_eq!(csv.lines().count(), needles.len() + 1, "{csv}");

        // The same through `sluice --url --token`, the researcher's client of the API.
        let id = submitted["job"].as_i64().expect("job id").to_string();
        let cli =
            |token: Option<&str>, args: &[&str], stdin: &str| cli_at(&addr, token, args, stdin);
        let alice = Some(token.as_str());
        let (code, out, err) = cli(alice, &["--output", "json", "status", &id], "");
        assert_eq!(code, Some(0), "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("status json");
        assert_eq!(
            (&v["state"], &v["lakes"]["done"]),
            (&"succeeded".into(), &20.into())
        );
        let (code, out, err) = cli(
            alice,
            &["results", &id, "--format", "json", "--limit", "1000"],
            "",
        );
        assert_eq!(code, Some(0), "{err}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("rows");
        assert_eq!(rows.len(), needles.len(), "{out}");
        let (code, out, _) = cli(alice, &["results", &id, "--limit", "2"], "");
        assert_eq!(code, Some(0));
        assert!(
            out.contains("2 rows from row 0 of the results") && out.contains("more: --offset 2"),
            "{out}"
        );
        let (code, out, _) = cli(alice, &["jobs"], "");
        assert_eq!(code, Some(0));
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{id} "))),
            "{out}"
        );
        let (code, _, err) = cli(alice, &["cancel", &id], "");
        assert_eq!(code, Some(1));
        assert!(err.contains("already ended"), "{err}");
        let (code, _, err) = cli(alice, &["retry", &id], "");
        assert_eq!(code, Some(1));
        assert!(err.contains("no failed or cancelled lakes"), "{err}");
        // The SQL typo from the terminal: its position and hint, one problem a line.
        let (code, _, err) = cli(
            alice,
            &["submit", "--sql", "-"],
            "SELECT src_ipp FROM events",
        );
        assert_eq!(code, Some(1));
        assert!(
            err.contains("line 1, column 8") && err.contains("src_ip"),
            "{err}"
        );
        assert!(err.contains("the hunt is invalid (1 problem)"), "{err}");
        let ip = needles
            .iter()
            .find(|n| n["kind"] == "ip")
            .and_then(|n| n["value"].as_str())
            .expect("an ip needle")
            .to_string();
        let (code, out, err) = cli(alice, &["validate", "--ioc-ip", &ip], "");
        assert_eq!(code, Some(0), "{err}");
        assert!(
            out.contains("valid: 20 lakes") && out.contains("soonest finish"),
            "{out}"
        );
        let submit = [
            "--output",
            "json",
            "submit",
            "--ioc-ip",
            &ip,
            "--idempotency-key",
            "k1",
        ];
        let (code, out, err) = cli(alice, &submit, "");
        assert_eq!(code, Some(0), "{err}");
        let first: serde_json::Value = serde_json::from_str(&out).expect("submitted");
        assert_eq!(first["created"], true, "{out}");
        let (_, out, _) = cli(alice, &submit, "");
        let again: serde_json::Value = serde_json::from_str(&out).expect("submitted");
        assert_eq!(
            (&again["created"], &again["job"]),
            (&false.into(), &first["job"])
        );
        let second = first["job"].to_string();
        let (code, out, err) = cli(
            alice,
            &["status", &second, "--watch", "--interval", "100ms"],
            "",
        );
        assert_eq!(code, Some(0), "{out}{err}");
        assert!(out.contains("succeeded: 20/20 lakes done"), "{out}");
        // Another researcher cannot tell alice's job from a missing one.
        let bob = make("bob", "researcher");
        let (code, _, err) = cli(Some(&bob), &["status", &id], "");
        assert_eq!(code, Some(1));
        assert!(err.contains(&format!("not found: job {id}")), "{err}");
        // Misuse: one clear line each.
        for (token, args, want) in [
            (None, &["status", "1"][..], "give a token with --token"),
            (
                alice,
                &["submit", "--owner", "bob", "--ioc-ip", "10.0.0.1"][..],
                "jobs belong to the token's owner",
            ),
            (
                Some("nonsense"),
                &["status", "1"][..],
                "malformed bearer token",
            ),
        ] {
            let (code, _, err) = cli(token, args, "");
            assert_eq!(code, Some(1), "{args:?}: {err}");
            assert!(err.contains(want), "{args:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }

        // The operator verbs through the API: an operator reads, only an admin changes.
        let (ops, root) = (make("olga", "operator"), make("root", "admin"));
        let (code, out, err) = cli(Some(ops.as_str()), &["--output", "json", "backlog"], "");
        assert_eq!(code, Some(0), "{err}");
        let b: serde_json::Value = serde_json::from_str(&out).expect("backlog json");
        assert_eq!(
            (&b["pending"], &b["running"]),
            (&0.into(), &0.into()),
            "{b}"
        );
        let (code, _, err) = cli(Some(ops.as_str()), &["pause", "--all", "--reason", "x"], "");
        assert_eq!(code, Some(1));
        assert!(err.contains("the token's role may not do this"), "{err}");
        let (code, out, err) = cli(
            Some(root.as_str()),
            &[
                "pause",
                "--scope",
                "aws:1",
                "--reason",
                "provider maintenance",
            ],
            "",
        );
        assert_eq!(code, Some(0), "{err}");
        assert!(
            out.contains("paused scope:aws:1") && out.contains("(by root)"),
            "{out}"
        );
        let (_, out, _) = cli(Some(ops.as_str()), &["pauses"], "");
        assert!(
            out.contains("scope:aws:1") && out.contains("1 pauses in force"),
            "{out}"
        );
        let (code, out, _) = cli(Some(root.as_str()), &["resume", "--scope", "aws:1"], "");
        assert_eq!(code, Some(0));
        assert!(out.contains("resumed scope:aws:1"), "{out}");
        let (code, out, err) = cli(
            Some(root.as_str()),
            &["budget", "set", "*", "--rate", "50", "--burst", "100"],
            "",
        );
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("budget *: 50 calls/s, burst 100"), "{out}");
        let (_, out, _) = cli(
            Some(ops.as_str()),
            &["--output", "json", "budget", "list"],
            "",
        );
        let list: serde_json::Value = serde_json::from_str(&out).expect("budgets");
        assert_eq!(list[0]["scope"], "*", "{list}");
        let (code, _, err) = cli(Some(root.as_str()), &["breaker", "reset", "aws:1"], "");
        assert_eq!(code, Some(1));
        assert!(err.contains("has no breaker"), "{err}");
        let (code, out, _) = cli(
            Some(root.as_str()),
            &["drain", "--reason", "upgrade", "--wait"],
            "",
        );
        assert_eq!(code, Some(0));
        assert!(out.contains("drained: nothing pending or running"), "{out}");
        let (code, _, err) = cli(alice, &["submit", "--ioc-ip", &ip], "");
        assert_eq!(code, Some(1));
        assert!(
            err.contains("upgrade") && err.contains("try again in 60s"),
            "{err}"
        );
        let (code, _, _) = cli(Some(root.as_str()), &["drain", "--end"], "");
        assert_eq!(code, Some(0));
        let (code, _, err) = cli(Some(root.as_str()), &["drain", "--end"], "");
        assert_eq!(code, Some(1));
        assert!(err.contains("no drain to end"), "{err}");
        // The verbs that only work on the database say so instead of opening the default one.
        for verb in [&["explain", "1"][..], &["tokens", "list"], &["migrate"]] {
            let (code, _, err) = cli(Some(root.as_str()), verb, "");
            assert_eq!(code, Some(1), "{verb:?}");
            assert!(err.contains("works on the database"), "{verb:?}: {err}");
        }

        // Revoked: refused from the next request on.
        sluice_ok(&db, &results, &["tokens", "revoke", "1"]);
        assert_eq!(http(&addr, "GET", &url, &token, None).0, 401);
        let (code, _, err) = cli(alice, &["status", &id], "");
        assert_eq!(code, Some(1));
        assert!(err.contains("unknown or revoked token"), "{err}");
        let listed = sluice_ok(&db, &results, &["tokens", "list"]);
        assert!(
            listed.contains("alice") && !listed.contains(&token),
            "{listed}"
        );

        stop_server(server);
    })
    .await;
}

/// Quotas between researchers, end to end through `sluice server` and the CLI: a token limited
/// to lakes by tag (`tokens create --lakes`) lists, validates, hunts and reads results of only
/// those lakes; a researcher's priority stops at the ceiling, an operator re-prioritises; an
/// admin sets an owner's quota of running tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limited_to_tagged_lakes_sees_and_reads_only_those() {
    on_site(|db, results, lakes, addr| {
        let ok = |args: &[&str]| super::sluice_ok(&db, &results, args);
        let dir_s = lakes.display().to_string();
        let manifest: serde_json::Value = serde_json::from_str(&ok(&[
            "--output", "json", "lakes", "generate", "--dir", &dir_s, "--count", "6", "--rows",
            "300", "--seed", "5",
        ]))
        .expect("manifest");
        // Lakes 0, 2, 4 are the red team's; 1, 3, 5 the blue team's.
        let mut red = Vec::new();
        for (i, l) in manifest["lakes"]
            .as_array()
            .expect("lakes")
            .iter()
            .enumerate()
        {
            let name = l["name"].as_str().expect("name");
            let path = std::fs::canonicalize(l["path"].as_str().expect("path")).expect("path");
            let team = if i % 2 == 0 { "red" } else { "blue" };
            if team == "red" {
                red.push(name.to_string());
            }
            ok(&[
                "lakes",
                "add",
                name,
                &format!("file://{}/", path.display()),
                "--scope",
                "aws:1",
                "--tag",
                &format!("team={team}"),
            ]);
        }
        let needles = manifest["needles"].as_array().expect("needles").clone();
        let token = |owner: &str, role: &str, extra: &[&str]| {
            create_token(&db, &results, owner, role, extra)
        };
        let limited = token("carol", "researcher", &["--lakes", "team=red"]);
        assert_eq!(limited["lakes"], serde_json::json!([{"team": "red"}]));
        let limited = limited["token"].as_str().expect("token").to_string();
        let full = token("carol", "researcher", &[]);
        let full = full["token"].as_str().expect("token").to_string();
        let ops = token("ops", "operator", &[]);
        let ops = ops["token"].as_str().expect("token").to_string();
        let root = token("root", "admin", &[]);
        let root = root["token"].as_str().expect("token").to_string();
        // Malformed groups are refused before anything is written.
        let bad = sluice()
            .args(["--database-url", &db, "tokens", "create", "--owner", "x"])
            .args(["--role", "researcher", "--lakes", "team"])
            .output()
            .expect("sluice");
        assert_eq!(bad.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("not key=value"),
            "{}",
            String::from_utf8_lossy(&bad.stderr)
        );

        let extra = ["--concurrency", "4", "--researcher-max-priority", "5"];
        let server = start_server(&db, &results, &addr, &extra, &[]);
        let cli = |token: &str, args: &[&str]| cli_at(&addr, Some(token), args, "");

        // Listing: the red lakes only.
        let (code, out, err) = cli(&limited, &["--output", "json", "lakes", "list"]);
        assert_eq!(code, Some(0), "{err}");
        let listed: Vec<serde_json::Value> = serde_json::from_str(&out).expect("lakes");
        let names: Vec<&str> = listed.iter().filter_map(|l| l["name"].as_str()).collect();
        assert_eq!(names, red, "{out}");
        let (_, out, _) = cli(&full, &["--output", "json", "lakes", "list"]);
        assert_eq!(
            serde_json::from_str::<Vec<serde_json::Value>>(&out)
                .expect("lakes")
                .len(),
            6
        );

        // Validate and submit: every lake means every red lake; a blue lake is not there.
        let hunt = crate::ioc_hunt(&needles);
        let body = serde_json::json!({"hunt": hunt}).to_string();
        let (status, text) = http(&addr, "POST", "/v1/validate", &limited, Some(&body));
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("validated");
        assert_eq!(v["lakes"], serde_json::json!(red), "{v}");
        let blue = manifest["lakes"][1]["name"].as_str().expect("name");
        let mut named = hunt.clone();
        named["lakes"] = serde_json::json!({"names": [blue]});
        let named = serde_json::json!({"hunt": named}).to_string();
        for path in ["/v1/validate", "/v1/jobs"] {
            let (status, text) = http(&addr, "POST", path, &limited, Some(&named));
            assert_eq!(status, 400, "{text}");
            assert!(text.contains("no lake open to this token"), "{text}");
        }
        let (status, _) = http(&addr, "POST", "/v1/validate", &full, Some(&named));
        assert_eq!(status, 200);

        // A job over all six lakes (the unlimited token): the limited token of the same owner
        // sees the job but reads the red lakes' rows only.
        let job = submit_http(&addr, &full, &body);
        assert_eq!(until_succeeded(&addr, &full, job)["lakes"]["total"], 6);
        let url = format!("/v1/jobs/{job}");
        let rows = |token: &str| -> Vec<serde_json::Value> {
            let (status, text) = http(
                &addr,
                "GET",
                &format!("{url}/results?limit=10000"),
                token,
                None,
            );
            assert_eq!(status, 200, "{text}");
            serde_json::from_str(&text).expect("rows")
        };
        let in_red = needles
            .iter()
            .filter(|n| red.iter().any(|r| n["lake"].as_str() == Some(r)))
            .count();
        assert!(
            in_red > 0 && in_red < needles.len(),
            "both teams have needles"
        );
        assert_eq!(rows(&full).len(), needles.len());
        let seen = rows(&limited);
        assert_eq!(seen.len(), in_red, "{seen:?}");
        for r in &seen {
            let lake = r["_lake"].as_str().unwrap_or("?");
            assert!(red.iter().any(|l| l == lake), "a row of {lake} leaked: {r}");
        }

        // Priorities: up to 5 for researchers here; operators re-prioritise any job.
        let id = job.to_string();
        let (code, _, err) = cli(
            &full,
            &["submit", "--ioc-ip", "10.0.0.1", "--priority", "6"],
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("above the researcher ceiling of 5"), "{err}");
        let (code, out, err) = cli(
            &full,
            &[
                "submit",
                "--ioc-ip",
                "10.0.0.1",
                "--priority",
                "5",
                "--output",
                "json",
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        let queued: serde_json::Value = serde_json::from_str(&out).expect("submitted");
        let queued = queued["job"].to_string();
        let (code, _, err) = cli(&full, &["priority", &queued, "9"]);
        assert_eq!(code, Some(1));
        assert!(err.contains("ceiling"), "{err}");
        let (code, out, err) = cli(&ops, &["priority", &queued, "--", "-20"]);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("now at priority -20"), "{out}");
        let (code, _, err) = cli(&ops, &["priority", &id, "9"]);
        assert_eq!(code, Some(1));
        assert!(err.contains("already ended"), "{err}");

        // Quotas: an admin sets, anyone operating lists, a researcher may not.
        let (code, out, err) = cli(
            &root,
            &["quota", "set", "--owner", "carol", "--max-running", "2"],
        );
        assert_eq!(code, Some(0), "{err}");
        assert!(
            out.contains("carol") && out.contains("at most 2 running"),
            "{out}"
        );
        let (code, out, _) = cli(&ops, &["--output", "json", "quota", "list"]);
        assert_eq!(code, Some(0));
        let q: serde_json::Value = serde_json::from_str(&out).expect("quotas");
        assert_eq!(
            (&q[0]["owner"], &q[0]["max_running"]),
            (&"carol".into(), &2.into())
        );
        let (code, _, err) = cli(&full, &["quota", "list"]);
        assert_eq!(code, Some(1));
        assert!(err.contains("operator"), "{err}");
        let (code, _, err) = cli(&root, &["quota", "set", "--max-running", "2"]);
        assert_eq!(code, Some(2), "one of --owner and --default: {err}");
        let (code, _, err) = cli(&root, &["quota", "clear", "--owner", "carol"]);
        assert_eq!(code, Some(0), "{err}");

        stop_server(server);
    })
    .await;
}

/// Retention end to end: a server whose leader keeps finished jobs 2 s removes a job, its
/// timeline and its result files by itself; a job kept with retention 0 stays until an admin
/// purges it with `sluice jobs purge`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_go_with_their_results_after_their_retention() {
    on_site(|db, results, lakes, addr| {
        let manifest = crate::generate_lakes(&db, &results, &lakes, 4, 300, 3);
        let needles = manifest["needles"].as_array().expect("needles").clone();
        let token = |role: &str| token_of(&db, &results, "alice", role);
        let (alice, root) = (token("researcher"), token("admin"));
        let extra = ["--retention", "2s", "--clean-every", "1s"];
        let server = start_server(&db, &results, &addr, &extra, &[]);
        let hunt = crate::ioc_hunt(&needles);
        let submit = |extra: serde_json::Value| -> i64 {
            let mut body = serde_json::json!({"hunt": hunt});
            if let Some(o) = extra.as_object() {
                for (k, v) in o {
                    body[k] = v.clone();
                }
            }
            submit_http(&addr, &alice, &body.to_string())
        };
        let finished = |id: i64| until_succeeded(&addr, &alice, id);
        let kept = submit(serde_json::json!({"retention_secs": 0}));
        assert_eq!(finished(kept)["retention_secs"], 0);
        let gone = submit(serde_json::json!({}));
        finished(gone);
        let folder = |id: i64| results.join("jobs").join(id.to_string());
        assert!(
            folder(gone).is_dir() && folder(kept).is_dir(),
            "results written"
        );
        // Within a few clean passes of its retention the job is gone, files and all.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, _) = http(&addr, "GET", &format!("/v1/jobs/{gone}"), &alice, None);
            if status == 404 {
                break;
            }
            assert!(Instant::now() < deadline, "job {gone} still there");
            std::thread::sleep(Duration::from_millis(200));
        }
        // Rows go first, then the objects (an object without a row is an orphan the sweep
        // finds; the other order could leave a row naming nothing): the files follow shortly.
        while folder(gone).exists() {
            assert!(
                Instant::now() < deadline,
                "its result files never went with it"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(folder(kept).is_dir(), "retention 0 keeps a job");
        let (status, _) = http(&addr, "GET", &format!("/v1/jobs/{kept}"), &alice, None);
        assert_eq!(status, 200);
        // An admin purges the kept job; a researcher may not.
        let kept_id = kept.to_string();
        let purge = |token: &str| {
            cli_at(
                &addr,
                Some(token),
                &["jobs", "purge", "--job", &kept_id],
                "",
            )
        };
        let (code, _, _) = purge(&alice);
        assert_eq!(code, Some(1));
        let (code, said, err) = purge(&root);
        assert_eq!(code, Some(0), "{err}");
        assert!(said.starts_with("1 finished jobs removed"), "{said}");
        assert!(!folder(kept).exists());
        // Purging it again says why nothing happened, and fails.
        let (code, _, err) = purge(&root);
        assert_eq!(code, Some(1));
        assert!(err.contains("was not purged: it has not finished"), "{err}");
        stop_server(server);
    })
    .await;
}

/// The `.parquet` files below `root`.
fn parquet_files(root: &std::path::Path) -> Vec<PathBuf> {
    fn walk(p: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

/// A hunt through `sluice server` whose results live in the bucket of `url` (under the prefix
/// `sluice`), reached with `env`; `list(prefix)` lists the bucket's keys. Every file lands in
/// the bucket, none stays where runners staged it, pages read back from it, and a purge
/// empties it.
fn hunt_with_results_in(
    site: (String, PathBuf, PathBuf, String),
    url: &str,
    env: &[(&str, &str)],
    list: &dyn Fn(&str) -> Vec<String>,
) {
    let (db, results, lakes, addr) = site;
    let manifest = crate::generate_lakes(&db, &results, &lakes, 6, 300, 9);
    let needles = manifest["needles"].as_array().expect("needles").clone();
    let token = |role: &str| token_of(&db, &results, "alice", role);
    let (alice, root) = (token("researcher"), token("admin"));
    let server = start_server(&db, &results, &addr, &["--results-url", url], env);
    let body = serde_json::json!({"hunt": crate::ioc_hunt(&needles)}).to_string();
    let id = submit_http(&addr, &alice, &body);
    until_succeeded(&addr, &alice, id);
    let (status, text) = http(
        &addr,
        "GET",
        &format!("/v1/jobs/{id}/results?limit=10000"),
        &alice,
        None,
    );
    assert_eq!(status, 200, "{text}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).expect("rows");
    assert_eq!(rows.len(), needles.len());
    let in_bucket = list(&format!("sluice/jobs/{id}/"));
    assert!(
        !in_bucket.is_empty() && in_bucket.iter().all(|k| k.ends_with(".parquet")),
        "results uploaded to the bucket: {in_bucket:?}"
    );
    assert!(
        parquet_files(&results.join("jobs")).is_empty(),
        "nothing left in staging"
    );
    let purge = ["jobs", "purge", "--job", &id.to_string()];
    let (code, _, err) = cli_at(&addr, Some(&root), &purge, "");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        list("sluice/"),
        Vec::<String>::new(),
        "purged from the bucket"
    );
    stop_server(server);
}

/// Results in object storage: a server with `--results-url s3://…` (the S3 protocol through
/// the provider simulator, credentials from the environment) keeps every result file in the
/// bucket, none in its folder (runners stage there, the worker uploads), serves the pages from
/// the bucket, and a purge removes them from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_live_in_object_storage_when_given_a_results_url() {
    let bucket = tempfile::tempdir().expect("tmp");
    let bucket_dir = bucket.path().join("hunt-results");
    std::fs::create_dir_all(&bucket_dir).expect("bucket");
    let cfg = sluice_sim::SimConfig::from_json(
        r#"{"accounts": {"results": {"buckets": ["hunt-results"], "rate": 100000, "burst": 100000}}}"#,
    )
    .expect("sim config");
    let sim = sluice_sim::Sim::new(cfg, bucket.path())
        .expect("sim")
        .start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sim listens");
    let endpoint = sim.url();
    on_site(move |db, results, lakes, addr| {
        // The results bucket's own settings; the lakes' AWS_* (wrong for the bucket) must not
        // be the ones used.
        let (key, secret) = (
            sluice_sim::access_key("results"),
            sluice_sim::secret_key("results"),
        );
        let s3 = [
            ("SLUICE_RESULTS_AWS_ENDPOINT", endpoint.as_str()),
            ("SLUICE_RESULTS_AWS_ALLOW_HTTP", "true"),
            ("SLUICE_RESULTS_AWS_REGION", "us-east-1"),
            ("SLUICE_RESULTS_AWS_ACCESS_KEY_ID", key.as_str()),
            ("SLUICE_RESULTS_AWS_SECRET_ACCESS_KEY", secret.as_str()),
            ("AWS_ACCESS_KEY_ID", "lakes-only"),
            ("AWS_SECRET_ACCESS_KEY", "lakes-only"),
            ("AWS_ENDPOINT", "http://127.0.0.1:9"),
        ];
        let list = |prefix: &str| -> Vec<String> {
            parquet_files(&bucket_dir.join(prefix))
                .iter()
                .map(|p| {
                    p.strip_prefix(&bucket_dir)
                        .expect("in the bucket")
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        };
        let site = (db.clone(), results, lakes, addr);
        hunt_with_results_in(site, "s3://hunt-results/sluice", &s3, &list);
        // A results URL the binary cannot serve is refused with what to use instead.
        let mut bad = sluice();
        bad.args([
            "--database-url",
            &db,
            "--results-url",
            "hdfs://b/p",
            "results",
            "1",
        ])
        .stdin(Stdio::null());
        let out = bad.output().expect("sluice");
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("hdfs:// is not a results store: use s3://"),
            "{err}"
        );
    })
    .await;
    sim.stop();
}

/// Azure Blob Storage's emulator (Azurite, which `.ci/test-deps.sh` installs from npm) on a
/// free port, with one container; stopped with the test.
struct Azurite {
    _proc: Proc,
    _dir: tempfile::TempDir,
    url: String,
    sdk: PathBuf,
}

impl Azurite {
    fn start(container: &str) -> Azurite {
        let tools = std::env::var_os("SLUICE_TEST_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                    .join(".cache/sluice-test-tools")
            })
            .join("azurite");
        let bin = tools.join("node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "{} is missing: `make test` installs Azurite (.ci/test-deps.sh)",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let proc = Proc::quiet(
            std::process::Command::new(&bin)
                .args(["--blobHost", "127.0.0.1", "--blobPort"])
                .arg(port.to_string())
                .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--silent"])
                .current_dir(dir.path()),
            "azurite",
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "azurite did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let az = Azurite {
            _proc: proc,
            _dir: dir,
            url: format!("http://127.0.0.1:{port}"),
            sdk: tools.join("node_modules"),
        };
        az.blobs("create", container, "");
        az
    }

    /// `azurite-blobs.cjs VERB` on `container` (names under `prefix`, one a line).
    fn blobs(&self, verb: &str, container: &str, prefix: &str) -> Vec<String> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/azurite-blobs.cjs");
        let out = super::run_ok(
            std::process::Command::new("node")
                .arg(script)
                .args([verb, &self.url, container, prefix])
                .env("NODE_PATH", &self.sdk),
            "node",
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The same with `--results-url az://…` against Azurite, Azure Blob Storage's emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_live_in_azure_blob_storage_given_an_az_url() {
    on_site(move |db, results, lakes, addr| {
        let az = Azurite::start("hunt-results");
        let env = [
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
            ("AZURITE_BLOB_STORAGE_URL", az.url.as_str()),
        ];
        let list = |prefix: &str| az.blobs("list", "hunt-results", prefix);
        hunt_with_results_in(
            (db, results, lakes, addr),
            "az://hunt-results/sluice",
            &env,
            &list,
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recurring_hunt_runs_at_its_tick_through_the_server() {
    on_site(|db, results, lakes, addr| {
        let manifest = crate::generate_lakes(&db, &results, &lakes, 4, 300, 5);
        let ip = manifest["needles"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["kind"] == "ip"))
            .and_then(|n| n["value"].as_str())
            .expect("an IP needle")
            .to_string();
        let alice = token_of(&db, &results, "alice", "researcher");
        let server = start_server(&db, &results, &addr, &[], &[]);
        let cli = |args: &[&str]| {
            let mut all = vec!["--output", "json", "schedules"];
            all.extend_from_slice(args);
            cli_at(&addr, Some(&alice), &all, "")
        };
        let json = |out: &str| -> serde_json::Value { serde_json::from_str(out).expect("json") };

        // Refused with a reason, nothing made.
        let (code, _, err) = cli(&["create", "x", "--every", "30s", "--ioc-ip", &ip]);
        assert_eq!(code, Some(1));
        assert!(err.contains("every 60 s"), "{err}");
        let (code, _, err) = cli(&["create", "x", "--ioc-ip", &ip]);
        assert_eq!(code, Some(1));
        assert!(err.contains("--every DURATION or --cron PATTERN"), "{err}");

        let (code, out, err) = cli(&[
            "create",
            "ips-daily",
            "--every",
            "1h",
            "--range",
            "1d",
            "--ioc-ip",
            &ip,
        ]);
        assert_eq!(code, Some(0), "{err}");
        let s = json(&out);
        let id = s["id"].as_i64().expect("id");
        assert_eq!(
            (&s["every_secs"], &s["range_secs"]),
            (&3600.into(), &86400.into())
        );

        // An hour passes (its tick is made due): the leader of the server makes the job.
        let rt = tokio::runtime::Handle::current();
        let pool = rt.block_on(sqlx::PgPool::connect(&db)).expect("database");
        rt.block_on(
            sqlx::query("UPDATE schedules SET next_at = now() - interval '1 second' WHERE id = $1")
                .bind(id)
                .execute(&pool),
        )
        .expect("make due");
        let deadline = Instant::now() + Duration::from_secs(60);
        let shown = loop {
            let (code, out, err) = cli(&["show", &id.to_string()]);
            assert_eq!(code, Some(0), "{err}");
            let s = json(&out);
            if s["runs"] == 1 {
                break s;
            }
            assert!(Instant::now() < deadline, "never ran: {s}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let job = shown["last_job"].as_i64().expect("its job");
        until_succeeded(&addr, &alice, job);
        // The job hunted the day before its tick, and its timeline says which schedule made it.
        let spec: serde_json::Value = rt
            .block_on(
                sqlx::query_scalar("SELECT spec FROM jobs WHERE id = $1")
                    .bind(job)
                    .fetch_one(&pool),
            )
            .expect("spec");
        let when = |k: &str| {
            chrono::DateTime::parse_from_rfc3339(spec[k].as_str().expect("time")).expect("rfc3339")
        };
        assert_eq!(
            (when("until") - when("since")).num_seconds(),
            86_400,
            "{spec}"
        );
        let (_, events) = http(
            &addr,
            "GET",
            &format!("/v1/jobs/{job}/events"),
            &alice,
            None,
        );
        assert!(events.contains("schedule.fired"), "{events}");
        let next: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(shown["next_at"].clone()).expect("next_at");
        assert!(
            next > chrono::Utc::now() + chrono::Duration::minutes(55),
            "{shown}"
        );

        // Paused, resumed, listed, removed; its job stays.
        let (code, out, _) = cli(&["pause", &id.to_string()]);
        assert_eq!((code, json(&out)["paused"].clone()), (Some(0), true.into()));
        let (code, out, _) = cli(&["resume", &id.to_string()]);
        assert_eq!(
            (code, json(&out)["paused"].clone()),
            (Some(0), false.into())
        );
        let (_, out, _) = cli_at(&addr, Some(&alice), &["schedules", "list"], "");
        assert!(out.contains("ips-daily") && out.contains("1 runs"), "{out}");
        let (code, _, err) = cli(&["delete", &id.to_string()]);
        assert_eq!(code, Some(0), "{err}");
        let (code, _, err) = cli(&["show", &id.to_string()]);
        assert_eq!(code, Some(1));
        assert!(err.contains("not found") || err.contains("404"), "{err}");
        let (status, _) = http(&addr, "GET", &format!("/v1/jobs/{job}"), &alice, None);
        assert_eq!(status, 200);
        // This server sends no webhooks: no key to give.
        let (code, _, err) = cli_at(&addr, Some(&alice), &["webhook-key"], "");
        assert_eq!(code, Some(1));
        assert!(err.contains("no webhooks"), "{err}");
        stop_server(server);
        // One that does gives each owner their own key.
        let secret = "a-webhook-secret-of-some-length";
        let server = start_server(
            &db,
            &results,
            &addr,
            &[],
            &[("SLUICE_WEBHOOK_SECRET", secret)],
        );
        let (code, key, err) = cli_at(&addr, Some(&alice), &["webhook-key"], "");
        assert_eq!(code, Some(0), "{err}");
        let want = sluice_core::WebhookSecret::new(secret.as_bytes()).owner_key("alice");
        assert_eq!(key.trim(), want);
        stop_server(server);
    })
    .await;
}
