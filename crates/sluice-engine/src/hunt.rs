//! What a researcher asks: an IOC list or SQL over the logical table `events`, and which lakes
//! to ask. IOC hunts compile to SQL that keeps Parquet pruning working (statistics and bloom
//! filters): DataFusion ignores `IN` lists longer than `max_in_list_size` (default 20) for
//! pruning, so the compiled hunt raises that limit to cover its own lists.

use crate::EngineError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

pub use sluice_core::hunt::{HuntSpec, LakeSelector, MAX_IOCS, glob_match};

/// The most values in one compiled `IN` list; a longer IOC list becomes several branches.
const IN_LIST_CHUNK: usize = 1000;

/// The SQL (and session settings) a task of `spec` runs.
pub fn compile(spec: &HuntSpec, partition_cols: &[String]) -> Result<CompiledHunt, EngineError> {
    match spec {
        HuntSpec::Sql { sql, .. } => Ok(CompiledHunt {
            sql: sql.clone(),
            options: BTreeMap::new(),
        }),
        HuntSpec::Ioc { .. } => IocSpec::of(spec)
            .unwrap_or_default()
            .compile(partition_cols),
    }
}

/// The IOC part of a hunt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IocSpec {
    pub ips: Vec<String>,
    pub hashes: Vec<String>,
    pub domains: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// SQL plus the session settings it needs (e.g. a raised IN-list pruning limit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompiledHunt {
    pub sql: String,
    pub options: BTreeMap<String, String>,
}

fn bad(field: &str, i: usize, value: &str, why: &str) -> EngineError {
    EngineError::User(format!("{field}[{i}] {value:?}: {why}"))
}

fn norm_ips(v: &[String]) -> Result<Vec<String>, EngineError> {
    let mut out = Vec::with_capacity(v.len());
    for (i, s) in v.iter().enumerate() {
        let ip: IpAddr = s
            .trim()
            .parse()
            .map_err(|_| bad("ips", i, s, "not an IPv4 or IPv6 address"))?;
        out.push(ip.to_string());
    }
    Ok(dedup(out))
}

fn norm_hashes(v: &[String]) -> Result<Vec<String>, EngineError> {
    let mut out = Vec::with_capacity(v.len());
    for (i, s) in v.iter().enumerate() {
        let h = s.trim().to_ascii_lowercase();
        if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(
                "hashes",
                i,
                s,
                "expected a SHA-256 hash (64 hex digits)",
            ));
        }
        out.push(h);
    }
    Ok(dedup(out))
}

fn norm_domains(v: &[String]) -> Result<Vec<String>, EngineError> {
    let mut out = Vec::with_capacity(v.len());
    for (i, s) in v.iter().enumerate() {
        let d = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if d.len() > 253 || !d.contains('.') || !d.split('.').all(label_ok) {
            return Err(bad(
                "domains",
                i,
                s,
                "not a domain name (letters, digits, '-' and dots)",
            ));
        }
        out.push(d);
    }
    Ok(dedup(out))
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// Values are validated (IPs, hex, domain labels) before they get here, so they hold no quote;
/// escaping anyway keeps this safe if a new kind is added carelessly.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn in_list(col: &str, values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| lit(v)).collect();
    format!("{col} IN ({})", items.join(", "))
}

/// An IOC spec's indicators, checked and normalised, in the columns they are looked for in.
struct Indicators {
    ips: Vec<String>,
    hashes: Vec<String>,
    domains: Vec<String>,
}

impl Indicators {
    /// `(column, values)` per `IN` list: one per column and chunk of [`IN_LIST_CHUNK`] values.
    /// Long lists go in chunks: pruning turns `col IN (…)` into an OR chain that DataFusion
    /// walks recursively, one frame per item.
    fn branches(&self) -> Vec<(&'static str, &[String])> {
        let mut branches: Vec<(&str, &[String])> = Vec::new();
        for (cols, values) in [
            (&["src_ip", "dst_ip"][..], &self.ips),
            (&["file_sha256"][..], &self.hashes),
            (&["domain"][..], &self.domains),
        ] {
            for col in cols {
                branches.extend(values.chunks(IN_LIST_CHUNK).map(|c| (*col, c)));
            }
        }
        branches
    }
}

impl IocSpec {
    /// The IOC part of `spec`; `None` for a SQL hunt.
    pub fn of(spec: &HuntSpec) -> Option<IocSpec> {
        match spec {
            HuntSpec::Ioc {
                ips,
                hashes,
                domains,
                since,
                until,
                ..
            } => Some(IocSpec {
                ips: ips.clone(),
                hashes: hashes.clone(),
                domains: domains.clone(),
                since: *since,
                until: *until,
            }),
            HuntSpec::Sql { .. } => None,
        }
    }

    /// The query of a shared scan (ADR 0014): every indicator of `specs`, over any of their
    /// ranges — a row in none of the members' ranges is not read for any of them (the time
    /// conditions are an OR of the members', the day folders' another, so partitions between
    /// two members' ranges are still pruned). Its rows hold every row any member matches.
    pub fn compile_shared(
        specs: &[IocSpec],
        partition_cols: &[String],
    ) -> Result<CompiledHunt, EngineError> {
        let all = |f: fn(&IocSpec) -> &Vec<String>| -> Vec<String> {
            specs.iter().flat_map(|s| f(s).iter().cloned()).collect()
        };
        let indicators = IocSpec {
            ips: dedup(all(|s| &s.ips)),
            hashes: dedup(all(|s| &s.hashes)),
            domains: dedup(all(|s| &s.domains)),
            since: None,
            until: None,
        };
        // Any member's range; none when one member is unbounded.
        let any_of = |part: &dyn Fn(&IocSpec) -> Vec<String>| -> Option<String> {
            let ranges: Vec<Vec<String>> = specs.iter().map(part).collect();
            if ranges.is_empty() || ranges.iter().any(Vec::is_empty) {
                return None;
            }
            let mut each: Vec<String> = ranges
                .iter()
                .map(|r| format!("({})", r.join(" AND ")))
                .collect();
            each.sort();
            each.dedup();
            Some(format!("({})", each.join("\n    OR ")))
        };
        let range: Vec<String> = [
            any_of(&|s: &IocSpec| s.ts_range()),
            any_of(&|s: &IocSpec| s.dt_range(partition_cols)),
        ]
        .into_iter()
        .flatten()
        .collect();
        indicators.compile_with(range)
    }

    /// How many indicators the spec names (before normalising).
    pub fn len(&self) -> usize {
        self.ips.len() + self.hashes.len() + self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks and normalises the indicators. Errors name the offending entry.
    fn indicators(&self) -> Result<Indicators, EngineError> {
        let ips = norm_ips(&self.ips)?;
        let hashes = norm_hashes(&self.hashes)?;
        let domains = norm_domains(&self.domains)?;
        let total = ips.len() + hashes.len() + domains.len();
        if total == 0 {
            return Err(EngineError::User(
                "an IOC hunt needs at least one ip, hash or domain".into(),
            ));
        }
        if total > MAX_IOCS {
            return Err(EngineError::User(format!(
                "{total} IOCs in one hunt; at most {MAX_IOCS}"
            )));
        }
        if let (Some(s), Some(u)) = (self.since, self.until)
            && s >= u
        {
            return Err(EngineError::User(format!(
                "since ({s}) must be before until ({u})"
            )));
        }
        Ok(Indicators {
            ips,
            hashes,
            domains,
        })
    }

    /// The time range's conditions (and the day folders', when the lake has `dt`).
    fn range(&self, partition_cols: &[String]) -> Vec<String> {
        let mut range = self.ts_range();
        range.extend(self.dt_range(partition_cols));
        range
    }

    fn ts_range(&self) -> Vec<String> {
        let since = self
            .since
            .map(|s| format!("ts >= TIMESTAMP {}", lit(&s.to_rfc3339())));
        let until = self
            .until
            .map(|u| format!("ts < TIMESTAMP {}", lit(&u.to_rfc3339())));
        since.into_iter().chain(until).collect()
    }

    /// Prunes whole day folders before any file is opened.
    fn dt_range(&self, partition_cols: &[String]) -> Vec<String> {
        if !partition_cols.iter().any(|c| c == "dt") {
            return Vec::new();
        }
        let day = |t: DateTime<Utc>| lit(&t.format("%Y-%m-%d").to_string());
        let since = self.since.map(|s| format!("dt >= {}", day(s)));
        let until = self.until.map(|u| format!("dt <= {}", day(u)));
        since.into_iter().chain(until).collect()
    }

    /// The rows the hunt matches, as one condition over `events`' columns: what a shared
    /// scan's rows are filtered by to give this hunt exactly the rows [`IocSpec::compile`]'s
    /// query returns.
    pub fn predicate(&self, partition_cols: &[String]) -> Result<String, EngineError> {
        let ind = self.indicators()?;
        let any: Vec<String> = ind
            .branches()
            .iter()
            .map(|(col, values)| in_list(col, values))
            .collect();
        let mut conds = vec![format!("({})", any.join("\n  OR "))];
        conds.extend(self.range(partition_cols));
        Ok(conds.join("\nAND "))
    }

    /// Validates, normalises and compiles the IOC spec. Errors name the offending entry.
    pub fn compile(&self, partition_cols: &[String]) -> Result<CompiledHunt, EngineError> {
        self.compile_with(self.range(partition_cols))
    }

    /// The hunt's query with `range` as its time conditions.
    fn compile_with(&self, range: Vec<String>) -> Result<CompiledHunt, EngineError> {
        let ind = self.indicators()?;
        let branches = ind.branches();
        // One branch per column, because DataFusion uses bloom filters only for predicates
        // that pin a single column (`col IN (…)`); `src_ip IN (…) OR dst_ip IN (…)` would
        // read every row group. Each later branch excludes rows an earlier one returned
        // (NULL-safe), so a row matching on two columns comes back once.
        let selects: Vec<String> = branches
            .iter()
            .enumerate()
            .map(|(k, (col, values))| {
                let mut conds = vec![in_list(col, values)];
                // Chunks of one column hold different values: no row matches two of them.
                conds.extend(
                    branches[..k]
                        .iter()
                        .filter(|(c, _)| c != col)
                        .map(|(c, v)| format!("({}) IS NOT TRUE", in_list(c, v))),
                );
                conds.extend(range.iter().cloned());
                format!("SELECT * FROM events\nWHERE {}", conds.join("\n  AND "))
            })
            .collect();
        let longest = branches.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        let mut options = BTreeMap::new();
        options.insert(
            "datafusion.execution.parquet.max_in_list_size".to_string(),
            longest.max(20).to_string(),
        );
        Ok(CompiledHunt {
            sql: selects.join("\nUNION ALL\n"),
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("lake-*", "lake-00001", true),
            ("lake-*", "lak-1", false),
            ("*-eu-?", "acme-eu-1", true),
            ("*-eu-?", "acme-eu-12", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn selector_combines_names_globs_and_tags() {
        let tags: BTreeMap<String, String> = [("tenant".into(), "acme".into())].into();
        let none = BTreeMap::new();
        let s = LakeSelector {
            names: vec!["a".into()],
            globs: vec!["b-*".into()],
            tags: tags.clone(),
        };
        assert!(s.matches("a", &tags));
        assert!(s.matches("b-1", &tags));
        assert!(!s.matches("a", &none));
        assert!(!s.matches("c", &tags));
        assert!(LakeSelector::default().matches("anything", &none));
        let only_tags = LakeSelector {
            tags,
            ..Default::default()
        };
        assert!(only_tags.matches("x", &[("tenant".into(), "acme".into())].into()));
    }

    #[test]
    fn ioc_specs_compile_or_explain() {
        let ok = IocSpec {
            ips: vec![
                "203.0.113.10".into(),
                " 2001:DB8::1 ".into(),
                "203.0.113.10".into(),
            ],
            hashes: vec!["A".repeat(64)],
            domains: vec!["C2.Evil.Test.".into()],
            since: "2026-11-20T00:00:00Z".parse().ok(),
            until: "2026-11-22T00:00:00Z".parse().ok(),
        };
        let c = ok.compile(&["dt".into()]).unwrap();
        assert!(
            c.sql.contains("src_ip IN ('2001:db8::1', '203.0.113.10')"),
            "{}",
            c.sql
        );
        assert!(c.sql.contains("dst_ip IN ('2001:db8::1', '203.0.113.10')"));
        assert!(
            c.sql
                .contains(&format!("file_sha256 IN ('{}')", "a".repeat(64)))
        );
        assert!(c.sql.contains("domain IN ('c2.evil.test')"));
        assert!(c.sql.contains("dt >= '2026-11-20'") && c.sql.contains("dt <= '2026-11-22'"));
        assert_eq!(
            c.options["datafusion.execution.parquet.max_in_list_size"],
            "20"
        );
        let no_dt = ok.compile(&[]).unwrap();
        assert!(!no_dt.sql.contains("dt >="));

        let many = IocSpec {
            ips: (0..300)
                .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            many.compile(&[]).unwrap().options["datafusion.execution.parquet.max_in_list_size"],
            "300"
        );

        // A long list becomes branches of at most IN_LIST_CHUNK values; chunks of one column
        // do not exclude each other (no row matches two), other columns' do.
        let long = IocSpec {
            hashes: (0..2_500).map(|i| format!("{i:064x}")).collect(),
            domains: vec!["x.example".into()],
            ..Default::default()
        };
        let c = long.compile(&[]).unwrap();
        let branches: Vec<&str> = c.sql.split("\nUNION ALL\n").collect();
        assert_eq!(branches.len(), 4, "3 hash chunks and the domain");
        for b in &branches[..3] {
            assert_eq!(b.matches("file_sha256 IN (").count(), 1, "{b}");
        }
        assert_eq!(branches[3].matches("file_sha256 IN (").count(), 3);
        assert_eq!(
            c.options["datafusion.execution.parquet.max_in_list_size"],
            IN_LIST_CHUNK.to_string()
        );

        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ips = |v: &[&str]| IocSpec {
            ips: strings(v),
            ..Default::default()
        };
        let hashes = |v: &[&str]| IocSpec {
            hashes: strings(v),
            ..Default::default()
        };
        let domains = |v: &[&str]| IocSpec {
            domains: strings(v),
            ..Default::default()
        };
        let bad: Vec<(IocSpec, &str)> = vec![
            (IocSpec::default(), "at least one"),
            (ips(&["1.2.3"]), "ips[0]"),
            (ips(&["1.1.1.1' OR '1'='1"]), "ips[0]"),
            (hashes(&["abc"]), "hashes[0]"),
            (hashes(&[&"g".repeat(64)]), "SHA-256"),
            (domains(&["evil.test", "no_underscore.test"]), "domains[1]"),
            (domains(&["localhost"]), "domains[0]"),
            (domains(&["x.test'; DROP TABLE t; --"]), "domains[0]"),
            (
                IocSpec {
                    ips: vec!["1.1.1.1".into()],
                    since: "2026-11-22T00:00:00Z".parse().ok(),
                    until: "2026-11-20T00:00:00Z".parse().ok(),
                    ..Default::default()
                },
                "before until",
            ),
            (
                IocSpec {
                    ips: (0..10_001)
                        .map(|i| format!("10.{}.{}.1", i / 256, i % 256))
                        .collect(),
                    ..Default::default()
                },
                "at most",
            ),
        ];
        for (spec, needle) in bad {
            let e = spec.compile(&[]).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn hunt_spec_json_is_strict() {
        let ok: HuntSpec = serde_json::from_str(
            r#"{"kind":"ioc","ips":["1.1.1.1"],"lakes":{"globs":["lake-*"]}}"#,
        )
        .unwrap();
        assert_eq!(ok.lakes().globs, vec!["lake-*"]);
        assert!(compile(&ok, &[]).unwrap().sql.contains("'1.1.1.1'"));
        let sql: HuntSpec = serde_json::from_str(r#"{"kind":"sql","sql":"select 1"}"#).unwrap();
        assert!(sql.lakes().is_all());
        for bad in [
            r#"{"kind":"ioc","ipz":["1.1.1.1"]}"#,
            r#"{"kind":"shell","cmd":"rm"}"#,
            r#"{"kind":"sql"}"#,
            r#"{"kind":"ioc","ips":"1.1.1.1"}"#,
            r#"{"kind":"ioc","ips":[],"lakes":{"nmes":[]}}"#,
        ] {
            assert!(serde_json::from_str::<HuntSpec>(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod union_tests {
    use super::*;

    #[test]
    fn a_shared_scan_holds_every_indicator_over_any_members_range_only() {
        let t = |d: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 3, d)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
        };
        let a = IocSpec {
            ips: vec!["10.0.0.1".into()],
            since: Some(t(1)),
            until: Some(t(2)),
            ..Default::default()
        };
        let b = IocSpec {
            ips: vec!["10.0.0.1".into(), "10.0.0.2".into()],
            domains: vec!["evil.example".into()],
            since: Some(t(20)),
            until: Some(t(21)),
            ..Default::default()
        };
        let dt = ["dt".to_string()];
        let sql = IocSpec::compile_shared(&[a.clone(), b.clone()], &dt)
            .unwrap()
            .sql;
        assert!(
            sql.contains("'10.0.0.2'") && sql.contains("'evil.example'"),
            "{sql}"
        );
        // Two ranges, not the three weeks between them.
        for day in [
            "dt >= '2026-03-01' AND dt <= '2026-03-02'",
            "dt >= '2026-03-20' AND dt <= '2026-03-21'",
        ] {
            assert!(sql.contains(day), "{day}: {sql}");
        }
        assert!(
            !sql.contains("dt >= '2026-03-01' AND dt <= '2026-03-21'"),
            "{sql}"
        );
        // One open member opens the scan on time.
        let open = IocSpec {
            since: None,
            until: None,
            ..b.clone()
        };
        let sql = IocSpec::compile_shared(&[a.clone(), open], &dt)
            .unwrap()
            .sql;
        assert!(!sql.contains("ts >=") && !sql.contains("dt >="), "{sql}");
        // A member's filter names its own indicators and range only.
        let f = a.predicate(&dt).unwrap();
        assert!(f.contains("'10.0.0.1'") && !f.contains("10.0.0.2"), "{f}");
        assert!(
            f.contains("ts >= TIMESTAMP") && f.contains("dt <= '2026-03-02'"),
            "{f}"
        );
        assert!(IocSpec::default().predicate(&[]).is_err());
    }
}
