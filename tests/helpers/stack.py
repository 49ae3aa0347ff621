"""A dev pool and a proxy on 127.0.0.1 for end-to-end tests: settings builders and ``running()``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from devnet.pool import DevPool, PoolSettings
from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
from tests.helpers.sv1_client import Sv1TestClient
from tproxy.config import Settings, UpstreamSettings
from tproxy.runtime import Proxy

DIFF = 1e-6  # ~4,300 hashes per share: fast in pure Python
AUTH_SECRET, AUTH_XONLY = generate_keypair()


def pool_settings(port: int = 0, **kw: object) -> PoolSettings:
    base: dict[str, object] = dict(
        port=port,
        authority_secret_key=encode_secret_key(AUTH_SECRET),
        fixed_difficulty=DIFF,
        share_batch_size=1,
        new_block_interval_s=0,
        new_job_interval_s=0,
    )
    base.update(kw)
    return PoolSettings(**base)  # type: ignore[arg-type]


def proxy_settings(
    pool_ports: list[int], *, aggregated: bool = True, honour_suggest: bool = True, **proxy_kw: object
) -> Settings:
    return Settings(
        upstreams=[
            UpstreamSettings(address="127.0.0.1", port=p, authority_pubkey=encode_public_key(AUTH_XONLY), user_identity="farm")
            for p in pool_ports
        ],
        downstream={"address": "127.0.0.1", "port": 0},
        difficulty={
            "start_difficulty": DIFF, "min_difficulty": 1e-8, "vardiff": False,
            "honour_suggest_difficulty": honour_suggest,
        },
        proxy={
            "aggregate_channels": aggregated,
            "instance_id": "e2e",
            "reconnect_backoff_initial_s": 0.05,
            "reconnect_backoff_max_s": 0.2,
            "failback_interval_s": 0.3,
            "job_keepalive_interval_s": 0,
            **proxy_kw,
        },
    )


@dataclass
class Stack:
    pool: DevPool
    proxy: Proxy

    async def client(self, worker: str = "farm.w1", *, configure: bool = True) -> Sv1TestClient:
        c = await Sv1TestClient.connect(self.proxy.sv1_port)
        await c.handshake(worker, configure=configure)
        await c.wait_job()
        return c

    async def settled(self) -> None:
        """Wait until forwarding has stopped and every forwarded share has the pool's verdict."""
        async def loop() -> None:
            stable = 0
            last = -1
            while stable < 5:
                fwd = self.proxy.manager.shares_forwarded
                done = self.pool_accepted() + self.pool_rejected() >= fwd
                stable = stable + 1 if (done and fwd == last) else 0
                last = fwd
                await asyncio.sleep(0.02)

        await asyncio.wait_for(loop(), 10)

    def pool_accepted(self) -> int:
        return self.pool.total_accepted

    def pool_rejected(self) -> int:
        return self.pool.total_rejected


@contextlib.asynccontextmanager
async def running(
    aggregated: bool = True,
    *,
    honour_suggest: bool = True,
    pool_kw: dict[str, object] | None = None,
    difficulty_kw: dict[str, object] | None = None,
    **proxy_kw: object,
) -> AsyncIterator[Stack]:
    """A dev pool and a proxy (no share log) on 127.0.0.1, closed on exit."""
    pool = DevPool(pool_settings(**(pool_kw or {})))
    await pool.start()
    settings = proxy_settings([pool.port], aggregated=aggregated, honour_suggest=honour_suggest, **proxy_kw)
    for key, value in (difficulty_kw or {}).items():
        setattr(settings.difficulty, key, value)
    proxy = Proxy(settings, share_log=False)
    await proxy.start()
    try:
        yield Stack(pool, proxy)
    finally:
        await proxy.close()
        await pool.close()
