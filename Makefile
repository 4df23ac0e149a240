# Tessera's two commands (README.md): `make run` starts what Tessera has to show, `make test`
# checks everything CI checks. Both install what a fresh Debian machine lacks first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Build artifacts live in a persistent cache outside the clone, so a fresh clone (CI, a new
# work tree) reuses the slow C/C++ builds (RocksDB, ring). It is only a cache: deleting it
# costs time, never correctness. Override with CARGO_TARGET_DIR=... as usual.
TESSERA_CACHE_DIR ?= $(HOME)/.cache/tessera
export CARGO_TARGET_DIR ?= $(TESSERA_CACHE_DIR)/target
ifdef CI
export CARGO_TERM_COLOR := never
export NEXTEST_PROFILE := ci
endif

BIN_DIR := $(CARGO_TARGET_DIR)/debug
SIM_SEEDS ?= 200

.PHONY: help deps run sim build test fmt-check clippy unit-tests doc-tests fmt bench bench-storage bench-transport clean-cache

help:
	@echo "make run    build Tessera, start the local playground cluster and run its demo (see README.md)"
	@echo "make sim    the deterministic Raft simulator over SIM_SEEDS (200) seeds"
	@echo "make test   install what is missing, then fmt check, clippy -D warnings, all tests"
	@echo "make bench  run the benchmarks (release profile)"
	@echo "make bench-storage  group commit of the raft-log engine vs the disk's fsync rate"
	@echo "make bench-transport  QUIC transport: raft msgs/s batching on/off, coalesced heartbeats"

deps:
	@scripts/install-deps.sh

build: deps
	@echo "==> building (dev profile, target dir $(CARGO_TARGET_DIR))"
	cargo build --locked --workspace --bins

run: build
	@scripts/run.sh "$(BIN_DIR)"

sim: build
	"$(BIN_DIR)/tessera-sim" --seeds "$(SIM_SEEDS)" --first-seed 1

test: deps fmt-check clippy doc-tests unit-tests
	@echo "==> make test: all checks passed"

fmt-check:
	@echo "==> cargo fmt --check"
	cargo fmt --all -- --check

clippy:
	@echo "==> cargo clippy --all-targets -D warnings"
	cargo clippy --locked --workspace --all-targets -- -D warnings

unit-tests:
	@if cargo nextest --version >/dev/null 2>&1; then \
	  echo "==> cargo nextest run (profile $${NEXTEST_PROFILE:-default})"; \
	  cargo nextest run --locked --workspace --no-tests=fail; \
	else \
	  echo "==> cargo test (cargo-nextest not installed)"; \
	  cargo test --locked --workspace --all-targets; \
	fi

doc-tests:
	@echo "==> cargo test --doc"
	cargo test --locked --workspace --doc

fmt:
	cargo fmt --all

bench: deps
	@echo "==> benchmarks (release profile); figures go to the terminal, see bench/README.md"
	cargo bench --locked --workspace

# Release builds live in their own target dir (bench/README.md), so RocksDB's release C++ build
# is cached apart from the dev one that tests use. BENCH_ARGS passes flags through.
BENCH_TARGET_DIR ?= $(TESSERA_CACHE_DIR)/bench-target
bench-storage: deps
	@echo "==> storage-group-commit (release profile, target dir $(BENCH_TARGET_DIR))"
	CARGO_TARGET_DIR=$(BENCH_TARGET_DIR) cargo run --locked --release -p tessera-bench \
	  --bin storage-group-commit -- $(BENCH_ARGS)

bench-transport: deps
	@echo "==> transport-throughput (release profile, target dir $(BENCH_TARGET_DIR))"
	CARGO_TARGET_DIR=$(BENCH_TARGET_DIR) cargo run --locked --release -p tessera-bench \
	  --bin transport-throughput -- $(BENCH_ARGS)

clean-cache:
	rm -rf "$(CARGO_TARGET_DIR)"
