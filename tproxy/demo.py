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
from pathlib import Path

from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
from tproxy.config import Settings, UpstreamSettings
from tproxy.miner import SyntheticMiner
from tproxy.pool import DevPool, PoolSettings
from tproxy.runtime import Proxy

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
        f"miners={len(proxy.bridge.sessions)}  forwarded={proxy.bridge.shares_forwarded}  "
        f"pool accepted={pool.total_accepted}",
        f"{'client':>6} {'worker':<16} {'diff':>10} {'accepted':>8} {'rejected':>8} {'pool ok':>7} {'hashrate':>12}",
    ]
    for s in sorted(proxy.bridge.sessions.values(), key=lambda s: s.client_id):
        c = s.counters
        rows.append(
            f"{s.client_id:>6} {s.worker_name[:16]:<16} {s.difficulty:>10.3g} {c.accepted:>8} {c.rejected:>8} "
            f"{c.pool_accepted:>7} {_fmt_rate(s.vardiff.estimated_hashrate(now)):>12}"
        )
    return "\n".join(rows)


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
    base = Path(data_dir)
    secret, xonly = generate_keypair()
    pool = DevPool(
        PoolSettings(
            port=0,
            authority_secret_key=encode_secret_key(secret),
            fixed_difficulty=DEMO_DIFFICULTY,
            new_block_interval_s=max(10.0, duration / 3),
            share_batch_size=1,
        )
    )
    await pool.start()
    settings = Settings(
        upstreams=[UpstreamSettings(address="127.0.0.1", port=pool.port, authority_pubkey=encode_public_key(xonly), user_identity="demo")],
        downstream={"address": "127.0.0.1", "port": 0},
        difficulty={
            "start_difficulty": DEMO_DIFFICULTY,
            "min_difficulty": DEMO_DIFFICULTY,
            "shares_per_minute": 30.0,
            "retarget_interval_s": 15.0,
        },
        proxy={"aggregate_channels": aggregated, "instance_id": "demo"},
        monitoring={"enabled": True, "port": monitoring_port, "refresh_interval_s": 2.0},
        clickhouse={"url": f"chdb://{base / 'shares.chdb'}", "spool_dir": str(base / "spool"), "batch_max_age_s": 1.0},
    )
    proxy = Proxy(settings)
    await proxy.start()
    print(
        f"dev pool on 127.0.0.1:{pool.port}, proxy SV1 on 127.0.0.1:{proxy.sv1_port}, "
        f"monitoring on http://127.0.0.1:{proxy.monitoring_port}/api/v1/global, "
        f"{'aggregated' if aggregated else 'non-aggregated'} mode, {miners} miners for {duration:g}s"
    )
    dialects = ["cpuminer", "bitaxe", "whatsminer", "antminer"]
    fleet = [
        SyntheticMiner(
            "127.0.0.1",
            proxy.sv1_port,
            worker_name=f"demo.worker{i + 1}",
            dialect=dialects[i % len(dialects)],
            hashrate_limit=DEMO_HASHRATE_LIMIT,
        )
        for i in range(miners)
    ]
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
    await _settle(proxy, pool)
    accepted = sum(m.accepted for m in fleet)
    forwarded = proxy.bridge.shares_forwarded
    pool_accepted = pool.total_accepted
    workers = []
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
    print("=== summary")
    print(f"shares submitted by miners : {submitted}")
    print(f"accepted by the proxy      : {accepted}")
    print(f"forwarded upstream         : {forwarded}")
    print(f"accepted by the pool       : {pool_accepted}")
    print(f"share rows in ClickHouse   : {written}")
    print(f"monitoring                 : {health}")
    if workers:
        print(f"per-worker, last {window_min} min, from the ClickHouse per-minute aggregate (hashrate averaged over that window):")
        for w in sorted(workers, key=lambda w: w.worker_name):
            print(f"  {w.worker_name:<16} shares={w.shares:<5} accepted={w.accepted_shares:<5} hashrate={_fmt_rate(w.hashrate)}")
    ok = forwarded == pool_accepted and forwarded > 0 and written >= submitted
    print("books balance: forwarded == pool accepted, every share logged" if ok else "WARNING: the books do not balance")
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


async def _settle(proxy: Proxy, pool: DevPool, timeout: float = 5.0) -> None:
    """Wait until forwarding has stopped and the pool has answered every forwarded share."""
    deadline = time.time() + timeout
    last = -1
    while time.time() < deadline:
        fwd = proxy.bridge.shares_forwarded
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
    clients = next((ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("sv1_clients_total")), "?")
    return f"/health {status} {health.get('status')}, /metrics sv1_clients_total {clients}"
