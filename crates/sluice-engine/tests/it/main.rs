//! The engine on generated lakes: needles found exactly, the sandbox holds at run time, limits
//! and cancellation stop runs, caches make a repeat hunt free, bloom filters save reads.

// Test code: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_engine::counting::{CountSnapshot, Counts};
use sluice_engine::generate::{GenerateParams, Manifest, generate};
use sluice_engine::{CompiledHunt, Engine, EngineConfig, EngineError, HuntSpec, LakeRef, TaskRun};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Fixture {
    _dir: tempfile::TempDir,
    manifest: Manifest,
    lakes: Vec<LakeRef>,
}

/// Six generated lakes (3 days, small row groups so pruning has something to skip). Each test
/// runs in its own process (nextest), so each generates its own copy.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut p = GenerateParams::new(dir.path().join("lakes"), 6, 24_000, 7);
    p.row_group_rows = 2_000;
    let manifest = generate(&p).unwrap();
    let engine = Engine::new(EngineConfig::new(dir.path().join("scratch"))).unwrap();
    let mut lakes = Vec::new();
    for (i, l) in manifest.lakes.iter().enumerate() {
        let mut lake = l.local_ref(i as i64 + 1);
        let (schema, parts) = engine.discover(&lake).await.unwrap();
        lake.schema = schema;
        lake.partition_cols = parts;
        lakes.push(lake);
    }
    Fixture {
        _dir: dir,
        manifest,
        lakes,
    }
}

fn engine(dir: &std::path::Path) -> Engine {
    let mut cfg = EngineConfig::new(dir);
    cfg.timeout = Duration::from_secs(60);
    Engine::new(cfg).unwrap()
}

fn run(lake: &LakeRef, hunt: CompiledHunt, task: i64) -> TaskRun {
    TaskRun {
        job_id: 1,
        task_id: task,
        token: 1,
        lake: lake.clone(),
        hunt,
    }
}

/// A column as strings, whatever its string encoding (partition columns come back as
/// dictionaries).
fn column(b: &RecordBatch, col: &str) -> Vec<String> {
    let a = b
        .column_by_name(col)
        .unwrap_or_else(|| panic!("no column {col}"));
    let a = cast(a, &DataType::Utf8).unwrap();
    let a = a.as_any().downcast_ref::<StringArray>().unwrap();
    (0..a.len()).map(|i| a.value(i).to_string()).collect()
}

fn strings(batches: &[RecordBatch], col: &str) -> Vec<String> {
    batches.iter().flat_map(|b| column(b, col)).collect()
}

fn ioc_all(m: &Manifest) -> HuntSpec {
    HuntSpec::Ioc {
        ips: m.ips(),
        hashes: m.hashes(),
        domains: m.domains(),
        since: None,
        until: None,
        lakes: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioc_hunt_finds_exactly_the_planted_needles() {
    let f = &fixture().await;
    assert!(!f.manifest.needles.is_empty());
    assert_eq!(f.lakes[0].partition_cols, vec!["dt"]);
    let out = tempfile::tempdir().unwrap();
    let e = engine(out.path());
    let hunt = sluice_engine::compile(&ioc_all(&f.manifest), &f.lakes[0].partition_cols).unwrap();
    let mut keys = Vec::new();
    let mut total = 0;
    for (i, lake) in f.lakes.iter().enumerate() {
        let o = e
            .run(
                run(lake, hunt.clone(), i as i64 + 1),
                CancellationToken::new(),
            )
            .await
            .unwrap();
        let planted = f
            .manifest
            .needles
            .iter()
            .filter(|n| n.lake == lake.name)
            .count() as i64;
        assert_eq!(o.rows, planted, "{}", lake.name);
        assert_eq!(o.result_uri.is_some(), planted > 0);
        total += o.rows;
        keys.extend(o.result_uri);
    }
    assert_eq!(total as usize, f.manifest.needles.len());
    let rows = e.results(&keys, 0, 1000).await.unwrap();
    // Every row is a planted needle: (lake, dt, the needle's value in its column).
    let mut got = BTreeSet::new();
    for b in &rows {
        let cols: Vec<Vec<String>> = ["_lake", "dt", "src_ip", "dst_ip", "domain", "file_sha256"]
            .iter()
            .map(|c| column(b, c))
            .collect();
        let row = |i: usize| cols.iter().map(|c| c[i].clone()).collect::<Vec<_>>();
        got.extend((0..b.num_rows()).map(|i| {
            let r = row(i);
            (
                r[0].clone(),
                r[1].clone(),
                r[2].clone(),
                r[3].clone(),
                r[4].clone(),
                r[5].clone(),
            )
        }));
    }
    assert_eq!(got.len(), f.manifest.needles.len());
    for n in &f.manifest.needles {
        let hit = got.iter().any(|(lake, dt, src, dst, dom, sha)| {
            lake == &n.lake
                && dt == &n.dt
                && match n.column.as_str() {
                    "src_ip" => src == &n.value,
                    "dst_ip" => dst == &n.value,
                    "domain" => dom == &n.value,
                    _ => sha == &n.value,
                }
        });
        assert!(hit, "needle not found: {n:?}");
    }
    // Pages, one row at a time, are exactly the whole read, in the same order, every time
    // (a scan over all the objects at once listed them in no fixed order: pages overlapped).
    let json =
        |batches: &[datafusion::arrow::record_batch::RecordBatch]| -> Vec<serde_json::Value> {
            let mut buf = Vec::new();
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut buf);
            w.write_batches(&batches.iter().collect::<Vec<_>>())
                .unwrap();
            w.finish().unwrap();
            drop(w);
            serde_json::from_slice(&buf).unwrap()
        };
    let all = json(&e.results(&keys, 0, 1000).await.unwrap());
    assert_eq!(all.len(), total as usize);
    for _ in 0..2 {
        let mut paged = Vec::new();
        for offset in 0..all.len() + 1 {
            paged.extend(json(&e.results(&keys, offset, 1).await.unwrap()));
        }
        assert_eq!(paged, all);
    }
    let tail = json(&e.results(&keys, 2, 1000).await.unwrap());
    assert_eq!(tail, all[2.min(all.len())..]);
}

/// A page reads the footer and the row groups it needs, not the whole object; a task's
/// results are capped in rows and in bytes, with the limit named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_pages_are_ranged_reads_and_results_are_capped() {
    let f = &fixture().await;
    let out = tempfile::tempdir().unwrap();
    let counts = Arc::new(sluice_engine::counting::Counts::default());
    let e = engine(out.path()).with_result_counts(counts.clone());
    let all = CompiledHunt {
        sql: "SELECT * FROM events".into(),
        options: BTreeMap::new(),
    };
    let o = e
        .run(run(&f.lakes[0], all.clone(), 1), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(o.rows, 24_000);
    let key = o.result_uri.unwrap();
    let size = std::fs::metadata(out.path().join(&key)).unwrap().len();
    let before = counts.snapshot();
    let page = e
        .results(std::slice::from_ref(&key), 23_990, 5)
        .await
        .unwrap();
    let read = counts.snapshot().since(&before);
    assert_eq!(page.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
    assert!(
        read.bytes * 2 < size,
        "a page near the end read {} of {size} bytes",
        read.bytes
    );
    // Caps: rows, then bytes; each fails the task with the limit named.
    for (rows, bytes, names) in [
        (1_000, 256 << 20, "passed the limit of 1000 rows"),
        (1_000_000, 1 << 20, "passed the limit of 1 MiB"),
    ] {
        let mut cfg = EngineConfig::new(out.path());
        cfg.max_result_rows = rows;
        cfg.max_result_bytes = bytes;
        let capped = Engine::new(cfg).unwrap();
        let err = capped
            .run(run(&f.lakes[0], all.clone(), 2), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, EngineError::Limit(ref m) if m.contains(names)),
            "{names}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_hunts_run_and_group() {
    let f = &fixture().await;
    let out = tempfile::tempdir().unwrap();
    let e = engine(out.path());
    let hunt = CompiledHunt {
        sql: "SELECT dt, count(*) AS n FROM events GROUP BY dt ORDER BY dt".into(),
        options: BTreeMap::new(),
    };
    let o = e
        .run(run(&f.lakes[0], hunt, 1), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(o.rows, 3, "one row per day partition");
    let rows = e.results(&[o.result_uri.unwrap()], 0, 10).await.unwrap();
    assert_eq!(
        strings(&rows, "dt"),
        vec!["2026-11-20", "2026-11-21", "2026-11-22"]
    );
    assert_eq!(strings(&rows, "_lake"), vec![f.lakes[0].name.clone(); 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_holds_at_run_time() {
    let f = &fixture().await;
    let out = tempfile::tempdir().unwrap();
    let e = engine(out.path());
    for sql in [
        "COPY (SELECT * FROM events) TO '/tmp/sluice-escape.csv'",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/'",
        "SET datafusion.runtime.memory_limit = '100G'",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/passwd'",
        "SELECT 1; SELECT 2",
        "INSERT INTO events SELECT * FROM events",
        "CREATE VIEW v AS SELECT 1",
        "DROP TABLE events",
    ] {
        let hunt = CompiledHunt {
            sql: sql.into(),
            options: BTreeMap::new(),
        };
        let err = e
            .run(run(&f.lakes[0], hunt, 1), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::User(_)), "{sql}: {err:?}");
    }
    assert!(!std::path::Path::new("/tmp/sluice-escape.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_cancellation_stop_runs() {
    let f = &fixture().await;
    let out = tempfile::tempdir().unwrap();
    let heavy = CompiledHunt {
        sql: "SELECT a.src_ip, count(*) FROM events a JOIN events b ON a.host = b.host GROUP BY a.src_ip".into(),
        options: BTreeMap::new(),
    };
    // (the limit, set on an engine of its own; what the error says), attempts 1 and 2.
    type Limit = fn(&mut EngineConfig);
    let limits: [(&str, Limit, &str); 2] = [
        (
            "memory",
            |c| c.memory_limit = 2 << 20,
            "needed more than 2 MiB",
        ),
        (
            "timeout",
            |c| c.timeout = Duration::from_millis(200),
            "longer than its limit of 200ms",
        ),
    ];
    for (attempt, (what, limit, says)) in (1..).zip(limits) {
        let mut cfg = EngineConfig::new(out.path());
        limit(&mut cfg);
        let limited = Engine::new(cfg).unwrap();
        let hunt = run(&f.lakes[0], heavy.clone(), attempt);
        let err = limited
            .run(hunt, CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, EngineError::Limit(ref m) if m.contains(says)),
            "{what}: {err:?}"
        );
    }

    let e = engine(out.path());
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.cancel();
    });
    let err = e.run(run(&f.lakes[0], heavy, 3), cancel).await.unwrap_err();
    assert_eq!(err, EngineError::Cancelled);
}

/// A hunt, then the same hunt again: what each read from the lake, on an engine with a byte
/// cache of `cache` bytes.
async fn twice(cache: u64) -> (CountSnapshot, CountSnapshot, Option<(u64, u64)>) {
    let f = &fixture().await;
    let out = tempfile::tempdir().unwrap();
    let counts = Arc::new(Counts::default());
    let mut cfg = EngineConfig::new(out.path());
    cfg.byte_cache_bytes = cache;
    let e = Engine::new(cfg).unwrap().with_call_counts(counts.clone());
    let lake = f
        .lakes
        .iter()
        .find(|l| !f.manifest.needles.iter().any(|n| n.lake == l.name))
        .unwrap_or(&f.lakes[0]);
    let hunt = sluice_engine::compile(&ioc_all(&f.manifest), &lake.partition_cols).unwrap();
    let before = counts.snapshot();
    let a = e
        .run(run(lake, hunt.clone(), 1), CancellationToken::new())
        .await
        .unwrap();
    let first = counts.snapshot().since(&before);
    let before = counts.snapshot();
    let b = e
        .run(run(lake, hunt, 2), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(a.rows, b.rows);
    let second = counts.snapshot().since(&before);
    let cached = e.byte_cache().map(|c| {
        (
            c.counts.hits.load(std::sync::atomic::Ordering::Relaxed),
            c.counts
                .bytes_saved
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    });
    (first, second, cached)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_hunt_reads_nothing_from_the_lake_with_the_byte_cache() {
    // Without the byte cache: DataFusion's caches spare the LIST and the footers, but the
    // bloom filters and the pages they could not rule out are read again.
    let (first, second, cached) = twice(0).await;
    assert!(
        first.list >= 1 && first.footer >= 3 && first.calls() > first.list,
        "the first hunt lists and reads footers: {first:?}"
    );
    assert_eq!(
        (second.list, second.footer, second.head),
        (0, 0, 0),
        "{second:?}"
    );
    assert!(
        second.calls() > 0 && second.bytes > 0 && second.bytes < first.bytes,
        "{second:?}"
    );
    assert_eq!(cached, None);
    // With it: the repeat hunt makes no call at all, and says what it saved.
    let (first, second, cached) = twice(64 << 20).await;
    assert!(first.calls() > first.list, "{first:?}");
    assert_eq!(
        second.calls(),
        0,
        "the repeat hunt called the lake: {second:?}"
    );
    assert_eq!(second.bytes, 0, "{second:?}");
    let (hits, saved) = cached.unwrap();
    assert!(
        hits > 0 && saved > 0 && saved <= first.bytes,
        "{hits} hits, {saved} bytes saved of {first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_file_is_read_again_not_served_from_the_byte_cache() {
    let f = &fixture().await;
    let out = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(out.path());
    cfg.list_ttl = Duration::from_millis(500);
    let e = Engine::new(cfg).unwrap();
    // A lake of its own: this test rewrites one of its files.
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::PathBuf::from(f.lakes[2].url.trim_start_matches("file://"));
    for day in ["dt=2026-11-20", "dt=2026-11-21"] {
        std::fs::create_dir_all(dir.path().join(day)).unwrap();
        std::fs::copy(
            src.join(day).join("part-0.parquet"),
            dir.path().join(day).join("part-0.parquet"),
        )
        .unwrap();
    }
    let lake = LakeRef {
        url: format!("file://{}", dir.path().display()),
        ..f.lakes[2].clone()
    };
    let count = CompiledHunt {
        sql: "SELECT count(*) AS n, min(src_ip) AS a, max(src_ip) AS z FROM events WHERE dt = '2026-11-21'".into(),
        options: BTreeMap::new(),
    };
    // The one row the hunt answers, as text.
    async fn answer(e: &Engine, lake: &LakeRef, hunt: &CompiledHunt, task: i64) -> Vec<String> {
        let r = e
            .run(run(lake, hunt.clone(), task), CancellationToken::new())
            .await
            .unwrap();
        let batches = e.results(&[r.result_uri.unwrap()], 0, 10).await.unwrap();
        ["n", "a", "z"]
            .iter()
            .flat_map(|c| strings(&batches, c))
            .collect()
    }
    let before = answer(&e, &lake, &count, 1).await;
    assert_eq!(
        answer(&e, &lake, &count, 2).await,
        before,
        "cached, same answer"
    );
    // The day is rewritten with other data (another day's file).
    std::fs::copy(
        src.join("dt=2026-11-22/part-0.parquet"),
        dir.path().join("dt=2026-11-21/part-0.parquet"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = answer(&e, &lake, &count, 3).await;
    let fresh = Engine::new(EngineConfig::new(out.path())).unwrap();
    let want = answer(&fresh, &lake, &count, 4).await;
    assert_eq!(after, want, "the new file's bytes, not the cached ones");
    assert_ne!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bloom_filters_save_reads_for_absent_values() {
    // One lake with one large file: with small files the footer prefetch (512 KiB) reads them
    // whole and no pruning shows in the bytes.
    let dir = tempfile::tempdir().unwrap();
    let mut p = GenerateParams::new(dir.path().join("big"), 1, 300_000, 11);
    p.days = 1;
    p.row_group_rows = 10_000;
    let m = generate(&p).unwrap();
    let e0 = engine(dir.path());
    let mut lake = LakeRef {
        id: 1,
        name: m.lakes[0].name.clone(),
        url: format!("file://{}/", m.lakes[0].path.display()),
        scope: "local".into(),
        partition_cols: vec![],
        schema: sluice_engine::generate::telemetry_schema(),
        options: BTreeMap::new(),
    };
    (lake.schema, lake.partition_cols) = e0.discover(&lake).await.unwrap();
    // 10.128.0.0 is inside every row group's min/max range but never generated: only a bloom
    // filter can rule it out.
    let spec = HuntSpec::Ioc {
        ips: vec!["10.128.0.0".into()],
        hashes: vec![],
        domains: vec![],
        since: None,
        until: None,
        lakes: Default::default(),
    };
    let mut bytes = Vec::new();
    for bloom in ["true", "false"] {
        let counts = Arc::new(Counts::default());
        let e = engine(dir.path()).with_call_counts(counts.clone());
        let mut hunt = sluice_engine::compile(&spec, &lake.partition_cols).unwrap();
        hunt.options.insert(
            "datafusion.execution.parquet.bloom_filter_on_read".into(),
            bloom.into(),
        );
        hunt.options.insert(
            "datafusion.execution.parquet.enable_page_index".into(),
            "false".into(),
        );
        let o = e
            .run(run(&lake, hunt, 1), CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(o.rows, 0);
        bytes.push(counts.snapshot().bytes);
    }
    assert!(
        bytes[0] * 2 < bytes[1],
        "bloom filters on: {} bytes, off: {} bytes",
        bytes[0],
        bytes[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_files_show_up_after_the_listing_ttl_not_before() {
    let f = &fixture().await;
    let out = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(out.path());
    cfg.list_ttl = Duration::from_secs(2);
    let e = Engine::new(cfg).unwrap();
    let lake = &f.lakes[2];
    let days = CompiledHunt {
        sql: "SELECT DISTINCT dt FROM events".into(),
        options: BTreeMap::new(),
    };
    assert_eq!(
        e.run(run(lake, days.clone(), 1), CancellationToken::new())
            .await
            .unwrap()
            .rows,
        3
    );
    // A new day lands in the lake.
    let dir = std::path::PathBuf::from(lake.url.trim_start_matches("file://"));
    std::fs::create_dir_all(dir.join("dt=2026-11-23")).unwrap();
    std::fs::copy(
        dir.join("dt=2026-11-22/part-0.parquet"),
        dir.join("dt=2026-11-23/part-0.parquet"),
    )
    .unwrap();
    // Within the TTL the cached listing is used: no LIST, the new file is not seen yet.
    assert_eq!(
        e.run(run(lake, days.clone(), 2), CancellationToken::new())
            .await
            .unwrap()
            .rows,
        3
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(
        e.run(run(lake, days, 3), CancellationToken::new())
            .await
            .unwrap()
            .rows,
        4,
        "the new day is hunted after the TTL"
    );
}

/// Every row of `batches` as one line of its values (sorted: a scan's row order is not a
/// hunt's meaning).
fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<Vec<String>> = b
            .schema()
            .fields()
            .iter()
            .map(|f| column(b, f.name()))
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| c[r].as_str())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out.sort();
    out
}

/// An engine of its own (no cache warmed by another run), counting its lake calls.
fn counted(dir: &std::path::Path, rows_cap: u64) -> (Engine, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let mut cfg = EngineConfig::new(dir);
    cfg.timeout = Duration::from_secs(60);
    cfg.max_result_rows = rows_cap;
    (
        Engine::new(cfg).unwrap().with_call_counts(counts.clone()),
        counts,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_scan_gives_each_hunt_exactly_the_rows_it_finds_alone() {
    use sluice_engine::hunt::IocSpec;
    use sluice_engine::{ScanMember, ScanRun};
    let f = &fixture().await;
    let m = &f.manifest;
    let (ips, hashes, domains) = (m.ips(), m.hashes(), m.domains());
    assert!(ips.len() >= 3 && !hashes.is_empty() && !domains.is_empty());
    let mut days: Vec<&str> = m.needles.iter().map(|n| n.dt.as_str()).collect();
    days.sort();
    let second_day: chrono::DateTime<chrono::Utc> = format!("{}T00:00:00Z", days[days.len() / 2])
        .parse()
        .unwrap();
    // Hunts that overlap, differ in kind and in range, and one that finds nothing.
    let specs = vec![
        IocSpec {
            ips: ips[..ips.len() / 2].to_vec(),
            ..Default::default()
        },
        IocSpec {
            ips: ips[ips.len() / 3..].to_vec(),
            hashes: hashes.clone(),
            ..Default::default()
        },
        IocSpec {
            domains: domains.clone(),
            ips: ips.clone(),
            since: Some(second_day),
            ..Default::default()
        },
        IocSpec {
            hashes: hashes[..1].to_vec(),
            domains: domains.clone(),
            until: Some(second_day),
            ..Default::default()
        },
        IocSpec {
            ips: vec!["203.0.113.77".into()],
            ..Default::default()
        },
    ];
    let out = tempfile::tempdir().unwrap();
    let (mut found, mut empty, mut capped, mut uncapped) = (0, 0, 0, 0);
    for lake in &f.lakes {
        let pc = &lake.partition_cols;
        // Alone: each hunt on an engine of its own.
        let mut alone = Vec::new();
        let mut alone_calls = 0;
        for (k, spec) in specs.iter().enumerate() {
            let (e, counts) = counted(out.path(), 1_000_000);
            let o = e
                .run(
                    TaskRun {
                        job_id: 10 + k as i64,
                        task_id: k as i64 + 1,
                        token: 1,
                        lake: lake.clone(),
                        hunt: spec.compile(pc).unwrap(),
                    },
                    CancellationToken::new(),
                )
                .await
                .unwrap();
            alone_calls += counts.snapshot().calls();
            let keys: Vec<String> = o.result_uri.iter().cloned().collect();
            alone.push(lines(&e.results(&keys, 0, 100_000).await.unwrap()));
            assert_eq!(o.rows as usize, alone[k].len());
        }
        // Shared: one scan of the union, each member keeping its own rows.
        let scan = |token: i64, filters: Vec<String>| ScanRun {
            lake: lake.clone(),
            hunt: IocSpec::compile_shared(&specs, pc).unwrap(),
            members: filters
                .into_iter()
                .enumerate()
                .map(|(k, filter)| ScanMember {
                    job_id: 10 + k as i64,
                    task_id: k as i64 + 1,
                    token,
                    filter,
                })
                .collect(),
        };
        let filters: Vec<String> = specs.iter().map(|s| s.predicate(pc).unwrap()).collect();
        let (e, counts) = counted(out.path(), 1_000_000);
        let shared = e
            .scan(scan(2, filters.clone()), CancellationToken::new())
            .await
            .unwrap();
        let shared_calls = counts.snapshot().calls();
        assert!(
            shared_calls < alone_calls,
            "{}: the shared scan made {shared_calls} calls, the hunts alone {alone_calls}",
            lake.name
        );
        for (k, o) in shared.into_iter().enumerate() {
            let o = o.unwrap();
            let keys: Vec<String> = o.result_uri.iter().cloned().collect();
            if let Some(key) = &o.result_uri {
                assert_eq!(
                    *key,
                    sluice_engine::result_key(10 + k as i64, k as i64 + 1, 2)
                );
            }
            let got = lines(&e.results(&keys, 0, 100_000).await.unwrap());
            assert_eq!(got, alone[k], "{} hunt {k}", lake.name);
            assert_eq!(o.rows as usize, got.len());
            found += got.len();
            empty += usize::from(got.is_empty());
        }
        // One member past its cap, or with a filter that does not plan, ends alone.
        let (e, _) = counted(out.path(), 1);
        let mut filters = filters;
        filters.push("src_ip IN (".into());
        let shared = e
            .scan(scan(3, filters), CancellationToken::new())
            .await
            .unwrap();
        for (k, o) in shared.iter().enumerate() {
            match (alone.get(k).map(Vec::len), o) {
                (Some(n), Ok(o)) if n <= 1 => {
                    assert_eq!(o.rows as usize, n);
                    uncapped += 1;
                }
                (Some(_), Err(EngineError::Limit(m))) if m.contains("limit of 1 rows") => {
                    capped += 1
                }
                (None, Err(EngineError::User(_))) => {}
                other => panic!("{} member {k}: {other:?}", lake.name),
            }
        }
    }
    assert!(found > 0 && empty > 0, "{found} rows found, {empty} empty");
    assert!(
        capped > 0 && uncapped > 0,
        "{capped} capped, {uncapped} not"
    );
}
