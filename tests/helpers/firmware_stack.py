"""A dev pool and a proxy on 127.0.0.1 for the firmware tests, seen only through public surfaces.

Owns ``firmware_stack`` (start a ``DevPool`` and a ``tproxy.runtime.Proxy``
wired to it, close both on exit) and ``FirmwareStack``, whose counters come
from the proxy's monitoring source (upstream channel counters) and from the
pool, never from the proxy's internal classes (which are being renamed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from devnet.firmware import FirmwareClient
from devnet.pool import DevPool, PoolSettings
from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
from tests.helpers.waiting import until
from tproxy.config import (
    DifficultySettings,
    DownstreamSettings,
    ProxySettings,
    Settings,
    UpstreamSettings,
)
from tproxy.runtime import Proxy

AUTH_SECRET, AUTH_XONLY = generate_keypair()
POOL_DIFFICULTY = 1e-9  # far below every miner's: every share the proxy accepts is forwarded


@dataclass
class FirmwareStack:
    pool: DevPool
    proxy: Proxy

    def client(self, cls: type[FirmwareClient], **kw: Any) -> FirmwareClient:
        return cls("127.0.0.1", self.proxy.sv1_port, **kw)

    def _channels(self) -> list[Any]:
        return list(self.proxy.monitoring_source.channels())

    def forwarded(self) -> int:
        """Shares the proxy submitted to the pool."""
        return sum(ch.shares_submitted for ch in self._channels())

    def verdicted(self) -> int:
        """Forwarded shares the pool has answered (SubmitShares.Success counts + errors)."""
        return sum(ch.shares_acknowledged + ch.shares_rejected for ch in self._channels())

    async def settled(self, *clients: FirmwareClient) -> None:
        """Wait until every submit has its reply and every forwarded share its pool verdict."""
        def done() -> bool:
            fwd = self.forwarded()
            return (
                all(c.unanswered == 0 for c in clients)
                and self.pool.total_accepted + self.pool.total_rejected == fwd
                and self.verdicted() == fwd
            )

        await until(done)


def _settings(pool_port: int, difficulty: dict[str, Any]) -> Settings:
    return Settings(
        upstreams=[UpstreamSettings(
            address="127.0.0.1", port=pool_port, authority_pubkey=encode_public_key(AUTH_XONLY),
            user_identity="farm",
        )],
        downstream=DownstreamSettings(address="127.0.0.1", port=0),
        difficulty=DifficultySettings(**{"min_difficulty": 1e-9, "honour_suggest_difficulty": False, **difficulty}),
        proxy=ProxySettings(instance_id="firmware", job_keepalive_interval_s=0),
    )


@contextlib.asynccontextmanager
async def firmware_stack(*, pool_kw: dict[str, Any] | None = None, **difficulty: Any) -> AsyncIterator[FirmwareStack]:
    """Dev pool (batches of 10 plus a short ack timer) and proxy; ``difficulty`` = proxy difficulty settings."""
    pool = DevPool(PoolSettings(**{
        "port": 0, "authority_secret_key": encode_secret_key(AUTH_SECRET), "fixed_difficulty": POOL_DIFFICULTY,
        "share_batch_size": 10, "ack_interval_s": 0.3, "new_block_interval_s": 0, "new_job_interval_s": 0,
        **(pool_kw or {}),
    }))
    await pool.start()
    proxy = Proxy(_settings(pool.port, difficulty), share_log=False)
    try:
        await proxy.start()
        # the upstream channel opens once a miner connects; the pool must be reachable first
        await until(lambda: proxy.monitoring_source.upstream().connected)
        yield FirmwareStack(pool, proxy)
    finally:
        await proxy.close()
        await pool.close()
        await asyncio.sleep(0)
