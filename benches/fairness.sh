#!/usr/bin/env bash
# make bench-fairness: a small hunt behind another owner's sweep, as a researcher meets it.
# WORKERS worker processes (SLOTS slots each) drain a sweep of every lake by alice; once it
# runs, bob submits a 3-lake hunt. Bob's time to answer is compared with the same hunt alone
# on idle workers — with hunts in runner processes (the default, whose CPU is shared by owner:
# ADR 0010) and in-process (`--isolation none`), side by side in one run. Fair claims put bob's
# tasks first either way; what differs is the CPU his tasks get once they run.
#   env: LAKES (default 5000), ROWS per lake (default 1000), WORKERS (2), SLOTS (16),
#        SLUICE_TEST_DATABASE_URL (server, default postgres://postgres@127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
server=${SLUICE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
server=${server%/}
lakes=${LAKES:-5000}
rows=${ROWS:-1000}
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
print(f"{(p(j[\"finished_at\"]) - p(j[\"created_at\"])).total_seconds():.2f}")'
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
for iso in process none; do
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS sluice_fair" -c "CREATE DATABASE sluice_fair"
  export SLUICE_DATABASE_URL="$server/sluice_fair" SLUICE_RESULTS_DIR="$dir/results-$iso"
  "$bin" migrate >/dev/null
  "$bin" --output json lakes generate --dir "$dir/lakes" --count "$lakes" --rows "$rows" \
    --seed 3 --register >"$dir/manifest.json"
  needle=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(next(n["value"] for n in m["needles"] if n["kind"]=="ip"))' "$dir/manifest.json")
  pids=()
  for w in $(seq 1 "$workers"); do
    "$bin" worker --concurrency "$slots" --isolation "$iso" --idle-poll 100ms \
      --id "fair-$iso-$w" >"$dir/worker-$iso-$w.log" 2>&1 &
    pids+=($!)
  done
  sleep 2
  # Alone: bob's 3 lakes on idle workers (twice; the second is the figure: warm caches and
  # warm runners, as in the sweep case).
  for _ in 1 2; do
    solo_job=$(submit --owner bob --ioc-ip "$needle" --lakes 'lake-0000[0-2]')
    [ "$(wait_job "$solo_job")" = succeeded ] || { echo "solo hunt did not succeed" >&2; exit 1; }
  done
  solo=$(took "$solo_job")
  # Behind alice's sweep of every lake, once it has run for a while.
  sweep=$(submit --owner alice --ioc-ip "$needle")
  sleep 8
  behind_job=$(submit --owner bob --ioc-ip "$needle" --lakes 'lake-0000[0-2]')
  [ "$(wait_job "$behind_job")" = succeeded ] || { echo "hunt behind the sweep did not succeed" >&2; exit 1; }
  behind=$(took "$behind_job")
  done_lakes=$("$bin" --output json status "$sweep" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lakes"]["done"])')
  "$bin" cancel "$sweep" --reason "benchmark over" >/dev/null
  cleanup
  pids=()
  ratio=$(python3 -c "print(f'{$behind / $solo:.2f}')")
  line="isolation=$iso: bob's 3-lake hunt alone ${solo}s, behind alice's $lakes-lake sweep ${behind}s: ${ratio}x  (sweep had done $done_lakes lakes; $workers workers x $slots slots)"
  echo "$line"
  results+=("$line")
done
echo
printf '%s\n' "${results[@]}"
