//! Webhook deliveries: the elected leader sends each job's end to the URL the job named, signed
//! with the deployment's secret, and tries again with backoff until the receiver answers 2xx
//! (docs/operations.md, "Webhooks"). The outbox row is written by the transaction that ended
//! the job, so an end is never lost; a leader that dies mid-try leaves it due again after the
//! lease, so a receiver may see one delivery twice (`Sluice-Delivery` tells them apart).

use crate::metrics;
use chrono::{DateTime, Utc};
use sluice_core::{DeliveryPolicy, WebhookRules, WebhookSecret};
use sluice_store::{DeliveryOutcome, Store, WebhookDelivery};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// `None`: this deployment sends no webhooks.
    pub secret: Option<WebhookSecret>,
    pub rules: WebhookRules,
    pub policy: DeliveryPolicy,
    /// How often the leader looks for due deliveries.
    pub every: Duration,
    /// How long one try may take (connect, send, answer).
    pub timeout: Duration,
    /// Deliveries tried at once.
    pub batch: u32,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            secret: None,
            rules: WebhookRules::default(),
            policy: DeliveryPolicy::default(),
            every: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            batch: 16,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Notifier {
    store: Arc<dyn Store>,
    cfg: NotifierConfig,
}

impl Notifier {
    pub fn new(store: Arc<dyn Store>, cfg: NotifierConfig) -> Self {
        Notifier { store, cfg }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.secret.is_some()
    }

    /// Tries every due delivery (up to the batch, at once); returns how many were tried.
    pub async fn pass(&self, now: DateTime<Utc>) -> sluice_store::Result<usize> {
        let Some(secret) = &self.cfg.secret else {
            return Ok(0);
        };
        // A try still running after three timeouts is taken to be lost.
        let due = self
            .store
            .webhook_take(now, self.cfg.batch, self.cfg.timeout * 3)
            .await?;
        let n = due.len();
        let mut tries = tokio::task::JoinSet::new();
        for d in due {
            let (cfg, secret) = (self.cfg.clone(), secret.clone());
            tries.spawn(async move {
                // One deadline for the whole try, the host's lookup included.
                let outcome =
                    tokio::time::timeout(cfg.timeout * 2, deliver(&cfg, &secret, &d, now))
                        .await
                        .unwrap_or_else(|_| DeliveryOutcome::Failed {
                            error: format!("no answer within {:?}", cfg.timeout * 2),
                            retry_at: retry_at(&cfg, &d, now),
                        });
                (d, outcome)
            });
        }
        while let Some(done) = tries.join_next().await {
            let Ok((d, outcome)) = done else { continue };
            let host = sluice_core::webhook::host_of(&d.url);
            match &outcome {
                DeliveryOutcome::Delivered { status } => {
                    metrics::WEBHOOKS.with_label_values(&["delivered"]).inc();
                    info!(job_id = d.job_id.0, delivery = d.id, attempt = d.attempt, %host, status, "webhook delivered");
                }
                DeliveryOutcome::Failed { error, retry_at } => {
                    let outcome = if retry_at.is_some() {
                        "retried"
                    } else {
                        "failed"
                    };
                    metrics::WEBHOOKS.with_label_values(&[outcome]).inc();
                    warn!(job_id = d.job_id.0, delivery = d.id, attempt = d.attempt, %host, %error, ?retry_at, "webhook not delivered");
                }
            }
            // One that cannot be recorded is tried again when its lease passes; the others
            // are still recorded.
            if let Err(e) = self.store.webhook_record(&d, outcome, now).await {
                warn!(delivery = d.id, error = %e, "recording a webhook try failed");
            }
        }
        Ok(n)
    }
}

/// When `d` is tried again after this try failed, if it is.
fn retry_at(
    cfg: &NotifierConfig,
    d: &WebhookDelivery,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    cfg.policy
        .retry_after(d.attempt.max(0) as u32)
        .map(|after| now + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX))
}

/// One try of `d`. The URL is checked again against today's rules, its host resolved and every
/// address checked, and the connection made to the address checked (no second lookup an
/// attacker's DNS could answer differently); redirects are not followed.
async fn deliver(
    cfg: &NotifierConfig,
    secret: &WebhookSecret,
    d: &WebhookDelivery,
    now: DateTime<Utc>,
) -> DeliveryOutcome {
    let failed = |error: String, again: bool| DeliveryOutcome::Failed {
        retry_at: again.then(|| retry_at(cfg, d, now)).flatten(),
        error,
    };
    let url = match cfg.rules.check_url(&d.url) {
        Ok(u) => u,
        Err(e) => return failed(e, false),
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return failed("webhook has no host".into(), false);
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(a) => a.collect(),
            Err(e) => return failed(format!("resolving {host}: {e}"), true),
        };
    let Some(&addr) = addrs.first() else {
        return failed(format!("{host} has no address"), true);
    };
    if let Some(bad) = addrs
        .iter()
        .find_map(|a| cfg.rules.check_addr(a.ip()).err())
    {
        return failed(bad, false);
    }
    // No proxy: one would resolve the host itself, past the addresses checked here.
    let client = match reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(cfg.timeout)
        .resolve(&host, addr)
        .user_agent(concat!("sluice-webhook/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return failed(format!("http client: {e}"), true),
    };
    let body = match serde_json::to_vec(&d.body) {
        Ok(b) => b,
        Err(e) => return failed(format!("encoding the body: {e}"), false),
    };
    let owner = d
        .body
        .pointer("/job/owner")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            "Sluice-Signature",
            secret.sign(owner, now.timestamp(), d.id, &body),
        )
        .header("Sluice-Delivery", d.id.to_string())
        .header("Sluice-Attempt", d.attempt.to_string())
        .header("Sluice-Event", "job.ended")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => DeliveryOutcome::Delivered {
            status: r.status().as_u16(),
        },
        Ok(r) => failed(format!("answered {}", r.status()), true),
        // Without the URL: its path may hold the receiver's secret.
        Err(e) => failed(format!("{}", e.without_url()), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_store::{JobInsertParams, TaskOutcome};
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the receiver got: its headers (lower-case names) and body.
    type Got = Arc<Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>;

    /// A webhook receiver on 127.0.0.1 answering each request with the next status of
    /// `answers` (200 once they run out).
    async fn receiver(answers: Vec<u16>) -> (std::net::SocketAddr, Got) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let got: Got = Arc::default();
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        let seen = got.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = l.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break (String::new(), Vec::new());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    break (head, buf[end + 4..].to_vec());
                };
                let headers = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                seen.lock().unwrap().push((headers, body));
                let status = answers.lock().unwrap().pop_front().unwrap_or(200);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        (addr, got)
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    /// A one-lake job naming `webhook`, run to success at `at(1)`.
    async fn ended_job(store: &dyn Store, webhook: &str) -> sluice_core::JobId {
        let noop = serde_json::json!({"kind": "noop"});
        let p = JobInsertParams {
            webhook: Some(webhook.into()),
            ..sluice_store::testing::job_params("alice", 1, 1, noop, at(0))
        };
        let j = sluice_store::testing::submit(store, p).await;
        let claimed = sluice_store::testing::claim(store, "w", 1, at(1)).await;
        let outcome = TaskOutcome::Succeeded {
            rows: 3,
            result_uri: None,
        };
        sluice_store::testing::finish(store, claimed[0].lease, outcome, at(1)).await;
        j.id
    }

    fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
        h.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {h:?}"))
    }

    #[tokio::test]
    async fn a_jobs_end_is_delivered_signed_and_tried_again_until_it_is() {
        let store = sluice_store::connect("sqlite::memory:", Default::default())
            .await
            .unwrap();
        let (addr, got) = receiver(vec![500]).await;
        let url = format!("http://{addr}/hooks/T0K3N?sig=abc");
        let job = ended_job(store.as_ref(), &url).await;
        let secret = WebhookSecret::new(b"0123456789abcdef");
        let cfg = NotifierConfig {
            secret: Some(secret.clone()),
            rules: WebhookRules {
                allow_http: true,
                allow_private: true,
            },
            ..NotifierConfig::default()
        };
        let n = Notifier::new(store.clone(), cfg.clone());
        // The first try gets a 500: tried again 10 s later, not before.
        assert_eq!(n.pass(at(2)).await.unwrap(), 1);
        assert_eq!(n.pass(at(11)).await.unwrap(), 0);
        assert_eq!(n.pass(at(12)).await.unwrap(), 1);
        assert_eq!(n.pass(at(13)).await.unwrap(), 0, "delivered: nothing due");
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        for (i, (h, body)) in got.iter().enumerate() {
            assert_eq!(header(h, "sluice-attempt"), (i + 1).to_string());
            assert_eq!(
                header(h, "sluice-delivery"),
                header(&got[0].0, "sluice-delivery")
            );
            assert_eq!(header(h, "content-type"), "application/json");
            // The signature is the receiver's to recompute over the raw body.
            let sig = header(h, "sluice-signature");
            let t: i64 = sig
                .strip_prefix("t=")
                .and_then(|s| s.split(',').next())
                .and_then(|t| t.parse().ok())
                .unwrap();
            let delivery: i64 = header(h, "sluice-delivery").parse().unwrap();
            assert_eq!(sig, secret.sign("alice", t, delivery, body));
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(
                (
                    v["type"].clone(),
                    v["job"]["id"].clone(),
                    v["job"]["state"].clone(),
                    v["job"]["rows_found"].clone()
                ),
                (
                    "job.ended".into(),
                    job.0.into(),
                    "succeeded".into(),
                    3.into()
                )
            );
        }
        // The journal says what happened, without the URL's path or query.
        let ev = sluice_store::StoreExt::event_list_until(
            store.as_ref(),
            sluice_store::EventListParams {
                job_id: Some(job),
                scope: None,
                after_id: None,
                limit: 100,
            },
            &|_| false,
        )
        .await
        .unwrap();
        let hooks: Vec<_> = ev
            .iter()
            .filter(|e| e.kind.starts_with("webhook."))
            .collect();
        assert_eq!(
            hooks.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["webhook.retried", "webhook.delivered"]
        );
        for e in hooks {
            let d = e.detail.clone().unwrap().to_string();
            assert!(
                d.contains("127.0.0.1") && !d.contains("T0K3N") && !d.contains("abc"),
                "{d}"
            );
        }
    }

    #[tokio::test]
    async fn webhooks_to_private_addresses_are_refused_and_given_up_after_the_last_try() {
        let store = sluice_store::connect("sqlite::memory:", Default::default())
            .await
            .unwrap();
        let (addr, got) = receiver(vec![503, 503, 503]).await;
        let secret = Some(WebhookSecret::new(b"0123456789abcdef"));
        // Public addresses only: a loopback receiver is never called, and not tried again.
        let strict = Notifier::new(
            store.clone(),
            NotifierConfig {
                secret: secret.clone(),
                rules: WebhookRules {
                    allow_http: true,
                    allow_private: false,
                },
                ..NotifierConfig::default()
            },
        );
        let refused = ended_job(store.as_ref(), &format!("http://{addr}/a")).await;
        assert_eq!(strict.pass(at(2)).await.unwrap(), 1);
        assert_eq!(strict.pass(at(100_000)).await.unwrap(), 0);
        assert!(got.lock().unwrap().is_empty(), "no request reached it");
        let kinds = sluice_store::testing::kinds(store.as_ref(), refused).await;
        assert_eq!(
            kinds.iter().filter(|k| *k == "webhook.failed").count(),
            1,
            "{kinds:?}"
        );
        // A receiver that keeps failing: given up after the policy's tries.
        let lab = Notifier::new(
            store.clone(),
            NotifierConfig {
                secret,
                rules: WebhookRules {
                    allow_http: true,
                    allow_private: true,
                },
                policy: DeliveryPolicy {
                    attempts: 3,
                    first: Duration::from_secs(1),
                    cap: Duration::from_secs(1),
                },
                ..NotifierConfig::default()
            },
        );
        let failing = ended_job(store.as_ref(), &format!("http://{addr}/b")).await;
        for t in [200_000, 200_001, 200_002, 200_003] {
            lab.pass(at(t)).await.unwrap();
        }
        assert_eq!(got.lock().unwrap().len(), 3);
        let kinds = sluice_store::testing::kinds(store.as_ref(), failing).await;
        let hooks: Vec<_> = kinds.iter().filter(|k| k.starts_with("webhook.")).collect();
        assert_eq!(
            hooks,
            ["webhook.retried", "webhook.retried", "webhook.failed"]
        );
    }
}
