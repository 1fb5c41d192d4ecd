# llmsoup — `make run` starts the demo, `make test` runs every test. Both install what they need
# (Envoy 1.40 and the Python test tools) into .cache/ on first use.

CARGO   ?= cargo
VENV    := .cache/venv
PYTEST  := $(VENV)/bin/pytest

.PHONY: all build release deps wasm run test test-unit test-e2e lint fmt clean envoy-configs

all: build

deps:
	@scripts/install-envoy.sh

build:
	$(CARGO) build --workspace

# The proxy-wasm filter (target/wasm/wasm32-unknown-unknown/wasm/llmsoup_filter.wasm).
wasm:
	@scripts/build-wasm.sh

release:
	$(CARGO) build --release -p llmsoup

# MODE=wasm runs the demo with the proxy-wasm filter instead of Envoy's ext_proc filter.
MODE ?= ext_proc
run: deps release $(if $(filter wasm,$(MODE)),wasm)
	LLMSOUP_MODE=$(MODE) scripts/run-demo.sh

test: deps build wasm test-unit test-e2e

test-unit:
	$(CARGO) test --workspace

test-e2e: deps build wasm
	LLMSOUP_BIN=$(CURDIR)/target/debug/llmsoup $(PYTEST) tests/e2e -q -p no:cacheprovider

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Rendered bootstraps kept in envoy/ as references (the demo renders its own at start).
envoy-configs: build
	target/debug/llmsoup envoy-config -c config/llmsoup.yaml -o envoy/envoy-ext-proc.yaml

clean:
	$(CARGO) clean
	rm -rf .cache/run
