//! Sluice's HTTP API (axum): researchers submit hunts and poll them; bearer tokens stored
//! hashed, each with an owner and a role; errors as `application/problem+json`. Planning a hunt
//! (lake selection, SQL validation) needs the query engine, which this crate must not link: the
//! binary passes a [`Planner`].

mod admin;
pub mod auth;
pub mod backlog;
pub mod console;
pub mod error;
mod jobs;
mod lakes;
pub mod metrics;
pub mod schedules;
mod serve;
pub mod waits;
pub mod wire;

use async_trait::async_trait;
use axum::Router;
use axum::routing::get;
use sluice_store::{NewTask, Store, StoreError};
use std::sync::Arc;

pub use auth::{Caller, hash_token, new_token};
pub use error::ApiError;
pub use schedules::run_schedule;
pub use serve::{ServeConfig, serve};

/// Limits and intake policy of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Submissions get 503 with Retry-After while the open backlog has at least this many
    /// unfinished tasks (`None`: no limit). Accepted jobs are never affected.
    pub max_backlog_tasks: Option<i64>,
    /// Serve `/metrics` (no token) on the API's listener; off when the operator serves the
    /// metrics on a listener of their own.
    pub metrics: bool,
    /// The highest priority each role may give a job.
    pub priority: sluice_core::PriorityCeiling,
    /// The longest `GET /v1/jobs/{id}?wait=` holds a request: under the server's request
    /// timeout, so a long poll answers before the server gives up on it.
    pub max_wait: std::time::Duration,
    /// Which webhooks jobs may name and the secret owners' keys derive from; `None`: this
    /// deployment sends none, and a job naming one is refused.
    pub webhooks: Option<Webhooks>,
    /// Long polls (`?wait=`) held at once; past it a poll answers at once, so waits never take
    /// the connections other clients need.
    pub max_waiting: usize,
}

/// This deployment's webhooks: who may be called, and the secret deliveries are signed with.
#[derive(Debug, Clone)]
pub struct Webhooks {
    pub rules: sluice_core::WebhookRules,
    pub secret: sluice_core::WebhookSecret,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 1 << 20,
            max_backlog_tasks: None,
            metrics: true,
            priority: sluice_core::PriorityCeiling::default(),
            max_wait: std::time::Duration::from_secs(50),
            webhooks: None,
            max_waiting: 256,
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
    /// No registered lake open to the caller matches the selector.
    NoLakes,
    /// The hunt could not be checked now (the checks are busy): try again shortly.
    Busy(String),
    Store(StoreError),
}

/// Turns a submitted hunt (the JSON of `hunt` in `POST /v1/jobs`) into a job's tasks over the
/// lakes open to the caller (`access`), or says why not. Implemented by the binary with the
/// query engine.
#[async_trait]
pub trait Planner: Send + Sync + std::fmt::Debug {
    async fn plan(
        &self,
        hunt: &serde_json::Value,
        access: &sluice_store::LakeAccess,
    ) -> Result<Planned, Rejection>;
}

/// How a page of results is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResultFormat {
    Json,
    Csv,
    Parquet,
}

impl ResultFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ResultFormat::Json => "application/json",
            ResultFormat::Csv => "text/csv",
            ResultFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// One page of a job's result rows, encoded.
#[derive(Debug, Clone)]
pub struct ResultPage {
    pub body: Vec<u8>,
    /// Rows in this page.
    pub rows: usize,
    /// The page stopped short of `limit` to stay within its memory budget: more rows follow.
    pub truncated: bool,
}

/// Reads the committed results of a job's tasks (the binary implements it with the engine,
/// which this crate must not link).
#[async_trait]
pub trait ResultReader: Send + Sync + std::fmt::Debug {
    /// Rows `offset..offset + limit` of the job's results so far, in task order, from the
    /// lakes open to the caller (`access`) only.
    async fn page(
        &self,
        job: &sluice_store::Job,
        access: &sluice_store::LakeAccess,
        format: ResultFormat,
        offset: usize,
        limit: usize,
    ) -> Result<ResultPage, String>;

    /// Removes every result object of a purged job; returns how many.
    async fn remove(&self, job: sluice_core::JobId) -> Result<u64, String>;
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct Api {
    pub store: Arc<dyn Store>,
    pub planner: Arc<dyn Planner>,
    pub results: Arc<dyn ResultReader>,
    pub cfg: ApiConfig,
}

/// The OpenAPI document's fixed parts; the paths and schemas come from the handlers'
/// `#[utoipa::path]` annotations as they are routed (`router`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Sluice",
        description = "Submit hunts over thousands of data lakes and poll them; operate the backlog. Errors are application/problem+json.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Researchers: submit, validate, poll, cancel, re-prioritise"),
        (name = "lakes", description = "The lakes open to the token"),
        (name = "schedules", description = "Recurring hunts: a submission made again at every tick of an interval or a cron pattern"),
        (name = "admin", description = "Operators read, admins change: backlog, pauses, budgets, breakers, quotas, intake"),
        (name = "health", description = "Probes and metrics (no token)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        doc.components.get_or_insert_default().add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token from `sluice tokens create`"))
                    .build(),
            ),
        );
    }
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is alive", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// The API's routes and their OpenAPI document (the routes and the document come from the same
/// registrations, so they cannot drift apart).
pub fn routes() -> (Router<Api>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::priority))
        .routes(routes!(jobs::retry))
        .routes(routes!(jobs::webhook_key))
        .routes(routes!(lakes::list))
        .routes(routes!(jobs::events))
        .routes(routes!(schedules::create, schedules::list))
        .routes(routes!(schedules::get, schedules::delete))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(jobs::results))
        .routes(routes!(jobs::validate))
        .routes(routes!(admin::backlog))
        .routes(routes!(admin::pauses, admin::pause))
        .routes(routes!(admin::resume))
        .routes(routes!(admin::budgets))
        .routes(routes!(admin::budget_set))
        .routes(routes!(admin::breakers))
        .routes(routes!(admin::breaker_reset))
        .routes(routes!(admin::quotas, admin::quota_set))
        .routes(routes!(admin::quota_clear))
        .routes(routes!(admin::intake))
        .routes(routes!(admin::drain))
        .routes(routes!(admin::drain_end))
        .routes(routes!(admin::purge))
        .routes(routes!(healthz))
        .routes(routes!(jobs::ready))
        .split_for_parts();
    let mut doc = doc;
    ioc_needs_an_indicator(&mut doc);
    (router, doc)
}

/// The document says what the server checks: an IOC hunt carries at least one IP, hash or
/// domain (the derive cannot express it).
fn ioc_needs_an_indicator(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder};
    use utoipa::openapi::{RefOr, Schema};
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::OneOf(one))) = components.schemas.get_mut("Hunt") else {
        return;
    };
    for item in one.items.iter_mut() {
        let RefOr::T(Schema::Object(ioc)) = item else {
            continue;
        };
        if !ioc.properties.contains_key("ips") {
            continue;
        }
        let needs = |field: &str| -> RefOr<Schema> {
            ObjectBuilder::new()
                .required(field)
                .property(field, ArrayBuilder::new().min_items(Some(1)))
                .into()
        };
        let any = AnyOfBuilder::new()
            .item(needs("ips"))
            .item(needs("hashes"))
            .item(needs("domains"));
        *item = AllOfBuilder::new().item(ioc.clone()).item(any).into();
    }
}

/// The API's routes (the caller adds the listener).
pub fn router(api: Api) -> Router {
    metrics::init();
    let limit = api.cfg.max_body_bytes;
    let serve_metrics = api.cfg.metrics;
    let (routes, doc) = routes();
    let doc: Arc<str> = doc.to_pretty_json().unwrap_or_default().into();
    let routes = if serve_metrics {
        routes.route("/metrics", get(metrics::serve))
    } else {
        routes
    };
    routes
        .merge(console::routes())
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc.to_string(),
                    )
                }
            }),
        )
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn(console::no_store))
        .layer(axum::middleware::from_fn(metrics::observe))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(api)
}

#[cfg(test)]
mod tests {
    /// The document states the constraints the server checks, so generated clients and
    /// schema-driven fuzzers send what it accepts.
    #[test]
    fn the_document_states_the_real_constraints() {
        let doc = serde_json::to_value(super::routes().1).unwrap_or_default();
        let schemas = &doc["components"]["schemas"];
        let submit = &schemas["SubmitRequest"]["properties"];
        assert_eq!(
            (
                &submit["max_attempts"]["minimum"],
                &submit["max_attempts"]["maximum"]
            ),
            (&serde_json::json!(1), &serde_json::json!(20)),
            "{submit}"
        );
        assert_eq!(submit["priority"]["minimum"], -100, "{submit}");
        let hunt = schemas["Hunt"].to_string();
        assert!(
            hunt.contains("anyOf") && hunt.contains("\"minItems\":1"),
            "an IOC hunt needs an indicator: {hunt}"
        );
        let list = &doc["paths"]["/v1/jobs"]["get"]["parameters"];
        let cursor = list
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "cursor"))
            .map(|p| p["schema"]["pattern"].clone());
        assert_eq!(cursor, Some(serde_json::json!("^[1-9][0-9]{0,17}$")));
    }
}
