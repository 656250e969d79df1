//! The researcher verbs (`submit`, `validate`, `status`, `jobs`, `cancel`, `results`) as calls
//! to the HTTP API: to a server with `--url` and `--token`, or, without `--url`, to the same
//! router run inside this process on `--database-url` as the local user. Either way the
//! request, its checks and its answer are the API's: one code path, one JSON shape.

use anyhow::{Context, Result, anyhow, bail};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_api::backlog::BacklogReport;
use sluice_api::wire::{
    BreakerView, BudgetRequest, BudgetView, CancelRequest, DrainRequest, IntakeView, JobPage,
    JobView, PauseRequest, PauseView, Paused, Problem, ResumeRequest, Resumed, SubmitRequest,
    Submitted, Validated,
};
use sluice_api::{Caller, ResultFormat};
use std::time::Duration;

/// Where requests go.
enum Transport {
    Http {
        http: reqwest::Client,
        /// `http://host:port`, without a trailing slash.
        base: String,
        token: Option<String>,
    },
    Local {
        router: axum::Router,
        caller: Caller,
    },
}

/// A client of the Sluice API.
pub struct Client {
    t: Transport,
}

/// An error answer of the API, as one line for the terminal.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub problem: Option<Problem>,
    pub retry_after: Option<String>,
    pub body: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(p) = &self.problem else {
            // Not a problem document (a proxy's page, say): its start, cut on a character.
            let body: String = self.body.trim().chars().take(200).collect();
            return write!(f, "the API answered {}: {body}", self.status);
        };
        match p.kind.rsplit(':').next().unwrap_or_default() {
            "not-found" => write!(f, "not found: {}", p.detail)?,
            "invalid-hunt" => {
                let n = p.errors.as_ref().map_or(0, Vec::len);
                write!(
                    f,
                    "the hunt is invalid ({n} problem{})",
                    if n == 1 { "" } else { "s" }
                )?
            }
            "unauthorized" => write!(
                f,
                "{} (give a token with --token or SLUICE_TOKEN)",
                p.detail
            )?,
            "forbidden" => write!(f, "{} (the token's role may not do this)", p.detail)?,
            _ => f.write_str(&p.detail)?,
        }
        if let Some(s) = &self.retry_after {
            write!(f, "; try again in {s}s")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

/// A page of results as the API sent it.
pub struct ResultsPage {
    pub body: Bytes,
    pub next_cursor: Option<usize>,
    pub partial: bool,
}

impl Client {
    /// A client of the server at `url` (`http://host:port`).
    pub fn remote(url: &str, token: Option<String>, timeout: Duration) -> Result<Client> {
        let base = url.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&base).with_context(|| format!("--url {url:?}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            bail!("--url {url:?} is not an http:// or https:// address of a sluice server");
        }
        if parsed.path() != "/" && !parsed.path().is_empty() || parsed.query().is_some() {
            bail!("--url {url:?} must be the server's address only, without a path or query");
        }
        if let Some(t) = &token
            && (t.is_empty() || !t.is_ascii() || t.chars().any(|c| c.is_ascii_control()))
        {
            bail!("--token is not a token from `sluice tokens create`");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            t: Transport::Http { http, base, token },
        })
    }

    /// A client of the API served inside this process on the database, as `caller`.
    pub fn local(api: sluice_api::Api, caller: Caller) -> Client {
        Client {
            t: Transport::Local {
                router: sluice_api::router(api),
                caller,
            },
        }
    }

    /// Sends the request; an answer other than 2xx becomes an [`ApiFailure`].
    async fn ok(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<(HeaderMap, Bytes)> {
        let mut b = Request::builder().method(method);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.unwrap_or_default();
        let (status, h, bytes) = match &self.t {
            Transport::Http { http, base, token } => {
                if let Some(t) = token {
                    b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
                }
                let req = b
                    .uri(format!("{base}{path}"))
                    .body(body)
                    .context("building the request")?;
                let req = reqwest::Request::try_from(req).context("building the request")?;
                let resp = http
                    .execute(req)
                    .await
                    .map_err(|e| anyhow!("cannot reach the sluice API at {base}: {e}"))?;
                let (status, headers) = (resp.status(), resp.headers().clone());
                let bytes = resp
                    .bytes()
                    .await
                    .with_context(|| format!("reading the answer of {base}{path}"))?;
                (status, headers, bytes)
            }
            Transport::Local { router, caller } => {
                use tower::ServiceExt;
                let mut req = b
                    .uri(path)
                    .body(axum::body::Body::from(body))
                    .context("building the request")?;
                req.extensions_mut().insert(caller.clone());
                let resp = router
                    .clone()
                    .oneshot(req)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                let (parts, body) = resp.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .context("reading the answer")?;
                (parts.status, parts.headers, bytes)
            }
        };
        if status.is_success() {
            return Ok((h, bytes));
        }
        Err(ApiFailure {
            status,
            problem: serde_json::from_slice(&bytes).ok(),
            retry_after: h
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
        .into())
    }

    /// The JSON answer of `method path` with `body`.
    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let (_, bytes) = self.ok(method, path, &[], body).await?;
        answer(path, &bytes)
    }

    /// `GET path`, its JSON answer.
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(Method::GET, path, None).await
    }

    /// `POST path` with `body` as JSON, its JSON answer.
    async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        let body = serde_json::to_vec(body)?;
        self.json(Method::POST, path, Some(body)).await
    }

    pub async fn submit(&self, req: &SubmitRequest, key: Option<&str>) -> Result<Submitted> {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let body = serde_json::to_vec(req)?;
        let (_, bytes) = self
            .ok(Method::POST, "/v1/jobs", &headers, Some(body))
            .await?;
        answer("/v1/jobs", &bytes)
    }

    pub async fn validate(&self, req: &SubmitRequest) -> Result<Validated> {
        self.post("/v1/validate", req).await
    }

    pub async fn job(&self, id: i64) -> Result<JobView> {
        self.get(&format!("/v1/jobs/{id}")).await
    }

    pub async fn cancel(&self, id: i64, reason: Option<&str>) -> Result<JobView> {
        let body = reason.map(|r| {
            serde_json::to_vec(&CancelRequest {
                reason: Some(r.into()),
            })
        });
        let path = format!("/v1/jobs/{id}/cancel");
        self.json(Method::POST, &path, body.transpose()?).await
    }

    pub async fn retry(&self, id: i64) -> Result<JobView> {
        self.json(Method::POST, &format!("/v1/jobs/{id}/retry"), None)
            .await
    }

    pub async fn schedule_create(
        &self,
        req: &sluice_api::schedules::ScheduleRequest,
    ) -> Result<sluice_api::schedules::ScheduleView> {
        self.post("/v1/schedules", req).await
    }

    pub async fn schedules(&self) -> Result<Vec<sluice_api::schedules::ScheduleView>> {
        self.get("/v1/schedules").await
    }

    pub async fn schedule(&self, id: i64) -> Result<sluice_api::schedules::ScheduleView> {
        self.get(&format!("/v1/schedules/{id}")).await
    }

    /// Pauses (`pause`) or resumes a schedule.
    pub async fn schedule_hold(
        &self,
        id: i64,
        pause: bool,
    ) -> Result<sluice_api::schedules::ScheduleView> {
        let verb = if pause { "pause" } else { "resume" };
        self.json(Method::POST, &format!("/v1/schedules/{id}/{verb}"), None)
            .await
    }

    pub async fn schedule_delete(&self, id: i64) -> Result<()> {
        self.ok(Method::DELETE, &format!("/v1/schedules/{id}"), &[], None)
            .await?;
        Ok(())
    }

    pub async fn set_priority(&self, id: i64, priority: i16) -> Result<JobView> {
        let body = sluice_api::wire::PriorityRequest { priority };
        self.post(&format!("/v1/jobs/{id}/priority"), &body).await
    }

    /// The key the caller's webhook deliveries are signed with: `{"owner", "key"}`.
    pub async fn webhook_key(&self) -> Result<serde_json::Value> {
        self.get("/v1/webhook-key").await
    }

    /// The lakes open to the caller.
    pub async fn lakes(&self) -> Result<Vec<sluice_api::wire::LakeView>> {
        self.get("/v1/lakes").await
    }

    /// Newest first, up to `limit`, following the API's cursor across pages.
    pub async fn jobs(
        &self,
        owner: Option<&str>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobView>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        while out.len() < limit as usize {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("limit", &(limit as usize - out.len()).min(1000).to_string());
            if let Some(o) = owner {
                q.append_pair("owner", o);
            }
            if let Some(s) = state {
                q.append_pair("state", s);
            }
            if let Some(c) = &cursor {
                q.append_pair("cursor", c);
            }
            let page: JobPage = self.get(&format!("/v1/jobs?{}", q.finish())).await?;
            out.extend(page.jobs);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(out)
    }

    /// Rows `offset..offset + limit` of the job's results so far, encoded as `format`.
    pub async fn results(
        &self,
        id: i64,
        format: ResultFormat,
        offset: usize,
        limit: usize,
    ) -> Result<ResultsPage> {
        let format = match format {
            ResultFormat::Json => "json",
            ResultFormat::Csv => "csv",
            ResultFormat::Parquet => "parquet",
        };
        let (h, body) = self
            .ok(
                Method::GET,
                &format!("/v1/jobs/{id}/results?format={format}&cursor={offset}&limit={limit}"),
                &[],
                None,
            )
            .await?;
        let text = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Ok(ResultsPage {
            body,
            next_cursor: text("x-next-cursor").and_then(|c| c.parse().ok()),
            partial: text("x-partial").is_some_and(|p| p == "true"),
        })
    }
}

/// The operator verbs: `/v1/admin` (reading needs the operator role, changing admin).
impl Client {
    pub async fn backlog(&self) -> Result<BacklogReport> {
        self.get("/v1/admin/backlog").await
    }

    pub async fn pauses(&self) -> Result<Vec<PauseView>> {
        self.get("/v1/admin/pauses").await
    }

    pub async fn pause(&self, req: &PauseRequest) -> Result<Paused> {
        self.post("/v1/admin/pauses", req).await
    }

    pub async fn resume(&self, target: &str) -> Result<Resumed> {
        let body = ResumeRequest {
            target: target.into(),
        };
        self.post("/v1/admin/resume", &body).await
    }

    pub async fn budgets(&self) -> Result<Vec<BudgetView>> {
        self.get("/v1/admin/budgets").await
    }

    pub async fn budget_set(&self, scope: &str, req: &BudgetRequest) -> Result<BudgetView> {
        let body = serde_json::to_vec(req)?;
        let path = format!("/v1/admin/budgets/{}", segment(scope));
        self.json(Method::PUT, &path, Some(body)).await
    }

    pub async fn breakers(&self) -> Result<Vec<BreakerView>> {
        self.get("/v1/admin/breakers").await
    }

    pub async fn breaker_reset(&self, scope: &str) -> Result<BreakerView> {
        let path = format!("/v1/admin/breakers/{}/reset", segment(scope));
        self.json(Method::POST, &path, None).await
    }

    pub async fn quotas(&self) -> Result<Vec<sluice_api::wire::QuotaView>> {
        self.get("/v1/admin/quotas").await
    }

    pub async fn quota_set(
        &self,
        req: &sluice_api::wire::QuotaRequest,
    ) -> Result<sluice_api::wire::QuotaView> {
        self.post("/v1/admin/quotas", req).await
    }

    pub async fn quota_clear(&self, owner: Option<&str>) -> Result<serde_json::Value> {
        let body = sluice_api::wire::QuotaClearRequest {
            owner: owner.map(str::to_string),
        };
        self.post("/v1/admin/quotas/clear", &body).await
    }

    pub async fn purge(
        &self,
        req: &sluice_api::wire::PurgeRequest,
    ) -> Result<sluice_api::wire::Purged> {
        self.post("/v1/admin/purge", req).await
    }

    pub async fn intake(&self) -> Result<IntakeView> {
        self.get("/v1/admin/intake").await
    }

    pub async fn drain(&self, reason: &str) -> Result<IntakeView> {
        let body = DrainRequest {
            reason: reason.into(),
        };
        self.post("/v1/admin/drain", &body).await
    }

    pub async fn drain_end(&self) -> Result<IntakeView> {
        self.json(Method::POST, "/v1/admin/drain/end", None).await
    }
}

/// An answer's JSON as `T`.
fn answer<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).with_context(|| format!("reading the answer of {path}"))
}

/// A path segment: unreserved characters and `:` as they are, the rest percent-encoded.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prints an invalid hunt's problems (each with its line and column) before the error ends
/// the command; with `json`, the API's problem document on stdout.
pub fn report_invalid(e: &anyhow::Error, json: bool) {
    let Some(ApiFailure {
        problem: Some(p), ..
    }) = e.downcast_ref::<ApiFailure>()
    else {
        return;
    };
    let Some(errors) = &p.errors else { return };
    if json {
        println!("{}", serde_json::json!({"valid": false, "errors": errors}));
    } else {
        for err in errors {
            eprintln!("  {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_error_page_is_cut_on_a_character_not_a_byte() {
        let f = ApiFailure {
            status: StatusCode::BAD_GATEWAY,
            problem: None,
            retry_after: None,
            // Byte 200 falls inside a character (a byte slice there panicked).
            body: format!("x{}", "é".repeat(300)),
        };
        let line = f.to_string();
        assert!(
            line.starts_with("the API answered 502 Bad Gateway: xéé"),
            "{line}"
        );
        assert_eq!(line.matches('é').count(), 199);
    }

    #[test]
    fn scopes_are_one_path_segment() {
        assert_eq!(segment("aws:123456789012"), "aws:123456789012");
        assert_eq!(segment("*"), "%2A");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
    }
}
