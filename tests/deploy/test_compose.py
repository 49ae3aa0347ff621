"""docker-compose.yml: the prometheus and grafana services are wired to the proxy.

Checks, without a Docker engine: every bind-mounted path exists in the
repository; Prometheus loads the mounted scrape config, and the rule files it
names are mounted beside it; the scrape target is the proxy's service name and
monitoring port; the monitoring port is published on the host's loopback only;
Grafana's provisioning points at the Prometheus service and at the mounted
dashboards.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.helpers.deploy import REPO, image_env
from tproxy.config import MonitoringSettings

Compose = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> Compose:
    doc = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def _binds(service: dict[str, Any]) -> dict[str, str]:
    """container path -> repo-relative host path, for ./ bind mounts."""
    out: dict[str, str] = {}
    for v in service.get("volumes", []):
        parts = v.split(":")
        if parts[0].startswith("./"):
            out[parts[1]] = parts[0][2:]
    return out


def _host_file(binds: dict[str, str], container_path: str) -> str | None:
    """The repo path that provides ``container_path`` (a file mount or a directory mount above it)."""
    for target, source in binds.items():
        if container_path == target:
            return source
        if container_path.startswith(target.rstrip("/") + "/"):
            return source + container_path[len(target.rstrip("/")):]
    return None


def _monitoring_port(compose: Compose) -> int:
    env = compose["services"]["tproxy"]["environment"]
    return int(env.get("TPROXY__MONITORING__PORT", MonitoringSettings().port))


def test_services_present(compose: Compose) -> None:
    assert {"tproxy", "clickhouse", "prometheus", "grafana"} <= set(compose["services"])
    assert compose["services"]["prometheus"]["image"].startswith("prom/prometheus:")
    assert compose["services"]["grafana"]["image"].startswith("grafana/grafana-oss:")


def test_bind_mounts_exist(compose: Compose) -> None:
    for name, svc in compose["services"].items():
        for target, source in _binds(svc).items():
            assert (REPO / source).exists(), f"{name}: {source} (mounted at {target}) is missing"


def test_monitoring_published_on_loopback_only(compose: Compose) -> None:
    port = _monitoring_port(compose)
    ports = compose["services"]["tproxy"]["ports"]
    assert f"127.0.0.1:{port}:{port}" in ports
    assert not [p for p in ports if str(p).split(":")[-1] == str(port) and not str(p).startswith("127.0.0.1:")]
    for svc in ("prometheus", "grafana"):
        assert all(str(p).startswith("127.0.0.1:") for p in compose["services"][svc]["ports"]), svc
    # Inside the container the server must listen on every interface, or nothing could reach it.
    env = image_env()
    assert env["TPROXY__MONITORING__ADDRESS"] == "0.0.0.0" and env["TPROXY__MONITORING__ENABLED"] == "true"


def test_prometheus_scrapes_the_proxy_service(compose: Compose) -> None:
    prom = compose["services"]["prometheus"]
    binds = _binds(prom)
    config_path = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config.file="))
    host_cfg = _host_file(binds, config_path)
    assert host_cfg is not None, "the scrape config is not mounted"
    cfg = yaml.safe_load((REPO / host_cfg).read_text())
    for rule_file in cfg["rule_files"]:
        in_container = posixpath.join(posixpath.dirname(config_path), rule_file)
        host_rules = _host_file(binds, in_container)
        assert host_rules is not None and (REPO / host_rules).is_file(), rule_file
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "tproxy")
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"tproxy:{_monitoring_port(compose)}"]
    assert "tproxy" in prom.get("depends_on", [])


def test_grafana_provisioning_is_wired(compose: Compose) -> None:
    graf = compose["services"]["grafana"]
    binds = _binds(graf)
    ds_file = _host_file(binds, "/etc/grafana/provisioning/datasources/prometheus.yml")
    assert ds_file is not None
    (source,) = yaml.safe_load((REPO / ds_file).read_text())["datasources"]
    prom_port = next(int(str(p).split(":")[-1]) for p in compose["services"]["prometheus"]["ports"])
    assert source["url"] == f"http://prometheus:{prom_port}"
    prov_file = _host_file(binds, "/etc/grafana/provisioning/dashboards/tproxy.yml")
    assert prov_file is not None
    (provider,) = yaml.safe_load((REPO / prov_file).read_text())["providers"]
    dash = _host_file(binds, posixpath.join(provider["options"]["path"], "tproxy.json"))
    assert dash is not None and (REPO / dash).is_file()
    env = graf["environment"]
    home = _host_file(binds, env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home is not None and (REPO / home).is_file()
    # Admin password from the environment, never a literal; anonymous users only view.
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${")
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
