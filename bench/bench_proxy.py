"""Benchmark: SV1 share throughput and latency through the proxy, against a bare echo server.

For each N in --connections (default 1000 and 5000):

1. starts the dev pool in a process of its own (bench/pool_process.py: in
   production the pool is remote, so its CPU and its event-loop callbacks are
   not the proxy's; --pool-in-process runs it inside the proxy's process, as
   before, for comparison) and the proxy in a child process (share log off,
   vardiff off, miner difficulty so low that every nonce is a valid share, pool
   difficulty such that about --forward-ratio of them are forwarded upstream),
2. opens N SV1 connections from --generators load-generator processes
   (bench/sv1_loadgen.py: plain sockets on epoll, pre-rendered submit lines),
   subscribes and authorizes them, records the server's RSS before and after
   (memory per connection),
3. runs a closed loop for --seconds: every connection keeps one mining.submit
   in flight with a fresh nonce; prints shares/s and p50/p99 submit->reply
   latency (1% histogram buckets), then a paced run at --paced-rate,
4. runs the same load generator against a bare asyncio JSON-line echo server
   (parse the line, answer result true) in a child process, and prints the
   ratio,
5. runs it once more against sv1_loadgen's null server (epoll, answers every
   line with a constant reply, no parsing): the generator's own ceiling, in
   the same run. The echo ratio means something only while this ceiling is
   well above the echo figure.

Every run reports the server's CPU per line (utime+stime from /proc/PID/stat
over the closed loop, divided by the lines answered) and the generator's
(its processes' getrusage over the run, per line, and the kernel's part of
it: on loopback the sender's write() also runs the receiver's TCP input, so
most of a cheap client's CPU is system time). On 2 cores the generator and the
server share the machine: the generator's CPU is taken from the server's.
The pool process's CPU over the closed loop is printed on a line of its own.
At exit the proxy's forwarded-share counter is printed next to the pool's
accepted-share counter: they must be equal.

Every child process (proxy, pool, echo and null servers, generators) is
stopped when a run ends, fails, or is interrupted (Ctrl-C, SIGTERM), and the
share log's temporary directories (--share-log fast/sync) are created and
removed by this process.

--profile FILE runs the proxy child under cProfile during the closed loop
only (connection set-up excluded) and prints the top entries by cumulative
and by own time; FILE keeps the raw stats (python -m pstats FILE).

Memory: RSS after opening N connections minus RSS before, per connection.
Beyond about 28,000 connections from one source address the kernel runs out
of ephemeral ports (and its search for a free one slows down well before), so
the generator spreads its connections over the source addresses 127.0.0.2,
127.0.0.3, ... (sv1_loadgen.CONNS_PER_SOURCE each). N is capped by the server's
RLIMIT_NOFILE (one process; the soft limit is raised to the hard one); a cap
is printed. bench_workers.py --hold measures beyond it, with worker processes.

The asyncio generator (open_conns, drive) stays here for bench_shares.py and
bench_monitoring.py, which run it inside their own event loop.

Run: .venv/bin/python bench/bench_proxy.py [--connections 1000 5000] [--seconds 10]
Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pool_process import PoolProcess, pool_settings  # noqa: E402
from sv1_loadgen import CONNS_PER_SOURCE, FD_HEADROOM, Generators, raise_nofile  # noqa: E402

MINER_DIFFICULTY = 1e-10  # target clamps to 2**256-1: every hash is a valid share


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- child processes


async def serve_proxy(
    forward_ratio: float, max_connections: int, profiler: cProfile.Profile | None, share_log: str = "off",
    upstream: tuple[int, str] | None = None, share_log_dir: str | None = None,
) -> None:
    """The proxy, upstream to the pool at ``upstream`` (port, authority public key), or, if
    None, to a dev pool in this process (whose accepted shares are then reported too)."""
    from devnet.pool import DevPool
    from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
    from tproxy.config import Settings, UpstreamSettings
    from tproxy.runtime import Proxy

    pool = None
    if upstream is None:
        secret, xonly = generate_keypair()
        pool = DevPool(pool_settings(forward_ratio, encode_secret_key(secret)))
        await pool.start()
        upstream = (pool.port, encode_public_key(xonly))
    settings = Settings(
        upstreams=[UpstreamSettings(address="127.0.0.1", port=upstream[0], authority_pubkey=upstream[1])],
        downstream={"address": "127.0.0.1", "port": 0, "max_connections": max_connections, "idle_timeout_s": 600},
        difficulty={"start_difficulty": MINER_DIFFICULTY, "min_difficulty": MINER_DIFFICULTY, "vardiff": False},
        proxy={"instance_id": "bench", "job_keepalive_interval_s": 0},
        clickhouse=share_log_settings(share_log, share_log_dir),
    )
    proxy = Proxy(settings, share_log=share_log != "off")
    await proxy.start()
    # As `tproxy run` does; BENCH_GC=default measures CPython's default thresholds instead.
    if os.environ.get("BENCH_GC") != "default":
        from tproxy.runtime import tune_gc

        tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if profiler is not None:  # the parent brackets the closed loop with SIGUSR1 / SIGUSR2
        loop.add_signal_handler(signal.SIGUSR1, profiler.enable)
        loop.add_signal_handler(signal.SIGUSR2, profiler.disable)
    print(json.dumps({"port": proxy.sv1_port}), flush=True)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)
        counters = {"forwarded": proxy.manager.shares_forwarded}
        if pool is not None:
            counters["pool_accepted"] = pool.total_accepted
        sys.stderr.write(json.dumps(counters) + "\n")
        sys.stderr.flush()


def share_log_settings(mode: str, directory: str | None) -> dict[str, object]:
    """[clickhouse] of the benchmarked proxy: embedded chdb and spool in ``directory``
    (made and removed by the parent, run_case)."""
    if mode == "off":
        return {}
    if directory is None:
        raise ValueError(f"share log {mode!r} needs a directory")
    import logging

    logging.getLogger("tproxy").setLevel(logging.ERROR)
    tmp = Path(directory)
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


# ---------------------------------------------------------------- in-process asyncio load generator
# bench_shares.py and bench_monitoring.py drive their proxy with these coroutines, in their own
# event loop; this benchmark uses the cheaper sv1_loadgen.py (epoll, separate processes).


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
            source = f"127.0.0.{2 + i // CONNS_PER_SOURCE}"  # ephemeral ports are per source address
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
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


def start_server(
    mode: str, n: int, forward_ratio: float, event_loop: str, share_log: str, profile: str | None,
    pool: PoolProcess | None = None, share_log_dir: str | None = None,
) -> subprocess.Popen[str]:
    """The measured server in a child process; the null one is the generator's own (sv1_loadgen).
    The proxy's upstream is ``pool``, or a dev pool inside the child if None."""
    if mode == "null":
        cmd = [sys.executable, str(ROOT / "bench" / "sv1_loadgen.py"), "--serve-null", "0", "0", "0"]
    else:
        cmd = [sys.executable, __file__, "--serve", mode, "--forward-ratio", str(forward_ratio),
               "--max-connections", str(n + 100), "--event-loop", event_loop, "--share-log", share_log]
        if profile:
            cmd += ["--profile", profile]
        if pool is not None:
            cmd += ["--upstream", str(pool.port), pool.pubkey]
        if share_log_dir:
            cmd += ["--share-log-dir", share_log_dir]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def stop_child(child: subprocess.Popen[str]) -> str:
    """SIGTERM (a profiled child writes its stats first), SIGKILL after 30 s; returns its stderr."""
    child.terminate()
    try:
        _, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        _, err = child.communicate()
    return err or ""


def run_case(
    mode: str, n: int, seconds: float, forward_ratio: float, paced_rate: float = 0.0, profile: str | None = None,
    event_loop: str = "asyncio", share_log: str = "off", generators: int = 1, pool_apart: bool = True,
) -> dict[str, float]:
    """One server under the generators; for the proxy, with its dev pool in a process of its own
    (``pool_apart``) or in the proxy's."""
    pool: PoolProcess | None = None
    child: subprocess.Popen[str] | None = None
    tmp = tempfile.mkdtemp(prefix=f"bench-proxy-{share_log}-") if mode == "proxy" and share_log != "off" else None
    try:
        if mode == "proxy" and pool_apart:
            pool = PoolProcess(forward_ratio)
        child = start_server(mode, n, forward_ratio, event_loop, share_log, profile, pool, tmp)
        return measure(child, pool, mode, n, seconds, paced_rate, bool(profile) and mode == "proxy", generators)
    finally:
        err = stop_child(child) if child is not None else ""
        counters = pool.stop() if pool is not None else {}
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if mode == "proxy":
            tail = [ln for ln in err.splitlines() if ln.startswith("{")]
            if tail:
                exit_counters = json.loads(tail[-1]) | counters
                agree = exit_counters.get("forwarded") == exit_counters.get("pool_accepted")
                print(f"    proxy counters at exit: {json.dumps(exit_counters)}{'' if agree else '  MISMATCH'}")


def measure(
    child: subprocess.Popen[str], pool: PoolProcess | None, mode: str, n: int, seconds: float, paced_rate: float,
    profiled: bool, generators: int,
) -> dict[str, float]:
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        raise RuntimeError(f"the {mode} server exited before it listened")
    port = json.loads(line)["port"]
    time.sleep(1.5 if mode == "proxy" else 0.5)  # let the upstream channel open
    rss0 = rss_kib(child.pid)
    with Generators(port, n, generators, real=(mode == "proxy")) as gen:
        if gen.open != n:
            raise RuntimeError(f"{mode}: only {gen.open} of {n} connections subscribed and authorized")
        time.sleep(0.5)
        rss1 = rss_kib(child.pid)
        if profiled:
            child.send_signal(signal.SIGUSR1)
        cpu0, pool0 = cpu_seconds(child.pid), pool.cpu_seconds() if pool else 0.0
        closed = gen.run("closed", seconds)
        cpu1, pool1 = cpu_seconds(child.pid), pool.cpu_seconds() if pool else 0.0
        if profiled:
            child.send_signal(signal.SIGUSR2)
        if closed.rejected or closed.lost:
            raise RuntimeError(f"{mode}: {closed.rejected} shares rejected, {closed.lost} connections lost")
        paced: dict[str, float] = {}
        if paced_rate and mode != "null":
            p = gen.run("paced", seconds, paced_rate)
            paced = {"paced_per_s": p.done / seconds, "paced_p50_ms": p.percentile_ms(0.5),
                     "paced_p99_ms": p.percentile_ms(0.99)}
    return paced | {
        "shares_per_s": closed.done / seconds,
        "p50_ms": closed.percentile_ms(0.50),
        "p99_ms": closed.percentile_ms(0.99),
        "kib_per_conn": (rss1 - rss0) / n,
        "rss_mib": rss1 / 1024,
        "cpu_us_per_share": (cpu1 - cpu0) / max(closed.done, 1) * 1e6,
        "server_cpu": (cpu1 - cpu0) / seconds,
        "generator_cpu": closed.cpu_s / seconds,
        "generator_us_per_line": closed.cpu_s / max(closed.done, 1) * 1e6,
        "generator_sys_share": closed.sys_s / max(closed.cpu_s, 1e-9),
        "pool_apart": 1.0 if pool else 0.0,
        "pool_us_per_share": (pool1 - pool0) / max(closed.done, 1) * 1e6,
        "pool_cpu": (pool1 - pool0) / seconds,
    }


def print_profile(path: str, top: int = 15) -> None:
    for key in ("cumulative", "tottime"):
        print(f"\n  proxy profile, top {top} by {key} (closed loop only; raw stats in {path}):")
        stats = pstats.Stats(path, stream=sys.stdout)
        stats.strip_dirs().sort_stats(key).print_stats(top)


def report(n: int, proxy: dict[str, float], echo: dict[str, float], null: dict[str, float], paced_rate: float) -> None:
    print(f"\nN = {n} SV1 connections")
    for name, r, unit in (("proxy", proxy, "shares/s"), ("echo", echo, "lines/s "), ("null", null, "lines/s ")):
        print(f"  {name:5} : {r['shares_per_s']:10,.0f} {unit}  p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms"
              f"   {r['kib_per_conn']:6.1f} KiB/conn (RSS {r['rss_mib']:.0f} MiB)"
              f"   server {r['cpu_us_per_share']:5.1f} us CPU/line ({r['server_cpu']:.0%} of a core),"
              f" generator {r['generator_us_per_line']:4.1f} us CPU/line ({r['generator_cpu']:.0%} of a core,"
              f" {r['generator_sys_share']:.0%} in the kernel)")
    print(f"  ratio proxy/echo throughput = {proxy['shares_per_s'] / echo['shares_per_s']:.2f}"
          "   (closed loop: latency here is mostly queueing, N in flight / throughput)")
    print(f"  generator ceiling (null server) = {null['shares_per_s']:,.0f} lines/s"
          f" = {null['shares_per_s'] / echo['shares_per_s']:.2f} x echo = {null['shares_per_s'] / proxy['shares_per_s']:.2f} x proxy;"
          f" the generator's CPU per line there: {null['generator_us_per_line']:.1f} us"
          f" (one core would drive {1e6 / null['generator_us_per_line']:,.0f} lines/s)")
    print(f"  CPU per share: proxy {proxy['cpu_us_per_share']:.1f} us, echo {echo['cpu_us_per_share']:.1f} us")
    if proxy.get("pool_apart"):
        print(f"  dev pool (own process, not in the proxy's figures): {proxy['pool_us_per_share']:.1f} us CPU"
              f" per proxy share ({proxy['pool_cpu']:.0%} of a core) over the closed loop")
    else:
        print("  dev pool: inside the proxy's process (--pool-in-process): its CPU is in the proxy's figures")
    if paced_rate:
        print(f"  paced at {paced_rate:,.0f}/s total: proxy p50 {proxy['paced_p50_ms']:.2f} ms p99 {proxy['paced_p99_ms']:.2f} ms"
              f" ({proxy['paced_per_s']:,.0f}/s); echo p50 {echo['paced_p50_ms']:.2f} ms p99 {echo['paced_p99_ms']:.2f} ms;"
              f" p99 ratio {proxy['paced_p99_ms'] / echo['paced_p99_ms']:.2f}")


def serve(args: argparse.Namespace) -> None:
    """The child process: the proxy or the echo server (the null one is sv1_loadgen's)."""
    factory = None
    if args.event_loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    upstream = (int(args.upstream[0]), args.upstream[1]) if args.upstream else None
    with asyncio.Runner(loop_factory=factory) as runner:
        if args.serve == "proxy":
            profiler = cProfile.Profile() if args.profile else None
            runner.run(serve_proxy(args.forward_ratio, args.max_connections, profiler, args.share_log[0],
                                   upstream, args.share_log_dir))
            if profiler is not None:
                profiler.dump_stats(args.profile)
        else:
            runner.run(serve_echo())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--forward-ratio", type=float, default=0.1, help="fraction of shares that meet the pool target")
    ap.add_argument("--paced-rate", type=float, default=2000.0, help="shares/s of the paced latency run (0 = skip)")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the proxy child during the closed loop; stats to FILE")
    ap.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio",
                    help="the proxy's and the echo server's event loop (the generator and the null server use epoll)")
    ap.add_argument("--generators", type=int, default=1, help="load-generator processes (sv1_loadgen.py)")
    ap.add_argument("--share-log", nargs="+", choices=["off", "fast", "sync"], default=["off"],
                    help="proxy runs: without the share log (default), and/or with it in a clickhouse.durability "
                         "mode (--share-log off fast sync compares the three against one echo/null baseline)")
    ap.add_argument("--pool-in-process", action="store_true",
                    help="run the dev pool inside the proxy's process (as before; its CPU then counts as the"
                         " proxy's); by default it runs in a process of its own, as a remote pool would")
    ap.add_argument("--serve", choices=["proxy", "echo"], help=argparse.SUPPRESS)
    ap.add_argument("--upstream", nargs=2, metavar=("PORT", "PUBKEY"), help=argparse.SUPPRESS)
    ap.add_argument("--share-log-dir", help=argparse.SUPPRESS)
    ap.add_argument("--max-connections", type=int, default=10_000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    limit = raise_nofile()
    if args.serve:
        serve(args)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that every run's `finally` stops its children
    where = "in the proxy's process" if args.pool_in_process else "in its own process"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.seconds:g}s per run, {args.event_loop} loop, "
          f"dev pool {where}, "
          f"~{args.forward_ratio:.0%} of shares forwarded upstream, {args.generators} generator process(es),"
          f" load average {os.getloadavg()[0]:.2f}")
    for wanted in args.connections:
        n = min(wanted, limit - FD_HEADROOM)
        if n < wanted:
            print(f"\nN = {wanted} capped to {n}: RLIMIT_NOFILE is {limit} here (the hard limit; raise it to measure {wanted})")
        loop, k = args.event_loop, args.generators
        proxies = {
            mode: run_case("proxy", n, args.seconds, args.forward_ratio, args.paced_rate, args.profile, loop, mode, k,
                           pool_apart=not args.pool_in_process)
            for mode in args.share_log
        }
        echo = run_case("echo", n, args.seconds, args.forward_ratio, args.paced_rate, event_loop=loop, generators=k)
        null = run_case("null", n, args.seconds, args.forward_ratio, event_loop=loop, generators=k)
        for mode, proxy in proxies.items():
            if len(proxies) > 1:
                print(f"\n-- share log: {mode}")
            report(n, proxy, echo, null, args.paced_rate)
        print(f"  load average now {os.getloadavg()[0]:.2f} (the machine is shared: read the ratios and CPU figures)")
        if args.profile:
            print_profile(args.profile)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # every run's `finally` has stopped its children by now
        sys.exit("interrupted")
