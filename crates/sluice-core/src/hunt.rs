//! What a researcher asks: one type for the API (which documents and accepts it), the planner
//! and the engine (which compiles it). An IOC list or SQL over the logical table `events`,
//! and which lakes to ask. Unknown fields are rejected, so a typo (`ipz`) is an error rather
//! than a hunt for nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most IOC values one hunt may carry (all lists together).
pub const MAX_IOCS: usize = 10_000;

/// A hunt, as the `hunt` of a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Hunt))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HuntSpec {
    /// One read-only SQL statement over the table `events` of each selected lake.
    Sql {
        #[cfg_attr(feature = "openapi", schema(min_length = 1))]
        sql: String,
        #[serde(default)]
        lakes: LakeSelector,
    },
    /// Indicators of compromise, compiled to SQL: at least one IP, hash or domain.
    Ioc {
        /// IPv4 or IPv6 addresses.
        #[serde(default)]
        #[cfg_attr(feature = "openapi", schema(max_items = 10000))]
        ips: Vec<String>,
        /// SHA-256 file hashes (64 hex digits).
        #[serde(default)]
        #[cfg_attr(feature = "openapi", schema(max_items = 10000))]
        hashes: Vec<String>,
        #[serde(default)]
        #[cfg_attr(feature = "openapi", schema(max_items = 10000))]
        domains: Vec<String>,
        /// Only events at or after this time (`ts >= since`).
        #[serde(default)]
        since: Option<DateTime<Utc>>,
        /// Only events before this time (`ts < until`).
        #[serde(default)]
        until: Option<DateTime<Utc>>,
        #[serde(default)]
        lakes: LakeSelector,
    },
}

impl HuntSpec {
    pub fn lakes(&self) -> &LakeSelector {
        match self {
            HuntSpec::Sql { lakes, .. } | HuntSpec::Ioc { lakes, .. } => lakes,
        }
    }
}

/// One problem with a hunt, found before anything runs. `line`/`column` start at 1; 0 when
/// the problem has no position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HuntError {
    pub line: u64,
    pub column: u64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl HuntError {
    /// A problem without a position.
    pub fn plain(message: impl Into<String>) -> HuntError {
        HuntError {
            line: 0,
            column: 0,
            message: message.into(),
            hint: None,
        }
    }
}

impl std::fmt::Display for HuntError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "line {}, column {}: ", self.line, self.column)?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// Which lakes a hunt reads: by name, glob (`lake-0*`: `*` any run, `?` one character) or
/// tags (every tag must match); empty: every lake.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LakeSelector {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub globs: Vec<String>,
    /// Every tag must match.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl LakeSelector {
    pub fn is_all(&self) -> bool {
        self.names.is_empty() && self.globs.is_empty() && self.tags.is_empty()
    }

    /// Whether a lake is selected: by name or glob (if any are given) and by every tag.
    pub fn matches(&self, name: &str, tags: &BTreeMap<String, String>) -> bool {
        let by_name = (self.names.is_empty() && self.globs.is_empty())
            || self.names.iter().any(|n| n == name)
            || self.globs.iter().any(|g| glob_match(g, name));
        by_name && self.tags.iter().all(|(k, v)| tags.get(k) == Some(v))
    }
}

/// `*` matches any run of characters, `?` one character; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}
