#!/usr/bin/env bash
# `make run`: the demo stack — mock upstream + llmsoup sidecar + Envoy — on localhost.
# Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${LLMSOUP_BIN:-target/release/llmsoup}
ENVOY=${ENVOY_BIN:-.cache/venv/bin/envoy}
CONFIG=${LLMSOUP_CONFIG:-config/llmsoup.yaml}
export LLMSOUP_PORT=${LLMSOUP_PORT:-8080}
export LLMSOUP_MOCK_PORT=${LLMSOUP_MOCK_PORT:-18000}
export LLMSOUP_GRPC_PORT=${LLMSOUP_GRPC_PORT:-50051}
export LLMSOUP_ENVOY_ADMIN_PORT=${LLMSOUP_ENVOY_ADMIN_PORT:-9901}
RUN=.cache/run
mkdir -p "$RUN"
# The sidecar's gRPC port takes calls only with this secret (server.grpc_token); the rendered
# Envoy config carries it, so keep both private.
umask 077
export LLMSOUP_GRPC_TOKEN=${LLMSOUP_GRPC_TOKEN:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping demo..."
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

wait_port() { # host port what
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$3 did not start on $1:$2; see $RUN/*.log" >&2; exit 1
}

"$BIN" config check "$CONFIG" >/dev/null
MODE=${LLMSOUP_MODE:-ext_proc}
# Envoy's routes, clusters, credentials and token/model filter configs live in files here: the
# sidecar rewrites them on reload (`kill -HUP`), and Envoy applies them without a restart.
XDS="$PWD/$RUN/xds"
RENDER=(--config "$CONFIG" --output "$RUN/envoy.yaml" --mode "${MODE//_/-}" --xds-dir "$XDS")
[ "$MODE" = wasm ] && RENDER+=(--wasm "$PWD/target/wasm/wasm32-unknown-unknown/wasm/llmsoup_filter.wasm")
"$BIN" envoy-config "${RENDER[@]}"

"$BIN" mock-upstream --listen "127.0.0.1:$LLMSOUP_MOCK_PORT" > "$RUN/mock-upstream.log" 2>&1 & pids+=($!)
"$BIN" serve --config "$CONFIG" --xds-dir "$XDS" > "$RUN/sidecar.log" 2>&1 & pids+=($!)
SIDECAR_PID=$!
"$ENVOY" -c "$RUN/envoy.yaml" --base-id $((RANDOM % 10000 + 100)) -l warning --log-path "$RUN/envoy.log" > "$RUN/envoy-access.log" 2>&1 & pids+=($!)

wait_port 127.0.0.1 "$LLMSOUP_MOCK_PORT" "mock upstream"
wait_port 127.0.0.1 "$LLMSOUP_GRPC_PORT" "llmsoup sidecar"
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$LLMSOUP_ENVOY_ADMIN_PORT/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$LLMSOUP_ENVOY_ADMIN_PORT/ready" >/dev/null || { echo "envoy is not ready; see $RUN/envoy.log" >&2; exit 1; }

cat <<MSG

llmsoup demo is up ($MODE mode): Envoy on http://127.0.0.1:$LLMSOUP_PORT → sidecar 127.0.0.1:$LLMSOUP_GRPC_PORT → mock upstream 127.0.0.1:$LLMSOUP_MOCK_PORT
Logs: $RUN/{envoy,envoy-access,sidecar,mock-upstream}.log

Try it:
  curl -si http://127.0.0.1:$LLMSOUP_PORT/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"auto","messages":[{"role":"user","content":"Refactor this Python function"}]}'
  (the x-llmsoup-model / x-llmsoup-decision response headers say where it went;
   try a French prompt, a short question, or "stream": true)
Live dashboard: http://127.0.0.1:${LLMSOUP_ADMIN_PORT:-9190}/dashboard
Edit $CONFIG, then \`kill -HUP $SIDECAR_PID\`: the sidecar and Envoy (via $RUN/xds) both reload.

Press Ctrl-C to stop.
MSG
wait -n "${pids[@]}" || true
echo "a demo process exited; see $RUN/*.log" >&2
