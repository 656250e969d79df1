#!/usr/bin/env bash
# make api-fuzz: schemathesis (PyPI) generates requests from a running `sluice server`'s
# /openapi.json — valid and invalid bodies, parameters, headers — and runs every check: no 5xx,
# answers as documented (status, content type, schema), and schema-valid requests accepted
# (the document states the real constraints). The server runs on a throwaway embedded store
# with a few generated lakes, so hunts it accepts really run. It calls as a researcher, then
# as an operator (every route reached; admin changes get 403: a fuzzed drain would close
# intake and turn later submits into deliberate 503s).
#   env: EXAMPLES (per operation, default 50), MAX_TIME (seconds per token, default 600), SEED,
#        CHECKS (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
command -v schemathesis >/dev/null 2>&1 || python3 -m pip install -q schemathesis==4.32.5
# The workspace's binaries: the same build as `make test`'s (one package alone would compile
# DataFusion again for its own features).
cargo build -q --workspace --bins
sluice="$CARGO_TARGET_DIR/debug/sluice"
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
db="sqlite://$dir/fuzz.db"
run() { "$sluice" --database-url "$db" --results-dir "$dir/results" "$@"; }
run lakes generate --dir "$dir/lakes" --count 5 --rows 200 --register >/dev/null
researcher=$(run tokens create --owner fuzz --role researcher)
operator=$(run tokens create --owner ops --role operator)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Started directly, not through `run`: a backgrounded function is a subshell, and killing it
# left the server running after the script.
RUST_LOG=warn "$sluice" --database-url "$db" --results-dir "$dir/results" \
  server --listen "127.0.0.1:$port" --concurrency 2 --idle-poll 100ms \
  2>"$dir/server.log" &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.1
done
# One worker: with two threads CPython's AST compiler inside schemathesis's schema lifting
# raced ("SystemError: AST constructor recursion depth mismatch", a Runtime Error of the fuzzer,
# not of the server) on a fresh machine.
cfg="$PWD/.ci/schemathesis.toml"
status=0
# Every check (responses match the document: status codes, content types, schemas, and
# schema-valid requests accepted), once as a researcher and once as an operator.
for token in "$researcher" "$operator"; do
  (cd "$dir" && schemathesis --config-file "$cfg" run "http://127.0.0.1:$port/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks "${CHECKS:-all}" \
    --max-examples "${EXAMPLES:-50}" --max-time "${MAX_TIME:-600}" ${SEED:+--seed "$SEED"} \
    --workers 1 --no-color) || status=$?
done
if grep -q "request failed" "$dir/server.log"; then
  echo "api-fuzz: the server logged failed requests:" >&2
  grep "request failed" "$dir/server.log" | head -20 >&2
  status=1
fi
exit "$status"
