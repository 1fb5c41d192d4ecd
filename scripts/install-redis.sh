#!/usr/bin/env bash
# Installs a real redis-server (Debian's redis-server package) for the tests that need one
# (budgets, the shared response cache). Idempotent: does nothing when redis-server is on PATH.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing redis-server (Debian package)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }
  # The package starts a system service on 6379; the tests start their own on free ports.
  (command -v systemctl >/dev/null 2>&1 && systemctl disable --now redis-server >/dev/null 2>&1) || true
  command -v redis-server >/dev/null || { echo "redis-server did not install" >&2; exit 1; }
else
  echo "redis-server not found and cannot install it here (needs root + apt-get): install Redis 7" >&2
  [ "${CI:-}" = "true" ] && exit 1
fi
exit 0
