"""A hung pool is detected and failed over (11.8), a restarted pool is reconnected within the
jittered backoff cap (10.5), and failed fail-back probes are logged, rate-limited (11.11).

The hung pool is the real thing: the dev pool in its own process, SIGSTOPped
(its TCP connections stay open, nothing is read or answered).
"""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devnet.pool import DevPool
from sv2.keys import encode_public_key
from sv2.messages import AnyMessage
from tests.helpers.hostile import mine_one
from tests.helpers.pool_process import free_port, pool_process
from tests.helpers.stack import AUTH_XONLY, pool_settings, proxy_settings
from tests.helpers.sv1_client import Sv1TestClient
from tests.helpers.waiting import until
from tproxy.config import ProxySettings, UpstreamSettings
from tproxy.runtime import Proxy
from tproxy.upstream.connection import UpstreamConnection
from tproxy.upstream.supervisor import UpstreamSupervisor

FAST = {"connect_timeout_s": 1.0, "handshake_timeout_s": 1.0, "upstream_silence_timeout_s": 1.0}


async def health(port: int) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as r:
        return r.status


# -- F: a pool that hangs ----------------------------------------------------------------------


async def test_a_stopped_pool_is_detected_and_the_proxy_fails_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fallback = DevPool(pool_settings())
    await fallback.start()
    with pool_process(tmp_path) as hung:
        proxy = Proxy(proxy_settings([hung.port, fallback.port], failback_interval_s=60, **FAST), share_log=False)
        await proxy.start()
        try:
            await until(lambda: proxy.supervisor.current_index == 0)
            c = await Sv1TestClient.connect(proxy.sv1_port)
            await c.handshake("farm.w1")
            await c.wait_job()
            assert await mine_one(c, en2_seed=1)
            await until(lambda: proxy.manager.shares_forwarded == 1)
            await until(lambda: proxy.supervisor.current is not None and proxy.supervisor.current.unanswered_shares == 0)
            hung.stop()
            jobs_before = len(c.jobs)
            assert await mine_one(c, en2_seed=2)  # the SV1 answer never waits for the pool
            await until(lambda: proxy.supervisor.current_index == 1)  # detected: failed over
            assert "pool silent" in proxy.supervisor.last_error or any(
                "pool silent" in r.getMessage() for r in caplog.records
            )
            await c.wait_job(after=jobs_before)  # fresh work from the fallback
            assert await mine_one(c, en2_seed=3)
            await until(lambda: fallback.total_accepted >= 1)
            await c.close()
        finally:
            await proxy.close()
    await fallback.close()


async def test_health_is_503_while_the_only_pool_is_hung(tmp_path: Path) -> None:
    with pool_process(tmp_path) as hung:
        settings = proxy_settings([hung.port], **FAST)
        settings.monitoring.enabled = True
        settings.monitoring.address = "127.0.0.1"
        settings.monitoring.port = 0
        settings.monitoring.refresh_interval_s = 0.1
        proxy = Proxy(settings, share_log=False)
        await proxy.start()
        try:
            port = proxy.monitoring_port
            assert port is not None
            c = await Sv1TestClient.connect(proxy.sv1_port)
            await c.handshake("farm.w1")
            await c.wait_job()
            await until(lambda: proxy.supervisor.status().connected)
            statuses: list[int] = []

            async def healthy() -> bool:
                statuses.append(await health(port))
                return statuses[-1] == 200

            async with asyncio.timeout(30):
                while not await healthy():
                    await asyncio.sleep(0.1)
            hung.stop()
            assert await mine_one(c, en2_seed=1)  # a share the stopped pool never answers
            await until(lambda: not proxy.supervisor.status().connected)
            async with asyncio.timeout(30):
                while await healthy():
                    await asyncio.sleep(0.1)
            assert statuses[-1] == 503
            assert "pool silent" in proxy.supervisor.last_error or proxy.supervisor.failures >= 1
            await c.close()
        finally:
            await proxy.close()


async def test_silence_needs_unanswered_shares_or_unread_writes() -> None:
    """A quiet pool with nothing owed is not silent; shares owed and no frame past the limit is."""
    pool = DevPool(pool_settings())
    await pool.start()
    try:
        settings = proxy_settings([pool.port], upstream_silence_timeout_s=5.0)
        up = await UpstreamConnection.connect(_endpoint(settings.upstreams[0]), settings.proxy)
        t = [1000.0]
        up._clock = lambda: t[0]
        up.last_frame_at = t[0]
        t[0] += 60
        assert up.silent_for() is None  # nothing owed: a quiet pool is fine
        up.unanswered_shares, up._oldest_unanswered_at = 2, t[0]
        t[0] += 4
        assert up.silent_for() is None
        t[0] += 2
        why = up.silent_for()
        assert why is not None and "pool silent for 6 s (2 shares unanswered)" in why
        up.silence_timeout_s = 0  # 0 turns the check off
        assert up.silent_for() is None
        up.close()
    finally:
        await pool.close()


def _endpoint(s: UpstreamSettings) -> Any:
    from tproxy.upstream.connection import Endpoint

    return Endpoint.of(s)


# -- G: reconnect soon after the pool is back, jittered ---------------------------------------


class _NoListener:
    async def on_upstream_up(self, up: UpstreamConnection) -> None:
        raise AssertionError("nothing listens on that port")

    def on_upstream_message(self, up: UpstreamConnection, msg: AnyMessage) -> None: ...

    def on_upstream_lost(self, up: UpstreamConnection, reason: str) -> None: ...


async def test_backoff_waits_double_to_the_cap_and_are_jittered() -> None:
    dead = UpstreamSettings(address="127.0.0.1", port=free_port(), authority_pubkey=encode_public_key(AUTH_XONLY))
    proxy = ProxySettings(reconnect_backoff_initial_s=0.5, reconnect_backoff_max_s=5.0, connect_timeout_s=1.0)
    waits: list[float] = []
    sup: UpstreamSupervisor

    async def sleep(d: float) -> None:
        waits.append(d)
        if len(waits) >= 12:
            sup._stopping = True
        await asyncio.sleep(0)

    sup = UpstreamSupervisor([dead], proxy, _NoListener(), sleep=sleep, rand=random.Random(7).random)
    await asyncio.wait_for(sup._run(), 30)
    steps = [min(0.5 * 2**i, 5.0) for i in range(len(waits))]
    assert all(step / 2 <= w <= step for w, step in zip(waits, steps, strict=True)), waits
    assert max(waits) <= 5.0
    assert len({round(w, 6) for w in waits[-6:]}) == 6  # jittered: no two proxies wait in lockstep
    assert sup.failures == 12


async def test_a_restarted_pool_is_reconnected_within_the_backoff_cap() -> None:
    pool = DevPool(pool_settings())
    await pool.start()
    port = pool.port
    settings = proxy_settings([port], reconnect_backoff_initial_s=0.2, reconnect_backoff_max_s=1.0)
    proxy = Proxy(settings, share_log=False)
    await proxy.start()
    try:
        c = await Sv1TestClient.connect(proxy.sv1_port)
        await c.handshake("farm.w1")
        await c.wait_job()
        await until(lambda: proxy.supervisor.connects == 1)
        await pool.close()
        await until(lambda: not proxy.supervisor.status().connected)
        await until(lambda: proxy.supervisor.failures >= 3)  # it kept trying while the pool was away
        jobs_before = len(c.jobs)
        pool = DevPool(pool_settings(port=port))
        await pool.start()
        await until(lambda: proxy.supervisor.connects == 2)
        assert all(w <= 1.0 for w in proxy.supervisor.backoff_waits)
        await c.wait_job(after=jobs_before)
        assert await mine_one(c, en2_seed=5)
        await until(lambda: pool.total_accepted == 1)
        await c.close()
    finally:
        await proxy.close()
        await pool.close()


# -- H: failed fail-back probes are logged -------------------------------------------------------


async def test_failed_failback_probes_are_logged_once_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tproxy.upstream")
    fallback = DevPool(pool_settings())
    await fallback.start()
    dead_port = free_port()
    proxy = Proxy(proxy_settings([dead_port, fallback.port], failback_interval_s=0.05), share_log=False)
    await proxy.start()
    try:
        await until(lambda: proxy.supervisor.current_index == 1)
        await until(lambda: proxy.supervisor.probe_failures >= 5)
    finally:
        await proxy.close()
        await fallback.close()
    lines = [r.getMessage() for r in caplog.records if "fail-back probe" in r.getMessage()]
    assert len(lines) == 1 and f"127.0.0.1:{dead_port}" in lines[0] and "connect failed" in lines[0], lines


async def test_repeated_connect_failures_are_logged_once_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tproxy.upstream")
    dead = UpstreamSettings(address="127.0.0.1", port=free_port(), authority_pubkey=encode_public_key(AUTH_XONLY))
    sup: UpstreamSupervisor

    async def sleep(d: float) -> None:
        if sup.failures >= 8:
            sup._stopping = True
        await asyncio.sleep(0)

    sup = UpstreamSupervisor([dead], ProxySettings(connect_timeout_s=1.0), _NoListener(), sleep=sleep)
    await asyncio.wait_for(sup._run(), 30)
    lines = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert sup.failures == 8 and len(lines) == 1, lines
