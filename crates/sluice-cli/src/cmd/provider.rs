//! Operator verbs of the provider guard (`sluice budget …`, `sluice breaker …`), the
//! simulator (`sluice sim`), and the guard's settings shared by `sluice worker`.

use crate::ctx::{Ctx, line};
use anyhow::{Context, Result, bail};
use sluice_api::wire::{BreakerView, BudgetRequest, BudgetView};
use sluice_worker::GuardConfig;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub enum BudgetCmd {
    /// Create or change a scope's call budget. Set the root `*` (the provider-wide limit)
    /// first; other scopes hang under it (or under `--parent`).
    Set {
        scope: String,
        /// Calls per second.
        #[arg(long, value_parser = finite)]
        rate: f64,
        /// Calls that may go at once after a quiet spell.
        #[arg(long, value_parser = finite)]
        burst: f64,
        #[arg(long)]
        parent: Option<String>,
        #[command(flatten)]
        ramp: RampArgs,
    },
    /// Every budget: rate, effective rate (after throttling or during slow start), tokens.
    List,
}

/// How the scope's effective rate moves (each flag optional; unset: the scope keeps its
/// ramp, the defaults at first).
#[derive(Debug, Clone, clap::Args)]
pub struct RampArgs {
    /// Slow start doubles, and growth adds `--ramp-increase`, once per this interval
    /// (default 2s).
    #[arg(long, value_parser = crate::parse_duration)]
    ramp_interval: Option<Duration>,
    /// After a breaker closes or a pause lifts, restart at this fraction of the rate
    /// (0 < f <= 1, default 0.1).
    #[arg(long, value_parser = finite)]
    ramp_start: Option<f64>,
    /// A throttle never cuts below this fraction of the rate (default 0.02).
    #[arg(long, value_parser = finite)]
    ramp_min: Option<f64>,
    /// After a cut, grow by this fraction of the rate per interval (default 0.05).
    #[arg(long, value_parser = finite)]
    ramp_increase: Option<f64>,
}

impl RampArgs {
    fn ramp(&self) -> Option<sluice_api::wire::Ramp> {
        let r = sluice_api::wire::Ramp {
            interval_secs: self.ramp_interval.map(|d| d.as_secs_f64()),
            start_fraction: self.ramp_start,
            min_fraction: self.ramp_min,
            increase: self.ramp_increase,
        };
        (r != sluice_api::wire::Ramp::default()).then_some(r)
    }
}

/// A number JSON can carry (the budget goes to the API as JSON): no NaN or infinity.
fn finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("{s:?} must be a finite number")),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GuardMode {
    On,
    Off,
}

#[derive(Debug, clap::Subcommand)]
pub enum BreakerCmd {
    /// Every breaker that ever opened, with its state and next probe time.
    List,
    /// Close a scope's breaker now (the scope then ramps up from slow start).
    Reset {
        scope: String,
        /// Who resets it (with --url: the token's owner).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
}

/// The guard's settings on `sluice worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct GuardArgs {
    /// `off` sends provider calls unmetered, without budgets or breakers: only to replay the
    /// incident (`make replay-outage`), never in production.
    #[arg(long, env = "SLUICE_PROVIDER_GUARD", value_enum, default_value_t = GuardMode::On)]
    pub provider_guard: GuardMode,
    /// Throttled answers (within a minute) that open a scope's breaker.
    #[arg(long, env = "SLUICE_BREAKER_THRESHOLD", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    breaker_threshold: u32,
    /// First cooldown of a breaker opened by throttling (doubles at each reopening).
    #[arg(long, env = "SLUICE_BREAKER_COOLDOWN", default_value = "30s", value_parser = crate::parse_duration)]
    breaker_cooldown: Duration,
    /// First cooldown of a breaker opened by an account freeze.
    #[arg(long, env = "SLUICE_BREAKER_FROZEN_COOLDOWN", default_value = "15m", value_parser = crate::parse_duration)]
    breaker_frozen_cooldown: Duration,
    /// Longest cooldown.
    #[arg(long, env = "SLUICE_BREAKER_MAX_COOLDOWN", default_value = "6h", value_parser = crate::parse_duration)]
    breaker_max_cooldown: Duration,
    /// How long leased budget tokens may be held before they are forfeited.
    #[arg(long, env = "SLUICE_BUDGET_HOLD", default_value = "250ms", value_parser = crate::parse_duration)]
    budget_hold: Duration,
    /// How long a call waits for a budget token before its task is deferred.
    #[arg(long, env = "SLUICE_BUDGET_MAX_WAIT", default_value = "10s", value_parser = crate::parse_duration)]
    budget_max_wait: Duration,
}

impl GuardArgs {
    pub fn config(&self) -> Result<GuardConfig> {
        if self.budget_hold.is_zero() || self.budget_hold > Duration::from_secs(10) {
            bail!("--budget-hold must be between 1ms and 10s");
        }
        let mut cfg = GuardConfig {
            hold: self.budget_hold,
            max_wait: self.budget_max_wait,
            ..Default::default()
        };
        cfg.breaker.failure_threshold = self.breaker_threshold;
        cfg.breaker.cooldown = self.breaker_cooldown.max(Duration::from_millis(100));
        cfg.breaker.frozen_cooldown = self.breaker_frozen_cooldown.max(Duration::from_millis(100));
        cfg.breaker.max_cooldown = self
            .breaker_max_cooldown
            .max(cfg.breaker.cooldown)
            .max(cfg.breaker.frozen_cooldown);
        Ok(cfg)
    }
}

impl BudgetCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let c = ctx.api("cli").await?;
        match self {
            BudgetCmd::Set {
                scope,
                rate,
                burst,
                parent,
                ramp,
            } => {
                let req = BudgetRequest {
                    rate,
                    burst,
                    parent,
                    ramp: ramp.ramp(),
                };
                ctx.show_as(&c.budget_set(&scope, &req).await?, budget_set)?;
            }
            BudgetCmd::List => ctx.show_as(c.budgets().await?.as_slice(), budget_list)?,
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn budget_set(b: &BudgetView, out: &mut String) {
    line!(
        out,
        "budget {}: {} calls/s, burst {}",
        b.scope,
        b.rate,
        b.burst
    );
}

fn budget_list(bs: &[BudgetView], out: &mut String) {
    line!(
        out,
        "{:<28} {:<12} {:>10} {:>10} {:>14} {:>10} {:>6}  DRY UNTIL",
        "SCOPE",
        "PARENT",
        "RATE/s",
        "BURST",
        "EFFECTIVE/s",
        "TOKENS",
        "USED"
    );
    for b in bs {
        line!(
            out,
            "{:<28} {:<12} {:>10.1} {:>10.1} {:>14.1} {:>10.1} {:>5.0}%  {}",
            b.scope,
            b.parent.as_deref().unwrap_or("-"),
            b.rate,
            b.burst,
            b.effective_rate,
            b.tokens,
            b.utilisation * 100.0,
            b.dry_until
                .map_or("-".into(), |t| t.format("%H:%M:%S%.3f UTC").to_string())
        );
    }
}

impl BreakerCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        match self {
            BreakerCmd::List => {
                let c = ctx.api("cli").await?;
                ctx.show_as(c.breakers().await?.as_slice(), breaker_list)?;
            }
            BreakerCmd::Reset { scope, by } => {
                let c = ctx.api(&by).await?;
                let row = c.breaker_reset(&scope).await.map_err(|e| {
                    match e.downcast_ref::<crate::client::ApiFailure>() {
                        Some(f) if f.status == axum::http::StatusCode::NOT_FOUND => anyhow::anyhow!(
                            "scope {scope:?} has no breaker (it never opened); `sluice breaker list` shows those that did"
                        ),
                        _ => e,
                    }
                })?;
                ctx.show_as(&row, |b, out| {
                    line!(
                        out,
                        "breaker {} closed; the scope ramps up from slow start",
                        b.scope
                    );
                })?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn breaker_list(bs: &[BreakerView], out: &mut String) {
    line!(
        out,
        "{:<28} {:<10} {:<26} SINCE",
        "SCOPE",
        "STATE",
        "NEXT PROBE"
    );
    for b in bs {
        let probe = match b.state.as_str() {
            "closed" => "-".to_string(),
            _ => b.probe_after.map_or("-".into(), |t| {
                t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
            }),
        };
        line!(
            out,
            "{:<28} {:<10} {:<26} {}",
            b.scope,
            b.state,
            probe,
            b.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
}

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Address to serve the S3 API, the credential endpoint and /_sim/ admin endpoints on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: std::net::SocketAddr,
    /// Folder whose sub-folders are the buckets.
    #[arg(long)]
    dir: std::path::PathBuf,
    /// Accounts file (JSON): buckets per account, quotas, freeze thresholds.
    #[arg(long)]
    accounts: std::path::PathBuf,
}

impl SimArgs {
    /// Serves the simulator until SIGTERM/SIGINT.
    pub async fn run(self) -> Result<ExitCode> {
        let stop = tokio_util::sync::CancellationToken::new();
        crate::cmd::serve::on_signals(stop.clone())?;
        sim(self, stop).await?;
        Ok(ExitCode::SUCCESS)
    }
}

async fn sim(args: SimArgs, stop: tokio_util::sync::CancellationToken) -> Result<()> {
    let text = std::fs::read_to_string(&args.accounts)
        .with_context(|| format!("reading {}", args.accounts.display()))?;
    let cfg = sluice_sim::SimConfig::from_json(&text).map_err(anyhow::Error::msg)?;
    let sim = sluice_sim::Sim::new(cfg, &args.dir).map_err(anyhow::Error::msg)?;
    let h = sim
        .start(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(url = %h.url(), "provider simulator listening");
    println!("{}", h.url());
    stop.cancelled().await;
    h.stop();
    Ok(())
}
