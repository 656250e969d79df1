#!/usr/bin/env bash
# make bench-scan: a needle hunt over generated lakes (>= 2 GB of Parquet), Sluice's per-lake
# engine against DuckDB (PyPI duckdb) on the same files in the same run — DuckDB given both the
# OR-of-IN-lists shape and the UNION ALL shape Sluice compiles to — and the object-store
# calls and bytes read per lake with bloom filters on and off.
#   env: LAKES (default 8), ROWS per lake (default 4000000), SCAN_DIR (default target/scan-lakes)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
lakes=${LAKES:-8}
rows=${ROWS:-4000000}
dir=${SCAN_DIR:-$CARGO_TARGET_DIR/scan-lakes}
venv=${SLUICE_BENCH_VENV:-$HOME/.cache/sluice-bench-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import duckdb' 2>/dev/null || "$venv/bin/pip" install -q duckdb

# The same package set as the other benchmarks (shared build cache; see benches/queue.sh).
cargo build -q --release -p sluice-cli -p sluice-benches
out=$(mktemp)
trap 'rm -f "$out"' EXIT
runner="$CARGO_TARGET_DIR/release/sluice"
"$CARGO_TARGET_DIR/release/scan-bench" --dir "$dir" --lakes "$lakes" --rows "$rows" --runner "$runner" | tee -a "$out"
"$venv/bin/python" benches/scan_duckdb.py "$dir/manifest.json" 2 | tee -a "$out"
"$CARGO_TARGET_DIR/release/scan-bench" --dir "$dir" --lakes "$lakes" --rows "$rows" --runner "$runner" | tee -a "$out"

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
s = {}
for r in rows:
    if r["system"] == "sluice":
        s.setdefault(r["run"], []).append(r)
d = {(r["mode"], r["run"]): r for r in rows if r["system"] == "duckdb"}
gb = rows[0]["bytes_on_disk"] / 1e9
print(f"\n{rows[0]['lakes']} lakes, {gb:.2f} GB of Parquet")
best = lambda run: min(x["secs"] for x in s[run])
for run in ("cold", "warm", "warm_no_cache", "no_bloom", "ioc_10k"):
    x = s[run][0]
    print(f"  sluice {run:<9} {best(run):7.3f}s  rows {x['rows_found']}  per lake: {x['per_lake']['calls']:.0f} calls, "
          f"{x['per_lake']['list']:.0f} LIST, {x['per_lake']['footer_reads']:.0f} footer reads, {x['per_lake']['bytes_read'] / 1e6:.2f} MB read")
for (mode, run), x in sorted(d.items()):
    print(f"  duckdb {mode:<9} {run:<6} {x['secs']:7.3f}s  rows {x['rows_found']}")
dl = d[("per_lake", "repeat")]["secs"]
print(f"  ratio duckdb/sluice, per lake, repeat hunt: {dl / best('warm'):.2f}x  (>1: sluice faster)")
print(f"  ratio duckdb/sluice, per lake, first hunt:  {d[('per_lake', 'first')]['secs'] / best('cold'):.2f}x")
# The honest comparison: DuckDB given the query shape Sluice compiles to (one UNION ALL branch
# per column), which its bloom filters and statistics can prune as Sluice's do.
print(f"  ratio duckdb/sluice, per lake, same (UNION) shape, first hunt:  {d[('per_lake_union', 'first')]['secs'] / best('cold'):.2f}x")
print(f"  ratio duckdb/sluice, per lake, same (UNION) shape, repeat hunt: {d[('per_lake_union', 'repeat')]['secs'] / best('warm'):.2f}x")
if "isolated_warm" in s:
    for run, base in (("isolated_cold", "cold"), ("isolated_warm", "warm")):
        print(f"  sluice {run:<14} {best(run):7.3f}s  vs in-process {best(base):.3f}s: {best(run) / best(base):.3f}x  (runner processes, ADR 0010)")
PY
