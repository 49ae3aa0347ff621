"""Monitoring end to end over real HTTP against a running proxy (issue #5).

One stack per module: the dev pool, the proxy (monitoring on, share log on an
embedded chdb engine in a temporary directory) and three synthetic miners,
all on 127.0.0.1. chdb allows one engine path per process at a time, so the
share-log stack is module-scoped and closed before the next module runs.

Everything is read over HTTP with aiohttp's client and checked against the
OpenAPI document the proxy itself publishes at /api-docs/openapi.json. The
tests that break things (a miner leaving, the pool going away) use their own
miner or their own stack, so the order of the tests does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from devnet.miner import Dialect, SyntheticMiner
from devnet.pool import DevPool
from tests.helpers.promtool import check_metrics, requires_promtool
from tests.helpers.schema_check import ResponseChecker
from tests.helpers.stack import pool_settings, proxy_settings
from tests.helpers.sv1_client import Sv1TestClient
from tproxy.config import MonitoringSettings, Settings
from tproxy.runtime import Proxy
from tproxy.shares.settings import ClickHouseSettings

pytestmark = pytest.mark.asyncio(loop_scope="module")

REFRESH_S = 0.2
SLACK_S = 1.5  # hang-guard slack on a loaded CI machine, on top of one refresh (not asserted)
HASHRATE = 60_000.0  # per miner: ~14 shares/s at DIFF 1e-6, cheap in pure Python
WORKERS: tuple[tuple[str, Dialect], ...] = (
    ("farm.cpu1", "cpuminer"),
    ("farm.axe1", "bitaxe"),
    ("farm.ws1", "whatsminer"),
)


def monitored_settings(pool_port: int, base: Path | None) -> Settings:
    settings = proxy_settings([pool_port], honour_suggest=False)  # mixed dialects: one difficulty for all
    update: dict[str, Any] = {
        # vardiff stays off (as in proxy_settings); a short share interval lets a hashrate
        # estimate react within a test instead of after the default 10 s floor
        "difficulty": settings.difficulty.model_copy(update={"shares_per_minute": 600.0}),
        "monitoring": MonitoringSettings(
            enabled=True, address="127.0.0.1", port=0, refresh_interval_s=REFRESH_S, worker_stats_interval_s=0.5
        )
    }
    if base is not None:
        update["clickhouse"] = ClickHouseSettings(
            url=f"chdb://{base / 'shares.chdb'}",
            spool_dir=str(base / "spool"),
            batch_max_age_s=0.1,
            spool_fsync=False,
        )
    return settings.model_copy(update=update)


@dataclass
class Stack:
    pool: DevPool
    proxy: Proxy
    miners: list[SyntheticMiner]
    http: aiohttp.ClientSession
    doc: dict[str, Any]

    def miner(self, worker: str, dialect: Dialect = "cpuminer") -> SyntheticMiner:
        m = SyntheticMiner("127.0.0.1", self.proxy.sv1_port, worker_name=worker, dialect=dialect, hashrate_limit=HASHRATE)
        m.start()
        return m


@contextlib.asynccontextmanager
async def running(base: Path | None, workers: tuple[tuple[str, Dialect], ...]) -> AsyncIterator[Stack]:
    pool = DevPool(pool_settings())
    await pool.start()
    proxy = Proxy(monitored_settings(pool.port, base), share_log=base is not None)
    miners: list[SyntheticMiner] = []
    try:
        await proxy.start()
        assert proxy.monitoring_port
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{proxy.monitoring_port}") as http:
            async with http.get("/api-docs/openapi.json") as r:
                assert r.status == 200
                doc = await r.json()
            st = Stack(pool, proxy, miners, http, doc)
            miners.extend(st.miner(w, d) for w, d in workers)
            yield st
    finally:
        await asyncio.gather(*(m.close() for m in miners), return_exceptions=True)
        await proxy.close()
        await pool.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running(tmp_path_factory.mktemp("monitoring-e2e"), WORKERS) as st:
        # Settled: every miner has accepted shares and the monitoring shows a hashrate
        # for each, and the share log's aggregate has reached the workers' windows.
        await eventually(lambda: ready(st), timeout=15)
        yield st


# -- helpers ---------------------------------------------------------------------


async def get(http: aiohttp.ClientSession, path: str, status: int = 200) -> Any:
    async with http.get(path) as r:
        text = await r.text()
        assert r.status == status, (path, r.status, text[:300])
        if r.content_type == "application/json":
            return json.loads(text)
        return text


def check(doc: dict[str, Any], template: str, status: int, body: Any) -> None:
    """``body`` validates against the published document's response schema (closed objects)."""
    ResponseChecker(doc).check(template, status, body)


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def one(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    samples = metrics[name]
    assert len(samples) == 1, (name, samples)
    return samples[0][1]


def worker_hashrates(metrics: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, float]:
    return {labels["worker"]: v for labels, v in metrics.get("sv1_client_hashrate", [])}


async def eventually(probe: Any, *, timeout: float, interval: float = 0.05) -> Any:
    """Await ``probe()`` until it returns something truthy; that value."""
    async with asyncio.timeout(timeout):
        while True:
            got = await probe()
            if got:
                return got
            await asyncio.sleep(interval)


async def ready(st: Stack) -> bool:
    if min(m.accepted for m in st.miners) < 3:
        return False
    metrics = parse_metrics(await get(st.http, "/metrics"))
    if set(worker_hashrates(metrics)) != {w for w, _ in WORKERS}:
        return False
    for w, _ in WORKERS:
        body = await get(st.http, f"/api/v1/workers/{w}")
        if body["windows"] is None or body["windows"]["5m"]["shares_accepted"] < 1:
            return False
    return True


@dataclass
class Consistent:
    """Bodies fetched while one and the same snapshot was published."""

    global_: dict[str, Any]
    clients: dict[str, Any]
    channels: dict[str, Any]
    workers: dict[str, Any]
    metrics: dict[str, list[tuple[dict[str, str], float]]]


async def consistent_view(st: Stack) -> Consistent:
    """The API bodies and the exposition, all from one snapshot.

    Miners keep mining, so two requests may straddle a refresh. /api/v1/global
    and /metrics both carry the snapshot's timestamp: when the global body
    before and after agree with the exposition, everything in between was
    served from that snapshot (timestamps only move forward).
    """

    async def attempt() -> Consistent | None:
        before = await get(st.http, "/api/v1/global")
        clients = await get(st.http, "/api/v1/sv1/clients?limit=100")
        channels = await get(st.http, "/api/v1/server/channels?limit=100")
        workers = await get(st.http, "/api/v1/workers?limit=100")
        metrics = parse_metrics(await get(st.http, "/metrics"))
        after = await get(st.http, "/api/v1/global")
        taken = one(metrics, "tproxy_monitoring_snapshot_timestamp_seconds")
        if before["snapshot_taken_at"] == after["snapshot_taken_at"] == taken:
            return Consistent(before, clients, channels, workers, metrics)
        return None

    result: Consistent = await eventually(attempt, timeout=10, interval=0.01)
    return result


# -- every endpoint against the published document -------------------------------------


async def test_every_endpoint_validates_against_published_document(stack: Stack) -> None:
    doc = stack.doc
    assert doc["openapi"].startswith("3.1")
    clients = await get(stack.http, "/api/v1/sv1/clients")
    client_id = clients["items"][0]["client_id"]
    worker = WORKERS[0][0]
    concrete = {
        "/api/v1/sv1/clients/{client_id}": f"/api/v1/sv1/clients/{client_id}",
        "/api/v1/workers/{name}": f"/api/v1/workers/{worker}",
    }
    checked = set()
    for template in doc["paths"]:
        path = concrete.get(template, template)
        body = await get(stack.http, path)
        if template == "/metrics":
            assert parse_metrics(body)
        elif template == "/api-docs/openapi.json":
            assert body == doc
        else:
            check(doc, template, 200, body)
        checked.add(template)
    assert checked >= {
        "/", "/health", "/api/v1/health", "/api/v1/global", "/api/v1/server", "/api/v1/server/channels",
        "/api/v1/sv1/clients", "/api/v1/sv1/clients/{client_id}", "/api/v1/workers", "/api/v1/workers/{name}",
    }

    # What the bodies say about the live stack.
    health = await get(stack.http, "/health")
    assert health["status"] == "ok" and health["upstream_channel_open"] and health["share_log"] == "ok"
    assert clients["total"] == len(WORKERS)
    one_client = await get(stack.http, f"/api/v1/sv1/clients/{client_id}")
    assert one_client["connection_ip"] == "127.0.0.1" and one_client["shares_accepted"] >= 1
    wk = await get(stack.http, f"/api/v1/workers/{worker}")
    assert wk["connections"] == 1 and wk["hashrate"] and wk["hashrate"] > 0
    assert wk["windows"]["5m"]["shares_accepted"] >= 1  # from the share log's aggregate in chdb
    glob = await get(stack.http, "/api/v1/global")
    assert glob["share_log"]["written"] >= 1 and glob["share_log"]["db_up"] is True
    server = await get(stack.http, "/api/v1/server")
    assert server["extended_channels_count"] == 1 and server["upstream"]["connected"] is True


# -- pagination -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "offset", "limit", "count"),
    [
        ("", 0, 25, 3),
        ("?limit=0", 0, 0, 0),
        ("?limit=1", 0, 1, 1),
        ("?limit=100", 0, 100, 3),
        ("?limit=101", 0, 100, 3),  # clamped
        ("?offset=2&limit=1", 2, 1, 1),
        ("?offset=3", 3, 25, 0),  # exactly at the end
        ("?offset=1000&limit=5", 1000, 5, 0),  # beyond the total
    ],
)
async def test_sv1_clients_pagination_edges(stack: Stack, query: str, offset: int, limit: int, count: int) -> None:
    body = await get(stack.http, "/api/v1/sv1/clients" + query)
    check(stack.doc, "/api/v1/sv1/clients", 200, body)
    assert (body["offset"], body["limit"], body["total"], len(body["items"])) == (offset, limit, len(WORKERS), count)
    ids = [c["client_id"] for c in body["items"]]
    assert ids == sorted(ids)


async def test_pages_of_one_cover_every_client_once(stack: Stack) -> None:
    full = await get(stack.http, "/api/v1/sv1/clients?limit=100")
    paged = [(await get(stack.http, f"/api/v1/sv1/clients?offset={i}&limit=1"))["items"][0]["client_id"] for i in range(3)]
    assert paged == [c["client_id"] for c in full["items"]]
    assert sorted(c["worker_name"] for c in full["items"]) == sorted(w for w, _ in WORKERS)


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/sv1/clients?limit=-1", "limit"),
        ("/api/v1/sv1/clients?offset=-1", "offset"),
        ("/api/v1/sv1/clients?limit=abc", "limit"),
        ("/api/v1/sv1/clients?offset=abc", "offset"),
        ("/api/v1/workers?limit=-5", "limit"),
        ("/api/v1/server/channels?offset=x", "offset"),
    ],
)
async def test_bad_pagination_is_400_naming_the_parameter(stack: Stack, path: str, parameter: str) -> None:
    body = await get(stack.http, path, 400)
    check(stack.doc, path.split("?")[0], 400, body)
    assert body["parameter"] == parameter and parameter in body["error"]


# -- 404 / 400 bodies -------------------------------------------------------------------


async def test_unknown_client_and_worker_are_404_json(stack: Stack) -> None:
    body = await get(stack.http, "/api/v1/sv1/clients/999999", 404)
    check(stack.doc, "/api/v1/sv1/clients/{client_id}", 404, body)
    assert "999999" in body["error"]
    body = await get(stack.http, "/api/v1/workers/farm.nobody", 404)
    check(stack.doc, "/api/v1/workers/{name}", 404, body)
    assert "farm.nobody" in body["error"]
    body = await get(stack.http, "/api/v1/sv1/clients/abc", 400)
    check(stack.doc, "/api/v1/sv1/clients/{client_id}", 400, body)
    assert body["parameter"] == "client_id"
    body = await get(stack.http, "/api/v1/nothing-here", 404)
    assert set(body) == {"error"}


# -- /metrics agrees with the API ----------------------------------------------------------


async def test_metrics_parse_and_agree_with_the_api(stack: Stack) -> None:
    v = await consistent_view(stack)
    m = v.metrics
    assert one(m, "sv1_clients") == v.clients["total"] == v.global_["sv1_clients"]["total_clients"] == len(WORKERS)
    assert one(m, "sv1_hashrate") == v.global_["sv1_clients"]["total_hashrate"] > 0
    # one upstream channel (aggregated): its acknowledged shares, both ways
    channels = v.channels["extended_channels"]
    assert len(channels) == 1 == v.channels["total_extended"]
    accepted = {labels["channel_id"]: value for labels, value in m["sv2_server_shares_accepted_total"]}
    assert accepted == {str(c["channel_id"]): float(c["shares_acknowledged"]) for c in channels}
    assert all(c["shares_acknowledged"] >= 1 for c in channels)
    assert one(m, "tproxy_upstream_channel_open") == 1.0 and one(m, "tproxy_healthy") == 1.0
    # per worker: present for every connected worker, equal to the API's figure
    by_worker = worker_hashrates(m)
    api_workers = {w["worker_name"]: w for w in v.workers["items"]}
    assert set(by_worker) == {w for w, _ in WORKERS}
    for name, value in by_worker.items():
        assert value == api_workers[name]["hashrate"] > 0
    assert sum(by_worker.values()) == pytest.approx(one(m, "sv1_hashrate"))
    # share-log counters are the global body's
    assert one(m, "tproxy_share_log_written_total") == v.global_["share_log"]["written"]
    assert one(m, "tproxy_share_log_dropped_total") == 0


@requires_promtool
async def test_promtool_accepts_the_proxy_metrics(stack: Stack) -> None:
    text = await get(stack.http, "/metrics")
    assert "sv2_server_shares_accepted_total{" in text and "sv1_clients " in text
    status, output = check_metrics(text)
    assert status == 0, output


# -- a miner that leaves disappears after one refresh -------------------------------------------


async def test_disconnected_miner_disappears_from_api_and_metrics(stack: Stack) -> None:
    leaver = stack.miner("farm.leaver", "antminer")
    try:

        async def visible() -> dict[str, Any] | None:
            clients = await get(stack.http, "/api/v1/sv1/clients?limit=100")
            mine = [c for c in clients["items"] if c["worker_name"] == "farm.leaver"]
            hashrates = worker_hashrates(parse_metrics(await get(stack.http, "/metrics")))
            return mine[0] if mine and "farm.leaver" in hashrates else None

        client = await eventually(visible, timeout=10)
    finally:
        await leaver.close()

    # Structural, not a deadline: once the proxy has dropped the session, the first
    # snapshot taken after that no longer shows the miner. (Timeouts below are hang guards.)
    def in_proxy() -> bool:
        return any(c.worker_name == "farm.leaver" for c in stack.proxy.monitoring_source.sv1_clients())

    async def dropped() -> bool:
        return not in_proxy()

    await eventually(dropped, timeout=30)
    dropped_at = time.time()  # the snapshot's clock (SnapshotCache's default, time.time)

    async def next_snapshot() -> bool:
        return bool((await get(stack.http, "/api/v1/global"))["snapshot_taken_at"] > dropped_at)

    await eventually(next_snapshot, timeout=30)
    clients = await get(stack.http, "/api/v1/sv1/clients?limit=100")
    assert "farm.leaver" not in {c["worker_name"] for c in clients["items"]}
    assert "farm.leaver" not in worker_hashrates(parse_metrics(await get(stack.http, "/metrics")))
    # gone everywhere, the others untouched
    await get(stack.http, f"/api/v1/sv1/clients/{client['client_id']}", 404)
    clients = await get(stack.http, "/api/v1/sv1/clients?limit=100")
    assert sorted(c["worker_name"] for c in clients["items"]) == sorted(w for w, _ in WORKERS)
    metrics = parse_metrics(await get(stack.http, "/metrics"))
    assert set(worker_hashrates(metrics)) == {w for w, _ in WORKERS}
    assert one(metrics, "sv1_clients") == len(WORKERS)
    # the worker may stay listed for its share-log windows, but with no connection
    async with stack.http.get("/api/v1/workers/farm.leaver") as r:
        if r.status == 200:
            body = await r.json()
            assert body["connections"] == 0 and body["client_ids"] == [] and body["hashrate"] is None
        else:
            assert r.status == 404


# -- a silent miner's hashrate decays ---------------------------------------------------------


async def test_hashrate_of_a_silent_miner_decays(stack: Stack) -> None:
    """A connected miner that stops submitting must not keep its last hashrate forever
    (vardiff is off here, so nothing but the monitoring asks for a fresh estimate)."""
    c = await Sv1TestClient.connect(stack.proxy.sv1_port)
    try:
        await c.handshake("farm.silent", configure=False)
        job = await c.wait_job()
        for k in range(3):
            en2, ntime, nonce = c.find_share(job, en2=k.to_bytes(c.extranonce2_size, "big"))
            assert (await c.submit("farm.silent", job, en2, ntime, nonce))["result"] is True

        async def hashrate() -> float | None:
            async with stack.http.get("/api/v1/workers/farm.silent") as r:
                if r.status == 404:  # not in a snapshot yet
                    return None
                assert r.status == 200
                body = await r.json()
            return body["hashrate"] if body["connections"] == 1 else None

        first = await eventually(hashrate, timeout=5)

        async def halved() -> float | None:
            h = await hashrate()
            return h if h is not None and h < first / 2 else None

        # Silence: the estimate must fall (about 1 s and a few refreshes on a quiet machine; the
        # wait is generous because a loaded machine delays the refreshes, not the decay).
        later = await eventually(halved, timeout=15)
        metrics = parse_metrics(await get(stack.http, "/metrics"))
        # The same decaying estimate (read after, so at most the API's figure).
        assert 0 <= worker_hashrates(metrics)["farm.silent"] <= later
    finally:
        await c.close()


# -- health follows the upstream ---------------------------------------------------------------


async def test_health_is_503_with_a_reason_once_the_pool_is_gone() -> None:
    # Its own stack (no share log: chdb allows one engine path per process), so that
    # closing the pool does not disturb the module's stack.
    async with running(None, (("farm.h1", "cpuminer"),)) as st:
        for path in ("/health", "/api/v1/health"):
            body = await eventually(lambda p=path: _health(st, p, 200), timeout=10)
            check(st.doc, path, 200, body)
            assert body["status"] == "ok" and body["upstream_channel_open"] is True and body["reason"] is None
            assert body["share_log"] == "disabled"
        await st.pool.close()
        for path in ("/health", "/api/v1/health"):
            body = await eventually(lambda p=path: _health(st, p, 503), timeout=REFRESH_S + SLACK_S + 3)
            check(st.doc, path, 503, body)
            assert body["status"] == "unavailable"
            assert body["upstream_channel_open"] is False
            assert "upstream" in body["reason"] and body["reasons"]
        metrics = parse_metrics(await get(st.http, "/metrics"))
        assert one(metrics, "tproxy_healthy") == 0.0
        assert one(metrics, "tproxy_upstream_channel_open") == 0.0


async def _health(st: Stack, path: str, want: int) -> dict[str, Any] | None:
    async with st.http.get(path) as r:
        body = await r.json()
        return body if r.status == want else None


# -- configuration reaches the monitoring ---------------------------------------------------


async def test_monitoring_settings_reach_admission_control_and_health() -> None:
    from monitoring.api import RateLimits
    from monitoring.service import rate_limits

    assert rate_limits(MonitoringSettings()) == RateLimits()
    assert rate_limits(MonitoringSettings(rate_limit=False)) is None
    custom = MonitoringSettings(api_rate=7, api_burst=3, health_rate=2, health_burst=4, max_wait_s=0.5)
    assert rate_limits(custom) == RateLimits(api_rate=7, api_burst=3, health_rate=2, health_burst=4, max_wait_s=0.5)
    assert MonitoringSettings(max_db_down_s=9).max_db_down_s == 9
