//! Runs one task: a sandboxed DataFusion session over one lake, on a CPU runtime separate from
//! the caller's, with the worker-wide caches shared by every task.
//!
//! The sandbox: DDL, DML (`COPY … TO` included) and statements (`SET`) are off; URL tables are
//! off; the session's object-store registry holds only the task's lake (read-only, see
//! [`crate::lakestore`]); memory is capped per task and spilling to disk is disabled; a timeout
//! and a cancellation token stop a run.

use crate::EngineError;
use crate::bytecache::{ByteCache, CachingStore};
use crate::counting::{CountingStore, Counts};
use crate::hunt::CompiledHunt;
use crate::lakestore::{LAKE_URL_BASE, LakeStore};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::cache::cache_manager::{CacheManager, CacheManagerConfig};
use datafusion::execution::disk_manager::{DiskManager, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use sluice_core::{human_bytes, human_duration};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Where the results of tasks are written, as DataFusion sees it.
/// The column added to every result row: which lake it came from.
pub const LAKE_COLUMN: &str = "_lake";

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Threads of the CPU runtime that runs query plans.
    pub cpu_threads: usize,
    /// Memory one task's plan may use.
    pub memory_limit: usize,
    /// Time one task may run.
    pub timeout: Duration,
    pub target_partitions: usize,
    /// The results folder: where results are kept, or, with `results_url`, where hunt runners
    /// stage theirs before the worker uploads them.
    pub results_dir: PathBuf,
    /// Where results are kept instead of `results_dir`: `s3://bucket/prefix` (any
    /// S3-compatible store; credentials, endpoint and region from the environment's `AWS_*`
    /// or workload identity, never the database) or `file:///folder`.
    pub results_url: Option<String>,
    /// How long a lake's file listing is reused. Lakes grow (a new day's partition); within
    /// this time a worker does not see new files, after it one LIST per lake picks them up.
    pub list_ttl: Duration,
    /// Most result rows one task may write; past it the task fails (permanently).
    pub max_result_rows: u64,
    /// Most result bytes (in memory, before compression) one task may write.
    pub max_result_bytes: u64,
    /// Lake bytes kept in memory for the next hunt over the same objects (0: none kept).
    pub byte_cache_bytes: u64,
}

impl EngineConfig {
    pub fn new(results_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            cpu_threads: 2,
            memory_limit: 512 << 20,
            timeout: Duration::from_secs(600),
            target_partitions: 2,
            results_dir: results_dir.into(),
            results_url: None,
            list_ttl: Duration::from_secs(300),
            max_result_rows: 1_000_000,
            max_result_bytes: 256 << 20,
            byte_cache_bytes: 64 << 20,
        }
    }
}

/// Rows of a result object's row group, at most: pages of results are read a row group at a
/// time, so a row group is kept small enough for the API to read whole.
pub const RESULT_ROW_GROUP_ROWS: usize = 16 * 1024;
/// Bytes (in memory) of a result row group before it is flushed.
pub const RESULT_ROW_GROUP_BYTES: usize = 16 << 20;
/// A page of results stops growing once its row groups hold this much in memory.
pub const RESULT_PAGE_BYTES: usize = 64 << 20;
/// The largest result row group a page reads (ours are at most a batch past
/// [`RESULT_ROW_GROUP_BYTES`], and a task's results at most its `max_result_bytes`).
pub const RESULT_ROW_GROUP_MAX_BYTES: usize = 512 << 20;

/// What the engine needs to know of a lake (the store keeps the rest).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LakeRef {
    pub id: i64,
    pub name: String,
    pub url: String,
    /// The provider scope the lake's calls are charged to.
    pub scope: String,
    pub partition_cols: Vec<String>,
    #[serde(with = "schema_serde")]
    pub schema: SchemaRef,
    pub options: BTreeMap<String, String>,
}

/// A lake's schema as the store keeps it (JSON), for the runner's wire.
mod schema_serde {
    use datafusion::arrow::datatypes::{Schema, SchemaRef};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(s: &SchemaRef, ser: S) -> Result<S::Ok, S::Error> {
        s.as_ref().serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<SchemaRef, D::Error> {
        Schema::deserialize(de).map(Arc::new)
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TaskRun {
    pub job_id: i64,
    pub task_id: i64,
    /// The claim's lease token: results are keyed by it, so only the committed claim's object
    /// is ever read.
    pub token: i64,
    pub lake: LakeRef,
    pub hunt: CompiledHunt,
}

/// Several tasks of one lake answered by one scan (a shared scan, ADR 0014): the scan's rows
/// hold every member's matches, and each member keeps the rows its own filter passes, written
/// to its own result under its own caps.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScanRun {
    pub lake: LakeRef,
    pub hunt: CompiledHunt,
    pub members: Vec<ScanMember>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScanMember {
    pub job_id: i64,
    pub task_id: i64,
    pub token: i64,
    /// A condition over the scan's columns: which of its rows are this member's.
    pub filter: String,
}

/// Each member's outcome, in member order.
pub type ScanOutputs = Vec<Result<TaskOutput, EngineError>>;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskOutput {
    pub rows: i64,
    pub result_uri: Option<String>,
}

/// The session's object-store registry: the task's lake and nothing else.
#[derive(Debug)]
struct OnlyThese(Vec<(Url, Arc<dyn ObjectStore>)>);

impl ObjectStoreRegistry for OnlyThese {
    fn register_store(&self, _: &Url, _: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        // Registering is refused silently: nothing a query does may add a store.
        None
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let key = |u: &Url| {
            (
                u.scheme().to_string(),
                u.host_str().unwrap_or("").to_string(),
            )
        };
        self.0
            .iter()
            .find(|(u, _)| key(u) == key(url))
            .map(|(_, s)| s.clone())
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Plan(format!(
                    "access to {url} is not allowed: a hunt reads its lake only"
                ))
            })
    }
}

/// One per worker process.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    cpu: Option<tokio::runtime::Runtime>,
    cache: Arc<CacheManager>,
    results: Arc<dyn ObjectStore>,
    local: Arc<dyn ObjectStore>,
    memory: Mutex<HashMap<String, Arc<InMemory>>>,
    /// When set, every lake's store is wrapped to count its calls (tests, benchmarks).
    counts: Option<Arc<Counts>>,
    /// S3 stores, metered through the provider gate.
    s3: crate::s3::S3Stores,
    /// Lake bytes already read, for the next hunt over the same objects.
    bytes: Option<Arc<ByteCache>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Dropping a runtime blocks; this may run inside an async context.
        if let Some(rt) = self.cpu.take() {
            rt.shutdown_background();
        }
    }
}

pub(crate) fn sql_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// The one key a task's results may have: by job, task and lease token (invariant 13).
pub fn result_key(job: i64, task: i64, token: i64) -> String {
    format!("jobs/{job}/{task:019}-{token}.parquet")
}

/// Whether `key` has the shape of a result key (what retention and the sweep may remove).
pub fn is_result_key(key: &str) -> bool {
    let mut parts = key.split('/');
    let (Some("jobs"), Some(job), Some(file), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some((task, token)) = file
        .strip_suffix(".parquet")
        .and_then(|f| f.split_once('-'))
    else {
        return false;
    };
    digits(job) && task.len() == 19 && digits(task) && digits(token)
}

/// The store results are kept in: `cfg.results_url`, else the results folder. Empty job
/// folders go with their last object.
pub fn results_store(cfg: &EngineConfig) -> Result<Arc<dyn ObjectStore>, EngineError> {
    let local = |dir: &std::path::Path| -> Result<Arc<dyn ObjectStore>, EngineError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| EngineError::Io(format!("{}: {e}", dir.display())))?;
        Ok(Arc::new(
            LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true),
        ))
    };
    let Some(raw) = cfg.results_url.as_deref() else {
        return local(&cfg.results_dir);
    };
    // With a URL, hunt runners stage their files in the folder: it exists too.
    std::fs::create_dir_all(&cfg.results_dir)
        .map_err(|e| EngineError::Io(format!("{}: {e}", cfg.results_dir.display())))?;
    // A query is refused below, and shown as `?…`: it may be a signed token (an Azure SAS).
    let shown = match raw.split_once('?') {
        Some((base, _)) => format!("{}?…", sluice_core::secrets::redact_url(base)),
        None => sluice_core::secrets::redact_url(raw),
    };
    let bad = |why: String| EngineError::User(format!("--results-url {shown:?}: {why}"));
    let url = url::Url::parse(raw).map_err(|e| bad(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(bad(
            "no credentials or options in the URL: they come from the environment (SLUICE_RESULTS_AWS_*, AWS_*, GOOGLE_* or AZURE_* variables) or workload identity".into(),
        ));
    }
    match url.scheme() {
        "file" => {
            let dir = url
                .to_file_path()
                .map_err(|()| bad("not a local folder".into()))?;
            // The upload would rename a file onto itself, then remove it.
            let same =
                std::fs::canonicalize(&dir).ok() == std::fs::canonicalize(&cfg.results_dir).ok();
            if same || dir.starts_with(&cfg.results_dir) || cfg.results_dir.starts_with(&dir) {
                return Err(bad(
                    "must not be --results-dir, inside it or around it (that folder stages runners' files)".into(),
                ));
            }
            local(&dir)
        }
        "s3" | "s3a" => {
            let s3 = results_s3_builder(std::env::vars())
                .map_err(&bad)?
                .with_bucket_name(bucket_of(&url).map_err(&bad)?)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            Ok(under_prefix(s3, &url))
        }
        // GOOGLE_SERVICE_ACCOUNT(_KEY) or GOOGLE_APPLICATION_CREDENTIALS, else the metadata
        // server (GKE workload identity).
        "gs" => {
            let gcs = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket_of(&url).map_err(&bad)?)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            Ok(under_prefix(gcs, &url))
        }
        // AZURE_STORAGE_ACCOUNT_NAME with a key, a SAS, a service principal or workload
        // identity (AZURE_FEDERATED_TOKEN_FILE), else the managed identity; `az://container`.
        "az" | "azure" => {
            let az = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket_of(&url).map_err(&bad)?)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            Ok(under_prefix(az, &url))
        }
        other => Err(bad(format!(
            "{other}:// is not a results store: use s3:// (any S3-compatible store, MinIO included), gs://, az:// or file://"
        ))),
    }
}

/// The bucket (or container) a results URL names.
fn bucket_of(url: &url::Url) -> Result<&str, String> {
    url.host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| "no bucket".to_string())
}

/// `store`, below the URL's path when it has one.
fn under_prefix(store: impl ObjectStore, url: &url::Url) -> Arc<dyn ObjectStore> {
    let prefix = url.path().trim_matches('/');
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
    }
}

/// Where the results bucket's settings come from: `SLUICE_RESULTS_AWS_*` when any is set (the
/// results' own credentials, endpoint and region: lakes' credentials, which runners receive,
/// then cannot write results), else the process's `AWS_*` (and workload identity).
fn results_s3_builder(
    env: impl Iterator<Item = (String, String)>,
) -> Result<object_store::aws::AmazonS3Builder, String> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    const PREFIX: &str = "SLUICE_RESULTS_AWS_";
    let own: Vec<(String, String)> = env
        .filter_map(|(k, v)| k.strip_prefix(PREFIX).map(|rest| (rest.to_string(), v)))
        .collect();
    if own.is_empty() {
        return Ok(AmazonS3Builder::from_env());
    }
    let mut b = AmazonS3Builder::new();
    for (k, v) in own {
        let key: AmazonS3ConfigKey = format!("aws_{}", k.to_ascii_lowercase())
            .parse()
            .map_err(|_| format!("{PREFIX}{k} is not an S3 setting (AWS_{k} is not one)"))?;
        b = b.with_config(key, v);
    }
    Ok(b)
}

/// The stack of a thread that runs query plans.
const CPU_STACK: usize = 16 << 20;

impl Engine {
    pub fn new(cfg: EngineConfig) -> Result<Engine, EngineError> {
        let results = results_store(&cfg)?;
        let cfg_bytes = cfg.byte_cache_bytes;
        let cpu = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.cpu_threads.max(1))
            .thread_name("sluice-cpu")
            // DataFusion walks expressions recursively (pruning turns an IN list into an OR
            // chain): a 2 MiB stack overflowed on a 10,000-IOC hunt.
            .thread_stack_size(CPU_STACK)
            .enable_all()
            .build()
            .map_err(|e| EngineError::Io(format!("cpu runtime: {e}")))?;
        crate::metrics::init();
        // DataFusion's default list-files TTL is infinite: a long-lived worker would never see
        // a lake's new files.
        let cache = CacheManager::try_new(
            &CacheManagerConfig::default().with_list_files_cache_ttl(Some(cfg.list_ttl)),
        )?;
        Ok(Engine {
            cfg,
            cpu: Some(cpu),
            cache,
            results,
            local: Arc::new(LocalFileSystem::new()),
            memory: Mutex::default(),
            counts: None,
            s3: crate::s3::S3Stores::new(Arc::new(sluice_core::OpenGate)),
            bytes: (cfg_bytes > 0).then(|| Arc::new(ByteCache::new(cfg_bytes))),
        })
    }

    /// Sends every provider HTTP attempt through `gate` (budgets and breakers).
    pub fn with_gate(mut self, gate: Arc<dyn sluice_core::CallGate>) -> Self {
        self.s3 = crate::s3::S3Stores::new(gate);
        self
    }

    /// Takes S3 credentials from `source` instead of fetching them itself (a hunt runner asks
    /// its worker, which keeps one credential cache per scope for all its runners).
    pub fn with_credential_source(mut self, source: Arc<dyn crate::s3::CredentialSource>) -> Self {
        self.s3.set_credential_source(source);
        self
    }

    /// The gate every provider HTTP attempt of this engine passes.
    pub fn gate(&self) -> Arc<dyn sluice_core::CallGate> {
        self.s3.gate()
    }

    /// The current credentials of a scope, from its one shared provider (fetched through the
    /// gate when missing or near expiry).
    pub async fn credentials(
        &self,
        scope: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<crate::s3::Credentials, EngineError> {
        self.s3.current_credentials(scope, options).await
    }

    /// Scopes whose assumed roles this engine holds, not near expiry (claims prefer them).
    pub fn held_scopes(&self) -> Vec<String> {
        self.s3.held_scopes()
    }

    /// The store results are kept in.
    pub fn results_store(&self) -> Arc<dyn ObjectStore> {
        self.results.clone()
    }

    /// This engine's limits.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Plans and runs a trivial query, so the one-time set-up of a process's first query is
    /// not paid by a task.
    pub async fn warm_up(&self) {
        let Ok(ctx) = self.session(Vec::new(), &BTreeMap::new()) else {
            return;
        };
        if let Ok(df) = ctx.sql_with_options("SELECT 1", sql_options()).await {
            let _ = df.collect().await;
        }
    }

    /// Counts every call made to the results store into `counts` (tests: ranged reads).
    pub fn with_result_counts(mut self, counts: Arc<Counts>) -> Self {
        self.results = Arc::new(CountingStore::new(self.results.clone(), counts));
        self
    }

    /// The cache of lake bytes, if this engine keeps one.
    pub fn byte_cache(&self) -> Option<&Arc<ByteCache>> {
        self.bytes.as_ref()
    }

    /// Counts every object-store call made to lakes into `counts`.
    pub fn with_call_counts(mut self, counts: Arc<Counts>) -> Self {
        self.counts = Some(counts);
        self
    }

    /// A named in-memory object store (`memory://NAME/…` lakes), created on first use.
    pub fn memory_store(&self, name: &str) -> Arc<InMemory> {
        let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string())
            .or_insert_with(|| Arc::new(InMemory::new()))
            .clone()
    }

    /// The read-only, namespaced view of a lake.
    pub fn lake_store(&self, lake: &LakeRef) -> Result<LakeStore, EngineError> {
        let url = Url::parse(&lake.url)
            .map_err(|e| EngineError::User(format!("lake url {:?}: {e}", lake.url)))?;
        let (inner, root): (Arc<dyn ObjectStore>, Path) = match url.scheme() {
            "file" => {
                let p = url
                    .to_file_path()
                    .map_err(|_| EngineError::User(format!("bad file url {:?}", lake.url)))?;
                (self.local.clone(), Path::from_absolute_path(&p)?)
            }
            "memory" => (
                self.memory_store(url.host_str().unwrap_or("")),
                Path::from_url_path(url.path())?,
            ),
            "s3" => (
                self.s3.store(&url, &lake.scope, &lake.options)?,
                Path::from_url_path(url.path())?,
            ),
            other => {
                return Err(EngineError::User(format!(
                    "unsupported lake url scheme {other:?}: use file, s3 or memory"
                )));
            }
        };
        let inner: Arc<dyn ObjectStore> = match &self.counts {
            Some(c) => Arc::new(CountingStore::new(inner, c.clone())),
            None => inner,
        };
        // Above the counts: a byte served from memory is no call to the lake.
        let inner: Arc<dyn ObjectStore> = match &self.bytes {
            Some(cache) => {
                let store = format!(
                    "{}|{}://{}",
                    lake.scope,
                    url.scheme(),
                    url.host_str().unwrap_or("")
                );
                Arc::new(CachingStore::new(inner, cache.clone(), &store))
            }
            None => inner,
        };
        Ok(LakeStore::new(inner, root, &format!("lake-{}", lake.id)))
    }

    fn session(
        &self,
        stores: Vec<(Url, Arc<dyn ObjectStore>)>,
        options: &BTreeMap<String, String>,
    ) -> Result<SessionContext, EngineError> {
        let mut config =
            SessionConfig::new().with_target_partitions(self.cfg.target_partitions.max(1));
        {
            let o = config.options_mut();
            o.execution.parquet.pushdown_filters = true;
            o.execution.parquet.reorder_filters = true;
            o.execution.parquet.schema_force_view_types = false;
            o.sql_parser.map_string_types_to_utf8view = false;
        }
        for (k, v) in options {
            config.options_mut().set(k, v)?;
        }
        let runtime = Arc::new(RuntimeEnv {
            memory_pool: Arc::new(GreedyMemoryPool::new(self.cfg.memory_limit)),
            disk_manager: Arc::new(
                DiskManager::builder()
                    .with_mode(DiskManagerMode::Disabled)
                    .build()?,
            ),
            cache_manager: self.cache.clone(),
            object_store_registry: Arc::new(OnlyThese(stores)),
        });
        // The functions the submit-time check knows, no more (no table functions).
        Ok(SessionContext::new_with_state(
            crate::validate::check_state(config, Some(runtime)),
        ))
    }

    /// Registers the lake as table `events` in a fresh sandboxed session.
    async fn lake_session(
        &self,
        lake: &LakeRef,
        options: &BTreeMap<String, String>,
    ) -> Result<SessionContext, EngineError> {
        let store = self.lake_store(lake)?;
        let table_url = store.table_url();
        let base = Url::parse(LAKE_URL_BASE).map_err(|e| EngineError::Io(e.to_string()))?;
        let ctx = self.session(vec![(base, Arc::new(store))], options)?;
        let table = lake_table(&ctx, &table_url, lake)?;
        ctx.register_table("events", table)?;
        Ok(ctx)
    }

    /// Reads the schema of a lake from one file footer, and its hive partition columns from
    /// the first file's path (`dt=…/`).
    pub async fn discover(&self, lake: &LakeRef) -> Result<(SchemaRef, Vec<String>), EngineError> {
        let store = self.lake_store(lake)?;
        let first = {
            let mut list = store.list(None);
            loop {
                match list.next().await {
                    Some(Ok(m)) if m.location.as_ref().ends_with(".parquet") => break m,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                    None => {
                        return Err(EngineError::User(format!(
                            "no .parquet files under {}",
                            lake.url
                        )));
                    }
                }
            }
        };
        let partition_cols: Vec<String> = first
            .location
            .parts()
            .skip(1)
            .filter_map(|p| p.as_ref().split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        let table_url = store.table_url();
        let base = Url::parse(LAKE_URL_BASE).map_err(|e| EngineError::Io(e.to_string()))?;
        let ctx = self.session(vec![(base, Arc::new(store))], &BTreeMap::new())?;
        let url = ListingTableUrl::parse(&table_url)?;
        let opts = ListingOptions::new(parquet_format(&ctx)).with_file_extension(".parquet");
        let schema = opts.infer_schema(&ctx.state(), &url).await?;
        // The file schema must not repeat a partition column.
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .filter(|f| !partition_cols.contains(f.name()))
            .map(|f| f.as_ref().clone())
            .collect();
        Ok((Arc::new(Schema::new(fields)), partition_cols))
    }

    /// Runs one task to completion, writing its matches to the results store.
    pub async fn run(
        &self,
        t: TaskRun,
        cancel: CancellationToken,
    ) -> Result<TaskOutput, EngineError> {
        let ctx = self.lake_session(&t.lake, &t.hunt.options).await?;
        let results = self.results.clone();
        // Zero-padded so that keys sort in task order (result pages follow it).
        let key = result_key(t.job_id, t.task_id, t.token);
        let lake_name = t.lake.name.clone();
        let sql = t.hunt.sql.clone();
        let caps = self.caps();
        self.guarded(
            async move {
                let df = ctx.sql_with_options(&sql, sql_options()).await?;
                let mut stream = df.execute_stream().await?;
                let mut sink = ResultSink::new(
                    &stream.schema(),
                    &lake_name,
                    results,
                    key,
                    caps,
                    RESULT_ROW_GROUP_BYTES,
                );
                while let Some(batch) = stream.next().await {
                    if let Err(e) = sink.write(&batch?).await {
                        sink.abort().await;
                        return Err(e);
                    }
                }
                sink.close().await
            },
            cancel,
        )
        .await
    }

    /// Runs a shared scan: one read of the lake for every member (ADR 0014). The outer error
    /// is the scan's (every member's); a member's own error (its result past a cap, a filter
    /// that does not plan) ends that member only.
    pub async fn scan(
        &self,
        s: ScanRun,
        cancel: CancellationToken,
    ) -> Result<ScanOutputs, EngineError> {
        let ctx = self.lake_session(&s.lake, &s.hunt.options).await?;
        let results = self.results.clone();
        let caps = self.caps();
        self.guarded(
            async move {
                let df = ctx.sql_with_options(&s.hunt.sql, sql_options()).await?;
                let mut stream = df.execute_stream().await?;
                let schema = stream.schema();
                let df_schema = datafusion::common::DFSchema::try_from(schema.as_ref().clone())?;
                let mut out: ScanOutputs = Vec::with_capacity(s.members.len());
                // (member index, its filter, its result) for the members still writing.
                let mut live = Vec::with_capacity(s.members.len());
                for (i, m) in s.members.iter().enumerate() {
                    let filter = ctx
                        .parse_sql_expr(&m.filter, &df_schema)
                        .and_then(|e| ctx.create_physical_expr(e, &df_schema));
                    match filter {
                        Ok(f) => {
                            out.push(Ok(TaskOutput {
                                rows: 0,
                                result_uri: None,
                            }));
                            let key = result_key(m.job_id, m.task_id, m.token);
                            // Smaller row groups: every member with matches holds one open.
                            let sink = ResultSink::new(
                                &schema,
                                &s.lake.name,
                                results.clone(),
                                key,
                                caps,
                                SCAN_ROW_GROUP_BYTES,
                            );
                            live.push((i, f, sink));
                        }
                        Err(e) => out.push(Err(EngineError::from(e))),
                    }
                }
                while let Some(batch) = stream.next().await {
                    let batch = match batch {
                        Ok(b) => b,
                        Err(e) => {
                            for (_, _, sink) in live {
                                sink.abort().await;
                            }
                            return Err(e.into());
                        }
                    };
                    let mut ended = Vec::new();
                    for (k, (i, filter, sink)) in live.iter_mut().enumerate() {
                        let mine = filter
                            .evaluate(&batch)
                            .and_then(|v| v.into_array(batch.num_rows()))
                            .map_err(EngineError::from)
                            .and_then(|mask| {
                                let mask = datafusion::arrow::array::AsArray::as_boolean_opt(&mask)
                                    .ok_or_else(|| {
                                        EngineError::User("a scan filter is not a condition".into())
                                    })?
                                    .clone();
                                Ok(datafusion::arrow::compute::filter_record_batch(
                                    &batch, &mask,
                                )?)
                            });
                        let written = match mine {
                            Ok(rows) => sink.write(&rows).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = written {
                            out[*i] = Err(e);
                            ended.push(k);
                        }
                    }
                    for k in ended.into_iter().rev() {
                        let (_, _, sink) = live.swap_remove(k);
                        sink.abort().await;
                    }
                }
                for (i, _, sink) in live {
                    out[i] = sink.close().await;
                }
                Ok(out)
            },
            cancel,
        )
        .await
    }

    fn caps(&self) -> ResultCaps {
        ResultCaps {
            rows: self.cfg.max_result_rows,
            bytes: self.cfg.max_result_bytes,
        }
    }

    /// Runs `work` on the CPU runtime until it ends, `cancel` fires or the task timeout passes.
    async fn guarded<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
        cancel: CancellationToken,
    ) -> Result<T, EngineError> {
        let cpu = self
            .cpu
            .as_ref()
            .ok_or_else(|| EngineError::Io("engine shut down".into()))?;
        let work = cpu.spawn(work);
        let abort = work.abort_handle();
        let timeout = self.cfg.timeout;
        let memory = self.cfg.memory_limit;
        tokio::select! {
            r = work => r
                .map_err(|e| EngineError::Transient(format!("task panicked or was aborted: {e}")))?
                .map_err(|e| match e {
                    // DataFusion's pool said no: name the limit the researcher can act on.
                    EngineError::Limit(m) if m.starts_with(crate::error::RESOURCES_EXHAUSTED) => {
                        EngineError::Limit(format!("the hunt needed more than {} of memory ({m})", human_bytes(memory as u64)))
                    }
                    other => other,
                }),
            _ = cancel.cancelled() => {
                abort.abort();
                Err(EngineError::Cancelled)
            }
            _ = tokio::time::sleep(timeout) => {
                abort.abort();
                Err(EngineError::Limit(format!("the hunt ran longer than its limit of {}", human_duration(timeout))))
            }
        }
    }

    /// Rows of committed task results (`keys` in task order), `offset`/`limit` paginated. The
    /// objects are read one after another in `keys` order, so a page is the same whenever it is
    /// read (a scan over all of them lists and reads files in no fixed order).
    ///
    /// Reads are ranged: each object's size and footer first (a HEAD, a bounded read), then only the row
    /// groups the page needs — objects and row groups wholly before `offset` are skipped by
    /// their row counts, unread. A page stops once its row groups hold [`RESULT_PAGE_BYTES`]
    /// in memory (the caller pages on with a shorter page), and a row group larger than
    /// [`RESULT_ROW_GROUP_MAX_BYTES`] is refused: a small compressed object cannot expand into
    /// this process's memory.
    // parquet 59 deprecates `ParquetObjectReader` in favour of implementing `AsyncFileReader`
    // by hand; it still does what is needed here (a bounded read of the footer, ranged reads of
    // the chosen row groups), so it stays until DataFusion moves to the replacement.
    pub async fn results(
        &self,
        keys: &[String],
        offset: usize,
        limit: usize,
    ) -> Result<Vec<RecordBatch>, EngineError> {
        Ok(self.results_page(keys, offset, limit).await?.0)
    }

    /// [`Engine::results`], and whether the page stopped short of `limit` to stay within its
    /// memory budget (more rows follow: the next page starts after the rows returned).
    #[allow(deprecated)]
    pub async fn results_page(
        &self,
        keys: &[String],
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<RecordBatch>, bool), EngineError> {
        use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
        use datafusion::parquet::arrow::async_reader::ParquetObjectReader;
        use futures::TryStreamExt;
        if keys.is_empty() || limit == 0 {
            return Ok((Vec::new(), false));
        }
        let store = self.results.clone();
        let keys = keys.to_vec();
        let read = async move {
            let (mut skip, mut left) = (offset, limit);
            let mut bytes = 0usize;
            let mut decoded = 0usize;
            let mut out = Vec::new();
            for k in keys {
                if left == 0 {
                    break;
                }
                if bytes >= RESULT_PAGE_BYTES || decoded >= RESULT_PAGE_BYTES {
                    return Ok((out, true));
                }
                // The size first: with it the footer is a bounded range, which every store
                // serves (Azure refuses the suffix range a reader without it asks for).
                let path = Path::from(k.as_str());
                let size = object_store::ObjectStoreExt::head(&store, &path)
                    .await
                    .map_err(|e| format!("{k}: {e}"))?
                    .size;
                let reader = ParquetObjectReader::new(store.clone(), path).with_file_size(size);
                let builder = ParquetRecordBatchStreamBuilder::new(reader)
                    .await
                    .map_err(|e| format!("{k}: {e}"))?;
                let md = builder.metadata().clone();
                let mut groups = Vec::new();
                let mut first_offset = None;
                let mut take = 0usize;
                let mut over_budget = false;
                for (i, rg) in md.row_groups().iter().enumerate() {
                    let rows = usize::try_from(rg.num_rows()).unwrap_or(0);
                    if skip >= rows {
                        skip -= rows;
                        continue;
                    }
                    if left == 0 {
                        break;
                    }
                    if bytes >= RESULT_PAGE_BYTES && !groups.is_empty() {
                        over_budget = true;
                        break;
                    }
                    let size = usize::try_from(rg.total_byte_size()).unwrap_or(usize::MAX);
                    if size > RESULT_ROW_GROUP_MAX_BYTES {
                        return Err(format!(
                            "{k}: a row group of {} is larger than a result page may be ({})",
                            human_bytes(size as u64),
                            human_bytes(RESULT_ROW_GROUP_MAX_BYTES as u64)
                        ));
                    }
                    if first_offset.is_none() {
                        first_offset = Some(skip);
                    }
                    let here = (rows - skip).min(left);
                    take += here;
                    left -= here;
                    skip = 0;
                    bytes = bytes.saturating_add(size);
                    groups.push(i);
                }
                if groups.is_empty() {
                    continue;
                }
                let mut stream = builder
                    .with_row_groups(groups)
                    .with_offset(first_offset.unwrap_or(0))
                    .with_limit(take)
                    .with_batch_size(1024)
                    .build()
                    .map_err(|e| format!("{k}: {e}"))?;
                // Decoded size counts, not encoded: a dictionary of one long string decodes
                // into that string per row.
                let mut got = 0usize;
                while let Some(b) = stream.try_next().await.map_err(|e| format!("{k}: {e}"))? {
                    got += b.num_rows();
                    decoded = decoded.saturating_add(b.get_array_memory_size());
                    if b.num_rows() > 0 {
                        out.push(b);
                    }
                    if decoded >= RESULT_PAGE_BYTES {
                        break;
                    }
                }
                if got < take {
                    // Stopped early: the rows not read this time follow on the next page.
                    return Ok::<_, String>((out, true));
                }
                if (over_budget || decoded >= RESULT_PAGE_BYTES) && left > 0 {
                    return Ok((out, true));
                }
            }
            Ok::<_, String>((out, false))
        };
        let cpu = self
            .cpu
            .as_ref()
            .ok_or_else(|| EngineError::Io("engine shut down".into()))?;
        cpu.spawn(read)
            .await
            .map_err(|e| EngineError::Transient(format!("results read panicked: {e}")))?
            .map_err(|e| EngineError::Io(format!("reading results: {e}")))
    }
}

/// The Parquet format with the session's Parquet settings. `ParquetFormat::default()` carries
/// its own defaults and would silently ignore the session's (bloom filters, filter pushdown,
/// the IN-list pruning limit).
fn parquet_format(ctx: &SessionContext) -> Arc<ParquetFormat> {
    Arc::new(ParquetFormat::default().with_options(ctx.state().table_options().parquet.clone()))
}

fn lake_table(
    ctx: &SessionContext,
    table_url: &str,
    lake: &LakeRef,
) -> Result<Arc<ListingTable>, EngineError> {
    let url = ListingTableUrl::parse(table_url)?;
    let opts = ListingOptions::new(parquet_format(ctx))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            lake.partition_cols
                .iter()
                .map(|c| (c.clone(), DataType::Utf8))
                .collect(),
        );
    let config = ListingTableConfig::new(url)
        .with_listing_options(opts)
        .with_schema(lake.schema.clone());
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// What one task may write.
#[derive(Debug, Clone, Copy)]
struct ResultCaps {
    rows: u64,
    bytes: u64,
}

/// One task's result object: rows written as they come, within the task's caps, under the
/// task's key. Nothing is written for a task without rows.
struct ResultSink {
    schema: SchemaRef,
    lake: String,
    results: Arc<dyn ObjectStore>,
    key: String,
    caps: ResultCaps,
    writer: Option<AsyncArrowWriter<BufWriter>>,
    rows: i64,
    bytes: u64,
    /// A row group is written once this much is buffered.
    flush_at: usize,
}

/// A shared scan's members write row groups of this much at most, so that many members with
/// matches do not together hold many large buffers.
const SCAN_ROW_GROUP_BYTES: usize = 2 << 20;

impl ResultSink {
    /// Results of a query with `query_schema`, behind a column naming the lake.
    fn new(
        query_schema: &SchemaRef,
        lake: &str,
        results: Arc<dyn ObjectStore>,
        key: String,
        caps: ResultCaps,
        flush_at: usize,
    ) -> Self {
        let mut fields = vec![Field::new(LAKE_COLUMN, DataType::Utf8, false)];
        fields.extend(query_schema.fields().iter().map(|f| f.as_ref().clone()));
        ResultSink {
            schema: Arc::new(Schema::new(fields)),
            lake: lake.to_string(),
            results,
            key,
            caps,
            writer: None,
            rows: 0,
            bytes: 0,
            flush_at,
        }
    }

    /// Writes `batch`; past a cap, fails with the limit (the caller then aborts).
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as i64;
        self.bytes += batch.get_array_memory_size() as u64;
        let lake = &self.lake;
        if self.rows as u64 > self.caps.rows {
            return Err(EngineError::Limit(format!(
                "the hunt's results from lake {lake} passed the limit of {} rows: narrow the query or add a LIMIT",
                self.caps.rows
            )));
        }
        if self.bytes > self.caps.bytes {
            return Err(EngineError::Limit(format!(
                "the hunt's results from lake {lake} passed the limit of {}: select fewer or smaller columns, or add a LIMIT",
                human_bytes(self.caps.bytes)
            )));
        }
        let lake_col: ArrayRef = Arc::new(StringArray::from(vec![lake.as_str(); batch.num_rows()]));
        let mut cols = vec![lake_col];
        cols.extend(batch.columns().iter().cloned());
        let out = RecordBatch::try_new(self.schema.clone(), cols)?;
        if self.writer.is_none() {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_max_row_group_row_count(Some(RESULT_ROW_GROUP_ROWS))
                .build();
            let obj = BufWriter::new(self.results.clone(), Path::from(self.key.as_str()));
            self.writer = Some(AsyncArrowWriter::try_new(
                obj,
                self.schema.clone(),
                Some(props),
            )?);
        }
        if let Some(w) = self.writer.as_mut() {
            w.write(&out).await?;
            // Row groups small in bytes too: a page of results reads whole row groups.
            if w.in_progress_size() > self.flush_at {
                w.flush().await?;
            }
        }
        Ok(())
    }

    /// What was staged is nobody's result.
    async fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.into_inner().abort().await;
        }
    }

    async fn close(self) -> Result<TaskOutput, EngineError> {
        crate::metrics::ROWS_MATCHED.inc_by(self.rows as u64);
        match self.writer {
            Some(w) => {
                w.close().await?;
                Ok(TaskOutput {
                    rows: self.rows,
                    result_uri: Some(self.key),
                })
            }
            None => Ok(TaskOutput {
                rows: 0,
                result_uri: None,
            }),
        }
    }
}

#[cfg(test)]
mod result_key_tests {
    use super::*;

    #[test]
    fn the_results_bucket_takes_its_own_settings_when_given() {
        let env = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        use object_store::aws::AmazonS3ConfigKey as K;
        let b = results_s3_builder(env(&[
            ("AWS_ACCESS_KEY_ID", "lakes"),
            ("SLUICE_RESULTS_AWS_ACCESS_KEY_ID", "results"),
            ("SLUICE_RESULTS_AWS_ENDPOINT", "http://results:9000"),
        ]))
        .unwrap();
        assert_eq!(
            b.get_config_value(&K::AccessKeyId).as_deref(),
            Some("results")
        );
        assert_eq!(
            b.get_config_value(&K::Endpoint).as_deref(),
            Some("http://results:9000")
        );
        let e = results_s3_builder(env(&[("SLUICE_RESULTS_AWS_PASSWORD", "x")])).unwrap_err();
        assert!(e.contains("not an S3 setting"), "{e}");
    }

    #[test]
    fn results_urls_name_a_store_or_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let check = |url: &str, want: Result<&str, &str>| {
            let mut cfg = EngineConfig::new(dir.path().join("staging"));
            cfg.results_url = Some(url.to_string());
            match (results_store(&cfg), want) {
                (Ok(store), Ok(shown)) => {
                    assert!(store.to_string().contains(shown), "{url}: {store}")
                }
                (Err(e), Err(msg)) => {
                    let e = e.to_string();
                    assert!(e.contains(msg), "{url}: {e}");
                    assert!(!e.contains("s3cr3t"), "{url}: a secret shown: {e}");
                }
                (got, want) => panic!("{url}: got {:?}, want {want:?}", got.map(|s| s.to_string())),
            }
        };
        // No network at construction: Google's falls back to the metadata server when no key
        // is set (workload identity), and says so only when used.
        check("gs://hunt-results", Ok("GoogleCloudStorage(hunt-results)"));
        check("gs://hunt-results/sluice/", Ok("PrefixObjectStore(sluice)"));
        check("s3://hunt-results", Ok("AmazonS3(hunt-results)"));
        check(
            "hdfs://nn/results",
            Err("hdfs:// is not a results store: use s3://"),
        );
        check("gs:///prefix", Err("no bucket"));
        check("az:///prefix", Err("no bucket"));
        check(
            "gs://user:s3cr3t@bucket/p",
            Err("no credentials or options in the URL"),
        );
        check(
            "az://container/p?sas=s3cr3t",
            Err("no credentials or options in the URL"),
        );
        check("not a url", Err("relative URL without a base"));
    }

    #[test]
    fn only_result_shaped_keys_are_result_keys() {
        assert!(is_result_key(&result_key(12, 345, 6)));
        for k in [
            "jobs/12/0000000000000000345-6.parquet/x",
            "jobs/12/345-6.parquet",
            "jobs/../0000000000000000345-6.parquet",
            "jobs/12/0000000000000000345-6.parquet#1",
            "other/12/0000000000000000345-6.parquet",
            "jobs//0000000000000000345-6.parquet",
            "/etc/passwd",
        ] {
            assert!(!is_result_key(k), "{k}");
        }
    }
}
