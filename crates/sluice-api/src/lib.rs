//! Sluice's HTTP API (axum): researchers submit hunts and poll them; bearer tokens stored
//! hashed, each with an owner and a role; errors as `application/problem+json`. Planning a hunt
//! (lake selection, SQL validation) needs the query engine, which this crate must not link: the
//! binary passes a [`Planner`].

mod admin;
pub mod auth;
pub mod backlog;
pub mod error;
mod jobs;
pub mod metrics;
pub mod waits;
pub mod wire;

use async_trait::async_trait;
use axum::Router;
use axum::routing::{get, post};
use sluice_store::{NewTask, Store, StoreError};
use std::sync::Arc;

pub use auth::{Caller, hash_token, new_token};
pub use error::ApiError;

/// Limits and intake policy of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Submissions get 503 with Retry-After while the open backlog has at least this many
    /// unfinished tasks (`None`: no limit). Accepted jobs are never affected.
    pub max_backlog_tasks: Option<i64>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 1 << 20,
            max_backlog_tasks: None,
        }
    }
}

/// A hunt checked and planned: what the job row and its tasks will hold.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The hunt as stored on the job.
    pub spec: serde_json::Value,
    /// The SQL each task runs.
    pub sql: Option<String>,
    pub tasks: Vec<NewTask>,
    pub est_calls: i64,
}

/// Why a hunt was refused at submit.
#[derive(Debug)]
pub enum Rejection {
    /// Problems with the hunt, each with its position in the SQL when it has one.
    Invalid(Vec<wire::HuntError>),
    /// No registered lake matches the selector.
    NoLakes,
    Store(StoreError),
}

/// Turns a submitted hunt (the JSON of `hunt` in `POST /v1/jobs`) into a job's tasks, or
/// says why not. Implemented by the binary with the query engine.
#[async_trait]
pub trait Planner: Send + Sync + std::fmt::Debug {
    async fn plan(&self, hunt: &serde_json::Value) -> Result<Planned, Rejection>;
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct Api {
    pub store: Arc<dyn Store>,
    pub planner: Arc<dyn Planner>,
    pub cfg: ApiConfig,
}

/// The API's routes (the caller adds the listener).
pub fn router(api: Api) -> Router {
    metrics::init();
    let limit = api.cfg.max_body_bytes;
    Router::new()
        .route("/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/events", get(jobs::events))
        .route("/v1/validate", post(jobs::validate))
        .route("/v1/admin/backlog", get(admin::backlog))
        .route("/v1/admin/pauses", get(admin::pauses).post(admin::pause))
        .route("/v1/admin/resume", post(admin::resume))
        .route("/v1/admin/budgets", get(admin::budgets))
        .route(
            "/v1/admin/budgets/{scope}",
            axum::routing::put(admin::budget_set),
        )
        .route("/v1/admin/breakers", get(admin::breakers))
        .route(
            "/v1/admin/breakers/{scope}/reset",
            post(admin::breaker_reset),
        )
        .route("/v1/admin/intake", get(admin::intake))
        .route("/v1/admin/drain", post(admin::drain))
        .route("/v1/admin/drain/end", post(admin::drain_end))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(jobs::ready))
        .route("/metrics", get(metrics::serve))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn(metrics::observe))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(api)
}
