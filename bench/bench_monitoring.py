"""Benchmark: does hammering the monitoring API slow the share path?

Owns the monitoring load test of issue #5. It serves the monitoring API from
this process (a ``SnapshotCache`` over a synthetic source with N SV1 clients)
and, for each share-path workload, alternates phases with the API idle and
phases while a *separate process* runs 16 concurrent HTTP clients hammering
``/metrics`` and ``/api/v1/sv1/clients``. Every phase contains exactly one
snapshot build, so both kinds carry the same build load. It prints the median
of each, their ratio, and the requests/s the API served, plus the build's
longest event-loop slice and the longest CPython GC pause seen.

THE SHARE PATH IS A STAND-IN until the proxy exists. Two stand-ins run:

* ``latency``: a 1 ms timer task on the proxy's event loop; we report how late
  it wakes (p50/p99/max). A share arriving on a socket waits exactly like
  this for the loop, so this is the share-path latency monitoring adds.
* ``throughput``: a saturated loop that does the CPU work of a share
  (sha256d of an 80-byte header, counter updates) and yields to the loop after
  each one; we report shares/s. It shows how much CPU serving the API takes
  from a fully loaded proxy.

To measure the real proxy, implement ``ShareWorkload`` (start the dev pool,
the proxy and synthetic miners; count shares the pool accepted during
``run``) and add it to ``workloads()``; everything else stays.

Run from the repository root: ``.venv/bin/python bench/bench_monitoring.py``
(``--clients``, ``--duration``, ``--concurrency``; ``--json`` for a
machine-readable line).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from monitoring.api import MonitoringServer, RateLimits  # noqa: E402
from monitoring.snapshot import Snapshot, SnapshotCache  # noqa: E402
from tests.monitoring.static_source import StaticSource  # noqa: E402

HAMMER_PATHS = ("/metrics", "/api/v1/sv1/clients")


# -- share-path workloads --------------------------------------------------------


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
    return {"seconds": elapsed, "counts": counts, "bytes": nbytes, "errors": errors, "refused": refused}


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


# -- main ------------------------------------------------------------------------------


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


async def bench(args: argparse.Namespace) -> dict[str, Any]:
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
        "share_path": "STAND-IN (no proxy yet)",
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


def print_report(r: dict[str, Any]) -> None:
    print("monitoring bench -- share path is a STAND-IN (the proxy does not exist yet)")
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


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--clients", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per phase")
    p.add_argument("--rounds", type=int, default=3, help="idle/hammered pairs per workload")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--unlimited", action="store_true", help="turn the API's admission control off")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    p.add_argument("--hammer", metavar="URL", help=argparse.SUPPRESS)  # internal: the hammer process
    p.add_argument("--token", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.hammer:
        print(json.dumps(asyncio.run(hammer(args.hammer, args.duration, args.concurrency, args.token))))
        return
    report = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
