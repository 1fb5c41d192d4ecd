"""vLLM Semantic Router configs in every generation (config/examples/vsr/) load through the
same loader as native files: `llmsoup config check` names the format and every warning, the
Envoy bootstrap rendered from them is accepted by the real Envoy 1.40 (`envoy --mode
validate`), and `llmsoup config migrate` writes a native config that loads back."""

import os
import subprocess

import pytest

from harness import ROOT, envoy_bin, llmsoup_bin, wasm_filter

VSR = ROOT / "config" / "examples" / "vsr"
FIXTURES = {
    "flat.yaml": "G1 (flat router YAML",
    "user.yaml": "G1' (CLI user format",
    "canonical.yaml": "G2 (canonical",
    "categories.yaml": "G0 (categories",
    "native.yaml": "llmsoup native",
}
# The fixtures read the OpenAI key through `${OPENAI_API_KEY}`; only Envoy needs its value.
ENV = {**os.environ, "OPENAI_API_KEY": "dummy-key"}


def run(*args, env=None):
    return subprocess.run([str(llmsoup_bin()), *args], capture_output=True, text=True, env=env or os.environ)


def test_every_fixture_is_tested():
    assert sorted(p.name for p in VSR.glob("*.yaml")) == sorted(FIXTURES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_config_check_names_the_format_and_the_warnings(name):
    # No OPENAI_API_KEY in the environment: credentials are references, not values.
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    r = run("config", "check", str(VSR / name), env=env)
    assert r.returncode == 0, r.stderr
    assert FIXTURES[name] in r.stdout, r.stdout
    assert "decisions: " in r.stdout and "signals: " in r.stdout
    if name == "native.yaml":
        assert "warnings" not in r.stdout
    else:
        assert "warnings:" in r.stdout and "not supported by llmsoup" in r.stdout, r.stdout


def test_config_check_rejects_a_wrong_type_with_path_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((VSR / "canonical.yaml").read_text().replace("      priority: 300", "      priority: top", 1))
    r = run("config", "check", str(bad))
    assert r.returncode != 0
    assert "routing.decisions[0].priority" in r.stderr and "line " in r.stderr, r.stderr


@pytest.mark.parametrize("mode", ["ext_proc", "wasm"])
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_envoy_accepts_the_bootstrap_rendered_from_a_vsr_config(tmp_path, name, mode):
    out = tmp_path / "envoy.yaml"
    render = ["envoy-config", "-c", str(VSR / name), "-o", str(out), "--mode", mode.replace("_", "-")]
    if mode == "wasm":
        render += ["--wasm", str(wasm_filter())]
    r = run(*render, env=ENV)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "OPENAI_API_KEY" in text or "dummy-key" not in text
    assert "not-a-real-key" not in text, "inline vSR keys never reach the bootstrap"
    v = subprocess.run([str(envoy_bin()), "--mode", "validate", "-c", str(out), "-l", "error"],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr


@pytest.mark.parametrize("name", ["flat.yaml", "user.yaml", "canonical.yaml", "categories.yaml"])
def test_migrate_writes_a_native_config_that_loads_back(tmp_path, name):
    out = tmp_path / "native.yaml"
    r = run("config", "migrate", str(VSR / name), "-o", str(out))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert text.startswith("# llmsoup native configuration, migrated from a vLLM Semantic Router")
    assert "#   - " in text and "warning:" in r.stderr
    check = run("config", "check", str(out))
    assert check.returncode == 0, check.stderr
    assert "llmsoup native" in check.stdout and "warnings" not in check.stdout


def test_route_explains_a_vsr_config_and_logs_its_warnings():
    r = run("route", "-c", str(VSR / "user.yaml"), "urgent: the rust build is broken, fix it asap", env=ENV)
    assert r.returncode == 0, r.stderr
    assert "gpt-4o-mini" in r.stdout and "urgent_coding" in r.stdout, r.stdout
    assert "signals.preferences" in r.stderr and "WARN" in r.stderr, r.stderr
