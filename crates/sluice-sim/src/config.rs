//! The simulator's accounts file (JSON): which buckets belong to which account, and the quotas.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A request quota: `rate` requests a second with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub rate: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub buckets: Vec<String>,
    /// Requests a second the account may make, and its burst.
    pub rate: f64,
    pub burst: f64,
    /// An account with `freeze_after_throttles` throttled requests within this many seconds
    /// is frozen (it kept pushing past its quota).
    #[serde(default = "default_freeze_after")]
    pub freeze_after_secs: f64,
    /// Default: a quarter of the requests the quota allows in `freeze_after_secs` (at least
    /// 10) — an account that keeps sending a quarter more than its quota for that long.
    #[serde(default)]
    pub freeze_after_throttles: Option<u32>,
    /// How long a freeze lasts (unless lifted through `/_sim/unfreeze/{account}`).
    #[serde(default = "default_freeze_for")]
    pub freeze_for_secs: f64,
    /// Lifetime of the credentials the metadata endpoint and AssumeRole hand out.
    #[serde(default = "default_credential_ttl")]
    pub credential_ttl_secs: u64,
    /// The external id an AssumeRole into this account must give (none: any).
    #[serde(default)]
    pub external_id: Option<String>,
}

fn default_freeze_after() -> f64 {
    2.0
}
fn default_freeze_for() -> f64 {
    300.0
}
fn default_credential_ttl() -> u64 {
    3600
}

impl AccountConfig {
    pub fn quota(&self) -> Quota {
        Quota {
            rate: self.rate,
            burst: self.burst,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The provider-wide quota over all accounts (`None`: unlimited).
    #[serde(default)]
    pub provider: Option<Quota>,
    pub accounts: BTreeMap<String, AccountConfig>,
}

impl SimConfig {
    /// Parses and checks an accounts file.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let cfg: SimConfig =
            serde_json::from_str(text).map_err(|e| format!("accounts file: {e}"))?;
        cfg.check()?;
        Ok(cfg)
    }

    pub fn check(&self) -> Result<(), String> {
        let quota_ok = |q: &Quota| q.rate.is_finite() && q.rate > 0.0 && q.burst >= 1.0;
        if let Some(q) = &self.provider
            && !quota_ok(q)
        {
            return Err("provider quota: rate must be > 0 and burst >= 1".into());
        }
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, a) in &self.accounts {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!(
                    "account {name:?}: use letters, digits and '-' only"
                ));
            }
            if !quota_ok(&a.quota()) {
                return Err(format!("account {name:?}: rate must be > 0 and burst >= 1"));
            }
            let freeze_ok = a.freeze_after_secs.is_finite()
                && a.freeze_after_secs > 0.0
                && a.freeze_for_secs.is_finite()
                && a.freeze_for_secs >= 0.0;
            if !freeze_ok {
                return Err(format!(
                    "account {name:?}: freeze_after_secs must be > 0 and freeze_for_secs >= 0"
                ));
            }
            for b in &a.buckets {
                if let Some(other) = owner.insert(b, name) {
                    return Err(format!(
                        "bucket {b:?} belongs to both {other:?} and {name:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The account a bucket belongs to.
    pub fn account_of(&self, bucket: &str) -> Option<&str> {
        self.accounts
            .iter()
            .find(|(_, a)| a.buckets.iter().any(|b| b == bucket))
            .map(|(n, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_files_are_checked() {
        let good = r#"{"provider": {"rate": 100, "burst": 10},
            "accounts": {"111": {"buckets": ["a", "b"], "rate": 5, "burst": 5}}}"#;
        let cfg = SimConfig::from_json(good).unwrap();
        assert_eq!(cfg.account_of("b"), Some("111"));
        assert_eq!(cfg.account_of("c"), None);
        assert_eq!(cfg.accounts["111"].freeze_after_secs, 2.0);
        let bad = [
            (
                r#"{"accounts": {"1": {"buckets": [], "rate": 0, "burst": 5}}}"#,
                "rate",
            ),
            (
                r#"{"accounts": {"1": {"buckets": [], "rate": 1, "burst": 5, "x": 1}}}"#,
                "unknown field",
            ),
            (
                r#"{"accounts": {"a/b": {"buckets": [], "rate": 1, "burst": 5}}}"#,
                "letters",
            ),
            (
                r#"{"accounts": {"1": {"buckets": ["a"], "rate": 1, "burst": 5}, "2": {"buckets": ["a"], "rate": 1, "burst": 5}}}"#,
                "belongs to both",
            ),
            (
                r#"{"provider": {"rate": "NaN", "burst": 1}, "accounts": {}}"#,
                "invalid type",
            ),
            (
                r#"{"accounts": {"1": {"buckets": [], "rate": 1, "burst": 5, "freeze_after_secs": -1}}}"#,
                "freeze_after",
            ),
            ("not json", "expected"),
        ];
        for (text, want) in bad {
            let err = SimConfig::from_json(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
