"""Diagnostic: what holds the proxy's event loop during the paced phase of bench_proxy.

Runs bench/bench_proxy.py's proxy child (same settings; the dev pool in the
same process, as ``bench_proxy --pool-in-process``, or with --pool-process in
its own, as bench_proxy does by default) with two probes, enabled only over the paced phase:

* every event-loop callback (``asyncio.events.Handle._run``, timers included)
  is timed in CPU time of the thread (``time.thread_time``: on a shared
  machine wall time mostly measures preemption by other processes); durations go into a histogram, and callbacks over --slow-ms are
  kept with a label (the task's coroutine, or the callback's name);
* every cyclic-GC collection is timed (CPU time) through ``gc.callbacks``
  (generation, duration, objects collected).

Then it drives the same load as bench_proxy (its ``open_conns`` and
``drive``): N connections, a short closed loop to warm up, and --seconds paced
at --rate shares/s; prints the generator-side p50/p99 next to the child's
histograms. The counts (callbacks over 1 ms, gen2 collections) are steadier
on a shared machine than the percentiles.

Run: .venv/bin/python bench/bench_tail.py [--connections 1000] [--seconds 5] [--tree DIR]
``--tree DIR`` runs another checkout's proxy (and its bench_proxy) with this probe,
e.g. ``--tree /work/main`` for a before/after in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import cProfile
import gc
import importlib
import json
import os
import pstats
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
BUCKETS_MS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0)


def load_bench(tree: Path) -> ModuleType:
    """bench_proxy of ``tree`` (it puts ``tree`` first on sys.path, so the proxy is that tree's)."""
    sys.path.insert(0, str(tree / "bench"))
    return importlib.import_module("bench_proxy")


class Probe:
    """Callback and GC timings, recorded only while ``on``."""

    def __init__(self, slow_s: float) -> None:
        self.on = False
        self.slow_s = slow_s
        self.hist = [0] * (len(BUCKETS_MS) + 1)
        self.total = 0
        self.busy_s = 0.0  # CPU time (this thread) inside callbacks
        self.wall_s = 0.0  # wall time inside callbacks (includes preemption by other processes)
        self.slow: list[tuple[float, str]] = []
        self.by_label: dict[str, list[float]] = {}  # label -> [callbacks, CPU s]
        self.gcs: list[tuple[int, float, int]] = []
        self._gc_t0 = 0.0
        self.proxy: Any = None  # the Proxy, for its forwarded-share counter

    def install(self) -> None:
        import asyncio.events as ev

        run = ev.Handle._run
        probe = self

        def timed_run(handle: Any) -> None:
            if not probe.on:
                return run(handle)
            fwd = probe.forwarded()
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return run(handle)
            finally:
                dt, wall = time.thread_time() - c0, time.perf_counter() - t0
                probe.record(dt, wall, handle, probe.forwarded() != fwd)

        ev.Handle._run = timed_run  # type: ignore[method-assign]
        gc.callbacks.append(self.on_gc)

    def forwarded(self) -> int:
        return self.proxy.manager.shares_forwarded if self.proxy is not None else 0

    def record(self, dt: float, wall: float, handle: Any, forwarded: bool) -> None:
        self.total += 1
        self.busy_s += dt
        self.wall_s += wall
        self.hist[bisect.bisect_left(BUCKETS_MS, dt * 1000)] += 1
        lab = label(handle) + (" (forwarded a share)" if forwarded else "")
        entry = self.by_label.setdefault(lab, [0, 0.0])
        entry[0] += 1
        entry[1] += dt
        if dt >= self.slow_s:
            self.slow.append((dt, lab))

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._gc_t0 = time.thread_time()
        else:
            self.gcs.append((info["generation"], time.thread_time() - self._gc_t0, info["collected"]))

    def report(self) -> dict[str, Any]:
        by_label: dict[str, list[float]] = {}
        for dt, lab in self.slow:
            by_label.setdefault(lab, []).append(dt)
        gens: dict[int, list[float]] = {}
        for gen, dt, _ in self.gcs:
            gens.setdefault(gen, []).append(dt)
        return {
            "callbacks": self.total,
            "busy_s": self.busy_s,
            "wall_s": self.wall_s,
            "hist": self.hist,
            "by_label": sorted(([lab, n, t] for lab, (n, t) in self.by_label.items()), key=lambda x: -x[2]),
            "slow": sorted(((lab, len(v), max(v), sum(v)) for lab, v in by_label.items()), key=lambda x: -x[3]),
            "gc": {g: (len(v), max(v), sum(v)) for g, v in sorted(gens.items())},
            "gc_counts_now": gc.get_count(),
            "gc_threshold": gc.get_threshold(),
            "gc_frozen": gc.get_freeze_count(),
            "gc_tracked": len(gc.get_objects()),
            "gc_young_types": collections.Counter(type(o).__name__ for o in gc.get_objects(0)).most_common(8),
        }


def label(handle: Any) -> str:
    cb = getattr(handle, "_callback", None)
    owner = getattr(cb, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return f"task {owner.get_name().split('-')[0]}:{getattr(coro, '__qualname__', coro)}"
    return getattr(cb, "__qualname__", None) or repr(cb)[:80]


def child(args: argparse.Namespace) -> None:
    bench = load_bench(Path(args.tree))
    bench.raise_nofile()
    probe = Probe(args.slow_ms / 1000)
    probe.install()

    import tproxy.runtime
    from tproxy.runtime import Proxy

    if args.gc_threshold:  # what tune_gc sets (it reads the module's constant when called)
        tproxy.runtime.GC_THRESHOLDS = tuple(args.gc_threshold)
    proxies: list[Any] = []
    init = Proxy.__init__

    def capture(self: Any, *a: Any, **kw: Any) -> None:
        init(self, *a, **kw)
        proxies.append(self)

    Proxy.__init__ = capture  # type: ignore[method-assign]
    tick_prof = cProfile.Profile(time.thread_time)
    tick = Proxy.tick

    def profiled_tick(self: Any) -> None:
        if probe.on and args.profile_tick:
            tick_prof.runcall(tick, self)
        else:
            tick(self)

    Proxy.tick = profiled_tick  # type: ignore[method-assign]
    forwarded0 = [0]

    def start(*_: object) -> None:
        forwarded0[0] = proxies[0].manager.shares_forwarded
        probe.proxy = proxies[0]
        probe.on = True

    def stop(*_: object) -> None:
        probe.on = False
        rep = probe.report() | {"forwarded": proxies[0].manager.shares_forwarded - forwarded0[0]}
        Path(args.report).write_text(json.dumps(rep))
        if args.profile_tick:
            pstats.Stats(tick_prof, stream=sys.stderr).strip_dirs().sort_stats("tottime").print_stats(12)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    with asyncio.Runner() as runner:
        if args.pool_process:
            runner.run(serve_proxy_apart(bench, args))
        else:
            runner.run(bench.serve_proxy(args.forward_ratio, args.max_connections, None))


def pool_settings(forward_ratio: float, secret: str) -> Any:
    """bench_proxy's dev pool (every share valid for the miner, ~forward_ratio of them for the pool)."""
    from devnet.pool import PoolSettings

    return PoolSettings(
        port=0, authority_secret_key=secret, fixed_difficulty=2.0**-32 / forward_ratio,
        new_block_interval_s=0, new_job_interval_s=0, share_batch_size=10,
    )


async def serve_pool(args: argparse.Namespace) -> None:
    """--pool-child: the dev pool alone, in its own process."""
    from devnet.pool import DevPool
    from sv2.keys import encode_public_key, encode_secret_key, generate_keypair

    secret, xonly = generate_keypair()
    pool = DevPool(pool_settings(args.forward_ratio, encode_secret_key(secret)))
    await pool.start()
    print(json.dumps({"port": pool.port, "pubkey": encode_public_key(xonly)}), flush=True)
    await asyncio.Event().wait()


async def serve_proxy_apart(bench: ModuleType, args: argparse.Namespace) -> None:
    """bench_proxy's proxy child with the same settings, but its dev pool in another process:
    what remains is the proxy's own work (the in-process pool is the bench's artifact)."""
    from tproxy.config import Settings, UpstreamSettings
    from tproxy.runtime import Proxy, tune_gc

    cmd = [sys.executable, __file__, "--pool-child", "--tree", args.tree, "--forward-ratio", str(args.forward_ratio)]
    pool = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=args.tree)
    try:
        assert pool.stdout is not None
        info = json.loads(pool.stdout.readline())
        settings = Settings(
            upstreams=[UpstreamSettings(address="127.0.0.1", port=info["port"], authority_pubkey=info["pubkey"])],
            downstream={"address": "127.0.0.1", "port": 0, "max_connections": args.max_connections, "idle_timeout_s": 600},
            difficulty={"start_difficulty": bench.MINER_DIFFICULTY, "min_difficulty": bench.MINER_DIFFICULTY,
                        "vardiff": False},
            proxy={"instance_id": "bench", "job_keepalive_interval_s": 0},
        )
        proxy = Proxy(settings, share_log=False)
        await proxy.start()
        tune_gc()
        print(json.dumps({"port": proxy.sv1_port}), flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)  # so that `finally` runs
        await stop.wait()
    finally:
        pool.terminate()
        pool.wait(30)


async def parent(args: argparse.Namespace) -> dict[str, Any]:
    bench = load_bench(Path(args.tree))
    report = Path(f"/tmp/bench-tail-{os.getpid()}.json")
    cmd = [sys.executable, __file__, "--child", "--tree", args.tree, "--report", str(report),
           "--forward-ratio", str(args.forward_ratio), "--max-connections", str(args.connections + 100),
           "--slow-ms", str(args.slow_ms)] + (["--profile-tick"] if args.profile_tick else []) + (["--pool-process"] if args.pool_process else [])
    cmd += ["--gc-threshold", *map(str, args.gc_threshold)] if args.gc_threshold else []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None if args.profile_tick else subprocess.DEVNULL, text=True, cwd=args.tree)
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        await asyncio.sleep(1.5)
        conns = await bench.open_conns(port, args.connections, echo=False)
        await bench.drive(conns, args.warmup)  # closed loop, as bench_proxy runs before its paced phase
        proc.send_signal(signal.SIGUSR1)
        done, lat = await bench.drive(conns, args.seconds, rate=args.rate)
        proc.send_signal(signal.SIGUSR2)
        for _ in range(50):
            if report.exists():
                break
            await asyncio.sleep(0.1)
        for c in conns:
            c.writer.close()
        out: dict[str, Any] = json.loads(report.read_text())
        out |= {"done": done, "p50_ms": bench.pct(lat, 0.5) * 1000, "p99_ms": bench.pct(lat, 0.99) * 1000,
                "p999_ms": bench.pct(lat, 0.999) * 1000}
        return out
    finally:
        proc.terminate()
        proc.wait(30)
        report.unlink(missing_ok=True)


def show(r: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"tree {args.tree}: {r['done']} shares paced over {args.seconds:g}s; latency p50 {r['p50_ms']:.2f} ms"
          f" p99 {r['p99_ms']:.2f} ms p99.9 {r['p999_ms']:.2f} ms; {r['forwarded']} forwarded upstream")
    edges = ["<" + str(b) for b in BUCKETS_MS] + [">=" + str(BUCKETS_MS[-1])]
    print(f"  loop callbacks: {r['callbacks']:,} ({r['busy_s']:.2f} s CPU, {r['wall_s']:.2f} s wall inside them);"
          " by CPU time in ms:")
    print("    " + "  ".join(f"{e}: {n}" for e, n in zip(edges, r["hist"], strict=True)))
    over1 = sum(r["hist"][BUCKETS_MS.index(1.0) + 1 :])
    print(f"  callbacks >= 1 ms: {over1}")
    print(f"  callbacks >= {args.slow_ms:g} ms by label (count, max ms, total ms):")
    for lab, n, mx, tot in r["slow"][:15]:
        print(f"    {n:6}  {mx * 1000:7.2f}  {tot * 1000:8.1f}  {lab}")
    print("  all callbacks by label (count, CPU ms, us each):")
    for lab, n, tot in r["by_label"][:8]:
        print(f"    {n:6}  {tot * 1000:8.1f}  {tot / n * 1e6:6.1f}  {lab}")
    print(f"  gc: threshold {r['gc_threshold']}, frozen {r['gc_frozen']:,}, tracked now {r['gc_tracked']:,}")
    print(f"    counts now {r['gc_counts_now']}; youngest generation by type: {r['gc_young_types']}")
    for gen, (n, mx, tot) in r["gc"].items():
        print(f"    gen{gen}: {n} collections, max {mx * 1000:.2f} ms, total {tot * 1000:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0, help="closed-loop seconds before the paced phase")
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--forward-ratio", type=float, default=0.1)
    ap.add_argument("--slow-ms", type=float, default=0.5, help="callbacks at least this long are listed by label")
    ap.add_argument("--tree", default=str(HERE.parent), help="the checkout whose proxy runs")
    ap.add_argument("--profile-tick", action="store_true", help="cProfile Proxy.tick in the paced phase (to stderr)")
    ap.add_argument("--pool-process", action="store_true",
                    help="run the dev pool in its own process (as bench_proxy does by default;"
                         " without it, inside the proxy's, as bench_proxy --pool-in-process)")
    ap.add_argument("--gc-threshold", type=int, nargs=3, help="GC thresholds for tune_gc (default: the tree's)")
    ap.add_argument("--pool-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--report", help=argparse.SUPPRESS)
    ap.add_argument("--max-connections", type=int, default=10_000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.tree = str(Path(args.tree).resolve())
    if args.pool_child:
        asyncio.run(serve_pool(args))
        return
    if args.child:
        child(args)
        return
    load_bench(Path(args.tree)).raise_nofile()
    show(asyncio.run(parent(args)), args)


if __name__ == "__main__":
    main()
