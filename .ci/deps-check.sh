#!/usr/bin/env bash
# Architecture invariants of docs/ARCHITECTURE.md: which crate must not depend on what
# (normal dependencies, transitively). Fails listing every violation.
set -euo pipefail
cd "$(dirname "$0")/.."
rules=(
  "sluice-core: sqlx tokio datafusion axum prometheus"
  "sluice-store: datafusion axum"
  "sluice-engine: sqlx axum"
  "sluice-scheduler: axum datafusion"
  "sluice-worker: axum"
  "sluice-api: datafusion"
)
bad=0
for rule in "${rules[@]}"; do
  crate=${rule%%:*}
  [ -d "crates/$crate" ] || continue
  deps=$(cargo tree -e normal -p "$crate" --prefix none --format '{p}' --offline 2>/dev/null || \
         cargo tree -e normal -p "$crate" --prefix none --format '{p}')
  for forbidden in ${rule#*:}; do
    if grep -q "^$forbidden v" <<<"$deps"; then
      echo "invariant broken: $crate depends on $forbidden:" >&2
      cargo tree -e normal -p "$crate" -i "$forbidden" >&2 || true
      bad=1
    fi
  done
done
[ $bad -eq 0 ] && echo "dependency invariants hold"
exit $bad
