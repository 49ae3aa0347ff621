"""The dashboard and the Swagger UI in a real headless browser (Debian's chromium).

One stack for the module, all on 127.0.0.1: the dev pool, the proxy with
monitoring on (no share log: the dashboard must draw without a database)
and three synthetic miners with different user agents. Chromium loads the
pages from the proxy's monitoring port while the stack runs on this test's
event loop, runs their scripts (which poll the JSON API), and the tests read
the resulting DOM. A screenshot of the dashboard is kept in the test
artefacts directory (see ``tests.helpers.browser.artifacts_dir``).

Without chromium these tests skip with the reason; in CI they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser

import aiohttp
import pytest
import pytest_asyncio

from devnet.miner import Dialect, SyntheticMiner
from devnet.pool import DevPool, PoolSettings
from devnet.static_source import StaticSource
from monitoring.api import MonitoringServer
from monitoring.snapshot import SnapshotCache
from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
from tests.helpers.browser import artifacts_dir, chromium, dump_dom, screenshot
from tproxy.config import MonitoringSettings, Settings, UpstreamSettings
from tproxy.runtime import Proxy

pytestmark = pytest.mark.asyncio(loop_scope="module")

DIFF = 1e-6  # ~4,300 hashes per share: fast in pure Python
HASHRATE = 60_000.0  # per miner
MINERS: tuple[tuple[str, Dialect, str], ...] = (
    ("farm.cpu1", "cpuminer", "cpuminer/2.5.1"),
    ("farm.axe1", "bitaxe", "bitaxe/BM1370/v2.4"),
    ("farm.ws1", "whatsminer", "whatsminer/v1.1"),
)


@dataclass
class Stack:
    pool: DevPool
    proxy: Proxy
    miners: list[SyntheticMiner]
    url: str


def _settings(pool_port: int, pubkey: str) -> Settings:
    upstream = UpstreamSettings(address="127.0.0.1", port=pool_port, authority_pubkey=pubkey, user_identity="farm")
    return Settings.model_validate(
        {
            "upstreams": [upstream],
            "downstream": {"address": "127.0.0.1", "port": 0},
            # vardiff off, one difficulty for every dialect; a short share interval lets the
            # hashrate estimate appear within seconds
            "difficulty": {
                "start_difficulty": DIFF,
                "min_difficulty": 1e-8,
                "vardiff": False,
                "honour_suggest_difficulty": False,
                "shares_per_minute": 600.0,
            },
            "proxy": {"instance_id": "browser", "job_keepalive_interval_s": 0},
            "monitoring": MonitoringSettings(enabled=True, address="127.0.0.1", port=0, refresh_interval_s=0.5),
        }
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    chromium()  # skip (or fail in CI) before starting anything
    secret, xonly = generate_keypair()
    pool = DevPool(
        PoolSettings.model_validate(
            dict(
                port=0,
                authority_secret_key=encode_secret_key(secret),
                fixed_difficulty=DIFF,
                share_batch_size=1,
                new_block_interval_s=0,
                new_job_interval_s=0,
            )
        )
    )
    await pool.start()
    proxy = Proxy(_settings(pool.port, encode_public_key(xonly)), share_log=False)
    miners: list[SyntheticMiner] = []
    try:
        await proxy.start()
        assert proxy.monitoring_port
        for name, dialect, agent in MINERS:
            m = SyntheticMiner(
                "127.0.0.1", proxy.sv1_port, worker_name=name, dialect=dialect, hashrate_limit=HASHRATE, user_agent=agent
            )
            m.start()
            miners.append(m)
        st = Stack(pool, proxy, miners, f"http://127.0.0.1:{proxy.monitoring_port}")
        await _settled(st)
        yield st
    finally:
        await asyncio.gather(*(m.close() for m in miners), return_exceptions=True)
        await proxy.close()
        await pool.close()


async def _settled(st: Stack) -> None:
    """Every worker is listed with a hashrate estimate (the page then has something to show)."""
    async with aiohttp.ClientSession(base_url=st.url) as http:

        async def workers() -> dict[str, float | None]:
            async with http.get("/api/v1/workers") as r:
                body = await r.json()
            return {w["worker_name"]: w["hashrate"] for w in body["items"]}

        seen: dict[str, float | None] = {}

        async def poll() -> None:
            while True:
                seen.update(await workers())
                if all(seen.get(name) for name, _, _ in MINERS):
                    return
                await asyncio.sleep(0.2)

        async with asyncio.timeout(60):  # hang guard on a loaded machine, not asserted
            await poll()


class _Dom(HTMLParser):
    """The few things the tests read from a dumped DOM: elements by id and the table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs_by_id: dict[str, dict[str, str | None]] = {}
        self.text_by_id: dict[str, str] = {}
        self.rows: list[list[str]] = []
        self._open_ids: list[tuple[str, str]] = []  # (tag, id) of elements being read
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.attrs_by_id[str(a["id"])] = a
            self._open_ids.append((tag, str(a["id"])))
            self.text_by_id[str(a["id"])] = ""
        if tag == "tr" and "data-worker" in a:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        for _tag, i in self._open_ids:
            self.text_by_id[i] += data
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> _Dom:
    dom = _Dom()
    dom.feed(html)
    return dom


_RATE = re.compile(r"^(\d+(?:\.\d+)?) (H|kH|MH|GH|TH|PH|EH)/s$")


async def test_dashboard_shows_workers_and_hashrate(stack: Stack) -> None:
    html = await dump_dom(stack.url + "/")
    dom = parse(html)
    # the page's script ran its polls: every worker has a row, with its state and agent
    rows = {r[0]: r for r in dom.rows}
    assert set(rows) == {name for name, _, _ in MINERS}, html[-3000:]
    for name, _dialect, agent in MINERS:
        row = rows[name]
        assert row[1] == "mining", row
        assert _RATE.match(row[2]) and float(_RATE.match(row[2]).group(1)) > 0, row  # type: ignore[union-attr]
        assert row[3] == "1.00e-6", row  # difficulty from the client's target
        assert int(row[5].replace(",", "")) > 0, row  # accepted shares
        assert row[7] == agent, row
    farm = dom.attrs_by_id["farm-hashrate"]
    assert float(str(farm["data-value"])) > 0
    assert _RATE.match(dom.text_by_id["farm-hashrate"].strip()), dom.text_by_id["farm-hashrate"]
    assert dom.text_by_id["upstream-state"].strip() == "connected"
    assert "127.0.0.1:" in dom.text_by_id["upstream-address"]
    assert dom.text_by_id["health"].strip() == "healthy"
    assert "accepted" in dom.text_by_id["shares"]
    assert "polyline" in html  # the history chart has a line
    assert "hidden" in dom.attrs_by_id["error"]  # no failed update shown


async def test_dashboard_screenshot(stack: Stack) -> None:
    path = await screenshot(stack.url + "/", artifacts_dir() / "dashboard.png")
    print(f"dashboard screenshot: {path}")
    assert path.stat().st_size > 10_000  # a rendered page, not an empty frame


async def test_swagger_ui_renders_the_document(stack: Stack) -> None:
    html = await dump_dom(stack.url + "/api-docs/", budget_ms=6000)
    # swagger-ui rendered an operation block for each path of the document
    for path in ("/api/v1/workers", "/api/v1/history", "/api/v1/sv1/clients/{client_id}"):
        assert f'data-path="{path}"' in html, path
    assert "tproxy Monitoring API" in html
    path = await screenshot(stack.url + "/api-docs/", artifacts_dir() / "api-docs.png", budget_ms=6000)
    print(f"Swagger UI screenshot: {path}")


@contextlib.asynccontextmanager
async def _static_server(token: str) -> AsyncIterator[str]:
    cache = SnapshotCache(StaticSource(5), refresh_interval=3600.0)
    await cache.start()
    server = MonitoringServer(cache, port=0, token=token)
    await server.start()
    try:
        yield server.url
    finally:
        await server.close()
        await cache.close()


async def test_dashboard_behind_a_token_asks_for_it() -> None:
    chromium()
    async with _static_server("s3cret") as url:
        dom = parse(await dump_dom(url + "/"))
    # the page loaded without the token, its fetches got 401: it shows the token form, no data
    assert "hidden" not in dom.attrs_by_id["token-form"]
    assert dom.rows == []
    assert dom.attrs_by_id["farm-hashrate"]["data-value"] == "0"
