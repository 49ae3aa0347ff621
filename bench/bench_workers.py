"""Benchmark: SV1 shares/s with one process (``proxy.workers = 1``) against N worker processes.

In one run, for each configuration (``--workers``, default ``1 2``):

1. starts the dev pool in a process of its own (bench/pool_process.py; in
   production the pool is remote: with it inside the proxy's parent, its work
   took a share of workers = 1's one process that workers = 2 spreads out;
   --pool-in-process puts it back there, for comparison) and, in a child
   process, the proxy: the single-process ``Proxy`` for 1,
   ``tproxy.workers.Cluster`` (parent + N workers on one SO_REUSEPORT port)
   otherwise; share log off, vardiff off, every nonce a valid share, about
   --forward-ratio of them forwarded upstream (as bench_proxy.py);
2. opens --connections SV1 connections from --generators load-generator
   processes (bench/sv1_loadgen.py: epoll, pre-rendered submit lines; every
   connection keeps one mining.submit in flight), and counts answered shares
   for --seconds;
3. prints shares/s per configuration, the ratio to the first one, the CPU the
   proxy processes used (the parent's process, the workers) and
   CPU-microseconds per share (the proxy's processes only), the pool process's CPU, the generators' CPU (cores, per share, kernel
   part), and the load average (the machine may be shared: on a loaded host
   the ratio says more about the neighbours than about us);
4. runs the same generators against sv1_loadgen's null server: their ceiling.

BENCH_CLUSTER=1 runs ``workers = 1`` as a cluster of one worker too (the cost of the pipe).

--hold N instead opens N connections against ``[proxy] workers = --hold-workers``
(default 3: one process holds at most RLIMIT_NOFILE hard - 200 connections, and
the hard limit is 20,000 here) from as many generator processes as their own
limits need, sends one submit on each and waits until every one is answered,
and prints the RSS per connection summed over the cluster's processes (parent
and workers: after minus before; the dev pool runs apart unless --pool-in-process), then the same
for the echo and null servers (one process each: at most one process's worth
of connections). It first prints the limits that cap N (RLIMIT_NOFILE,
ip_local_port_range, somaxconn, tcp_mem, file-max), a ``CAP`` line for one N exceeds.

Run: .venv/bin/python bench/bench_workers.py [--connections 1000] [--seconds 10] [--generators 1]
     .venv/bin/python bench/bench_workers.py --hold 50000 [--hold-workers 3]
Everything stays on 127.0.0.1. The generators share the machine's cores with the proxy: on a
2-core host what they use (printed) is not available to 2 workers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_proxy import MINER_DIFFICULTY  # noqa: E402
from pool_process import PoolProcess, pool_settings  # noqa: E402
from sv1_loadgen import FD_HEADROOM, Generators, limit_report, raise_nofile  # noqa: E402

LOADGEN = str(ROOT / "bench" / "sv1_loadgen.py")


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of ``pid`` and its reaped children (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` (the proxy or the workers' parent) and of its live children (the workers)."""
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
        write(line)  # as the workers' PipeSink: the reply at once, the record to the sink
        if record is not None:
            self.submit(record)


async def serve(
    workers: int, forward_ratio: float, max_connections: int, upstream: tuple[int, str] | None,
    share_log: str = "", durability: str = "sync",
) -> None:
    """The proxy upstream to ``upstream`` (port, authority public key), or to a dev pool in
    this process if None."""
    from devnet.pool import DevPool
    from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
    from tproxy.config import Settings
    from tproxy.runtime import Proxy, tune_gc
    from tproxy.workers import Cluster

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the bench's parent, which stops us
    if upstream is None:
        secret, xonly = generate_keypair()
        pool = DevPool(pool_settings(forward_ratio, encode_secret_key(secret)))
        await pool.start()
        upstream = (pool.port, encode_public_key(xonly))
    settings = Settings.model_validate({
        "upstreams": [{"address": "127.0.0.1", "port": upstream[0], "authority_pubkey": upstream[1]}],
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


# ---------------------------------------------------------------- driver


SHARE_LOG: dict[str, str] = {"dir": "", "durability": "sync"}  # --share-log, --durability


def start_server(
    workers: int, n: int, forward_ratio: float, pool: PoolProcess | None
) -> tuple[subprocess.Popen[str], int]:
    """The proxy (``workers`` processes) in a child, upstream to ``pool`` (or to a dev pool in
    the child if None); returns it and its SV1 port."""
    log_dir = tempfile.mkdtemp(prefix="bench-workers-", dir=SHARE_LOG["dir"]) if SHARE_LOG["dir"] else ""
    cmd = [sys.executable, __file__, "--serve", str(workers), "--forward-ratio", str(forward_ratio),
           "--max-connections", str(n + 100), "--share-log-dir", log_dir, "--durability", SHARE_LOG["durability"]]
    if pool is not None:
        cmd += ["--upstream", str(pool.port), pool.pubkey]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line:
        stop(server)
        raise RuntimeError("the proxy child exited early")
    time.sleep(2.0)  # let every worker open its upstream channel
    return server, int(json.loads(line)["port"])


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (an orphan's is reaped by init, maybe later)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop(p: subprocess.Popen[str]) -> None:
    """SIGTERM the server (SIGKILL after 10 s), then wait until its workers (which end when
    their parent goes away) are gone too: the dev pool process is stopped after them."""
    workers = tree_pids(p.pid)[1:]
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    deadline = time.monotonic() + 10
    while workers and time.monotonic() < deadline:
        workers = [w for w in workers if alive(w)]
        time.sleep(0.05)
    for w in workers:
        with contextlib.suppress(OSError):
            os.kill(w, signal.SIGKILL)


def run_case(
    workers: int, n: int, seconds: float, generators: int, forward_ratio: float, pool: PoolProcess | None
) -> dict[str, float]:
    server, port = start_server(workers, n, forward_ratio, pool)
    try:
        with Generators(port, n, generators) as gen:
            if gen.open != n:
                raise RuntimeError(f"workers={workers}: only {gen.open} of {n} connections subscribed and authorized")
            cpu0, pool0 = tree_cpu(server.pid), pool.cpu_seconds() if pool else 0.0
            r = gen.run("closed", seconds)
            cpu1, pool1 = tree_cpu(server.pid), pool.cpu_seconds() if pool else 0.0
        if r.rejected or r.lost:
            raise RuntimeError(f"workers={workers}: {r.rejected} shares rejected, {r.lost} connections lost")
        return {
            "shares_per_s": r.done / seconds, "parent_cpu_s": cpu1[0] - cpu0[0], "workers_cpu_s": cpu1[1] - cpu0[1],
            "pool_cpu_s": pool1 - pool0,
            "generators_cpu_s": r.cpu_s, "generators_sys_s": r.sys_s, "done": r.done,
            "p50_ms": r.percentile_ms(0.5), "p99_ms": r.percentile_ms(0.99),
        }
    finally:
        stop(server)


def run_null(n: int, seconds: float, generators: int) -> dict[str, float]:
    """The generator's ceiling: the same connections and processes against sv1_loadgen's null server."""
    server = subprocess.Popen([sys.executable, LOADGEN, "--serve-null", "0", "0", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(json.loads(server.stdout.readline())["port"])
        with Generators(port, n, generators, real=False) as gen:
            c0 = cpu_seconds(server.pid)
            r = gen.run("closed", seconds)
            c1 = cpu_seconds(server.pid)
        return {"lines_per_s": r.done / seconds, "generators_cpu_s": r.cpu_s, "server_cpu_s": c1 - c0, "done": r.done}
    finally:
        stop(server)


def pool_cpu(r: dict[str, float], seconds: float) -> str:
    """The dev pool process's CPU over the run (not part of the proxy's figures)."""
    return (f" pool process {r['pool_cpu_s'] / seconds:.2f} cores"
            f" ({1e6 * r['pool_cpu_s'] / max(1.0, r['done']):.1f} us/share, not in the proxy's),")


def print_comparison(args: argparse.Namespace) -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.connections} connections, "
          f"{args.generators} generator process(es) (sv1_loadgen.py), {args.seconds:g} s per run, dev pool "
          f"{'in the proxy parent' if args.pool_in_process else 'in its own process'}, load average {os.getloadavg()}")
    base = None
    s = args.seconds
    parent = "pool+parent" if args.pool_in_process else "parent"
    for w in args.workers:
        with pool_for(args) as pool:
            r = run_case(w, args.connections, s, args.generators, args.forward_ratio, pool)
        base = base or r["shares_per_s"]
        proxy_cpu = r["parent_cpu_s"] + r["workers_cpu_s"]
        print(f"  workers = {w}: {r['shares_per_s']:9,.0f} shares/s   x{r['shares_per_s'] / base:.2f}"
              f"   p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms"
              f"   CPU: {parent} {r['parent_cpu_s'] / s:.2f} cores, workers {r['workers_cpu_s'] / s:.2f}"
              f" ({1e6 * proxy_cpu / max(1.0, r['done']):.1f} CPU-us/share),"
              f"{'' if args.pool_in_process else pool_cpu(r, s)}"
              f" generators {r['generators_cpu_s'] / s:.2f} cores ({1e6 * r['generators_cpu_s'] / max(1.0, r['done']):.1f}"
              f" us/share, {r['generators_sys_s'] / max(r['generators_cpu_s'], 1e-9):.0%} kernel)"
              f"   load average {os.getloadavg()[0]:.2f}", flush=True)
    null = run_null(args.connections, s, args.generators)
    assert base is not None
    print(f"  generator ceiling (null server, same connections and processes): {null['lines_per_s']:,.0f} lines/s"
          f" = {null['lines_per_s'] / base:.2f} x workers = {args.workers[0]};"
          f" generators {null['generators_cpu_s'] / s:.2f} cores"
          f" ({1e6 * null['generators_cpu_s'] / max(1.0, null['done']):.1f} us/line), null server"
          f" {null['server_cpu_s'] / s:.2f} cores   load average {os.getloadavg()[0]:.2f}", flush=True)
    print("  (2 cores: the generators' CPU is taken from the proxy's; CPU-us/share is the figure that does not depend on it)")


# ---------------------------------------------------------------- --hold: many idle connections


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its live children (the cluster's parent and its workers)."""
    with contextlib.suppress(OSError):
        return [pid, *(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    return [pid]


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


def hold(server: subprocess.Popen[str], port: int, n: int, generators: int, real: bool) -> dict[str, Any]:
    """Open ``n`` connections, one submit on each (every one must be answered), and the
    RSS of the server's processes before and after."""
    pids = tree_pids(server.pid)
    before = {p: rss_kib(p) for p in pids}
    t0 = time.monotonic()
    with Generators(port, n, generators, real=real) as gen:
        opened, failed, setup_s = gen.open, gen.failed, time.monotonic() - t0
        r = gen.run("round")
        time.sleep(1.0)
        after = {p: rss_kib(p) for p in pids}
        fds = {p: open_fds(p) for p in pids}
    return {
        "opened": opened, "failed": failed, "setup_s": setup_s, "answered": r.done, "rejected": r.rejected,
        "lost": r.lost, "rss_before": before, "rss_after": after, "fds": fds,
        "kib_per_conn": (sum(after.values()) - sum(before.values())) / max(1, opened),
    }


def print_hold(name: str, n: int, h: dict[str, Any]) -> None:
    ok = h["opened"] == n and h["answered"] == n and not h["rejected"] and not h["lost"]
    print(f"  {name}: {h['opened']:,} of {n:,} connections subscribed+authorized in {h['setup_s']:.0f} s"
          f" ({h['failed']} failed); one submit each: {h['answered']:,} answered, {h['rejected']} rejected,"
          f" {h['lost']} lost -> {'ALL OK' if ok else 'NOT ALL'}")
    procs = ", ".join(
        f"{p}: {h['rss_before'][p] / 1024:.0f} -> {h['rss_after'][p] / 1024:.0f} MiB, {h['fds'][p]:,} fds"
        for p in h["rss_before"]
    )
    total = (sum(h["rss_after"].values()) - sum(h["rss_before"].values())) / 1024
    print(f"    RSS per connection {h['kib_per_conn']:.1f} KiB (+{total:,.0f} MiB over {len(h['rss_before'])}"
          f" process(es): {procs})")
    if len(h["rss_before"]) > 1:  # the first is the parent (with the dev pool if in-process), the others the workers
        parent = next(iter(h["rss_before"]))
        grew = {p: h["rss_after"][p] - h["rss_before"][p] for p in h["rss_before"]}
        workers = sum(v for p, v in grew.items() if p != parent)
        print(f"    of which the workers {workers / max(1, h['opened']):.1f} KiB/conn,"
              f" the parent {grew[parent] / max(1, h['opened']):.1f} KiB/conn")


def hold_mode(args: argparse.Namespace) -> None:
    """--hold N: N connections against ``[proxy] workers = --hold-workers``, then the
    echo and null servers (one process each) at as many as one process can hold."""
    n, w = args.hold, args.hold_workers
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_proc = hard - FD_HEADROOM
    k = max(args.generators, -(-n // per_proc))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, --hold {n:,} connections against workers = {w},"
          f" {k} generator process(es), load average {os.getloadavg()}")
    for line in limit_report(n, k, w):
        print("  " + line)
    with pool_for(args) as pool:
        server, port = start_server(w, n, args.forward_ratio, pool)
        try:
            print_hold(f"proxy, workers = {w}", n, hold(server, port, n, k, real=True))
        finally:
            stop(server)
    single = min(n, per_proc - 300)  # the echo server's own descriptors, listening socket
    if single < n:
        print(f"  echo / null servers: one process each, RLIMIT_NOFILE hard {hard}: cannot hold {n:,};"
              f" measured at {single:,}")
    for mode in ("echo", "null"):
        cmd = ([sys.executable, LOADGEN, "--serve-null", "0", "0", "0"] if mode == "null" else
               [sys.executable, str(ROOT / "bench" / "bench_proxy.py"), "--serve", "echo", "--max-connections", str(single + 100)])
        srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert srv.stdout is not None
            p = int(json.loads(srv.stdout.readline())["port"])
            time.sleep(0.5)
            print_hold(f"{mode} server", single, hold(srv, p, single, -(-single // per_proc), real=False))
        finally:
            stop(srv)
    print(f"  load average {os.getloadavg()[0]:.2f}")


def pool_for(args: argparse.Namespace) -> contextlib.AbstractContextManager[PoolProcess | None]:
    """The dev pool's own process for one configuration (stopped on exit), or None with --pool-in-process."""
    return contextlib.nullcontext() if args.pool_in_process else PoolProcess(args.forward_ratio)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--generators", type=int, default=1, help="load-generator processes (sv1_loadgen.py)")
    ap.add_argument("--hold", type=int, metavar="N", help="hold N connections instead (RSS per connection)")
    ap.add_argument("--hold-workers", type=int, default=3, help="[proxy] workers for --hold")
    ap.add_argument("--forward-ratio", type=float, default=0.1)
    ap.add_argument("--share-log", metavar="DIR", default="", help="share log on: chdb in a temporary directory under DIR")
    ap.add_argument("--durability", choices=["sync", "fast"], default="sync", help="with --share-log")
    ap.add_argument("--share-log-dir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--pool-in-process", action="store_true",
                    help="run the dev pool inside the proxy's (parent) process, as before; by default it runs in"
                         " a process of its own, as a remote pool would")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--upstream", nargs=2, metavar=("PORT", "PUBKEY"), help=argparse.SUPPRESS)
    ap.add_argument("--max-connections", type=int, default=10_000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    raise_nofile()
    SHARE_LOG.update(dir=args.share_log, durability=args.durability)
    if args.serve is not None:
        upstream = (int(args.upstream[0]), args.upstream[1]) if args.upstream else None
        asyncio.run(serve(args.serve, args.forward_ratio, args.max_connections, upstream, args.share_log_dir,
                          args.durability))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that every run's `finally` stops its children
    if args.hold:
        hold_mode(args)
    else:
        print_comparison(args)

if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # every run's `finally` has stopped its children by now
        sys.exit("interrupted")
