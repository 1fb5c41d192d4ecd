import os

import pytest

from harness import Stack, envoy_bin

MODES = ["ext_proc"]


def pytest_collection_modifyitems(config, items):
    # Without Envoy these tests cannot run: fail in CI, skip (loudly) on a dev box.
    if envoy_bin() is not None:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError("Envoy is not installed (run `make deps`); end-to-end tests cannot be skipped in CI")
    skip = pytest.mark.skip(reason="Envoy not installed; run `make deps`")
    for item in items:
        item.add_marker(skip)


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
