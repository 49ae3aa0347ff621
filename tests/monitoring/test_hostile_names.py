"""Hostile text from miners over real HTTP: every worker stays listed, addressable and in /metrics.

A lone surrogate in one worker name used to fail the whole /metrics build, so
the snapshot went stale and /health said 503. The rule (monitoring.text):
valid Unicode is kept exactly as received, each lone surrogate becomes
U+FFFD, and a worker is addressed by the percent-encoding of that name.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from devnet.static_source import StaticSource, make_client
from monitoring.snapshot import SnapshotCache
from monitoring.text import clean_text, url_segment
from tests.helpers.monitoring_http import raw_get, running
from tests.helpers.promtool import check_metrics, requires_promtool

HOSTILE = [
    "\ud800",
    "lone\udfffsurrogate\ud800",
    "nul\x00byte",
    "ctl\x01\x08\x1b[31m\x7f\x85",
    "new\nline",
    "cr\rlf\r\n",
    'quo"te',
    "back\\slash\\",
    "sl/ash",
    "//",
    "/leading",
    "100%",
    "%FF",
    "%ED%A0%80",
    ".",
    "..",
    "a/../b",
    "q?x=1#frag",
    "sp ace+plus",
    "x" * 10_000,
    "🙂" * 2_000,
    "emoji🙂.rig✓ ацкт",
    "\u2028\u2029\ufeff",
    "{}=,\t#",
]


def _source() -> StaticSource:
    src = StaticSource(0)
    for i, name in enumerate(HOSTILE, start=1):
        src.add_client(make_client(i, name))
    # the other strings a source hands over can be hostile too
    src.add_client(dataclasses.replace(make_client(100, "ok.rig"), user_identity="id\ud800", connection_ip="ip\udc80"))
    ch = src.channel_list[0]
    src.channel_list = [
        dataclasses.replace(ch, user_identity="up\ud800\n\"", shares_rejected_by_reason={"code\udfff": 2, "stale-share": 1})
    ]
    src.set_upstream(address="pool\ud800:1")
    return src


def _labels(text: str, family: str, label: str) -> list[str]:
    return [s.labels[label] for f in text_string_to_metric_families(text) for s in f.samples if s.name == family]


async def _json(port: int, target: str, status: int = 200) -> Any:
    got, body = await raw_get(port, target)
    assert got == status, (target[:100], got, body[:300])
    return json.loads(body)


async def test_hostile_names_are_served_listed_addressable_and_in_metrics() -> None:
    expected = sorted({clean_text(n) for n in HOSTILE} | {"ok.rig"})
    async with running(_source(), limits=None) as server:
        port = server.port
        assert (await _json(port, "/health"))["status"] == "ok"

        got, metrics = await raw_get(port, "/metrics")
        assert got == 200
        text = metrics.decode("utf-8")
        with_estimate = [clean_text(n) for i, n in enumerate(HOSTILE, start=1) if i % 7]  # every 7th has none
        assert sorted(_labels(text, "sv1_client_hashrate", "worker")) == sorted([*with_estimate, "ok.rig"])
        windows = _labels(text, "tproxy_worker_hashrate", "worker")
        assert set(windows) == {*expected, "farm.gone"} and len(windows) == 3 * (len(expected) + 1)
        assert set(_labels(text, "sv2_server_shares_rejected_total", "user_identity")) == {"up\ufffd\n\""}
        assert "code\ufffd" in _labels(text, "sv2_server_shares_rejected_total", "error_code")
        # prometheus-client escapes backslash, quote and newline in label values; the rest is as received
        assert 'worker="new\\nline"' in text and 'worker="quo\\"te"' in text and 'worker="back\\\\slash\\\\"' in text
        assert 'worker="nul\x00byte"' in text and 'worker="cr\rlf\r\\n"' in text

        listed: list[str] = []
        for offset in range(0, len(expected) + 1, 100):
            page = await _json(port, f"/api/v1/workers?offset={offset}&limit=100")
            listed += [w["worker_name"] for w in page["items"]]
        assert sorted(listed) == sorted([*expected, "farm.gone"])

        for name in expected:
            body = await _json(port, "/api/v1/workers/" + url_segment(name))
            assert body["worker_name"] == name
        client = await _json(port, "/api/v1/sv1/clients/100")
        assert (client["user_identity"], client["connection_ip"]) == ("id\ufffd", "ip\ufffd")
        server_body = await _json(port, "/api/v1/server")
        assert server_body["upstream"]["address"] == "pool\ufffd:1"
        assert (await _json(port, "/health"))["status"] == "ok"
        missing = await _json(port, "/api/v1/workers/" + "y" * 20_000, 404)
        assert len(missing["error"]) < 200  # the unknown name is echoed cut short


@requires_promtool
async def test_promtool_accepts_hostile_label_values() -> None:
    async with running(_source(), limits=None) as server:
        got, metrics = await raw_get(server.port, "/metrics")
        assert got == 200 and "worker=\"nul\x00byte\"" in metrics.decode()
        status, output = check_metrics(metrics.decode())
        assert status == 0, output


async def test_lone_surrogate_name_is_addressed_by_its_replacement_form() -> None:
    src = StaticSource(0)
    src.add_client(make_client(1, "rig\ud800"))
    async with running(src, limits=None) as server:
        body = await _json(server.port, "/api/v1/workers/rig%EF%BF%BD")
        assert body["worker_name"] == "rig\ufffd" and body["client_ids"] == [1]
        # the undecodable UTF-8 of a surrogate is not a name anyone has
        await _json(server.port, "/api/v1/workers/rig%ED%A0%80", 404)


async def test_a_broken_entry_costs_only_that_entry() -> None:
    src = _source()
    src.add_client(dataclasses.replace(make_client(200, "broken"), worker_name=None))  # type: ignore[arg-type]
    src.add_client(dataclasses.replace(make_client(201, "broken2"), client_id="201"))  # type: ignore[arg-type]
    src.add_client(dataclasses.replace(make_client(202, "broken3"), hashrate="fast"))  # type: ignore[arg-type]
    src.channel_list.append(dataclasses.replace(src.channel_list[0], channel_id=2, shares_rejected_by_reason=None))  # type: ignore[arg-type]
    cache = SnapshotCache(src)
    snap = await cache.refresh()
    assert cache.dropped_entries == 4
    assert set(snap.sv1_by_id) == set(range(1, len(HOSTILE) + 1)) | {100}
    assert [json.loads(c)["channel_id"] for c in snap.channels] == [1]
    assert snap.health.ok
    text = snap.metrics.body.decode()
    assert "tproxy_monitoring_dropped_entries_total 4.0" in text
    assert "broken" not in text
