#!/usr/bin/env bash
# What `make test` needs beyond Rust and PostgreSQL, installed when missing: cargo-nextest,
# promtool (Debian package prometheus: lints the metrics and the alert rules), and the Python
# modules deploy/check-manifests.py checks the manifests with, Azurite (npm) for `az://` results,
# and Chromium with its WebDriver (Debian packages chromium, chromium-driver) for the console.
set -euo pipefail
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
if ! command -v promtool >/dev/null 2>&1; then
  echo "test-deps: installing promtool (Debian package prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq prometheus >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "test-deps: installing Chromium and ChromeDriver (Debian packages chromium, chromium-driver)"
  export DEBIAN_FRONTEND=noninteractive
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if ! python3 -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
  echo "test-deps: installing kubernetes-validate"
  python3 -m pip install -q kubernetes-validate==1.37.0
fi
# Azurite (Azure Blob Storage's emulator, from npm) and Azure's SDK, to create and list the
# container of the `az://` results test; Node.js from Debian when the machine has none.
tools=${SLUICE_TEST_TOOLS:-$HOME/.cache/sluice-test-tools}
if [ ! -x "$tools/azurite/node_modules/.bin/azurite-blob" ] || \
   [ ! -d "$tools/azurite/node_modules/@azure/storage-blob" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "test-deps: installing Node.js (Debian packages nodejs, npm)"
    export DEBIAN_FRONTEND=noninteractive
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq nodejs npm >/dev/null
  fi
  echo "test-deps: installing Azurite into $tools/azurite"
  mkdir -p "$tools/azurite"
  (cd "$tools/azurite" && { [ -f package.json ] || npm init -y >/dev/null; } && \
    npm install --no-audit --no-fund --silent azurite@3.35.0 @azure/storage-blob@12.32.0 >/dev/null)
fi
