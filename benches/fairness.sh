#!/usr/bin/env bash
# make bench-fairness: a small hunt behind another owner's sweep, as a researcher meets it.
# WORKERS worker processes (SLOTS slots each) drain a sweep of every lake by alice; once it
# runs, bob submits a 3-lake hunt. Bob's time to answer is compared with the same hunt alone
# on idle workers — with hunts in runner processes (the default, whose CPU is shared by owner:
# ADR 0010) and in-process (`--isolation none`), side by side in one run. Fair claims put bob's
# tasks first either way; what differs is the CPU his tasks get once they run.
# Both hunts compare every row of their lakes (an edit distance: nothing prunes it), so their
# tasks are CPU-bound, as a researcher's SQL hunt often is.
# It also prints the sweep's own pace (lakes done per second since it was submitted, when bob's
# hunt ended): what isolation costs a CPU-bound bulk job.
#   env: LAKES (default 2000), ROWS per lake (default 100000), WORKERS (2), SLOTS (16),
#        CPU_THREADS (query threads per worker or runner, default the worker's),
#        SLUICE_TEST_DATABASE_URL (server, default postgres://postgres@127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
server=${SLUICE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
server=${server%/}
lakes=${LAKES:-2000}
rows=${ROWS:-100000}
workers=${WORKERS:-2}
slots=${SLOTS:-16}
dir=${FAIRNESS_DIR:-$HOME/.cache/sluice-fairness}
bin=$CARGO_TARGET_DIR/release/sluice
# The same package set as the other benchmarks (shared build cache; see benches/queue.sh).
cargo build -q --release -p sluice-cli -p sluice-benches
mkdir -p "$dir"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Seconds from a job's submission to its end.
took() {
  "$bin" --output json status "$1" | python3 -c '
import json, sys, datetime
j = json.load(sys.stdin)
p = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
d = (p(j["finished_at"]) - p(j["created_at"])).total_seconds()
print(f"{d:.2f}")'
}
wait_job() {
  for _ in $(seq 1 3000); do
    state=$("$bin" --output json status "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    case $state in queued|running) sleep 0.2 ;; *) echo "$state"; return ;; esac
  done
  echo "timeout"
}
submit() { "$bin" --output json submit "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"])'; }

results=()
export SLUICE_DATABASE_URL="$server/sluice_fair" SLUICE_RESULTS_DIR="$dir/results"
# The lakes are generated once and kept (with their database) while LAKES and ROWS stay.
have=$(psql "$server/sluice_fair" -Atqc "SELECT count(*) FROM lakes" 2>/dev/null || echo 0)
if [ "$have" != "$lakes" ] || ! [ -f "$dir/manifest.json" ] || [ "$(cat "$dir/size" 2>/dev/null)" != "$lakes x $rows" ]; then
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS sluice_fair" -c "CREATE DATABASE sluice_fair"
  "$bin" migrate >/dev/null
  t0=$(date +%s)
  "$bin" --output json lakes generate --dir "$dir/lakes" --count "$lakes" --rows "$rows" \
    --seed 3 --register >"$dir/manifest.json"
  echo "$lakes x $rows" >"$dir/size"
  echo "generated and registered $lakes lakes x $rows rows in $(( $(date +%s) - t0 ))s"
fi
needle=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(next(n["value"] for n in m["needles"] if n["kind"]=="domain"))' "$dir/manifest.json")
# Every row of every lake is compared (no statistics or bloom filter prunes a distance).
echo "SELECT * FROM events WHERE levenshtein(domain, '${needle}') <= 1" >"$dir/hunt.sql"
run=$(date +%s)
small=lake-00000,lake-00001,lake-00002
for iso in process none; do
  # Owners of their own per run: fair-queueing state starts afresh.
  alice="alice-$iso-$run" bob="bob-$iso-$run"
  pids=()
  for w in $(seq 1 "$workers"); do
    "$bin" worker --concurrency "$slots" --isolation "$iso" --idle-poll 100ms ${CPU_THREADS:+--cpu-threads "$CPU_THREADS"} \
      --id "fair-$iso-$w" >"$dir/worker-$iso-$w.log" 2>&1 &
    pids+=($!)
  done
  sleep 3
  # Alone: bob's 3 lakes on idle workers (twice; the second is the figure: warm caches and
  # warm runners, as in the sweep case).
  for _ in 1 2; do
    solo_job=$(submit --owner "$bob" --sql "$dir/hunt.sql" --lakes "$small")
    [ "$(wait_job "$solo_job")" = succeeded ] || { echo "solo hunt did not succeed" >&2; exit 1; }
  done
  solo=$(took "$solo_job")
  # Behind alice's sweep of every lake, once it has run for a while.
  sweep=$(submit --owner "$alice" --sql "$dir/hunt.sql")
  sweep_at=$(date +%s.%N)
  sleep 8
  behind_job=$(submit --owner "$bob" --sql "$dir/hunt.sql" --lakes "$small")
  [ "$(wait_job "$behind_job")" = succeeded ] || { echo "hunt behind the sweep did not succeed" >&2; exit 1; }
  behind=$(took "$behind_job")
  sweep_state=$("$bin" --output json status "$sweep" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["state"], j["lakes"]["done"])')
  pace=$(python3 -c "import time; print(f'{${sweep_state#* } / (time.time() - $sweep_at):.1f}')")
  "$bin" cancel "$sweep" --reason "benchmark over" >/dev/null 2>&1 || true
  cleanup
  pids=()
  case $sweep_state in
    running*) ;;
    *) echo "the sweep ended before bob's hunt did ($sweep_state): raise LAKES or ROWS" >&2; exit 1 ;;
  esac
  ratio=$(python3 -c "print(f'{$behind / $solo:.2f}')")
  line="isolation=$iso: bob's 3-lake hunt alone ${solo}s, behind alice's $lakes-lake sweep ${behind}s: ${ratio}x  (sweep: ${sweep_state#* } lakes done when bob's ended, $pace lakes/s; $workers workers x $slots slots)"
  echo "$line"
  results+=("$line")
done
echo
printf '%s\n' "${results[@]}"
