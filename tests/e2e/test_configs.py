"""Every configuration we ship loads, and the Envoy bootstrap rendered from it — in both attach
modes — is accepted by the real Envoy 1.40 (`envoy --mode validate`)."""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import ROOT, envoy_bin, llmsoup_bin, wasm_filter

SHIPPED = sorted(
    [ROOT / "config" / "llmsoup.yaml", *(ROOT / "config" / "examples").glob("*.yaml"),
     ROOT / "deploy" / "docker-compose" / "llmsoup.yaml"]
)


def credential_envs(path: Path) -> dict:
    """Dummy values for every provider credential read from the environment."""
    cfg = yaml.safe_load(path.read_text())
    return {p["credentials"]["env"]: "dummy-key" for p in cfg.get("providers", []) if p.get("credentials", {}).get("env")}


@pytest.mark.parametrize("xds", [False, True], ids=["inline", "xds-dir"])
@pytest.mark.parametrize("mode", ["ext_proc", "wasm"])
@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_config_renders_a_bootstrap_envoy_accepts(tmp_path, config, mode, xds):
    env = {**os.environ, **credential_envs(config)}
    bin_ = str(llmsoup_bin())
    check = subprocess.run([bin_, "config", "check", str(config)], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stderr
    out = tmp_path / "envoy.yaml"
    render = [bin_, "envoy-config", "-c", str(config), "-o", str(out), "--mode", mode.replace("_", "-")]
    if mode == "wasm":
        render += ["--wasm", str(wasm_filter())]
    if xds:
        # The bootstrap whose routes, clusters, credentials and filter configs come from files
        # (the running stacks of every other e2e test load the files themselves).
        render += ["--xds-dir", str(tmp_path / "xds")]
    subprocess.run(render, check=True, env=env)
    v = subprocess.run([str(envoy_bin()), "--mode", "validate", "-c", str(out), "-l", "error"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr


def test_config_check_reports_key_path_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  - name: p\n    base_url: http://127.0.0.1:1/v1\nmodels:\n  - name: m\n    provider: q\n")
    r = subprocess.run([str(llmsoup_bin()), "config", "check", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "models[0].provider" in r.stderr and "line 6" in r.stderr, r.stderr
