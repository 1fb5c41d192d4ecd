#!/usr/bin/env bash
# Installs Debian's Chromium and chromedriver for the dashboard's end-to-end test (headless
# browser). Idempotent: does nothing when both are there. Needs root and apt-get; elsewhere it
# only says what is missing (the test skips locally, and fails under CI=true).
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium and chromium-driver (Debian packages)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
else
  echo "note: chromium/chromedriver not found; install Debian's chromium and chromium-driver for the dashboard test" >&2
fi
