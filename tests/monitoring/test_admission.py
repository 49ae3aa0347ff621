"""Authentication before rate limiting: an unauthenticated flood cannot spend the API budget.

Before the fix, every request was charged to one shared bucket after the
token check had answered it, so a client with the right token got 429 on
73 of 76 requests during a flood of requests without one.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp

from devnet.static_source import StaticSource
from monitoring.api import RateLimits
from tests.helpers.monitoring_http import running

TOKEN = "s3cret"


async def test_unauthenticated_flood_does_not_starve_the_authenticated_client() -> None:
    # A small API budget: the flood alone (hundreds of requests a second) would empty it many times over.
    limits = RateLimits(api_rate=20.0, api_burst=20.0, max_wait_s=0.5, unauth_rate=5.0, unauth_burst=5.0)
    async with running(StaticSource(10), token=TOKEN, limits=limits) as server:
        flood: Counter[int] = Counter()
        authed: Counter[int] = Counter()
        done = asyncio.Event()

        async def flooder(http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
            while not done.is_set():
                async with http.get("/api/v1/global", headers=headers) as r:
                    await r.read()
                    flood[r.status] += 1

        async def client(http: aiohttp.ClientSession) -> None:
            for _ in range(40):  # at most 10 requests/s: half the API rate
                async with http.get("/api/v1/global", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    await r.read()
                    authed[r.status] += 1
                await asyncio.sleep(0.1)
            done.set()

        async with aiohttp.ClientSession(base_url=server.url) as http:
            bad = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}]
            tasks = [asyncio.create_task(flooder(http, bad[i % 3])) for i in range(12)]
            await client(http)
            await asyncio.gather(*tasks)
        assert authed == Counter({200: 40})
        assert set(flood) == {401, 429}
        assert sum(flood.values()) > 2 * 40  # the flood really outnumbered the client


async def test_unauthenticated_bucket_answers_401_then_429() -> None:
    limits = RateLimits(unauth_rate=0.01, unauth_burst=5.0)
    async with running(StaticSource(3), token=TOKEN, limits=limits) as server, aiohttp.ClientSession(base_url=server.url) as http:
        statuses = []
        for _ in range(12):
            async with http.get("/metrics") as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                else:
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert set(await r.json()) == {"error"}
        assert statuses == [401] * 5 + [429] * 7
        # the authenticated budget and the open health path are untouched
        async with http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
        async with http.get("/health") as r:
            assert r.status == 200


async def test_without_a_token_every_request_uses_the_api_bucket() -> None:
    limits = RateLimits(unauth_rate=0.01, unauth_burst=1.0)
    async with running(StaticSource(3), limits=limits) as server, aiohttp.ClientSession(base_url=server.url) as http:
        for _ in range(5):
            async with http.get("/api/v1/global") as r:
                assert r.status == 200
