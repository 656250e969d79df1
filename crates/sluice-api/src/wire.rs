//! What goes over the wire: request and response bodies, separate from the store's rows so
//! that the schema changes only on purpose.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_store::{BreakerRow, Budget, Event, Job, Pause};
use utoipa::ToSchema;

/// `POST /v1/jobs`. Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The hunt: `{"kind": "ioc", "ips": [...], "lakes": {...}}` or
    /// `{"kind": "sql", "sql": "SELECT ...", "lakes": {...}}`.
    #[schema(value_type = sluice_core::hunt::HuntSpec)]
    pub hunt: serde_json::Value,
    /// Higher runs first; -100 to 100, default 0.
    #[serde(default)]
    #[schema(minimum = -100, maximum = 100)]
    pub priority: i16,
    /// Attempts per lake before it counts as failed; 1 to 20, default 5.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: Option<i32>,
    /// How long the finished job (its results, lakes and timeline) is kept, in seconds; 0:
    /// kept until purged; default: the server's retention.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 316224000)]
    pub retention_secs: Option<i64>,
    /// Called each time the job ends: a POST of the job as it ended, signed with the server's
    /// webhook secret (`Sluice-Signature`), tried again with backoff until it answers 2xx.
    /// https (http only where the server allows it), a public address, no credentials.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub webhook: Option<String>,
}

pub use sluice_core::hunt::{HuntError, HuntSpec as Hunt, LakeSelector};

/// `202 Accepted` of `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    pub job: i64,
    /// False when the Idempotency-Key was used before with the same body: the same job.
    pub created: bool,
    pub status_url: String,
    pub tasks: i64,
    pub est_provider_calls: i64,
}

/// `POST /v1/validate`: the hunt is valid; what it would cost and how soon it could finish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Validated {
    pub valid: bool,
    pub tasks: i64,
    pub est_provider_calls: i64,
    /// Soonest it could finish at the current budgets with nothing else running (`None`: no
    /// budget bounds it).
    pub eta_alone_secs: Option<f64>,
    /// Soonest the whole backlog, this hunt included, drains at the current budgets.
    pub eta_with_backlog_secs: Option<f64>,
    /// False while a drain holds intake: a submit now would get 503.
    pub intake_open: bool,
    /// The selected lakes, one task each.
    pub lakes: Vec<String>,
    /// The SQL each task runs (an IOC hunt compiled).
    pub sql: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Lakes {
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// A job as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: i64,
    pub owner: String,
    /// queued, running, succeeded, partial, failed, cancelled.
    pub state: String,
    pub priority: i16,
    pub lakes: Lakes,
    pub rows_found: i64,
    /// Why unfinished lakes wait: pauses, open breakers, exhausted budgets (open jobs only).
    pub waiting: Vec<String>,
    /// Seconds until the last lake is done, at the pace the job's lakes have finished so far;
    /// `null` once it ended, until a first lake is done, and while a pause or breaker holds
    /// lakes (`waiting` says until when).
    pub eta_secs: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// Seconds the finished job is kept; 0: kept; `null`: the server's retention.
    pub retention_secs: Option<i64>,
    /// The host its webhook calls, if it names one (not the path: it often holds the
    /// receiver's secret).
    #[serde(default)]
    pub webhook_host: Option<String>,
}

impl JobView {
    pub fn new(j: &Job, waiting: Vec<String>, eta_secs: Option<f64>) -> JobView {
        JobView {
            id: j.id.0,
            owner: j.owner.clone(),
            state: j.state.as_str().to_string(),
            priority: j.priority,
            lakes: Lakes {
                total: j.counts.total,
                done: j.counts.done,
                failed: j.counts.failed,
                cancelled: j.counts.cancelled,
            },
            rows_found: j.rows_found,
            waiting,
            eta_secs,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            error: j.error.clone(),
            retention_secs: j.retention_secs,
            webhook_host: j.webhook.as_deref().map(sluice_core::webhook::host_of),
        }
    }
}

/// `GET /v1/jobs`: newest first; pass `next_cursor` as `cursor` for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub task: Option<i64>,
    pub scope: Option<String>,
    pub kind: String,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> EventView {
        EventView {
            id: e.id,
            at: e.at,
            task: e.task_id.map(|t| t.0),
            scope: e.scope.clone(),
            kind: e.kind.clone(),
            detail: e.detail.clone(),
        }
    }
}

/// `GET /v1/jobs/{id}/events`: oldest first; pass `next_cursor` as `cursor` to go on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    pub next_cursor: Option<String>,
}

/// A pause in force (`target`: `all`, `scope:S`, `owner:U` or `job:N`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PauseView {
    pub target: String,
    pub reason: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

impl From<&Pause> for PauseView {
    fn from(p: &Pause) -> PauseView {
        PauseView {
            target: p.target.key(),
            reason: p.reason.clone(),
            by: p.by.clone(),
            at: p.at,
        }
    }
}

/// `POST /v1/admin/pauses`. With `now`, the target's running tasks are handed back at once
/// (no attempt spent) instead of finishing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    pub target: String,
    pub reason: String,
    #[serde(default)]
    pub now: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Paused {
    pub pause: PauseView,
    /// Running tasks handed back (with `now`).
    pub handed_back: usize,
}

/// `POST /v1/admin/resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    pub target: String,
}

/// A scope's budget as stored, its adaptive rate now and its tokens now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetView {
    pub scope: String,
    pub parent: Option<String>,
    pub rate: f64,
    pub burst: f64,
    pub effective_rate: f64,
    pub tokens: f64,
    /// How much of the bucket is in use now: 0 idle (full), 1 saturated (empty). A scope
    /// that stays near 1 is held back by its budget.
    pub utilisation: f64,
    /// Claims prefer other scopes until then (a take came back short).
    pub dry_until: Option<DateTime<Utc>>,
    /// How the effective rate moves after a throttle or a breaker close.
    pub ramp: Ramp,
}

/// How a scope's effective rate moves: after a breaker closes or a pause lifts it restarts
/// at `start_fraction` of the rate and doubles every `interval_secs`; a throttle halves it
/// (at most once per interval, never below `min_fraction`), after which it grows by
/// `increase` of the rate per interval. In a request every field is optional (the default:
/// 2 s, 0.1, 0.02, 0.05); a change applies from the next adjustment on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.01, maximum = 3600)]
    pub interval_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub start_fraction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub min_fraction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub increase: Option<f64>,
}

impl Ramp {
    /// The configuration this asks for: the defaults where a field is missing, each bound
    /// checked.
    pub fn config(&self) -> Result<sluice_core::AdaptiveConfig, String> {
        let d = sluice_core::AdaptiveConfig::default();
        let interval = match self.interval_secs {
            None => d.interval,
            Some(v) if (0.01..=3600.0).contains(&v) => std::time::Duration::from_secs_f64(v),
            Some(v) => return Err(format!("ramp interval_secs must be 0.01 to 3600, got {v}")),
        };
        let c = sluice_core::AdaptiveConfig {
            interval,
            start_fraction: self.start_fraction.unwrap_or(d.start_fraction),
            min_fraction: self.min_fraction.unwrap_or(d.min_fraction),
            increase: self.increase.unwrap_or(d.increase),
        };
        c.validate()?;
        Ok(c)
    }
}

impl From<&sluice_core::AdaptiveConfig> for Ramp {
    fn from(c: &sluice_core::AdaptiveConfig) -> Self {
        Ramp {
            interval_secs: Some(c.interval.as_secs_f64()),
            start_fraction: Some(c.start_fraction),
            min_fraction: Some(c.min_fraction),
            increase: Some(c.increase),
        }
    }
}

impl BudgetView {
    pub fn new(b: &Budget, now: DateTime<Utc>) -> BudgetView {
        let tokens = b.tokens_at(now);
        BudgetView {
            scope: b.scope.clone(),
            parent: b.parent.clone(),
            rate: b.rate,
            burst: b.burst,
            effective_rate: b.effective_rate(now),
            tokens,
            utilisation: if b.burst > 0.0 {
                (1.0 - tokens / b.burst).clamp(0.0, 1.0)
            } else {
                1.0
            },
            dry_until: b.dry_until.filter(|t| *t > now),
            ramp: Ramp::from(&b.ramp),
        }
    }
}

/// `PUT /v1/admin/budgets/{scope}`: `parent` defaults to the root `*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetRequest {
    pub rate: f64,
    pub burst: f64,
    #[serde(default)]
    pub parent: Option<String>,
    /// How the effective rate moves; missing: the scope keeps its ramp (the defaults at
    /// first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<Ramp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BreakerView {
    pub scope: String,
    /// closed, open or half_open.
    pub state: String,
    /// The last opening was an account freeze.
    pub frozen: bool,
    pub failures: u32,
    pub opened_at: Option<DateTime<Utc>>,
    /// When an open breaker lets its probe go.
    pub probe_after: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl From<&BreakerRow> for BreakerView {
    fn from(r: &BreakerRow) -> BreakerView {
        let b = &r.breaker;
        BreakerView {
            scope: r.scope.clone(),
            state: b.state.as_str().to_string(),
            frozen: b.frozen,
            failures: b.failures,
            opened_at: b.opened_at,
            probe_after: b.probe_after,
            updated_at: r.updated_at,
        }
    }
}

/// `POST /v1/admin/purge`: remove finished jobs now, with their tasks, journal and results.
/// Exactly one of `job` (that finished job, whatever its retention) and `older_than_secs`
/// (finished jobs finished longer ago, but those kept with retention 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    #[serde(default)]
    #[schema(minimum = 1)]
    pub job: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 316224000)]
    pub older_than_secs: Option<i64>,
}

/// What a purge removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Purged {
    pub jobs: Vec<i64>,
    pub tasks: u64,
    pub objects: u64,
    /// More jobs match: purge again.
    pub more: bool,
}

/// `POST /v1/admin/drain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    pub reason: String,
}

/// Intake and what is left of the backlog: `drained` once nothing is pending or running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IntakeView {
    pub open: bool,
    pub reason: Option<String>,
    pub by: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub pending: i64,
    pub running: i64,
    pub drained: bool,
}

/// The answers of every route that needs a token (for the OpenAPI document).
#[derive(Debug, utoipa::IntoResponses)]
pub enum Unauthorized {
    #[response(
        status = 401,
        description = "No or unknown token",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
}

/// `POST /v1/jobs/{id}/priority`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityRequest {
    /// -100 to 100; researchers up to the server's ceiling for them (default 10).
    #[schema(minimum = -100, maximum = 100)]
    pub priority: i16,
}

/// A lake open to the token: what a hunt's selector matches on and its SQL reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LakeView {
    pub name: String,
    /// The provider account its calls are charged to.
    pub scope: String,
    pub tags: std::collections::BTreeMap<String, String>,
    /// Hive partition columns, in path order.
    pub partition_cols: Vec<String>,
    /// The Arrow schema of its files (without the partition columns).
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
}

impl From<&sluice_store::Lake> for LakeView {
    fn from(l: &sluice_store::Lake) -> LakeView {
        LakeView {
            name: l.name.clone(),
            scope: l.scope.clone(),
            tags: l.tags.clone(),
            partition_cols: l.partition_cols.clone(),
            schema: l.schema.clone(),
        }
    }
}

/// An owner's quota of running tasks: `owner` null is the default of every owner without
/// one of their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaView {
    pub owner: Option<String>,
    pub max_running: i64,
    pub by: String,
    pub at: DateTime<Utc>,
}

impl From<&sluice_store::Quota> for QuotaView {
    fn from(q: &sluice_store::Quota) -> QuotaView {
        QuotaView {
            owner: q.target.clone().into(),
            max_running: q.max_running,
            by: q.by.clone(),
            at: q.at,
        }
    }
}

/// `POST /v1/admin/quotas`: at most `max_running` tasks of `owner` (null: of every owner
/// without a quota of their own) run at once, on every worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaRequest {
    /// Required: an owner, or `null` for the default (so a forgotten field cannot set the
    /// default by accident).
    #[serde(deserialize_with = "present")]
    #[schema(required = true, min_length = 1, max_length = 200)]
    pub owner: Option<String>,
    #[schema(minimum = 0, maximum = 1000000)]
    pub max_running: i64,
}

/// `POST /v1/admin/quotas/clear`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaClearRequest {
    /// Required: an owner, or `null` for the default.
    #[serde(deserialize_with = "present")]
    #[schema(required = true, min_length = 1, max_length = 200)]
    pub owner: Option<String>,
}

/// An `Option` field that must be present (`null` allowed): serde's default for a missing
/// `Option` is `None`, which a custom deserializer turns off.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// The answers of a route that reads a JSON body, to a body it cannot read (for the OpenAPI
/// document).
#[derive(Debug, utoipa::IntoResponses)]
pub enum BodyRefused {
    #[response(
        status = 413,
        description = "Body over the limit",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    #[response(
        status = 415,
        description = "Not JSON",
        content_type = "application/problem+json"
    )]
    NotJson(Problem),
}

/// The answers of a route above the researcher role (for the OpenAPI document).
#[derive(Debug, utoipa::IntoResponses)]
pub enum Denied {
    #[response(
        status = 401,
        description = "No or unknown token",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    #[response(
        status = 403,
        description = "Role too low",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
}

/// Every error: RFC 9457 problem details (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `urn:sluice:problem:<kind>`: bad-request, invalid-hunt, unauthorized, forbidden,
    /// not-found, conflict, too-large, unsupported-media-type, busy, unavailable, internal.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// An invalid hunt's problems, each with its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<HuntError>>,
}

/// `POST /v1/jobs/{id}/cancel`: an optional body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why (kept in the job's timeline); 1 to 500 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 500)]
    pub reason: Option<String>,
}

/// `POST /v1/admin/resume`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Resumed {
    pub resumed: String,
}
