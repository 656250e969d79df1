//! The job endpoints: submit, get, list, cancel, events; and readiness.

use crate::wire::{
    CancelRequest, EventPage, EventView, JobPage, JobView, PriorityRequest, SubmitRequest,
    Submitted, Validated,
};
use crate::{Api, ApiError, Caller, Rejection, waits};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sluice_core::{JobId, JobState};
use sluice_store::{
    EventListParams, Job, JobCancelParams, JobInsertParams, JobListParams, JobPriorityParams,
    JobRerunParams, StoreError,
};

pub(crate) const DEFAULT_MAX_ATTEMPTS: i32 = 5;

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(b) => (status, [(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => ApiError::Internal(format!("encoding the response: {e}")).into_response(),
    }
}

/// 200 with a JSON array of `items`.
pub(crate) fn views<T: serde::Serialize>(items: impl Iterator<Item = T>) -> Response {
    json(StatusCode::OK, &items.collect::<Vec<T>>())
}

fn job_id(p: Result<Path<String>, PathRejection>) -> Result<JobId, ApiError> {
    job_id_of(p, "job").map(JobId)
}

/// The positive integer id of a `what` in the path.
pub(crate) fn job_id_of(
    p: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<i64, ApiError> {
    let Path(raw) = p.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::BadRequest(format!("{raw:?} is not a {what} id (a positive integer)"))
    })
}

/// The job if the caller may see it; another owner's job is "not found" to a researcher.
async fn visible_job(api: &Api, caller: &Caller, id: JobId) -> Result<Job, ApiError> {
    match api.store.job_get(id).await {
        Ok(j) if caller.may_see(&j.owner) => Ok(j),
        Ok(_) | Err(StoreError::NotFound(_)) => Err(ApiError::NotFound(format!("job {id}"))),
        Err(e) => Err(e.into()),
    }
}

async fn view(api: &Api, j: &Job) -> Result<JobView, ApiError> {
    let waiting = if j.state.is_terminal() {
        Vec::new()
    } else {
        waits::wait_reasons(api.store.as_ref(), j).await?
    };
    let eta = waits::eta_secs(j, &waiting, chrono::Utc::now());
    let mut v = JobView::new(j, waiting.into_iter().map(|w| w.text).collect(), eta);
    // Once the job has ended (not on every poll of a running one: it reads a page of tasks).
    if v.error.is_none() && j.counts.failed > 0 && j.state.is_terminal() {
        v.error = failed_lakes(api, j).await?;
    }
    Ok(v)
}

/// Why a job's lakes failed, from the first failed task (of the first page of tasks): "lake
/// L: its error (and N more lakes failed)" — so a failed job says which limit a hunt hit
/// without a look at the journal.
async fn failed_lakes(api: &Api, j: &Job) -> Result<Option<String>, ApiError> {
    let tasks = api
        .store
        .task_list(sluice_store::TaskListParams {
            job_id: j.id,
            limit: 1000,
            after: None,
        })
        .await?;
    let more = |n: i64| match n {
        0 => String::new(),
        1 => " (and 1 more lake failed)".into(),
        n => format!(" (and {n} more lakes failed)"),
    };
    Ok(Some(
        match tasks
            .iter()
            .find(|t| t.state == sluice_core::TaskState::Failed)
        {
            Some(t) => format!(
                "{}: {}{}",
                t.lake,
                t.last_error.as_deref().unwrap_or("failed"),
                more(j.counts.failed - 1)
            ),
            None => format!(
                "{} lakes failed: `sluice explain {}` or GET /v1/jobs/{}/events says why",
                j.counts.failed, j.id, j.id
            ),
        },
    ))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
        })?;
    if k.starts_with(crate::schedules::KEY_PREFIX) {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key {:?} is reserved for recurring hunts' jobs",
            crate::schedules::KEY_PREFIX
        )));
    }
    Ok(Some(k.to_string()))
}

/// A JSON object body: within the size limit, sent as JSON, an object (serde would read an
/// array as the struct's fields in order), with the position of any syntax error.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    api: &Api,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(api.cfg.max_body_bytes)
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest(
            "malformed JSON: the body must be a JSON object".into(),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "malformed JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

/// A priority in range (400) that the caller's role may set (403).
fn check_priority(api: &Api, caller: &Caller, priority: i16) -> Result<(), ApiError> {
    let priority = i32::from(priority);
    let max = sluice_core::access::MAX_PRIORITY;
    if !(-max..=max).contains(&priority) {
        return Err(ApiError::BadRequest(format!(
            "priority must be -{max} to {max}, got {priority}"
        )));
    }
    api.cfg
        .priority
        .check(caller.role, priority)
        .map_err(ApiError::Forbidden)
}

/// The request's own limits; returns its max attempts.
pub(crate) fn check_request(
    api: &Api,
    caller: &Caller,
    req: &SubmitRequest,
) -> Result<i32, ApiError> {
    check_priority(api, caller, req.priority)?;
    let max_attempts = req.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=20).contains(&max_attempts) {
        return Err(ApiError::BadRequest(format!(
            "max_attempts must be 1 to 20, got {max_attempts}"
        )));
    }
    if let Some(url) = &req.webhook {
        webhooks(api)?
            .rules
            .check_url(url)
            .map_err(ApiError::BadRequest)?;
    }
    Ok(max_attempts)
}

/// This server's webhooks, or the answer to a caller who wants one where none are sent.
fn webhooks(api: &Api) -> Result<&crate::Webhooks, ApiError> {
    api.cfg.webhooks.as_ref().ok_or_else(|| {
        ApiError::BadRequest(
            "this server sends no webhooks (it has no --webhook-secret): poll GET /v1/jobs/{id}?wait=30s instead".into(),
        )
    })
}

/// 503 while the open backlog is at `--max-backlog-tasks`: new work waits (accepted jobs never do).
pub(crate) async fn check_backlog(api: &Api) -> Result<(), ApiError> {
    let Some(max) = api.cfg.max_backlog_tasks else {
        return Ok(());
    };
    let open: i64 = api
        .store
        .job_backlog()
        .await?
        .iter()
        .map(|b| b.open_tasks)
        .sum();
    if open >= max {
        return Err(ApiError::Busy {
            detail: format!(
                "the backlog holds {open} unfinished lakes (limit {max}): submissions resume as it drains"
            ),
            retry_after: 30,
        });
    }
    Ok(())
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookKey {
    /// Whose deliveries it verifies: the caller's.
    owner: String,
    /// The key (hex): `Sluice-Signature` is `t=<t>,v1=<hex HMAC-SHA256(key, "<t>.<Sluice-Delivery>." + raw body)>`.
    key: String,
}

#[utoipa::path(get, path = "/v1/webhook-key", tag = "jobs", security(("bearer" = [])),
    responses(
        (status = 200, description = "The key the caller's webhook deliveries are signed with (each owner has their own)", body = WebhookKey),
        crate::wire::Unauthorized,
        (status = 404, description = "This server sends no webhooks", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn webhook_key(
    State(api): State<Api>,
    caller: Caller,
) -> Result<Response, ApiError> {
    // No secret, no key: there is nothing at this path on this server.
    let key = webhooks(&api)
        .map_err(|_| {
            ApiError::NotFound(
                "a webhook key: this server sends no webhooks (it has no --webhook-secret)".into(),
            )
        })?
        .secret
        .owner_key(&caller.owner);
    Ok(json(
        StatusCode::OK,
        &WebhookKey {
            owner: caller.owner.clone(),
            key,
        },
    ))
}

pub(crate) async fn plan(
    api: &Api,
    caller: &Caller,
    hunt: &serde_json::Value,
) -> Result<crate::Planned, ApiError> {
    api.planner.plan(hunt, &caller.lakes).await.map_err(|r| match r {
        Rejection::Invalid(errors) => ApiError::InvalidHunt(errors),
        Rejection::NoLakes if caller.lakes.is_all() => {
            ApiError::BadRequest("no registered lake matches the selector".into())
        }
        Rejection::NoLakes => ApiError::BadRequest(format!(
            "no lake open to this token matches the selector (the token may hunt lakes tagged {}; GET /v1/lakes lists them)",
            caller.lakes
        )),
        Rejection::Busy(detail) => ApiError::Busy {
            detail,
            retry_after: 5,
        },
        Rejection::Store(e) => e.into(),
    })
}

/// `POST /v1/validate`: the submit's checks and plan without the job, with the calls it would
/// make and how soon it could finish at the current budgets.
#[utoipa::path(post, path = "/v1/validate", tag = "jobs", security(("bearer" = [])),
    request_body = SubmitRequest,
    responses(
        (status = 200, description = "The hunt is valid", body = Validated),
        (status = 400, description = "Malformed request or invalid hunt", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 403, description = "A priority above the role's ceiling", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::BodyRefused,
    ))]
pub(crate) async fn validate(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: SubmitRequest = json_body(&api, &headers, body)?;
    check_request(&api, &caller, &req)?;
    let planned = plan(&api, &caller, &req.hunt).await?;
    let now = chrono::Utc::now();
    let budgets = api.store.budget_list().await?;
    let mine = planned_backlog(&planned.tasks);
    let mut all = api.store.task_backlog().await?;
    all.counts.extend(mine.counts.iter().cloned());
    let eta = |b: &sluice_store::TaskBacklog| {
        crate::backlog::report(b, &budgets, now)
            .drain_secs
            .filter(|s| s.is_finite())
    };
    Ok(json(
        StatusCode::OK,
        &Validated {
            valid: true,
            tasks: planned.tasks.len() as i64,
            est_provider_calls: planned.est_calls,
            eta_alone_secs: eta(&mine),
            eta_with_backlog_secs: eta(&all),
            intake_open: api.store.intake_get().await?.is_none(),
            lakes: planned.tasks.iter().map(|t| t.lake.clone()).collect(),
            sql: planned.sql,
        },
    ))
}

/// A plan's tasks as pending counts per scope (the backlog they would add).
fn planned_backlog(tasks: &[sluice_store::NewTask]) -> sluice_store::TaskBacklog {
    let mut by: std::collections::BTreeMap<&str, (i64, i64)> = Default::default();
    for t in tasks {
        let e = by.entry(&t.scope).or_default();
        *e = (e.0 + 1, e.1 + i64::from(t.est_calls));
    }
    sluice_store::TaskBacklog {
        counts: by
            .into_iter()
            .map(|(scope, (tasks, est_calls))| sluice_store::TaskCount {
                scope: scope.to_string(),
                state: sluice_core::TaskState::Pending,
                tasks,
                est_calls,
            })
            .collect(),
        oldest_pending_at: None,
    }
}

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])),
    request_body = SubmitRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key and body: the same job; another body: 409")),
    responses(
        (status = 202, description = "Accepted: one task per selected lake", body = Submitted),
        (status = 400, description = "Malformed request or invalid hunt", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 403, description = "A priority above the role's ceiling", body = crate::wire::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Idempotency key used with another body", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::BodyRefused,
        (status = 503, description = "Intake closed (drain) or backlog over the limit: retry after Retry-After", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn submit(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: SubmitRequest = json_body(&api, &headers, body)?;
    let key = idempotency_key(&headers)?;
    let max_attempts = check_request(&api, &caller, &req)?;
    check_backlog(&api).await?;
    let planned = plan(&api, &caller, &req.hunt).await?;
    let inserted = api
        .store
        .job_insert(JobInsertParams {
            owner: caller.owner.clone(),
            idempotency_key: key,
            spec: planned.spec,
            sql: planned.sql,
            priority: req.priority,
            max_attempts,
            retention_secs: req.retention_secs,
            webhook: req.webhook.clone(),
            tasks: planned.tasks,
            now: chrono::Utc::now(),
        })
        .await?;
    let j = inserted.job;
    let url = format!("/v1/jobs/{}", j.id);
    let mut resp = json(
        StatusCode::ACCEPTED,
        &Submitted {
            job: j.id.0,
            created: inserted.created,
            status_url: url.clone(),
            tasks: j.counts.total,
            est_provider_calls: planned.est_calls,
        },
    );
    if let Ok(v) = header::HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GetQuery {
    wait: Option<String>,
}

/// A long poll counted against `ApiConfig::max_waiting` while it is held.
struct Waiting;

static WAITING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Waiting {
    fn hold(max: usize) -> Option<Waiting> {
        use std::sync::atomic::Ordering;
        let held = WAITING.fetch_add(1, Ordering::SeqCst);
        if held >= max {
            WAITING.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Waiting)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How often a long poll reads the job again.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// `?wait=`: seconds (`30`), or with a unit (`30s`, `500ms`, `1m`); a longer wait than `max`
/// is cut to it (a long poll may always answer early).
fn wait(raw: Option<&str>, max: std::time::Duration) -> Result<std::time::Duration, ApiError> {
    use std::time::Duration;
    let Some(raw) = raw else {
        return Ok(Duration::ZERO);
    };
    let bad = || {
        ApiError::BadRequest(format!(
            "wait {raw:?} is not a duration: seconds, or a number with ms, s or m (at most {}s)",
            max.as_secs()
        ))
    };
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    if digits.is_empty() {
        return Err(bad());
    }
    // All digits: too many for a u64 is simply more than `max`.
    let n: u64 = digits.parse().unwrap_or(u64::MAX);
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(bad()),
    };
    Ok(d.min(max))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "Job id"),
        ("wait" = Option<String>, Query, pattern = "^[0-9]+(ms|s|m)?$", description = "Long poll: answer as soon as the job's state or progress changes, or it has ended, or after this long (`30s`; cut to 80 % of the server's request timeout, 48s by default)"),
    ),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "Not a job id, or a bad wait", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 404, description = "No such job, or another owner's", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get(
    State(api): State<Api>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<GetQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let wait = wait(q.wait.as_deref(), api.cfg.max_wait)?;
    let mut j = visible_job(&api, &caller, id).await?;
    // Past the cap a poll answers at once: waits never take every connection.
    let held = (!wait.is_zero() && !j.state.is_terminal())
        .then(|| Waiting::hold(api.cfg.max_waiting))
        .flatten();
    if held.is_some() {
        // Polling the row is cheap (its primary key) and needs nothing of the workers.
        let deadline = tokio::time::Instant::now() + wait;
        let seen = (j.state, j.counts, j.rows_found);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + WAIT_POLL)).await;
            j = visible_job(&api, &caller, id).await?;
            if j.state.is_terminal() || (j.state, j.counts, j.rows_found) != seen {
                break;
            }
        }
    }
    Ok(json(StatusCode::OK, &view(&api, &j).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    state: Option<String>,
    owner: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

fn cursor(raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|c| {
        c.parse::<i64>()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| ApiError::BadRequest(format!("{c:?} is not a cursor this API gave out")))
    })
    .transpose()
}

fn limit(raw: Option<u32>) -> Result<u32, ApiError> {
    match raw.unwrap_or(50) {
        n @ 1..=1000 => Ok(n),
        n => Err(ApiError::BadRequest(format!(
            "limit must be 1 to 1000, got {n}"
        ))),
    }
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])),
    params(
        ("state" = Option<String>, Query, pattern = "^(queued|running|succeeded|partial|failed|cancelled)$", description = "queued, running, succeeded, partial, failed or cancelled"),
        ("owner" = Option<String>, Query, description = "Operators and admins: this owner's jobs"),
        ("cursor" = Option<String>, Query, pattern = "^[1-9][0-9]{0,17}$", description = "`next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 50"),
    ),
    responses(
        (status = 200, description = "The caller's jobs, newest first", body = JobPage),
        (status = 400, description = "Bad state, cursor or limit", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 403, description = "A researcher asking for another owner", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list(
    State(api): State<Api>,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let state = q
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "unknown state {s:?}: queued, running, succeeded, partial, failed or cancelled"
                ))
            })
        })
        .transpose()?;
    let owner = match (q.owner, caller.role >= sluice_store::Role::Operator) {
        (Some(o), true) => Some(o),
        (None, true) => None,
        (Some(o), false) if o != caller.owner => {
            return Err(ApiError::Forbidden(
                "researchers list their own jobs only".into(),
            ));
        }
        (_, false) => Some(caller.owner.clone()),
    };
    let limit = limit(q.limit)?;
    let jobs = api
        .store
        .job_list(JobListParams {
            owner,
            state,
            before: cursor(q.cursor.as_deref())?.map(JobId),
            limit,
        })
        .await?;
    let next_cursor = (jobs.len() == limit as usize)
        .then(|| jobs.last().map(|j| j.id.0.to_string()))
        .flatten();
    let mut views = Vec::with_capacity(jobs.len());
    for j in &jobs {
        // Listing does not explain waits or estimate (one query per job); GET the job.
        views.push(JobView::new(j, Vec::new(), None));
    }
    Ok(json(
        StatusCode::OK,
        &JobPage {
            jobs: views,
            next_cursor,
        },
    ))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Job id")),
    request_body(content = Option<crate::wire::CancelRequest>, description = "Optional: why"),
    responses(
        (status = 200, description = "Cancelled", body = JobView),
        (status = 400, description = "Not a job id, or a malformed body", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 404, description = "No such job, or another owner's", body = crate::wire::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already ended", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::BodyRefused,
    ))]
pub(crate) async fn cancel(
    State(api): State<Api>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    // No body, or a JSON object with an optional reason.
    let req: CancelRequest = match &body {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) || b.trim_ascii() == b"null" => {
            CancelRequest::default()
        }
        _ => json_body(&api, &headers, body)?,
    };
    let reason = match req.reason {
        Some(r) if r.trim().is_empty() || r.chars().count() > 500 => {
            return Err(ApiError::BadRequest(
                "reason must be 1 to 500 characters".into(),
            ));
        }
        Some(r) => r,
        None => "cancelled through the API".into(),
    };
    let j = visible_job(&api, &caller, id).await?;
    if j.state.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "job {} already ended ({})",
            j.id,
            j.state.as_str()
        )));
    }
    let j = api
        .store
        .job_cancel(JobCancelParams {
            id: j.id,
            by: caller.owner.clone(),
            reason: Some(reason),
            now: chrono::Utc::now(),
        })
        .await?;
    Ok(json(StatusCode::OK, &view(&api, &j).await?))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/priority", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Job id")),
    request_body = PriorityRequest,
    responses(
        (status = 200, description = "The job at its new priority (its unfinished lakes move with it)", body = JobView),
        (status = 400, description = "Not a job id, or a malformed body", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 403, description = "A priority above the role's ceiling", body = crate::wire::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job, or another owner's", body = crate::wire::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already ended", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::BodyRefused,
    ))]
pub(crate) async fn priority(
    State(api): State<Api>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    let req: PriorityRequest = json_body(&api, &headers, body)?;
    let j = visible_job(&api, &caller, id).await?;
    check_priority(&api, &caller, req.priority)?;
    let j = api
        .store
        .job_set_priority(JobPriorityParams {
            id: j.id,
            priority: i32::from(req.priority),
            by: caller.owner.clone(),
            now: chrono::Utc::now(),
        })
        .await?;
    Ok(json(StatusCode::OK, &view(&api, &j).await?))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Job id")),
    responses(
        (status = 200, description = "The job, running again for the lakes that failed or were cancelled (fresh attempts; the succeeded lakes and their results stay)", body = JobView),
        (status = 400, description = "Not a job id", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 404, description = "No such job, or another owner's", body = crate::wire::Problem, content_type = "application/problem+json"),
        (status = 403, description = "A researcher's job an operator cancelled", body = crate::wire::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Still open, or it succeeded: nothing to run again", body = crate::wire::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Intake closed (drain) or backlog over the limit: retry after Retry-After", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn retry(
    State(api): State<Api>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(id)?;
    let j = visible_job(&api, &caller, id).await?;
    // A researcher does not undo an operator's cancel (a runaway hunt stopped on purpose).
    let by_self = j.error.as_deref().is_some_and(|e| {
        e.strip_prefix("cancelled by ")
            .and_then(|rest| rest.strip_prefix(caller.owner.as_str()))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
    });
    if j.state == JobState::Cancelled && !by_self && caller.role < sluice_store::Role::Operator {
        return Err(ApiError::Forbidden(format!(
            "job {} was {}: an operator may run it again",
            j.id,
            j.error.as_deref().unwrap_or("cancelled")
        )));
    }
    check_backlog(&api).await?;
    let j = api
        .store
        .job_rerun(JobRerunParams {
            id: j.id,
            by: caller.owner.clone(),
            now: chrono::Utc::now(),
        })
        .await?;
    Ok(json(StatusCode::OK, &view(&api, &j).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResultsQuery {
    format: Option<crate::ResultFormat>,
    cursor: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/jobs/{id}/results", tag = "jobs", security(("bearer" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "Job id"),
        ("format" = inline(Option<crate::ResultFormat>), Query, description = "json (default), csv or parquet"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9]{1,18}$", description = "`X-Next-Cursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "Rows per page, 1 to 100000, default 1000"),
    ),
    responses(
        (status = 200, description = "A page of result rows, in task order. `X-Next-Cursor` while more rows may follow; `X-Partial: true` while the job runs (later pages may gain rows).",
            content(
                (Vec<Object> = "application/json"),
                (String = "text/csv"),
                (Vec<u8> = "application/vnd.apache.parquet"),
            ),
            headers(("X-Next-Cursor" = String), ("X-Partial" = String))),
        (status = 400, description = "Bad id, format, cursor or limit", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 404, description = "No such job, or another owner's", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn results(
    State(api): State<Api>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<ResultsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let j = visible_job(&api, &caller, job_id(id)?).await?;
    let limit = match q.limit.unwrap_or(1000) {
        n @ 1..=100_000 => n as usize,
        n => {
            return Err(ApiError::BadRequest(format!(
                "limit must be 1 to 100000, got {n}"
            )));
        }
    };
    let offset = match q.cursor.as_deref() {
        None => 0,
        Some(c) => c.parse::<usize>().map_err(|_| {
            ApiError::BadRequest(format!("{c:?} is not a cursor this API gave out"))
        })?,
    };
    let format = q.format.unwrap_or(crate::ResultFormat::Json);
    let page = api
        .results
        .page(&j, &caller.lakes, format, offset, limit)
        .await
        .map_err(|e| ApiError::Internal(format!("reading the results of job {}: {e}", j.id)))?;
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        page.body,
    )
        .into_response();
    let h = resp.headers_mut();
    if (page.rows == limit || (page.truncated && page.rows > 0))
        && let Ok(v) = header::HeaderValue::from_str(&(offset + page.rows).to_string())
    {
        h.insert("x-next-cursor", v);
    }
    if !j.state.is_terminal() {
        h.insert("x-partial", header::HeaderValue::from_static("true"));
    }
    // Rows are the lakes' data, which anyone may have written: a browser saves a CSV or
    // Parquet page, it never renders one.
    let ext = match format {
        crate::ResultFormat::Json => None,
        crate::ResultFormat::Csv => Some("csv"),
        crate::ResultFormat::Parquet => Some("parquet"),
    };
    if let Some(ext) = ext
        && let Ok(v) =
            header::HeaderValue::from_str(&format!("attachment; filename=\"job-{}.{ext}\"", j.id))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs", security(("bearer" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "Job id"),
        ("cursor" = Option<String>, Query, pattern = "^[1-9][0-9]{0,17}$", description = "`next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 50"),
    ),
    responses(
        (status = 200, description = "The job's journal, oldest first", body = EventPage),
        (status = 400, description = "Bad id, cursor or limit", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 404, description = "No such job, or another owner's", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn events(
    State(api): State<Api>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let j = visible_job(&api, &caller, job_id(id)?).await?;
    let limit = limit(q.limit)?;
    let events = api
        .store
        .event_list(EventListParams {
            job_id: Some(j.id),
            scope: None,
            after_id: cursor(q.cursor.as_deref())?,
            limit,
        })
        .await?;
    let next_cursor = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(json(
        StatusCode::OK,
        &EventPage {
            events: events.iter().map(EventView::from).collect(),
            next_cursor,
        },
    ))
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "The database answers and its schema is current", body = String),
        (status = 503, description = "Not ready: why", body = String),
    ))]
pub(crate) async fn ready(State(api): State<Api>) -> Response {
    match tokio::time::timeout(std::time::Duration::from_secs(5), api.store.ready()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database did not answer within 5s\n",
        )
            .into_response(),
    }
}
