//! Webhooks: which URLs a job may name, which addresses a delivery may connect to, and when a
//! failed delivery is tried again. Pure: the scheduler's notifier sends and signs.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

/// The deployment's webhook secret (`--webhook-secret`). Deliveries are signed with a key
/// derived from it for the job's owner, so a researcher who verifies their own deliveries
/// cannot sign one for another; rotating it rotates every owner's key.
#[derive(Clone)]
pub struct WebhookSecret(Arc<[u8]>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

impl WebhookSecret {
    pub fn new(secret: &[u8]) -> Self {
        WebhookSecret(secret.into())
    }

    /// `owner`'s key (hex), what they verify deliveries with (`GET /v1/webhook-key`):
    /// HMAC-SHA256(secret, "sluice-webhook-key:" + owner).
    pub fn owner_key(&self, owner: &str) -> String {
        hex(&hmac_sha256(
            &self.0,
            &[b"sluice-webhook-key:", owner.as_bytes()],
        ))
    }

    /// `Sluice-Signature` of delivery `delivery` of `owner`'s job sent at `t` (unix seconds):
    /// `t=<t>,v1=<hex HMAC-SHA256(owner key, "<t>.<delivery>." + body)>`. The time and the
    /// delivery id are signed with the body, so neither can be changed to replay it.
    pub fn sign(&self, owner: &str, t: i64, delivery: i64, body: &[u8]) -> String {
        let key = self.owner_key(owner);
        let head = format!("{t}.{delivery}.");
        let mac = hmac_sha256(key.as_bytes(), &[head.as_bytes(), body]);
        format!("t={t},v1={}", hex(&mac))
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    // HMAC takes a key of any length (a long one is hashed first): this never fails.
    #[allow(clippy::expect_used)]
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The longest webhook URL a job may name.
pub const MAX_WEBHOOK_URL: usize = 2000;

/// Which webhooks this deployment calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookRules {
    /// `http://` as well as `https://` (a receiver inside the cluster, a test bench).
    pub allow_http: bool,
    /// Loopback, private, link-local and reserved addresses as well as public ones. Off, a
    /// researcher's webhook cannot reach the cloud's metadata service, the database or anything
    /// else on the deployment's own network.
    pub allow_private: bool,
}

impl WebhookRules {
    /// The URL a job may name, or why not (a sentence for the researcher).
    pub fn check_url(&self, raw: &str) -> Result<url::Url, String> {
        if raw.len() > MAX_WEBHOOK_URL {
            return Err(format!(
                "webhook must be at most {MAX_WEBHOOK_URL} characters"
            ));
        }
        let u = url::Url::parse(raw).map_err(|e| format!("webhook is not a URL: {e}"))?;
        match u.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(
                    "webhook must be https:// (this server calls no http:// webhooks)".into(),
                );
            }
            other => return Err(format!("webhook must be https://, not {other}://")),
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(
                "webhook must not carry credentials (user:password@): deliveries are signed instead"
                    .into(),
            );
        }
        match u.host() {
            None => return Err("webhook has no host".into()),
            Some(url::Host::Ipv4(ip)) => self.check_addr(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_addr(IpAddr::V6(ip))?,
            Some(url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.');
                if !self.allow_private && (d == "localhost" || d.ends_with(".localhost")) {
                    return Err(format!("webhook host {d} is not public"));
                }
            }
        }
        Ok(u)
    }

    /// Whether a delivery may connect to `ip`: checked on every address the host resolves to
    /// at delivery time, and the connection then goes to the address checked.
    pub fn check_addr(&self, ip: IpAddr) -> Result<(), String> {
        if self.allow_private || is_public(ip) {
            Ok(())
        } else {
            // Which address is not said: the journal, which the job's owner reads, must not
            // answer questions about the deployment's own network.
            Err(
                "webhook host is not a public address (loopback, private, link-local or reserved)"
                    .into(),
            )
        }
    }
}

/// The host of a webhook URL: what logs and the journal show of it (its path and query often
/// hold the receiver's secret).
pub fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Whether `ip` is a public unicast address (not loopback, private, shared, link-local,
/// documentation, benchmarking, multicast, broadcast, reserved or unspecified; IPv6 forms of
/// IPv4 addresses are judged as the IPv4 address).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // ::ffff:a.b.c.d, ::a.b.c.d and the NAT64 prefix 64:ff9b::/96 reach IPv4 hosts.
            let embedded =
                Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
                return !v6.is_loopback() && !v6.is_unspecified() && is_public_v4(embedded);
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public_v4(embedded);
            }
            // Global unicast only (2000::/3), less the ranges that tunnel to other networks
            // (6to4, Teredo) and documentation.
            (s[0] & 0xe000) == 0x2000
                && s[0] != 0x2002
                && !(s[0] == 0x2001 && (s[1] == 0 || s[1] == 0x0db8))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space (carrier NAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
        || o[0] >= 240) // reserved
}

/// When a failed delivery is tried again: doubling from `first` up to `cap`, `attempts` tries
/// in all (the defaults: 10 tries over about three hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    pub attempts: u32,
    pub first: Duration,
    pub cap: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            attempts: 10,
            first: Duration::from_secs(10),
            cap: Duration::from_secs(3600),
        }
    }
}

impl DeliveryPolicy {
    /// After `tried` failed tries: how long until the next one, or `None` to give up.
    pub fn retry_after(&self, tried: u32) -> Option<Duration> {
        if tried >= self.attempts {
            return None;
        }
        let doublings = tried.saturating_sub(1).min(20);
        Some(self.first.saturating_mul(1 << doublings).min(self.cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for (ip, public) in [
            ("93.184.216.34", true),
            ("8.8.8.8", true),
            ("2606:4700::1111", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false), // the cloud metadata service
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("198.18.0.1", false),
            ("192.0.0.8", false),
            ("240.0.0.1", false),
            ("::1", false),
            ("::", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("ff02::1", false),
            ("2001:db8::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:169.254.169.254", false),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::a9fe:a9fe", false), // NAT64 of 169.254.169.254
            ("64:ff9b::808:808", true),
            ("64:ff9b:1::a", false),        // local-use NAT64
            ("2002:a9fe:a9fe::1", false),   // 6to4 of 169.254.169.254
            ("2001:0:4136:e378::1", false), // Teredo
            ("fec0::1", false),
            ("::ffff:0:a9fe:a9fe", false),
        ] {
            let addr: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
            assert_eq!(is_public(addr), public, "{ip}");
        }
    }

    #[test]
    fn webhook_urls_are_checked() {
        let strict = WebhookRules::default();
        let lab = WebhookRules {
            allow_http: true,
            allow_private: true,
        };
        let long = format!("https://example.com/{}", "a".repeat(MAX_WEBHOOK_URL));
        // (url, strict verdict, lab verdict)
        /// Ok, or a part of the error.
        type Verdict = Result<(), &'static str>;
        let cases: &[(&str, Verdict, Verdict)] = &[
            ("https://hooks.example.com/T1/B2?x=1", Ok(()), Ok(())),
            ("http://hooks.example.com/", Err("must be https://"), Ok(())),
            (
                "ftp://hooks.example.com/",
                Err("not ftp://"),
                Err("not ftp://"),
            ),
            (
                "https://user:pw@hooks.example.com/",
                Err("credentials"),
                Err("credentials"),
            ),
            (
                "https://127.0.0.1:8080/",
                Err("not a public address"),
                Ok(()),
            ),
            ("https://[::1]/", Err("not a public address"), Ok(())),
            (
                "https://169.254.169.254/latest/",
                Err("not a public address"),
                Ok(()),
            ),
            ("https://2852039166/", Err("not a public address"), Ok(())), // 169.254.169.254
            ("https://0x7f.1/", Err("not a public address"), Ok(())),
            ("https://localhost/", Err("not public"), Ok(())),
            ("https://a.localhost./", Err("not public"), Ok(())),
            ("not a url", Err("not a URL"), Err("not a URL")),
            ("file:///etc/passwd", Err("not file://"), Err("not file://")),
            (&long, Err("at most 2000"), Err("at most 2000")),
        ];
        for (url, want_strict, want_lab) in cases {
            for (rules, want) in [(strict, want_strict), (lab, want_lab)] {
                match (rules.check_url(url), want) {
                    (Ok(_), Ok(())) => {}
                    (Err(e), Err(part)) => assert!(e.contains(part), "{url}: {e}"),
                    (got, want) => panic!("{url} {rules:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn each_owner_has_a_key_and_the_signature_covers_time_delivery_and_body() {
        let s = WebhookSecret::new(b"0123456789abcdef");
        let (alice, bob) = (s.owner_key("alice"), s.owner_key("bob"));
        assert_eq!(alice.len(), 64);
        assert_ne!(alice, bob);
        assert_eq!(
            alice,
            WebhookSecret::new(b"0123456789abcdef").owner_key("alice")
        );
        assert_ne!(
            alice,
            WebhookSecret::new(b"another secret!!").owner_key("alice")
        );
        let sig = s.sign("alice", 1_700_000_000, 7, br#"{"a":1}"#);
        assert!(sig.starts_with("t=1700000000,v1="), "{sig}");
        // What a receiver computes with its key alone.
        let want = hex(&hmac_sha256(
            alice.as_bytes(),
            &[b"1700000000.7.", br#"{"a":1}"#],
        ));
        assert_eq!(sig, format!("t=1700000000,v1={want}"));
        for other in [
            s.sign("bob", 1_700_000_000, 7, br#"{"a":1}"#),
            s.sign("alice", 1_700_000_001, 7, br#"{"a":1}"#),
            s.sign("alice", 1_700_000_000, 8, br#"{"a":1}"#),
            s.sign("alice", 1_700_000_000, 7, br#"{"a":2}"#),
        ] {
            assert_ne!(sig, other);
        }
        // RFC 4231, test case 2: the HMAC is the standard one.
        assert_eq!(
            hex(&hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(format!("{s:?}"), "WebhookSecret(…)");
    }

    #[test]
    fn deliveries_back_off_then_give_up() {
        let p = DeliveryPolicy::default();
        let s = Duration::from_secs;
        let got: Vec<Option<Duration>> = (1..=11).map(|n| p.retry_after(n)).collect();
        assert_eq!(
            got,
            vec![
                Some(s(10)),
                Some(s(20)),
                Some(s(40)),
                Some(s(80)),
                Some(s(160)),
                Some(s(320)),
                Some(s(640)),
                Some(s(1280)),
                Some(s(2560)),
                None,
                None
            ]
        );
    }
}
