"""Benchmark: SV1 shares/s with one process (``proxy.workers = 1``) against N worker processes.

In one run, for each configuration (``--workers``, default ``1 2``):

1. starts, in a child process, the dev pool and the proxy: the single-process
   ``Proxy`` for 1, ``tproxy.workers.Cluster`` (parent + N workers on one
   SO_REUSEPORT port) otherwise; share log off, vardiff off, every nonce a valid
   share, about --forward-ratio of them forwarded upstream (as bench_proxy.py);
2. opens --connections SV1 connections from --generators load-generator
   processes (the closed loop of bench_proxy.py: every connection keeps one
   mining.submit in flight), and counts answered shares for --seconds;
3. prints shares/s per configuration, the ratio to the first one, the CPU the
   proxy processes used (the pool's and the parent's process, the workers) and
   CPU-microseconds per share, and the load average (the machine may be shared:
   on a loaded host the ratio says more about the neighbours than about us).

BENCH_CLUSTER=1 runs ``workers = 1`` as a cluster of one worker too (the cost of the pipe).
--share-log DIR turns the share log on (chdb in a fresh directory under DIR, ``durability``
from --durability, default "sync"): with workers, the parent journals every row and the
workers hold each reply for its ack; the pool+parent CPU then includes chdb's inserts.

Run: .venv/bin/python bench/bench_workers.py [--connections 1000] [--seconds 10] [--generators 1]
Everything stays on 127.0.0.1. The generators share the machine's cores with the proxy: on a
2-core host they take a large part of one core, which caps what 2 workers can show.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_proxy import MINER_DIFFICULTY, drive, open_conns, raise_nofile  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of ``pid`` and its reaped children (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` (the pool and the proxy or the workers' parent) and of its live children."""
    children = 0.0
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                children += cpu_seconds(int(child))
    return cpu_seconds(pid), children


# ---------------------------------------------------------------- child: pool + proxy


class DiscardSink:
    """A share sink that drops the records (a worker builds them too, and sends them to its parent)."""

    def submit(self, record: object) -> None:
        pass

    def submit_pool_verdict(self, record: object) -> None:
        pass

    def answer(self, miner: object, write: Callable[[bytes], None], line: bytes, record: object) -> None:
        write(line)


async def serve(workers: int, forward_ratio: float, max_connections: int, share_log: str, durability: str) -> None:
    from devnet.pool import DevPool, PoolSettings
    from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
    from tproxy.config import Settings
    from tproxy.runtime import Proxy, tune_gc
    from tproxy.workers import Cluster

    secret, xonly = generate_keypair()
    pool = DevPool(
        PoolSettings.model_validate({
            "port": 0, "authority_secret_key": encode_secret_key(secret), "fixed_difficulty": 2.0**-32 / forward_ratio,
            "new_block_interval_s": 0, "new_job_interval_s": 0, "share_batch_size": 10,
        })
    )
    await pool.start()
    settings = Settings.model_validate({
        "upstreams": [{"address": "127.0.0.1", "port": pool.port, "authority_pubkey": encode_public_key(xonly)}],
        "downstream": {"address": "127.0.0.1", "port": 0, "max_connections": max_connections, "idle_timeout_s": 600},
        "difficulty": {"start_difficulty": MINER_DIFFICULTY, "min_difficulty": MINER_DIFFICULTY, "vardiff": False},
        "proxy": {"instance_id": "bench", "job_keepalive_interval_s": 0, "workers": workers},
        "clickhouse": {"url": f"chdb://{share_log}/db", "spool_dir": f"{share_log}/spool", "durability": durability}
        if share_log else {},
    })
    cluster = workers > 1 or os.environ.get("BENCH_CLUSTER") == "1"
    on = bool(share_log)
    proxy: Proxy | Cluster = Cluster(settings, share_log=on) if cluster else Proxy(settings, share_log=on)
    if isinstance(proxy, Proxy) and not on:
        proxy.hub.share_sink = DiscardSink()  # records are built in both modes, as with a share log
    await proxy.start()
    tune_gc()
    print(json.dumps({"port": proxy.sv1_port}), flush=True)
    await asyncio.Event().wait()


# ---------------------------------------------------------------- child: load generator


async def generate(port: int, n: int, seconds: float) -> None:
    """Open ``n`` connections, say so, wait for a line on stdin, drive them, print the count."""
    conns = await open_conns(port, n, echo=False)
    print(json.dumps({"open": len(conns)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    done, _ = await drive(conns, seconds)
    print(json.dumps({"done": done}), flush=True)
    for c in conns:
        c.writer.close()


# ---------------------------------------------------------------- driver


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


def _line(p: subprocess.Popen[str]) -> dict[str, int]:
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line:
        raise RuntimeError(f"child {p.args!r} exited early")
    out: dict[str, int] = json.loads(line)
    return out


def run_case(workers: int, n: int, seconds: float, generators: int, forward_ratio: float,
             share_log: str | None = None, durability: str = "sync") -> dict[str, float]:
    log_dir = tempfile.mkdtemp(prefix="bench-workers-", dir=share_log) if share_log else ""
    server = _child("--serve", str(workers), "--forward-ratio", str(forward_ratio), "--max-connections", str(n + 100),
                    "--share-log-dir", log_dir, "--durability", durability)
    gens: list[subprocess.Popen[str]] = []
    try:
        port = _line(server)["port"]
        time.sleep(2.0)  # let every worker open its upstream channel
        per = [n // generators + (1 if i < n % generators else 0) for i in range(generators)]
        gens = [_child("--generate", str(port), str(k), "--seconds", str(seconds)) for k in per]
        for g in gens:
            _line(g)
        cpu0, gcpu0 = tree_cpu(server.pid), sum(cpu_seconds(g.pid) for g in gens)
        for g in gens:
            assert g.stdin is not None
            g.stdin.write("go\n")
            g.stdin.flush()
        done = sum(_line(g)["done"] for g in gens)
        cpu1, gcpu1 = tree_cpu(server.pid), sum(cpu_seconds(g.pid) for g in gens)
        return {
            "shares_per_s": done / seconds, "parent_cpu_s": cpu1[0] - cpu0[0], "workers_cpu_s": cpu1[1] - cpu0[1],
            "generators_cpu_s": gcpu1 - gcpu0,
        }
    finally:
        for p in [*gens, server]:
            p.terminate()
            with contextlib.suppress(Exception):
                p.wait(10)
        if log_dir:
            shutil.rmtree(log_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--generators", type=int, default=1, help="load-generator processes")
    ap.add_argument("--forward-ratio", type=float, default=0.1)
    ap.add_argument("--share-log", metavar="DIR", help="share log on: chdb in a temporary directory under DIR")
    ap.add_argument("--durability", choices=["sync", "fast"], default="sync", help="with --share-log")
    ap.add_argument("--share-log-dir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--generate", type=int, nargs=2, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--max-connections", type=int, default=10_000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    raise_nofile()
    if args.serve is not None:
        asyncio.run(serve(args.serve, args.forward_ratio, args.max_connections, args.share_log_dir, args.durability))
        return
    if args.generate is not None:
        asyncio.run(generate(args.generate[0], args.generate[1], args.seconds))
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.connections} connections, "
          f"{args.generators} generator process(es), {args.seconds:g} s per run, load average {os.getloadavg()}, "
          f"share log {'off' if not args.share_log else 'chdb, durability ' + args.durability}")
    base = None
    for w in args.workers:
        r = run_case(w, args.connections, args.seconds, args.generators, args.forward_ratio, args.share_log,
                     args.durability)
        base = base or r["shares_per_s"]
        print(f"  workers = {w}: {r['shares_per_s']:9,.0f} shares/s   x{r['shares_per_s'] / base:.2f}"
              f"   CPU: pool+parent {r['parent_cpu_s'] / args.seconds:.2f} cores, workers {r['workers_cpu_s'] / args.seconds:.2f}"
              f" ({1e6 * (r['parent_cpu_s'] + r['workers_cpu_s']) / max(1.0, r['shares_per_s'] * args.seconds):.0f} CPU-us/share),"
              f" generators {r['generators_cpu_s'] / args.seconds:.2f}"
              f"   load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
