#!/usr/bin/env bash
# make bench-queue: Sluice's queue throughput against the peer job queues, on the same
# PostgreSQL in the same run. Prints each JSON line and the ratio Sluice/peer.
#   env: TASKS (Sluice burn-down, default 100000), PEER_TASKS (default 20000),
#        SLUICE_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432),
#        PEERS_DIR (default ../shared/peers)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${TASKS:-100000}
peer_tasks=${PEER_TASKS:-20000}
peers=${PEERS_DIR:-../shared/peers}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
server=${SLUICE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}

# One package set for every benchmark: cargo unifies features over the packages it builds, so
# a build of one package alone would recompile DataFusion for its own feature set.
cargo build -q --release -p sluice-cli -p sluice-benches
bench="$CARGO_TARGET_DIR/release/queue-bench"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "# sluice, $tasks tasks" >&2
"$bench" --tasks "$tasks" | tee -a "$out"
echo "# sluice, $peer_tasks tasks (the peers' size)" >&2
"$bench" --tasks "$peer_tasks" | tee -a "$out"
if [ -x "$peers/run.sh" ] || [ -f "$peers/run.sh" ]; then
  bash "$peers/setup.sh" >&2
  echo "# peers, $peer_tasks jobs each" >&2
  PGURL="$server" bash "$peers/run.sh" "$peer_tasks" | tee -a "$out"
else
  echo "peers not found at $peers: ratios skipped" >&2
fi
echo "# sluice again, $tasks tasks (after the peers: load drift check)" >&2
"$bench" --tasks "$tasks" | tee -a "$out"

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ours = [r for r in rows if r.get("system") == "sluice"]
peers = [r for r in rows if "peer" in r]
def rate(r):
    p = r["process"]
    return p.get("per_sec_db") or p["per_sec"]
best = max(rate(r) for r in ours)
print(f"\nsluice processing: " + ", ".join(f"{rate(r):,.0f}/s ({r['tasks']} tasks)" for r in ours))
for p in peers:
    name = p["peer"] + (f" ({p['mode']})" if p.get("mode") else "")
    print(f"  vs {name:<28} {rate(p):>8,.0f}/s  ratio {best / rate(p):5.2f}x"
          f"  (worst sluice run: {min(rate(r) for r in ours) / rate(p):.2f}x)")
PY
