//! Who may do what, between researchers: roles, the priority a role may set, the lakes a token
//! may hunt, and each owner's share of the running tasks (quotas). Pure rules; the API and the
//! claim apply them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an API token may do. Researchers see and act on their own jobs only; operators see
/// every job, re-prioritise any and use the operator endpoints; admins also manage tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Researcher,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Researcher => "researcher",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "researcher" => Some(Role::Researcher),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Priorities run from `-MAX_PRIORITY` to `MAX_PRIORITY`.
pub const MAX_PRIORITY: i32 = 100;

/// The highest priority researchers may give a job unless configured otherwise: room for
/// "urgent" above the default 0, well below what operators may set.
pub const DEFAULT_RESEARCHER_MAX_PRIORITY: i32 = 10;

/// The highest priority each role may set: researchers up to a configured ceiling, operators
/// and admins anything in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorityCeiling {
    pub researcher: i32,
}

impl Default for PriorityCeiling {
    fn default() -> Self {
        PriorityCeiling {
            researcher: DEFAULT_RESEARCHER_MAX_PRIORITY,
        }
    }
}

impl PriorityCeiling {
    pub fn max_for(&self, role: Role) -> i32 {
        match role {
            Role::Researcher => self.researcher.clamp(-MAX_PRIORITY, MAX_PRIORITY),
            Role::Operator | Role::Admin => MAX_PRIORITY,
        }
    }

    /// `Err` says why `role` may not set `priority`.
    pub fn check(&self, role: Role, priority: i32) -> Result<(), String> {
        if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&priority) {
            return Err(format!(
                "priority must be {} to {MAX_PRIORITY}, got {priority}",
                -MAX_PRIORITY
            ));
        }
        let max = self.max_for(role);
        if priority > max {
            return Err(format!(
                "priority {priority} is above the {} ceiling of {max}: an operator can raise a job's priority (`sluice priority JOB N`)",
                role.as_str()
            ));
        }
        Ok(())
    }
}

/// Most tag groups one token may carry, and most tags in a group.
pub const MAX_ACCESS_GROUPS: usize = 32;
pub const MAX_ACCESS_TAGS: usize = 16;

/// The lakes a token may hunt, list and read results of: those whose tags match every tag of
/// at least one group. No group: every lake. `[{team: red}, {customer: acme, env: prod}]`
/// opens the red team's lakes and acme's production lakes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LakeAccess(pub Vec<BTreeMap<String, String>>);

impl LakeAccess {
    /// Every lake.
    pub fn all() -> LakeAccess {
        LakeAccess(Vec::new())
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a lake with `tags` is open. An empty group opens nothing (a group is refused
    /// empty at creation; a row edited by hand must not open every lake).
    pub fn allows(&self, tags: &BTreeMap<String, String>) -> bool {
        self.is_all()
            || self
                .0
                .iter()
                .any(|g| !g.is_empty() && g.iter().all(|(k, v)| tags.get(k) == Some(v)))
    }

    /// `Err` says what is wrong: an empty group would open every lake by accident, so it is
    /// refused (no group at all is how a token gets every lake).
    pub fn check(&self) -> Result<(), String> {
        if self.0.len() > MAX_ACCESS_GROUPS {
            return Err(format!(
                "at most {MAX_ACCESS_GROUPS} lake tag groups per token, got {}",
                self.0.len()
            ));
        }
        for g in &self.0 {
            if g.is_empty() {
                return Err("a lake tag group needs at least one tag (key=value)".into());
            }
            if g.len() > MAX_ACCESS_TAGS {
                return Err(format!(
                    "at most {MAX_ACCESS_TAGS} tags per group, got {}",
                    g.len()
                ));
            }
            for (k, v) in g {
                if k.is_empty() || k.len() > 100 || v.len() > 200 {
                    return Err(format!(
                        "lake tag {k:?}={v:?}: keys are 1 to 100 characters, values up to 200"
                    ));
                }
            }
        }
        Ok(())
    }

    /// One group from `key=value,key=value` (the CLI's `--lakes`).
    pub fn parse_group(s: &str) -> Result<BTreeMap<String, String>, String> {
        let mut g = BTreeMap::new();
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not key=value (in {s:?})"))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(format!("empty tag key in {s:?}"));
            }
            if g.insert(k.to_string(), v.trim().to_string()).is_some() {
                return Err(format!("tag {k:?} given twice in {s:?}"));
            }
        }
        Ok(g)
    }
}

impl std::fmt::Display for LakeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_all() {
            return f.write_str("every lake");
        }
        let groups: Vec<String> = self
            .0
            .iter()
            .map(|g| {
                g.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        f.write_str(&groups.join(" | "))
    }
}

/// Whose running tasks a quota limits: one owner, or every owner without one of their own
/// (in JSON: the owner, or `null`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "Option<String>", into = "Option<String>")]
pub enum QuotaTarget {
    Default,
    Owner(String),
}

impl From<Option<String>> for QuotaTarget {
    fn from(o: Option<String>) -> Self {
        o.map_or(QuotaTarget::Default, QuotaTarget::Owner)
    }
}

impl From<QuotaTarget> for Option<String> {
    fn from(t: QuotaTarget) -> Self {
        match t {
            QuotaTarget::Default => None,
            QuotaTarget::Owner(o) => Some(o),
        }
    }
}

impl QuotaTarget {
    /// The stored key: `*` for the default (no owner may be named `*`).
    pub fn key(&self) -> &str {
        match self {
            QuotaTarget::Default => "*",
            QuotaTarget::Owner(o) => o,
        }
    }

    pub fn from_key(k: &str) -> QuotaTarget {
        match k {
            "*" => QuotaTarget::Default,
            o => QuotaTarget::Owner(o.to_string()),
        }
    }
}

impl std::fmt::Display for QuotaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaTarget::Default => f.write_str("every owner"),
            QuotaTarget::Owner(o) => write!(f, "owner {o}"),
        }
    }
}

/// The most tasks each owner may have running at once, across every worker: so that one
/// owner's backlog cannot hold every slot while others wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quotas {
    pub default: Option<i64>,
    pub owners: BTreeMap<String, i64>,
}

impl Quotas {
    pub fn set(&mut self, target: QuotaTarget, max_running: i64) {
        match target {
            QuotaTarget::Default => self.default = Some(max_running),
            QuotaTarget::Owner(o) => {
                self.owners.insert(o, max_running);
            }
        }
    }

    /// The owner's limit: their own, else the default; `None`: unlimited.
    pub fn limit(&self, owner: &str) -> Option<i64> {
        self.owners.get(owner).copied().or(self.default)
    }

    /// How many more tasks each owner may start, given the tasks running now.
    pub fn rooms(&self, running: &BTreeMap<String, i64>) -> Rooms {
        let mut rooms = Rooms {
            owners: BTreeMap::new(),
            default: self.default,
        };
        let owners = self.owners.keys().chain(running.keys());
        for o in owners {
            if let Some(max) = self.limit(o) {
                let n = running.get(o).copied().unwrap_or(0);
                rooms.owners.insert(o.clone(), (max - n).max(0));
            }
        }
        rooms
    }
}

/// How many more tasks each owner may start: listed owners, and `default` for every other
/// (`None`: unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rooms {
    pub owners: BTreeMap<String, i64>,
    pub default: Option<i64>,
}

impl Rooms {
    /// Owners who may start nothing now.
    pub fn full(&self) -> impl Iterator<Item = &str> {
        self.owners
            .iter()
            .filter(|(_, r)| **r <= 0)
            .map(|(o, _)| o.as_str())
    }

    /// `n` tasks of `owner` started; true when that filled the owner's room.
    pub fn take(&mut self, owner: &str, n: i64) -> bool {
        let room = match self.owners.get_mut(owner) {
            Some(r) => r,
            None => match self.default {
                Some(d) => self.owners.entry(owner.to_string()).or_insert(d),
                None => return false,
            },
        };
        *room = (*room - n).max(0);
        *room == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_token_opens_the_lakes_of_any_of_its_groups() {
        let red = tags(&[("team", "red")]);
        let acme_prod = tags(&[("customer", "acme"), ("env", "prod")]);
        let access = LakeAccess(vec![red.clone(), acme_prod.clone()]);
        // (lake tags, allowed)
        let cases = [
            (tags(&[("team", "red"), ("env", "dev")]), true),
            (tags(&[("customer", "acme"), ("env", "prod")]), true),
            (tags(&[("customer", "acme"), ("env", "dev")]), false),
            (tags(&[("team", "blue")]), false),
            (tags(&[]), false),
        ];
        for (lake, want) in cases {
            assert_eq!(access.allows(&lake), want, "{lake:?}");
            assert!(LakeAccess::all().allows(&lake));
        }
        assert_eq!(access.to_string(), "team=red | customer=acme,env=prod");
    }

    #[test]
    fn malformed_access_is_refused_with_a_reason() {
        // (group, error contains)
        let cases = [
            ("team", "not key=value"),
            ("=red", "empty tag key"),
            ("team=red,team=blue", "given twice"),
        ];
        for (s, want) in cases {
            let e = LakeAccess::parse_group(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
        assert_eq!(
            LakeAccess::parse_group("team=red, env = prod").unwrap(),
            tags(&[("team", "red"), ("env", "prod")])
        );
        let empty = LakeAccess(vec![BTreeMap::new()]);
        assert!(empty.check().unwrap_err().contains("at least one tag"));
        assert!(
            !empty.allows(&tags(&[("team", "red")])),
            "an empty group opens nothing"
        );
        let many = LakeAccess(vec![tags(&[("a", "b")]); MAX_ACCESS_GROUPS + 1]);
        assert!(many.check().is_err());
        assert!(LakeAccess(vec![tags(&[("team", "red")])]).check().is_ok());
    }

    #[test]
    fn researchers_set_priorities_up_to_their_ceiling() {
        let c = PriorityCeiling { researcher: 10 };
        // (role, priority, allowed)
        let cases = [
            (Role::Researcher, 10, true),
            (Role::Researcher, 11, false),
            (Role::Researcher, -100, true),
            (Role::Operator, 100, true),
            (Role::Admin, 100, true),
            (Role::Admin, 101, false),
            (Role::Operator, -101, false),
        ];
        for (role, p, want) in cases {
            assert_eq!(c.check(role, p).is_ok(), want, "{role:?} {p}");
        }
        let e = c.check(Role::Researcher, 50).unwrap_err();
        assert!(e.contains("researcher ceiling of 10"), "{e}");
    }

    #[test]
    fn rooms_follow_each_owners_quota_or_the_default() {
        let running: BTreeMap<String, i64> =
            [("alice".into(), 8), ("bob".into(), 1), ("carol".into(), 3)].into();
        let mut q = Quotas::default();
        assert_eq!(
            q.rooms(&running),
            Rooms::default(),
            "no quota: no room kept"
        );
        q.set(QuotaTarget::Default, 4);
        q.set(QuotaTarget::Owner("carol".into()), 10);
        q.set(QuotaTarget::Owner("dave".into()), 2);
        let rooms = q.rooms(&running);
        let want: BTreeMap<String, i64> = [
            ("alice".into(), 0),
            ("bob".into(), 3),
            ("carol".into(), 7),
            ("dave".into(), 2),
        ]
        .into();
        assert_eq!(rooms.owners, want);
        assert_eq!(rooms.default, Some(4));
        assert_eq!(rooms.full().collect::<Vec<_>>(), ["alice"]);
        let mut rooms = rooms;
        assert!(!rooms.take("bob", 2));
        assert!(rooms.take("bob", 1), "bob's third task fills his room");
        assert!(rooms.take("erin", 4), "the default applies to a new owner");
        assert!(!Rooms::default().take("erin", 100), "unlimited");
    }
}
