"""config-examples/prometheus: promtool accepts the scrape config and the rules,
the rules' unit tests pass (synthetic series that must and must not fire), and
every rule selects only metrics the proxy exposes and carries for/severity/
summary/description.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.helpers.deploy import (
    EXPOSED_METRICS,
    PROMETHEUS_BUILTINS,
    RENAMED,
    REPO,
    metric_names,
    promtool,
    run_promtool,
)

PROM = REPO / "config-examples" / "prometheus"
UNIT_TESTS = Path(__file__).with_name("prometheus_alerts_test.yml")


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_promtool_check_config() -> None:
    r = run_promtool("check", "config", str(PROM / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout + r.stderr


def test_promtool_check_rules() -> None:
    r = run_promtool("check", "rules", str(PROM / "alerts.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(_rules())} rules found" in r.stdout + r.stderr


def test_promtool_unit_tests_pass() -> None:
    r = run_promtool("test", "rules", str(UNIT_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_unit_tests_would_catch_a_wrong_expectation(tmp_path: Path) -> None:
    # The unit tests are able to fail: expecting the steady worker to be the silent one fails.
    text = UNIT_TESTS.read_text().replace("worker: rig-a", "worker: rig-b")
    text = text.replace("../../config-examples", str(REPO / "config-examples"))
    bad = tmp_path / "wrong_test.yml"
    bad.write_text(text)
    r = run_promtool("test", "rules", str(bad))
    assert r.returncode != 0 and "TproxyWorkerSilent" in r.stdout + r.stderr


def test_unit_tests_cover_firing_and_quiet_cases() -> None:
    doc = yaml.safe_load(UNIT_TESTS.read_text())
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert {"TproxyWorkerSilent", "TproxyRejectRatioHigh"} <= fired & quiet


def test_rules_use_only_exposed_metrics() -> None:
    allowed = EXPOSED_METRICS | PROMETHEUS_BUILTINS
    for rule in _rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= allowed, (rule["alert"], names - allowed)
        assert not names & set(RENAMED.values()), rule["alert"]


def test_rules_have_for_severity_and_annotations() -> None:
    rules = _rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_asked_for_alerts_exist() -> None:
    by_name = {r["alert"]: r["expr"] for r in _rules()}
    wanted = {
        "TproxyPoolDisconnected": "tproxy_upstream_connected",
        "TproxyUpstreamChannelNotOpen": "tproxy_upstream_channel_open",
        "TproxyShareLogLagging": "tproxy_share_log_oldest_unwritten_age_seconds",
        "TproxyShareLogSpooling": "tproxy_share_log_spool_pending",
        "TproxyShareLogDatabaseDown": "tproxy_share_log_db_up",
        "TproxyRejectRatioHigh": "sv2_server_shares_rejected_total",
        "TproxyFarmHashrateDrop": "sv1_hashrate",
        "TproxyWorkerSilent": "tproxy_worker_hashrate",
    }
    for alert, metric in wanted.items():
        assert metric in metric_names(by_name[alert]), alert


def test_scrape_config_points_at_the_metrics_path_with_rules_beside_it() -> None:
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "tproxy")
    assert job["metrics_path"] == "/metrics"
    assert cfg["rule_files"] == ["alerts.yml"]
    # The bearer-token option is shown, commented out.
    assert "#   credentials_file:" in (PROM / "prometheus.yml").read_text()


def test_missing_promtool_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no promtool
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        promtool()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        promtool()
