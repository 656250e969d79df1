//! The one progress widget of the CLI (`status --watch`, the demo): a bar per job on a
//! terminal, a line a second otherwise, nothing with `--output json`.

use crate::ctx::human_secs;
use sluice_api::wire::JobView;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    json: bool,
    bars: Option<(indicatif::MultiProgress, Vec<indicatif::ProgressBar>)>,
    last_line: Option<Instant>,
}

/// A job's state, rows, failures, ETA and why it waits, in one phrase.
pub fn summary(j: &JobView) -> String {
    let mut m = format!("{} {} rows", j.state, j.rows_found);
    if j.lakes.failed > 0 {
        m.push_str(&format!(", {} failed", j.lakes.failed));
    }
    if let Some(eta) = j.eta_secs {
        m.push_str(&format!(", eta {}", human_secs(eta)));
    }
    if let Some(w) = j.waiting.first() {
        m.push_str(&format!("; waiting: {w}"));
    }
    m
}

fn finished(j: &JobView) -> u64 {
    (j.lakes.done + j.lakes.failed + j.lakes.cancelled).max(0) as u64
}

impl Progress {
    /// A widget for `jobs`, each shown with its label.
    pub fn new(json: bool, jobs: &[(&str, &JobView)]) -> Progress {
        let bars = (!json && std::io::stderr().is_terminal()).then(|| {
            let multi = indicatif::MultiProgress::new();
            let style = indicatif::ProgressStyle::with_template(
                "{prefix:<22} [{bar:32}] {pos:>4}/{len:<4} lakes {elapsed:>4}  {wide_msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bars = jobs
                .iter()
                .map(|(label, j)| {
                    let b = multi.add(indicatif::ProgressBar::new(j.lakes.total.max(0) as u64));
                    b.set_style(style.clone());
                    b.set_prefix(format!("job {} {label}", j.id).trim_end().to_string());
                    b
                })
                .collect();
            (multi, bars)
        });
        Progress {
            json,
            bars,
            last_line: None,
        }
    }

    /// A line of its own, above the bars.
    pub fn say(&self, s: &str) {
        if self.json {
            return;
        }
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(s);
            }
            None => println!("{s}"),
        }
    }

    /// The jobs as they are now (in the order they were given to [`Progress::new`]).
    pub fn update(&mut self, jobs: &[JobView]) {
        if self.json {
            return;
        }
        if let Some((_, bars)) = &self.bars {
            for (b, j) in bars.iter().zip(jobs) {
                b.set_length(j.lakes.total.max(0) as u64);
                b.set_position(finished(j));
                b.set_message(summary(j));
            }
            return;
        }
        if self
            .last_line
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_line = Some(Instant::now());
        let line: Vec<String> = jobs
            .iter()
            .map(|j| {
                format!(
                    "job {} {}/{} lakes, {}",
                    j.id,
                    j.lakes.done,
                    j.lakes.total,
                    summary(j)
                )
            })
            .collect();
        println!("  {}", line.join(" | "));
    }

    /// Leaves the bars as they are (the demo's record).
    pub fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for b in bars {
                b.finish();
            }
        }
    }

    /// Removes the bars (a final line follows).
    pub fn clear(&self) {
        if let Some((_, bars)) = &self.bars {
            for b in bars {
                b.finish_and_clear();
            }
        }
    }
}
