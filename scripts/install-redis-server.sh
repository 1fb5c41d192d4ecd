#!/usr/bin/env bash
# Installs a real `redis-server` (Debian's package) for the end-to-end tests of the shared
# response cache; idempotent: does nothing when one is already on PATH.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
    # The package starts a system-wide service; the tests start their own servers.
    ($SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true)
fi
command -v redis-server >/dev/null 2>&1 || {
    echo "redis-server is not installed and could not be installed (apt-get install redis-server)" >&2
    exit 1
}
