//! The operator verbs of the backlog: `pause`, `resume`, `pauses`, `backlog`, `drain`, `quota`
//! (through the API; see `client`).

use crate::ctx::{Ctx, Render, human_secs, line};
use anyhow::Result;
use sluice_api::backlog::BacklogReport;
use sluice_api::wire::{IntakeView, PauseRequest, PauseView, Paused, Resumed};
use sluice_core::JobId;
use std::process::ExitCode;
use std::time::Duration;

/// Exactly one pause target.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct PauseTargetArgs {
    /// Everything.
    #[arg(long)]
    all: bool,
    /// One provider scope, e.g. aws:123456789012.
    #[arg(long)]
    scope: Option<String>,
    /// One owner's jobs.
    #[arg(long)]
    owner: Option<String>,
    /// One job.
    #[arg(long)]
    job: Option<JobId>,
}

impl PauseTargetArgs {
    fn target(&self) -> sluice_store::PauseTarget {
        use sluice_store::PauseTarget as T;
        match (self.all, &self.scope, &self.owner, self.job) {
            (_, Some(s), _, _) => T::Scope(s.clone()),
            (_, _, Some(o), _) => T::Owner(o.clone()),
            (_, _, _, Some(j)) => T::Job(j),
            _ => T::All,
        }
    }
}

/// `sluice pause`.
#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    #[command(flatten)]
    target: PauseTargetArgs,
    /// Why (shown to researchers in `status`).
    #[arg(long)]
    reason: String,
    /// Who pauses (default: $USER; with --url: the token's owner).
    #[arg(long, env = "USER", default_value = "operator")]
    by: String,
    /// Also hand back the target's running tasks now (no attempt spent); their workers
    /// stop them at their next heartbeat. Without it, running tasks finish.
    #[arg(long)]
    now: bool,
}

impl PauseArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let c = ctx.api(&self.by).await?;
        let p = c
            .pause(&PauseRequest {
                target: self.target.target().key(),
                reason: self.reason,
                now: self.now,
            })
            .await?;
        ctx.show(&PausedNow {
            paused: p,
            now: self.now,
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(serde::Serialize)]
struct PausedNow {
    #[serde(flatten)]
    paused: Paused,
    #[serde(skip)]
    now: bool,
}

impl Render for PausedNow {
    fn render(&self, out: &mut String) {
        let p = &self.paused.pause;
        line!(out, "paused {}: {} (by {})", p.target, p.reason, p.by);
        if self.now {
            line!(
                out,
                "{} running tasks handed back (no attempt spent)",
                self.paused.handed_back
            );
        }
    }
}

/// `sluice resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    target: PauseTargetArgs,
    #[arg(long, env = "USER", default_value = "operator")]
    by: String,
}

impl ResumeArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let c = ctx.api(&self.by).await?;
        ctx.show(&c.resume(&self.target.target().key()).await?)?;
        Ok(ExitCode::SUCCESS)
    }
}

impl Render for Resumed {
    fn render(&self, out: &mut String) {
        line!(out, "resumed {}", self.resumed);
    }
}

/// `sluice pauses`.
pub async fn pauses(ctx: &Ctx) -> Result<ExitCode> {
    let c = ctx.api("cli").await?;
    ctx.show_as(c.pauses().await?.as_slice(), pause_list)?;
    Ok(ExitCode::SUCCESS)
}

fn pause_list(ps: &[PauseView], out: &mut String) {
    for p in ps {
        line!(
            out,
            "{:<32} since {}  by {}: {}",
            p.target,
            p.at.to_rfc3339(),
            p.by,
            p.reason
        );
    }
    line!(out, "{} pauses in force", ps.len());
}

/// `sluice backlog`: the task counters by scope with each scope's drain bound.
pub async fn backlog(ctx: &Ctx) -> Result<ExitCode> {
    let c = ctx.api("cli").await?;
    ctx.show(&c.backlog().await?)?;
    Ok(ExitCode::SUCCESS)
}

impl Render for BacklogReport {
    fn render(&self, out: &mut String) {
        let secs = |s: Option<f64>| match s {
            None => "unlimited".to_string(),
            Some(s) if s.is_infinite() => "never (rate 0)".to_string(),
            Some(s) => human_secs(s),
        };
        line!(
            out,
            "{:<28} {:>9} {:>9} {:>12}  {:<20} DRAIN AT BUDGET",
            "SCOPE",
            "PENDING",
            "RUNNING",
            "EST CALLS",
            "LIMITED BY"
        );
        for s in &self.scopes {
            line!(
                out,
                "{:<28} {:>9} {:>9} {:>12}  {:<20} {}",
                s.scope,
                s.pending,
                s.running,
                s.est_calls,
                s.limited_by.as_deref().unwrap_or("-"),
                secs(s.drain_secs)
            );
        }
        line!(
            out,
            "{} pending, {} running; oldest pending task waited {}; the backlog drains in {} at the current budgets, no sooner",
            self.pending,
            self.running,
            self.oldest_pending_secs.map_or("-".into(), human_secs),
            secs(self.drain_secs)
        );
    }
}

/// `sluice drain`.
#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// Why (submitters see it).
    #[arg(long, default_value = "draining the backlog")]
    reason: String,
    #[arg(long, env = "USER", default_value = "operator")]
    by: String,
    /// Wait until the backlog is empty.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long (exit 3); intake stays closed.
    #[arg(long, requires = "wait", value_parser = crate::parse_duration)]
    timeout: Option<Duration>,
    /// Open intake again instead.
    #[arg(long, conflicts_with_all = ["wait", "timeout"])]
    end: bool,
}

/// Where intake stands after a drain verb (the JSON is this, the text a sentence).
#[derive(serde::Serialize)]
struct Drain {
    intake: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    running: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drained: Option<bool>,
    #[serde(skip)]
    waited: Option<Duration>,
}

impl Render for Drain {
    fn render(&self, out: &mut String) {
        if self.intake == "open" {
            line!(out, "intake open: new jobs are accepted again");
        } else if self.drained == Some(true) {
            line!(
                out,
                "drained: nothing pending or running; intake stays closed"
            );
        } else if let Some(w) = self.waited {
            line!(
                out,
                "not drained after {w:?}: {} tasks pending, {} running (paused or held scopes wait; see `sluice backlog`)",
                self.pending.unwrap_or(0),
                self.running.unwrap_or(0)
            );
        }
    }
}

impl DrainArgs {
    /// Closes (or with `--end` reopens) intake; with `--wait`, polls intake until nothing is
    /// pending or running.
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let c = ctx.api(&self.by).await?;
        if self.end {
            c.drain_end().await.map_err(|e| {
                match e.downcast_ref::<crate::client::ApiFailure>() {
                    Some(f) if f.status == axum::http::StatusCode::NOT_FOUND => {
                        anyhow::anyhow!("no drain to end: intake is open")
                    }
                    _ => e,
                }
            })?;
            ctx.show(&Drain {
                intake: "open",
                reason: None,
                pending: None,
                running: None,
                drained: None,
                waited: None,
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut v = c.drain(&self.reason).await?;
        let reason = v.reason.clone().unwrap_or_default();
        let say = |s: String| {
            if !ctx.json() {
                println!("{s}");
            }
        };
        say(format!(
            "intake closed ({reason}): new jobs are refused until `sluice drain --end`; {} tasks pending, {} running",
            v.pending, v.running
        ));
        let started = std::time::Instant::now();
        while self.wait && !v.drained {
            if self.timeout.is_some_and(|t| started.elapsed() >= t) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let next: IntakeView = c.intake().await?;
            if (next.pending, next.running) != (v.pending, v.running) {
                say(format!(
                    "{} tasks pending, {} running",
                    next.pending, next.running
                ));
            }
            v = next;
        }
        ctx.show(&Drain {
            intake: "closed",
            reason: Some(reason),
            pending: Some(v.pending),
            running: Some(v.running),
            drained: Some(v.drained),
            waited: self.wait.then(|| started.elapsed()),
        })?;
        Ok(if self.wait && !v.drained {
            ExitCode::from(3)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// Whose quota: one owner's, or the default of every owner without one of their own.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct QuotaOwnerArgs {
    /// One owner (as their tokens name them).
    #[arg(long)]
    owner: Option<String>,
    /// Every owner without a quota of their own.
    #[arg(long)]
    default: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum QuotaCmd {
    /// Let at most N tasks of an owner run at once, across every worker, from the next claim
    /// on (their other tasks wait; other owners' take the slots).
    Set {
        #[command(flatten)]
        who: QuotaOwnerArgs,
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
        max_running: i64,
        /// Who sets it (with --url: the token's owner).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// Remove a quota: the owner falls back to the default (or no limit).
    Clear {
        #[command(flatten)]
        who: QuotaOwnerArgs,
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// The quotas set.
    List,
}

impl QuotaCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        match self {
            QuotaCmd::Set {
                who,
                max_running,
                by,
            } => {
                let c = ctx.api(&by).await?;
                let q = c
                    .quota_set(&sluice_api::wire::QuotaRequest {
                        owner: who.owner,
                        max_running,
                    })
                    .await?;
                ctx.show_as(&[q][..], quota_list)?;
            }
            QuotaCmd::Clear { who, by } => {
                let c = ctx.api(&by).await?;
                let v = c.quota_clear(who.owner.as_deref()).await?;
                let owner = who.owner.as_deref().unwrap_or("every owner");
                ctx.show_as(&v, |_, out| line!(out, "quota of {owner} removed"))?;
            }
            QuotaCmd::List => {
                let c = ctx.api("cli").await?;
                ctx.show_as(c.quotas().await?.as_slice(), quota_list)?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn quota_list(qs: &[sluice_api::wire::QuotaView], out: &mut String) {
    for q in qs {
        line!(
            out,
            "{:<24} at most {} running  (set by {} at {})",
            q.owner.as_deref().unwrap_or("(every owner)"),
            q.max_running,
            q.by,
            q.at.to_rfc3339()
        );
    }
    line!(out, "{} quotas", qs.len());
}
