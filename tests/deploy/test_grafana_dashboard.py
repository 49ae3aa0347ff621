"""config-examples/grafana: the dashboard parses, covers what an operator needs,
selects only metrics the proxy exposes, and every query is valid PromQL
(promtool checks them wrapped as recording rules); provisioning points at the
dashboard and the data source the dashboard uses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tests.helpers.deploy import EXPOSED_METRICS, RENAMED, REPO, metric_names, run_promtool

GRAFANA = REPO / "config-examples" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "tproxy.json"
# Values Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$instance": ".*", "$window": "1h"}


def _dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def _queries() -> list[tuple[str, str]]:
    """(panel title / refId, expr) of every query, template variables included."""
    doc = _dashboard()
    out = [
        (f"{p['title']}/{t['refId']}", t["expr"])
        for p in _panels(doc["panels"])
        for t in p.get("targets", [])
    ]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["definition"])
            assert m, var["definition"]
            out.append((f"variable {var['name']}", m.group(1)))
    return out


def _substituted(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def test_dashboard_structure() -> None:
    doc = _dashboard()
    assert doc["uid"] == "tproxy-overview"
    panels = list(_panels(doc["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        # Panels follow the dashboard's data-source variable (importable into any Grafana).
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]


def test_dashboard_uses_only_exposed_metrics() -> None:
    for where, expr in _queries():
        names = metric_names(expr)
        assert names, where
        assert names <= EXPOSED_METRICS, (where, names - EXPOSED_METRICS)
        assert not names & set(RENAMED.values()), where


def test_dashboard_covers_the_operator_views() -> None:
    used = set().union(*(metric_names(e) for _, e in _queries()))
    wanted = {
        "tproxy_upstream_connected", "tproxy_upstream_channel_open",  # upstream status
        "sv1_hashrate", "sv2_server_hashrate",  # farm hashrate
        "tproxy_worker_hashrate", "sv1_client_hashrate",  # per worker
        "sv2_server_shares_accepted_total", "sv2_server_shares_rejected_total",  # shares
        "tproxy_share_log_queued", "tproxy_share_log_spool_pending",  # share-log backlog
        "tproxy_share_log_oldest_unwritten_age_seconds", "tproxy_share_log_db_up",
        "tproxy_healthy",  # health
    }
    assert wanted <= used, wanted - used
    rejected = [e for _, e in _queries() if "sv2_server_shares_rejected_total" in e]
    assert any("by (error_code)" in e for e in rejected), "rejections are not split by reason"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": _substituted(expr)}
        for i, (_, expr) in enumerate(_queries())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = run_promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(rules)} rules found" in r.stdout + r.stderr


def test_promql_check_rejects_a_broken_query(tmp_path: Path) -> None:
    # The check above can fail: a typo'd query is refused.
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"record": "dashboard:broken", "expr": "sum(rate(sv1_hashrate[5m])"}]}]}))
    assert run_promtool("check", "rules", str(path)).returncode != 0


def test_provisioning_matches_the_dashboard() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "tproxy.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    # The dashboard's datasource variable selects Prometheus sources, so it finds this one.
    var = next(v for v in _dashboard()["templating"]["list"] if v["name"] == "datasource")
    assert var["type"] == "datasource" and var["query"] == source["type"]


def test_exposed_names_match_monitoring_metrics_source() -> None:
    # Guards the fixed list against drift: every family is declared in monitoring/metrics.py
    # (counters without prometheus-client's "_total").
    src = (REPO / "monitoring" / "metrics.py").read_text()
    for name in sorted(EXPOSED_METRICS):
        family = name.removesuffix("_total") if name.endswith("_total") and name not in RENAMED else name
        assert f'"{family}"' in src or f"# TYPE {family} " in src, name
