//! The verbs that work on the database itself (`lakes`, `tokens`) and on the CLI's own
//! settings (`config show`, `completions`).

use crate::cmd::jobs::key_value;
use crate::ctx::{Ctx, Render, line};
use anyhow::{Context, Result, bail};
use sluice_engine::Engine;
use sluice_engine::generate::{GenerateParams, Manifest, generate};
use sluice_store::{ApiToken, Lake, LakeInsertParams, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum LakesCmd {
    /// Register a lake: reads one Parquet footer to learn its schema and partitions.
    Add {
        name: String,
        /// Where its Parquet files are: file:///abs/path/, s3://bucket/prefix/ or memory://name/
        #[arg(value_name = "LOCATION")]
        location: String,
        /// Provider scope its calls are charged to, e.g. aws:123456789012.
        #[arg(long)]
        scope: String,
        #[arg(long = "tag", value_parser = key_value)]
        tags: Vec<(String, String)>,
        /// Object-store options (endpoint, region, allow_http; role_arn and external_id for a
        /// lake in another account, ADR 0015); never secrets.
        #[arg(long = "option", value_parser = key_value)]
        options: Vec<(String, String)>,
    },
    /// List registered lakes (with --url: the lakes open to the token).
    List,
    /// Unregister a lake (its files are not touched).
    Remove { name: String },
    /// Write synthetic security-telemetry lakes with planted needles (and a manifest).
    Generate {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
        rows: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=366))]
        days: u32,
        /// Also register the lakes, spread over this many provider scopes.
        #[arg(long)]
        register: bool,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        accounts: u32,
    },
}

impl LakesCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        if matches!(self, LakesCmd::List) && ctx.url.is_some() {
            let c = ctx.api("cli").await?;
            ctx.show_as(c.lakes().await?.as_slice(), open_lake_list)?;
            return Ok(ExitCode::SUCCESS);
        }
        let store = ctx.store("lakes").await?;
        let store = store.as_ref();
        let engine = ctx.engine()?;
        match self {
            LakesCmd::Add {
                name,
                location,
                scope,
                tags,
                options,
            } => {
                let lake = register(
                    store,
                    &engine,
                    &name,
                    &location,
                    &scope,
                    tags.into_iter().collect(),
                    options.into_iter().collect(),
                )
                .await?;
                ctx.show_as(&lake, registered)?;
            }
            LakesCmd::List => ctx.show_as(store.lake_list().await?.as_slice(), lake_list)?,
            LakesCmd::Remove { name } => {
                store.lake_remove(&name).await?;
                ctx.show_as(&Removed { lake: name }, |r, out| {
                    line!(out, "lake {} removed", r.lake);
                })?;
            }
            LakesCmd::Generate {
                dir,
                count,
                rows,
                seed,
                days,
                register: reg,
                accounts,
            } => {
                let mut p = GenerateParams::new(&dir, count as usize, rows as usize, seed);
                p.days = days;
                let m = tokio::task::spawn_blocking(move || generate(&p))
                    .await
                    .context("generator")??;
                if reg {
                    for (i, l) in m.lakes.iter().enumerate() {
                        let abs = std::fs::canonicalize(&l.path)
                            .with_context(|| format!("{}", l.path.display()))?;
                        let scope = format!(
                            "aws:{}",
                            100_000_000_000u64 + (i as u64 % u64::from(accounts))
                        );
                        register(
                            store,
                            &engine,
                            &l.name,
                            &format!("file://{}/", abs.display()),
                            &scope,
                            BTreeMap::new(),
                            BTreeMap::new(),
                        )
                        .await?;
                    }
                }
                ctx.show(&Generated {
                    manifest: m,
                    dir,
                    registered: reg,
                })?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn registered(l: &Lake, out: &mut String) {
    line!(
        out,
        "lake {} registered: {} ({} columns, partitions {:?})",
        l.name,
        l.url,
        lake_columns(l),
        l.partition_cols
    );
}

/// `k=v,k=v`.
fn tag_list(tags: &BTreeMap<String, String>) -> String {
    let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    tags.join(",")
}

fn lake_list(ls: &[Lake], out: &mut String) {
    for l in ls {
        let tags = tag_list(&l.tags);
        line!(out, "{:<24} {:<20} {} {tags}", l.name, l.scope, l.url);
    }
    line!(out, "{} lakes", ls.len());
}

/// The lakes open to a token, as the API lists them.
fn open_lake_list(ls: &[sluice_api::wire::LakeView], out: &mut String) {
    for l in ls {
        let tags = tag_list(&l.tags);
        line!(out, "{:<24} {:<20} {tags}", l.name, l.scope);
    }
    line!(out, "{} lakes", ls.len());
}

#[derive(serde::Serialize)]
struct Removed {
    lake: String,
}

/// Generated lakes: the manifest is the JSON.
#[derive(serde::Serialize)]
#[serde(transparent)]
struct Generated {
    manifest: Manifest,
    #[serde(skip)]
    dir: PathBuf,
    #[serde(skip)]
    registered: bool,
}

impl Render for Generated {
    fn render(&self, out: &mut String) {
        let m = &self.manifest;
        let bytes: u64 = m.lakes.iter().map(|l| l.bytes).sum();
        line!(
            out,
            "{} lakes written to {} ({:.1} MB){}",
            m.lakes.len(),
            self.dir.display(),
            bytes as f64 / 1e6,
            if self.registered { ", registered" } else { "" }
        );
        line!(
            out,
            "planted needles (manifest: {}):",
            self.dir.join("manifest.json").display()
        );
        for n in &m.needles {
            line!(
                out,
                "  {:<66} {:<12} {} dt={} row {}",
                n.value,
                n.column,
                n.lake,
                n.dt,
                n.row
            );
        }
    }
}

fn lake_columns(l: &Lake) -> usize {
    l.schema
        .get("fields")
        .and_then(|f| f.as_array())
        .map_or(0, Vec::len)
}

/// Reads a lake's schema and partitions from one footer and registers it.
pub(crate) async fn register(
    store: &dyn Store,
    engine: &Engine,
    name: &str,
    url: &str,
    scope: &str,
    tags: BTreeMap<String, String>,
    options: BTreeMap<String, String>,
) -> Result<sluice_store::Lake> {
    if let Ok(existing) = store.lake_get(name).await {
        bail!(
            "lake {name} already exists ({}): remove it first",
            existing.url
        );
    }
    let probe = sluice_engine::LakeRef {
        id: 0,
        name: name.to_string(),
        url: url.to_string(),
        scope: scope.to_string(),
        partition_cols: vec![],
        schema: sluice_engine::generate::telemetry_schema(),
        options: options.clone(),
    };
    let (schema, partition_cols) = engine
        .discover(&probe)
        .await
        .with_context(|| format!("reading lake {name} at {url}"))?;
    let lake = store
        .lake_insert(LakeInsertParams {
            name: name.to_string(),
            url: url.to_string(),
            scope: scope.to_string(),
            partition_cols,
            schema: sluice_engine::schema_to_json(&schema),
            tags,
            options,
            now: chrono::Utc::now(),
        })
        .await?;
    Ok(lake)
}

#[derive(Debug, clap::Subcommand)]
pub enum TokensCmd {
    /// Create an API token; it is printed once (only its hash is stored).
    Create {
        /// Whose jobs the token submits and sees.
        #[arg(long)]
        owner: String,
        /// researcher: own jobs; operator: every job; admin: also tokens.
        #[arg(long, value_enum)]
        role: TokenRole,
        /// A note to tell tokens apart (e.g. the laptop or service using it).
        #[arg(long, default_value = "")]
        label: String,
        /// Limit the token to lakes with these tags (`team=red` or `customer=acme,env=prod`:
        /// every tag must match). Repeat for more groups: a lake is open if it matches any.
        /// Without it: every lake.
        #[arg(long = "lakes", value_name = "KEY=VALUE[,KEY=VALUE]", value_parser = lake_group)]
        lakes: Vec<std::collections::BTreeMap<String, String>>,
    },
    /// Every token (never the token itself).
    List,
    /// Revoke a token: requests with it get 401 from now on.
    Revoke { id: i64 },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TokenRole {
    Researcher,
    Operator,
    Admin,
}

impl From<TokenRole> for sluice_store::Role {
    fn from(r: TokenRole) -> Self {
        match r {
            TokenRole::Researcher => sluice_store::Role::Researcher,
            TokenRole::Operator => sluice_store::Role::Operator,
            TokenRole::Admin => sluice_store::Role::Admin,
        }
    }
}

impl TokensCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<ExitCode> {
        let store = ctx.store("tokens").await?;
        let now = chrono::Utc::now();
        match self {
            TokensCmd::Create {
                owner,
                role,
                label,
                lakes,
            } => {
                let token = sluice_api::new_token();
                let t = store
                    .token_insert(sluice_store::TokenInsertParams {
                        owner,
                        role: role.into(),
                        lakes: sluice_store::LakeAccess(lakes),
                        hash: sluice_api::hash_token(&token),
                        label,
                        now,
                    })
                    .await?;
                if !ctx.json() {
                    eprintln!(
                        "token {} for {} ({}, {}): shown once, keep it secret; revoke with `sluice tokens revoke {}`",
                        t.id,
                        t.owner,
                        t.role.as_str(),
                        t.lakes,
                        t.id
                    );
                }
                ctx.show(&NewToken {
                    id: t.id,
                    owner: t.owner,
                    role: t.role,
                    lakes: t.lakes,
                    token,
                })?;
            }
            TokensCmd::List => ctx.show_as(store.token_list().await?.as_slice(), token_list)?,
            TokensCmd::Revoke { id } => {
                ctx.show_as(&store.token_revoke(id, now).await?, |t, out| {
                    line!(out, "token {} of {} revoked", t.id, t.owner);
                })?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A new token: the only time it is shown.
#[derive(serde::Serialize)]
struct NewToken {
    id: i64,
    owner: String,
    role: sluice_store::Role,
    lakes: sluice_store::LakeAccess,
    token: String,
}

/// One `--lakes` group.
fn lake_group(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    sluice_store::LakeAccess::parse_group(s)
}

impl Render for NewToken {
    fn render(&self, out: &mut String) {
        line!(out, "{}", self.token);
    }
}

fn token_list(ts: &[ApiToken], out: &mut String) {
    line!(
        out,
        "{:>6} {:<20} {:<11} {:<24} {:<20} {:<24} LABEL",
        "ID",
        "OWNER",
        "ROLE",
        "CREATED",
        "REVOKED",
        "LAKES"
    );
    for t in ts {
        line!(
            out,
            "{:>6} {:<20} {:<11} {:<24} {:<20} {:<24} {}",
            t.id,
            t.owner,
            t.role.as_str(),
            t.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            t.revoked_at
                .map_or("-".into(), |r| r.format("%Y-%m-%d %H:%M").to_string()),
            t.lakes.to_string(),
            t.label
        );
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCmd {
    /// Every setting with its value and where it came from (flag, env, file, default).
    Show,
}

impl ConfigCmd {
    pub fn run(self, ctx: &Ctx, settings: &crate::config::Settings) -> Result<ExitCode> {
        match self {
            ConfigCmd::Show => ctx.show(&settings.shown())?,
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl Render for crate::config::Shown {
    fn render(&self, out: &mut String) {
        if let Some(p) = &self.file {
            line!(out, "# config file: {}", p.display());
        }
        for s in &self.settings {
            line!(
                out,
                "{:<32} {:<48} {:?}",
                s.setting,
                s.value.as_deref().unwrap_or("-"),
                s.source
            );
        }
    }
}

/// `sluice completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    shell: clap_complete::Shell,
}

impl CompletionsArgs {
    pub fn run(self) -> Result<ExitCode> {
        use clap::CommandFactory;
        clap_complete::generate(
            self.shell,
            &mut crate::cli::Cli::command(),
            "sluice",
            &mut std::io::stdout(),
        );
        Ok(ExitCode::SUCCESS)
    }
}
