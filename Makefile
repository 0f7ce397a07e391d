# The README's two commands: `make demo` and `make test`. Both start the local stack first
# (scripts/stack.sh up: installs what is missing into /var/tmp/xclog/cache, then starts Kafka,
# PostgreSQL and FerretDB on 127.0.0.1).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
STACK := scripts/stack.sh
WITH_ENV := eval "$$($(STACK) env)" &&

.PHONY: test demo lint stack-up stack-down stack-status bench

## make test: start the stack, then run every test of the workspace against it
test: stack-up
	$(WITH_ENV) cargo test --workspace --all-targets --no-fail-fast
	$(WITH_ENV) cargo test --workspace --doc

## make demo: the main job on the local stack (produce a workload, project it, query the stores)
demo: stack-up
	$(WITH_ENV) scripts/demo.sh

## make lint: formatting and clippy, as CI runs them
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## make bench: benchmarks against their references (see docs/BENCHMARKS.md)
bench: stack-up
	$(WITH_ENV) scripts/bench.sh

stack-up:
	$(STACK) up

stack-down:
	$(STACK) down

stack-status:
	$(STACK) status
