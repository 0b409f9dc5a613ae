# Entry points for people and CI. Everything native runs from pinned tools in
# .tools/bin (installed by `make tools`); docker compose needs none of them.
#
#   make run     install tools, build, start the whole stack natively, print URLs
#   make test    install tools, then fmt check, clippy, all tests (incl. end-to-end)
#   docker compose up --build    the same system in containers

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Tests and the stack launcher find nats-server, jaeger and mailpit here.
export PATH := $(CURDIR)/.tools/bin:$(PATH)

CARGO ?= cargo

.PHONY: help tools build run demo-outage test fmt clean-stack

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

tools: ## install pinned nats-server, jaeger, mailpit into .tools/bin
	scripts/install-tools.sh

build: ## build every crate in release mode
	$(CARGO) build --workspace --release

run: tools build ## start NATS, Jaeger, Mailpit and the four services natively
	$(CARGO) run --release -p e2e --bin stack

demo-outage: tools build ## stop email, place orders, watch JetStream hold them and email catch up
	$(CARGO) run --release -p e2e --bin demo_outage

test: ## formatting, lints, unit + end-to-end tests (installs what they need)
	scripts/install-tools.sh nats-server jaeger mailpit schemathesis asyncapi
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# The end-to-end tests start the real service binaries: build them first.
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

fmt: ## format the code
	$(CARGO) fmt --all

clean-stack: ## delete the native stack's state (JetStream store, logs) in .stack/
	rm -rf .stack

.PHONY: bench
bench: tools ## release build, then the benchmark suite (~10 min): bench/results/latest.json
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release -p bench -- suite
