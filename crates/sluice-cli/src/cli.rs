//! The `sluice` command line: the global flags and one variant per verb group; each group's
//! module owns its arguments and its `run` (rust-analyzer's `cli/`, Quickwit's `execute`).

use crate::cmd::{admin, demo, jobs, lab, ops, provider, schedules, serve};
use crate::config::Settings;
use crate::ctx::{Ctx, Output};
use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Durable, budget-aware job scheduler for hunts across many data lakes"
)]
pub struct Cli {
    /// Database: postgres://USER@HOST:PORT/DB or sqlite://PATH (embedded, one process).
    #[arg(
        long,
        global = true,
        env = "SLUICE_DATABASE_URL",
        default_value = "sqlite://sluice.db"
    )]
    pub database_url: String,

    /// Folder where task results (Parquet) are written and read.
    #[arg(
        long,
        global = true,
        env = "SLUICE_RESULTS_DIR",
        default_value = "sluice-results"
    )]
    pub results_dir: std::path::PathBuf,

    /// Keep results in object storage instead of --results-dir (which then only stages hunt
    /// runners' files): `s3://bucket/prefix` for any S3-compatible store, `gs://bucket/prefix`,
    /// `az://container/prefix` or `file:///folder`. Credentials come from the environment or
    /// workload identity: for S3, SLUICE_RESULTS_AWS_ACCESS_KEY_ID and the like when any is set
    /// (the results' own, apart from the lakes'), else AWS_*; GOOGLE_* for gs://, AZURE_* for
    /// az://.
    #[arg(long, global = true, env = "SLUICE_RESULTS_URL")]
    pub results_url: Option<String>,

    /// How long to wait for the database before giving up.
    #[arg(long, global = true, env = "SLUICE_CONNECT_TIMEOUT", default_value = "10s", value_parser = crate::parse_duration)]
    pub connect_timeout: Duration,

    /// Log format on stderr.
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// A sluice server's API, e.g. http://sluice.internal:8080: the researcher verbs
    /// (`submit`, `validate`, `status`, `jobs`, `cancel`, `results`) and the operator verbs
    /// (`backlog`, `pause`, `resume`, `pauses`, `drain`, `budget`, `breaker`) then go through
    /// it with --token instead of opening the database.
    #[arg(long, global = true, env = "SLUICE_URL")]
    pub url: Option<String>,

    /// The API token for --url, from `sluice tokens create` (its owner owns what you submit).
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Output of commands that print results.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// A TOML file of settings (default: ./sluice.toml if it exists). Its names are the
    /// environment variables' without `SLUICE_`: `database_url = "…"`, `[worker]
    /// concurrency = 32`. Flags beat the environment, which beats the file.
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations (also done at every start-up).
    Migrate,
    /// Claim and run tasks until SIGTERM/SIGINT, then hand back what is unfinished.
    Worker(serve::WorkerArgs),
    /// Stand for election as the scheduler until SIGTERM/SIGINT: the one leader rescues expired
    /// leases and keeps the release order fair across owners; the others stand by.
    Scheduler(serve::SchedulerArgs),
    /// Show a job's state and progress.
    Status(jobs::StatusArgs),
    /// Jobs, newest first.
    Jobs(jobs::JobsArgs),
    /// Cancel a job: its pending tasks never run, running ones lose their lease (their late
    /// results are rejected).
    Cancel(jobs::CancelArgs),
    /// Run an ended job again for the lakes that failed or were cancelled (fresh attempts; the
    /// succeeded lakes and their results stay).
    Retry(jobs::RetryArgs),
    /// Set a job's priority; its unfinished lakes move with it (researchers: their own jobs, up
    /// to the server's ceiling for them; operators: any job, -100 to 100).
    Priority(jobs::PriorityArgs),
    /// A job's timeline from the journal: what happened to it and why.
    Explain(jobs::ExplainArgs),
    /// Pause a target: its pending tasks are not claimed (on any machine) until resumed; running
    /// tasks finish.
    Pause(ops::PauseArgs),
    /// Lift a pause.
    Resume(ops::ResumeArgs),
    /// The pauses in force.
    Pauses,
    /// Owners' quotas of running tasks, so one owner's backlog cannot hold every slot.
    #[command(subcommand)]
    Quota(ops::QuotaCmd),
    /// The effective settings (flags, environment, config file, defaults), secrets masked.
    #[command(subcommand)]
    Config(admin::ConfigCmd),
    /// Print a shell completion script: `sluice completions bash > /etc/bash_completion.d/sluice`.
    Completions(admin::CompletionsArgs),
    /// Unfinished tasks by provider scope, the oldest pending task's age, and the soonest the
    /// backlog can drain at the current budgets (from the store's counters; no task scan).
    Backlog,
    /// Stop intake so the backlog can empty: from now on new jobs are refused on every
    /// process (the API answers 503 with Retry-After) until `sluice drain --end`; accepted jobs
    /// go on, nothing is dropped. With `--wait`, exits 0 once nothing is pending or running, or
    /// 3 when `--timeout` passes first.
    Drain(ops::DrainArgs),
    /// Register, list, remove or generate lakes.
    #[command(subcommand)]
    Lakes(admin::LakesCmd),
    /// Submit a hunt (SQL or IOCs): validated first, then one task per selected lake.
    Submit(jobs::SubmitArgs),
    /// The key your jobs' webhook deliveries are signed with (`Sluice-Signature`; each owner
    /// has their own): verify deliveries with it.
    WebhookKey,
    /// Recurring hunts: a hunt submitted again at every tick of an interval or a cron pattern.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCmd),
    /// Check a hunt without submitting it: errors with line and column, lakes, cost.
    Validate(jobs::ValidateArgs),
    /// A job's results so far (partial while it runs), in task order.
    Results(jobs::ResultsArgs),
    /// The HTTP API, a scheduler candidate and a worker in one process.
    Server(serve::ServerArgs),
    /// API tokens: create (printed once), list, revoke.
    #[command(subcommand)]
    Tokens(admin::TokensCmd),
    /// The embedded demo: SQLite, no server to install; runs a bulk and an urgent job end to end.
    Demo(demo::DemoArgs),
    /// Provider call budgets per scope (token buckets under the root `*`).
    #[command(subcommand)]
    Budget(provider::BudgetCmd),
    /// Circuit breakers per scope.
    #[command(subcommand)]
    Breaker(provider::BreakerCmd),
    /// Run the provider simulator (an S3 server with quotas, throttling and account freezes).
    Sim(provider::SimArgs),
    /// The provider-incident lab (tests, `make replay-outage`).
    #[command(subcommand, hide = true)]
    Lab(lab::LabCmd),
}

impl Cli {
    /// What every verb is handed.
    pub fn ctx(&self) -> Ctx {
        Ctx {
            database_url: self.database_url.clone(),
            results_dir: self.results_dir.clone(),
            results_url: self.results_url.clone(),
            connect_timeout: self.connect_timeout,
            url: self.url.clone(),
            token: self.token.clone(),
            output: self.output,
        }
    }
}

impl Command {
    /// Runs the verb: each arm only delegates to its group.
    pub async fn run(self, ctx: &Ctx, settings: &Settings) -> Result<ExitCode> {
        match self {
            Command::Migrate => serve::migrate(ctx).await,
            Command::Worker(a) => a.run(ctx).await,
            Command::Scheduler(a) => a.run(ctx).await,
            Command::Server(a) => a.run(ctx).await,
            Command::Status(a) => a.run(ctx).await,
            Command::Jobs(a) => a.run(ctx).await,
            Command::Cancel(a) => a.run(ctx).await,
            Command::Retry(a) => a.run(ctx).await,
            Command::Priority(a) => a.run(ctx).await,
            Command::Quota(c) => c.run(ctx).await,
            Command::Explain(a) => a.run(ctx).await,
            Command::Submit(a) => a.run(ctx).await,
            Command::Schedules(c) => c.run(ctx).await,
            Command::WebhookKey => jobs::webhook_key(ctx).await,
            Command::Validate(a) => a.run(ctx).await,
            Command::Results(a) => a.run(ctx).await,
            Command::Pause(a) => a.run(ctx).await,
            Command::Resume(a) => a.run(ctx).await,
            Command::Pauses => ops::pauses(ctx).await,
            Command::Backlog => ops::backlog(ctx).await,
            Command::Drain(a) => a.run(ctx).await,
            Command::Config(c) => c.run(ctx, settings),
            Command::Completions(a) => a.run(),
            Command::Lakes(c) => c.run(ctx).await,
            Command::Tokens(c) => c.run(ctx).await,
            Command::Demo(a) => demo::run(a, ctx.json(), ctx.connect_timeout).await,
            Command::Budget(c) => c.run(ctx).await,
            Command::Breaker(c) => c.run(ctx).await,
            Command::Sim(a) => a.run().await,
            Command::Lab(c) => c.run(ctx).await,
        }
    }
}
