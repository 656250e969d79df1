//! The HTTP server: admission (quotas, throttling, freezes, faults) in front of s3s-fs, the
//! credential endpoint, the counters and the admin endpoints.

use crate::config::{Quota, SimConfig};
use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::Body;
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::{S3Service, S3ServiceBuilder};
use serde::Serialize;
use sluice_core::TokenBucket;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Aborts the connection (hyper closes it when the service fails).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Abort(String);

/// Requests one account (or the provider) received in one second, by how they were answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counts {
    pub total: u64,
    pub ok: u64,
    pub throttled: u64,
    pub frozen: u64,
    /// Of `total`, calls to the credential endpoint.
    pub credential: u64,
    /// Of `total`, STS AssumeRole calls made by the account (also counted in `credential`).
    #[serde(default)]
    pub assume_role: u64,
}

#[derive(Debug)]
struct Account {
    bucket: TokenBucket,
    freeze_after: chrono::Duration,
    freeze_throttles: usize,
    freeze_for: chrono::Duration,
    credential_ttl: u64,
    /// Recent throttled requests, within `freeze_after`.
    throttles: std::collections::VecDeque<DateTime<Utc>>,
    frozen_until: Option<DateTime<Utc>>,
    forced_throttle_until: Option<DateTime<Utc>>,
    drop_until: Option<DateTime<Utc>>,
    freezes: u32,
}

#[derive(Debug)]
struct State {
    cfg: SimConfig,
    provider: Option<TokenBucket>,
    accounts: HashMap<String, Account>,
    counts: BTreeMap<String, BTreeMap<i64, Counts>>,
    provider_counts: BTreeMap<i64, Counts>,
    latency: Duration,
}

/// What an account looks like from the admin endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AccountState {
    pub frozen_until: Option<DateTime<Utc>>,
    pub freezes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SimState {
    pub accounts: BTreeMap<String, AccountState>,
}

/// How a request is answered before S3 sees it.
enum Verdict {
    Pass,
    Throttle,
    Frozen,
    Drop,
}

fn chrono_secs(s: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((s * 1000.0).round() as i64)
}

impl State {
    fn new(cfg: SimConfig, now: DateTime<Utc>) -> Self {
        let bucket = |q: &Quota| TokenBucket::new(q.rate, q.burst, now);
        let accounts = cfg
            .accounts
            .iter()
            .map(|(name, a)| {
                (
                    name.clone(),
                    Account {
                        bucket: bucket(&a.quota()),
                        freeze_after: chrono_secs(a.freeze_after_secs),
                        freeze_throttles: a.freeze_after_throttles.map_or_else(
                            || ((a.rate * a.freeze_after_secs / 4.0) as usize).max(10),
                            |n| n.max(1) as usize,
                        ),
                        freeze_for: chrono_secs(a.freeze_for_secs),
                        credential_ttl: a.credential_ttl_secs,
                        throttles: std::collections::VecDeque::new(),
                        frozen_until: None,
                        forced_throttle_until: None,
                        drop_until: None,
                        freezes: 0,
                    },
                )
            })
            .collect();
        State {
            provider: cfg.provider.as_ref().map(bucket),
            cfg,
            accounts,
            counts: BTreeMap::new(),
            provider_counts: BTreeMap::new(),
            latency: Duration::ZERO,
        }
    }

    fn count(&mut self, account: Option<&str>, now: DateTime<Utc>, f: impl Fn(&mut Counts)) {
        let sec = now.timestamp();
        f(self.provider_counts.entry(sec).or_default());
        if let Some(a) = account {
            f(self
                .counts
                .entry(a.to_string())
                .or_default()
                .entry(sec)
                .or_default());
        }
    }

    /// Admission of one request of `account` (None: a bucket no account owns).
    fn admit(&mut self, account: Option<&str>, now: DateTime<Utc>) -> Verdict {
        if let Some(a) = account.and_then(|a| self.accounts.get(a)) {
            if a.drop_until.is_some_and(|t| now < t) {
                return Verdict::Drop;
            }
            if a.frozen_until.is_some_and(|t| now < t) {
                return Verdict::Frozen;
            }
            if a.forced_throttle_until.is_some_and(|t| now < t) {
                return Verdict::Throttle;
            }
        }
        if let Some(p) = &mut self.provider
            && !p.try_take(1, now)
        {
            return Verdict::Throttle;
        }
        let Some(a) = account.and_then(|a| self.accounts.get_mut(a)) else {
            return Verdict::Pass;
        };
        if a.bucket.try_take(1, now) {
            return Verdict::Pass;
        }
        // Over quota. An account that keeps pushing — `freeze_throttles` rejected requests
        // within `freeze_after` — is frozen, as the provider did.
        while a
            .throttles
            .front()
            .is_some_and(|t| now - *t > a.freeze_after)
        {
            a.throttles.pop_front();
        }
        a.throttles.push_back(now);
        if a.throttles.len() >= a.freeze_throttles {
            a.frozen_until = Some(now + a.freeze_for);
            a.freezes += 1;
            a.throttles.clear();
            tracing::warn!(account = account.unwrap_or(""), "sim: account frozen");
            return Verdict::Frozen;
        }
        Verdict::Throttle
    }

    fn snapshot(&self) -> SimState {
        SimState {
            accounts: self
                .accounts
                .iter()
                .map(|(n, a)| {
                    (
                        n.clone(),
                        AccountState {
                            frozen_until: a.frozen_until,
                            freezes: a.freezes,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// Accepts the keys the credential endpoint hands out.
#[derive(Debug)]
struct SimAuth(Vec<String>);

#[async_trait::async_trait]
impl S3Auth for SimAuth {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<SecretKey> {
        self.0
            .iter()
            .find(|a| crate::access_key(a) == access_key)
            .map(|a| SecretKey::from(crate::secret_key(a)))
            .ok_or_else(|| s3s::s3_error!(InvalidAccessKeyId))
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    s3: S3Service,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A configured simulator, not yet listening.
#[derive(Debug)]
pub struct Sim {
    shared: Arc<Shared>,
}

/// A running simulator. Dropping it does not stop it; call [`SimHandle::stop`].
#[derive(Debug, Clone)]
pub struct SimHandle {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl Sim {
    /// A simulator serving the buckets (sub-folders) of `dir`.
    pub fn new(cfg: SimConfig, dir: &Path) -> Result<Self, String> {
        cfg.check()?;
        let fs = s3s_fs::FileSystem::new(dir)
            .map_err(|e| format!("sim data folder {}: {e:?}", dir.display()))?;
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimAuth(cfg.accounts.keys().cloned().collect()));
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(cfg, Utc::now())),
            s3: b.build(),
        });
        Ok(Sim { shared })
    }

    /// Binds `listen` and serves until [`SimHandle::stop`].
    pub async fn start(self, listen: SocketAddr) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let handle = SimHandle {
            addr,
            shared: self.shared,
            cancel: cancel.clone(),
        };
        let shared = handle.shared.clone();
        tokio::spawn(async move {
            let builder = ConnBuilder::new(TokioExecutor::new());
            loop {
                let socket = tokio::select! {
                    () = cancel.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "sim: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = socket.set_nodelay(true);
                let shared = shared.clone();
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { serve(shared, req).await }
                });
                let conn = builder
                    .serve_connection(TokioIo::new(socket), service)
                    .into_owned();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = conn => {}
                        () = cancel.cancelled() => {}
                    }
                });
            }
        });
        Ok(handle)
    }
}

impl SimHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The metadata endpoint that hands out an account's credentials.
    pub fn metadata_endpoint(&self, account: &str) -> String {
        format!("{}/acct/{account}", self.url())
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Requests per second received by each account, and provider-wide (key `*`).
    pub fn counts(&self) -> BTreeMap<String, BTreeMap<i64, Counts>> {
        let s = self.shared.lock();
        let mut all = s.counts.clone();
        all.insert("*".into(), s.provider_counts.clone());
        all
    }

    pub fn state(&self) -> SimState {
        self.shared.lock().snapshot()
    }

    /// Freezes an account now for `secs` seconds.
    pub fn freeze(&self, account: &str, secs: f64) -> bool {
        self.with_account(account, |a, now| {
            a.frozen_until = Some(now + chrono_secs(secs));
            a.freezes += 1;
        })
    }

    pub fn unfreeze(&self, account: &str) -> bool {
        self.with_account(account, |a, _| {
            a.frozen_until = None;
            a.throttles.clear();
        })
    }

    /// Answers every request of the account with SlowDown for `secs` seconds.
    pub fn throttle(&self, account: &str, secs: f64) -> bool {
        self.with_account(account, |a, now| {
            a.forced_throttle_until = Some(now + chrono_secs(secs))
        })
    }

    /// Drops every connection that sends a request of the account for `secs` seconds.
    pub fn drop_connections(&self, account: &str, secs: f64) -> bool {
        self.with_account(account, |a, now| {
            a.drop_until = Some(now + chrono_secs(secs))
        })
    }

    /// Adds latency to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    fn with_account(&self, account: &str, f: impl FnOnce(&mut Account, DateTime<Utc>)) -> bool {
        let mut s = self.shared.lock();
        match s.accounts.get_mut(account) {
            Some(a) => {
                f(a, Utc::now());
                true
            }
            None => false,
        }
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Body::from(body.into()));
    *r.status_mut() = status;
    r
}

fn json(value: &impl Serialize) -> Response<Body> {
    let mut r = text(
        StatusCode::OK,
        serde_json::to_string(value).unwrap_or_default(),
    );
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// An S3 error answer (no body for HEAD, as S3 does).
fn s3_error(method: &Method, status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = if method == Method::HEAD {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>sluice-sim</RequestId></Error>"
        )
    };
    let mut r = text(status, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    // S3-compatible stores name the code in a header too (HEAD answers have no body).
    if let Ok(v) = hyper::header::HeaderValue::from_str(code) {
        r.headers_mut().insert("x-amz-error-code", v);
    }
    r
}

fn query_f64(req: &Request<Incoming>, key: &str) -> Option<f64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

async fn serve(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Abort> {
    let path = req.uri().path().to_string();
    if let Some(admin) = path.strip_prefix("/_sim/") {
        return Ok(admin_call(&shared, &req, admin));
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (account, credential, sts) = match segments.as_slice() {
        ["acct", account, "latest", ..] => (Some(account.to_string()), true, false),
        ["sts", account] if req.method() == Method::POST => (Some(account.to_string()), true, true),
        [bucket, ..] if !bucket.is_empty() => {
            let s = shared.lock();
            (s.cfg.account_of(bucket).map(str::to_string), false, false)
        }
        _ => (None, false, false),
    };
    let now = Utc::now();
    let (verdict, latency) = {
        let mut s = shared.lock();
        if credential
            && account
                .as_deref()
                .is_none_or(|a| !s.accounts.contains_key(a))
        {
            return Ok(text(StatusCode::NOT_FOUND, "no such account"));
        }
        let v = s.admit(account.as_deref(), now);
        s.count(account.as_deref(), now, |c| {
            c.total += 1;
            c.credential += u64::from(credential);
            c.assume_role += u64::from(sts);
            match v {
                Verdict::Pass => c.ok += 1,
                Verdict::Throttle => c.throttled += 1,
                Verdict::Frozen => c.frozen += 1,
                Verdict::Drop => {}
            }
        });
        (v, s.latency)
    };
    let method = req.method().clone();
    match verdict {
        Verdict::Drop => return Err(Abort("sim: connection dropped".into())),
        Verdict::Frozen if sts => {
            return Ok(sts_error(
                StatusCode::FORBIDDEN,
                "AccountProblem",
                "There is a problem with your AWS account that prevents the operation from completing successfully.",
            ));
        }
        Verdict::Throttle if sts => {
            return Ok(sts_error(
                StatusCode::BAD_REQUEST,
                "Throttling",
                "Rate exceeded",
            ));
        }
        Verdict::Frozen => {
            return Ok(s3_error(
                &method,
                StatusCode::FORBIDDEN,
                "AccountProblem",
                "There is a problem with your AWS account that prevents the operation from completing successfully.",
            ));
        }
        Verdict::Throttle => {
            return Ok(s3_error(
                &method,
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "Please reduce your request rate.",
            ));
        }
        Verdict::Pass => {}
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if sts {
        use http_body_util::BodyExt;
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Err(Abort(format!("sts: reading the request: {e}"))),
        };
        return Ok(assume_role(&shared, &body, now));
    }
    if credential {
        let account = account.unwrap_or_default();
        return Ok(credential_call(
            &shared,
            &method,
            &segments[3..],
            &account,
            now,
        ));
    }
    let resp = shared.s3.call(req.map(Body::from)).await;
    resp.map_err(|e| Abort(format!("s3: {e:?}")))
}

const ROLE: &str = "sluice-sim-role";

/// The instance-metadata credential flow (IMDSv2: token, role name, credentials).
fn credential_call(
    shared: &Shared,
    method: &Method,
    rest: &[&str],
    account: &str,
    now: DateTime<Utc>,
) -> Response<Body> {
    match (method, rest) {
        (&Method::PUT, ["api", "token"]) => text(StatusCode::OK, format!("sim-imds-{account}")),
        (&Method::GET, ["meta-data", "iam", "security-credentials", ""]) => {
            text(StatusCode::OK, ROLE)
        }
        (&Method::GET, ["meta-data", "iam", "security-credentials", role]) if *role == ROLE => {
            let ttl = shared
                .lock()
                .accounts
                .get(account)
                .map_or(3600, |a| a.credential_ttl);
            let expiration = now + chrono::Duration::seconds(ttl as i64);
            json(&serde_json::json!({
                "Code": "Success",
                "AccessKeyId": crate::access_key(account),
                "SecretAccessKey": crate::secret_key(account),
                "Token": format!("sim-session-{account}"),
                "Expiration": expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }))
        }
        _ => text(StatusCode::NOT_FOUND, "no such metadata path"),
    }
}

/// An STS error answer (`<ErrorResponse>`, as STS's query API sends them).
fn sts_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>sim</RequestId></ErrorResponse>"
    );
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/xml"),
    );
    r
}

/// `%XX` and `+` decoded (an `application/x-www-form-urlencoded` value).
fn form_decode(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// STS `AssumeRole` (query API, form body): credentials of the role's account, for its
/// credential lifetime, when the account exists and the external id matches its own.
fn assume_role(shared: &Shared, body: &[u8], now: DateTime<Utc>) -> Response<Body> {
    let text = String::from_utf8_lossy(body);
    let form: HashMap<String, String> = text
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect();
    let get = |k: &str| form.get(k).map(String::as_str);
    if get("Action") != Some("AssumeRole") {
        return sts_error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            "only AssumeRole is simulated",
        );
    }
    let Some(arn) = get("RoleArn") else {
        return sts_error(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            "RoleArn is required",
        );
    };
    // arn:aws:iam::ACCOUNT:role/NAME
    let target = arn
        .strip_prefix("arn:aws:iam::")
        .and_then(|r| r.split_once(":role/"))
        .map(|(a, _)| a.to_string());
    let s = shared.lock();
    let Some((target, cfg)) = target.and_then(|t| s.cfg.accounts.get(&t).map(|c| (t, c))) else {
        return sts_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "not authorized to perform sts:AssumeRole",
        );
    };
    if cfg.external_id.is_some() && cfg.external_id.as_deref() != get("ExternalId") {
        return sts_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "not authorized to perform sts:AssumeRole (external id)",
        );
    }
    let expiration = now + chrono::Duration::seconds(cfg.credential_ttl_secs as i64);
    let body = format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult><Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>sim-role-session-{target}</SessionToken><Expiration>{}</Expiration></Credentials><AssumedRoleUser><Arn>{arn}</Arn></AssumedRoleUser></AssumeRoleResult></AssumeRoleResponse>",
        crate::access_key(&target),
        crate::secret_key(&target),
        expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/xml"),
    );
    r
}

fn admin_call(shared: &Arc<Shared>, req: &Request<Incoming>, path: &str) -> Response<Body> {
    let h = SimHandle {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        shared: shared.clone(),
        cancel: CancellationToken::new(),
    };
    let secs = query_f64(req, "secs");
    let found = |ok: bool| {
        if ok {
            text(StatusCode::OK, "ok")
        } else {
            text(StatusCode::NOT_FOUND, "no such account")
        }
    };
    match (req.method(), path.split_once('/').unwrap_or((path, ""))) {
        (&Method::GET, ("counts", "")) => json(&h.counts()),
        (&Method::GET, ("state", "")) => json(&h.state()),
        (&Method::POST, ("freeze", a)) => found(h.freeze(a, secs.unwrap_or(300.0))),
        (&Method::POST, ("unfreeze", a)) => found(h.unfreeze(a)),
        (&Method::POST, ("throttle", a)) => found(h.throttle(a, secs.unwrap_or(10.0))),
        (&Method::POST, ("drop", a)) => found(h.drop_connections(a, secs.unwrap_or(10.0))),
        (&Method::POST, ("latency", "")) => match query_f64(req, "ms") {
            Some(ms) if ms.is_finite() && (0.0..=60_000.0).contains(&ms) => {
                h.set_latency(Duration::from_micros((ms * 1000.0) as u64));
                text(StatusCode::OK, "ok")
            }
            _ => text(StatusCode::BAD_REQUEST, "latency needs ms=0..60000"),
        },
        _ => text(StatusCode::NOT_FOUND, "unknown admin endpoint"),
    }
}
