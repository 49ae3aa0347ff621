"""The dev SV2 pool used by tests, benchmarks, the demo and ``tproxy pool``.

Owns nothing itself; it re-exports the public API: ``PoolSettings`` and
``load_pool_settings`` (configuration), ``DevPool`` (the asyncio server with
its test hooks) and ``run_pool`` (the CLI entry point).
"""

from __future__ import annotations

from devnet.pool.channel import ChainTip, ChannelCounters, PoolChannel
from devnet.pool.server import DevPool, ShareEvent, run_pool
from devnet.pool.settings import PoolSettings, load_pool_settings

__all__ = [
    "ChainTip",
    "ChannelCounters",
    "DevPool",
    "PoolChannel",
    "PoolSettings",
    "ShareEvent",
    "load_pool_settings",
    "run_pool",
]
