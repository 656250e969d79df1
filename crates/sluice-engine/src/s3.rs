//! S3-compatible lakes, and the one layer every provider HTTP attempt passes.
//!
//! Options come from the lake row (`endpoint`, `region`, `allow_http`, …); credentials from the
//! environment (`AWS_ACCESS_KEY_ID`, …) or instance metadata — never from the registry.
//!
//! - **Metered transport**: every S3 store is built with a [`MeteredConnector`], an
//!   object_store `HttpConnector` whose client sees each HTTP attempt — object GETs, HEADs,
//!   LISTs, retries and credential fetches alike. Each attempt first passes the scope's
//!   [`CallGate`] (a budget token of the scope and its ancestors, the breaker's word), then
//!   its answer is classified (ok / throttled / frozen / transient / permanent) and reported.
//!   object_store's own retries are off (`max_retries: 0`): retries happen here, each one
//!   through the gate, so they are budgeted like any call.
//! - **One credential provider per scope**: lakes of one scope (one cloud account) share one
//!   provider and its cached credentials, so credentials are fetched once per account per
//!   credential lifetime — never per lake or task (DESIGN.md section 5).
//! - **One store per bucket and scope**, reused across tasks (one connection pool).

use crate::EngineError;
use async_trait::async_trait;
use object_store::aws::{AmazonS3Builder, AwsCredentialProvider};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService, ReqwestConnector,
};
use object_store::{ClientOptions, CredentialProvider, ObjectStore, RetryConfig};
use sluice_core::provider::{classify, s3_error_code};
use sluice_core::{CallClass, CallGate, Refusal};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

/// Retries of a throttled or transient attempt inside one object-store call, each through the
/// gate. More than that and the task is deferred instead (it will run again later).
const MAX_RETRIES: u32 = 2;

/// The gate's refusal, carried through object_store's and DataFusion's errors to the engine's
/// classification (found by walking `source()`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProviderRefusal(pub Refusal);

#[derive(Debug)]
pub(crate) struct MeteredConnector {
    scope: String,
    gate: Arc<dyn CallGate>,
}

impl HttpConnector for MeteredConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Metered {
            scope: self.scope.clone(),
            gate: self.gate.clone(),
            inner,
        }))
    }
}

#[derive(Debug)]
struct Metered {
    scope: String,
    gate: Arc<dyn CallGate>,
    inner: HttpClient,
}

fn rebuild(
    parts: &http::request::Parts,
    body: object_store::client::HttpRequestBody,
) -> HttpRequest {
    let mut req = http::Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

fn backoff(attempt: u32) -> Duration {
    // Full jitter over 100 ms · 2^attempt.
    let cap = 100u64 << attempt.min(5);
    Duration::from_millis(rand::random_range(0..=cap))
}

/// Reports an answer in a task of its own, for the same reason as [`admit`]: the report
/// writes the shared breaker in a transaction, and a transaction dropped half-way would hold
/// the breaker's row lock until its connection is next used.
async fn report(
    gate: &Arc<dyn CallGate>,
    scope: &str,
    permit: sluice_core::Permit,
    class: CallClass,
) {
    let (g, s) = (gate.clone(), scope.to_string());
    let _ = tokio::spawn(async move { g.report(&s, permit, class).await }).await;
}

/// One HTTP attempt: sent, its answer classified and reported to the gate. Returns the
/// answer (an error answer rebuilt with its body read) and its class.
async fn attempt(
    gate: Arc<dyn CallGate>,
    scope: String,
    inner: HttpClient,
    req: HttpRequest,
    permit: sluice_core::Permit,
) -> (Result<HttpResponse, HttpError>, CallClass) {
    let resp = match inner.execute(req).await {
        Ok(r) => r,
        Err(e) => {
            report(&gate, &scope, permit, CallClass::Transient).await;
            return (Err(e), CallClass::Transient);
        }
    };
    let status = resp.status().as_u16();
    if status < 400 {
        report(&gate, &scope, permit, CallClass::Ok).await;
        return (Ok(resp), CallClass::Ok);
    }
    // An error answer: read its (small) body to find the provider's error code.
    let (rparts, rbody) = resp.into_parts();
    let bytes = rbody.bytes().await.unwrap_or_default();
    let header_code = rparts
        .headers
        .get("x-amz-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = String::from_utf8_lossy(&bytes);
    let code = if header_code.is_empty() {
        s3_error_code(&text)
    } else {
        header_code.as_str()
    };
    let class = classify(status, code);
    report(&gate, &scope, permit, class).await;
    (
        Ok(http::Response::from_parts(
            rparts,
            HttpResponseBody::from(bytes),
        )),
        class,
    )
}

/// What the gate said to one attempt.
enum Admitted {
    Refused(Refusal),
    /// Send it (not a probe): the permit, and the request back.
    Go(sluice_core::Permit, HttpRequest),
    /// It was the breaker's probe, sent and answered already.
    Probed(Result<HttpResponse, HttpError>, CallClass),
}

#[async_trait]
impl HttpService for Metered {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let mut attempts = 0;
        loop {
            // The gate's answer and, when it makes this call the breaker's probe, the probe
            // itself run in a task of their own, to the end: DataFusion drops a plan's other
            // reads when one fails (in a half-open scope the probe's siblings are refused),
            // and a probe dropped unanswered would only pass to the next call, which the same
            // could happen to — the breaker would churn instead of learning the answer.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (gate, scope, inner) = (self.gate.clone(), self.scope.clone(), self.inner.clone());
            let req = rebuild(&parts, body.clone());
            tokio::spawn(async move {
                let admitted = match gate.admit(&scope).await {
                    Err(r) => Admitted::Refused(r),
                    Ok(permit) if permit.probe => {
                        let (answer, class) = attempt(gate, scope, inner, req, permit).await;
                        Admitted::Probed(answer, class)
                    }
                    Ok(permit) => Admitted::Go(permit, req),
                };
                let _ = tx.send(admitted);
            });
            let admitted = rx.await.unwrap_or_else(|_| {
                Admitted::Refused(Refusal::Unavailable("provider gate task ended".into()))
            });
            let (answer, class) = match admitted {
                Admitted::Refused(r) => {
                    return Err(HttpError::new(HttpErrorKind::Unknown, ProviderRefusal(r)));
                }
                Admitted::Probed(answer, class) => (answer, class),
                Admitted::Go(permit, req) => {
                    attempt(
                        self.gate.clone(),
                        self.scope.clone(),
                        self.inner.clone(),
                        req,
                        permit,
                    )
                    .await
                }
            };
            let retry = match &answer {
                Err(e) => matches!(
                    e.kind(),
                    HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Timeout
                ),
                Ok(_) => matches!(class, CallClass::Throttled | CallClass::Transient),
            };
            if retry && attempts < MAX_RETRIES {
                attempts += 1;
                tokio::time::sleep(backoff(attempts)).await;
                continue;
            }
            return answer;
        }
    }
}

/// The S3 stores of one worker: one per (scope, bucket, options), sharing one credential
/// provider per scope.
#[derive(Debug)]
pub(crate) struct S3Stores {
    gate: Arc<dyn CallGate>,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    credentials: Mutex<HashMap<String, AwsCredentialProvider>>,
    /// Where credentials come from instead of this process's own providers (a hunt runner
    /// asks its worker).
    source: Option<Arc<dyn CredentialSource>>,
}

/// A scope's credentials as they cross from a worker to its runners (a private pipe).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    pub key_id: String,
    pub secret_key: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Hands out a scope's current credentials (the worker's side of a runner's credential
/// provider).
#[async_trait]
pub trait CredentialSource: Send + Sync + std::fmt::Debug {
    async fn credentials(
        &self,
        scope: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Credentials, String>;
}

/// A credential provider that asks a [`CredentialSource`] and keeps the answer briefly: the
/// source keeps the real cache (and refreshes near expiry); this only spares a round trip per
/// request.
#[derive(Debug)]
struct Sourced {
    source: Arc<dyn CredentialSource>,
    scope: String,
    options: BTreeMap<String, String>,
    cached: tokio::sync::Mutex<Option<(std::time::Instant, Arc<object_store::aws::AwsCredential>)>>,
}

/// How long a runner reuses credentials before asking its worker again.
const SOURCED_TTL: Duration = Duration::from_secs(30);

#[async_trait]
impl CredentialProvider for Sourced {
    type Credential = object_store::aws::AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        let mut cached = self.cached.lock().await;
        if let Some((at, c)) = cached.as_ref()
            && at.elapsed() < SOURCED_TTL
        {
            return Ok(c.clone());
        }
        let c = self
            .source
            .credentials(&self.scope, &self.options)
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: e.into(),
            })?;
        let c = Arc::new(object_store::aws::AwsCredential {
            key_id: c.key_id,
            secret_key: c.secret_key,
            token: c.token,
        });
        *cached = Some((std::time::Instant::now(), c.clone()));
        Ok(c)
    }
}

/// Applies a lake's options to a builder.
fn configure(
    mut b: AmazonS3Builder,
    options: &BTreeMap<String, String>,
) -> Result<AmazonS3Builder, EngineError> {
    for (k, v) in options {
        b = match k.as_str() {
            "endpoint" => b.with_endpoint(v),
            "region" => b.with_region(v),
            "allow_http" => b.with_allow_http(v == "true"),
            "virtual_hosted_style_request" => b.with_virtual_hosted_style_request(v == "true"),
            "metadata_endpoint" => b.with_metadata_endpoint(v),
            other => {
                return Err(EngineError::User(format!(
                    "unknown s3 lake option {other:?}: use endpoint, region, allow_http, virtual_hosted_style_request or metadata_endpoint"
                )));
            }
        };
    }
    Ok(b)
}

impl S3Stores {
    pub(crate) fn new(gate: Arc<dyn CallGate>) -> Self {
        S3Stores {
            gate,
            stores: Mutex::new(HashMap::new()),
            credentials: Mutex::new(HashMap::new()),
            source: None,
        }
    }

    pub(crate) fn set_credential_source(&mut self, source: Arc<dyn CredentialSource>) {
        self.source = Some(source);
    }

    pub(crate) fn gate(&self) -> Arc<dyn CallGate> {
        self.gate.clone()
    }

    /// The scope's current credentials from its shared provider.
    pub(crate) async fn current_credentials(
        &self,
        scope: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Credentials, EngineError> {
        let provider = self.credentials(scope, options)?;
        let c = provider.get_credential().await?;
        Ok(Credentials {
            key_id: c.key_id.clone(),
            secret_key: c.secret_key.clone(),
            token: c.token.clone(),
        })
    }

    fn builder(&self, scope: &str) -> AmazonS3Builder {
        AmazonS3Builder::from_env()
            .with_http_connector(MeteredConnector {
                scope: scope.to_string(),
                gate: self.gate.clone(),
            })
            .with_retry(RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
    }

    /// The scope's credential provider: built once (from a store of the scope's first lake's
    /// credential options) and shared by every lake of the scope.
    fn credentials(
        &self,
        scope: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<AwsCredentialProvider, EngineError> {
        let cred_opts: BTreeMap<String, String> = options
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "metadata_endpoint" | "region"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let key = format!("{scope}\n{cred_opts:?}");
        let mut all = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = all.get(&key) {
            return Ok(c.clone());
        }
        if let Some(source) = &self.source {
            let c: AwsCredentialProvider = Arc::new(Sourced {
                source: source.clone(),
                scope: scope.to_string(),
                options: cred_opts,
                cached: tokio::sync::Mutex::new(None),
            });
            all.insert(key, c.clone());
            return Ok(c);
        }
        let holder = configure(self.builder(scope), options)?
            .with_bucket_name("sluice-credentials")
            .build()?;
        let c = holder.credentials().clone();
        all.insert(key, c.clone());
        Ok(c)
    }

    pub(crate) fn store(
        &self,
        url: &Url,
        scope: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Arc<dyn ObjectStore>, EngineError> {
        let bucket = url
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| EngineError::User(format!("s3 url {url} has no bucket")))?;
        let key = format!("{scope}\n{bucket}\n{options:?}");
        if let Some(s) = self
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(s.clone());
        }
        let credentials = self.credentials(scope, options)?;
        let store: Arc<dyn ObjectStore> = Arc::new(
            configure(self.builder(scope), options)?
                .with_bucket_name(bucket)
                .with_credentials(credentials)
                .build()?,
        );
        let mut all = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all.entry(key).or_insert(store).clone())
    }
}
