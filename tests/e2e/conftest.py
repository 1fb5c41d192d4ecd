import os

import pytest

from harness import Stack, envoy_bin, wasm_filter

# Both attach modes run the same table: the ext_proc filter, and the wasm filter + Router gRPC.
MODES = ["ext_proc", "wasm"]


def pytest_collection_modifyitems(config, items):
    # Without Envoy (or the wasm build) these tests cannot run: fail in CI, skip loudly elsewhere.
    missing = {}
    if envoy_bin() is None:
        missing["envoy"] = "Envoy is not installed (run `make deps`)"
    if wasm_filter() is None:
        missing["wasm"] = "the wasm filter is not built (run `make wasm`)"
    if not missing:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError("; ".join(missing.values()) + ": end-to-end tests cannot be skipped in CI")
    for item in items:
        needs_wasm = "wasm" in item.nodeid
        reason = missing.get("envoy") or (missing.get("wasm") if needs_wasm else None)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", params=MODES)
def stack(request):
    s = Stack(mode=request.param).start()
    yield s
    s.stop()


@pytest.fixture(params=MODES)
def fresh_stack(request):
    """A private stack for tests that break things (kill the sidecar)."""
    s = Stack(mode=request.param).start()
    yield s
    s.stop()


@pytest.fixture(params=MODES)
def closed_stack(request):
    """A private stack configured fail-closed."""
    s = Stack(mode=request.param, failure_mode="closed").start()
    yield s
    s.stop()
