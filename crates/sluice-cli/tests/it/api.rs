//! `sluice server` end to end: a token made with `sluice tokens`, a hunt submitted over HTTP,
//! validated by the real planner (SQL errors with line, column and hint), run by the server's
//! own worker slots, polled until the planted needles are found; a revoked token is refused.

use super::{Proc, free_port, signal, sluice, sluice_ok, wait_exit};
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One HTTP/1.1 request; returns (status, body).
fn http(addr: &str, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, String) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_researcher_submits_over_http_and_polls_until_the_needles_are_found() {
    let (_store, db) = sluice_store::testing::pg_store().await;
    let dir = tempfile::tempdir().expect("tmp");
    let results = dir.path().join("results");
    let lakes = dir.path().join("lakes");
    let addr = format!("127.0.0.1:{}", free_port());
    let (db2, results2, addr2) = (db.clone(), results.clone(), addr.clone());
    tokio::task::spawn_blocking(move || {
        let (db, results, addr) = (db2, results2, addr2);
        let manifest: serde_json::Value = serde_json::from_str(&sluice_ok(
            &db,
            &results,
            &[
                "--output",
                "json",
                "lakes",
                "generate",
                "--dir",
                &lakes.display().to_string(),
                "--count",
                "20",
                "--rows",
                "400",
                "--seed",
                "11",
                "--register",
            ],
        ))
        .expect("manifest");
        let needles = manifest["needles"].as_array().expect("needles").clone();
        let token: serde_json::Value = serde_json::from_str(&sluice_ok(
            &db,
            &results,
            &[
                "--output",
                "json",
                "tokens",
                "create",
                "--owner",
                "alice",
                "--role",
                "researcher",
            ],
        ))
        .expect("token json");
        let token = token["token"].as_str().expect("token").to_string();
        let mut server = Proc(
            sluice()
                .args([
                    "--database-url",
                    &db,
                    "--results-dir",
                    &results.display().to_string(),
                ])
                .args([
                    "server",
                    "--listen",
                    &addr,
                    "--idle-poll",
                    "50ms",
                    "--concurrency",
                    "4",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("server"),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err()
            || http(&addr, "GET", "/readyz", "", None).0 != 200
        {
            assert!(Instant::now() < deadline, "server never ready");
            std::thread::sleep(Duration::from_millis(50));
        }

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
        let mut hunt = serde_json::json!({"kind": "ioc", "ips": [], "hashes": [], "domains": []});
        for n in &needles {
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

        // Revoked: refused from the next request on.
        sluice_ok(&db, &results, &["tokens", "revoke", "1"]);
        assert_eq!(http(&addr, "GET", &url, &token, None).0, 401);
        let listed = sluice_ok(&db, &results, &["tokens", "list"]);
        assert!(
            listed.contains("alice") && !listed.contains(&token),
            "{listed}"
        );

        signal(&server, libc::SIGTERM);
        assert!(wait_exit(&mut server, Duration::from_secs(30)).success());
    })
    .await
    .expect("end to end");
}
