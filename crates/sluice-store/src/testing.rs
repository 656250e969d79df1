//! Test support shared by every crate's integration tests: a fresh Postgres schema per test on
//! a real server, in database `sluice_test` of the server `SLUICE_TEST_DATABASE_URL` names
//! (default `postgres://postgres@127.0.0.1:5432`).

use crate::{ConnectOptions, PgStore, Store};
use sqlx::{Connection, Executor, PgConnection};

/// Claims up to `limit` tasks for `worker` at `now`, with a 30 s lease.
pub async fn claim(
    store: &dyn Store,
    worker: &str,
    limit: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<crate::ClaimedTask> {
    let p = crate::TaskClaimParams {
        worker: worker.into(),
        limit,
        lease: std::time::Duration::from_secs(30),
        now,
        skip_owners: Vec::new(),
        share: 0,
        prefer_scopes: Vec::new(),
    };
    match store.task_claim(p).await {
        Ok(claimed) => claimed,
        Err(e) => panic!("claim: {e}"),
    }
}

/// Records how `lease`'s task went, at `now`.
pub async fn finish(
    store: &dyn Store,
    lease: crate::Lease,
    outcome: crate::TaskOutcome,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::FinishReport {
    let finishes = vec![crate::TaskFinish { lease, outcome }];
    match store
        .task_finish(crate::TaskFinishParams { finishes, now })
        .await
    {
        Ok(report) => report,
        Err(e) => panic!("finish: {e}"),
    }
}

pub fn server_url() -> String {
    std::env::var("SLUICE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

/// The URL of the test database, created on first use (racing creators are fine).
pub async fn test_db_url() -> String {
    let url = server_url();
    let url = url.trim_end_matches('/');
    let host_end = url.find("://").map_or(0, |s| s + 3);
    let base = match url[host_end..].find('/') {
        Some(i) => &url[..host_end + i],
        None => url,
    };
    let mut c = match PgConnection::connect(&format!("{base}/postgres")).await {
        Ok(c) => c,
        Err(e) => panic!(
            "a PostgreSQL server at {base} is needed by these tests (set SLUICE_TEST_DATABASE_URL): {e}"
        ),
    };
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = 'sluice_test'")
            .fetch_optional(&mut c)
            .await
            .unwrap_or_else(|e| panic!("querying pg_database: {e}"));
    if exists.is_none()
        && let Err(e) = c.execute("CREATE DATABASE sluice_test").await
    {
        let code = e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.to_string());
        // 42P04: exists; 23505: a concurrent creator won the race.
        assert!(
            matches!(code.as_deref(), Some("42P04" | "23505")),
            "create database sluice_test: {e}"
        );
    }
    format!("{base}/sluice_test")
}

/// A schema name no other test uses.
pub fn fresh_schema() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

/// A migrated store in a fresh schema, and a URL other processes can use to reach it.
pub async fn pg_store() -> (PgStore, String) {
    let url = test_db_url().await;
    let schema = fresh_schema();
    let store = PgStore::connect(
        &url,
        ConnectOptions {
            max_connections: 12,
            schema: Some(schema.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrating: {e}"));
    (store, format!("{url}?options[search_path]={schema}"))
}

/// A private PostgreSQL cluster for tests that stop and start the server (the shared one must
/// stay up for the other tests). `initdb` in a temporary folder, listening on `port` on
/// 127.0.0.1 only; run as the `postgres` user when the tests run as root (initdb refuses root).
#[derive(Debug)]
pub struct TempCluster {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    pub port: u16,
}

impl TempCluster {
    /// Creates and starts a cluster; panics with the reason if that is not possible here.
    pub fn start() -> TempCluster {
        let bin = ["/usr/lib/postgresql"]
            .iter()
            .filter_map(|root| std::fs::read_dir(root).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .unwrap_or_else(|| panic!("no PostgreSQL server binaries under /usr/lib/postgresql"));
        let port = 20_000 + (rand::random::<u16>() % 20_000);
        let dir = std::env::temp_dir().join(format!("sluice-pg-{port}-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let c = TempCluster { bin, dir, port };
        c.chown();
        c.run(
            "initdb",
            &[
                "-D",
                &c.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        c.up();
        c
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn is_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    }

    fn chown(&self) {
        if Self::is_root() {
            let st = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres", &self.dir.display().to_string()])
                .status();
            assert!(
                st.is_ok_and(|s| s.success()),
                "chown {} to postgres",
                self.dir.display()
            );
        }
    }

    fn command(&self, tool: &str) -> std::process::Command {
        let exe = self.bin.join(tool);
        if Self::is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        match self.command(tool).args(args).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "{tool} {args:?} failed: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("running {tool}: {e}"),
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server the way a crash or failover would look to clients: connections cut.
    pub fn down(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Turns off the task counters' triggers in this store's schema (benchmarks only: measures what
/// they cost; `task_backlog` is wrong afterwards).
pub async fn disable_task_counters(store: &PgStore) -> crate::Result<()> {
    for t in [
        "tasks_count_insert",
        "tasks_count_update",
        "tasks_count_delete",
    ] {
        store
            .pool()
            .execute(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE tasks DISABLE TRIGGER {t}"
            )))
            .await
            .map_err(crate::error::from_sqlx)?;
    }
    Ok(())
}

/// Submits `p` (usually [`job_params`], changed where a test needs to).
pub async fn submit(store: &dyn Store, p: crate::JobInsertParams) -> crate::Job {
    match store.job_insert(p).await {
        Ok(j) => j.job,
        Err(e) => panic!("submit: {e}"),
    }
}

/// A job of `owner` over `lakes` lakes (`{owner}-lake-{i}`, all in scope `aws:1`), submitted
/// at `now`: the test crates' submission.
pub fn job_params(
    owner: &str,
    lakes: usize,
    max_attempts: i32,
    spec: serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::JobInsertParams {
    crate::JobInsertParams {
        retention_secs: None,
        webhook: None,
        owner: owner.into(),
        idempotency_key: None,
        spec,
        sql: None,
        priority: 0,
        max_attempts,
        tasks: (0..lakes)
            .map(|i| crate::NewTask {
                lake: format!("{owner}-lake-{i}"),
                scope: "aws:1".into(),
                est_calls: 1,
                shareable: false,
            })
            .collect(),
        now,
    }
}

/// The kinds of a job's journal rows, in order.
pub async fn kinds(store: &dyn Store, job: sluice_core::JobId) -> Vec<String> {
    let all = crate::EventListParams {
        job_id: Some(job),
        limit: 5_000,
        ..Default::default()
    };
    match crate::StoreExt::event_list_until(store, all, &|_| false).await {
        Ok(ev) => ev.into_iter().map(|e| e.kind).collect(),
        Err(e) => panic!("events of job {job}: {e}"),
    }
}
