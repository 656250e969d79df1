#!/usr/bin/env bash
# What `make test` needs beyond Rust and PostgreSQL, installed when missing: cargo-nextest,
# promtool (Debian package prometheus: lints the metrics and the alert rules), and the Python
# modules deploy/check-manifests.py checks the manifests with.
set -euo pipefail
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
if ! command -v promtool >/dev/null 2>&1; then
  echo "test-deps: installing promtool (Debian package prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq prometheus >/dev/null
fi
if ! python3 -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
  echo "test-deps: installing kubernetes-validate"
  python3 -m pip install -q kubernetes-validate==1.37.0
fi
