//! The console's session over HTTP: sign-in with a token, the cookie's flags, sign-out, and
//! the CSRF and origin checks on every change a session makes (every non-GET route of the
//! OpenAPI document, so a new route cannot be forgotten). The pages themselves are tested in
//! a real browser in sluice-cli.

use super::{NOOP3, Resp, T, call, problem, send, setup, submit};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use sluice_api::ApiConfig;

/// A request with the session cookie `cookie` (and `extra` headers) instead of a token.
async fn with_cookie(
    t: &T,
    method: &str,
    path: &str,
    cookie: &str,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "sluice.test")
        .header(header::COOKIE, format!("theme=dark; {cookie}"));
    if body.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    send(
        &t.app,
        b.body(Body::from(body.unwrap_or("").to_string())).unwrap(),
    )
    .await
}

/// Signs in with `token` (`extra` headers on the request); the response.
async fn sign_in(t: &T, token: &str, extra: &[(&str, &str)]) -> Resp {
    let mut b = Request::builder()
        .method("POST")
        .uri("/ui/session")
        .header(header::HOST, "sluice.test")
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let body = serde_json::json!({ "token": token }).to_string();
    send(&t.app, b.body(Body::from(body)).unwrap()).await
}

/// The `name=value` of the response's session cookie, and its attributes.
fn set_cookie(r: &Resp) -> (String, Vec<String>) {
    let raw = r.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    let mut parts = raw.split(';').map(|p| p.trim().to_string());
    let pair = parts.next().unwrap();
    (pair, parts.collect())
}

async fn signed_in(t: &T, token: &str) -> (String, String) {
    let r = sign_in(t, token, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (cookie, _) = set_cookie(&r);
    (cookie, r.json()["csrf"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_session_opens_with_a_token_and_ends_at_sign_out() {
    let t = setup(ApiConfig::default()).await;
    let r = sign_in(&t, &t.alice, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (cookie, attrs) = set_cookie(&r);
    let (name, id) = cookie.split_once('=').unwrap();
    assert_eq!(name, "sluice_session");
    assert!(
        id.len() == 64 && !t.alice.contains(id),
        "a new random id, not the token"
    );
    for want in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(attrs.iter().any(|a| a == want), "{want} not in {attrs:?}");
    }
    assert!(
        !attrs.iter().any(|a| a == "Secure"),
        "plain HTTP: {attrs:?}"
    );
    let me = r.json();
    assert_eq!(
        (&me["owner"], &me["role"]),
        (&"alice".into(), &"researcher".into())
    );
    let csrf = me["csrf"].as_str().unwrap().to_string();
    assert_eq!(csrf.len(), 64);
    assert!(!r.text.contains(&t.alice), "the token is never sent back");

    // Behind TLS (as the proxy says): Secure, and the __Host- prefix that demands it.
    let tls = [("x-forwarded-proto", "https")];
    let r = sign_in(&t, &t.alice, &tls).await;
    let (secure, attrs) = set_cookie(&r);
    assert!(secure.starts_with("__Host-sluice_session="), "{secure}");
    assert!(attrs.iter().any(|a| a == "Secure"), "{attrs:?}");
    let r = with_cookie(&t, "GET", "/v1/jobs", &secure, &tls, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = with_cookie(&t, "GET", "/", &secure, &tls, None).await;
    assert_eq!(
        r.headers[header::STRICT_TRANSPORT_SECURITY],
        "max-age=31536000"
    );
    // The same cookie over plain HTTP is no session.
    let r = with_cookie(&t, "GET", "/v1/jobs", &secure, &[], None).await;
    problem(&r, StatusCode::UNAUTHORIZED, "session has ended");

    // The cookie is a caller like a token: reads need nothing more.
    let job = submit(&t, &t.alice, NOOP3).await;
    let r = with_cookie(&t, "GET", &format!("/v1/jobs/{job}"), &cookie, &[], None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = with_cookie(&t, "GET", "/ui/session", &cookie, &[], None).await;
    assert_eq!(r.json()["owner"], "alice");

    // A change with the token, from this origin: done.
    let (cookie, csrf) = signed_in(&t, &t.alice).await;
    let ok = [
        ("x-csrf-token", csrf.as_str()),
        ("origin", "http://sluice.test"),
        ("sec-fetch-site", "same-origin"),
    ];
    let r = with_cookie(
        &t,
        "POST",
        &format!("/v1/jobs/{job}/cancel"),
        &cookie,
        &ok,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Sign-out is a change too; after it the cookie signs in no one.
    let r = with_cookie(&t, "DELETE", "/ui/session", &cookie, &[], None).await;
    problem(&r, StatusCode::FORBIDDEN, "X-CSRF-Token");
    let r = with_cookie(&t, "DELETE", "/ui/session", &cookie, &ok, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let (cleared, attrs) = set_cookie(&r);
    assert_eq!(cleared, "sluice_session=");
    assert!(attrs.iter().any(|a| a == "Max-Age=0"), "{attrs:?}");
    for path in ["/ui/session", "/v1/jobs"] {
        let r = with_cookie(&t, "GET", path, &cookie, &[], None).await;
        problem(&r, StatusCode::UNAUTHORIZED, "session has ended");
    }
    // A cookie nobody issued, shaped like one or not.
    let forged = format!("sluice_session={}", "ab".repeat(32));
    let r = with_cookie(&t, "GET", "/v1/jobs", &forged, &[], None).await;
    problem(&r, StatusCode::UNAUTHORIZED, "session has ended");
    let r = with_cookie(&t, "GET", "/v1/jobs", "sluice_session=<script>", &[], None).await;
    problem(&r, StatusCode::UNAUTHORIZED, "session has ended");
}

#[tokio::test]
async fn a_planted_or_second_cookie_signs_in_no_one() {
    let t = setup(ApiConfig::default()).await;
    let (mine, _) = signed_in(&t, &t.alice).await;
    let (theirs, _) = signed_in(&t, &t.bob).await;
    // Two session cookies (one planted by a sibling site): refused, not chosen between.
    let both = format!("{theirs}; {mine}");
    let r = with_cookie(&t, "GET", "/v1/jobs", &both, &[], None).await;
    problem(&r, StatusCode::UNAUTHORIZED, "session has ended");
    // Behind TLS the plain name is not the session's: a cookie set over plain HTTP is ignored.
    let tls = [("x-forwarded-proto", "https")];
    let r = with_cookie(&t, "GET", "/v1/jobs", &mine, &tls, None).await;
    problem(&r, StatusCode::UNAUTHORIZED, "session has ended");
    let secure = format!("__Host-{mine}");
    let r = with_cookie(&t, "GET", "/v1/jobs", &secure, &tls, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Signing in again ends the session the browser still holds.
    let r = {
        let mut b = Request::builder()
            .method("POST")
            .uri("/ui/session")
            .header(header::HOST, "sluice.test")
            .header(header::COOKIE, mine.clone())
            .header(header::CONTENT_TYPE, "application/json");
        b = b.header("sec-fetch-site", "same-origin");
        let body = serde_json::json!({ "token": t.alice }).to_string();
        send(&t.app, b.body(Body::from(body)).unwrap()).await
    };
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (renewed, _) = set_cookie(&r);
    let r = with_cookie(&t, "GET", "/v1/jobs", &mine, &[], None).await;
    problem(&r, StatusCode::UNAUTHORIZED, "session has ended");
    let r = with_cookie(&t, "GET", "/v1/jobs", &renewed, &[], None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn api_answers_are_never_cached_or_sniffed_and_result_files_are_downloads() {
    let t = setup(ApiConfig::default()).await;
    let job = submit(&t, &t.alice, NOOP3).await;
    for path in [
        "/v1/jobs".to_string(),
        format!("/v1/jobs/{job}"),
        "/healthz".into(),
        "/v1/nothing".into(),
    ] {
        let r = call(&t.app, "GET", &path, Some(&t.alice), None).await;
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store", "{path}");
        assert_eq!(
            r.headers[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "{path}"
        );
    }
    for (format, disposition) in [
        (
            "csv",
            Some(format!("attachment; filename=\"job-{job}.csv\"")),
        ),
        (
            "parquet",
            Some(format!("attachment; filename=\"job-{job}.parquet\"")),
        ),
        ("json", None),
    ] {
        let r = call(
            &t.app,
            "GET",
            &format!("/v1/jobs/{job}/results?format={format}"),
            Some(&t.alice),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            r.headers
                .get(header::CONTENT_DISPOSITION)
                .map(|v| v.to_str().unwrap().to_string()),
            disposition,
            "{format}"
        );
    }
}

#[tokio::test]
async fn a_revoked_token_ends_its_sessions() {
    let t = setup(ApiConfig::default()).await;
    let (token, id) = super::token(t.store.as_ref(), "carol", sluice_store::Role::Operator).await;
    let (cookie, _) = signed_in(&t, &token).await;
    let r = with_cookie(&t, "GET", "/v1/admin/backlog", &cookie, &[], None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    t.store.token_revoke(id, chrono::Utc::now()).await.unwrap();
    let r = with_cookie(&t, "GET", "/v1/admin/backlog", &cookie, &[], None).await;
    problem(&r, StatusCode::UNAUTHORIZED, "session has ended");
}

#[tokio::test]
async fn bad_sign_ins_get_a_problem_and_open_no_session() {
    let t = setup(ApiConfig::default()).await;
    // A refusal with its status and detail, and no cookie.
    let problem = |r: &Resp, status: StatusCode, has: &str| {
        problem(r, status, has);
        assert!(!r.headers.contains_key(header::SET_COOKIE), "{}", r.text);
    };
    let post = |body: &'static str, ct: &'static str, extra: Vec<(&'static str, &'static str)>| {
        let mut b = Request::builder()
            .method("POST")
            .uri("/ui/session")
            .header(header::HOST, "sluice.test")
            .header(header::CONTENT_TYPE, ct);
        for (k, v) in extra {
            b = b.header(k, v);
        }
        b.body(Body::from(body)).unwrap()
    };
    let unknown = format!("slc_{}", "0".repeat(64));
    let r = sign_in(&t, &unknown, &[]).await;
    problem(&r, StatusCode::UNAUTHORIZED, "unknown or revoked");
    let r = sign_in(&t, &t.revoked, &[]).await;
    problem(&r, StatusCode::UNAUTHORIZED, "unknown or revoked");
    for bad in ["", "slc_short", "Bearer x", "<script>alert(1)</script>"] {
        let r = sign_in(&t, bad, &[]).await;
        problem(&r, StatusCode::UNAUTHORIZED, "malformed");
    }
    for (body, status, has) in [
        ("{\"token\": ", StatusCode::BAD_REQUEST, "malformed JSON"),
        ("[]", StatusCode::BAD_REQUEST, "JSON object"),
        ("{}", StatusCode::BAD_REQUEST, "missing field `token`"),
        (
            "{\"token\": \"x\", \"role\": \"admin\"}",
            StatusCode::BAD_REQUEST,
            "unknown field `role`",
        ),
    ] {
        let r = send(&t.app, post(body, "application/json", vec![])).await;
        problem(&r, status, has);
    }
    // A form post (what a hostile page can send without asking) is not JSON.
    let r = send(
        &t.app,
        post("token=x", "application/x-www-form-urlencoded", vec![]),
    )
    .await;
    problem(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "");
    // Another site cannot sign a browser in (as the attacker).
    let r = sign_in(&t, &t.alice, &[("origin", "https://evil.example")]).await;
    problem(&r, StatusCode::FORBIDDEN, "another site");
    let r = sign_in(&t, &t.alice, &[("sec-fetch-site", "cross-site")]).await;
    problem(&r, StatusCode::FORBIDDEN, "another site");
}

/// Every route that changes something, from the OpenAPI document: `(method, path)` with its
/// parameters filled in.
fn changes(job: i64) -> Vec<(String, String)> {
    let doc = serde_json::to_value(sluice_api::routes().1).unwrap();
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if matches!(method.as_str(), "get" | "head" | "parameters") {
                continue;
            }
            let path = path
                .replace("{id}", &job.to_string())
                .replace("{scope}", "aws:1");
            out.push((method.to_uppercase(), path));
        }
    }
    // Sign-out, the one change outside the document.
    out.push(("DELETE".into(), "/ui/session".into()));
    out
}

#[tokio::test]
async fn every_change_by_a_session_needs_its_csrf_token_and_this_origin() {
    let t = setup(ApiConfig::default()).await;
    let job = submit(&t, &t.root, NOOP3).await;
    let (cookie, csrf) = signed_in(&t, &t.root).await;
    let routes = changes(job);
    assert!(routes.len() >= 15, "{routes:?}");
    let body = Some("{}");
    for (method, path) in &routes {
        for (extra, why) in [
            (vec![], "no token"),
            (vec![("x-csrf-token", "0".repeat(64))], "a wrong token"),
            (
                vec![("x-csrf-token", csrf[..63].to_string())],
                "a short token",
            ),
            (
                vec![
                    ("x-csrf-token", csrf.clone()),
                    ("origin", "https://evil.example".into()),
                ],
                "another origin",
            ),
            (
                vec![
                    ("x-csrf-token", csrf.clone()),
                    ("sec-fetch-site", "cross-site".into()),
                ],
                "a cross-site fetch",
            ),
        ] {
            let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = with_cookie(&t, method, path, &cookie, &extra, body).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{method} {path} with {why}: {}",
                r.text
            );
        }
    }
    // Nothing happened: the job is as it was.
    let r = call(
        &t.app,
        "GET",
        &format!("/v1/jobs/{job}"),
        Some(&t.root),
        None,
    )
    .await;
    assert_eq!(r.json()["state"], "queued", "{}", r.text);
    // With the token a change goes through (what it then says is the route's business).
    let r = with_cookie(
        &t,
        "POST",
        &format!("/v1/jobs/{job}/cancel"),
        &cookie,
        &[("x-csrf-token", &csrf)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // A bearer token needs no CSRF token: no browser sends it by itself.
    let r = call(
        &t.app,
        "POST",
        "/v1/admin/drain",
        Some(&t.root),
        Some(r#"{"reason": "x"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn console_pages_forbid_framing_foreign_scripts_and_caching() {
    let t = setup(ApiConfig::default()).await;
    for (path, ty) in [
        ("/", "text/html"),
        ("/signin", "text/html"),
        ("/hunt", "text/html"),
        ("/ops", "text/html"),
        ("/jobs/12", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = call(&t.app, "GET", path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let h = |k: header::HeaderName| r.headers[k].to_str().unwrap().to_string();
        assert!(h(header::CONTENT_TYPE).starts_with(ty), "{path}");
        let csp = h(header::CONTENT_SECURITY_POLICY);
        for want in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(want), "{path}: {want} not in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h(header::X_FRAME_OPTIONS), "DENY");
        assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(h(header::CACHE_CONTROL), "no-store");
        assert_eq!(h(header::REFERRER_POLICY), "no-referrer");
    }
    // A page the console does not have is the API's 404, not the shell.
    let r = call(&t.app, "GET", "/jobs/x/y", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The script puts data in the page as text only: no HTML parsing of strings, no eval.
    let js = call(&t.app, "GET", "/ui/app.js", None, None).await.text;
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "localStorage.set",
        "sessionStorage.set",
    ] {
        assert!(!js.contains(sink), "app.js uses {sink}");
    }
}
