#!/usr/bin/env bash
# make replay-outage: the incident of MISSION.md, replayed against the provider simulator. The
# same backlog (JOBS hunts x all lakes) runs twice through real worker processes, each in a
# fresh schema of the database `sluice_replay`: first with the provider guard off (no budget,
# no breakers: the simulator freezes the account, as the provider did), then with it on
# (budget under the provider's quota: no freeze; the drain time is compared with its lower
# bound, total calls / budget rate). Prints both timelines and the summary.
#   args are passed to `sluice lab replay-outage` (e.g. --jobs 200 --lakes-per-account 100)
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
