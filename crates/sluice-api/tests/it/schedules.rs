//! Recurring hunts over the API: made, checked, listed, paused, resumed and removed by whom
//! they should be; bad requests change nothing; a tick's job is made once, however often it
//! is asked for (the scheduler's side is tested in sluice-scheduler, end to end in sluice-cli).

use super::{T, call, problem, setup};
use axum::http::StatusCode;
use sluice_api::ApiConfig;

const EVERY_HOUR: &str = r#"{"name": "hourly-noop", "every_secs": 3600, "submit": {"hunt": {"kind": "noop", "lakes": 3}}}"#;

async fn create(t: &T, token: &str, body: &str) -> serde_json::Value {
    let r = call(&t.app, "POST", "/v1/schedules", Some(token), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json()
}

async fn count(t: &T) -> usize {
    t.store.schedule_list(None).await.unwrap().len()
}

#[tokio::test]
async fn schedules_are_checked_made_and_seen_by_their_owner_and_operators() {
    let t = setup(ApiConfig::default()).await;
    let before = chrono::Utc::now();
    let s = create(&t, &t.alice, EVERY_HOUR).await;
    let next: chrono::DateTime<chrono::Utc> = serde_json::from_value(s["next_at"].clone()).unwrap();
    let in_an_hour = (next - before).num_seconds();
    assert!((3599..=3601).contains(&in_an_hour), "{s}");
    assert_eq!(
        (&s["owner"], &s["runs"], &s["paused"]),
        (&"alice".into(), &0.into(), &false.into())
    );
    assert_eq!(s["submit"]["hunt"]["kind"], "noop");
    let id = s["id"].as_i64().unwrap();
    let cron = create(
        &t,
        &t.alice,
        r#"{"name": "weekday-mornings", "cron": "0 6 * * 1-5", "submit": {"hunt": {"kind": "noop"}}}"#,
    )
    .await;
    let at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(cron["next_at"].clone()).unwrap();
    assert_eq!(at.format("%H:%M:%S").to_string(), "06:00:00", "{cron}");

    // Each owner sees their own; operators see everyone's; another researcher's is missing.
    let list = |token: String| {
        let app = t.app.clone();
        async move {
            let r = call(&app, "GET", "/v1/schedules", Some(&token), None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r.json().as_array().unwrap().len()
        }
    };
    assert_eq!(list(t.alice.clone()).await, 2);
    assert_eq!(list(t.bob.clone()).await, 0);
    assert_eq!(list(t.ops.clone()).await, 2);
    let path = format!("/v1/schedules/{id}");
    let r = call(&t.app, "GET", &path, Some(&t.bob), None).await;
    problem(&r, StatusCode::NOT_FOUND, "schedule");
    let r = call(&t.app, "GET", &path, Some(&t.ops), None).await;
    assert_eq!(r.json()["name"], "hourly-noop");

    // Refused, and nothing made.
    let n = count(&t).await;
    for (body, status, has) in [
        (
            EVERY_HOUR,
            StatusCode::CONFLICT,
            "already has a schedule named",
        ),
        (
            r#"{"name": "x", "every_secs": 59, "submit": {"hunt": {"kind": "noop"}}}"#,
            StatusCode::BAD_REQUEST,
            "every 60 s",
        ),
        (
            r#"{"name": "x", "cron": "61 * * * *", "submit": {"hunt": {"kind": "noop"}}}"#,
            StatusCode::BAD_REQUEST,
            "not a cron pattern",
        ),
        (
            r#"{"name": "x", "cron": "0 0 31 2 *", "submit": {"hunt": {"kind": "noop"}}}"#,
            StatusCode::BAD_REQUEST,
            "never matches",
        ),
        (
            r#"{"name": "x", "cron": "* * * * *", "every_secs": 60, "submit": {"hunt": {"kind": "noop"}}}"#,
            StatusCode::BAD_REQUEST,
            "not both",
        ),
        (
            r#"{"name": "x", "submit": {"hunt": {"kind": "noop"}}}"#,
            StatusCode::BAD_REQUEST,
            "needs an interval",
        ),
        (
            r#"{"name": "x", "every_secs": 60, "range_secs": 0, "submit": {"hunt": {"kind": "noop"}}}"#,
            StatusCode::BAD_REQUEST,
            "a range is",
        ),
        (
            r#"{"name": "has space", "every_secs": 60, "submit": {"hunt": {"kind": "noop"}}}"#,
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            r#"{"name": "x", "every_secs": 60, "submit": {"hunt": {"kind": "noop"}}, "when": 1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `when`",
        ),
        (
            r#"{"name": "x", "every_secs": 60}"#,
            StatusCode::BAD_REQUEST,
            "missing field `submit`",
        ),
        (
            r#"{"name": "x", "every_secs": 60, "submit": {"hunt": {"kind": "bad"}}}"#,
            StatusCode::BAD_REQUEST,
            "1 problem",
        ),
        (
            r#"{"name": "x", "every_secs": 60, "submit": {"hunt": {"kind": "none"}}}"#,
            StatusCode::BAD_REQUEST,
            "no registered lake",
        ),
        (
            r#"{"name": "x", "every_secs": 60, "submit": {"hunt": {"kind": "noop"}, "priority": 90}}"#,
            StatusCode::FORBIDDEN,
            "priority",
        ),
        (
            r#"{"name": "x", "every_secs": 60, "submit": {"hunt": {"kind": "noop"}, "max_attempts": 0}}"#,
            StatusCode::BAD_REQUEST,
            "max_attempts",
        ),
        // A SQL hunt with a range names where the range goes.
        (
            r#"{"name": "x", "every_secs": 60, "range_secs": 3600, "submit": {"hunt": {"kind": "sql", "sql": "SELECT 1"}}}"#,
            StatusCode::BAD_REQUEST,
            "{{since}}",
        ),
        (
            r#"{"name": "x", "every_secs": 60, "range_secs": 3600, "submit": {"hunt": {"kind": "noop"}}}"#,
            StatusCode::BAD_REQUEST,
            "not valid",
        ),
        ("[]", StatusCode::BAD_REQUEST, "JSON object"),
    ] {
        let r = call(&t.app, "POST", "/v1/schedules", Some(&t.alice), Some(body)).await;
        problem(&r, status, has);
    }
    let r = call(&t.app, "POST", "/v1/schedules", None, Some(EVERY_HOUR)).await;
    problem(&r, StatusCode::UNAUTHORIZED, "Bearer");
    assert_eq!(count(&t).await, n, "nothing made by a refused request");
}

#[tokio::test]
async fn owners_and_operators_pause_and_resume_and_only_owners_and_admins_remove() {
    let t = setup(ApiConfig::default()).await;
    let s = create(&t, &t.alice, EVERY_HOUR).await;
    let id = s["id"].as_i64().unwrap();
    let act = |token: String, method: &'static str, verb: &'static str| {
        let app = t.app.clone();
        async move {
            let path = if verb.is_empty() {
                format!("/v1/schedules/{id}")
            } else {
                format!("/v1/schedules/{id}/{verb}")
            };
            call(&app, method, &path, Some(&token), None).await
        }
    };
    let r = act(t.bob.clone(), "POST", "pause").await;
    problem(&r, StatusCode::NOT_FOUND, "schedule");
    let r = act(t.alice.clone(), "POST", "pause").await;
    assert_eq!(
        (r.status, &r.json()["paused"]),
        (StatusCode::OK, &true.into()),
        "{}",
        r.text
    );
    assert_eq!(r.json()["paused_by"], "alice");
    // Paused: never due.
    let far = chrono::Utc::now() + chrono::Duration::days(400);
    assert!(t.store.schedule_due(far, 10).await.unwrap().is_empty());
    let r = act(t.ops.clone(), "POST", "resume").await;
    assert_eq!(
        (r.status, &r.json()["paused"]),
        (StatusCode::OK, &false.into()),
        "{}",
        r.text
    );
    let r = act(t.ops.clone(), "POST", "pause").await;
    assert_eq!(r.json()["paused_by"], "ops");
    let journal = t
        .store
        .event_list(sluice_store::EventListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let kinds: Vec<&str> = journal.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.contains(&"schedule.paused") && kinds.contains(&"schedule.resumed"),
        "{kinds:?}"
    );
    // Operators pause; removing is the owner's or an admin's.
    let r = act(t.ops.clone(), "DELETE", "").await;
    problem(&r, StatusCode::FORBIDDEN, "owner or an admin");
    let r = act(t.bob.clone(), "DELETE", "").await;
    problem(&r, StatusCode::NOT_FOUND, "schedule");
    let r = act(t.alice.clone(), "DELETE", "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = act(t.alice.clone(), "GET", "").await;
    problem(&r, StatusCode::NOT_FOUND, "schedule");
    let other = create(&t, &t.bob, EVERY_HOUR).await["id"].as_i64().unwrap();
    let r = call(
        &t.app,
        "DELETE",
        &format!("/v1/schedules/{other}"),
        Some(&t.root),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    for bad in ["0", "-1", "x", "99999999999999999999"] {
        let r = call(
            &t.app,
            "GET",
            &format!("/v1/schedules/{bad}"),
            Some(&t.alice),
            None,
        )
        .await;
        problem(&r, StatusCode::BAD_REQUEST, "not a schedule id");
    }
}

#[tokio::test]
async fn a_ticks_job_is_made_once_as_the_owner_and_a_tick_that_cannot_plan_says_why() {
    let t = setup(ApiConfig::default()).await;
    let s = create(
        &t,
        &t.alice,
        r#"{"name": "n", "every_secs": 600, "submit": {"hunt": {"kind": "noop", "lakes": 3}, "priority": 5, "max_attempts": 2}}"#,
    )
    .await;
    let s = t
        .store
        .schedule_get(s["id"].as_i64().unwrap())
        .await
        .unwrap();
    let tick = s.next_at;
    let job = sluice_api::run_schedule(&t.api, &s, tick, tick)
        .await
        .unwrap();
    let again = sluice_api::run_schedule(&t.api, &s, tick, tick)
        .await
        .unwrap();
    assert_eq!(job, again, "one job per tick");
    let later = tick + chrono::Duration::minutes(10);
    let next = sluice_api::run_schedule(&t.api, &s, later, later)
        .await
        .unwrap();
    assert_ne!(job, next);
    // A late leader that plans the same tick otherwise (here: fewer lakes now) gets the
    // tick's job, not a second one and not an error.
    let fewer = sluice_store::Schedule {
        request: serde_json::json!({"hunt": {"kind": "noop", "lakes": 2}, "priority": 5, "max_attempts": 2}),
        ..s.clone()
    };
    let late = sluice_api::run_schedule(&t.api, &fewer, tick, tick)
        .await
        .unwrap();
    assert_eq!(late, job);
    let j = t.store.job_get(job).await.unwrap();
    assert_eq!(
        (j.owner.as_str(), j.priority, j.counts.total),
        ("alice", 5, 3)
    );
    assert_eq!(
        j.idempotency_key,
        Some(format!("schedule:{}:{}", s.id, tick.timestamp()))
    );
    // No one else can take a tick's key.
    let r = super::send(
        &t.app,
        axum::http::Request::builder()
            .method("POST")
            .uri("/v1/jobs")
            .header("authorization", format!("Bearer {}", t.alice))
            .header("content-type", "application/json")
            .header("idempotency-key", format!("schedule:{}:1", s.id))
            .body(axum::body::Body::from(super::NOOP3))
            .unwrap(),
    )
    .await;
    problem(&r, StatusCode::BAD_REQUEST, "reserved");
    // A hunt that selects nothing now is refused for this tick, not for good.
    let none = sluice_store::Schedule {
        request: serde_json::json!({"hunt": {"kind": "none"}}),
        ..s.clone()
    };
    let e = sluice_api::run_schedule(&t.api, &none, tick, tick)
        .await
        .unwrap_err();
    assert!(
        !e.is_transient() && e.detail().contains("no registered lake"),
        "{e:?}"
    );
    // Intake closed: a tick waits (it is tried again), it is not lost.
    t.store
        .intake_close(sluice_store::IntakeCloseParams {
            reason: "drain".into(),
            by: "root".into(),
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let t20 = tick + chrono::Duration::minutes(20);
    let e = sluice_api::run_schedule(&t.api, &s, t20, t20)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
}

#[tokio::test]
async fn a_schedule_runs_with_its_tokens_access_now_and_stops_when_it_is_revoked() {
    let t = setup(ApiConfig::default()).await;
    let (token, id) = super::token_for(
        t.store.as_ref(),
        "carol",
        sluice_store::Role::Researcher,
        sluice_store::LakeAccess::all(),
    )
    .await;
    let s = create(&t, &token, EVERY_HOUR).await;
    let s = t
        .store
        .schedule_get(s["id"].as_i64().unwrap())
        .await
        .unwrap();
    assert_eq!(s.token_hash, Some(sluice_api::hash_token(&token)));
    let tick = s.next_at;
    sluice_api::run_schedule(&t.api, &s, tick, tick)
        .await
        .unwrap();
    // Revoked: the next tick makes no job and the schedule is paused, saying why.
    t.store.token_revoke(id, chrono::Utc::now()).await.unwrap();
    let later = tick + chrono::Duration::hours(1);
    let e = sluice_api::run_schedule(&t.api, &s, later, later)
        .await
        .unwrap_err();
    assert!(!e.is_transient() && e.detail().contains("revoked"), "{e:?}");
    let now = t.store.schedule_get(s.id).await.unwrap();
    assert_eq!(
        now.paused_by.as_deref(),
        Some(sluice_api::schedules::REVOKED_BY)
    );
    // A token limited to red lakes plans within them at each run.
    let (red, _) = super::token_for(
        t.store.as_ref(),
        "dora",
        sluice_store::Role::Researcher,
        super::red(),
    )
    .await;
    let s = create(&t, &red, EVERY_HOUR).await;
    let s = t
        .store
        .schedule_get(s["id"].as_i64().unwrap())
        .await
        .unwrap();
    let job = sluice_api::run_schedule(&t.api, &s, tick, tick)
        .await
        .unwrap();
    assert_eq!(
        t.store.job_get(job).await.unwrap().counts.total,
        2,
        "lake-0 and lake-2 of 3"
    );
}

#[tokio::test]
async fn a_researcher_cannot_lift_an_operators_pause_of_their_schedule() {
    let t = setup(ApiConfig::default()).await;
    let id = create(&t, &t.alice, EVERY_HOUR).await["id"]
        .as_i64()
        .unwrap();
    let path = |verb: &str| format!("/v1/schedules/{id}/{verb}");
    let r = call(&t.app, "POST", &path("pause"), Some(&t.ops), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = call(&t.app, "POST", &path("resume"), Some(&t.alice), None).await;
    problem(&r, StatusCode::FORBIDDEN, "ops paused this schedule");
    let r = call(&t.app, "POST", &path("resume"), Some(&t.ops), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Her own pause is hers to lift.
    let r = call(&t.app, "POST", &path("pause"), Some(&t.alice), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = call(&t.app, "POST", &path("resume"), Some(&t.alice), None).await;
    assert_eq!(r.json()["paused"], false, "{}", r.text);
}
