"""A real `redis-server` on a free 127.0.0.1 port for the shared response cache tests: no
persistence, killed on teardown. Without the binary the tests fail when CI=true (they must not
silently stop covering Redis) and skip loudly elsewhere (`scripts/install-redis-server.sh`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import free_port


def redis_bin() -> str | None:
    return os.environ.get("REDIS_SERVER") or shutil.which("redis-server")


def require_redis() -> str:
    path = redis_bin()
    if path is None:
        msg = "redis-server is not installed (run scripts/install-redis-server.sh or `make deps`)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + ": the Redis tests cannot be skipped in CI")
        pytest.skip(msg)
    return path


class RedisServer:
    """One redis-server process; `stop()` kills it, `start()` brings it back on the same port."""

    def __init__(self):
        self.bin = require_redis()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="llmsoup-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> "RedisServer":
        log = open(self.dir / "redis.log", "wb")
        self.proc = subprocess.Popen(
            [self.bin, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{(self.dir / 'redis.log').read_text(errors='replace')}")

    def command(self, *args: str) -> bytes:
        """Sends one command (RESP) and returns the raw reply."""
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(payload)
            return s.recv(65536)

    def ping(self) -> bool:
        try:
            return self.command("PING").startswith(b"+PONG")
        except OSError:
            return False

    def keys(self, pattern: str = "*") -> int:
        """How many keys match (from KEYS' array header)."""
        reply = self.command("KEYS", pattern)
        return int(reply.split(b"\r\n", 1)[0][1:])

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None
