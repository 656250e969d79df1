//! The API's router on a real PostgreSQL: every endpoint and error path, and who may do what
//! (each role × each endpoint × own or another owner's job). The planner is a stand-in (the
//! real one needs the query engine; `sluice server` is tested end to end in sluice-cli).

// Test code: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use sluice_api::wire::HuntError;
use sluice_api::{Api, ApiConfig, Planned, Planner, Rejection, hash_token, new_token};
use sluice_store::{LakeAccess, NewTask, Role, Store, StoreExt, TokenInsertParams};
use std::sync::Arc;
use tower::ServiceExt;

mod console;
mod schedules;

/// The team a stand-in lake belongs to: `lake-0` red, `lake-1` blue, and so on.
fn team(i: usize) -> &'static str {
    if i.is_multiple_of(2) { "red" } else { "blue" }
}

/// `{"kind": "noop", "lakes": N}` plans one task for each of `lake-0..N` (`lake-F..N` with
/// `"from": F`) open to the caller
/// (tagged `team` by [`team`]); `{"kind": "bad"}` is invalid at line 1, column 8;
/// `{"kind": "none"}` selects no lake.
#[derive(Debug)]
struct FakePlanner;

#[async_trait]
impl Planner for FakePlanner {
    async fn plan(
        &self,
        hunt: &serde_json::Value,
        access: &LakeAccess,
    ) -> Result<Planned, Rejection> {
        match hunt["kind"].as_str() {
            Some("noop") => {
                let n = hunt["lakes"].as_u64().unwrap_or(1) as usize;
                let from = hunt["from"].as_u64().unwrap_or(0) as usize;
                let tasks: Vec<NewTask> = (from..n)
                    .filter(|i| access.allows(&[("team".to_string(), team(*i).to_string())].into()))
                    .map(|i| NewTask {
                        lake: format!("lake-{i}"),
                        scope: "aws:1".into(),
                        est_calls: 8,
                        shareable: false,
                    })
                    .collect();
                if tasks.is_empty() {
                    return Err(Rejection::NoLakes);
                }
                Ok(Planned {
                    spec: serde_json::json!({"kind": "noop"}),
                    sql: None,
                    est_calls: 8 * tasks.len() as i64,
                    tasks,
                })
            }
            Some("none") => Err(Rejection::NoLakes),
            _ => Err(Rejection::Invalid(vec![HuntError {
                line: 1,
                column: 8,
                message: "No field named src_ipp".into(),
                hint: Some("did you mean src_ip?".into()),
            }])),
        }
    }
}

/// Five result rows per job: `{"job": ID, "row": N}`; a page is the rows in range.
#[derive(Debug)]
struct FakeResults;

#[async_trait]
impl sluice_api::ResultReader for FakeResults {
    async fn page(
        &self,
        job: &sluice_store::Job,
        _access: &LakeAccess,
        format: sluice_api::ResultFormat,
        offset: usize,
        limit: usize,
    ) -> Result<sluice_api::ResultPage, String> {
        let rows: Vec<usize> = (offset..5).take(limit).collect();
        let body = match format {
            sluice_api::ResultFormat::Json => serde_json::to_vec(
                &rows
                    .iter()
                    .map(|r| serde_json::json!({"job": job.id.0, "row": r}))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            sluice_api::ResultFormat::Csv => rows
                .iter()
                .fold("job,row\n".to_string(), |acc, r| {
                    format!("{acc}{},{r}\n", job.id)
                })
                .into_bytes(),
            sluice_api::ResultFormat::Parquet => b"PAR1".to_vec(),
        };
        Ok(sluice_api::ResultPage {
            body,
            rows: rows.len(),
            truncated: false,
        })
    }

    /// Three objects per job.
    async fn remove(&self, _job: sluice_core::JobId) -> Result<u64, String> {
        Ok(3)
    }
}

struct T {
    app: Router,
    api: Api,
    store: Arc<dyn Store>,
    alice: String,
    bob: String,
    ops: String,
    root: String,
    revoked: String,
}

async fn token(store: &dyn Store, owner: &str, role: Role) -> (String, i64) {
    token_for(store, owner, role, LakeAccess::all()).await
}

async fn token_for(store: &dyn Store, owner: &str, role: Role, lakes: LakeAccess) -> (String, i64) {
    let t = new_token();
    let row = store
        .token_insert(TokenInsertParams {
            owner: owner.into(),
            role,
            lakes,
            hash: hash_token(&t),
            label: String::new(),
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    (t, row.id)
}

async fn setup(cfg: ApiConfig) -> T {
    let store: Arc<dyn Store> = Arc::new(sluice_store::testing::pg_store().await.0);
    let (alice, _) = token(store.as_ref(), "alice", Role::Researcher).await;
    let (bob, _) = token(store.as_ref(), "bob", Role::Researcher).await;
    let (ops, _) = token(store.as_ref(), "ops", Role::Operator).await;
    let (root, _) = token(store.as_ref(), "root", Role::Admin).await;
    let (revoked, id) = token(store.as_ref(), "alice", Role::Admin).await;
    store.token_revoke(id, chrono::Utc::now()).await.unwrap();
    let api = Api {
        store: store.clone(),
        planner: Arc::new(FakePlanner),
        results: Arc::new(FakeResults),
        cfg,
    };
    let app = sluice_api::router(api.clone());
    T {
        app,
        api,
        store,
        alice,
        bob,
        ops,
        root,
        revoked,
    }
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Resp {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    send(
        app,
        b.body(Body::from(body.unwrap_or("").to_string())).unwrap(),
    )
    .await
}

async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    Resp {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

const NOOP3: &str = r#"{"hunt": {"kind": "noop", "lakes": 3}}"#;

async fn submit(t: &T, token: &str, body: &str) -> i64 {
    let r = call(&t.app, "POST", "/v1/jobs", Some(token), Some(body)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    r.json()["job"].as_i64().unwrap()
}

fn problem(r: &Resp, status: StatusCode, detail_has: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "application/problem+json",
        "{}",
        r.text
    );
    let p = r.json();
    assert_eq!(p["status"], status.as_u16());
    assert!(
        p["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:sluice:problem:")
    );
    assert!(
        p["detail"].as_str().unwrap().contains(detail_has),
        "{detail_has:?} not in {}",
        r.text
    );
}

#[tokio::test]
async fn submit_then_poll_list_and_read_the_timeline() {
    let t = setup(ApiConfig::default()).await;
    let r = call(&t.app, "POST", "/v1/jobs", Some(&t.alice), Some(NOOP3)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let s = r.json();
    let id = s["job"].as_i64().unwrap();
    assert_eq!(s["created"], true);
    assert_eq!(s["tasks"], 3);
    assert_eq!(s["est_provider_calls"], 24);
    assert_eq!(s["status_url"], format!("/v1/jobs/{id}"));
    assert_eq!(r.headers[header::LOCATION], format!("/v1/jobs/{id}"));

    let r = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{id}"),
        Some(&t.alice),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let j = r.json();
    assert_eq!(j["owner"], "alice");
    assert_eq!(j["state"], "queued");
    assert_eq!(j["lakes"]["total"], 3);
    assert_eq!(j["waiting"], serde_json::json!([]));

    // A pause shows up as the reason the job waits.
    t.store
        .pause_set(sluice_store::PauseSetParams {
            target: sluice_store::PauseTarget::Owner("alice".into()),
            reason: "provider maintenance".into(),
            by: "ops".into(),
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let j = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{id}"),
        Some(&t.alice),
        None,
    )
    .await
    .json();
    assert!(
        j["waiting"][0]
            .as_str()
            .unwrap()
            .contains("provider maintenance"),
        "{j}"
    );

    // Pages of the caller's jobs, newest first.
    let second = submit(&t, &t.alice, NOOP3).await;
    submit(&t, &t.bob, NOOP3).await;
    let page = call(&t.app, "GET", "/v1/jobs?limit=1", Some(&t.alice), None)
        .await
        .json();
    assert_eq!(page["jobs"][0]["id"], second);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let page = call(
        &t.app,
        "GET",
        &format!("/v1/jobs?limit=1&cursor={cursor}"),
        Some(&t.alice),
        None,
    )
    .await
    .json();
    assert_eq!(page["jobs"][0]["id"], id);
    let all = call(&t.app, "GET", "/v1/jobs", Some(&t.alice), None)
        .await
        .json();
    assert_eq!(
        all["jobs"].as_array().unwrap().len(),
        2,
        "bob's job is not listed"
    );
    assert!(all["next_cursor"].is_null());
    let queued = call(&t.app, "GET", "/v1/jobs?state=queued", Some(&t.ops), None)
        .await
        .json();
    assert_eq!(queued["jobs"].as_array().unwrap().len(), 3);

    // Cancel (a JSON `null` body is no body), then the timeline has it; cancelling again is
    // a conflict.
    let r = call(
        &t.app,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(&t.alice),
        Some("null"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["state"], "cancelled");
    let r = call(
        &t.app,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(&t.alice),
        None,
    )
    .await;
    problem(&r, StatusCode::CONFLICT, "already ended");
    let ev = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{id}/events"),
        Some(&t.alice),
        None,
    )
    .await
    .json();
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"job.submitted"), "{kinds:?}");
    assert!(kinds.contains(&"job.cancelled"), "{kinds:?}");
    let ev = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{id}/events?limit=1"),
        Some(&t.alice),
        None,
    )
    .await
    .json();
    let next = ev["next_cursor"].as_str().unwrap().to_string();
    let ev2 = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{id}/events?limit=1&cursor={next}"),
        Some(&t.alice),
        None,
    )
    .await
    .json();
    assert_ne!(ev["events"][0]["id"], ev2["events"][0]["id"]);
}

#[tokio::test]
async fn an_idempotency_key_gives_the_same_job_or_a_conflict() {
    let t = setup(ApiConfig::default()).await;
    let post = |body: &'static str| {
        Request::builder()
            .method("POST")
            .uri("/v1/jobs")
            .header(header::AUTHORIZATION, format!("Bearer {}", t.alice))
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "hunt-2026-12-01")
            .body(Body::from(body))
            .unwrap()
    };
    let a = send(&t.app, post(NOOP3)).await;
    let b = send(&t.app, post(NOOP3)).await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert_eq!(a.json()["job"], b.json()["job"]);
    assert_eq!(
        (a.json()["created"].clone(), b.json()["created"].clone()),
        (true.into(), false.into())
    );
    let c = send(&t.app, post(r#"{"hunt": {"kind": "noop", "lakes": 4}}"#)).await;
    problem(&c, StatusCode::CONFLICT, "idempotency");
    // Another owner's key is their own.
    let r = send(
        &t.app,
        Request::builder()
            .method("POST")
            .uri("/v1/jobs")
            .header(header::AUTHORIZATION, format!("Bearer {}", t.bob))
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "hunt-2026-12-01")
            .body(Body::from(NOOP3))
            .unwrap(),
    )
    .await;
    assert_eq!(r.json()["created"], true);
}

#[tokio::test]
async fn bad_requests_get_a_problem_and_change_nothing() {
    let t = setup(ApiConfig {
        max_body_bytes: 4096,
        ..ApiConfig::default()
    })
    .await;
    let jobs_before = t
        .store
        .job_list(sluice_store::JobListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    // Authentication.
    let r = call(&t.app, "GET", "/v1/jobs", None, None).await;
    problem(&r, StatusCode::UNAUTHORIZED, "Bearer token is required");
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    for bad in ["nope", "slc_123", &format!("slc_{}", "0".repeat(64))] {
        let r = call(&t.app, "GET", "/v1/jobs", Some(bad), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}: {}", r.text);
    }
    let r = call(&t.app, "GET", "/v1/jobs", Some(&t.revoked), None).await;
    problem(&r, StatusCode::UNAUTHORIZED, "revoked");
    // Bodies.
    let cases: &[(&str, StatusCode, &str)] = &[
        (
            r#"{"hunt": {"kind": "noop"}"#,
            StatusCode::BAD_REQUEST,
            "line 1, column 25",
        ),
        ("", StatusCode::BAD_REQUEST, "malformed JSON"),
        ("[1, 2]", StatusCode::BAD_REQUEST, "malformed JSON"),
        (
            r#"{"hunt": {"kind": "noop"}, "priorty": 1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `priorty`",
        ),
        (
            r#"{"hunt": {"kind": "noop"}, "priority": 101}"#,
            StatusCode::BAD_REQUEST,
            "priority must be",
        ),
        (
            r#"{"hunt": {"kind": "noop"}, "priority": 99999}"#,
            StatusCode::BAD_REQUEST,
            "malformed JSON",
        ),
        (
            r#"{"hunt": {"kind": "noop"}, "max_attempts": 0}"#,
            StatusCode::BAD_REQUEST,
            "max_attempts",
        ),
        (
            r#"{"hunt": {"kind": "none"}}"#,
            StatusCode::BAD_REQUEST,
            "no registered lake",
        ),
        (
            r#"{"priority": 1}"#,
            StatusCode::BAD_REQUEST,
            "missing field `hunt`",
        ),
    ];
    for (body, status, has) in cases {
        let r = call(&t.app, "POST", "/v1/jobs", Some(&t.alice), Some(body)).await;
        problem(&r, *status, has);
    }
    // An invalid hunt lists each problem with its position and hint.
    let r = call(
        &t.app,
        "POST",
        "/v1/jobs",
        Some(&t.alice),
        Some(r#"{"hunt": {"kind": "bad"}}"#),
    )
    .await;
    problem(&r, StatusCode::BAD_REQUEST, "1 problem");
    let e = &r.json()["errors"][0];
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(1), Some(8))
    );
    assert_eq!(e["hint"], "did you mean src_ip?");
    // Too large, wrong media type, bad key.
    let big = format!(
        r#"{{"hunt": {{"kind": "noop", "pad": "{}"}}}}"#,
        "x".repeat(5000)
    );
    problem(
        &call(&t.app, "POST", "/v1/jobs", Some(&t.alice), Some(&big)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "4096-byte",
    );
    let r = send(
        &t.app,
        Request::builder()
            .method("POST")
            .uri("/v1/jobs")
            .header(header::AUTHORIZATION, format!("Bearer {}", t.alice))
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(NOOP3))
            .unwrap(),
    )
    .await;
    problem(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json");
    let r = send(
        &t.app,
        Request::builder()
            .method("POST")
            .uri("/v1/jobs")
            .header(header::AUTHORIZATION, format!("Bearer {}", t.alice))
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "")
            .body(Body::from(NOOP3))
            .unwrap(),
    )
    .await;
    problem(&r, StatusCode::BAD_REQUEST, "Idempotency-Key");
    // Paths and queries.
    for (path, status, has) in [
        ("/v1/jobs/abc", StatusCode::BAD_REQUEST, "not a job id"),
        ("/v1/jobs/-1", StatusCode::BAD_REQUEST, "not a job id"),
        ("/v1/jobs/99999999", StatusCode::NOT_FOUND, "job 99999999"),
        (
            "/v1/jobs?state=done",
            StatusCode::BAD_REQUEST,
            "unknown state",
        ),
        ("/v1/jobs?cursor=xyz", StatusCode::BAD_REQUEST, "cursor"),
        ("/v1/jobs?limit=0", StatusCode::BAD_REQUEST, "limit must be"),
        (
            "/v1/jobs?limit=5000",
            StatusCode::BAD_REQUEST,
            "limit must be",
        ),
        (
            "/v1/jobs?colour=red",
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        ("/v2/anything", StatusCode::NOT_FOUND, "no such route"),
    ] {
        problem(
            &call(&t.app, "GET", path, Some(&t.alice), None).await,
            status,
            has,
        );
    }
    let after = t
        .store
        .job_list(sluice_store::JobListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(jobs_before, after, "a refused request wrote a job");
}

/// Each role × each endpoint × own or another owner's job.
#[tokio::test]
async fn authorization_matrix() {
    let t = setup(ApiConfig::default()).await;
    use StatusCode as S;
    // (who, whose job, GET job, GET events, GET results, POST cancel, GET /v1/jobs?owner=alice)
    type Row<'a> = (&'a str, &'a str, S, S, S, S, S);
    let rows: [Row<'_>; 5] = [
        ("alice", "alice", S::OK, S::OK, S::OK, S::OK, S::OK),
        (
            "bob",
            "alice",
            S::NOT_FOUND,
            S::NOT_FOUND,
            S::NOT_FOUND,
            S::NOT_FOUND,
            S::FORBIDDEN,
        ),
        ("ops", "alice", S::OK, S::OK, S::OK, S::OK, S::OK),
        ("root", "alice", S::OK, S::OK, S::OK, S::OK, S::OK),
        ("ops", "ops", S::OK, S::OK, S::OK, S::OK, S::OK),
    ];
    for (who, whose, get, events, results, cancel, list) in rows {
        let tok = |name: &str| match name {
            "alice" => t.alice.clone(),
            "bob" => t.bob.clone(),
            "ops" => t.ops.clone(),
            _ => t.root.clone(),
        };
        let id = submit(&t, &tok(whose), NOOP3).await;
        let me = tok(who);
        let got = [
            call(&t.app, "GET", &format!("/v1/jobs/{id}"), Some(&me), None)
                .await
                .status,
            call(
                &t.app,
                "GET",
                &format!("/v1/jobs/{id}/events"),
                Some(&me),
                None,
            )
            .await
            .status,
            call(
                &t.app,
                "GET",
                &format!("/v1/jobs/{id}/results"),
                Some(&me),
                None,
            )
            .await
            .status,
            call(
                &t.app,
                "POST",
                &format!("/v1/jobs/{id}/cancel"),
                Some(&me),
                None,
            )
            .await
            .status,
            call(&t.app, "GET", "/v1/jobs?owner=alice", Some(&me), None)
                .await
                .status,
        ];
        assert_eq!(
            got,
            [get, events, results, cancel, list],
            "{who} on {whose}'s job"
        );
        // A job another researcher cannot see looks exactly like a missing one.
        if get == S::NOT_FOUND {
            let other = call(&t.app, "GET", &format!("/v1/jobs/{id}"), Some(&me), None)
                .await
                .json();
            let missing = call(&t.app, "GET", "/v1/jobs/99999999", Some(&me), None)
                .await
                .json();
            assert_eq!(other["type"], missing["type"]);
            let j = t.store.job_get(sluice_core::JobId(id)).await.unwrap();
            assert_eq!(
                j.state,
                sluice_core::JobState::Queued,
                "bob's cancel must not land"
            );
        }
    }
    // Researchers list their own jobs (asking for their own name is fine).
    let r = call(&t.app, "GET", "/v1/jobs?owner=bob", Some(&t.bob), None).await;
    assert_eq!(r.status, S::OK);
    assert!(r.json()["jobs"].as_array().unwrap().is_empty());
    // Every endpoint needs a token; health, readiness and metrics do not.
    for (m, p) in [
        ("GET", "/v1/jobs/1"),
        ("GET", "/v1/jobs/1/events"),
        ("GET", "/v1/jobs/1/results"),
        ("POST", "/v1/jobs/1/cancel"),
        ("POST", "/v1/jobs/1/priority"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/lakes"),
    ] {
        assert_eq!(
            call(&t.app, m, p, None, None).await.status,
            S::UNAUTHORIZED,
            "{m} {p}"
        );
    }
}

#[tokio::test]
async fn intake_closes_over_the_backlog_limit_and_accepted_jobs_go_on() {
    let t = setup(ApiConfig {
        max_backlog_tasks: Some(5),
        ..ApiConfig::default()
    })
    .await;
    let first = submit(&t, &t.alice, NOOP3).await;
    submit(&t, &t.alice, NOOP3).await; // 3 open < 5: accepted, now 6
    let r = call(&t.app, "POST", "/v1/jobs", Some(&t.alice), Some(NOOP3)).await;
    problem(&r, StatusCode::SERVICE_UNAVAILABLE, "unfinished lakes");
    assert_eq!(r.headers[header::RETRY_AFTER], "30");
    let r = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{first}"),
        Some(&t.alice),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Cancelling drains the backlog: intake opens again.
    for id in [first, first + 1] {
        call(
            &t.app,
            "POST",
            &format!("/v1/jobs/{id}/cancel"),
            Some(&t.alice),
            None,
        )
        .await;
    }
    assert_eq!(
        call(&t.app, "POST", "/v1/jobs", Some(&t.alice), Some(NOOP3))
            .await
            .status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn health_readiness_and_request_metrics() {
    let t = setup(ApiConfig::default()).await;
    let r = call(&t.app, "GET", "/healthz", None, None).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "ok\n"));
    let r = call(&t.app, "GET", "/readyz", None, None).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "ready\n"));
    call(&t.app, "GET", "/v1/jobs/123", Some(&t.alice), None).await;
    let m = call(&t.app, "GET", "/metrics", None, None).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.text.lines().any(|l| l.starts_with(
            r#"sluice_api_requests_total{method="GET",route="/v1/jobs/{id}",status="404"}"#
        )),
        "{}",
        m.text
    );
    assert!(
        m.text
            .contains("sluice_api_request_duration_seconds_bucket")
    );
}

/// The operator endpoints: reading needs operator, changing needs admin; no token is 401.
#[tokio::test]
async fn admin_endpoints_need_operator_to_read_and_admin_to_change() {
    let t = setup(ApiConfig::default()).await;
    use StatusCode as S;
    // (method, path, body, researcher, operator, admin) — run in this order per row, so the
    // admin's pause is there for its resume.
    type Row<'a> = (&'a str, &'a str, Option<&'a str>, S, S, S);
    let rows: &[Row<'_>] = &[
        ("GET", "/v1/admin/backlog", None, S::FORBIDDEN, S::OK, S::OK),
        ("GET", "/v1/admin/pauses", None, S::FORBIDDEN, S::OK, S::OK),
        (
            "POST",
            "/v1/admin/pauses",
            Some(r#"{"target": "scope:aws:9", "reason": "maintenance"}"#),
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::CREATED,
        ),
        (
            "POST",
            "/v1/admin/resume",
            Some(r#"{"target": "scope:aws:9"}"#),
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::OK,
        ),
        ("GET", "/v1/admin/budgets", None, S::FORBIDDEN, S::OK, S::OK),
        (
            "PUT",
            "/v1/admin/budgets/*",
            Some(r#"{"rate": 100, "burst": 100}"#),
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::OK,
        ),
        (
            "GET",
            "/v1/admin/breakers",
            None,
            S::FORBIDDEN,
            S::OK,
            S::OK,
        ),
        (
            "POST",
            "/v1/admin/breakers/aws:1/reset",
            None,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::NOT_FOUND,
        ),
        ("GET", "/v1/admin/intake", None, S::FORBIDDEN, S::OK, S::OK),
        ("GET", "/v1/admin/quotas", None, S::FORBIDDEN, S::OK, S::OK),
        (
            "POST",
            "/v1/admin/quotas",
            Some(r#"{"owner": "alice", "max_running": 4}"#),
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::OK,
        ),
        (
            "POST",
            "/v1/admin/quotas/clear",
            Some(r#"{"owner": "alice"}"#),
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::OK,
        ),
        (
            "POST",
            "/v1/admin/drain",
            Some(r#"{"reason": "upgrade"}"#),
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::OK,
        ),
        (
            "POST",
            "/v1/admin/drain/end",
            None,
            S::FORBIDDEN,
            S::FORBIDDEN,
            S::OK,
        ),
        ("POST", "/v1/validate", Some(NOOP3), S::OK, S::OK, S::OK),
    ];
    for (m, p, body, r, o, a) in rows {
        let mut got = Vec::new();
        for tok in [&t.alice, &t.ops, &t.root] {
            let resp = call(&t.app, m, p, Some(tok), *body).await;
            if resp.status == S::FORBIDDEN {
                problem(&resp, S::FORBIDDEN, "role");
            }
            got.push(resp.status);
        }
        assert_eq!(got, [*r, *o, *a], "{m} {p}");
        assert_eq!(
            call(&t.app, m, p, None, *body).await.status,
            S::UNAUTHORIZED,
            "{m} {p} without a token"
        );
    }
    // A refused change changed nothing: only the admin's pause and budget were written.
    assert!(t.store.pause_list().await.unwrap().is_empty());
    assert_eq!(t.store.budget_list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn admin_bad_requests_get_a_problem_and_change_nothing() {
    let t = setup(ApiConfig::default()).await;
    let cases: &[(&str, &str, &str, StatusCode, &str)] = &[
        (
            "POST",
            "/v1/admin/pauses",
            r#"{"target": "planet:x", "reason": "r"}"#,
            StatusCode::BAD_REQUEST,
            "not a pause target",
        ),
        (
            "POST",
            "/v1/admin/pauses",
            r#"{"target": "all", "reason": "  "}"#,
            StatusCode::BAD_REQUEST,
            "needs a reason",
        ),
        (
            "POST",
            "/v1/admin/pauses",
            r#"{"target": "all", "reason": "r", "colour": 1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            "POST",
            "/v1/admin/pauses",
            r#"["all", "r"]"#,
            StatusCode::BAD_REQUEST,
            "JSON object",
        ),
        (
            "POST",
            "/v1/admin/resume",
            r#"{"target": "owner:nobody"}"#,
            StatusCode::NOT_FOUND,
            "owner:nobody",
        ),
        (
            "PUT",
            "/v1/admin/budgets/aws:1",
            r#"{"rate": -5, "burst": 10}"#,
            StatusCode::BAD_REQUEST,
            "rate",
        ),
        (
            "PUT",
            "/v1/admin/budgets/aws:1",
            r#"{"rate": 5}"#,
            StatusCode::BAD_REQUEST,
            "missing field `burst`",
        ),
        (
            "PUT",
            "/v1/admin/budgets/aws:1",
            r#"{"rate": 5, "burst": 5, "ramp": {"start_fraction": 0}}"#,
            StatusCode::BAD_REQUEST,
            "start_fraction must be in (0, 1]",
        ),
        (
            "PUT",
            "/v1/admin/budgets/aws:1",
            r#"{"rate": 5, "burst": 5, "ramp": {"interval_secs": -1}}"#,
            StatusCode::BAD_REQUEST,
            "interval_secs must be 0.01 to 3600",
        ),
        (
            "PUT",
            "/v1/admin/budgets/aws:1",
            r#"{"rate": 5, "burst": 5, "ramp": {"slope": 2}}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `slope`",
        ),
        (
            "POST",
            "/v1/admin/drain",
            r#"{"reason": ""}"#,
            StatusCode::BAD_REQUEST,
            "needs a reason",
        ),
        (
            "POST",
            "/v1/admin/drain/end",
            "",
            StatusCode::NOT_FOUND,
            "intake is open",
        ),
        (
            "POST",
            "/v1/validate",
            r#"{"hunt": {"kind": "none"}}"#,
            StatusCode::BAD_REQUEST,
            "no registered lake",
        ),
    ];
    for (m, p, body, status, has) in cases {
        let body = (!body.is_empty()).then_some(*body);
        problem(&call(&t.app, m, p, Some(&t.root), body).await, *status, has);
    }
    assert!(t.store.pause_list().await.unwrap().is_empty());
    assert!(t.store.budget_list().await.unwrap().is_empty());
    assert_eq!(t.store.intake_get().await.unwrap(), None);
}

/// `POST /v1/validate` plans without writing a job and estimates the drain at the budgets.
#[tokio::test]
async fn validate_plans_and_estimates_without_submitting() {
    let t = setup(ApiConfig::default()).await;
    for (scope, rate) in [("*", 100.0), ("aws:1", 8.0)] {
        t.store
            .budget_set(sluice_store::BudgetSetParams {
                scope: scope.into(),
                parent: None,
                rate,
                burst: rate,
                ramp: None,
                now: chrono::Utc::now(),
            })
            .await
            .unwrap();
    }
    let v = call(&t.app, "POST", "/v1/validate", Some(&t.alice), Some(NOOP3)).await;
    assert_eq!(v.status, StatusCode::OK, "{}", v.text);
    let v = v.json();
    // 3 lakes × 8 calls = 24 calls at aws:1's 8/s: no sooner than 3 s.
    assert_eq!(
        (&v["valid"], &v["tasks"], &v["est_provider_calls"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(3),
            &serde_json::json!(24)
        )
    );
    assert_eq!(v["eta_alone_secs"], 3.0, "{v}");
    assert_eq!(v["eta_with_backlog_secs"], 3.0, "{v}");
    assert_eq!(
        v["lakes"],
        serde_json::json!(["lake-0", "lake-1", "lake-2"])
    );
    assert_eq!(v["intake_open"], true);
    // Behind a job of the same size, the backlog doubles.
    submit(&t, &t.bob, NOOP3).await;
    let v = call(&t.app, "POST", "/v1/validate", Some(&t.alice), Some(NOOP3))
        .await
        .json();
    assert_eq!(
        (
            v["eta_alone_secs"].as_f64(),
            v["eta_with_backlog_secs"].as_f64()
        ),
        (Some(3.0), Some(6.0)),
        "{v}"
    );
    // An invalid hunt: the same problem as a submit, and still only bob's job exists.
    let r = call(
        &t.app,
        "POST",
        "/v1/validate",
        Some(&t.alice),
        Some(r#"{"hunt": {"kind": "bad"}}"#),
    )
    .await;
    problem(&r, StatusCode::BAD_REQUEST, "1 problem");
    assert_eq!(r.json()["errors"][0]["column"], 8);
    let jobs = t
        .store
        .job_list(sluice_store::JobListParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
}

/// A drain closes intake for every submitter (503 + Retry-After), lets accepted jobs finish,
/// and reports when the backlog is empty; ending it opens intake again.
#[tokio::test]
async fn a_drain_refuses_new_jobs_and_reports_when_the_backlog_is_empty() {
    let t = setup(ApiConfig::default()).await;
    let id = submit(&t, &t.alice, NOOP3).await;
    let r = call(
        &t.app,
        "POST",
        "/v1/admin/drain",
        Some(&t.root),
        Some(r#"{"reason": "database upgrade"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(
        (&v["open"], &v["pending"], &v["drained"], &v["by"]),
        (
            &serde_json::json!(false),
            &serde_json::json!(3),
            &serde_json::json!(false),
            &serde_json::json!("root")
        ),
        "{v}"
    );
    let r = call(&t.app, "POST", "/v1/jobs", Some(&t.bob), Some(NOOP3)).await;
    problem(&r, StatusCode::SERVICE_UNAVAILABLE, "database upgrade");
    assert_eq!(r.headers[header::RETRY_AFTER], "60");
    let v = call(&t.app, "POST", "/v1/validate", Some(&t.bob), Some(NOOP3))
        .await
        .json();
    assert_eq!(v["intake_open"], false);
    // The accepted job goes on (here: it is cancelled) and the drain sees the backlog empty.
    let r = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{id}"),
        Some(&t.alice),
        None,
    )
    .await;
    assert_eq!(r.json()["state"], "queued");
    call(
        &t.app,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(&t.alice),
        None,
    )
    .await;
    let v = call(&t.app, "GET", "/v1/admin/intake", Some(&t.ops), None)
        .await
        .json();
    assert_eq!(
        (&v["drained"], &v["pending"]),
        (&serde_json::json!(true), &serde_json::json!(0))
    );
    let r = call(&t.app, "POST", "/v1/admin/drain/end", Some(&t.root), None).await;
    assert_eq!(r.json()["open"], true);
    submit(&t, &t.bob, NOOP3).await;
}

/// `/openapi.json` is generated from the routed handlers: every route of the API is in it,
/// with its method, and every operation but the probes asks for the bearer token.
#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let t = setup(ApiConfig::default()).await;
    let r = call(&t.app, "GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let want = [
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/{id}"),
        ("post", "/v1/jobs/{id}/cancel"),
        ("post", "/v1/jobs/{id}/priority"),
        ("get", "/v1/lakes"),
        ("get", "/v1/admin/quotas"),
        ("post", "/v1/admin/quotas"),
        ("post", "/v1/admin/quotas/clear"),
        ("post", "/v1/admin/purge"),
        ("get", "/v1/jobs/{id}/events"),
        ("get", "/v1/jobs/{id}/results"),
        ("post", "/v1/validate"),
        ("get", "/v1/admin/backlog"),
        ("get", "/v1/admin/pauses"),
        ("post", "/v1/admin/pauses"),
        ("post", "/v1/admin/resume"),
        ("get", "/v1/admin/budgets"),
        ("put", "/v1/admin/budgets/{scope}"),
        ("get", "/v1/admin/breakers"),
        ("post", "/v1/admin/breakers/{scope}/reset"),
        ("get", "/v1/admin/intake"),
        ("post", "/v1/admin/drain"),
        ("post", "/v1/admin/drain/end"),
        ("post", "/v1/jobs/{id}/retry"),
        ("post", "/v1/schedules"),
        ("get", "/v1/schedules"),
        ("get", "/v1/schedules/{id}"),
        ("delete", "/v1/schedules/{id}"),
        ("post", "/v1/schedules/{id}/pause"),
        ("post", "/v1/schedules/{id}/resume"),
        ("get", "/v1/webhook-key"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    ];
    let mut got = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            got.push((method.clone(), path.clone()));
            let probe = path == "/healthz" || path == "/readyz";
            assert_eq!(op["security"].is_array(), !probe, "{method} {path}");
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
        }
    }
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // Each documented route answers (not the fallback's 404 "no such route").
    for (m, p) in &want {
        let p = p.replace("{id}", "1").replace("{scope}", "aws:1");
        let r = call(&t.app, &m.to_uppercase(), &p, Some(&t.root), None).await;
        assert!(!r.text.contains("no such route"), "{m} {p}: {}", r.text);
    }
    // Every reference resolves (an unresolved one hides a parameter from clients and fuzzers).
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_string()),
                        _ => refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .expect("a schema ref");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "unresolved {r}"
        );
    }
    // The schemas the bodies name are there.
    for s in [
        "SubmitRequest",
        "Submitted",
        "JobView",
        "Problem",
        "BacklogReport",
        "IntakeView",
    ] {
        assert!(doc["components"]["schemas"][s].is_object(), "{s}");
    }
}

/// Results page by cursor in the asked format, flagged partial while the job runs.
#[tokio::test]
async fn results_come_in_pages_in_each_format() {
    let t = setup(ApiConfig::default()).await;
    let id = submit(&t, &t.alice, NOOP3).await;
    let get = |q: String| {
        let app = t.app.clone();
        let tok = t.alice.clone();
        async move {
            call(
                &app,
                "GET",
                &format!("/v1/jobs/{id}/results{q}"),
                Some(&tok),
                None,
            )
            .await
        }
    };
    let r = get("?limit=2".into()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(r.headers["x-partial"], "true");
    assert_eq!(
        r.json(),
        serde_json::json!([{"job": id, "row": 0}, {"job": id, "row": 1}])
    );
    let mut cursor = r.headers["x-next-cursor"].to_str().unwrap().to_string();
    let mut rows = 2;
    loop {
        let r = get(format!("?limit=2&cursor={cursor}")).await;
        rows += r.json().as_array().unwrap().len();
        match r.headers.get("x-next-cursor") {
            Some(c) => cursor = c.to_str().unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(rows, 5);
    let r = get("?format=csv".into()).await;
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/csv");
    assert_eq!(r.text.lines().count(), 6, "{}", r.text);
    let r = get("?format=parquet".into()).await;
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "application/vnd.apache.parquet"
    );
    for (q, has) in [
        ("?format=xml", "unknown variant"),
        ("?cursor=-1", "cursor"),
        ("?limit=0", "limit must be"),
        ("?limit=100001", "limit must be"),
        ("?page=2", "unknown field"),
    ] {
        problem(&get(q.into()).await, StatusCode::BAD_REQUEST, has);
    }
    // A finished job's results are not partial.
    call(
        &t.app,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(&t.alice),
        None,
    )
    .await;
    assert!(get(String::new()).await.headers.get("x-partial").is_none());
}

#[tokio::test]
async fn cancel_takes_an_optional_reason_and_refuses_a_bad_body() {
    let t = setup(ApiConfig::default()).await;
    let id = submit(&t, &t.alice, NOOP3).await;
    let path = format!("/v1/jobs/{id}/cancel");
    for (body, status, detail) in [
        (
            r#"{"reason": "  "}"#,
            StatusCode::BAD_REQUEST,
            "reason must be",
        ),
        (
            r#"{"reason": "x", "why": 1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (r#"["x"]"#, StatusCode::BAD_REQUEST, "JSON object"),
        (r#"{"reason": "x""#, StatusCode::BAD_REQUEST, "line 1"),
    ] {
        let r = call(&t.app, "POST", &path, Some(&t.alice), Some(body)).await;
        problem(&r, status, detail);
    }
    let long = serde_json::json!({"reason": "x".repeat(501)}).to_string();
    let r = call(&t.app, "POST", &path, Some(&t.alice), Some(&long)).await;
    problem(&r, StatusCode::BAD_REQUEST, "reason must be");
    // Not JSON at all.
    let req = Request::builder()
        .method("POST")
        .uri(&path)
        .header(header::AUTHORIZATION, format!("Bearer {}", t.alice))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("because"))
        .unwrap();
    problem(
        &send(&t.app, req).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/json",
    );
    let job = t.store.job_get(sluice_core::JobId(id)).await.unwrap();
    assert_eq!(job.state.as_str(), "queued", "no bad request cancelled it");

    let body = r#"{"reason": "wrong time range"}"#;
    let r = call(&t.app, "POST", &path, Some(&t.alice), Some(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let ev = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{id}/events"),
        Some(&t.alice),
        None,
    )
    .await;
    assert!(ev.text.contains("wrong time range"), "{}", ev.text);
}

/// The CLI on the database calls the router in its process with the caller as a request
/// extension: no token, and the caller's role still decides what it sees.
#[tokio::test]
async fn an_in_process_caller_needs_no_token_and_keeps_its_role() {
    let t = setup(ApiConfig::default()).await;
    let id = submit(&t, &t.alice, NOOP3).await;
    let get = |owner: &str, role: Role| {
        let mut req = Request::builder()
            .uri(format!("/v1/jobs/{id}"))
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(sluice_api::Caller {
            owner: owner.into(),
            role,
            lakes: LakeAccess::all(),
            token: None,
        });
        req
    };
    assert_eq!(
        send(&t.app, get("alice", Role::Researcher)).await.status,
        StatusCode::OK
    );
    problem(
        &send(&t.app, get("bob", Role::Researcher)).await,
        StatusCode::NOT_FOUND,
        &format!("job {id}"),
    );
    assert_eq!(
        send(&t.app, get("cli", Role::Admin)).await.status,
        StatusCode::OK
    );
    // Without the extension, the token is required as before.
    let r = call(&t.app, "GET", &format!("/v1/jobs/{id}"), None, None).await;
    problem(&r, StatusCode::UNAUTHORIZED, "Bearer");
}

/// `eta_secs`: none before a first lake is done, the pace so far once some are, none again
/// while a pause holds lakes (the wait reason says why), none once the job ended.
#[tokio::test]
async fn a_job_gives_an_eta_from_its_pace_and_none_while_held() {
    use sluice_store::{
        PauseSetParams, PauseTarget, TaskClaimParams, TaskFinish, TaskFinishParams, TaskOutcome,
    };
    let t = setup(ApiConfig::default()).await;
    let id = submit(&t, &t.alice, r#"{"hunt": {"kind": "noop", "lakes": 4}}"#).await;
    let path = format!("/v1/jobs/{id}");
    let get = || async {
        call(&t.app, "GET", &path, Some(&t.alice), None)
            .await
            .json()
    };
    assert!(
        get().await["eta_secs"].is_null(),
        "no pace before a first lake"
    );
    let now = chrono::Utc::now();
    let claimed = t
        .store
        .task_claim(TaskClaimParams {
            worker: "w".into(),
            limit: 2,
            lease: std::time::Duration::from_secs(30),
            now,
            skip_owners: Vec::new(),
            share: 0,
            prefer_scopes: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    t.store
        .task_finish(TaskFinishParams {
            finishes: claimed
                .iter()
                .map(|c| TaskFinish {
                    lease: c.lease,
                    outcome: TaskOutcome::Succeeded {
                        rows: 0,
                        result_uri: None,
                    },
                })
                .collect(),
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let j = get().await;
    let eta = j["eta_secs"]
        .as_f64()
        .unwrap_or_else(|| panic!("an eta: {j}"));
    assert!(eta > 0.0 && eta < 3600.0, "{j}");
    t.store
        .pause_set(PauseSetParams {
            target: PauseTarget::Job(sluice_core::JobId(id)),
            reason: "checking".into(),
            by: "ops".into(),
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let j = get().await;
    assert!(j["eta_secs"].is_null(), "held: {j}");
    assert!(j["waiting"][0].as_str().unwrap().contains("paused"), "{j}");
    let r = call(
        &t.app,
        "POST",
        &format!("{path}/cancel"),
        Some(&t.alice),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(get().await["eta_secs"].is_null(), "ended");
}

fn red() -> LakeAccess {
    LakeAccess(vec![[("team".to_string(), "red".to_string())].into()])
}

/// A token limited to lakes by tag plans, validates and lists only those lakes; a hunt that
/// selects none of them is refused naming the token's access.
#[tokio::test]
async fn a_token_limited_to_tagged_lakes_hunts_and_lists_only_those() {
    let t = setup(ApiConfig::default()).await;
    let (carol, _) = token_for(t.store.as_ref(), "carol", Role::Researcher, red()).await;
    let r = call(
        &t.app,
        "POST",
        "/v1/validate",
        Some(&carol),
        Some(r#"{"hunt": {"kind": "noop", "lakes": 4}}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["lakes"], serde_json::json!(["lake-0", "lake-2"]));
    let id = submit(&t, &carol, r#"{"hunt": {"kind": "noop", "lakes": 4}}"#).await;
    let tasks = t.store.task_list_all(sluice_core::JobId(id)).await.unwrap();
    assert_eq!(
        tasks.iter().map(|t| t.lake.as_str()).collect::<Vec<_>>(),
        ["lake-0", "lake-2"]
    );
    // lake-1 is blue: as if it did not exist, and the error says what the token may hunt.
    let blue = r#"{"hunt": {"kind": "noop", "lakes": 2, "from": 1}}"#;
    for path in ["/v1/jobs", "/v1/validate"] {
        let r = call(&t.app, "POST", path, Some(&carol), Some(blue)).await;
        problem(
            &r,
            StatusCode::BAD_REQUEST,
            "no lake open to this token matches the selector (the token may hunt lakes tagged team=red",
        );
        let r = call(&t.app, "POST", path, Some(&t.alice), Some(blue)).await;
        assert!(r.status.is_success(), "{}", r.text);
    }
    let none = r#"{"hunt": {"kind": "none"}}"#;
    let r = call(&t.app, "POST", "/v1/jobs", Some(&carol), Some(none)).await;
    problem(
        &r,
        StatusCode::BAD_REQUEST,
        "no lake open to this token matches the selector (the token may hunt lakes tagged team=red",
    );
    let r = call(&t.app, "POST", "/v1/jobs", Some(&t.alice), Some(none)).await;
    problem(
        &r,
        StatusCode::BAD_REQUEST,
        "no registered lake matches the selector",
    );

    // The lake listing: every lake for alice, the red ones for carol.
    for (i, name) in ["lake-0", "lake-1", "lake-2"].iter().enumerate() {
        t.store
            .lake_insert(sluice_store::LakeInsertParams {
                name: name.to_string(),
                url: format!("file:///lakes/{name}/"),
                scope: "aws:1".into(),
                partition_cols: vec!["dt".into()],
                schema: serde_json::json!({"fields": []}),
                tags: [("team".to_string(), team(i).to_string())].into(),
                options: Default::default(),
                now: chrono::Utc::now(),
            })
            .await
            .unwrap();
    }
    let names = |r: &Resp| -> Vec<String> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect()
    };
    let r = call(&t.app, "GET", "/v1/lakes", Some(&t.alice), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(names(&r), ["lake-0", "lake-1", "lake-2"]);
    assert_eq!(r.json()[0]["tags"], serde_json::json!({"team": "red"}));
    assert_eq!(r.json()[0]["partition_cols"], serde_json::json!(["dt"]));
    assert!(
        r.json()[0].get("url").is_none(),
        "locations stay server-side"
    );
    let r = call(&t.app, "GET", "/v1/lakes", Some(&carol), None).await;
    assert_eq!(names(&r), ["lake-0", "lake-2"]);
    let r = call(&t.app, "GET", "/v1/lakes", None, None).await;
    problem(&r, StatusCode::UNAUTHORIZED, "Bearer");
}

/// Researchers submit and re-prioritise up to their ceiling; operators re-prioritise any job.
#[tokio::test]
async fn priorities_stop_at_the_roles_ceiling_and_operators_reprioritise() {
    let t = setup(ApiConfig {
        priority: sluice_core::PriorityCeiling { researcher: 10 },
        ..ApiConfig::default()
    })
    .await;
    let body = |p: i32| format!(r#"{{"hunt": {{"kind": "noop", "lakes": 2}}, "priority": {p}}}"#);
    // (token, priority, status)
    let cases = [
        (&t.alice, 10, StatusCode::ACCEPTED),
        (&t.alice, 11, StatusCode::FORBIDDEN),
        (&t.alice, -100, StatusCode::ACCEPTED),
        (&t.ops, 100, StatusCode::ACCEPTED),
        (&t.ops, 101, StatusCode::BAD_REQUEST),
    ];
    for (token, p, want) in cases {
        for path in ["/v1/validate", "/v1/jobs"] {
            let r = call(&t.app, "POST", path, Some(token), Some(&body(p))).await;
            assert_eq!(
                r.status.as_u16() / 100 == 2,
                want.as_u16() / 100 == 2,
                "{path} {p}: {}",
                r.text
            );
            if want == StatusCode::FORBIDDEN {
                problem(&r, want, "above the researcher ceiling of 10");
            }
        }
    }
    let before = t
        .store
        .job_list(sluice_store::JobListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(before, 3, "refused submissions wrote nothing");

    let id = submit(&t, &t.alice, &body(0)).await;
    let set = |token: &str, p: &str| {
        let (app, token, path, p) = (
            t.app.clone(),
            token.to_string(),
            format!("/v1/jobs/{id}/priority"),
            p.to_string(),
        );
        async move { call(&app, "POST", &path, Some(&token), Some(&p)).await }
    };
    problem(
        &set(&t.alice, r#"{"priority": 50}"#).await,
        StatusCode::FORBIDDEN,
        "researcher ceiling",
    );
    problem(
        &set(&t.bob, r#"{"priority": 5}"#).await,
        StatusCode::NOT_FOUND,
        &format!("job {id}"),
    );
    problem(
        &set(&t.alice, r#"{"priority": "high"}"#).await,
        StatusCode::BAD_REQUEST,
        "malformed JSON",
    );
    problem(
        &set(&t.alice, r#"{"priority": 5, "why": 1}"#).await,
        StatusCode::BAD_REQUEST,
        "unknown field",
    );
    problem(
        &set(&t.ops, r#"{"priority": 300}"#).await,
        StatusCode::BAD_REQUEST,
        "",
    );
    let r = set(&t.alice, r#"{"priority": -5}"#).await;
    assert_eq!(
        (r.status, r.json()["priority"].clone()),
        (StatusCode::OK, serde_json::json!(-5)),
        "{}",
        r.text
    );
    let r = set(&t.ops, r#"{"priority": 90}"#).await;
    assert_eq!(
        (r.status, r.json()["priority"].clone()),
        (StatusCode::OK, serde_json::json!(90)),
        "{}",
        r.text
    );
    let tasks = t.store.task_list_all(sluice_core::JobId(id)).await.unwrap();
    assert!(
        tasks.iter().all(|t| t.priority == 90),
        "the tasks move with the job"
    );
    let ev = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{id}/events"),
        Some(&t.alice),
        None,
    )
    .await;
    assert!(ev.text.contains("job.reprioritized"), "{}", ev.text);
    call(
        &t.app,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(&t.alice),
        None,
    )
    .await;
    problem(
        &set(&t.ops, r#"{"priority": 1}"#).await,
        StatusCode::CONFLICT,
        "already ended",
    );
}

/// Quotas: operators read them, admins set and clear them; bad ones change nothing.
#[tokio::test]
async fn quotas_are_read_by_operators_and_set_by_admins() {
    let t = setup(ApiConfig::default()).await;
    let get = |token: &String| {
        let (app, token) = (t.app.clone(), token.clone());
        async move { call(&app, "GET", "/v1/admin/quotas", Some(&token), None).await }
    };
    problem(&get(&t.alice).await, StatusCode::FORBIDDEN, "operator role");
    assert_eq!(get(&t.ops).await.json(), serde_json::json!([]));
    let set = r#"{"owner": "alice", "max_running": 8}"#;
    let r = call(&t.app, "POST", "/v1/admin/quotas", Some(&t.ops), Some(set)).await;
    problem(&r, StatusCode::FORBIDDEN, "admin role");
    let r = call(&t.app, "POST", "/v1/admin/quotas", Some(&t.root), Some(set)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.json()["owner"].clone(), r.json()["max_running"].clone()),
        (serde_json::json!("alice"), serde_json::json!(8))
    );
    let r = call(
        &t.app,
        "POST",
        "/v1/admin/quotas",
        Some(&t.root),
        Some(r#"{"owner": null, "max_running": 4}"#),
    )
    .await;
    assert_eq!(r.json()["owner"], serde_json::Value::Null, "{}", r.text);
    for (bad, detail) in [
        (r#"{"owner": "bob", "max_running": -1}"#, "0 to 1000000"),
        (r#"{"owner": "*", "max_running": 1}"#, "reserved"),
        (r#"{"owner": "", "max_running": 1}"#, "1 to 200"),
        (r#"{"owner": "bob"}"#, "max_running"),
        (r#"{"max_running": 1}"#, "missing field `owner`"),
        (r#"{"owner": "   ", "max_running": 1}"#, "1 to 200"),
        (
            r#"{"owner": "bob", "max_running": 1, "x": 1}"#,
            "unknown field",
        ),
    ] {
        let r = call(&t.app, "POST", "/v1/admin/quotas", Some(&t.root), Some(bad)).await;
        problem(&r, StatusCode::BAD_REQUEST, detail);
    }
    let listed = get(&t.ops).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    // A job whose owner is at their quota says so.
    let id = submit(&t, &t.alice, NOOP3).await;
    let job = |t: &T| {
        let (app, token) = (t.app.clone(), t.alice.clone());
        async move {
            call(&app, "GET", &format!("/v1/jobs/{id}"), Some(&token), None)
                .await
                .json()
        }
    };
    assert_eq!(job(&t).await["waiting"], serde_json::json!([]));
    let zero = r#"{"owner": "alice", "max_running": 0}"#;
    let r = call(
        &t.app,
        "POST",
        "/v1/admin/quotas",
        Some(&t.root),
        Some(zero),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let waiting = job(&t).await["waiting"].to_string();
    assert!(
        waiting.contains("owner alice has 0 tasks running, their quota"),
        "{waiting}"
    );
    let clear = |body: &'static str| {
        call(
            &t.app,
            "POST",
            "/v1/admin/quotas/clear",
            Some(&t.root),
            Some(body),
        )
    };
    assert_eq!(clear(r#"{"owner": "alice"}"#).await.status, StatusCode::OK);
    problem(
        &clear(r#"{"owner": "alice"}"#).await,
        StatusCode::NOT_FOUND,
        "quota of owner alice",
    );
    problem(
        &clear(r#"{}"#).await,
        StatusCode::BAD_REQUEST,
        "missing field `owner`",
    );
    problem(
        &clear(r#"{"owner": "*"}"#).await,
        StatusCode::BAD_REQUEST,
        "reserved",
    );
    assert_eq!(clear(r#"{"owner": null}"#).await.status, StatusCode::OK);
    assert_eq!(get(&t.ops).await.json(), serde_json::json!([]));
}

/// An admin purges finished jobs now: by id or by age; unfinished ones and bad requests change
/// nothing.
#[tokio::test]
async fn an_admin_purges_finished_jobs_now() {
    let t = setup(ApiConfig::default()).await;
    let done = submit(&t, &t.alice, NOOP3).await;
    let open = submit(&t, &t.alice, NOOP3).await;
    call(
        &t.app,
        "POST",
        &format!("/v1/jobs/{done}/cancel"),
        Some(&t.alice),
        None,
    )
    .await;
    let purge = |token: &String, body: &str| {
        let (app, token, body) = (t.app.clone(), token.clone(), body.to_string());
        async move { call(&app, "POST", "/v1/admin/purge", Some(&token), Some(&body)).await }
    };
    problem(
        &purge(&t.ops, r#"{"job": 1}"#).await,
        StatusCode::FORBIDDEN,
        "admin role",
    );
    for bad in [
        r#"{}"#,
        r#"{"job": 1, "older_than_secs": 5}"#,
        r#"{"job": 0}"#,
        r#"{"older_than_secs": -1}"#,
        r#"{"job": 1, "x": 2}"#,
    ] {
        let r = purge(&t.root, bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    let r = purge(&t.root, &format!(r#"{{"job": {open}}}"#)).await;
    assert_eq!(r.json()["jobs"], serde_json::json!([]), "an open job stays");
    let r = purge(&t.root, &format!(r#"{{"job": {done}}}"#)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let p = r.json();
    assert_eq!(
        (&p["jobs"], &p["tasks"], &p["objects"]),
        (&serde_json::json!([done]), &3.into(), &3.into())
    );
    let r = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{done}"),
        Some(&t.alice),
        None,
    )
    .await;
    problem(&r, StatusCode::NOT_FOUND, &format!("job {done}"));
    let r = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{open}"),
        Some(&t.alice),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = purge(&t.root, r#"{"older_than_secs": 0}"#).await;
    assert_eq!(
        r.json()["jobs"],
        serde_json::json!([]),
        "nothing else finished"
    );
}

#[tokio::test]
async fn a_researcher_runs_the_failed_lakes_of_their_ended_job_again() {
    let t = setup(ApiConfig::default()).await;
    let id = submit(&t, &t.alice, NOOP3).await;
    let path = format!("/v1/jobs/{id}/retry");
    let retry = |token: &str| {
        let (app, token, path) = (t.app.clone(), token.to_string(), path.clone());
        async move { call(&app, "POST", &path, Some(&token), None).await }
    };
    problem(&retry(&t.alice).await, StatusCode::CONFLICT, "still queued");
    // Two of its three lakes fail.
    let now = chrono::Utc::now();
    let claimed = t
        .store
        .task_claim(sluice_store::TaskClaimParams {
            worker: "w".into(),
            limit: 10,
            lease: std::time::Duration::from_secs(30),
            now,
            skip_owners: Vec::new(),
            share: 0,
            prefer_scopes: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let finishes = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| sluice_store::TaskFinish {
            lease: c.lease,
            outcome: if i == 0 {
                sluice_store::TaskOutcome::Succeeded {
                    rows: 1,
                    result_uri: None,
                }
            } else {
                sluice_store::TaskOutcome::Failed {
                    error: "boom".into(),
                }
            },
        })
        .collect();
    t.store
        .task_finish(sluice_store::TaskFinishParams { finishes, now })
        .await
        .unwrap();
    // Another researcher's job is not theirs to see; a bad id is the caller's mistake.
    problem(
        &retry(&t.bob).await,
        StatusCode::NOT_FOUND,
        &format!("job {id}"),
    );
    problem(
        &call(&t.app, "POST", "/v1/jobs/x/retry", Some(&t.alice), None).await,
        StatusCode::BAD_REQUEST,
        "not a job id",
    );
    let r = retry(&t.alice).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let j = r.json();
    assert_eq!(
        (
            j["state"].clone(),
            j["lakes"].clone(),
            j["finished_at"].clone()
        ),
        (
            serde_json::json!("running"),
            serde_json::json!({"total": 3, "done": 1, "failed": 0, "cancelled": 0}),
            serde_json::Value::Null
        )
    );
    // It runs again: a second retry, even an operator's, is a conflict until it ends.
    problem(&retry(&t.ops).await, StatusCode::CONFLICT, "still running");
    let timeline = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{id}/events"),
        Some(&t.alice),
        None,
    )
    .await;
    assert!(timeline.text.contains("job.rerun"), "{}", timeline.text);
    // A researcher does not undo an operator's cancel; the operator may, and the owner may
    // run their own cancelled job again.
    let stopped = submit(&t, &t.alice, NOOP3).await;
    let cancel = format!("/v1/jobs/{stopped}/cancel");
    call(&t.app, "POST", &cancel, Some(&t.ops), None).await;
    let again = format!("/v1/jobs/{stopped}/retry");
    let r = call(&t.app, "POST", &again, Some(&t.alice), None).await;
    problem(&r, StatusCode::FORBIDDEN, "an operator may run it again");
    let r = call(&t.app, "POST", &again, Some(&t.ops), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let own = submit(&t, &t.alice, NOOP3).await;
    call(
        &t.app,
        "POST",
        &format!("/v1/jobs/{own}/cancel"),
        Some(&t.alice),
        None,
    )
    .await;
    let r = call(
        &t.app,
        "POST",
        &format!("/v1/jobs/{own}/retry"),
        Some(&t.alice),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn a_long_poll_answers_when_the_job_moves_or_the_wait_ends() {
    let t = setup(ApiConfig {
        max_wait: std::time::Duration::from_secs(30),
        ..ApiConfig::default()
    })
    .await;
    let id = submit(&t, &t.alice, NOOP3).await;
    let get = |q: &str| {
        let (app, token, path) = (t.app.clone(), t.alice.clone(), format!("/v1/jobs/{id}{q}"));
        async move { call(&app, "GET", &path, Some(&token), None).await }
    };
    for (q, says) in [
        ("?wait=soon", "not a duration"),
        ("?wait=-1", "not a duration"),
        ("?wait=5h", "not a duration"),
        ("?until=1", "unknown field"),
    ] {
        problem(&get(q).await, StatusCode::BAD_REQUEST, says);
    }
    // Nothing moves: the answer comes when the wait is over, unchanged; a wait longer than the
    // server's limit (here 1 s) is cut to it.
    let short = setup(ApiConfig {
        max_wait: std::time::Duration::from_secs(1),
        ..ApiConfig::default()
    })
    .await;
    let other = submit(&short, &short.alice, NOOP3).await;
    for wait in ["5m", "99999999999999999999999"] {
        let started = std::time::Instant::now();
        let path = format!("/v1/jobs/{other}?wait={wait}");
        let r = call(&short.app, "GET", &path, Some(&short.alice), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let took = started.elapsed();
        let (least, most) = (
            std::time::Duration::from_millis(900),
            std::time::Duration::from_secs(20),
        );
        assert!(took >= least && took < most, "{wait}: {took:?}");
    }
    let started = std::time::Instant::now();
    let r = get("?wait=1s").await;
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (StatusCode::OK, "queued".into())
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // A claim moves it: the poll answers with the new state, long before its wait is over.
    let store = t.store.clone();
    let claimer = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        store
            .task_claim(sluice_store::TaskClaimParams {
                worker: "w".into(),
                limit: 1,
                lease: std::time::Duration::from_secs(30),
                now: chrono::Utc::now(),
                skip_owners: Vec::new(),
                share: 0,
                prefer_scopes: Vec::new(),
            })
            .await
            .unwrap()
    });
    let started = std::time::Instant::now();
    let r = get("?wait=30s").await;
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (StatusCode::OK, "running".into())
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(claimer.await.unwrap().len(), 1);
    // An ended job answers at once, and another owner's stays unseen.
    call(
        &t.app,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(&t.alice),
        None,
    )
    .await;
    let started = std::time::Instant::now();
    let r = get("?wait=30s").await;
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (StatusCode::OK, "cancelled".into())
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    let r = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{id}?wait=1s"),
        Some(&t.bob),
        None,
    )
    .await;
    problem(&r, StatusCode::NOT_FOUND, &format!("job {id}"));
}

#[tokio::test]
async fn a_job_names_a_webhook_only_where_the_server_sends_them_and_only_a_public_one() {
    let hook =
        |url: &str| format!(r#"{{"hunt": {{"kind": "noop", "lakes": 1}}, "webhook": {url:?}}}"#);
    let off = setup(ApiConfig::default()).await;
    let r = call(
        &off.app,
        "POST",
        "/v1/jobs",
        Some(&off.alice),
        Some(&hook("https://hooks.example.com/x")),
    )
    .await;
    problem(&r, StatusCode::BAD_REQUEST, "this server sends no webhooks");
    let r = call(&off.app, "GET", "/v1/webhook-key", Some(&off.alice), None).await;
    problem(&r, StatusCode::NOT_FOUND, "this server sends no webhooks");
    let t = setup(ApiConfig {
        webhooks: Some(sluice_api::Webhooks {
            rules: sluice_core::WebhookRules::default(),
            secret: sluice_core::WebhookSecret::new(b"0123456789abcdef"),
        }),
        ..ApiConfig::default()
    })
    .await;
    for (url, says) in [
        ("http://hooks.example.com/x", "must be https://"),
        ("https://127.0.0.1:8080/x", "not a public address"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "not a public address",
        ),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("gopher://hooks.example.com/", "not gopher://"),
        ("hooks.example.com/x", "not a URL"),
    ] {
        for path in ["/v1/validate", "/v1/jobs"] {
            let r = call(&t.app, "POST", path, Some(&t.alice), Some(&hook(url))).await;
            problem(&r, StatusCode::BAD_REQUEST, says);
        }
    }
    let all = sluice_store::JobListParams {
        limit: 100,
        ..Default::default()
    };
    let jobs = t.store.job_list(all).await.unwrap();
    assert!(jobs.is_empty(), "refused submissions wrote nothing");
    // Accepted: the job shows the host it will call, never the path (it holds the secret).
    let id = submit(
        &t,
        &t.alice,
        &hook("https://hooks.example.com/T0/B1/s3cr3t"),
    )
    .await;
    let r = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{id}"),
        Some(&t.alice),
        None,
    )
    .await;
    assert_eq!(r.json()["webhook_host"], "hooks.example.com");
    assert!(!r.text.contains("s3cr3t"), "{}", r.text);
    // Each owner reads their own signing key, never another's.
    let key = |token: &str| {
        let (app, token) = (t.app.clone(), token.to_string());
        async move {
            call(&app, "GET", "/v1/webhook-key", Some(&token), None)
                .await
                .json()
        }
    };
    let (a, b) = (key(&t.alice).await, key(&t.bob).await);
    let secret = sluice_core::WebhookSecret::new(b"0123456789abcdef");
    assert_eq!(a["owner"], "alice");
    assert_eq!(a["key"], secret.owner_key("alice"));
    assert_eq!(b["key"], secret.owner_key("bob"));
    assert_ne!(a["key"], b["key"]);
}
