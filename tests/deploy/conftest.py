import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def missing_tool(what: str):
    """A tool the deploy checks need is missing: fail in CI, skip loudly elsewhere."""
    import pytest  # noqa: PLC0415

    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing (run `make deps`): deploy checks cannot be skipped in CI")
    pytest.skip(f"{what} is missing (run `make deps`)")
