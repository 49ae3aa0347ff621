"""The monitoring API over real HTTP on 127.0.0.1, against any MonitoringSource.

Everything here goes through a bound socket and aiohttp's client. The source
is ``StaticSource`` today; the proxy end-to-end tests can reuse ``serve`` and
``check_schema`` with the proxy's own source.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from devnet.static_source import StaticSource, make_client
from monitoring.api import NAME_PATTERN, MonitoringServer, RateLimits, accepts_gzip, create_app
from monitoring.metrics import REJECTION_CODES
from monitoring.openapi import openapi_document
from monitoring.service import start_monitoring
from monitoring.snapshot import SnapshotCache
from monitoring.source import MonitoringSource
from monitoring.ui import UI_ROUTES
from tests.helpers.promtool import check_metrics, requires_promtool
from tests.helpers.schema_check import ResponseChecker, refs
from tests.helpers.waiting import until
from tproxy.config import MonitoringSettings

DOC = openapi_document()
CHECKER = ResponseChecker(DOC)
N_CLIENTS = 150  # > 100 so that the limit clamp is visible


@dataclass
class Served:
    source: Any
    cache: SnapshotCache
    server: MonitoringServer
    http: aiohttp.ClientSession


@asynccontextmanager
async def serve(source: MonitoringSource, *, token: str | None = None, **cache_kw: Any) -> AsyncIterator[Served]:
    cache_kw.setdefault("refresh_interval", 3600.0)  # tests refresh explicitly unless they ask
    cache = SnapshotCache(source, **cache_kw)
    await cache.start()
    server = MonitoringServer(cache, port=0, token=token)
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.url) as http:
            yield Served(source, cache, server, http)
    finally:
        await server.close()
        await cache.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve(StaticSource(N_CLIENTS, workers=100)) as s:
        yield s


def check_schema(template: str, status: int, body: Any) -> None:
    CHECKER.check(template, status, body)


async def get(http: aiohttp.ClientSession, path: str, status: int = 200, **kw: Any) -> Any:
    async with http.get(path, **kw) as r:
        text = await r.text()
        assert r.status == status, (path, r.status, text[:300])
        if r.content_type == "application/json":
            return json.loads(text)
        return text


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


CONCRETE = {
    "/api/v1/sv1/clients/{client_id}": "/api/v1/sv1/clients/1",
    "/api/v1/workers/{name}": "/api/v1/workers/farm.rig00001",
}


# -- the document ----------------------------------------------------------------


def test_document_is_consistent() -> None:
    assert DOC["openapi"].startswith("3.1")
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)  # OpenAPI 3.1 schemas are Draft 2020-12
    for ref in refs(DOC):
        CHECKER.resolve(ref)  # raises if dangling
    for path, ops in DOC["paths"].items():
        responses = ops["get"]["responses"]
        assert "200" in responses, path
        for status, resp in responses.items():
            kinds = set(resp["content"])
            expected = {"text/plain"} if (path, status) == ("/metrics", "200") else {"application/json"}
            assert kinds == expected, (path, status, kinds)
        open_ = ops["get"].get("security") == []
        assert open_ == (path in ("/health", "/api/v1/health")), path
        assert ("401" in responses) != open_, path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: {**b, "surprise": 1}, "Additional properties are not allowed ('surprise'"),
        (lambda b: {k: v for k, v in b.items() if k != "client_id"}, "'client_id' is a required property"),
        (lambda b: {**b, "client_id": 1.0}, "1.0 is not of type 'integer'"),
        (lambda b: {**b, "client_id": True}, "True is not of type 'integer'"),
        (lambda b: {**b, "shares_accepted": -1}, "-1 is less than the minimum of 0"),
        (lambda b: {**b, "hashrate": "fast"}, "'fast' is not of type 'number', 'null'"),
    ],
)
async def test_schema_check_rejects_what_the_document_does_not_allow(
    served: Served, change: Any, message: str
) -> None:
    # Every schema assertion in this module relies on the checker being strict.
    template = "/api/v1/sv1/clients/{client_id}"
    body = await get(served.http, "/api/v1/sv1/clients/1")
    assert CHECKER.errors(template, 200, body) == []
    errors = CHECKER.errors(template, 200, change(body))
    assert any(message in e for e in errors), errors


async def test_schema_check_closes_nested_objects(served: Served) -> None:
    page = await get(served.http, "/api/v1/sv1/clients?limit=2")
    page["items"][1]["surprise"] = 1
    assert CHECKER.errors("/api/v1/sv1/clients", 200, page) == [
        "$.items[1]: Additional properties are not allowed ('surprise' was unexpected)"
    ]
    worker = await get(served.http, "/api/v1/workers/farm.rig00001")
    worker["windows"]["7d"] = worker["windows"]["5m"]  # a nullable object (type list) is closed too
    assert len(CHECKER.errors("/api/v1/workers/{name}", 200, worker)) == 1
    worker["windows"] = None
    assert CHECKER.errors("/api/v1/workers/{name}", 200, worker) == []


def test_routes_equal_documented_paths() -> None:
    app = create_app(SnapshotCache(StaticSource(1)))
    routed = {r.canonical.replace(NAME_PATTERN, "{name}") for r in app.router.resources()}
    # The pages for people (dashboard assets, Swagger UI) are routes of their own, not API paths.
    assert UI_ROUTES.issubset(routed)
    assert routed - UI_ROUTES == set(DOC["paths"])


# -- every endpoint against the document -----------------------------------------


@pytest.mark.parametrize("template", sorted(DOC["paths"]))
async def test_every_endpoint_validates(served: Served, template: str) -> None:
    path = CONCRETE.get(template, template)
    if template == "/metrics":
        text = await get(served.http, path)
        assert parse_metrics(text)
        return
    body = await get(served.http, path)
    if template == "/api-docs/openapi.json":
        assert body == DOC
        return
    check_schema(template, 200, body)


@pytest.mark.parametrize("variant", ["no_share_log", "upstream_down", "no_worker_stats", "no_estimates", "empty"])
async def test_endpoints_validate_in_other_states(variant: str) -> None:
    src = StaticSource(0 if variant == "empty" else 12)
    if variant == "no_share_log":
        src.share_log_state = None
    elif variant == "upstream_down":
        src.set_upstream(connected=False, channel_open=False)
        src.channel_list = []
    elif variant == "no_worker_stats":
        src.worker_stats_error = ConnectionError("down")
    elif variant == "no_estimates":
        src.channel_list = [dataclasses.replace(src.channel_list[0], nominal_hashrate=None)]
        for cid, c in list(src.clients.items()):
            src.clients[cid] = dataclasses.replace(c, hashrate=None, channel_id=None)
    async with serve(src) as s:
        for template in DOC["paths"]:
            if template in ("/metrics", "/api-docs/openapi.json"):
                continue
            path = CONCRETE.get(template, template)
            expect_404 = variant == "empty" and "{" in template
            status = 404 if expect_404 else 200
            if template in ("/health", "/api/v1/health") and variant == "upstream_down":
                status = 503
            body = await get(s.http, path, status)
            check_schema(template, status, body)
        assert parse_metrics(await get(s.http, "/metrics"))


# -- pagination ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "offset", "limit", "ids"),
    [
        ("", 0, 25, list(range(1, 26))),
        ("?limit=0", 0, 0, []),
        ("?limit=25", 0, 25, list(range(1, 26))),
        ("?limit=100", 0, 100, list(range(1, 101))),
        ("?limit=101", 0, 100, list(range(1, 101))),
        ("?limit=18446744073709551615", 0, 100, list(range(1, 101))),
        ("?offset=140", 140, 25, list(range(141, 151))),
        ("?offset=149&limit=1", 149, 1, [150]),
        ("?offset=150", 150, 25, []),
        ("?offset=1000&limit=5", 1000, 5, []),
        ("?offset=0&limit=1&unknown=x", 0, 1, [1]),
    ],
)
async def test_pagination_edges(served: Served, query: str, offset: int, limit: int, ids: list[int]) -> None:
    body = await get(served.http, "/api/v1/sv1/clients" + query)
    check_schema("/api/v1/sv1/clients", 200, body)
    assert (body["offset"], body["limit"], body["total"]) == (offset, limit, N_CLIENTS)
    assert [c["client_id"] for c in body["items"]] == ids


async def test_pages_cover_everything_once(served: Served) -> None:
    seen: list[int] = []
    offset = 0
    while True:
        body = await get(served.http, f"/api/v1/sv1/clients?offset={offset}&limit=40")
        if not body["items"]:
            break
        seen += [c["client_id"] for c in body["items"]]
        offset += 40
    assert seen == list(range(1, N_CLIENTS + 1))


@pytest.mark.parametrize("path", ["/api/v1/sv1/clients", "/api/v1/workers", "/api/v1/server/channels"])
@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=-1", "limit"),
        ("offset=-5", "offset"),
        ("limit=abc", "limit"),
        ("offset=1.5", "offset"),
        ("limit=", "limit"),
        ("offset=%EF%BC%91", "offset"),  # a full-width digit is not an ASCII integer
        ("offset=1&limit=1e3", "limit"),
        ("limit=18446744073709551616", "limit"),
        ("offset=" + "9" * 5000, "offset"),
    ],
)
async def test_bad_query_parameters(served: Served, path: str, query: str, parameter: str) -> None:
    body = await get(served.http, f"{path}?{query}", 400)
    check_schema(path, 400, body)
    assert body["parameter"] == parameter
    assert parameter in body["error"]


async def test_channels_and_workers_pages(served: Served) -> None:
    ch = await get(served.http, "/api/v1/server/channels?limit=0")
    assert (ch["total_extended"], ch["extended_channels"], ch["standard_channels"]) == (1, [], [])
    ch = await get(served.http, "/api/v1/server/channels?offset=0&limit=500")
    assert ch["limit"] == 100 and len(ch["extended_channels"]) == 1
    wk = await get(served.http, "/api/v1/workers?limit=101")
    assert wk["limit"] == 100 and wk["total"] == 101  # 100 connected workers + farm.gone
    names = [w["worker_name"] for w in wk["items"]]
    assert names == sorted(names)


# -- 404 / 400 / 405 bodies ----------------------------------------------------------


async def test_not_found_bodies(served: Served) -> None:
    body = await get(served.http, "/api/v1/sv1/clients/999999", 404)
    check_schema("/api/v1/sv1/clients/{client_id}", 404, body)
    assert body == {"error": "Sv1 client 999999 not found"}
    body = await get(served.http, "/api/v1/workers/nobody", 404)
    check_schema("/api/v1/workers/{name}", 404, body)
    assert "nobody" in body["error"]
    body = await get(served.http, "/api/v1/clients", 404)  # SV2 clients: none on a translator
    assert set(body) == {"error"}
    body = await get(served.http, "/api/v2/nothing", 404)
    assert set(body) == {"error"}


async def test_bad_path_parameter(served: Served) -> None:
    for raw in ("abc", "-1", "1.0", "0x10"):
        body = await get(served.http, f"/api/v1/sv1/clients/{raw}", 400)
        check_schema("/api/v1/sv1/clients/{client_id}", 400, body)
        assert body["parameter"] == "client_id"


async def test_method_not_allowed_is_json(served: Served) -> None:
    async with served.http.post("/metrics") as r:
        assert r.status == 405
        assert "GET" in r.headers["Allow"]
        assert set(await r.json()) == {"error"}


async def test_worker_names_with_slashes_and_unicode() -> None:
    src = StaticSource(0)
    src.add_client(make_client(1, "acct/rig 1"))
    src.add_client(make_client(2, "ацкт.rig✓"))
    async with serve(src) as s:
        body = await get(s.http, "/api/v1/workers/acct%2Frig%201")
        assert body["client_ids"] == [1]
        body = await get(s.http, "/api/v1/workers/" + "ацкт.rig✓")
        assert body["client_ids"] == [2]
        metrics = parse_metrics(await get(s.http, "/metrics"))
        assert {lab["worker"] for lab, _ in metrics["sv1_client_hashrate"]} == {"acct/rig 1", "ацкт.rig✓"}


# -- authentication ----------------------------------------------------------------


async def test_bearer_token() -> None:
    async with serve(StaticSource(5), token="s3cret") as s:
        for path in ("/", "/metrics", "/api/v1/global", "/api/v1/sv1/clients", "/api-docs/openapi.json", "/nope"):
            async with s.http.get(path) as r:
                assert r.status == 401, path
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                body = await r.json()
                check_schema("/api/v1/global", 401, body)
            await get(s.http, path, 401, headers={"Authorization": "Bearer wrong"})
            await get(s.http, path, 401, headers={"Authorization": "Basic s3cret"})
        ok = {"Authorization": "Bearer s3cret"}
        await get(s.http, "/api/v1/global", headers=ok)
        assert parse_metrics(await get(s.http, "/metrics", headers=ok))
        await get(s.http, "/api/v1/sv1/clients/1", headers={"Authorization": "bearer s3cret"})
        # probes cannot send tokens: health stays open
        check_schema("/health", 200, await get(s.http, "/health"))
        check_schema("/api/v1/health", 200, await get(s.http, "/api/v1/health"))


def test_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="token"):
        create_app(SnapshotCache(StaticSource(1)), token="  ")


# -- health ----------------------------------------------------------------------------


async def _health(s: Served, status: int) -> dict[str, Any]:
    body = await get(s.http, "/health", status)
    check_schema("/health", status, body)
    assert body == {**(await get(s.http, "/api/v1/health", status)), "timestamp": body["timestamp"], "snapshot_age_s": body["snapshot_age_s"]}
    return body  # type: ignore[no-any-return]


async def test_health_upstream(served: Served) -> None:
    body = await _health(served, 200)
    assert body["status"] == "ok" and body["reason"] is None and body["share_log"] == "ok"
    served.source.set_upstream(channel_open=False)
    await served.cache.refresh()
    body = await _health(served, 503)
    assert body["status"] == "unavailable"
    assert body["reason"] == "upstream channel not open"
    served.source.set_upstream(connected=False)
    await served.cache.refresh()
    assert (await _health(served, 503))["reason"] == "upstream not connected"
    served.source.set_upstream(connected=True, channel_open=True)
    await served.cache.refresh()
    await _health(served, 200)


async def test_health_share_log_lag_and_drops(served: Served) -> None:
    served.source.set_share_log(oldest_unwritten_age_s=500.0)
    await served.cache.refresh()
    body = await _health(served, 503)
    assert body["share_log"] == "behind" and "share log behind" in body["reason"]
    served.source.set_share_log(oldest_unwritten_age_s=1.0, dropped=5)
    await served.cache.refresh()
    assert "dropped 5 records" in (await _health(served, 503))["reason"]
    await served.cache.refresh()  # no new drops since the last refresh
    await _health(served, 200)


async def test_health_db_down_and_stale_snapshot() -> None:
    now = [1_800_000_000.0]
    src = StaticSource(3)
    async with serve(src, clock=lambda: now[0], max_db_down_s=300.0) as s:
        src.set_share_log(db_up=False)
        await s.cache.refresh()
        await _health(s, 200)  # spooling, but not for long yet
        now[0] += 301
        await s.cache.refresh()
        body = await _health(s, 503)
        assert "database unreachable for 301 s" in body["reason"]
        src.set_share_log(db_up=True)
        await s.cache.refresh()
        await _health(s, 200)
        now[0] += s.cache.stale_after_s + 1  # the refresher is stuck
        body = await _health(s, 503)
        assert "stale" in body["reason"]


async def test_health_without_share_log() -> None:
    src = StaticSource(3)
    src.share_log_state = None
    async with serve(src) as s:
        assert (await _health(s, 200))["share_log"] == "disabled"


async def test_before_first_snapshot() -> None:
    cache = SnapshotCache(StaticSource(3))
    server = MonitoringServer(cache, port=0)
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.url) as http:
            body = await get(http, "/health", 503)
            check_schema("/health", 503, body)
            assert body["snapshot_age_s"] is None
            body = await get(http, "/api/v1/sv1/clients", 503)
            check_schema("/api/v1/sv1/clients", 503, body)
    finally:
        await server.close()


# -- /metrics agrees with the API ----------------------------------------------------


async def test_metrics_agree_with_api(served: Served) -> None:
    http = served.http
    m = parse_metrics(await get(http, "/metrics"))
    glob = await get(http, "/api/v1/global")
    server = await get(http, "/api/v1/server")
    channels = (await get(http, "/api/v1/server/channels"))["extended_channels"]
    workers = (await get(http, "/api/v1/workers?limit=100"))["items"]
    workers += (await get(http, "/api/v1/workers?offset=100&limit=100"))["items"]

    def one(name: str) -> float:
        [(labels, value)] = m[name]
        assert labels == {}
        return value

    assert one("sv1_clients") == glob["sv1_clients"]["total_clients"] == N_CLIENTS
    assert one("sv1_hashrate") == glob["sv1_clients"]["total_hashrate"]
    assert one("sv2_server_hashrate") == server["total_hashrate"] == glob["server"]["total_hashrate"]
    assert dict((lab["channel_type"], v) for lab, v in m["sv2_server_channels"]) == {
        "extended": server["extended_channels_count"],
        "standard": server["standard_channels_count"],
    }
    assert one("sv2_server_blocks_found_total") == sum(c["blocks_found"] for c in channels)
    for c in channels:
        key = {"channel_id": str(c["channel_id"]), "user_identity": c["user_identity"]}
        assert (key, c["shares_acknowledged"]) in m["sv2_server_shares_accepted_total"]
        assert (key, c["nominal_hashrate"]) in m["sv2_server_channel_hashrate"]
        rejected = {lab["error_code"]: v for lab, v in m["sv2_server_shares_rejected_total"] if lab["channel_id"] == key["channel_id"]}
        assert {k: v for k, v in rejected.items() if v} == c["shares_rejected_by_reason"]
        assert set(REJECTION_CODES) <= set(rejected)
    per_worker = {lab["worker"]: v for lab, v in m["sv1_client_hashrate"]}
    assert per_worker == {w["worker_name"]: w["hashrate"] for w in workers if w["hashrate"] is not None}
    windows = {(lab["worker"], lab["window"]): v for lab, v in m["tproxy_worker_hashrate"]}
    assert windows == {
        (w["worker_name"], label): win["hashrate"] for w in workers for label, win in w["windows"].items()
    }
    sl = glob["share_log"]
    for field in ("written", "spooled", "replayed", "retried", "failed_batches", "dropped"):
        assert one(f"tproxy_share_log_{field}_total") == sl[field], field
    assert one("tproxy_share_log_queued") == sl["queued"]
    assert one("tproxy_share_log_spool_pending") == sl["spool_pending"]
    assert one("tproxy_share_log_oldest_unwritten_age_seconds") == sl["oldest_unwritten_age_s"]
    assert one("tproxy_share_log_db_up") == 1.0
    assert one("tproxy_upstream_connected") == 1.0 and one("tproxy_healthy") == 1.0
    assert one("tproxy_monitoring_snapshot_timestamp_seconds") == glob["snapshot_taken_at"]
    assert 0 <= one("sv2_uptime_seconds") - glob["uptime_secs"] < 2


# -- a miner that leaves disappears after one refresh ---------------------------------


async def _series(http: aiohttp.ClientSession) -> dict[str, float]:
    m = parse_metrics(await get(http, "/metrics"))
    return {lab["worker"]: v for lab, v in m["sv1_client_hashrate"]}


async def test_disconnected_miner_disappears_after_one_refresh(served: Served) -> None:
    http = served.http
    before = await _series(http)
    gone = served.source.remove_client(60)  # farm.rig00060 has only this connection
    assert gone.worker_name == "farm.rig00060" and gone.worker_name in before
    # still served from the current snapshot until the next refresh
    await get(http, "/api/v1/sv1/clients/60")
    await served.cache.refresh()
    await get(http, "/api/v1/sv1/clients/60", 404)
    ids = [c["client_id"] for c in (await get(http, "/api/v1/sv1/clients?offset=50&limit=20"))["items"]]
    assert 60 not in ids and 59 in ids and 61 in ids
    after = await _series(http)
    expected = dict(before)
    del expected["farm.rig00060"]
    assert after == expected  # every other series still there, same values
    glob = await get(http, "/api/v1/global")
    assert glob["sv1_clients"]["total_clients"] == N_CLIENTS - 1
    worker = await get(http, "/api/v1/workers/farm.rig00060")  # its share history stays
    assert worker["connections"] == 0 and worker["hashrate"] is None


async def test_disconnect_seen_by_the_background_refresh() -> None:
    src = StaticSource(20, workers=20)  # one connection per worker
    async with serve(src, refresh_interval=0.05) as s:
        await get(s.http, "/api/v1/sv1/clients/5")
        src.remove_client(5)
        start_seq = s.cache.snapshot.seq
        # one build that started after the removal: at most two publications away
        await until(lambda: s.cache.snapshot.seq >= start_seq + 2)
        await get(s.http, "/api/v1/sv1/clients/5", 404)
        assert "farm.rig00005" not in await _series(s.http)


async def test_requests_never_touch_the_source(served: Served) -> None:
    calls = dict(served.source.calls)
    for _ in range(20):
        for template in DOC["paths"]:
            await get(served.http, CONCRETE.get(template, template))
    assert served.source.calls == calls


# -- wiring from configuration ----------------------------------------------------------


async def test_disabled_starts_nothing() -> None:
    before = {t.get_name() for t in asyncio.all_tasks()}
    assert await start_monitoring(StaticSource(1), MonitoringSettings(enabled=False, port=0)) is None
    assert {t.get_name() for t in asyncio.all_tasks()} == before


async def test_sri_metric_names_from_config() -> None:
    settings = MonitoringSettings(enabled=True, port=0, sri_metric_names=True)
    mon = await start_monitoring(StaticSource(3), settings)
    assert mon is not None
    try:
        async with aiohttp.ClientSession(base_url=mon.server.url) as http:
            m = parse_metrics(await get(http, "/metrics"))
        assert m["sv1_clients_total"] == [({}, 3.0)]
        assert "sv1_hashrate_total" in m and "sv2_server_hashrate_total" in m
        assert not {"sv1_clients", "sv1_hashrate", "sv2_server_hashrate"} & set(m)
    finally:
        await mon.close()


async def test_enabled_from_config() -> None:
    mon = await start_monitoring(StaticSource(3), MonitoringSettings(enabled=True, port=0, token=SecretStr("t")))
    assert mon is not None
    try:
        assert mon.server.host == "127.0.0.1" and mon.server.port > 0
        async with aiohttp.ClientSession(base_url=mon.server.url) as http:
            await get(http, "/api/v1/global", 401)
            await get(http, "/api/v1/global", headers={"Authorization": "Bearer t"})
    finally:
        await mon.close()


# -- gzip and admission control -------------------------------------------------------


async def test_metrics_gzip_equals_plain(served: Served) -> None:
    async with served.http.get("/metrics", headers={"Accept-Encoding": "identity"}) as r:
        assert "Content-Encoding" not in r.headers
        plain = await r.read()
    async with served.http.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        packed = await r.read()
    assert len(packed) * 5 < len(plain)
    unpacked = gzip.decompress(packed)

    def strip(body: bytes) -> list[bytes]:  # identical but for the scrape-time lines (uptime, connections)
        scrape_time = (b"sv2_uptime_seconds ", b"tproxy_monitoring_connections")
        return [ln for ln in body.splitlines() if not ln.startswith(scrape_time)]

    assert strip(unpacked) == strip(plain)
    assert parse_metrics(unpacked.decode())["sv2_uptime_seconds"]


@requires_promtool
async def test_promtool_accepts_served_metrics(served: Served) -> None:
    text = await get(served.http, "/metrics", headers={"Accept-Encoding": "identity"})
    assert "sv1_client_hashrate{" in text and "tproxy_share_log_written_total" in text
    status, output = check_metrics(text)
    assert status == 0, output


@pytest.mark.parametrize(
    ("header", "expected"),
    [("gzip", True), ("deflate, gzip;q=0.5", True), ("gzip;q=0", False), ("identity", False), ("", False), ("GZIP", True)],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


async def test_flood_is_slowed_then_refused_and_health_stays_available() -> None:
    # A slow bucket (5 units/s, each response ~1.01 units): the burst of 5 is served at
    # once, the next two wait (~0.2 s and ~0.4 s, under max_wait_s), the rest are refused
    # -- unless the 40 requests arrived spread over seconds, which only refills tokens:
    # the counts below are bounds that hold however slowly the machine runs. (The wait
    # arithmetic itself is tested on a fake clock in test_limits.py.)
    limits = RateLimits(api_rate=5.0, api_burst=5.0, health_rate=50.0, health_burst=50.0, max_wait_s=0.5)
    cache = SnapshotCache(StaticSource(10), refresh_interval=3600.0)
    await cache.start()
    server = MonitoringServer(cache, port=0, limits=limits)
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.url) as http:

            async def one() -> int:
                async with http.get("/api/v1/global") as r:
                    await r.read()
                    if r.status == 429:
                        assert int(r.headers["Retry-After"]) >= 1
                        assert set(await r.json()) == {"error"}
                    return r.status

            statuses = await asyncio.gather(*(one() for _ in range(40)))
            assert statuses.count(200) >= 7, statuses  # the burst, plus two admitted after waiting
            assert statuses.count(429) == 40 - statuses.count(200) >= 20
            # the API bucket is empty, the health bucket is not
            check_schema("/health", 200, await get(http, "/health"))
    finally:
        await server.close()
        await cache.close()
