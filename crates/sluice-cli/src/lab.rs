//! `sluice lab`: the provider-incident lab used by the invariant tests, `make replay-outage`
//! and `sluice demo --outage`. It lays out S3 lakes for the simulator (one bucket per account,
//! planted needles), writes the simulator's accounts file, and registers the lakes as
//! `s3://` lakes that reach the simulator over HTTP, with credentials from its metadata
//! endpoint — the same path a production worker takes to a cloud account.

use anyhow::{Context, Result};
use sluice_engine::generate::{GenerateParams, Manifest, Needle, generate};
use sluice_engine::{Engine, LakeRef};
use sluice_store::{BudgetSetParams, LakeInsertParams, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// Folder for the simulator's buckets (`DIR/sim`) and accounts file (`DIR/accounts.json`).
    #[arg(long)]
    pub dir: PathBuf,
    /// Where the simulator will listen (lakes are registered with this endpoint).
    #[arg(long)]
    pub sim_url: String,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub accounts: u32,
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub lakes_per_account: u32,
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub rows: u32,
    /// The simulator's quota per account (requests/s) and its burst.
    #[arg(long, default_value_t = 200.0)]
    pub quota_rate: f64,
    #[arg(long, default_value_t = 200.0)]
    pub quota_burst: f64,
    /// An account over quota this long without a break freezes.
    #[arg(long, default_value_t = 2.0)]
    pub freeze_after: f64,
    #[arg(long, default_value_t = 30.0)]
    pub freeze_for: f64,
    /// Sluice's budget per account (calls/s and burst); none: unlimited (the guard off).
    #[arg(long)]
    pub budget_rate: Option<f64>,
    #[arg(long)]
    pub budget_burst: Option<f64>,
}

/// What was laid out: the accounts, every lake's account, and the planted needles.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LabManifest {
    pub sim_dir: PathBuf,
    pub accounts_file: PathBuf,
    pub accounts: Vec<String>,
    pub lakes: BTreeMap<String, String>,
    pub needles: Vec<Needle>,
}

pub fn account_id(i: u32) -> String {
    format!("{}", 100_000_000_001u64 + u64::from(i))
}

pub fn bucket(account: &str) -> String {
    format!("acct-{account}")
}

/// Generates (or reuses) one account's lakes under its bucket folder.
async fn lakes_of(dir: &Path, prefix: &str, count: u32, rows: u32, seed: u64) -> Result<Manifest> {
    let manifest = dir.join("manifest.json");
    if let Ok(text) = std::fs::read_to_string(&manifest)
        && let Ok(m) = serde_json::from_str::<Manifest>(&text)
        && m.lakes.len() == count as usize
        && m.lakes
            .iter()
            .all(|l| l.rows == rows as usize && l.path.exists())
    {
        return Ok(m);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let mut p = GenerateParams::new(dir, count as usize, rows as usize, seed);
    p.days = 1;
    p.prefix = prefix.to_string();
    let m = tokio::task::spawn_blocking(move || generate(&p))
        .await
        .context("generator")??;
    // The manifest lives beside the lakes, not in the bucket listing of a lake.
    Ok(m)
}

pub async fn setup(store: &dyn Store, engine: &Engine, a: &LabArgs) -> Result<LabManifest> {
    let sim_dir = a.dir.join("sim");
    std::fs::create_dir_all(&sim_dir).with_context(|| format!("creating {}", sim_dir.display()))?;
    let sim_dir = std::fs::canonicalize(&sim_dir)?;
    let mut accounts_cfg = serde_json::Map::new();
    let mut out = LabManifest {
        sim_dir: sim_dir.clone(),
        accounts_file: std::fs::canonicalize(&a.dir)?.join("accounts.json"),
        accounts: Vec::new(),
        lakes: BTreeMap::new(),
        needles: Vec::new(),
    };
    let now = chrono::Utc::now();
    if let (Some(rate), Some(burst)) = (a.budget_rate, a.budget_burst) {
        // The provider-wide budget is the sum of the accounts' (the sim has no global quota).
        store
            .budget_set(BudgetSetParams {
                scope: sluice_store::ROOT_SCOPE.into(),
                parent: None,
                rate: rate * f64::from(a.accounts),
                burst: burst * f64::from(a.accounts),
                now,
            })
            .await?;
    }
    let mut probe: Option<(datafusion::arrow::datatypes::SchemaRef, Vec<String>)> = None;
    for i in 0..a.accounts {
        let account = account_id(i);
        let bucket = bucket(&account);
        let prefix = format!("a{i}");
        let m = lakes_of(
            &sim_dir.join(&bucket),
            &prefix,
            a.lakes_per_account,
            a.rows,
            7 + u64::from(i),
        )
        .await?;
        accounts_cfg.insert(
            account.clone(),
            serde_json::json!({"buckets": [bucket], "rate": a.quota_rate, "burst": a.quota_burst,
                "freeze_after_secs": a.freeze_after, "freeze_for_secs": a.freeze_for}),
        );
        let scope = format!("aws:{account}");
        if let (Some(rate), Some(burst)) = (a.budget_rate, a.budget_burst) {
            store
                .budget_set(BudgetSetParams {
                    scope: scope.clone(),
                    parent: None,
                    rate,
                    burst,
                    now,
                })
                .await?;
        }
        if probe.is_none() {
            let l = &m.lakes[0];
            let local = LakeRef {
                id: 0,
                name: l.name.clone(),
                url: format!("file://{}/", l.path.display()),
                scope: "local".into(),
                partition_cols: vec![],
                schema: sluice_engine::generate::telemetry_schema(),
                options: BTreeMap::new(),
            };
            probe = Some(engine.discover(&local).await?);
        }
        let Some((schema, partition_cols)) = &probe else {
            unreachable!("set above")
        };
        let options: BTreeMap<String, String> = [
            ("endpoint", a.sim_url.clone()),
            ("allow_http", "true".into()),
            ("region", "us-east-1".into()),
            ("metadata_endpoint", format!("{}/acct/{account}", a.sim_url)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for l in &m.lakes {
            if store.lake_get(&l.name).await.is_ok() {
                store.lake_remove(&l.name).await?;
            }
            store
                .lake_insert(LakeInsertParams {
                    name: l.name.clone(),
                    url: format!("s3://{bucket}/{}/", l.name),
                    scope: scope.clone(),
                    partition_cols: partition_cols.clone(),
                    schema: sluice_engine::schema_to_json(schema),
                    tags: [("account".to_string(), account.clone())].into(),
                    options: options.clone(),
                    now,
                })
                .await?;
            out.lakes.insert(l.name.clone(), account.clone());
        }
        out.needles.extend(m.needles.iter().cloned());
        out.accounts.push(account);
    }
    let accounts = serde_json::json!({ "accounts": accounts_cfg });
    std::fs::write(&out.accounts_file, serde_json::to_string_pretty(&accounts)?)
        .with_context(|| format!("writing {}", out.accounts_file.display()))?;
    Ok(out)
}
