#!/usr/bin/env bash
# Builds filter-wasm for wasm32-unknown-unknown into target/wasm/ (its own target dir: the wasm
# build may use a different rustc than the rest of the workspace).
#   1. rustup's target when it is installed or installable;
#   2. else Debian's rustc-web (1.96) building std from source (-Z build-std), linked with the
#      rust-lld shipped by the host toolchain (see ../shared/TOOLCHAIN.md).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=wasm32-unknown-unknown
OUT=target/wasm/$TARGET/wasm/llmsoup_filter.wasm
ARGS=(build -p llmsoup-filter --profile wasm --target "$TARGET" --target-dir target/wasm)

# LLMSOUP_WASM_TOOLCHAIN=debian forces the fallback (to test it where rustup works).
if [ "${LLMSOUP_WASM_TOOLCHAIN:-}" != debian ] && { rustup target list --installed 2>/dev/null | grep -qx "$TARGET" \
   || timeout 60 rustup target add "$TARGET" >/dev/null 2>&1; }; then
  cargo "${ARGS[@]}"
else
  if ! dpkg -s rustc-web cargo-web rust-web-src >/dev/null 2>&1; then
    echo "installing Debian rustc-web for the wasm32 build..." >&2
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rustc-web cargo-web rust-web-src >/dev/null
  fi
  LLD="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
  [ -x "$LLD" ] || LLD=$(command -v rust-lld || command -v wasm-ld)
  PATH=/usr/bin:$PATH RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$LLD" \
    /usr/bin/cargo "${ARGS[@]}" -Z build-std=std,panic_abort
fi
ls -l "$OUT" | awk '{print "built " $NF " (" $5 " bytes)"}'
