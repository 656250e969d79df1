//! `sluice schedules`: recurring hunts through the API (docs/operations.md, "Recurring
//! hunts"): a submission made again at every tick of an interval or a cron pattern.

use crate::client::report_invalid;
use crate::cmd::jobs::JobArgs;
use crate::ctx::{Ctx, line};
use anyhow::{Result, bail};
use sluice_api::schedules::{ScheduleRequest, ScheduleView};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum SchedulesCmd {
    /// Make a hunt recurring: at every tick the elected scheduler submits it (the first tick
    /// is the next one after now; one checked now, so a mistake is found at once).
    Create(Box<CreateArgs>),
    /// The schedules (yours; operators: everyone's).
    List,
    /// One schedule: its next tick, its last job, why its last tick made none.
    Show { id: i64 },
    /// Hold a schedule's ticks until it is resumed.
    Pause { id: i64 },
    /// Let a paused schedule run again from its next tick (missed ticks are not made up).
    Resume { id: i64 },
    /// Remove a schedule (the jobs it made stay).
    Delete { id: i64 },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Unique among your schedules: letters, digits, `-`, `_`, `.`.
    name: String,
    /// Run every this long (`15m`, `1h`, `1d`; at least a minute).
    #[arg(long, value_parser = crate::parse_retention, conflicts_with = "cron")]
    every: Option<std::time::Duration>,
    /// Or at the minutes of a cron pattern, in UTC: `"0 6 * * 1-5"`.
    #[arg(long)]
    cron: Option<String>,
    /// Each run hunts over this long before its tick (`1d`): an IOC hunt's --since/--until;
    /// SQL names `{{since}}` and `{{until}}` where the bounds go.
    #[arg(long, value_parser = crate::parse_retention)]
    range: Option<std::time::Duration>,
    #[command(flatten)]
    job: JobArgs,
    /// Whose schedule it is (default `cli`; with --url it is the token's owner).
    #[arg(long, env = "SLUICE_OWNER")]
    owner: Option<String>,
}

impl SchedulesCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        match self {
            SchedulesCmd::Create(a) => {
                if ctx.url.is_some() && a.owner.is_some() {
                    bail!(
                        "--owner (or SLUICE_OWNER) does not apply with --url: schedules belong to the token's owner"
                    );
                }
                if a.every.is_none() && a.cron.is_none() {
                    bail!("a schedule needs --every DURATION or --cron PATTERN");
                }
                let c = ctx.api(a.owner.as_deref().unwrap_or("cli")).await?;
                let secs = |d: Option<std::time::Duration>| {
                    d.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                };
                let req = ScheduleRequest {
                    name: a.name,
                    every_secs: secs(a.every),
                    cron: a.cron,
                    range_secs: secs(a.range),
                    submit: a.job.request()?,
                };
                let s = c
                    .schedule_create(&req)
                    .await
                    .inspect_err(|e| report_invalid(e, ctx.json()))?;
                ctx.show_as(&s, |s, out| {
                    line!(
                        out,
                        "schedule {} ({}) made: first run at {}",
                        s.id,
                        s.name,
                        s.next_at.to_rfc3339()
                    );
                })?;
            }
            SchedulesCmd::List => {
                let c = ctx.api("cli").await?;
                ctx.show_as(c.schedules().await?.as_slice(), list)?;
            }
            SchedulesCmd::Show { id } => {
                let c = ctx.api("cli").await?;
                ctx.show_as(&c.schedule(id).await?, |s, out| {
                    list(std::slice::from_ref(s), out)
                })?;
            }
            SchedulesCmd::Pause { id } | SchedulesCmd::Resume { id } => {
                let pause = matches!(self, SchedulesCmd::Pause { .. });
                let c = ctx.api("cli").await?;
                let s = c.schedule_hold(id, pause).await?;
                ctx.show_as(&s, |s, out| {
                    if s.paused {
                        line!(out, "schedule {} ({}) paused", s.id, s.name);
                    } else {
                        line!(
                            out,
                            "schedule {} ({}) runs next at {}",
                            s.id,
                            s.name,
                            s.next_at.to_rfc3339()
                        );
                    }
                })?;
            }
            SchedulesCmd::Delete { id } => {
                let c = ctx.api("cli").await?;
                c.schedule_delete(id).await?;
                ctx.show_as(&serde_json::json!({"deleted": id}), |_, out| {
                    line!(out, "schedule {id} removed (the jobs it made stay)");
                })?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn list(all: &[ScheduleView], out: &mut String) {
    for s in all {
        let cadence = match (&s.cron, s.every_secs) {
            (Some(c), _) => format!("cron {c:?}"),
            (None, Some(secs)) => format!(
                "every {}",
                sluice_core::human_duration(std::time::Duration::from_secs(secs.max(0) as u64))
            ),
            (None, None) => "never".into(),
        };
        let state = if s.paused {
            format!("paused by {}", s.paused_by.as_deref().unwrap_or("?"))
        } else {
            format!("next {}", s.next_at.to_rfc3339())
        };
        line!(
            out,
            "{:>5}  {:<24} {:<12} {cadence}, {state}, {} runs{}{}",
            s.id,
            s.name,
            s.owner,
            s.runs,
            s.last_job
                .map(|j| format!(", last job {j}"))
                .unwrap_or_default(),
            s.last_error
                .as_deref()
                .map(|e| format!(", last tick made none: {e}"))
                .unwrap_or_default()
        );
    }
    line!(out, "{} schedules", all.len());
}
