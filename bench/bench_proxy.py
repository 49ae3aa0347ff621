"""Benchmark: SV1 share throughput and latency through the proxy, against a bare echo server.

For each N in --connections (default 1000 and 5000):

1. starts the dev pool and the proxy in a child process (vardiff off, miner
   difficulty so low that every nonce is a valid share, pool difficulty such
   that about --forward-ratio of them are forwarded upstream), once per
   --share-log mode: ``off`` (no share log), ``fast`` or ``sync`` (the share
   log on an embedded chdb in a temporary directory, with that
   ``clickhouse.durability``: in ``sync`` a share's reply waits for the
   journal's fdatasync),
2. opens N SV1 connections from this process, subscribes and authorizes them,
   records the proxy's RSS before and after (memory per connection),
3. runs a closed loop for --seconds: every connection keeps one mining.submit
   in flight with a fresh nonce; prints shares/s and p50/p99 submit->reply
   latency,
4. runs the same load generator against a bare asyncio JSON-line echo server
   (parse the line, answer result true) in a child process, and prints the
   ratio.

Run: .venv/bin/python bench/bench_proxy.py [--connections 1000 5000] [--seconds 10]
         [--share-log off fast sync]
Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MINER_DIFFICULTY = 1e-10  # target clamps to 2**256-1: every hash is a valid share


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- child processes


async def serve_proxy(forward_ratio: float, max_connections: int, share_log: str = "off") -> None:
    from devnet.pool import DevPool, PoolSettings
    from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
    from tproxy.config import Settings, UpstreamSettings
    from tproxy.runtime import Proxy

    secret, xonly = generate_keypair()
    # P(hash <= target(d)) = 2**-32 / d for uniform hashes
    pool_difficulty = 2.0**-32 / forward_ratio
    pool = DevPool(
        PoolSettings(
            port=0, authority_secret_key=encode_secret_key(secret), fixed_difficulty=pool_difficulty,
            new_block_interval_s=0, new_job_interval_s=0, share_batch_size=10,
        )
    )
    await pool.start()
    settings = Settings(
        upstreams=[UpstreamSettings(address="127.0.0.1", port=pool.port, authority_pubkey=encode_public_key(xonly))],
        downstream={"address": "127.0.0.1", "port": 0, "max_connections": max_connections, "idle_timeout_s": 600},
        difficulty={"start_difficulty": MINER_DIFFICULTY, "min_difficulty": MINER_DIFFICULTY, "vardiff": False},
        proxy={"instance_id": "bench", "job_keepalive_interval_s": 0},
        clickhouse=share_log_settings(share_log),
    )
    proxy = Proxy(settings, share_log=share_log != "off")
    await proxy.start()
    # As `tproxy run` does; BENCH_GC=default measures CPython's default thresholds instead.
    if os.environ.get("BENCH_GC") != "default":
        from tproxy.runtime import tune_gc

        tune_gc()
    print(json.dumps({"port": proxy.sv1_port}), flush=True)
    while True:
        await asyncio.sleep(1)
        sys.stderr.write(json.dumps({"forwarded": proxy.manager.shares_forwarded, "pool_accepted": pool.total_accepted}) + "\n")
        sys.stderr.flush()


def share_log_settings(mode: str) -> dict[str, object]:
    """[clickhouse] of the benchmarked proxy: embedded chdb and spool in a fresh directory."""
    if mode == "off":
        return {}
    import logging
    import tempfile

    logging.getLogger("tproxy").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-proxy-{mode}-"))
    return {"url": f"chdb://{tmp / 'db'}", "spool_dir": str(tmp / "spool"), "durability": mode}


async def serve_echo() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                req = json.loads(line)
                writer.write(json.dumps({"id": req.get("id"), "result": True, "error": None}).encode() + b"\n")
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    await asyncio.Event().wait()


# ---------------------------------------------------------------- load generator


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        self.reader, self.writer, self.index = reader, writer, index
        self.job_id = "0"
        self.ntime = "00000000"
        self.en2_size = 4
        self.nonce = 0  # never reused on this connection: a repeat would be a duplicate share

    async def call(self, req_id: int, method: str, params: list[object]) -> dict[str, object]:
        self.writer.write(json.dumps({"id": req_id, "method": method, "params": params}).encode() + b"\n")
        while True:
            msg = json.loads(await self.reader.readline())
            if msg.get("method") == "mining.notify":
                p = msg["params"]
                self.job_id, self.ntime = p[0], p[7]
            elif msg.get("id") == req_id:
                return msg


async def open_conns(port: int, n: int, echo: bool) -> list[Conn]:
    sem = asyncio.Semaphore(200)

    async def one(i: int) -> Conn:
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            c = Conn(r, w, i)
            sub = await c.call(1, "mining.subscribe", ["bench/1.0"])
            if not echo:
                c.en2_size = sub["result"][2]  # type: ignore[index]
            await c.call(2, "mining.authorize", [f"bench.w{i}", "x"])
            if not echo:
                while c.job_id == "0":  # the first notify follows authorize
                    msg = json.loads(await r.readline())
                    if msg.get("method") == "mining.notify":
                        c.job_id, c.ntime = msg["params"][0], msg["params"][7]
            return c

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def drive(conns: list[Conn], seconds: float, rate: float | None = None) -> tuple[int, list[float]]:
    """Closed loop (rate None: one submit in flight per connection, as fast as answered)
    or paced (every connection submits every len(conns)/rate seconds)."""
    latencies: list[float] = []
    done = 0
    stop_at = time.perf_counter() + seconds
    period = len(conns) / rate if rate else 0.0

    async def loop(c: Conn) -> None:
        nonlocal done
        en2 = c.index.to_bytes(c.en2_size, "big").hex()
        next_at = time.perf_counter() + period * (c.index / len(conns))
        while time.perf_counter() < stop_at:
            if period:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += period
            c.nonce += 1
            nonce = c.nonce
            line = (
                f'{{"id":4,"method":"mining.submit","params":["bench.w{c.index}","{c.job_id}",'
                f'"{en2}","{c.ntime}","{nonce:08x}"]}}\n'
            ).encode()
            t0 = time.perf_counter()
            c.writer.write(line)
            while True:
                raw = await c.reader.readline()
                if not raw:
                    return
                if b'"method"' in raw:  # a notify or set_difficulty arriving meanwhile
                    msg = json.loads(raw)
                    if msg.get("method") == "mining.notify":
                        c.job_id, c.ntime = msg["params"][0], msg["params"][7]
                    continue
                break
            latencies.append(time.perf_counter() - t0)
            resp = json.loads(raw)
            if resp.get("result") is not True:
                raise RuntimeError(f"share rejected: {resp}")
            done += 1

    await asyncio.gather(*(loop(c) for c in conns))
    return done, latencies


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_case(
    mode: str, n: int, seconds: float, forward_ratio: float, paced_rate: float = 0.0, share_log: str = "off"
) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--serve", mode, "--forward-ratio", str(forward_ratio), "--max-connections", str(n + 100),
           "--share-log", share_log]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout is not None
        port = json.loads(child.stdout.readline())["port"]
        await asyncio.sleep(0.5 if mode == "echo" else 1.5)  # let the upstream channel open
        rss0 = rss_kib(child.pid)
        conns = await open_conns(port, n, echo=(mode == "echo"))
        await asyncio.sleep(0.5)
        rss1 = rss_kib(child.pid)
        done, lat = await drive(conns, seconds)
        paced: dict[str, float] = {}
        if paced_rate:
            pdone, plat = await drive(conns, seconds, rate=paced_rate)
            paced = {"paced_per_s": pdone / seconds, "paced_p50_ms": pct(plat, 0.5) * 1000, "paced_p99_ms": pct(plat, 0.99) * 1000}
        for c in conns:
            c.writer.close()
        return paced | {
            "shares_per_s": done / seconds,
            "p50_ms": pct(lat, 0.50) * 1000,
            "p99_ms": pct(lat, 0.99) * 1000,
            "kib_per_conn": (rss1 - rss0) / n,
            "rss_mib": rss1 / 1024,
        }
    finally:
        child.terminate()
        with contextlib.suppress(Exception):
            child.wait(5)
        if mode == "proxy" and child.stderr is not None:
            tail = [ln for ln in child.stderr.read().splitlines() if ln.startswith("{")]
            if tail:
                print(f"    proxy counters at exit: {tail[-1]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--forward-ratio", type=float, default=0.1, help="fraction of shares that meet the pool target")
    ap.add_argument("--paced-rate", type=float, default=2000.0, help="shares/s of the paced latency run (0 = skip)")
    ap.add_argument("--share-log", nargs="+", choices=["off", "fast", "sync"], default=["off", "fast", "sync"],
                    help="proxy runs: without the share log, and with it in each clickhouse.durability mode")
    ap.add_argument("--serve", choices=["proxy", "echo"], help=argparse.SUPPRESS)
    ap.add_argument("--max-connections", type=int, default=10_000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    raise_nofile()
    if args.serve == "proxy":
        asyncio.run(serve_proxy(args.forward_ratio, args.max_connections, args.share_log[0]))
        return
    if args.serve == "echo":
        asyncio.run(serve_echo())
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.seconds:g}s per run, "
          f"~{args.forward_ratio:.0%} of shares forwarded upstream")
    for n in args.connections:
        runs = {mode: asyncio.run(run_case("proxy", n, args.seconds, args.forward_ratio, args.paced_rate, mode))
                for mode in args.share_log}
        echo = asyncio.run(run_case("echo", n, args.seconds, args.forward_ratio, args.paced_rate))
        print(f"\nN = {n} SV1 connections (proxy share log: off = none; fast / sync = clickhouse.durability)")
        for mode, proxy in runs.items():
            print(f"  proxy {mode:4}: {proxy['shares_per_s']:10,.0f} shares/s   p50 {proxy['p50_ms']:7.2f} ms   "
                  f"p99 {proxy['p99_ms']:7.2f} ms   {proxy['kib_per_conn']:6.1f} KiB/conn (RSS {proxy['rss_mib']:.0f} MiB)"
                  f"   ratio to echo {proxy['shares_per_s'] / echo['shares_per_s']:.2f}")
        print(f"  echo      : {echo['shares_per_s']:10,.0f} lines/s    p50 {echo['p50_ms']:7.2f} ms   p99 {echo['p99_ms']:7.2f} ms"
              f"   {echo['kib_per_conn']:6.1f} KiB/conn")
        print("  (closed loop: latency here is mostly queueing, N in flight / throughput)")
        if args.paced_rate:
            print(f"  paced at {args.paced_rate:,.0f}/s total:")
            for mode, proxy in runs.items():
                print(f"    proxy {mode:4}: p50 {proxy['paced_p50_ms']:6.2f} ms  p99 {proxy['paced_p99_ms']:6.2f} ms"
                      f"  ({proxy['paced_per_s']:,.0f}/s)")
            print(f"    echo      : p50 {echo['paced_p50_ms']:6.2f} ms  p99 {echo['paced_p99_ms']:6.2f} ms")
    _ = statistics


if __name__ == "__main__":
    main()
