//! The simulator over real HTTP, through object_store's S3 client (the client Sluice uses).

// Test code: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use sluice_sim::{Sim, SimConfig, SimHandle};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(accounts: &str) -> (tempfile::TempDir, SimHandle) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SimConfig::from_json(accounts).unwrap();
    for a in cfg.accounts.values() {
        for b in &a.buckets {
            std::fs::create_dir_all(dir.path().join(b)).unwrap();
        }
    }
    let sim = Sim::new(cfg, dir.path()).unwrap();
    let h = sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (dir, h)
}

fn s3(h: &SimHandle, bucket: &str, account: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(h.url())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_metadata_endpoint(h.metadata_endpoint(account))
        .with_retry(RetryConfig {
            max_retries: 0,
            ..Default::default()
        })
        .build()
        .unwrap()
}

/// One HTTP/1.1 request without a client library; returns (status, body).
async fn raw(h: &SimHandle, method: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: sim\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn total(h: &SimHandle, account: &str) -> sluice_sim::Counts {
    let mut sum = sluice_sim::Counts::default();
    for c in h.counts().get(account).into_iter().flat_map(|m| m.values()) {
        sum.total += c.total;
        sum.ok += c.ok;
        sum.throttled += c.throttled;
        sum.frozen += c.frozen;
        sum.credential += c.credential;
    }
    sum
}

const ONE: &str = r#"{"accounts": {"111": {"buckets": ["lake-a"], "rate": 1000, "burst": 1000}}}"#;

#[tokio::test]
async fn serves_s3_with_credentials_from_the_metadata_endpoint_and_counts_every_call() {
    let (_dir, h) = start(ONE).await;
    let store = s3(&h, "lake-a", "111");
    let p = Path::from("events/part-0.parquet");
    store
        .put(&p, PutPayload::from_static(b"hello"))
        .await
        .unwrap();
    let got = store.get(&p).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"hello");
    let listed: Vec<_> =
        futures::StreamExt::collect::<Vec<_>>(store.list(Some(&Path::from("events"))))
            .await
            .into_iter()
            .map(|m| m.unwrap().location)
            .collect();
    assert_eq!(listed, vec![p.clone()]);
    let c = total(&h, "111");
    // IMDSv2 is three calls (token, role, credentials), once: the credentials are cached.
    assert_eq!(c.credential, 3, "{c:?}");
    assert_eq!(c.total, 3 + 3, "{c:?}");
    assert_eq!(c.ok, c.total);
    // The provider-wide series counts the same calls.
    let all: u64 = h.counts()["*"].values().map(|c| c.total).sum();
    assert_eq!(all, c.total);
    h.stop();
}

#[tokio::test]
async fn over_quota_is_slow_down_and_a_long_overload_freezes_the_account() {
    let (_dir, h) = start(
        r#"{"accounts": {"111": {"buckets": ["lake-a"], "rate": 5, "burst": 5,
            "freeze_after_secs": 0.4, "freeze_for_secs": 600},
            "222": {"buckets": ["lake-b"], "rate": 1000, "burst": 1000}}}"#,
    )
    .await;
    let a = s3(&h, "lake-a", "111");
    let b = s3(&h, "lake-b", "222");
    let p = Path::from("x");
    b.put(&p, PutPayload::from_static(b"b")).await.unwrap();
    let mut seen_slowdown = false;
    let mut frozen_err = None;
    let start = std::time::Instant::now();
    // Bursts of 20 concurrent calls: over the 5/s quota however slowly this loop is
    // scheduled on a loaded machine (one call at a time could stay under it).
    // A burst's results come in the order the calls were made, not answered: look at all of
    // them before stopping at a freeze (a 403 listed before the burst's 503s was answered
    // after them).
    while frozen_err.is_none() && start.elapsed() < Duration::from_secs(10) {
        let burst = futures::future::join_all((0..20).map(|_| a.head(&p))).await;
        for r in burst {
            match r {
                Err(e) if e.to_string().contains("503") => seen_slowdown = true,
                Err(e) if e.to_string().contains("403") => frozen_err = Some(e.to_string()),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen_slowdown, "no SlowDown before the freeze");
    assert!(frozen_err.is_some(), "the account never froze");
    // A GET shows the S3 error body with the code.
    let err = a.get(&p).await.unwrap_err().to_string();
    assert!(err.contains("AccountProblem"), "{err}");
    let st = h.state();
    assert_eq!(st.accounts["111"].freezes, 1);
    assert!(st.accounts["111"].frozen_until.is_some());
    // Another account is not affected.
    assert!(b.head(&p).await.is_ok());
    let c = total(&h, "111");
    assert!(c.throttled > 0 && c.frozen >= 2, "{c:?}");

    // Unfreezing through the admin endpoint lets calls through again (once the quota refills).
    assert_eq!(raw(&h, "POST", "/_sim/unfreeze/111").await.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let e = a.head(&p).await.unwrap_err().to_string();
    assert!(
        e.contains("404") || e.to_lowercase().contains("not found"),
        "{e}"
    );
    h.stop();
}

#[tokio::test]
async fn admin_faults_freeze_throttle_drop_and_bad_requests() {
    let (_dir, h) = start(ONE).await;
    let a = s3(&h, "lake-a", "111");
    let p = Path::from("k");
    a.put(&p, PutPayload::from_static(b"v")).await.unwrap();

    assert_eq!(raw(&h, "POST", "/_sim/throttle/111?secs=0.3").await.0, 200);
    let e = a.head(&p).await.unwrap_err().to_string();
    assert!(e.contains("503"), "{e}");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(a.head(&p).await.is_ok());

    assert_eq!(raw(&h, "POST", "/_sim/freeze/111?secs=0.3").await.0, 200);
    let e = a.get(&p).await.unwrap_err().to_string();
    assert!(e.contains("AccountProblem"), "{e}");
    let (status, body) = raw(&h, "GET", "/_sim/state").await;
    assert_eq!(status, 200);
    let st: sluice_sim::SimState = serde_json::from_str(&body).unwrap();
    assert_eq!(st.accounts["111"].freezes, 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(a.head(&p).await.is_ok());

    assert_eq!(raw(&h, "POST", "/_sim/drop/111?secs=0.3").await.0, 200);
    assert!(a.head(&p).await.is_err());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(a.head(&p).await.is_ok());

    assert_eq!(raw(&h, "POST", "/_sim/latency?ms=50").await.0, 200);
    let t = std::time::Instant::now();
    assert!(a.head(&p).await.is_ok());
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(raw(&h, "POST", "/_sim/latency?ms=0").await.0, 200);

    // Bad admin input: a clear 4xx, nothing changed.
    for (m, path, want) in [
        ("POST", "/_sim/freeze/nobody", 404),
        ("POST", "/_sim/latency?ms=-5", 400),
        ("POST", "/_sim/latency?ms=abc", 400),
        ("GET", "/_sim/nothing", 404),
        ("GET", "/acct/nobody/latest/api/token", 404),
    ] {
        assert_eq!(raw(&h, m, path).await.0, want, "{m} {path}");
    }
    assert!(a.head(&p).await.is_ok());

    // Counts over HTTP match the in-process view.
    let (status, body) = raw(&h, "GET", "/_sim/counts").await;
    assert_eq!(status, 200);
    let counts: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<i64, sluice_sim::Counts>,
    > = serde_json::from_str(&body).unwrap();
    let via_http: u64 = counts["111"].values().map(|c| c.total).sum();
    assert_eq!(via_http, total(&h, "111").total);
    h.stop();
}
