#!/usr/bin/env bash
# Installs what the ARM64 checks need (scripts/arm64.sh): the Rust standard library for
# aarch64-unknown-linux-gnu and, on a host that is not ARM64, a cross linker/C compiler (ring's
# build script compiles C) and qemu-user to run the test binaries (Debian packages
# gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user). Idempotent: does nothing when all are
# there. Exits 1 when something is missing and cannot be installed (needs root + apt-get).
set -euo pipefail
TARGET=aarch64-unknown-linux-gnu

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  echo "installing the Rust standard library for $TARGET (rustup)..." >&2
  rustup target add "$TARGET" >/dev/null || { echo "rustup target add $TARGET failed" >&2; exit 1; }
fi

[ "$(uname -m)" = aarch64 ] && exit 0

have() {
  command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 && command -v qemu-aarch64 >/dev/null 2>&1 \
    && [ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ]
}
have && exit 0
packages="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing $packages (Debian packages)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086 # a list of package names
  apt-get install -y -qq --no-install-recommends $packages >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages >/dev/null; }
fi
have || { echo "ARM64 cross tools missing (needs root + apt-get, or install: $packages)" >&2; exit 1; }
