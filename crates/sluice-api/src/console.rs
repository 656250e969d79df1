//! The web console (docs/adr/0013-console.md): a few static pages and one script, embedded in
//! the binary and served at `/`, that use the same JSON API as every other client. A browser
//! signs in once with an API token; the server answers with a random session id in an
//! HttpOnly, SameSite=Strict cookie and keeps only its hash. Requests carrying the cookie are
//! callers like bearer requests, except that every change must also carry the session's CSRF
//! token in `X-CSRF-Token` and come from this origin.

use crate::auth::{Caller, hash_token, parse_token};
use crate::{Api, ApiError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sluice_store::{Role, SessionInsertParams, StoreError};

const SHELL: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");

/// The session cookie, over plain HTTP.
pub const COOKIE: &str = "sluice_session";
/// The session cookie behind TLS: the `__Host-` prefix makes browsers refuse it unless it is
/// Secure, host-only and for the whole site.
pub const SECURE_COOKIE: &str = "__Host-sluice_session";
/// The header every change made with a session repeats its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts from sign-in (it is not extended by use).
pub const SESSION_SECS: i64 = 12 * 3600;

/// What every console response carries: no script, style or connection but this origin's, no
/// framing, no sniffing, no referrer, nothing cached.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes: its pages (one shell, the script picks the page by path), its script
/// and style, and the session (sign in, who am I, sign out).
pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .route("/", get(shell))
        .route("/signin", get(shell))
        .route("/hunt", get(shell))
        .route("/ops", get(shell))
        .route("/jobs/{id}", get(shell))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
        .route("/ui/session", get(whoami).post(sign_in).delete(sign_out))
        .layer(axum::middleware::from_fn(guard_headers))
}

async fn guard_headers(req: Request, next: Next) -> Response {
    let tls = behind_tls(req.headers());
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Every answer of the API (which a browser's cookie may now have fetched): never cached by a
/// shared cache, never sniffed into another type.
pub(crate) async fn no_store(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    res
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn shell() -> Response {
    asset("text/html; charset=utf-8", SHELL)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// Who is signed in, and the token their changes repeat.
#[derive(Serialize)]
struct SessionView {
    owner: String,
    role: Role,
    csrf: String,
}

/// `POST /ui/session {"token": "slc_…"}`: opens a session for a live token.
async fn sign_in(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // A sign-in from another site would sign the victim's browser in as the attacker.
    same_origin(&headers)?;
    let req: SignIn = crate::jobs::json_body(&api, &headers, body)?;
    let token = parse_token(&req.token)?;
    let token_hash = hash_token(token);
    let found = match api.store.token_find(&token_hash).await {
        Ok(t) => t,
        Err(StoreError::NotFound(_)) => {
            return Err(ApiError::Unauthorized("unknown or revoked token".into()));
        }
        Err(e) => return Err(e.into()),
    };
    // A session the browser still holds ends here: signing in again never leaves an old
    // (perhaps stolen) id alive beside the new one.
    if let SessionCookie::Id(old) = cookie(&headers) {
        api.store.session_delete(&hash_token(old)).await?;
    }
    let id = hex::encode(rand::random::<[u8; 32]>());
    let csrf = hex::encode(rand::random::<[u8; 32]>());
    let now = chrono::Utc::now();
    api.store
        .session_insert(SessionInsertParams {
            hash: hash_token(&id),
            token_hash,
            csrf: csrf.clone(),
            now,
            expires_at: now + chrono::Duration::seconds(SESSION_SECS),
        })
        .await?;
    tracing::info!(owner = %found.owner, role = %found.role.as_str(), "console sign-in");
    let secure = behind_tls(&headers);
    let name = if secure { SECURE_COOKIE } else { COOKIE };
    let cookie = format!(
        "{name}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{}",
        if secure { "; Secure" } else { "" }
    );
    let view = SessionView {
        owner: found.owner,
        role: found.role,
        csrf,
    };
    let mut res = (StatusCode::OK, axum::Json(view)).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(res)
}

/// `GET /ui/session`: who the cookie signs in, and the CSRF token of the session.
async fn whoami(State(api): State<Api>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (session, caller) = session_caller(&api, &headers).await?;
    let view = SessionView {
        owner: caller.owner,
        role: caller.role,
        csrf: session.csrf,
    };
    Ok(axum::Json(view).into_response())
}

/// `DELETE /ui/session`: signs out (a change like any other: CSRF token and origin checked).
async fn sign_out(State(api): State<Api>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (session, _) = session_caller(&api, &headers).await?;
    check_change(&headers, &session.csrf)?;
    if let SessionCookie::Id(id) = cookie(&headers) {
        api.store.session_delete(&hash_token(id)).await?;
    }
    let secure = behind_tls(&headers);
    let name = if secure { SECURE_COOKIE } else { COOKIE };
    let clear = format!(
        "{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    );
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&clear).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(res)
}

/// Whether the browser reached us over TLS, as the reverse proxy in front says (a client that
/// sends this header over plain HTTP only makes its own cookie unusable there).
fn behind_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// What the request's session cookies say: none; one id (shaped like one); or a problem —
/// more than one, or one that is malformed or named for the other transport.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionCookie<'a> {
    None,
    Id(&'a str),
    Refused,
}

/// The session cookie of a request. Behind TLS only the `__Host-` name counts (a cookie that
/// a sibling subdomain or a plain-HTTP response planted cannot have it); over plain HTTP only
/// the plain one. Two session cookies are refused, not chosen between: a planted one could
/// come first.
pub(crate) fn cookie(headers: &HeaderMap) -> SessionCookie<'_> {
    let name = if behind_tls(headers) {
        SECURE_COOKIE
    } else {
        COOKIE
    };
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE || *k == SECURE_COOKIE);
    let Some((k, v)) = found.next() else {
        return SessionCookie::None;
    };
    let v = v.trim();
    if found.next().is_some()
        || k != name
        || v.len() != 64
        || !v.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return SessionCookie::Refused;
    }
    SessionCookie::Id(v)
}

/// The session the cookie names and the caller it signs in: 401 when there is none, it has
/// expired or its token was revoked.
async fn session_caller(
    api: &Api,
    headers: &HeaderMap,
) -> Result<(sluice_store::ConsoleSession, Caller), ApiError> {
    let ended = || ApiError::Unauthorized("not signed in, or the session has ended".into());
    let SessionCookie::Id(id) = cookie(headers) else {
        return Err(ended());
    };
    let session = match api
        .store
        .session_find(&hash_token(id), chrono::Utc::now())
        .await
    {
        Ok(s) => s,
        Err(StoreError::NotFound(_)) => return Err(ended()),
        Err(e) => return Err(e.into()),
    };
    let token = match api.store.token_find(&session.token_hash).await {
        Ok(t) => t,
        Err(StoreError::NotFound(_)) => return Err(ended()),
        Err(e) => return Err(e.into()),
    };
    let caller = Caller {
        owner: token.owner,
        role: token.role,
        lakes: token.lakes,
        token: Some(session.token_hash.clone()),
    };
    Ok((session, caller))
}

/// The caller a request's session cookie signs in; a change (any method but GET and HEAD)
/// must come from this origin and repeat the session's CSRF token.
pub(crate) async fn cookie_caller(
    api: &Api,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let (session, caller) = session_caller(api, headers).await?;
    if !matches!(*method, Method::GET | Method::HEAD) {
        check_change(headers, &session.csrf)?;
    }
    Ok(caller)
}

fn check_change(headers: &HeaderMap, csrf: &str) -> Result<(), ApiError> {
    same_origin(headers)?;
    let sent = headers
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !constant_time_eq(sent, csrf.as_bytes()) {
        return Err(ApiError::Forbidden(
            "a change made with a console session needs its X-CSRF-Token header".into(),
        ));
    }
    Ok(())
}

/// Refuses a request a browser says came from another site: `Sec-Fetch-Site` other than
/// same-origin (or none: typed by the user), or an `Origin` whose host is not ours.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let cross = || ApiError::Forbidden("requests from another site are refused".into());
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(cross());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).map(|h| h.as_bytes());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, h)| h.as_bytes());
        if origin_host.is_none() || origin_host != host {
            return Err(cross());
        }
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                *k,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn only_one_session_cookie_of_the_transports_name_counts() {
        let id = "ab".repeat(32);
        let check = |pairs: &[(&'static str, &str)], want: SessionCookie<'_>| {
            assert_eq!(cookie(&headers(pairs)), want, "{pairs:?}");
        };
        let plain = format!("a=1; sluice_session={id}; b=2");
        check(&[("cookie", &plain)], SessionCookie::Id(&id));
        check(&[("cookie", "theme=dark")], SessionCookie::None);
        check(&[], SessionCookie::None);
        check(
            &[("cookie", "sluice_session=short")],
            SessionCookie::Refused,
        );
        let bad = format!("sluice_session={}", "zz".repeat(32));
        check(&[("cookie", &bad)], SessionCookie::Refused);
        let other = format!("xsluice_session={id}");
        check(&[("cookie", &other)], SessionCookie::None);
        // Two session cookies (one may be planted): refused, whatever their order.
        let two = format!("sluice_session={id}; sluice_session={}", "cd".repeat(32));
        check(&[("cookie", &two)], SessionCookie::Refused);
        let one = format!("sluice_session={id}");
        check(
            &[("cookie", &one), ("cookie", &one)],
            SessionCookie::Refused,
        );
        // Behind TLS only the __Host- name, over plain HTTP only the plain one.
        let tls = ("x-forwarded-proto", "https");
        let host = format!("__Host-sluice_session={id}");
        check(&[tls, ("cookie", &host)], SessionCookie::Id(&id));
        check(&[tls, ("cookie", &one)], SessionCookie::Refused);
        let both = format!("{one}; {host}");
        check(&[tls, ("cookie", &both)], SessionCookie::Refused);
        check(&[("cookie", &host)], SessionCookie::Refused);
    }

    #[test]
    fn changes_need_this_origin_and_the_csrf_token() {
        let csrf = "c".repeat(64);
        let check = |pairs: &[(&'static str, &str)], ok: bool| {
            assert_eq!(
                check_change(&headers(pairs), &csrf).is_ok(),
                ok,
                "{pairs:?}"
            );
        };
        let host = ("host", "127.0.0.1:8080");
        check(&[host, (CSRF_HEADER, &csrf)], true);
        check(
            &[
                host,
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin"),
                (CSRF_HEADER, &csrf),
            ],
            true,
        );
        check(&[host], false);
        check(&[host, (CSRF_HEADER, &"c".repeat(63))], false);
        check(&[host, (CSRF_HEADER, &"d".repeat(64))], false);
        check(
            &[
                host,
                ("origin", "http://evil.example"),
                (CSRF_HEADER, &csrf),
            ],
            false,
        );
        check(&[host, ("origin", "null"), (CSRF_HEADER, &csrf)], false);
        check(
            &[host, ("sec-fetch-site", "cross-site"), (CSRF_HEADER, &csrf)],
            false,
        );
        check(
            &[host, ("sec-fetch-site", "same-site"), (CSRF_HEADER, &csrf)],
            false,
        );
    }
}
