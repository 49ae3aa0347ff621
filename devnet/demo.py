"""``tproxy demo``: the dev pool, the proxy and N synthetic miners in one process.

Everything runs on 127.0.0.1 with real Noise crypto, real hashing and the
embedded ClickHouse engine, so a fresh machine can see the whole product
work end to end without a pool or a database. Prints a live per-worker table
and, at the end, a summary that checks the books: the pool accepted exactly
what the proxy forwarded, and the share log holds every share.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from devnet.miner import Dialect, SyntheticMiner
from devnet.pool import DevPool, PoolSettings
from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
from tproxy.config import Settings, UpstreamSettings
from tproxy.runtime import Proxy
from tproxy.shares.pipeline import WorkerStats

DEMO_DIFFICULTY = 2e-5  # ~86k hashes per share: a few shares a second per CPU miner
DEMO_HASHRATE_LIMIT = 60_000.0  # H/s per synthetic miner, so the event loop stays responsive


def _fmt_rate(h: float) -> str:
    for unit in ("H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s"):
        if h < 1000:
            return f"{h:7.1f} {unit}"
        h /= 1000
    return f"{h:7.1f} EH/s"


def _table(proxy: Proxy, pool: DevPool, started: float) -> str:
    now = time.time()
    rows = [
        f"--- t={now - started:5.1f}s  upstream={'up' if proxy.supervisor.current else 'DOWN'}  "
        f"miners={len(proxy.hub.miners)}  forwarded={proxy.manager.shares_forwarded}  "
        f"pool accepted={pool.total_accepted}",
        f"{'client':>6} {'worker':<16} {'diff':>10} {'accepted':>8} {'rejected':>8} {'pool ok':>7} {'hashrate':>12}",
    ]
    for s in sorted((m.session for m in proxy.hub.miners.values()), key=lambda s: s.client_id):
        c = s.counters
        rows.append(
            f"{s.client_id:>6} {s.worker_name[:16]:<16} {s.difficulty:>10.3g} {c.accepted:>8} {c.rejected:>8} "
            f"{c.pool_accepted:>7} {_fmt_rate(s.vardiff.estimated_hashrate(now)):>12}"
        )
    return "\n".join(rows)


@dataclass
class _Books:
    """What the summary compares: each side's count of the same shares."""

    submitted: int  # by the miners
    accepted: int  # by the proxy, as the miners saw it
    forwarded: int  # upstream, by the proxy
    pool_accepted: int
    written: int  # share rows in ClickHouse
    workers: list[WorkerStats]
    window_min: int  # the per-worker window the workers were read over
    mined_s: float  # how long the fleet mined: the summary's hashrate averages over this, like the live table

    @property
    def balanced(self) -> bool:
        return self.forwarded == self.pool_accepted and self.forwarded > 0 and self.written >= self.submitted


async def run_demo(
    *,
    miners: int,
    duration: float,
    aggregated: bool = True,
    data_dir: str | None = None,
    monitoring_port: int = 0,
) -> int:
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tproxy-demo-")
        data_dir = tmp.name
    pool, pubkey = await _start_pool(duration)
    proxy = Proxy(_proxy_settings(pool.port, pubkey, Path(data_dir), aggregated, monitoring_port))
    await proxy.start()
    print(
        f"dev pool on 127.0.0.1:{pool.port}, proxy SV1 on 127.0.0.1:{proxy.sv1_port}, "
        f"monitoring on http://127.0.0.1:{proxy.monitoring_port}/api/v1/global, "
        f"{'aggregated' if aggregated else 'non-aggregated'} mode, {miners} miners for {duration:g}s"
    )
    fleet = _fleet(miners, proxy.sv1_port)
    mining_started = time.time()
    health = await _mine(proxy, pool, fleet, duration)
    books = await _close_books(proxy, pool, fleet, duration, time.time() - mining_started)
    _print_summary(books, health)
    if tmp is not None:
        tmp.cleanup()
    return 0 if books.balanced else 1


async def _start_pool(duration: float) -> tuple[DevPool, str]:
    """A started dev pool with a fresh authority key, and that key's public half."""
    secret, xonly = generate_keypair()
    pool = DevPool(
        PoolSettings(
            port=0,
            authority_secret_key=SecretStr(encode_secret_key(secret)),
            fixed_difficulty=DEMO_DIFFICULTY,
            new_block_interval_s=max(10.0, duration / 3),
            share_batch_size=1,
        )
    )
    await pool.start()
    return pool, encode_public_key(xonly)


def _proxy_settings(pool_port: int, pubkey: str, base: Path, aggregated: bool, monitoring_port: int) -> Settings:
    # sections as mappings, as a config file gives them: Settings validates them
    sections: dict[str, Any] = {
        "downstream": {"address": "127.0.0.1", "port": 0},
        "difficulty": {
            "start_difficulty": DEMO_DIFFICULTY,
            "min_difficulty": DEMO_DIFFICULTY,
            "shares_per_minute": 30.0,
            "retarget_interval_s": 15.0,
        },
        "proxy": {"aggregate_channels": aggregated, "instance_id": "demo"},
        "monitoring": {"enabled": True, "port": monitoring_port, "refresh_interval_s": 2.0},
        "clickhouse": {"url": f"chdb://{base / 'shares.chdb'}", "spool_dir": str(base / "spool"), "batch_max_age_s": 1.0},
    }
    return Settings(
        upstreams=[UpstreamSettings(address="127.0.0.1", port=pool_port, authority_pubkey=pubkey, user_identity="demo")],
        **sections,
    )


def _fleet(miners: int, sv1_port: int) -> list[SyntheticMiner]:
    """``miners`` throttled CPU miners on the proxy, cycling through the firmware dialects."""
    dialects: list[Dialect] = ["cpuminer", "bitaxe", "whatsminer", "antminer"]
    return [
        SyntheticMiner(
            "127.0.0.1",
            sv1_port,
            worker_name=f"demo.worker{i + 1}",
            dialect=dialects[i % len(dialects)],
            hashrate_limit=DEMO_HASHRATE_LIMIT,
        )
        for i in range(miners)
    ]


async def _mine(proxy: Proxy, pool: DevPool, fleet: list[SyntheticMiner], duration: float) -> str:
    """Run the fleet for ``duration`` seconds printing the live table; returns the monitoring probe's result."""
    started = time.time()
    tasks = [asyncio.create_task(m.run(), name=f"demo-miner-{i}") for i, m in enumerate(fleet)]
    health = "not probed"
    try:
        while time.time() - started < duration:
            await asyncio.sleep(min(2.0, max(0.1, duration - (time.time() - started))))
            print(_table(proxy, pool, started), flush=True)
        health = await _probe_monitoring(proxy)
    finally:
        for m in fleet:
            await m.close()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
    return health


async def _close_books(
    proxy: Proxy, pool: DevPool, fleet: list[SyntheticMiner], duration: float, mined_s: float
) -> _Books:
    """Let the last shares land, read every side's counts, then close the proxy and the pool."""
    await _settle(proxy, pool)
    accepted = sum(m.accepted for m in fleet)
    forwarded = proxy.manager.shares_forwarded
    pool_accepted = pool.total_accepted
    workers: list[WorkerStats] = []
    window_min = 0
    if proxy.share_log is not None:
        await proxy.share_log.flush(10.0)
        # per-minute buckets: cover the whole run (it may straddle minute boundaries)
        window_min = int(duration // 60) + 2
        workers = await proxy.share_log.worker_hashrate(window_min)
    await proxy.close()
    await pool.close()
    written = proxy.share_log.stats().written if proxy.share_log else 0
    submitted = sum(m.submitted for m in fleet)
    return _Books(submitted, accepted, forwarded, pool_accepted, written, workers, window_min, mined_s)


def _print_summary(books: _Books, health: str) -> None:
    print("=== summary")
    print(f"shares submitted by miners : {books.submitted}")
    print(f"accepted by the proxy      : {books.accepted}")
    print(f"forwarded upstream         : {books.forwarded}")
    print(f"accepted by the pool       : {books.pool_accepted}")
    print(f"share rows in ClickHouse   : {books.written}")
    print(f"monitoring                 : {health}")
    if books.workers:
        print(
            f"per-worker, from the ClickHouse per-minute aggregate (last {books.window_min} min), "
            f"hashrate = accepted work over the {books.mined_s:.0f} s the miners mined:"
        )
        for w in sorted(books.workers, key=lambda w: w.worker_name):
            rate = w.accepted_difficulty * 2**32 / max(books.mined_s, 1.0)
            print(f"  {w.worker_name:<16} shares={w.shares:<5} accepted={w.accepted_shares:<5} hashrate={_fmt_rate(rate)}")
    print("books balance: forwarded == pool accepted, every share logged" if books.balanced else "WARNING: the books do not balance")


async def _settle(proxy: Proxy, pool: DevPool, timeout: float = 5.0) -> None:
    """Wait until forwarding has stopped and the pool has answered every forwarded share."""
    deadline = time.time() + timeout
    last = -1
    while time.time() < deadline:
        fwd = proxy.manager.shares_forwarded
        if fwd == last and pool.total_accepted + pool.total_rejected >= fwd:
            return
        last = fwd
        await asyncio.sleep(0.1)


async def _probe_monitoring(proxy: Proxy) -> str:
    """One real HTTP round trip to the proxy's own monitoring server."""
    import aiohttp

    port = proxy.monitoring_port
    if port is None:
        return "disabled"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/health") as r:
            health = await r.json()
            status = r.status
        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
            metrics = await r.text()
    clients = next((ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("sv1_clients ")), "?")
    return f"/health {status} {health.get('status')}, /metrics sv1_clients {clients}"
