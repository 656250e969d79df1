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
    /// Scopes whose roles were assumed, and until when their credentials are good.
    held: Held,
    /// Where credentials come from instead of this process's own providers (a hunt runner
    /// asks its worker).
    source: Option<Arc<dyn CredentialSource>>,
}

/// Per scope, until when the role assumed for it is good (less the refresh margin).
type Held = Arc<Mutex<HashMap<String, chrono::DateTime<chrono::Utc>>>>;

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
    ) -> Result<Credentials, EngineError>;
}

/// An error already classified where it happened (a credential fetch in the worker), carried
/// through object_store's and DataFusion's errors to the engine's classification unchanged.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Classified(pub EngineError);

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
                source: Box::new(Classified(e)),
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

/// The lake options a scope's credential provider is built from (the rest configure stores).
const CREDENTIAL_OPTIONS: [&str; 7] = [
    "sts_allow_http",
    "metadata_endpoint",
    "region",
    "role_arn",
    "external_id",
    "sts_endpoint",
    "sts_scope",
];

/// The scope STS calls are charged to unless a lake names another (`sts_scope`): STS is its
/// own service, with its own quota.
pub const DEFAULT_STS_SCOPE: &str = "aws:sts";

/// Refresh assumed credentials this long before they expire (or at a fifth of a shorter
/// lifetime).
const ASSUMED_MARGIN: Duration = Duration::from_secs(300);

/// How long a failed AssumeRole answers the callers after it.
const FAILED_FOR: Duration = Duration::from_secs(1);

/// A lake's role: which role to assume, and where.
#[derive(Debug, Clone)]
struct RoleSettings {
    role_arn: String,
    external_id: Option<String>,
    endpoint: String,
    region: String,
    sts_scope: String,
}

/// Credentials of another account, by STS `AssumeRole` signed with this process's own
/// credentials and sent through the metered connector of the STS scope: every AssumeRole
/// attempt is a budgeted, counted provider call, and its answers move that scope's breaker.
/// Kept until shortly before they expire: one call per (scope, role) per credential lifetime
/// in a process, whatever the number of lakes, tasks or runners.
#[derive(Debug)]
struct AssumeRole {
    settings: RoleSettings,
    scope: String,
    held: Held,
    /// The last failure and when: repeated to callers for [`FAILED_FOR`].
    failed: Mutex<Option<(std::time::Instant, EngineError)>>,
    session: String,
    base: AwsCredentialProvider,
    client: HttpClient,
    cached: tokio::sync::Mutex<Option<Assumed>>,
}

/// Assumed credentials: when they expire, how long they were given for, and them.
type Assumed = (
    chrono::DateTime<chrono::Utc>,
    chrono::Duration,
    Arc<object_store::aws::AwsCredential>,
);

/// A role session name from a scope: letters, digits and `=,.@-` only, at most 64.
fn session_name(scope: &str) -> String {
    scope
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(56)
        .collect()
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of the first `<tag>…</tag>` of an XML answer.
fn xml_text<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    body.split_once(&format!("<{tag}>"))
        .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
        .map(|(v, _)| v.trim())
}

impl AssumeRole {
    /// The role a lake's options name, if any; a role without a valid ARN is the lake
    /// registration's mistake.
    fn settings(opts: &BTreeMap<String, String>) -> Result<Option<RoleSettings>, EngineError> {
        let Some(arn) = opts.get("role_arn") else {
            for k in ["external_id", "sts_endpoint", "sts_scope", "sts_allow_http"] {
                if opts.contains_key(k) {
                    return Err(EngineError::User(format!(
                        "s3 lake option {k} needs role_arn"
                    )));
                }
            }
            return Ok(None);
        };
        let valid = arn
            .strip_prefix("arn:aws:iam::")
            .and_then(|r| r.split_once(":role/"))
            .is_some_and(|(account, name)| {
                !account.is_empty()
                    && account.bytes().all(|b| b.is_ascii_digit())
                    && !name.is_empty()
            });
        if !valid {
            return Err(EngineError::User(format!(
                "role_arn {arn:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
            )));
        }
        let region = opts
            .get("region")
            .cloned()
            .unwrap_or_else(|| "us-east-1".into());
        // The worker's own credentials sign what goes there: https only (plain http only
        // when the lake says so, for a simulator), and a real URL.
        let plain_ok = opts.get("sts_allow_http").is_some_and(|v| v == "true");
        if let Some(e) = opts.get("sts_endpoint") {
            let ok = Url::parse(e).ok().is_some_and(|u| {
                u.host_str().is_some_and(|h| !h.is_empty())
                    && (u.scheme() == "https" || (u.scheme() == "http" && plain_ok))
            });
            if !ok {
                return Err(EngineError::User(format!(
                    "sts_endpoint {e:?} is not an https:// URL (http:// needs sts_allow_http=true)"
                )));
            }
        }
        Ok(Some(RoleSettings {
            role_arn: arn.clone(),
            external_id: opts.get("external_id").cloned(),
            endpoint: opts
                .get("sts_endpoint")
                .cloned()
                .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com")),
            region,
            sts_scope: opts
                .get("sts_scope")
                .cloned()
                .unwrap_or_else(|| DEFAULT_STS_SCOPE.into()),
        }))
    }

    async fn assume(
        &self,
    ) -> object_store::Result<(
        chrono::DateTime<chrono::Utc>,
        object_store::aws::AwsCredential,
    )> {
        let s = &self.settings;
        let generic = |m: String| object_store::Error::Generic {
            store: "STS",
            source: m.into(),
        };
        let base = self.base.get_credential().await?;
        let mut body = format!(
            "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName={}&DurationSeconds=3600",
            form_encode(&s.role_arn),
            form_encode(&self.session)
        );
        if let Some(id) = &s.external_id {
            body.push_str(&format!("&ExternalId={}", form_encode(id)));
        }
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(&s.endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(object_store::client::HttpRequestBody::from(body))
            .map_err(|e| generic(format!("sts endpoint {}: {e}", s.endpoint)))?;
        object_store::aws::AwsAuthorizer::new(&base, "sts", &s.region).authorize(&mut req, None);
        let resp = self
            .client
            .execute(req)
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "STS",
                source: Box::new(e),
            })?;
        let status = resp.status();
        let text = resp
            .into_body()
            .bytes()
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if !status.is_success() {
            // Classified here, from the status and code (never from text that holds account
            // numbers); STS's message names the worker's identity: logged, not shown.
            let code = s3_error_code(&text).to_string();
            let message = xml_text(&text, "Message").unwrap_or("");
            tracing::warn!(role = %s.role_arn, status = status.as_u16(), code, message, "assuming a role failed");
            let what = format!("AssumeRole {}: {status} {code}", s.role_arn);
            let class = match classify(status.as_u16(), &code) {
                CallClass::Throttled => EngineError::Throttled(what),
                CallClass::Frozen => EngineError::Frozen(what),
                CallClass::Transient => EngineError::Transient(what),
                CallClass::Ok | CallClass::Permanent => {
                    EngineError::User(format!("access denied: {what}"))
                }
            };
            return Err(object_store::Error::Generic {
                store: "STS",
                source: Box::new(Classified(class)),
            });
        }
        let field = |tag: &str| {
            xml_text(&text, tag).map(str::to_string).ok_or_else(|| {
                generic(format!("AssumeRole {}: no {tag} in the answer", s.role_arn))
            })
        };
        let expires = chrono::DateTime::parse_from_rfc3339(&field("Expiration")?)
            .map_err(|e| generic(format!("AssumeRole {}: expiration: {e}", s.role_arn)))?
            .with_timezone(&chrono::Utc);
        Ok((
            expires,
            object_store::aws::AwsCredential {
                key_id: field("AccessKeyId")?,
                secret_key: field("SecretAccessKey")?,
                token: Some(field("SessionToken")?),
            },
        ))
    }
}

#[async_trait]
impl CredentialProvider for AssumeRole {
    type Credential = object_store::aws::AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        // One caller assumes the role; the others wait for its answer.
        let mut cached = self.cached.lock().await;
        let now = chrono::Utc::now();
        if let Some((expires, life, c)) = cached.as_ref() {
            let margin = chrono::Duration::from_std(ASSUMED_MARGIN)
                .unwrap_or_default()
                .min(*life / 5);
            if *expires - now > margin {
                return Ok(c.clone());
            }
        }
        // One failure answers the callers that queued behind it for a moment, instead of
        // each making its own call.
        let recent = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FAILED_FOR)
            .map(|(_, e)| e.clone());
        if let Some(e) = recent {
            return Err(object_store::Error::Generic {
                store: "STS",
                source: Box::new(Classified(e)),
            });
        }
        let (expires, c) = match self.assume().await {
            Ok(v) => v,
            Err(e) => {
                let class = EngineError::from(e);
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((std::time::Instant::now(), class.clone()));
                // Credentials still good for a while keep the hunts going meanwhile.
                let floor = chrono::Duration::from_std(SOURCED_TTL * 2).unwrap_or_default();
                if let Some((expires, _, c)) = cached.as_ref()
                    && *expires - now > floor
                {
                    return Ok(c.clone());
                }
                return Err(object_store::Error::Generic {
                    store: "STS",
                    source: Box::new(Classified(class)),
                });
            }
        };
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = None;
        crate::metrics::ASSUME_ROLE.inc();
        let c = Arc::new(c);
        let life = expires - now;
        *cached = Some((expires, life, c.clone()));
        let margin = chrono::Duration::from_std(ASSUMED_MARGIN)
            .unwrap_or_default()
            .min(life / 5);
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.scope.clone(), expires - margin);
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
            // The role's settings: read by the credential provider, not the store.
            "role_arn" | "external_id" | "sts_endpoint" | "sts_scope" | "sts_allow_http" => b,
            other => {
                return Err(EngineError::User(format!(
                    "unknown s3 lake option {other:?}: use endpoint, region, allow_http, virtual_hosted_style_request, metadata_endpoint, role_arn, external_id, sts_endpoint or sts_scope"
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
            held: Held::default(),
            source: None,
        }
    }

    pub(crate) fn set_credential_source(&mut self, source: Arc<dyn CredentialSource>) {
        self.source = Some(source);
    }

    pub(crate) fn gate(&self) -> Arc<dyn CallGate> {
        self.gate.clone()
    }

    pub(crate) fn held_scopes(&self) -> Vec<String> {
        let now = chrono::Utc::now();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, good_until| *good_until > now);
        held.keys().cloned().collect()
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
            .filter(|(k, _)| CREDENTIAL_OPTIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let key = format!("{scope}\n{cred_opts:?}");
        if let Some(c) = self
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(c.clone());
        }
        let c: AwsCredentialProvider = if let Some(source) = &self.source {
            Arc::new(Sourced {
                source: source.clone(),
                scope: scope.to_string(),
                options: cred_opts,
                cached: tokio::sync::Mutex::new(None),
            })
        } else if let Some(role) = AssumeRole::settings(&cred_opts)? {
            // The role is assumed with this process's own credentials (environment or
            // instance metadata), fetched and metered under the STS scope.
            let base_opts: BTreeMap<String, String> = cred_opts
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "metadata_endpoint" | "region"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let base = self.credentials(&role.sts_scope, &base_opts)?;
            let client = MeteredConnector {
                scope: role.sts_scope.clone(),
                gate: self.gate.clone(),
            }
            .connect(
                &ClientOptions::new()
                    .with_allow_http(options.get("sts_allow_http").is_some_and(|v| v == "true")),
            )?;
            Arc::new(AssumeRole {
                settings: role,
                scope: scope.to_string(),
                held: self.held.clone(),
                failed: Mutex::new(None),
                session: format!("sluice-{}", session_name(scope)),
                base,
                client,
                cached: tokio::sync::Mutex::new(None),
            })
        } else {
            let holder = configure(self.builder(scope), options)?
                .with_bucket_name("sluice-credentials")
                .build()?;
            holder.credentials().clone()
        };
        let mut all = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all.entry(key).or_insert(c).clone())
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

#[cfg(test)]
mod role_tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_lakes_role_is_checked_and_defaults_to_the_regions_sts() {
        let arn = "arn:aws:iam::123456789012:role/hunter";
        let r = AssumeRole::settings(&opts(&[("role_arn", arn), ("region", "eu-west-1")]))
            .unwrap()
            .unwrap();
        assert_eq!(r.endpoint, "https://sts.eu-west-1.amazonaws.com");
        assert_eq!(
            (r.sts_scope.as_str(), r.external_id),
            (DEFAULT_STS_SCOPE, None)
        );
        assert!(
            AssumeRole::settings(&opts(&[("region", "x")]))
                .unwrap()
                .is_none()
        );
        // (options, what the error says)
        let bad = [
            (vec![("role_arn", "hunter")], "not a role ARN"),
            (
                vec![("role_arn", "arn:aws:iam::12x:role/h")],
                "not a role ARN",
            ),
            (
                vec![("role_arn", "arn:aws:iam::123:role/")],
                "not a role ARN",
            ),
            (vec![("role_arn", "arn:aws:iam:::role/h")], "not a role ARN"),
            (vec![("external_id", "e")], "external_id needs role_arn"),
            (vec![("sts_scope", "aws:sts")], "sts_scope needs role_arn"),
            (
                vec![("role_arn", arn), ("sts_endpoint", "sts.amazonaws.com")],
                "not an https:// URL",
            ),
            (
                vec![("role_arn", arn), ("sts_endpoint", "http://10.0.0.1/")],
                "needs sts_allow_http=true",
            ),
        ];
        for (o, says) in bad {
            let e = AssumeRole::settings(&opts(&o)).unwrap_err();
            assert!(
                matches!(&e, EngineError::User(m) if m.contains(says)),
                "{o:?}: {e:?}"
            );
        }
    }

    #[test]
    fn role_requests_and_answers_are_encoded_and_read() {
        assert_eq!(
            form_encode("arn:aws:iam::1:role/a b&c=d"),
            "arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%20b%26c%3Dd"
        );
        assert_eq!(session_name("aws:123/x y"), "aws-123-x-y");
        assert_eq!(session_name(&"s".repeat(100)).len(), 56);
        let answer = "<AssumeRoleResult><Credentials><AccessKeyId> AK </AccessKeyId>\
            <Expiration>2026-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleResult>";
        assert_eq!(xml_text(answer, "AccessKeyId"), Some("AK"));
        assert_eq!(xml_text(answer, "SessionToken"), None);
        assert_eq!(xml_text("<A>unclosed", "A"), None);
    }
}
