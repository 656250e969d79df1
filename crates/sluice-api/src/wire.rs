//! What goes over the wire: request and response bodies, separate from the store's rows so
//! that the schema changes only on purpose.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_store::{Event, Job};

/// `POST /v1/jobs`. Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The hunt: `{"kind": "ioc", "ips": [...], "lakes": {...}}` or
    /// `{"kind": "sql", "sql": "SELECT ...", "lakes": {...}}`.
    pub hunt: serde_json::Value,
    /// Higher runs first; -100 to 100, default 0.
    #[serde(default)]
    pub priority: i16,
    /// Attempts per lake before it counts as failed; 1 to 20, default 5.
    #[serde(default)]
    pub max_attempts: Option<i32>,
}

/// One problem with a submitted hunt; `line`/`column` start at 1 (0: no position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntError {
    pub line: u64,
    pub column: u64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `202 Accepted` of `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    pub job: i64,
    /// False when the Idempotency-Key was used before with the same body: the same job.
    pub created: bool,
    pub status_url: String,
    pub tasks: i64,
    pub est_provider_calls: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lakes {
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// A job as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

impl JobView {
    pub fn new(j: &Job, waiting: Vec<String>) -> JobView {
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
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            error: j.error.clone(),
        }
    }
}

/// `GET /v1/jobs`: newest first; pass `next_cursor` as `cursor` for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub task: Option<i64>,
    pub scope: Option<String>,
    pub kind: String,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    pub events: Vec<EventView>,
    pub next_cursor: Option<String>,
}
