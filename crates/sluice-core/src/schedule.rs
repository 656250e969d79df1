//! Recurring hunts: when a schedule's next run is due (an interval or a five-field cron
//! pattern, in UTC) and the time range each run hunts over (`since = tick - range`).

use crate::hunt::HuntSpec;
use chrono::{DateTime, Duration, TimeZone, Utc};

/// The shortest interval a schedule may have: a hunt fans out to every lake it selects, so a
/// schedule faster than this is a load test, not a hunt.
pub const MIN_EVERY_SECS: i64 = 60;
/// The longest interval and range (a year).
pub const MAX_SECS: i64 = 366 * 86_400;
/// In a SQL hunt with a range, replaced by each run's bounds as timestamp literals.
pub const SINCE: &str = "{{since}}";
pub const UNTIL: &str = "{{until}}";

/// How often a schedule runs.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// Every `secs` seconds from the schedule's anchor (its creation).
    Every { secs: i64, anchor: DateTime<Utc> },
    /// At the minutes a cron pattern (`min hour day-of-month month day-of-week`) names, in UTC.
    Cron(Box<croner::Cron>),
}

impl Cadence {
    /// One of `every_secs` or `cron`, checked.
    pub fn new(
        every_secs: Option<i64>,
        cron: Option<&str>,
        anchor: DateTime<Utc>,
    ) -> Result<Cadence, String> {
        match (every_secs, cron) {
            (Some(secs), None) => {
                if !(MIN_EVERY_SECS..=MAX_SECS).contains(&secs) {
                    return Err(format!(
                        "a schedule runs every {MIN_EVERY_SECS} s to {MAX_SECS} s, got {secs}"
                    ));
                }
                Ok(Cadence::Every { secs, anchor })
            }
            (None, Some(pattern)) => {
                use croner::parser::{CronParser, Seconds, Year};
                if pattern.len() > 200 {
                    return Err("a cron pattern has at most 200 characters".into());
                }
                let cron = CronParser::builder()
                    .seconds(Seconds::Disallowed)
                    .year(Year::Disallowed)
                    .build()
                    .parse(pattern)
                    .map_err(|e| {
                        format!(
                            "{pattern:?} is not a cron pattern (minute hour day-of-month month \
                             day-of-week, in UTC): {e}"
                        )
                    })?;
                let c = Cadence::Cron(Box::new(cron));
                if c.next_after(anchor).is_none() {
                    return Err(format!("the cron pattern {pattern:?} never matches"));
                }
                Ok(c)
            }
            (Some(_), Some(_)) => Err("give either an interval or a cron pattern, not both".into()),
            (None, None) => Err("a schedule needs an interval or a cron pattern".into()),
        }
    }

    /// The first run strictly after `t`; `None` if there is none (a cron pattern for a date
    /// that never comes).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Cadence::Every { secs, anchor } => {
                if t < *anchor {
                    return Some(*anchor);
                }
                let since = (t - *anchor).num_seconds();
                let n = since / secs + 1;
                Some(*anchor + Duration::seconds(n.checked_mul(*secs)?))
            }
            Cadence::Cron(c) => {
                // croner works in whole seconds; a run is due at the start of its minute.
                let t = Utc.timestamp_opt(t.timestamp(), 0).single()?;
                c.find_next_occurrence(&t, false).ok()
            }
        }
    }
}

impl Cadence {
    /// The last run at or before `t`; `None` if there was none.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Cadence::Every { secs, anchor } => {
                if t < *anchor {
                    return None;
                }
                let n = (t - *anchor).num_seconds() / secs;
                Some(*anchor + Duration::seconds(n.checked_mul(*secs)?))
            }
            Cadence::Cron(c) => {
                let t = Utc.timestamp_opt(t.timestamp(), 0).single()?;
                c.find_previous_occurrence(&t, true).ok()
            }
        }
    }
}

/// A range's length, checked.
pub fn check_range(range_secs: Option<i64>) -> Result<(), String> {
    match range_secs {
        Some(r) if !(1..=MAX_SECS).contains(&r) => {
            Err(format!("a range is 1 s to {MAX_SECS} s, got {r}"))
        }
        _ => Ok(()),
    }
}

/// The hunt one run makes for the ticks `first..=last` (one tick, or the ticks missed while no
/// scheduler ran): with a range, from `range` before the first to the last — an IOC hunt's
/// `since`/`until`, a SQL hunt's `{{since}}`/`{{until}}` as timestamp literals (a SQL hunt with
/// a range must name them, or the range would be silently ignored).
pub fn hunt_at(
    hunt: &HuntSpec,
    range_secs: Option<i64>,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
) -> Result<HuntSpec, String> {
    let Some(range) = range_secs else {
        return Ok(hunt.clone());
    };
    let (since, tick) = (first - Duration::seconds(range), last);
    match hunt {
        HuntSpec::Ioc {
            ips,
            hashes,
            domains,
            lakes,
            ..
        } => Ok(HuntSpec::Ioc {
            ips: ips.clone(),
            hashes: hashes.clone(),
            domains: domains.clone(),
            since: Some(since),
            until: Some(tick),
            lakes: lakes.clone(),
        }),
        HuntSpec::Sql { sql, lakes } => {
            if !sql.contains(SINCE) && !sql.contains(UNTIL) {
                return Err(format!(
                    "a SQL hunt with a range names {SINCE} and/or {UNTIL} where each run's \
                     bounds go (e.g. WHERE ts >= {SINCE} AND ts < {UNTIL})"
                ));
            }
            let literal =
                |t: DateTime<Utc>| format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
            Ok(HuntSpec::Sql {
                sql: sql
                    .replace(SINCE, &literal(since))
                    .replace(UNTIL, &literal(tick)),
                lakes: lakes.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hunt::LakeSelector;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn intervals_run_on_their_anchors_grid() {
        let anchor = at("2026-12-07T10:00:30Z");
        let c = Cadence::new(Some(3600), None, anchor).unwrap_or_else(|e| panic!("{e}"));
        for (t, want) in [
            ("2026-12-07T09:00:00Z", "2026-12-07T10:00:30Z"),
            ("2026-12-07T10:00:30Z", "2026-12-07T11:00:30Z"),
            ("2026-12-07T10:59:59Z", "2026-12-07T11:00:30Z"),
            // Missed runs are not made up: the next is after now.
            ("2026-12-09T17:20:00Z", "2026-12-09T18:00:30Z"),
        ] {
            assert_eq!(c.next_after(at(t)), Some(at(want)), "{t}");
        }
        assert_eq!(c.latest_at_or_before(at("2026-12-07T10:00:29Z")), None);
        assert_eq!(
            c.latest_at_or_before(at("2026-12-09T17:20:00Z")),
            Some(at("2026-12-09T17:00:30Z"))
        );
        assert_eq!(
            c.latest_at_or_before(at("2026-12-09T17:00:30Z")),
            Some(at("2026-12-09T17:00:30Z"))
        );
        let cron = Cadence::new(None, Some("0 * * * *"), anchor).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cron.latest_at_or_before(at("2026-12-09T17:20:00.5Z")),
            Some(at("2026-12-09T17:00:00Z"))
        );
        assert_eq!(
            cron.latest_at_or_before(at("2026-12-09T17:00:00Z")),
            Some(at("2026-12-09T17:00:00Z"))
        );
    }

    #[test]
    fn cron_patterns_run_at_their_minutes_in_utc() {
        let anchor = at("2026-12-07T10:17:12Z");
        let check = |pattern: &str, from: &str, want: &str| {
            let c = Cadence::new(None, Some(pattern), anchor).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                c.next_after(at(from)),
                Some(at(want)),
                "{pattern} from {from}"
            );
        };
        check("0 * * * *", "2026-12-07T10:17:12Z", "2026-12-07T11:00:00Z");
        check("0 * * * *", "2026-12-07T11:00:00Z", "2026-12-07T12:00:00Z");
        check(
            "*/15 * * * *",
            "2026-12-07T10:17:12.5Z",
            "2026-12-07T10:30:00Z",
        );
        check("30 6 * * 1", "2026-12-07T10:17:12Z", "2026-12-14T06:30:00Z");
        check("0 0 1 1 *", "2026-12-07T10:17:12Z", "2027-01-01T00:00:00Z");
    }

    #[test]
    fn bad_cadences_and_ranges_are_refused_with_a_reason() {
        let anchor = at("2026-12-07T10:00:00Z");
        for (every, cron, has) in [
            (Some(59), None, "every 60 s"),
            (Some(0), None, "every 60 s"),
            (Some(-5), None, "every 60 s"),
            (Some(MAX_SECS + 1), None, "every 60 s"),
            (None, Some("* * * *"), "not a cron pattern"),
            (None, Some("0 0 * * * *"), "not a cron pattern"),
            (None, Some("61 * * * *"), "not a cron pattern"),
            (None, Some("0 0 31 2 *"), "never matches"),
            (None, Some("<script>"), "not a cron pattern"),
            (None, Some(""), "not a cron pattern"),
            (Some(60), Some("* * * * *"), "not both"),
            (None, None, "needs an interval"),
        ] {
            let e = Cadence::new(every, cron, anchor).map(|_| ()).unwrap_err();
            assert!(e.contains(has), "{every:?} {cron:?}: {e}");
        }
        let long = "1,".repeat(150);
        assert!(Cadence::new(None, Some(&long), anchor).is_err());
        assert!(check_range(Some(0)).is_err() && check_range(Some(MAX_SECS + 1)).is_err());
        assert!(check_range(Some(86_400)).is_ok() && check_range(None).is_ok());
    }

    /// Hostile patterns (what a fuzzer sends the API) are refused or accepted, never a panic,
    /// and an accepted one answers its next run at once.
    #[test]
    fn any_pattern_is_refused_or_runs_never_a_panic() {
        let anchor = at("2026-12-07T10:00:00Z");
        let alphabet: Vec<char> = "0123456789*/,-? LW#ABCDEFGHIJKLMNOPQRSTUVWXYZ@\u{0}é"
            .chars()
            .collect();
        let mut seed: u64 = 0x5eed;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let mut accepted = 0;
        for _ in 0..20_000 {
            // Four to six fields, each a cron-like token or junk, so both sides are reached.
            let fields = 4 + next() % 3;
            let mut pattern = String::new();
            for f in 0..fields {
                if f > 0 {
                    pattern.push(' ');
                }
                let n = next() % 70;
                match next() % 8 {
                    0 => pattern.push('*'),
                    1 => pattern.push_str(&format!("*/{n}")),
                    2 => pattern.push_str(&format!("{}-{n}", next() % 70)),
                    3 => pattern.push_str(&format!("{n},{}", next() % 70)),
                    4 => pattern.push_str(&n.to_string()),
                    _ => pattern
                        .extend((0..1 + next() % 4).map(|_| alphabet[next() % alphabet.len()])),
                }
            }
            let started = std::time::Instant::now();
            let got =
                std::panic::catch_unwind(|| Cadence::new(None, Some(&pattern), anchor).map(|_| ()));
            assert!(got.is_ok(), "{pattern:?} panicked");
            if got.is_ok_and(|r| r.is_ok()) {
                accepted += 1;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "{pattern:?} took {:?}",
                started.elapsed()
            );
        }
        // Standard patterns are accepted, the rare ones too (leap day, Sunday as 7, names).
        for pattern in [
            "* * * * *",
            "*/1 * * * *",
            "0 0 29 2 *",
            "59 23 31 12 *",
            "0 0 * * 7",
            "5,35 */2 1-15 * MON-FRI",
        ] {
            let got = Cadence::new(None, Some(pattern), anchor).map(|_| ());
            assert!(got.is_ok(), "{pattern:?}: {got:?}");
        }
        // The generator reaches both sides: some random strings are patterns.
        assert!(
            accepted > 0 && accepted < 20_000,
            "{accepted} of 20000 accepted"
        );
    }

    #[test]
    fn each_run_hunts_over_the_range_ending_at_its_tick() {
        let tick = at("2026-12-07T10:00:00Z");
        let ioc = HuntSpec::Ioc {
            ips: vec!["10.0.0.1".into()],
            hashes: vec![],
            domains: vec![],
            since: None,
            until: None,
            lakes: LakeSelector::default(),
        };
        let HuntSpec::Ioc { since, until, .. } =
            hunt_at(&ioc, Some(86_400), tick, tick).unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("an IOC hunt")
        };
        assert_eq!(
            (since, until),
            (Some(at("2026-12-06T10:00:00Z")), Some(tick))
        );
        assert_eq!(hunt_at(&ioc, None, tick, tick).ok(), Some(ioc.clone()));
        // Ticks missed while no scheduler ran: one hunt from the first one's range to the last.
        let HuntSpec::Ioc { since, until, .. } =
            hunt_at(&ioc, Some(3600), at("2026-12-07T07:00:00Z"), tick)
                .unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("an IOC hunt")
        };
        assert_eq!(
            (since, until),
            (Some(at("2026-12-07T06:00:00Z")), Some(tick))
        );
        let sql = |s: &str| HuntSpec::Sql {
            sql: s.into(),
            lakes: LakeSelector::default(),
        };
        let run = hunt_at(
            &sql("SELECT * FROM events WHERE ts >= {{since}} AND ts < {{until}}"),
            Some(3600),
            tick,
            tick,
        );
        assert_eq!(
            run.ok(),
            Some(sql(
                "SELECT * FROM events WHERE ts >= TIMESTAMP '2026-12-07T09:00:00.000000Z' \
                 AND ts < TIMESTAMP '2026-12-07T10:00:00.000000Z'"
            ))
        );
        let e = hunt_at(&sql("SELECT * FROM events"), Some(3600), tick, tick).unwrap_err();
        assert!(e.contains("{{since}}"), "{e}");
    }
}
