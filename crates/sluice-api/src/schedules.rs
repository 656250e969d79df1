//! Recurring hunts over the API: a schedule is a submission made again at every tick of an
//! interval or a cron pattern, by the elected scheduler, within the lakes of the token that
//! created it. [`run_schedule`] makes one tick's job; the binary hands it to the scheduler.

use crate::jobs::{check_request, job_id_of, json, json_body, plan};
use crate::wire::SubmitRequest;
use crate::{Api, ApiError, Caller};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_core::hunt::HuntSpec;
use sluice_core::schedule::{Cadence, check_range, hunt_at};
use sluice_core::{JobId, Role};
use sluice_store::{JobInsertParams, Schedule, ScheduleInsertParams, StoreError};
use utoipa::ToSchema;

/// `POST /v1/schedules`. Unknown fields are rejected.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// Unique among the owner's schedules: 1 to 100 letters, digits, `-`, `_` or `.`.
    #[schema(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9._-]+$")]
    pub name: String,
    /// Run every this many seconds (60 to a year), counted from now. Give this or `cron`.
    #[serde(default)]
    #[schema(minimum = 60, maximum = 31622400)]
    pub every_secs: Option<i64>,
    /// Or run at the minutes of a cron pattern, in UTC: `minute hour day-of-month month
    /// day-of-week`, e.g. `0 6 * * 1-5`.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub cron: Option<String>,
    /// Each run hunts over the `range_secs` before its tick: an IOC hunt's `since`/`until`
    /// are set to it; a SQL hunt names `{{since}}` and `{{until}}` where the bounds go.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31622400)]
    pub range_secs: Option<i64>,
    /// The submission each run makes, as `POST /v1/jobs` takes it.
    pub submit: SubmitRequest,
}

/// A schedule and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    pub id: i64,
    pub owner: String,
    pub name: String,
    pub every_secs: Option<i64>,
    pub cron: Option<String>,
    pub range_secs: Option<i64>,
    #[schema(value_type = SubmitRequest)]
    pub submit: serde_json::Value,
    /// When it runs next (while paused: when it would have).
    pub next_at: DateTime<Utc>,
    pub paused: bool,
    pub paused_at: Option<DateTime<Utc>>,
    pub paused_by: Option<String>,
    /// Jobs it has made.
    pub runs: i64,
    pub last_job: Option<i64>,
    pub last_run_at: Option<DateTime<Utc>>,
    /// Why its last tick made no job.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Schedule> for ScheduleView {
    fn from(s: Schedule) -> Self {
        ScheduleView {
            id: s.id,
            owner: s.owner,
            name: s.name,
            every_secs: s.every_secs,
            cron: s.cron,
            range_secs: s.range_secs,
            submit: s.request,
            next_at: s.next_at,
            paused: s.paused_at.is_some(),
            paused_at: s.paused_at,
            paused_by: s.paused_by,
            runs: s.runs,
            last_job: s.last_job_id.map(|j| j.0),
            last_run_at: s.last_run_at,
            last_error: s.last_error,
            created_at: s.created_at,
        }
    }
}

fn bad(e: String) -> ApiError {
    ApiError::BadRequest(e)
}

/// The schedule if the caller may see it: their own, or any for operators and admins.
async fn visible(
    api: &Api,
    caller: &Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Schedule, ApiError> {
    let id = job_id_of(id, "schedule")?;
    match api.store.schedule_get(id).await {
        Ok(s) if caller.may_see(&s.owner) => Ok(s),
        Ok(_) | Err(StoreError::NotFound(_)) => Err(ApiError::NotFound(format!("schedule {id}"))),
        Err(e) => Err(e.into()),
    }
}

/// The hunt a run for the ticks `first..=last` makes, as JSON for the planner.
fn run_hunt(
    request: &SubmitRequest,
    range_secs: Option<i64>,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
) -> Result<serde_json::Value, String> {
    if range_secs.is_none() {
        // The same hunt every time: the planner checks it.
        return Ok(request.hunt.clone());
    }
    let hunt: HuntSpec = serde_json::from_value(request.hunt.clone())
        .map_err(|e| format!("the hunt is not valid: {e}"))?;
    serde_json::to_value(hunt_at(&hunt, range_secs, first, last)?).map_err(|e| e.to_string())
}

#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", security(("bearer" = [])),
    request_body = ScheduleRequest,
    responses(
        (status = 201, description = "Scheduled: the first run is at `next_at`", body = ScheduleView),
        (status = 400, description = "Malformed request, bad interval, pattern or range, or a hunt that is not valid now", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 403, description = "A priority above the role's ceiling", body = crate::wire::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The owner has a schedule of that name", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::BodyRefused,
    ))]
pub(crate) async fn create(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ScheduleRequest = json_body(&api, &headers, body)?;
    check_request(&api, &caller, &req.submit)?;
    let now = Utc::now();
    let cadence = Cadence::new(req.every_secs, req.cron.as_deref(), now).map_err(bad)?;
    check_range(req.range_secs).map_err(bad)?;
    let next_at = cadence
        .next_after(now)
        .ok_or_else(|| bad("the schedule never runs".into()))?;
    // The hunt as its first run will make it, checked now: a mistake is found at once, not at
    // the first tick.
    let hunt = run_hunt(&req.submit, req.range_secs, next_at, next_at).map_err(bad)?;
    plan(&api, &caller, &hunt).await?;
    let request =
        serde_json::to_value(&req.submit).map_err(|e| ApiError::Internal(e.to_string()))?;
    let s = api
        .store
        .schedule_insert(ScheduleInsertParams {
            owner: caller.owner.clone(),
            name: req.name,
            request,
            every_secs: req.every_secs,
            cron: req.cron,
            range_secs: req.range_secs,
            lakes: caller.lakes.clone(),
            token_hash: caller.token.clone(),
            next_at,
            now,
        })
        .await?;
    Ok(json(StatusCode::CREATED, &ScheduleView::from(s)))
}

#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's schedules (operators and admins: everyone's), oldest first", body = Vec<ScheduleView>),
        crate::wire::Unauthorized,
    ))]
pub(crate) async fn list(State(api): State<Api>, caller: Caller) -> Result<Response, ApiError> {
    let owner = (caller.role < Role::Operator).then_some(caller.owner.as_str());
    let all = api.store.schedule_list(owner).await?;
    let views: Vec<ScheduleView> = all.into_iter().map(ScheduleView::from).collect();
    Ok(json(StatusCode::OK, &views))
}

#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Schedule id")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 400, description = "Bad id", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 404, description = "No such schedule, or another owner's", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get(
    State(api): State<Api>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let s = visible(&api, &caller, id).await?;
    Ok(json(StatusCode::OK, &ScheduleView::from(s)))
}

#[utoipa::path(post, path = "/v1/schedules/{id}/pause", tag = "schedules", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Schedule id")),
    responses(
        (status = 200, description = "Paused: no tick runs until it is resumed", body = ScheduleView),
        (status = 400, description = "Bad id", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 404, description = "No such schedule, or another owner's", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn pause(
    State(api): State<Api>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    hold(&api, &caller, id, true).await
}

#[utoipa::path(post, path = "/v1/schedules/{id}/resume", tag = "schedules", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Schedule id")),
    responses(
        (status = 200, description = "Running again from its next tick (ticks missed while paused are not made up)", body = ScheduleView),
        (status = 400, description = "Bad id, or a schedule that never runs again", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 403, description = "A researcher lifting a pause someone else made (an operator's)", body = crate::wire::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule, or another owner's", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn resume(
    State(api): State<Api>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    hold(&api, &caller, id, false).await
}

/// Pauses (`pause`) or resumes a schedule the caller may see; a resumed one runs from its
/// next tick after now.
async fn hold(
    api: &Api,
    caller: &Caller,
    id: Result<Path<String>, PathRejection>,
    pause: bool,
) -> Result<Response, ApiError> {
    let s = visible(api, caller, id).await?;
    let now = Utc::now();
    // An operator's pause (of an abusive schedule, say) is not the owner's to lift.
    if !pause
        && caller.role < Role::Operator
        && s.paused_by.as_deref().is_some_and(|by| by != caller.owner)
    {
        return Err(ApiError::Forbidden(format!(
            "{} paused this schedule: ask an operator to resume it",
            s.paused_by.as_deref().unwrap_or_default()
        )));
    }
    let s = if pause {
        api.store.schedule_pause(s.id, &caller.owner, now).await?
    } else {
        let cadence = Cadence::new(s.every_secs, s.cron.as_deref(), s.created_at).map_err(bad)?;
        let next_at = cadence
            .next_after(now)
            .ok_or_else(|| bad("the schedule never runs again".into()))?;
        api.store
            .schedule_resume(s.id, &caller.owner, next_at, now)
            .await?
    };
    Ok(json(StatusCode::OK, &ScheduleView::from(s)))
}

#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "schedules", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "Schedule id")),
    responses(
        (status = 204, description = "Removed (the jobs it made stay)"),
        (status = 400, description = "Bad id", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Unauthorized,
        (status = 403, description = "Another owner's schedule (admins may remove any)", body = crate::wire::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule, or another owner's", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn delete(
    State(api): State<Api>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let s = visible(&api, &caller, id).await?;
    if s.owner != caller.owner && caller.role < Role::Admin {
        return Err(ApiError::Forbidden(
            "only its owner or an admin removes a schedule (operators may pause it)".into(),
        ));
    }
    api.store
        .schedule_delete(s.id, &caller.owner, Utc::now())
        .await?;
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}

/// The idempotency key of a schedule's job for one tick (keys with this prefix are refused in
/// submissions, so no one else can take a tick's).
pub(crate) const KEY_PREFIX: &str = "schedule:";

/// Who paused a schedule whose token was revoked.
pub const REVOKED_BY: &str = "sluice (its token was revoked)";

/// Makes the job of schedule `s` for its ticks `first..=last` (one tick, or the ticks missed
/// while no scheduler ran), keyed by `last` so it is the same job however often it is asked,
/// as the schedule's owner with the role and lakes its token has now (those it was made with,
/// if no token made it). A revoked token pauses the schedule. The elected scheduler calls it
/// for each due tick.
pub async fn run_schedule(
    api: &Api,
    s: &Schedule,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
) -> Result<JobId, ApiError> {
    let req: SubmitRequest = serde_json::from_value(s.request.clone())
        .map_err(|e| bad(format!("the schedule's submission is not valid: {e}")))?;
    let caller = match &s.token_hash {
        Some(hash) => match api.store.token_find(hash).await {
            Ok(t) => Caller {
                owner: s.owner.clone(),
                role: t.role,
                lakes: t.lakes,
                token: Some(hash.clone()),
            },
            Err(StoreError::NotFound(_)) => {
                api.store
                    .schedule_pause(s.id, REVOKED_BY, Utc::now())
                    .await?;
                return Err(ApiError::Forbidden(
                    "the token that made this schedule was revoked: the schedule is paused (make it again with a live token)".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        },
        None => Caller {
            owner: s.owner.clone(),
            role: Role::Researcher,
            lakes: s.lakes.clone(),
            token: None,
        },
    };
    // No backlog cap here: it is the API's setting, which the scheduler process does not
    // hold (docs/operations.md, "Recurring hunts"); a closed intake refuses the insert.
    let hunt = run_hunt(&req, s.range_secs, first, last).map_err(bad)?;
    let planned = plan(api, &caller, &hunt).await?;
    let key = format!("{KEY_PREFIX}{}:{}", s.id, last.timestamp());
    let inserted = api
        .store
        .job_insert(JobInsertParams {
            owner: s.owner.clone(),
            idempotency_key: Some(key.clone()),
            spec: planned.spec,
            sql: planned.sql,
            priority: req.priority,
            max_attempts: req
                .max_attempts
                .unwrap_or(crate::jobs::DEFAULT_MAX_ATTEMPTS),
            retention_secs: req.retention_secs,
            webhook: req.webhook,
            tasks: planned.tasks,
            now: Utc::now(),
        })
        .await;
    match inserted {
        Ok(i) => Ok(i.job.id),
        // Another leader made this tick's job, planned a little differently (a lake added
        // since, another first tick): that job is the tick's.
        Err(StoreError::Conflict(_)) => Ok(api.store.job_find_by_key(&s.owner, &key).await?.id),
        Err(e) => Err(e.into()),
    }
}
