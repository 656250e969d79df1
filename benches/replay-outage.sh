#!/usr/bin/env bash
# make replay-outage: the incident of MISSION.md, replayed against the provider simulator. The
# same backlog (JOBS hunts x all lakes) runs through real worker processes, each run in a fresh
# schema of the database `sluice_replay`: with the provider guard off (no budget, no breakers:
# the simulator freezes the account, as the provider did), with it on and every task alone
# (budget under the provider's quota: no freeze; the drain time is compared with its lower
# bound, total calls / budget rate), with it on and shared scans (ADR 0014), then one job of
# the backlog alone and a small urgent hunt alone (the yardsticks for the shared drain and for
# the urgent hunt submitted into it). Prints every timeline and the summary.
#   args are passed to `sluice lab replay-outage` (e.g. --jobs 200 --lakes-per-account 100,
#   --share-scan 128, --roles --accounts 50 --workers 4)
#   env: SLUICE_TEST_DATABASE_URL (server, default postgres://postgres@127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
server=${SLUICE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
server=${server%/}
psql "$server/postgres" -qc "DROP DATABASE IF EXISTS sluice_replay" -c "CREATE DATABASE sluice_replay"
# The same package set as the other benchmarks (shared build cache; see benches/queue.sh).
cargo build -q --release -p sluice-cli -p sluice-benches
exec "$CARGO_TARGET_DIR/release/sluice" lab replay-outage \
  --database-url "$server/sluice_replay" --dir "$HOME/.cache/sluice-replay" "$@"
