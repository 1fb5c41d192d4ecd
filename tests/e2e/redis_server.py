"""A real `redis-server` for end-to-end tests: `redis-server --port N --save '' --appendonly no`
on a free 127.0.0.1 port (installed by scripts/install-redis.sh, which `make deps` runs). Tests
that need it fail when it is missing and CI=true, and skip loudly elsewhere."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_bin() -> str:
    path = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    if path is None:
        why = "redis-server is not installed (run `make deps`, or scripts/install-redis.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(why + ": Redis tests cannot be skipped in CI")
        pytest.skip(why)
    return path


class RedisServer:
    """One redis-server process; `kill()` and `start()` again keep the port (not the data)."""

    def __init__(self, port: int | None = None):
        self.port = port or _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="llmsoup-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> "RedisServer":
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [redis_server_bin(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{(self.dir / 'redis.log').read_text()[-2000:]}")

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


@pytest.fixture
def redis_server():
    r = RedisServer().start()
    yield r
    r.stop()
