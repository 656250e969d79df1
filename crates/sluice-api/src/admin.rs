//! The operator endpoints under `/v1/admin`: what `sluice backlog`, `pause`, `resume`, `drain`,
//! `budget`, `breaker` and `quota` do (the CLI calls these, over HTTP or in its process). Reading needs
//! the operator role; changing anything needs admin.

use crate::jobs::{json, json_body, views};
use crate::wire::{
    BreakerView, BudgetRequest, BudgetView, DrainRequest, IntakeView, PauseRequest, PauseView,
    Paused, QuotaClearRequest, QuotaRequest, QuotaView, ResumeRequest,
};
use crate::{Api, ApiError, Caller};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use sluice_store::{
    BreakerOp, BreakerUpdateParams, BudgetSetParams, HandBack, IntakeCloseParams, PauseSetParams,
    PauseTarget, QuotaSetParams, QuotaTarget, Role, TaskHandBackParams,
};

fn at_least(caller: &Caller, role: Role) -> Result<(), ApiError> {
    if caller.role >= role {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "this needs the {} role; the token has {}",
            role.as_str(),
            caller.role.as_str()
        )))
    }
}

fn target(key: &str) -> Result<PauseTarget, ApiError> {
    PauseTarget::parse(key).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{key:?} is not a pause target: all, scope:S, owner:U or job:N"
        ))
    })
}

/// The backlog from the store's counters and the budgets, now.
async fn backlog_now(api: &Api) -> Result<crate::backlog::BacklogReport, ApiError> {
    Ok(crate::backlog::report(
        &api.store.task_backlog().await?,
        &api.store.budget_list().await?,
        chrono::Utc::now(),
    ))
}

fn path(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(s) = p.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(s)
}

#[utoipa::path(get, path = "/v1/admin/backlog", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Unfinished tasks per scope and drain time at the current budgets", body = crate::backlog::BacklogReport),
        crate::wire::Denied,
    ))]
pub(crate) async fn backlog(State(api): State<Api>, caller: Caller) -> Result<Response, ApiError> {
    at_least(&caller, Role::Operator)?;
    Ok(json(StatusCode::OK, &backlog_now(&api).await?))
}

#[utoipa::path(get, path = "/v1/admin/pauses", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Pauses in force", body = Vec<PauseView>),
        crate::wire::Denied,
    ))]
pub(crate) async fn pauses(State(api): State<Api>, caller: Caller) -> Result<Response, ApiError> {
    at_least(&caller, Role::Operator)?;
    let list = api.store.pause_list().await?;
    Ok(views(list.iter().map(PauseView::from)))
}

#[utoipa::path(post, path = "/v1/admin/pauses", tag = "admin", security(("bearer" = [])),
    request_body = PauseRequest,
    responses(
        (status = 201, description = "Paused", body = Paused),
        (status = 400, description = "Bad request", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Denied,
        crate::wire::BodyRefused,
    ))]
pub(crate) async fn pause(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    at_least(&caller, Role::Admin)?;
    let req: PauseRequest = json_body(&api, &headers, body)?;
    let p = api
        .store
        .pause_set(PauseSetParams {
            target: target(&req.target)?,
            reason: req.reason,
            by: caller.owner.clone(),
            now: chrono::Utc::now(),
        })
        .await?;
    // With `now`, the target's running tasks are handed back (no attempt spent) once the
    // pause is in force. On Postgres a claim that read the holds just before the pause
    // committed may still take a task of the target (pauses apply from the next claim).
    let handed_back = if req.now {
        api.store
            .task_hand_back(TaskHandBackParams {
                of: HandBack::Target(p.target.clone()),
                reason: format!("paused now: {}", p.reason),
                now: chrono::Utc::now(),
            })
            .await?
            .len()
    } else {
        0
    };
    Ok(json(
        StatusCode::CREATED,
        &Paused {
            pause: PauseView::from(&p),
            handed_back,
        },
    ))
}

#[utoipa::path(post, path = "/v1/admin/resume", tag = "admin", security(("bearer" = [])),
    request_body = ResumeRequest,
    responses(
        (status = 200, description = "Resumed", body = crate::wire::Resumed),
        (status = 400, description = "Bad request", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Denied,
        (status = 404, description = "The target is not paused", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::BodyRefused,
    ))]
pub(crate) async fn resume(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    at_least(&caller, Role::Admin)?;
    let req: ResumeRequest = json_body(&api, &headers, body)?;
    api.store
        .pause_clear(&target(&req.target)?, &caller.owner, chrono::Utc::now())
        .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"resumed": req.target}),
    ))
}

#[utoipa::path(get, path = "/v1/admin/budgets", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Budgets with their effective rate and tokens now", body = Vec<BudgetView>),
        crate::wire::Denied,
    ))]
pub(crate) async fn budgets(State(api): State<Api>, caller: Caller) -> Result<Response, ApiError> {
    at_least(&caller, Role::Operator)?;
    let now = chrono::Utc::now();
    let list: Vec<BudgetView> = api
        .store
        .budget_list()
        .await?
        .iter()
        .map(|b| BudgetView::new(b, now))
        .collect();
    Ok(json(StatusCode::OK, &list))
}

#[utoipa::path(put, path = "/v1/admin/budgets/{scope}", tag = "admin", security(("bearer" = [])),
    request_body = BudgetRequest,
    params(("scope" = String, Path, description = "Provider scope, e.g. aws:123456789012 or *")),
    responses(
        (status = 200, description = "The budget as set", body = BudgetView),
        (status = 400, description = "Bad request", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Denied,
        crate::wire::BodyRefused,
    ))]
pub(crate) async fn budget_set(
    State(api): State<Api>,
    caller: Caller,
    scope: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    at_least(&caller, Role::Admin)?;
    let scope = path(scope)?;
    let req: BudgetRequest = json_body(&api, &headers, body)?;
    let now = chrono::Utc::now();
    let b = api
        .store
        .budget_set(BudgetSetParams {
            scope,
            parent: req.parent,
            rate: req.rate,
            burst: req.burst,
            ramp: req
                .ramp
                .as_ref()
                .map(|r| r.config())
                .transpose()
                .map_err(ApiError::BadRequest)?,
            now,
        })
        .await?;
    Ok(json(StatusCode::OK, &BudgetView::new(&b, now)))
}

#[utoipa::path(get, path = "/v1/admin/breakers", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Breakers that ever opened", body = Vec<BreakerView>),
        crate::wire::Denied,
    ))]
pub(crate) async fn breakers(State(api): State<Api>, caller: Caller) -> Result<Response, ApiError> {
    at_least(&caller, Role::Operator)?;
    let list = api.store.breaker_list().await?;
    Ok(views(list.iter().map(BreakerView::from)))
}

#[utoipa::path(post, path = "/v1/admin/breakers/{scope}/reset", tag = "admin", security(("bearer" = [])),
    params(("scope" = String, Path, description = "Provider scope, e.g. aws:123456789012 or *")),
    responses(
        (status = 200, description = "Closed; the scope ramps up from slow start", body = BreakerView),
        (status = 400, description = "Bad request", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Denied,
        (status = 404, description = "The scope's breaker never opened", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn breaker_reset(
    State(api): State<Api>,
    caller: Caller,
    scope: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    at_least(&caller, Role::Admin)?;
    let scope = path(scope)?;
    if !api
        .store
        .breaker_list()
        .await?
        .iter()
        .any(|r| r.scope == scope)
    {
        return Err(ApiError::NotFound(format!(
            "scope {scope:?} has no breaker (it never opened)"
        )));
    }
    let u = api
        .store
        .breaker_update(BreakerUpdateParams {
            scope,
            op: BreakerOp::Reset {
                by: caller.owner.clone(),
            },
            cfg: sluice_core::BreakerConfig::default(),
            now: chrono::Utc::now(),
        })
        .await?;
    Ok(json(StatusCode::OK, &BreakerView::from(&u.row)))
}

async fn intake_view(api: &Api) -> Result<IntakeView, ApiError> {
    let hold = api.store.intake_get().await?;
    let r = backlog_now(api).await?;
    Ok(IntakeView {
        open: hold.is_none(),
        reason: hold.as_ref().map(|h| h.reason.clone()),
        by: hold.as_ref().map(|h| h.by.clone()),
        since: hold.map(|h| h.at),
        pending: r.pending,
        running: r.running,
        drained: r.pending == 0 && r.running == 0,
    })
}

#[utoipa::path(get, path = "/v1/admin/intake", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Intake and what is left of the backlog", body = IntakeView),
        crate::wire::Denied,
    ))]
pub(crate) async fn intake(State(api): State<Api>, caller: Caller) -> Result<Response, ApiError> {
    at_least(&caller, Role::Operator)?;
    Ok(json(StatusCode::OK, &intake_view(&api).await?))
}

/// Closes intake: new submissions get 503 on every process until `drain/end`; accepted jobs
/// go on. Poll `GET /v1/admin/intake` until `drained`.
#[utoipa::path(post, path = "/v1/admin/drain", tag = "admin", security(("bearer" = [])),
    request_body = DrainRequest,
    responses(
        (status = 200, description = "Intake closed", body = IntakeView),
        (status = 400, description = "Bad request", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Denied,
        crate::wire::BodyRefused,
    ))]
pub(crate) async fn drain(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    at_least(&caller, Role::Admin)?;
    let req: DrainRequest = json_body(&api, &headers, body)?;
    api.store
        .intake_close(IntakeCloseParams {
            reason: req.reason,
            by: caller.owner.clone(),
            now: chrono::Utc::now(),
        })
        .await?;
    Ok(json(StatusCode::OK, &intake_view(&api).await?))
}

#[utoipa::path(post, path = "/v1/admin/drain/end", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Intake open", body = IntakeView),
        (status = 400, description = "Bad request", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Denied,
        (status = 404, description = "No drain to end", body = crate::wire::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn drain_end(
    State(api): State<Api>,
    caller: Caller,
) -> Result<Response, ApiError> {
    at_least(&caller, Role::Admin)?;
    api.store
        .intake_open(&caller.owner, chrono::Utc::now())
        .await?;
    Ok(json(StatusCode::OK, &intake_view(&api).await?))
}

#[utoipa::path(get, path = "/v1/admin/quotas", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Owners' quotas of running tasks (owner null: the default)", body = Vec<QuotaView>),
        crate::wire::Denied,
    ))]
pub(crate) async fn quotas(State(api): State<Api>, caller: Caller) -> Result<Response, ApiError> {
    at_least(&caller, Role::Operator)?;
    let list = api.store.quota_list().await?;
    Ok(views(list.iter().map(QuotaView::from)))
}

#[utoipa::path(post, path = "/v1/admin/quotas", tag = "admin", security(("bearer" = [])),
    request_body = QuotaRequest,
    responses(
        (status = 200, description = "The quota as set: claims keep the owner within it from the next claim on", body = QuotaView),
        (status = 400, description = "Bad request", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Denied,
        crate::wire::BodyRefused,
    ))]
pub(crate) async fn quota_set(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    at_least(&caller, Role::Admin)?;
    let req: QuotaRequest = json_body(&api, &headers, body)?;
    let q = api
        .store
        .quota_set(QuotaSetParams {
            target: req.owner.into(),
            max_running: req.max_running,
            by: caller.owner.clone(),
            now: chrono::Utc::now(),
        })
        .await?;
    Ok(json(StatusCode::OK, &QuotaView::from(&q)))
}

#[utoipa::path(post, path = "/v1/admin/quotas/clear", tag = "admin", security(("bearer" = [])),
    request_body = QuotaClearRequest,
    responses(
        (status = 200, description = "The quota is removed"),
        (status = 400, description = "Bad request", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Denied,
        (status = 404, description = "No such quota", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::BodyRefused,
    ))]
pub(crate) async fn quota_clear(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    at_least(&caller, Role::Admin)?;
    let req: QuotaClearRequest = json_body(&api, &headers, body)?;
    let target: QuotaTarget = req.owner.clone().into();
    api.store
        .quota_clear(&target, &caller.owner, chrono::Utc::now())
        .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"cleared": req.owner}),
    ))
}

#[utoipa::path(post, path = "/v1/admin/purge", tag = "admin", security(("bearer" = [])),
    request_body = crate::wire::PurgeRequest,
    responses(
        (status = 200, description = "What was removed (at most 20 jobs a call; `more` when others may match)", body = crate::wire::Purged),
        (status = 400, description = "Neither or both of job and older_than_secs, or a bad value", body = crate::wire::Problem, content_type = "application/problem+json"),
        crate::wire::Denied,
        crate::wire::BodyRefused,
    ))]
pub(crate) async fn purge(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    at_least(&caller, Role::Admin)?;
    let req: crate::wire::PurgeRequest = json_body(&api, &headers, body)?;
    let select = match (req.job, req.older_than_secs) {
        (Some(id), None) if id > 0 => sluice_store::PurgeSelect::Job(sluice_core::JobId(id)),
        (None, Some(secs)) if (0..=sluice_store::MAX_RETENTION_SECS).contains(&secs) => {
            sluice_store::PurgeSelect::OlderThan { secs }
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of job (a job id) and older_than_secs (0 to 316224000)".into(),
            ));
        }
    };
    // Small enough to finish well within the request deadline.
    const LIMIT: u32 = 20;
    let purged = api
        .store
        .job_purge(sluice_store::JobPurgeParams {
            select,
            limit: LIMIT,
            by: caller.owner.clone(),
            now: chrono::Utc::now(),
        })
        .await?;
    let mut objects = 0;
    for j in &purged {
        // The rows are gone: an object that cannot be removed now is an orphan the leader's
        // sweep removes.
        match api.results.remove(j.id).await {
            Ok(n) => objects += n,
            Err(e) => {
                tracing::warn!(job = %j.id, error = %e, "removing a purged job's results failed")
            }
        }
    }
    Ok(json(
        StatusCode::OK,
        &crate::wire::Purged {
            more: purged.len() as u32 == LIMIT,
            tasks: purged.iter().map(|j| j.tasks).sum(),
            jobs: purged.iter().map(|j| j.id.0).collect(),
            objects,
        },
    ))
}
