"""Benchmark: does hammering the monitoring API slow the share path? (issue #5)

Section 1, THE REAL PROXY (the default, ``--section proxy``): the dev pool and
the proxy (monitoring on, share log on an embedded chdb engine in a temporary
directory) run in a child process; this process opens ``--connections`` SV1
connections with bench/bench_proxy.py's load generator and, in alternating
phases, measures

* closed loop: every connection keeps one ``mining.submit`` in flight;
  shares/s and p50/p99 submit->reply latency (queueing dominates the latency);
* paced: ``--paced-rate`` shares/s in total; p50/p99 latency of a proxy that
  is not saturated, which is what a farm sees;

once with the API idle and once while a *separate process* runs
``--concurrency`` (16) HTTP clients hammering ``/metrics`` (gzip, as
Prometheus asks) and ``/api/v1/sv1/clients`` (random 100-item pages). It
prints both, their ratio, the proxy process's CPU use, and the requests/s the
monitoring served, with the 429s of its admission control counted as such.
With ``--limits both`` (the default) it runs once with the production
admission control and once with it off (the worst case it protects against).

Every miner share is valid (difficulty 1e-10) and about ``--forward-ratio`` of
them are forwarded to the pool, as in bench_proxy. The snapshot refreshes every
``--refresh`` seconds (1 s: several builds in every phase, so idle and
hammered phases carry the same build load).

Section 2, STAND-IN (``--section stand-in``): the earlier measurement, kept for
its 10,000-client snapshot: the API served in this process from a synthetic
source, with a 1 ms timer (latency) and a saturated sha256d loop (throughput)
standing in for the share path. It isolates the API's cost from the proxy's.

Section 3, STALL (``--section stall``): how long one snapshot build of
``--clients`` synthetic clients holds the event loop: the production build
(sliced, 1 ms budget) next to an unsliced baseline in the same run, each with
its longest slice and the worst lateness of a 1 ms timer task running beside
it. (The tests check the slicing structurally; the milliseconds live here.)

Run from the repository root: ``.venv/bin/python bench/bench_monitoring.py``
(``--section all`` for both; ``--json`` for one machine-readable line).
Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "bench") not in sys.path:
    sys.path.insert(0, str(REPO / "bench"))

import aiohttp  # noqa: E402
import bench_proxy  # noqa: E402  (the SV1 load generator: open_conns, drive, pct)

from devnet.static_source import StaticSource  # noqa: E402
from monitoring.api import MonitoringServer, RateLimits  # noqa: E402
from monitoring.snapshot import Snapshot, SnapshotCache  # noqa: E402

HAMMER_PATHS = ("/metrics", "/api/v1/sv1/clients")


# == SECTION 2: STAND-IN share path (the API in this process, synthetic source) =========


@dataclass
class WorkloadResult:
    value: float  # the headline figure (higher is better unless lower_is_better)
    unit: str
    detail: dict[str, float] = field(default_factory=dict)


class ShareWorkload(Protocol):
    name: str
    lower_is_better: bool

    async def run(self, duration: float) -> WorkloadResult: ...


class TimerLatencyStandIn:
    """STAND-IN: how late a 1 ms timer on the proxy's loop fires."""

    name = "latency stand-in (1 ms timer lateness)"
    lower_is_better = True

    async def run(self, duration: float) -> WorkloadResult:
        period = 0.001
        late: list[float] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        while loop.time() < end:
            due = loop.time() + period
            await asyncio.sleep(period)
            late.append(max(0.0, loop.time() - due))
        late.sort()
        ms = [x * 1000 for x in late]
        p50 = statistics.median(ms)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        return WorkloadResult(p99, "ms p99", {"p50_ms": p50, "p99_ms": p99, "max_ms": ms[-1], "samples": len(ms)})


class ShareCpuStandIn:
    """STAND-IN: shares/s of a saturated loop doing a share's hashing and bookkeeping."""

    name = "throughput stand-in (sha256d shares/s, loop saturated)"
    lower_is_better = False

    async def run(self, duration: float) -> WorkloadResult:
        header = bytearray(os.urandom(80))
        counters: dict[str, int] = {}
        best = b"\xff" * 32
        shares = 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + duration
        while loop.time() < end:
            header[76:80] = (shares & 0xFFFFFFFF).to_bytes(4, "little")
            h = hashlib.sha256(hashlib.sha256(header).digest()).digest()[::-1]
            if h < best:
                best = h
            worker = f"w{shares & 1023}"
            counters[worker] = counters.get(worker, 0) + 1
            shares += 1
            await asyncio.sleep(0)  # one share per loop turn, like one socket read
        elapsed = loop.time() - start
        return WorkloadResult(shares / elapsed, "shares/s", {"shares": shares, "seconds": elapsed})


def workloads() -> list[ShareWorkload]:
    return [TimerLatencyStandIn(), ShareCpuStandIn()]


# -- the hammer (runs in a separate process) ----------------------------------------


async def hammer(url: str, duration: float, concurrency: int, token: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    counts = dict.fromkeys(HAMMER_PATHS, 0)
    nbytes = dict.fromkeys(HAMMER_PATHS, 0)
    errors = 0
    refused = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    # No decompression: the byte counts are what crossed the wire, and the hammer
    # spends its CPU on asking, not on unpacking.
    async with aiohttp.ClientSession(
        base_url=url, connector=connector, headers=headers, auto_decompress=False
    ) as http:
        async with http.get("/api/v1/global") as r:
            total = (await r.json())["sv1_clients"]["total_clients"]
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        end = loop.time() + duration

        async def client(k: int) -> None:
            nonlocal errors, refused
            rnd = random.Random(k)
            i = k
            while loop.time() < end:
                path = HAMMER_PATHS[i % 2]
                i += 1
                query = f"?offset={rnd.randrange(max(1, total))}&limit=100" if path != "/metrics" else ""
                try:
                    async with http.get(path + query) as r:
                        body = await r.read()
                        if r.status == 429:  # admission control said no: back off like a client should
                            refused += 1
                            await asyncio.sleep(0.05)
                            continue
                        if r.status != 200:
                            errors += 1
                            continue
                except aiohttp.ClientError:
                    errors += 1
                    continue
                counts[path] += 1
                nbytes[path] += len(body)

        t0 = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        "seconds": elapsed, "counts": counts, "bytes": nbytes, "errors": errors, "refused": refused,
        "cpu": time.process_time() / elapsed,  # the hammer's own CPU use (cores), for the CPU budget
    }


async def run_hammered(
    workload: ShareWorkload, url: str, args: argparse.Namespace
) -> tuple[WorkloadResult, dict[str, Any]]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--hammer", url, "--duration", str(args.duration)]
    cmd += ["--concurrency", str(args.concurrency)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, cwd=str(REPO))
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"hammer process did not start: {line!r}")
    result = await workload.run(args.duration)
    out, _ = await proc.communicate()
    return result, json.loads(out.decode().strip().splitlines()[-1])


# -- section 2 driver -------------------------------------------------------------------


async def _phase(
    workload: ShareWorkload, cache: SnapshotCache, url: str | None, args: argparse.Namespace
) -> tuple[WorkloadResult, dict[str, Any] | None, Snapshot]:
    """One measured phase with exactly one snapshot build in it (started 0.5 s in),
    so idle and hammered phases carry the same build load."""

    async def build_once() -> Snapshot:
        await asyncio.sleep(min(0.5, args.duration / 4))
        return await cache.refresh()

    builder = asyncio.create_task(build_once(), name="bench-snapshot-build")
    if url is None:
        result, hammer_result = await workload.run(args.duration), None
    else:
        result, hammer_result = await run_hammered(workload, url, args)
    return result, hammer_result, await builder


class _GcPauses:
    """Longest pause of CPython's cyclic GC while installed (it stalls the loop too)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.full = 0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._t0)
            self.full += info["generation"] == 2


async def bench_stand_in(args: argparse.Namespace) -> dict[str, Any]:
    source = StaticSource(args.clients)
    # No background timer: each phase triggers one build itself (see _phase).
    cache = SnapshotCache(source, refresh_interval=3600.0)
    await cache.start()
    limits = None if args.unlimited else RateLimits()
    server = MonitoringServer(cache, port=0, limits=limits)
    await server.start()
    snap = cache.snapshot
    builds: list[Snapshot] = []
    gc_pauses = _GcPauses()
    gc.callbacks.append(gc_pauses)
    report: dict[str, Any] = {
        "share_path": "STAND-IN (synthetic source, API in the measuring process)",
        "admission_control": "off" if limits is None else f"{limits.api_rate:g} units/s, burst {limits.api_burst:g}",
        "clients": args.clients,
        "metrics_bytes": len(snap.metrics.body),
        "metrics_gzip_bytes": len(snap.metrics.gzip_with(b"")),
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "workloads": [],
    }
    try:
        await asyncio.sleep(0.2)
        for wl in workloads():
            idle: list[WorkloadResult] = []
            busy: list[WorkloadResult] = []
            hammers: list[dict[str, Any]] = []
            for r in range(args.rounds):
                # alternate the order so that drift in the machine's speed cancels out
                for hammered in (False, True) if r % 2 == 0 else (True, False):
                    res, h, built = await _phase(wl, cache, server.url if hammered else None, args)
                    builds.append(built)
                    if h is None:
                        idle.append(res)
                    else:
                        busy.append(res)
                        hammers.append(h)
            med_idle = statistics.median(x.value for x in idle)
            med_busy = statistics.median(x.value for x in busy)
            secs = sum(h["seconds"] for h in hammers)
            per_path = {p: sum(h["counts"][p] for h in hammers) / secs for p in HAMMER_PATHS}
            report["workloads"].append(
                {
                    "name": wl.name,
                    "unit": idle[0].unit,
                    "lower_is_better": wl.lower_is_better,
                    "idle": med_idle,
                    "hammered": med_busy,
                    "ratio": med_busy / med_idle if med_idle else float("nan"),
                    "round_ratios": [b.value / i.value if i.value else float("nan") for i, b in zip(idle, busy, strict=True)],
                    "idle_detail": _median_detail(idle),
                    "hammered_detail": _median_detail(busy),
                    "requests_per_s": sum(per_path.values()),
                    "requests_per_s_by_path": per_path,
                    "wire_mbytes_per_s": sum(sum(h["bytes"].values()) for h in hammers) / secs / 1e6,
                    "refused_per_s": sum(h["refused"] for h in hammers) / secs,
                    "errors": sum(h["errors"] for h in hammers),
                }
            )
    finally:
        gc.callbacks.remove(gc_pauses)
        await server.close()
        await cache.close()
    report["snapshot_builds"] = len(builds)
    report["snapshot_build_ms_median"] = statistics.median(b.build_seconds for b in builds) * 1000
    report["snapshot_max_slice_ms_median"] = statistics.median(b.max_slice_seconds for b in builds) * 1000
    report["snapshot_max_slice_ms_worst"] = max(b.max_slice_seconds for b in builds) * 1000
    report["gc_longest_pause_ms"] = gc_pauses.longest * 1000
    report["gc_full_collections"] = gc_pauses.full
    return report


def _median_detail(results: list[WorkloadResult]) -> dict[str, float]:
    keys = results[0].detail.keys()
    return {k: statistics.median(r.detail[k] for r in results) for k in keys}


def print_stand_in_report(r: dict[str, Any]) -> None:
    print("\nSECTION 2 -- STAND-IN share path: the API served in this process from a synthetic source;")
    print("a 1 ms timer and a saturated sha256d loop stand in for the share path (isolates the API's own cost)")
    print(
        f"snapshot: {r['clients']:,} SV1 clients, one build per phase (both kinds); "
        f"/metrics body {r['metrics_bytes'] / 1e6:.2f} MB ({r['metrics_gzip_bytes'] / 1e3:.0f} KB gzip)"
    )
    print(
        f"snapshot builds: {r['snapshot_builds']}, median {r['snapshot_build_ms_median']:.0f} ms wall each "
        f"(sharing the loop); longest event-loop slice per build: median {r['snapshot_max_slice_ms_median']:.2f} ms, "
        f"worst {r['snapshot_max_slice_ms_worst']:.2f} ms; longest CPython GC pause in the run "
        f"{r['gc_longest_pause_ms']:.1f} ms ({r['gc_full_collections']} full collections)"
    )
    print(
        f"hammer: {r['concurrency']} concurrent clients in another process on {', '.join(HAMMER_PATHS)} "
        f"(gzip accepted, as Prometheus does); admission control {r['admission_control']}; "
        f"{r['rounds']} rounds of {r['duration_s']:g} s idle + {r['duration_s']:g} s hammered, medians"
    )
    for w in r["workloads"]:
        print(f"\n{w['name']}")
        if w["unit"] == "ms p99":
            for label, d in (("idle API", w["idle_detail"]), ("hammered", w["hammered_detail"])):
                print(f"  {label:9s}: p50 {d['p50_ms']:.3f} ms  p99 {d['p99_ms']:.3f} ms  max {d['max_ms']:.2f} ms")
            print(f"  ratio hammered/idle (p99): {w['ratio']:.2f}  (per round: {_fmt(w['round_ratios'])})")
        else:
            print(f"  idle API : {w['idle']:,.0f} {w['unit']}")
            print(f"  hammered : {w['hammered']:,.0f} {w['unit']}")
            print(f"  ratio hammered/idle: {w['ratio']:.3f}  (per round: {_fmt(w['round_ratios'])})")
        by = ", ".join(f"{p} {v:,.0f}/s" for p, v in w["requests_per_s_by_path"].items())
        print(
            f"  API served {w['requests_per_s']:,.0f} requests/s ({by}; {w['wire_mbytes_per_s']:.1f} MB/s on the wire), "
            f"refused (429) {w['refused_per_s']:,.0f}/s, errors {w['errors']}"
        )


def _fmt(xs: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in xs)



# == SECTION 3: EVENT-LOOP STALL of one snapshot build ===================================


async def _build_with_timer(cache: SnapshotCache) -> tuple[Snapshot, float, int]:
    """One build while a 'share path' task, woken by a 1 ms timer as a share is woken
    by its socket, records how late it runs: (snapshot, worst lateness s, wake-ups)."""
    worst = 0.0
    ticks = 0
    done = False
    loop = asyncio.get_running_loop()

    async def ticker() -> None:
        nonlocal worst, ticks
        while not done:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - due)
            ticks += 1

    task = asyncio.create_task(ticker(), name="bench-ticker")
    await asyncio.sleep(0)
    snap = await cache.refresh()
    done = True
    await task
    return snap, worst, ticks


async def bench_stall(args: argparse.Namespace) -> dict[str, Any]:
    """The sliced build (production budget) next to an unsliced baseline, same source, same run."""
    source = StaticSource(args.clients)
    out: dict[str, Any] = {"clients": args.clients, "runs": args.stall_runs}
    for label, budget in (("sliced", None), ("unsliced", 3600.0)):
        cache = SnapshotCache(source) if budget is None else SnapshotCache(source, slice_budget_s=budget)
        await cache.refresh_worker_stats()
        await cache.refresh()  # warm-up
        runs = [await _build_with_timer(cache) for _ in range(args.stall_runs)]
        out[label] = [
            {
                "build_ms": snap.build_seconds * 1000,
                "slices": snap.slices,
                "max_slice_ms": snap.max_slice_seconds * 1000,
                "timer_lateness_ms": late * 1000,
                "timer_wakeups": ticks,
            }
            for snap, late, ticks in runs
        ]
    return out


def print_stall_report(r: dict[str, Any]) -> None:
    print(f"\nSECTION 3 -- event-loop stall of one snapshot build, {r['clients']:,} synthetic SV1 clients")
    print("(a task woken by a 1 ms timer stands in for the share path; its worst lateness is the stall it saw)")
    for label in ("sliced", "unsliced"):
        for x in r[label]:
            print(
                f"  {label:8s}: build {x['build_ms']:6.0f} ms in {x['slices']:4d} slices; longest slice "
                f"{x['max_slice_ms']:7.2f} ms; 1 ms timer lateness {x['timer_lateness_ms']:7.2f} ms "
                f"({x['timer_wakeups']} wake-ups during the build)"
            )


# == SECTION 1: THE REAL PROXY ============================================================


async def serve_proxy(args: argparse.Namespace) -> None:
    """Child process: the dev pool and the proxy with monitoring on; prints the ports,
    serves until SIGTERM, then closes everything and prints its counters."""
    from devnet.pool import DevPool, PoolSettings
    from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
    from tproxy.config import Settings, UpstreamSettings
    from tproxy.runtime import Proxy

    secret, xonly = generate_keypair()
    pool = DevPool(
        PoolSettings(
            port=0, authority_secret_key=encode_secret_key(secret), fixed_difficulty=2.0**-32 / args.forward_ratio,
            new_block_interval_s=0, new_job_interval_s=0, share_batch_size=10,
        )
    )
    await pool.start()
    share_log_dir = args.share_log_dir or None
    settings = Settings(
        upstreams=[UpstreamSettings(address="127.0.0.1", port=pool.port, authority_pubkey=encode_public_key(xonly))],
        downstream={"address": "127.0.0.1", "port": 0, "max_connections": args.max_connections, "idle_timeout_s": 600},
        difficulty={
            "start_difficulty": bench_proxy.MINER_DIFFICULTY, "min_difficulty": bench_proxy.MINER_DIFFICULTY, "vardiff": False,
        },
        proxy={"instance_id": "bench-monitoring", "job_keepalive_interval_s": 0},
        monitoring={
            "enabled": True, "address": "127.0.0.1", "port": 0, "refresh_interval_s": args.refresh,
            "worker_stats_interval_s": 5.0, "rate_limit": not args.unlimited,
        },
        clickhouse=(
            {"url": f"chdb://{Path(share_log_dir) / 'shares.chdb'}", "spool_dir": str(Path(share_log_dir) / "spool"),
             "spool_fsync": False}
            if share_log_dir else {}
        ),
    )
    proxy = Proxy(settings, share_log=share_log_dir is not None)
    await proxy.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"port": proxy.sv1_port, "monitoring_port": proxy.monitoring_port}), flush=True)
    await stop.wait()
    forwarded = proxy.manager.shares_forwarded
    written = proxy.share_log.stats().written if proxy.share_log is not None else None
    await proxy.close()
    await pool.close()
    print(json.dumps({"forwarded": forwarded, "pool_accepted": pool.total_accepted, "share_log_written": written}), flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start_hammer(url: str, duration: float, concurrency: int) -> asyncio.subprocess.Process:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--hammer", url, "--duration", str(duration)]
    cmd += ["--concurrency", str(concurrency)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, cwd=str(REPO))
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"hammer process did not start: {line!r}")
    return proc


async def finish_hammer(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    out, _ = await proc.communicate()
    return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


async def _wait_healthy(url: str, timeout: float = 20.0) -> None:
    async with aiohttp.ClientSession(base_url=url) as http, asyncio.timeout(timeout):
        while True:
            async with http.get("/health") as r:
                if r.status == 200:
                    return
            await asyncio.sleep(0.1)


async def _snapshot_figures(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession(base_url=url) as http, http.get("/metrics") as r:
        text = await r.text()
    want = {
        "tproxy_monitoring_snapshot_build_seconds": "build_ms",
        "tproxy_monitoring_snapshot_max_stall_seconds": "max_stall_ms",
        "sv1_clients": "clients",
    }
    out: dict[str, float] = {"metrics_bytes": float(len(text))}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name in want:
                out[want[smp.name]] = smp.value * (1000 if want[smp.name].endswith("_ms") else 1)
    return out


async def proxy_mode(args: argparse.Namespace, limited: bool) -> dict[str, Any]:
    """One child proxy (admission control on or off); alternating idle/hammered phases."""
    n = args.connections
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-proxy", "--max-connections", str(n + 100)]
        cmd += ["--refresh", str(args.refresh), "--forward-ratio", str(args.forward_ratio)]
        cmd += ["--share-log-dir", "" if args.no_share_log else tmp]
        if not limited:
            cmd.append("--unlimited")
        child = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, cwd=str(REPO))
        assert child.stdout is not None
        if args.pin:  # the proxy alone on CPU 0; this generator (and the hammer it starts) elsewhere
            os.sched_setaffinity(child.pid, {0})
            os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)) or {0})
        try:
            ports = json.loads(await child.stdout.readline())
            url = f"http://127.0.0.1:{ports['monitoring_port']}"
            await _wait_healthy(url)
            conns = await bench_proxy.open_conns(ports["port"], n, echo=False)
            await bench_proxy.drive(conns, 1.0)  # warm-up, not measured
            phases: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            hammers: list[dict[str, Any]] = []
            for r in range(args.rounds):
                for hammered in (False, True) if r % 2 == 0 else (True, False):
                    proc = None
                    if hammered:
                        proc = await start_hammer(url, 2 * args.duration + 0.2, args.concurrency)
                    cpu0, gen0, t0 = cpu_seconds(child.pid), time.process_time(), time.perf_counter()
                    done, lat = await bench_proxy.drive(conns, args.duration)
                    res: dict[str, float] = {
                        "shares_per_s": done / args.duration,
                        "p50_ms": bench_proxy.pct(lat, 0.5) * 1000,
                        "p99_ms": bench_proxy.pct(lat, 0.99) * 1000,
                    }
                    if args.paced_rate:
                        pdone, plat = await bench_proxy.drive(conns, args.duration, rate=args.paced_rate)
                        res |= {
                            "paced_per_s": pdone / args.duration,
                            "paced_p50_ms": bench_proxy.pct(plat, 0.5) * 1000,
                            "paced_p99_ms": bench_proxy.pct(plat, 0.99) * 1000,
                        }
                    wall = time.perf_counter() - t0
                    res["proxy_cpu"] = (cpu_seconds(child.pid) - cpu0) / wall
                    res["generator_cpu"] = (time.process_time() - gen0) / wall
                    phases[hammered].append(res)
                    if proc is not None:
                        hammers.append(await finish_hammer(proc))
            snap = await _snapshot_figures(url)
            for c in conns:
                c.writer.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            try:
                out, _ = await asyncio.wait_for(child.communicate(), 30)
                counters = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
            except (TimeoutError, ValueError):
                child.kill()
                counters = {}
    secs = sum(h["seconds"] for h in hammers)
    idle = {k: statistics.median(p[k] for p in phases[False]) for k in phases[False][0]}
    busy = {k: statistics.median(p[k] for p in phases[True]) for k in phases[True][0]}
    return {
        "admission_control": "on (default: 100 units/s, burst 50, max wait 2 s)" if limited else "off",
        "idle": idle,
        "hammered": busy,
        "throughput_ratio": busy["shares_per_s"] / idle["shares_per_s"],
        "round_ratios": [b["shares_per_s"] / i["shares_per_s"] for i, b in zip(phases[False], phases[True], strict=True)],
        "requests_per_s": sum(sum(h["counts"].values()) for h in hammers) / secs,
        "requests_per_s_by_path": {p: sum(h["counts"][p] for h in hammers) / secs for p in HAMMER_PATHS},
        "wire_mbytes_per_s": sum(sum(h["bytes"].values()) for h in hammers) / secs / 1e6,
        "refused_per_s": sum(h["refused"] for h in hammers) / secs,
        "refused": sum(h["refused"] for h in hammers),
        "errors": sum(h["errors"] for h in hammers),
        "hammer_cpu": statistics.median(h["cpu"] for h in hammers),
        "snapshot": snap,
        "proxy_counters": counters,
    }


async def bench_proxy_section(args: argparse.Namespace) -> dict[str, Any]:
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.limits]
    report: dict[str, Any] = {
        "share_path": "REAL proxy (child process) + dev pool",
        "connections": args.connections,
        "share_log": "off" if args.no_share_log else "chdb (embedded, temporary directory)",
        "refresh_s": args.refresh,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "paced_rate": args.paced_rate,
        "forward_ratio": args.forward_ratio,
        "cores": os.cpu_count(),
        "pinned": args.pin,
        "modes": [],
    }
    load0 = os.getloadavg()[0]
    for limited in modes:
        report["modes"].append(await proxy_mode(args, limited))
    # Other processes on the machine skew every figure here; the load average shows them.
    report["loadavg_1m"] = (load0, os.getloadavg()[0])
    return report


def print_proxy_report(r: dict[str, Any]) -> None:
    print(
        f"SECTION 1 -- REAL PROXY: dev pool + proxy (monitoring on, refresh {r['refresh_s']:g} s, share log "
        f"{r['share_log']}) in a child process;\n{r['connections']:,} SV1 connections from this process "
        f"(bench_proxy's generator, ~{r['forward_ratio']:.0%} of shares forwarded upstream); hammer: "
        f"{r['concurrency']} concurrent HTTP clients in another process on {', '.join(HAMMER_PATHS)};\n"
        f"{r['rounds']} rounds of idle + hammered phases ({r['duration_s']:g} s closed loop"
        + (f" + {r['duration_s']:g} s paced at {r['paced_rate']:,.0f} shares/s" if r["paced_rate"] else "")
        + f"), medians; python {sys.version.split()[0]}, {r['cores']} cores"
        + (", proxy pinned to CPU 0, generator and hammer to the others" if r["pinned"]
           else " shared by the proxy, the load generator and the hammer")
    )
    la0, la1 = r["loadavg_1m"]
    print(f"load average (1 min) of the machine at start {la0:.2f}, at end {la1:.2f} (this bench alone adds about 2)")
    for m in r["modes"]:
        i, b = m["idle"], m["hammered"]
        print(f"\n admission control {m['admission_control']}")
        for label, d in (("idle API", i), ("hammered", b)):
            line = (
                f"  {label:9s}: {d['shares_per_s']:8,.0f} shares/s  p50 {d['p50_ms']:7.2f} ms  p99 {d['p99_ms']:7.2f} ms"
                f"  (closed loop)"
            )
            if "paced_per_s" in d:
                line += f" | paced {d['paced_per_s']:,.0f}/s: p50 {d['paced_p50_ms']:6.2f} ms  p99 {d['paced_p99_ms']:6.2f} ms"
            print(line + f" | CPU: proxy {d['proxy_cpu']:.0%}, generator {d['generator_cpu']:.0%}")
        print(
            f"  ratio hammered/idle: throughput {m['throughput_ratio']:.3f} (per round: {_fmt(m['round_ratios'])}), "
            f"closed-loop p99 {b['p99_ms'] / i['p99_ms']:.2f}"
            + (f", paced p99 {b['paced_p99_ms'] / i['paced_p99_ms']:.2f}" if "paced_p99_ms" in i else "")
        )
        by = ", ".join(f"{p} {v:,.0f}/s" for p, v in m["requests_per_s_by_path"].items())
        print(
            f"  monitoring served {m['requests_per_s']:,.0f} requests/s ({by}; {m['wire_mbytes_per_s']:.2f} MB/s on the wire); "
            f"refused with 429: {m['refused_per_s']:,.1f}/s ({m['refused']} in all); errors {m['errors']}; "
            f"hammer process CPU {m['hammer_cpu']:.0%}"
        )
        s = m["snapshot"]
        print(
            f"  snapshot at the end: {s.get('clients', 0):,.0f} clients, /metrics {s['metrics_bytes'] / 1e3:.0f} KB plain, "
            f"build {s.get('build_ms', 0):.1f} ms wall, longest loop stall {s.get('max_stall_ms', 0):.2f} ms; "
            f"proxy counters at exit: {json.dumps(m['proxy_counters'])}"
        )


# == main ===================================================================================


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--section", choices=["proxy", "stand-in", "stall", "all"], default="proxy")
    p.add_argument("--connections", type=int, default=1000, help="SV1 connections (section 1)")
    p.add_argument("--paced-rate", type=float, default=2000.0, help="total shares/s of the paced run (0 = skip)")
    p.add_argument("--forward-ratio", type=float, default=0.1, help="fraction of shares forwarded upstream")
    p.add_argument("--refresh", type=float, default=1.0, help="snapshot refresh interval of the proxy (s)")
    p.add_argument("--limits", choices=["on", "off", "both"], default="both", help="admission control of the API")
    p.add_argument("--no-share-log", action="store_true", help="run the proxy without its share log")
    p.add_argument("--pin", action="store_true", help="pin the proxy to CPU 0 and the load to the other CPUs")
    p.add_argument("--clients", type=int, default=10_000, help="synthetic SV1 clients (sections 2 and 3)")
    p.add_argument("--stall-runs", type=int, default=3, help="builds of each kind (section 3)")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per phase")
    p.add_argument("--rounds", type=int, default=2, help="idle/hammered pairs")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--unlimited", action="store_true", help="section 2 (and the child): admission control off")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    p.add_argument("--hammer", metavar="URL", help=argparse.SUPPRESS)  # internal: the hammer process
    p.add_argument("--token", help=argparse.SUPPRESS)
    p.add_argument("--serve-proxy", action="store_true", help=argparse.SUPPRESS)  # internal: the proxy process
    p.add_argument("--share-log-dir", default="", help=argparse.SUPPRESS)
    p.add_argument("--max-connections", type=int, default=10_000, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.hammer:
        print(json.dumps(asyncio.run(hammer(args.hammer, args.duration, args.concurrency, args.token))))
        return
    if args.serve_proxy:
        asyncio.run(serve_proxy(args))
        return
    bench_proxy.raise_nofile()
    out: dict[str, Any] = {}
    if args.section in ("proxy", "all"):
        out["proxy"] = asyncio.run(bench_proxy_section(args))
        if not args.json:
            print_proxy_report(out["proxy"])
    if args.section in ("stand-in", "all"):
        out["stand_in"] = asyncio.run(bench_stand_in(args))
        if not args.json:
            print_stand_in_report(out["stand_in"])
    if args.section in ("stall", "all"):
        out["stall"] = asyncio.run(bench_stall(args))
        if not args.json:
            print_stall_report(out["stall"])
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
