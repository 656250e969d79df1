//! Synthetic security-telemetry lakes with planted needles, for tests, the demo and
//! benchmarks. Deterministic for a seed. Each lake is a folder of hive-partitioned Parquet
//! (`dt=YYYY-MM-DD/part-0.parquet`), rows sorted by `ts`, bloom filters on the IOC columns.
//! Needles look like background values but never equal one, so a hunt for the manifest's
//! needles must return exactly the planted rows.

use crate::EngineError;
use chrono::{Duration, NaiveDate, TimeZone, Utc};
use datafusion::arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The columns every generated lake has, in order.
pub fn telemetry_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("src_ip", DataType::Utf8, false),
        Field::new("dst_ip", DataType::Utf8, false),
        Field::new("dst_port", DataType::Int32, false),
        Field::new("protocol", DataType::Utf8, false),
        Field::new("domain", DataType::Utf8, false),
        Field::new("file_sha256", DataType::Utf8, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("host", DataType::Utf8, false),
        Field::new("user", DataType::Utf8, false),
    ]))
}

/// The IOC columns, which carry bloom filters.
pub const IOC_COLUMNS: [&str; 4] = ["src_ip", "dst_ip", "domain", "file_sha256"];

#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub dir: PathBuf,
    pub count: usize,
    /// Rows per lake, spread over `days` daily partitions.
    pub rows: usize,
    pub seed: u64,
    pub days: u32,
    pub first_day: NaiveDate,
    /// Rows per Parquet row group (the unit of pruning).
    pub row_group_rows: usize,
    /// Lake names are `{prefix}-{i:05}`.
    pub prefix: String,
}

impl GenerateParams {
    pub fn new(dir: impl Into<PathBuf>, count: usize, rows: usize, seed: u64) -> Self {
        GenerateParams {
            dir: dir.into(),
            count,
            rows,
            seed,
            days: 3,
            first_day: NaiveDate::from_ymd_opt(2026, 11, 20).unwrap_or_default(),
            row_group_rows: 16 * 1024,
            prefix: "lake".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeedleKind {
    Ip,
    Hash,
    Domain,
}

/// One planted value: `value` is in `column` of row `row` of `lake`'s partition `dt`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Needle {
    pub kind: NeedleKind,
    pub value: String,
    pub lake: String,
    pub dt: String,
    pub column: String,
    pub row: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedLake {
    pub name: String,
    pub path: PathBuf,
    pub rows: usize,
    pub bytes: u64,
}

impl GeneratedLake {
    /// The lake as a task reads it, in scope `local`, with the generator's schema and no
    /// partitions (`Engine::discover` finds the real ones).
    pub fn local_ref(&self, id: i64) -> crate::LakeRef {
        crate::LakeRef {
            id,
            name: self.name.clone(),
            url: format!("file://{}/", self.path.display()),
            scope: "local".into(),
            partition_cols: vec![],
            schema: telemetry_schema(),
            options: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub lakes: Vec<GeneratedLake>,
    pub needles: Vec<Needle>,
}

impl Manifest {
    pub fn ips(&self) -> Vec<String> {
        self.values(NeedleKind::Ip)
    }
    pub fn hashes(&self) -> Vec<String> {
        self.values(NeedleKind::Hash)
    }
    pub fn domains(&self) -> Vec<String> {
        self.values(NeedleKind::Domain)
    }
    fn values(&self, k: NeedleKind) -> Vec<String> {
        let mut v: Vec<String> = self
            .needles
            .iter()
            .filter(|n| n.kind == k)
            .map(|n| n.value.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

const PROTOCOLS: [&str; 4] = ["tcp", "udp", "icmp", "tcp"];
const WORDS: [&str; 12] = [
    "alpha", "bravo", "cdn", "mail", "api", "login", "static", "img", "update", "files", "auth",
    "news",
];

fn background_ip(rng: &mut StdRng) -> String {
    if rng.random_bool(0.7) {
        format!(
            "10.{}.{}.{}",
            rng.random_range(0..=255),
            rng.random_range(0..=255),
            rng.random_range(1..=254)
        )
    } else {
        format!(
            "192.168.{}.{}",
            rng.random_range(0..=255),
            rng.random_range(1..=254)
        )
    }
}

fn hex64(rng: &mut StdRng) -> String {
    (0..4)
        .map(|_| format!("{:016x}", rng.random::<u64>()))
        .collect()
}

/// Writes the lakes and returns the manifest (also written as `manifest.json` in `dir`).
pub fn generate(p: &GenerateParams) -> Result<Manifest, EngineError> {
    let mut rng = StdRng::seed_from_u64(p.seed);
    let io = |e: std::io::Error, what: &Path| EngineError::Io(format!("{}: {e}", what.display()));
    std::fs::create_dir_all(&p.dir).map_err(|e| io(e, &p.dir))?;
    // Needles look like background values (same ranges, same shapes), so that only exact
    // lookups — bloom filters — can rule row groups out, as with real indicators. They still
    // never collide with background: IPs end in .0 (background never does), domains use
    // numbers background never reaches, hashes are fresh random 64-hex strings.
    let n_needles = 3.min(p.count.max(1));
    let needle_values: Vec<(NeedleKind, String)> = (0..n_needles)
        .flat_map(|i| {
            let ip = format!(
                "10.{}.{}.0",
                rng.random_range(200..=255),
                rng.random_range(0..=255)
            );
            let domain = format!(
                "{}.{}.example.com",
                WORDS[rng.random_range(0..WORDS.len())],
                1000 + i
            );
            [
                (NeedleKind::Ip, ip),
                (NeedleKind::Hash, hex64(&mut rng)),
                (NeedleKind::Domain, domain),
            ]
        })
        .collect();
    let days = p.days.max(1);
    let per_day = (p.rows / days as usize).max(1);
    // Each needle goes into one or two lakes, at a random day, row and (for IPs) column.
    let mut plan: Vec<(usize, u32, usize, &'static str, NeedleKind, String)> = Vec::new();
    for (kind, value) in &needle_values {
        for _ in 0..rng.random_range(1..=2) {
            let column = match kind {
                NeedleKind::Ip if rng.random_bool(0.5) => "src_ip",
                NeedleKind::Ip => "dst_ip",
                NeedleKind::Hash => "file_sha256",
                NeedleKind::Domain => "domain",
            };
            let (lake, day, row) = (
                rng.random_range(0..p.count.max(1)),
                rng.random_range(0..days),
                rng.random_range(0..per_day),
            );
            // One needle per row keeps the expected result exact.
            if !plan.iter().any(|e| (e.0, e.1, e.2) == (lake, day, row)) {
                plan.push((lake, day, row, column, kind.clone(), value.clone()));
            }
        }
    }
    let schema = telemetry_schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(p.row_group_rows.max(1)))
        .set_bloom_filter_enabled(false);
    let props = IOC_COLUMNS
        .iter()
        .fold(props, |b, c| {
            // Sized for the row group: parquet-rs otherwise assumes 1M distinct values and
            // writes ~1.2 MB of filter per column chunk, more than the data it guards.
            b.set_column_bloom_filter_enabled(ColumnPath::from(*c), true)
                .set_column_bloom_filter_fpp(ColumnPath::from(*c), 0.01)
                .set_column_bloom_filter_max_ndv(
                    ColumnPath::from(*c),
                    p.row_group_rows.max(1) as u64,
                )
        })
        .build();
    let mut lakes = Vec::with_capacity(p.count);
    let mut needles = Vec::new();
    for li in 0..p.count {
        let name = format!("{}-{li:05}", p.prefix);
        let lake_dir = p.dir.join(&name);
        let mut bytes = 0;
        for d in 0..days {
            let day = p.first_day + Duration::days(i64::from(d));
            let dt = day.format("%Y-%m-%d").to_string();
            let start = Utc
                .from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
                .timestamp_micros();
            let mut ts: Vec<i64> = (0..per_day)
                .map(|_| start + rng.random_range(0..86_400_000_000i64))
                .collect();
            ts.sort_unstable();
            let (mut src, mut dst, mut dom, mut sha) = (
                Vec::with_capacity(per_day),
                Vec::with_capacity(per_day),
                Vec::with_capacity(per_day),
                Vec::with_capacity(per_day),
            );
            for _ in 0..per_day {
                src.push(background_ip(&mut rng));
                dst.push(background_ip(&mut rng));
                dom.push(format!(
                    "{}.{}.example.com",
                    WORDS[rng.random_range(0..WORDS.len())],
                    rng.random_range(0..500)
                ));
                sha.push(hex64(&mut rng));
            }
            for (_, _, row, column, kind, value) in plan.iter().filter(|e| e.0 == li && e.1 == d) {
                let target = match *column {
                    "src_ip" => &mut src,
                    "dst_ip" => &mut dst,
                    "file_sha256" => &mut sha,
                    _ => &mut dom,
                };
                target[*row] = value.clone();
                needles.push(Needle {
                    kind: kind.clone(),
                    value: value.clone(),
                    lake: name.clone(),
                    dt: dt.clone(),
                    column: (*column).into(),
                    row: *row,
                });
            }
            let batch = build_batch(&schema, &mut rng, ts, src, dst, dom, sha)?;
            let part = lake_dir.join(format!("dt={dt}"));
            std::fs::create_dir_all(&part).map_err(|e| io(e, &part))?;
            let file_path = part.join("part-0.parquet");
            let file = std::fs::File::create(&file_path).map_err(|e| io(e, &file_path))?;
            let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props.clone()))?;
            w.write(&batch)?;
            w.close()?;
            bytes += std::fs::metadata(&file_path)
                .map_err(|e| io(e, &file_path))?
                .len();
        }
        lakes.push(GeneratedLake {
            name,
            path: lake_dir,
            rows: per_day * days as usize,
            bytes,
        });
    }
    needles.sort();
    let manifest = Manifest { lakes, needles };
    let mpath = p.dir.join("manifest.json");
    let text =
        serde_json::to_string_pretty(&manifest).map_err(|e| EngineError::Io(e.to_string()))?;
    std::fs::write(&mpath, text).map_err(|e| io(e, &mpath))?;
    Ok(manifest)
}

fn build_batch(
    schema: &SchemaRef,
    rng: &mut StdRng,
    ts: Vec<i64>,
    src: Vec<String>,
    dst: Vec<String>,
    dom: Vec<String>,
    sha: Vec<String>,
) -> Result<RecordBatch, EngineError> {
    let n = ts.len();
    let mut tsb = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    ts.iter().for_each(|t| tsb.append_value(*t));
    let strings = |v: &[String]| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(v.len(), v.len() * 16);
        v.iter().for_each(|s| b.append_value(s));
        Arc::new(b.finish())
    };
    let mut port = Int32Builder::with_capacity(n);
    let mut proto = StringBuilder::with_capacity(n, n * 4);
    let mut bytes = Int64Builder::with_capacity(n);
    let mut host = StringBuilder::with_capacity(n, n * 8);
    let mut user = StringBuilder::with_capacity(n, n * 8);
    for _ in 0..n {
        port.append_value([22, 53, 80, 443, 3389, 8080][rng.random_range(0..6)]);
        proto.append_value(PROTOCOLS[rng.random_range(0..PROTOCOLS.len())]);
        bytes.append_value(rng.random_range(40..2_000_000));
        host.append_value(format!("host-{:03}", rng.random_range(0..200)));
        user.append_value(format!("user{:03}", rng.random_range(0..300)));
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(tsb.finish()),
        strings(&src),
        strings(&dst),
        Arc::new(port.finish()),
        Arc::new(proto.finish()),
        strings(&dom),
        strings(&sha),
        Arc::new(bytes.finish()),
        Arc::new(host.finish()),
        Arc::new(user.finish()),
    ];
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn lakes_are_partitioned_sorted_with_bloom_filters_and_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = GenerateParams::new(dir.path(), 3, 3_000, 5);
        p.row_group_rows = 400;
        let m = generate(&p).unwrap();
        assert_eq!(m.lakes.len(), 3);
        assert!(!m.needles.is_empty());
        assert_eq!(generate(&p).unwrap(), m, "deterministic for a seed");
        let file = m.lakes[0].path.join("dt=2026-11-20/part-0.parquet");
        let r = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
        let meta = r.metadata();
        assert!(meta.num_row_groups() >= 2);
        let schema = meta.file_metadata().schema_descr();
        for rg in meta.row_groups() {
            for (i, col) in rg.columns().iter().enumerate() {
                let name = schema.column(i).name().to_string();
                let ioc = IOC_COLUMNS.contains(&name.as_str());
                assert_eq!(
                    col.bloom_filter_offset().is_some(),
                    ioc,
                    "bloom filter on {name}"
                );
            }
        }
        let manifest: Manifest = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest, m);
    }
}
