# Sluice: a thin menu over cargo. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(HOME)/.cache/sluice-target
export SLUICE_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432

.DEFAULT_GOAL := help

# Debug builds go through `--workspace` (tests, demo, smoke, fuzz): cargo unifies features over
# the packages it builds, and a build of one package alone compiled DataFusion a second time
# for its own feature set (minutes, in CI on an empty cache).

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: demo
demo: ## Run the demo (SQLite, the provider simulator and a server in one process; nothing to install)
	$(CARGO) build -q --workspace --bins
	$(CARGO_TARGET_DIR)/debug/sluice demo

.PHONY: install
install: ## Put `sluice` on the PATH (cargo install into ~/.cargo/bin; a release build)
	$(CARGO) install --locked --path crates/sluice-cli

.PHONY: build
build: ## Build every crate (debug)
	$(CARGO) build --workspace

.PHONY: test
test: ## Run all tests (needs PostgreSQL at SLUICE_TEST_DATABASE_URL; installs nextest, promtool, kubernetes-validate when missing)
	bash .ci/test-deps.sh
	$(CARGO) nextest run --workspace --no-fail-fast

.PHONY: lint
lint: ## cargo fmt --check, clippy with warnings as errors, dependency invariants, cargo deny
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	bash .ci/deps-check.sh
	$(CARGO) deny --log-level error check bans licenses sources

.PHONY: api-fuzz
api-fuzz: ## Schemathesis against a running server's /openapi.json: no 5xx allowed
	bash .ci/api-fuzz.sh

.PHONY: bench-queue
bench-queue: ## Queue throughput on Postgres vs the peers (release build; see docs/benchmarks.md)
	bash benches/queue.sh

.PHONY: bench-scale
bench-scale: ## A million-task backlog vs 100,000, and graphile-worker at both sizes (release build; see docs/benchmarks.md)
	bash benches/scale.sh

.PHONY: replay-outage
replay-outage: ## The incident replayed: the same backlog with the guard off (freeze), on, on with shared scans (release build)
	bash benches/replay-outage.sh

.PHONY: bench-scan
bench-scan: ## Needle hunt over >= 2 GB of Parquet: Sluice's engine vs DuckDB, bloom on/off
	bash benches/scan.sh

.PHONY: bench-fairness
bench-fairness: ## A 3-lake hunt behind another owner's sweep vs alone, runners vs in-process (release build)
	bash benches/fairness.sh

.PHONY: bench
bench: bench-queue bench-scan bench-fairness ## Every benchmark

.PHONY: bench-smoke
bench-smoke: ## Both benchmarks with a tiny load, no peers, no DuckDB (keeps them alive in CI)
	$(CARGO) build -q --workspace --bins
	$(CARGO_TARGET_DIR)/debug/queue-bench --tasks 2000 --workers 2
	$(CARGO_TARGET_DIR)/debug/scan-bench --dir $(CARGO_TARGET_DIR)/scan-smoke --lakes 2 --rows 3000 --row-group-rows 500 --runner $(CARGO_TARGET_DIR)/debug/sluice

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all
