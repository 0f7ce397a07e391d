# The README's two commands: `make demo` and `make test`. Both start the local stack first
# (scripts/stack.sh up: installs what is missing into /var/tmp/xclog/cache, then starts Kafka,
# PostgreSQL and FerretDB on 127.0.0.1).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
STACK := scripts/stack.sh
WITH_ENV := eval "$$($(STACK) env)" &&

# The service variables unset: the tests then choose containers (tests/src/services.rs).
NO_ADDRESSES := env -u XCLOG_KAFKA_BROKERS -u DATABASE_URL -u MONGODB_URI

.PHONY: test test-docker test-ts demo lint stack-up stack-down stack-status bench soak

## make test: start the stack, then run every test of the workspace against it: the Rust
## crates, then the TypeScript package (scripts/ts.sh installs its Node dependencies first)
test: stack-up
	scripts/ts.sh install
	$(WITH_ENV) cargo test --workspace --all-targets --no-fail-fast
	$(WITH_ENV) cargo test --workspace --doc
	$(WITH_ENV) scripts/ts.sh test --prebuilt

## make test-docker: the same suite without the native stack, on containers the tests start
## themselves through testcontainers when a Docker engine answers (Kafka 4.1.1 in KRaft mode,
## PostgreSQL 16, MongoDB 7 as a single-node replica set), each test binary its own, removed at
## its end. The TypeScript suites get theirs from xclog-test-services. Benchmarks are left out
## (`make bench`: they need the native stack's Kafka tools). This repository's CI does not run it.
test-docker:
	scripts/ts.sh install
	$(NO_ADDRESSES) cargo test --workspace --lib --bins --tests --examples --no-fail-fast
	$(NO_ADDRESSES) cargo test --workspace --doc
	$(NO_ADDRESSES) cargo run -q -p xclog-tests --bin xclog-test-services -- scripts/ts.sh test --prebuilt

## make test-ts: only the TypeScript package's suites (on the running stack)
test-ts: stack-up
	$(WITH_ENV) scripts/ts.sh test

## make demo: the main job on the local stack (produce a workload, project it, query the stores)
demo: stack-up
	$(WITH_ENV) scripts/demo.sh

## make lint: formatting and clippy, and the TypeScript package's strict type check, as CI runs them
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	scripts/ts.sh build

## make bench: benchmarks against their references (see docs/BENCHMARKS.md)
bench: stack-up
	$(WITH_ENV) scripts/bench.sh
	$(WITH_ENV) scripts/bench-ts.sh
	$(WITH_ENV) scripts/bench-memory.sh

## make soak: the fault soak (docs/RELIABILITY.md): publishes for the whole run while it SIGKILLs
## projector processes (100 per store) and restarts Kafka, PostgreSQL and FerretDB (3 each);
## exits non-zero on any lost or doubled event or a verify difference. SOAK_ARGS passes flags
## (`make soak SOAK_ARGS="--kills 20 --restarts 1"`; `--help` lists them)
soak: stack-up
	cargo build -q -p xclog-cli --bin xclog -p xclog-tests --bin xclog-soak
	$(WITH_ENV) cargo run -q -p xclog-tests --bin xclog-soak -- $(SOAK_ARGS)

stack-up:
	$(STACK) up

stack-down:
	$(STACK) down

stack-status:
	$(STACK) status
