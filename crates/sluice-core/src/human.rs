//! Durations, sizes and errors as people read them in messages and on the terminal.

use std::time::Duration;

/// `250ms`, `6s`, `1m35s`, `10m00s`, `1h06m`: whole seconds rounded up; under a second, in
/// milliseconds.
pub fn human_duration(d: Duration) -> String {
    if !d.is_zero() && d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `512 MiB`, `2 GiB`, `64 KiB`.
pub fn human_bytes(b: u64) -> String {
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{} GiB", b >> 30)
    } else if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{} KiB", b >> 10)
    }
}

/// An error and its causes on one line, each cause said once: a cause whose text the line
/// already holds (a wrapper that prints its source, then the source again) is dropped.
pub fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_as_people_write_them() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(200), "200ms"),
            (Duration::from_millis(1500), "2s"),
            (Duration::from_secs(6), "6s"),
            (Duration::from_secs(95), "1m35s"),
            (Duration::from_secs(600), "10m00s"),
            (Duration::from_secs(4000), "1h06m"),
        ] {
            assert_eq!(human_duration(d), want, "{d:?}");
        }
        for (b, want) in [
            (512 << 20, "512 MiB"),
            (2 << 30, "2 GiB"),
            ((1 << 30) + (1 << 20), "1025 MiB"),
            (64 << 10, "64 KiB"),
        ] {
            assert_eq!(human_bytes(b), want, "{b}");
        }
    }

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn an_error_line_says_each_cause_once() {
        let chain = |links: &[&'static str]| {
            links
                .iter()
                .rev()
                .fold(None, |inner, l| Some(Box::new(E(l, inner))))
                .map(|b| *b)
                .unwrap_or(E("", None))
        };
        let cases: &[(&[&str], &str)] = &[
            (&["opening database"], "opening database"),
            (
                &["opening database", "pool timed out"],
                "opening database: pool timed out",
            ),
            // The store's error prints its source; the chain then has the source again.
            (
                &[
                    "opening database",
                    "migration failed: while executing migration 8: duplicate column name: dry_until",
                    "while executing migration 8: duplicate column name: dry_until",
                    "duplicate column name: dry_until",
                ],
                "opening database: migration failed: while executing migration 8: duplicate column name: dry_until",
            ),
        ];
        for (links, want) in cases {
            assert_eq!(error_line(&chain(links)), *want);
        }
    }
}
