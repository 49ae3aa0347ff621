"""bench/pool_process.py, the benchmarks' dev pool in its own process: a real proxy forwards
shares to it over Noise on 127.0.0.1, and the counters it reports when stopped agree with the
proxy's (the check bench_proxy prints at exit); stopping it leaves no process behind."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.sv1_client import Sv1TestClient
from tproxy.config import Settings, UpstreamSettings
from tproxy.runtime import Proxy

REPO = Path(__file__).resolve().parents[2]
SHARES = 10  # the bench pool acknowledges shares in batches of 10 (share_batch_size)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pool_process", REPO / "bench" / "pool_process.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pool_process"] = module
    spec.loader.exec_module(module)
    return module


pool_process = _load()


async def until(predicate: Callable[[], bool], timeout: float = 30) -> None:
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout)


def proxy_settings(port: int, pubkey: str) -> Settings:
    every_hash = 1e-10  # as bench_proxy's miner difficulty: every nonce is a valid share
    return Settings(
        upstreams=[UpstreamSettings(address="127.0.0.1", port=port, authority_pubkey=pubkey)],
        downstream={"address": "127.0.0.1", "port": 0},
        difficulty={"start_difficulty": every_hash, "min_difficulty": every_hash, "vardiff": False},
        proxy={"instance_id": "bench-pool-test", "job_keepalive_interval_s": 0},
    )


async def test_the_pool_process_counts_the_shares_a_proxy_forwards_and_stops() -> None:
    with pool_process.PoolProcess(forward_ratio=1.0) as pool:  # every share meets the pool's target
        assert pool.cpu_seconds() > 0  # its own process: it imported and started the pool
        proxy = Proxy(proxy_settings(pool.port, pool.pubkey), share_log=False)
        await proxy.start()
        try:
            client = await Sv1TestClient.connect(proxy.sv1_port)
            await client.handshake("bench.w1")
            job = await client.wait_job()
            en2 = bytes(client.extranonce2_size)
            for nonce in range(SHARES):
                reply = await client.submit("bench.w1", job, en2, job.ntime, nonce)
                assert reply["result"] is True
            channels = proxy.manager.channels.values()
            await until(lambda: sum(ch.stats.shares_acknowledged for ch in channels) == SHARES)
            await client.close()
        finally:
            await proxy.close()
        counters = pool.stop()
    assert proxy.manager.shares_forwarded == SHARES
    assert counters == {"pool_accepted": SHARES, "pool_rejected": 0}
    assert pool.proc.returncode == 0  # it ended on SIGTERM by itself, not killed
    assert pool.stop() == counters  # a second stop (the context manager's) changes nothing


def test_a_pool_process_that_fails_to_start_is_reported() -> None:
    with pytest.raises(RuntimeError, match="exited before it listened"):
        pool_process.PoolProcess(forward_ratio=0.0)  # 2**-32 / 0: the child fails before it listens
