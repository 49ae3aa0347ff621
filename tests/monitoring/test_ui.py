"""The pages for people and the models behind the OpenAPI document, over real HTTP.

Covers ``monitoring.ui`` (dashboard at ``/`` for browsers, its assets, the
Swagger UI, which of them open without the token), ``monitoring.history``
(the hashrate ring buffer behind ``/api/v1/history``) and
``monitoring.models`` (the pydantic models parse every live response back to
the same JSON). The browser itself runs in test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel

from devnet.static_source import StaticSource
from monitoring import models
from monitoring.api import MonitoringServer
from monitoring.history import HashrateHistory
from monitoring.openapi import openapi_document
from monitoring.snapshot import SnapshotCache
from monitoring.ui import DASHBOARD_DIR, swagger_ui_dir, wants_html
from tests.helpers.browser import chromium
from tests.helpers.schema_check import ResponseChecker

DOC = openapi_document()
CHECKER = ResponseChecker(DOC)
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


@asynccontextmanager
async def serve(token: str | None = None) -> AsyncIterator[aiohttp.ClientSession]:
    cache = SnapshotCache(StaticSource(12, workers=5), refresh_interval=3600.0)
    await cache.start()
    server = MonitoringServer(cache, port=0, token=token)
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.url) as http:
            yield http
    finally:
        await server.close()
        await cache.close()


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("application/json;q=0.5, text/html", True),
        ("*/*", False),  # curl, aiohttp, scripts
        ("", False),
        ("application/json", False),
        ("text/html;q=0.5, application/json", False),
        ("text/html;q=0", False),
        ("text/html;q=oops", False),
    ],
)
def test_wants_html(accept: str, html: bool) -> None:
    assert wants_html(accept) is html


async def test_root_serves_dashboard_to_browsers_and_json_to_clients() -> None:
    async with serve() as http:
        async with http.get("/", headers={"Accept": BROWSER_ACCEPT}) as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            assert "Accept" in r.headers["Vary"]
            page = await r.text()
        assert '<script src="/dashboard/dashboard.js">' in page
        for accept in ("*/*", "application/json"):
            async with http.get("/", headers={"Accept": accept}) as r:
                assert r.status == 200 and r.content_type == "application/json"
                assert r.headers["Vary"] == "Accept"
                CHECKER.check("/", 200, await r.json())


async def test_assets_and_swagger_ui_are_served() -> None:
    async with serve() as http:
        for path, kind in [
            ("/dashboard/dashboard.js", "text/javascript"),
            ("/dashboard/dashboard.css", "text/css"),
            ("/dashboard/favicon.svg", "image/svg+xml"),
            ("/api-docs/favicon-32x32.png", "image/png"),
            ("/api-docs/", "text/html"),
            ("/api-docs/api-docs.js", "text/javascript"),
            ("/api-docs/swagger-ui-bundle.js", "text/javascript"),
            ("/api-docs/swagger-ui.css", "text/css"),
        ]:
            async with http.get(path) as r:
                assert r.status == 200, path
                assert r.content_type == kind, (path, r.content_type)
                assert await r.read()
        async with http.get("/api-docs", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/api-docs/"
        # only the listed files: no directory walk, no traversal, no other package file
        for path in ("/dashboard/index.html", "/dashboard/..%2fapi.py", "/api-docs/swagger-editor.js", "/api-docs/LICENSE"):
            async with http.get(path) as r:
                assert r.status == 404, path
                assert "error" in await r.json()


async def test_pages_are_open_and_data_needs_the_token() -> None:
    ok = {"Authorization": "Bearer s3cret"}
    async with serve(token="s3cret") as http:
        for path in ("/dashboard/dashboard.js", "/api-docs/", "/api-docs/swagger-ui-bundle.js", "/api-docs/api-docs.js"):
            async with http.get(path) as r:
                assert r.status == 200, path
        async with http.get("/", headers={"Accept": BROWSER_ACCEPT}) as r:
            assert r.status == 200 and r.content_type == "text/html"
        for path in ("/", "/api-docs/openapi.json", "/api/v1/history", "/api/v1/workers", "/dashboard/nope"):
            async with http.get(path) as r:
                assert r.status == 401, path
        async with http.get("/api/v1/history", headers=ok) as r:
            assert r.status == 200
            CHECKER.check("/api/v1/history", 200, await r.json())


def test_pages_load_nothing_from_elsewhere() -> None:
    # no CDN: every src/href of our pages is a path on this server
    for page in ("index.html", "api-docs.html"):
        html = (DASHBOARD_DIR / page).read_text()
        links = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert links, page
        for link in links:
            assert link.startswith("/") and not link.startswith("//"), (page, link)
    for script in ("dashboard.js", "api-docs.js"):
        # the SVG namespace is a name, not a fetch
        text = (DASHBOARD_DIR / script).read_text().replace('"http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text, script
    assert swagger_ui_dir() is not None  # swagger-ui-py is a dependency


def test_dashboard_fetches_only_documented_paths() -> None:
    js = (DASHBOARD_DIR / "dashboard.js").read_text()
    fetched = set(re.findall(r'"(/api/v1/[a-z0-9_/]+)"', js))
    assert fetched == {
        "/api/v1/health",
        "/api/v1/global",
        "/api/v1/server",
        "/api/v1/history",
        "/api/v1/server/channels",
        "/api/v1/workers",
        "/api/v1/sv1/clients",
    }
    assert fetched <= set(DOC["paths"])


# -- the history ring buffer ----------------------------------------------------------


def test_history_keeps_an_hour_of_samples_and_a_day_of_minute_means() -> None:
    h = HashrateHistory()
    t0 = 1_000_020.0 - 1_000_020.0 % 60  # a minute boundary
    # two days of one sample every 30 s: 100 H/s in the first half of each minute, 300 in the second
    for i in range(2 * 86400 // 30):
        h.record(t0 + 30 * i, 100.0 if i % 2 == 0 else 300.0)
    now = t0 + 30 * (2 * 86400 // 30 - 1)
    body = json.loads(h.body())
    CHECKER.check("/api/v1/history", 200, body)
    hour = body["hour"]
    assert hour[-1]["at"] == now
    assert all(now - s["at"] <= 3600 for s in hour)
    assert len(hour) == 3600 // 30 + 1
    day = body["day"]
    assert [s["at"] for s in day] == sorted(s["at"] for s in day)
    assert all(now - s["at"] < 86400 for s in day)
    assert len(day) == 86400 // 60  # 1439 whole minutes plus the current one: 24 h
    assert {s["hashrate"] for s in day} == {200.0}  # minute means
    assert day[-1]["at"] == now - 30  # the current minute (complete here)
    h.record(now + 30, 500.0)  # the first sample of a new minute
    day = json.loads(h.body())["day"]
    assert day[-1] == {"at": now + 30, "hashrate": 500.0}  # the current minute so far
    assert day[-2] == {"at": now - 30, "hashrate": 200.0}
    assert len(day) == 86400 // 60


def test_history_starts_empty_and_ignores_nonsense() -> None:
    h = HashrateHistory()
    assert json.loads(h.body()) == {"hour": [], "day": []}
    h.record(120.0, math.nan)
    h.record(121.0, -5.0)
    h.record(122.0, math.inf)
    body = json.loads(h.body())
    assert [s["hashrate"] for s in body["hour"]] == [0.0, 0.0, 0.0]
    assert body["day"] == [{"at": 120.0, "hashrate": 0.0}]


async def test_history_endpoint_grows_with_each_refresh() -> None:
    cache = SnapshotCache(StaticSource(3), refresh_interval=3600.0)
    await cache.start()
    try:
        first = json.loads(cache.snapshot.history)
        await cache.refresh()
        second = json.loads(cache.snapshot.history)
    finally:
        await cache.close()
    assert len(second["hour"]) == len(first["hour"]) + 1
    assert second["hour"][-1]["hashrate"] == cache.snapshot.sv1_hashrate_total > 0


# -- the models are the API's fields ---------------------------------------------------

_MODEL_OF: dict[str, type[BaseModel]] = {
    "/api/v1/health": models.HealthResponse,
    "/api/v1/global": models.GlobalInfo,
    "/api/v1/server": models.ServerResponse,
    "/api/v1/server/channels": models.ServerChannelsResponse,
    "/api/v1/sv1/clients?limit=3": models.Sv1ClientsResponse,
    "/api/v1/sv1/clients/1": models.Sv1ClientInfo,
    "/api/v1/workers?limit=3": models.WorkersResponse,
    "/api/v1/workers/farm.rig00001": models.WorkerInfo,
    "/api/v1/history": models.HistoryResponse,
    "/api/v1/workers/nope": models.ErrorResponse,
    "/api/v1/sv1/clients?limit=x": models.ErrorResponse,
    "/": models.IndexResponse,
}


async def test_models_parse_every_response_back_to_the_same_json() -> None:
    async with serve() as http:
        for path, model in _MODEL_OF.items():
            async with http.get(path) as r:
                body = await r.json()
            parsed = _strict(model).model_validate(body)
            assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == body, path


def _strict(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` refusing unknown top-level fields (the published models stay open to
    additions; nested objects are checked closed by the schema tests)."""
    return type(model.__name__, (model,), {"model_config": {**model.model_config, "extra": "forbid"}})


def test_every_schema_comes_from_a_model() -> None:
    names = {m.__name__ for m in models.RESPONSE_MODELS}
    assert set(DOC["components"]["schemas"]) == names
    for model in models.RESPONSE_MODELS:
        schema: dict[str, Any] = DOC["components"]["schemas"][model.__name__]
        fields = {f.alias or name for name, f in model.model_fields.items()}
        assert set(schema.get("properties", {})) == fields, model.__name__


# -- the browser helper: never a silent skip in CI --------------------------------------


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_chromium_fails_in_ci_and_skips_locally(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no chromium on PATH
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="chromium not installed"):
        chromium()
