"""Helpers of the deploy-file tests (not a test module): the metric names the
proxy exposes, pulling metric names out of PromQL, finding promtool, and
reading the Dockerfile.

``EXPOSED_METRICS`` is the exposition of ``monitoring/metrics.py`` after the
rename of issue 12 (``sv1_clients``, ``sv1_hashrate``, ``sv2_server_hashrate``
are gauges without the old ``_total``); counters carry prometheus-client's
``_total`` sample suffix. Every expression in the dashboard and the alert
rules must use only these names (plus Prometheus' own ``up``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

RENAMED = {  # new name -> the name before issue 12
    "sv1_clients": "sv1_clients_total",
    "sv1_hashrate": "sv1_hashrate_total",
    "sv2_server_hashrate": "sv2_server_hashrate_total",
}
COUNTERS = frozenset(
    {
        "sv2_server_shares_accepted_total",
        "sv2_server_shares_rejected_total",
        "sv2_server_blocks_found_total",
        "tproxy_share_log_written_total",
        "tproxy_share_log_spooled_total",
        "tproxy_share_log_replayed_total",
        "tproxy_share_log_retried_total",
        "tproxy_share_log_failed_batches_total",
        "tproxy_share_log_dropped_total",
    }
)
GAUGES = frozenset(
    {
        "sv2_uptime_seconds",
        "sv2_server_channels",
        "sv2_server_hashrate",
        "sv2_server_channel_hashrate",
        "sv1_clients",
        "sv1_hashrate",
        "sv1_client_hashrate",
        "tproxy_worker_hashrate",
        "tproxy_upstream_connected",
        "tproxy_upstream_channel_open",
        "tproxy_healthy",
        "tproxy_share_log_queued",
        "tproxy_share_log_spool_pending",
        "tproxy_share_log_oldest_unwritten_age_seconds",
        "tproxy_share_log_db_up",
        "tproxy_monitoring_snapshot_timestamp_seconds",
        "tproxy_monitoring_snapshot_build_seconds",
        "tproxy_monitoring_snapshot_max_stall_seconds",
    }
)
EXPOSED_METRICS = COUNTERS | GAUGES
PROMETHEUS_BUILTINS = frozenset({"up"})

# Words of PromQL that look like identifiers but are not metric names.
_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                       "group_right", "bool", "offset", "inf", "nan"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+")
_IDENT = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (strings, label matchers, grouping lists,
    ranges, offsets, function names, keywords and numbers are not)."""
    e = _STRING.sub('""', expr)
    e = _BRACES.sub(" ", e)
    e = _RANGE.sub(" ", e)
    e = _GROUPING.sub(" ", e)
    e = _OFFSET.sub(" ", e)
    names = set()
    for m in _IDENT.finditer(e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def promtool() -> str:
    """Path of promtool. Missing: skip on a developer machine, fail in CI (CI set)."""
    path = shutil.which("promtool")
    if path is not None:
        return path
    if os.environ.get("CI"):
        pytest.fail("promtool not found although CI is set (.ci/run installs it: apt-get install prometheus)")
    pytest.skip("promtool not installed (apt-get install prometheus); in CI this is a failure")


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, check=False)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile(path: Path = REPO / "Dockerfile") -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    return out


def image_env(path: Path = REPO / "Dockerfile") -> dict[str, str]:
    """The ENV of the Dockerfile's final stage (``KEY=VALUE`` form)."""
    stages: list[list[Instruction]] = []
    for ins in dockerfile(path):
        if ins.keyword == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append(ins)
    env: dict[str, str] = {}
    for ins in stages[-1]:
        if ins.keyword == "ENV":
            for pair in ins.args.split():
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {ins.args!r}: use KEY=VALUE"
                env[key] = value
    return env
