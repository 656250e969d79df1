//! Leader election over a lease row: one holder per role at a time, a term that grows at
//! every change of holder (a fencing number for the leader's work).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who holds a role's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    pub name: String,
    pub holder: String,
    /// +1 at every change of holder: a fencing number for the leader's work.
    pub term: i64,
    pub expires_at: DateTime<Utc>,
    pub elected_at: DateTime<Utc>,
}

impl Leadership {
    pub fn is(&self, holder: &str) -> bool {
        self.holder == holder
    }

    /// One election round on this lease by `holder`: the holder renews (same term), anyone
    /// takes an expired lease (next term), otherwise nothing changes (`None`).
    pub fn elect(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Option<Leadership> {
        if self.holder == holder {
            Some(Leadership {
                expires_at,
                ..self.clone()
            })
        } else if self.expires_at <= now {
            Some(Leadership {
                name: self.name.clone(),
                holder: holder.to_string(),
                term: self.term + 1,
                expires_at,
                elected_at: now,
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_holder_renews_and_others_take_only_an_expired_lease() {
        let t = |s: i64| {
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
        };
        let cur = Leadership {
            name: "scheduler".into(),
            holder: "a".into(),
            term: 3,
            expires_at: t(10),
            elected_at: t(0),
        };
        // (holder, now) → (holder, term) after the round, or no change.
        let cases = [
            ("a", 5, Some(("a", 3))),
            ("a", 20, Some(("a", 3))),
            ("b", 5, None),
            ("b", 10, Some(("b", 4))),
            ("b", 20, Some(("b", 4))),
        ];
        for (holder, now, want) in cases {
            let got = cur.elect(holder, t(now), t(now + 15));
            assert_eq!(
                got.as_ref().map(|l| (l.holder.as_str(), l.term)),
                want,
                "{holder} at {now}"
            );
            if let Some(l) = got {
                assert_eq!(l.expires_at, t(now + 15));
                assert_eq!(
                    l.elected_at,
                    if l.term == cur.term {
                        cur.elected_at
                    } else {
                        t(now)
                    }
                );
            }
        }
    }
}
