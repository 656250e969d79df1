"""DuckDB on the same needle hunt and files as scan-bench: one query per lake (as Sluice runs
one task per lake) and one query over all lakes. Prints JSON lines.
usage: scan_duckdb.py MANIFEST [THREADS]"""
import json, sys, time, pathlib
import duckdb

manifest = json.load(open(sys.argv[1]))
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
ips = sorted({n["value"] for n in manifest["needles"] if n["kind"] == "ip"})
hashes = sorted({n["value"] for n in manifest["needles"] if n["kind"] == "hash"})
domains = sorted({n["value"] for n in manifest["needles"] if n["kind"] == "domain"})

def lst(v):
    return ", ".join("'" + x + "'" for x in v) or "NULL"

where = f"src_ip IN ({lst(ips)}) OR dst_ip IN ({lst(ips)}) OR file_sha256 IN ({lst(hashes)}) OR domain IN ({lst(domains)})"
# The shape Sluice compiles an IOC hunt to (ADR 0004): one branch per column, each an IN list
# that row-group statistics and bloom filters can prune on, the branches glued by UNION ALL
# with the rows already taken by an earlier branch left out (so a row is found once), exactly
# as crates/sluice-engine/src/hunt.rs writes it.
branches = [(c, v) for c, v in (("src_ip", ips), ("dst_ip", ips), ("file_sha256", hashes), ("domain", domains)) if v]

def union(source):
    parts = []
    for i, (col, values) in enumerate(branches):
        earlier = " AND ".join(f"({c} IN ({lst(v)})) IS NOT TRUE" for c, v in branches[:i])
        parts.append(f"SELECT * FROM {source} WHERE {col} IN ({lst(values)})" + (f" AND {earlier}" if earlier else ""))
    return " UNION ALL ".join(parts)
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
lakes = [pathlib.Path(l["path"]).resolve() for l in manifest["lakes"]]
bytes_on_disk = sum(l["bytes"] for l in manifest["lakes"])

for shape in ("or", "union"):
    # A fresh connection per shape: the second shape does not find the first's caches warm.
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    for run in ("first", "repeat"):
        t = time.perf_counter()
        rows = 0
        for lake in lakes:
            source = f"read_parquet('{lake}/*/*.parquet', hive_partitioning = true)"
            q = f"SELECT * FROM {source} WHERE {where}" if shape == "or" else union(source)
            rows += len(con.execute(q).fetchall())
        secs = time.perf_counter() - t
        mode = "per_lake" if shape == "or" else "per_lake_union"
        print(json.dumps({"system": "duckdb", "version": duckdb.__version__, "mode": mode, "run": run,
                          "lakes": len(lakes), "bytes_on_disk": bytes_on_disk, "rows_found": rows, "secs": round(secs, 3)}))

glob = ", ".join(f"'{l}/*/*.parquet'" for l in lakes)
t = time.perf_counter()
rows = len(con.execute(f"SELECT * FROM read_parquet([{glob}], hive_partitioning = true) WHERE {where}").fetchall())
print(json.dumps({"system": "duckdb", "version": duckdb.__version__, "mode": "all_lakes", "run": "first",
                  "lakes": len(lakes), "bytes_on_disk": bytes_on_disk, "rows_found": rows, "secs": round(time.perf_counter() - t, 3)}))
