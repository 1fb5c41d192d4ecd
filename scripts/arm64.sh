#!/usr/bin/env bash
# ARM64 (aarch64-unknown-linux-gnu) on any machine, so the code only ARM64 compiles (the NEON
# and dotprod int8 kernels in crates/models/src/quant.rs) is linted and tested in CI.
#   scripts/arm64.sh check   clippy -D warnings for ARM64: llmsoup-models with its tests, and the
#                            sidecar binary (which checks every crate it links)
#   scripts/arm64.sh test    llmsoup-models' unit tests built for ARM64 and run under qemu-user
#                            (`-cpu max`: NEON and dotprod, so every ARM64 kernel runs), or
#                            natively on an ARM64 host
# Its own target directory (target/aarch64), so host builds keep their artifacts. Missing tools
# are installed (scripts/install-arm64.sh); where they cannot be, this fails under CI=true and
# skips elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
TARGET=aarch64-unknown-linux-gnu

if ! scripts/install-arm64.sh; then
  [ "${CI:-}" = "true" ] && { echo "arm64: tools missing under CI=true" >&2; exit 1; }
  echo "arm64: skipping (tools missing; see scripts/install-arm64.sh)" >&2
  exit 0
fi

export CARGO_TARGET_DIR=${ARM64_TARGET_DIR:-$PWD/target/aarch64}
# The kernels the test CPU must offer (the kernel test fails if one is missing).
expected=neon
if [ "$(uname -m)" != aarch64 ]; then
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
  export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu"
  expected=dotprod,neon
elif grep -qw asimddp /proc/cpuinfo; then
  expected=dotprod,neon
fi

case "${1:-}" in
  check)
    "$CARGO" clippy --target "$TARGET" -p llmsoup-models --all-targets -- -D warnings
    "$CARGO" clippy --target "$TARGET" -p llmsoup -- -D warnings
    ;;
  test)
    shift
    # Without `hub` (hf-hub, rustls, ring: nothing the tests use, a minute of cross build).
    LLMSOUP_EXPECT_INT8_KERNELS=$expected "$CARGO" test --target "$TARGET" -p llmsoup-models \
      --no-default-features "$@"
    ;;
  *)
    echo "usage: scripts/arm64.sh check|test [cargo test args]" >&2
    exit 2
    ;;
esac
