"""Benchmark of the share log (tproxy.shares): prints figures, asserts nothing.

1. Rows/s through the whole ShareLog pipeline (submit -> batcher -> database
   thread -> clickhouse-connect -> embedded chdb engine), versus rows/s of plain
   clickhouse-connect inserts of the same rows, same batch size, same engine
   and schema, in the same run; and the ratio.
   That burst (``--rows`` as fast as ``answer()`` takes them) overflows ``queue_size``
   and detours via the spool; a paced phase (``--paced-rows`` at ``--paced-rate``,
   default twice a 100,000-miner farm's 10,000 rows/s) gives the steady state: CPU
   per row vs the plain insert.
2. Latency of ``ShareLog.submit()`` inside a running event loop at a steady
   share rate, with the database up (embedded engine) and down (an HTTP URL
   on a closed port: every batch goes to the disk spool).
3. The proxy's own figure (issue #4: "it should not move"): the dev pool and
   the proxy (``tproxy.runtime.Proxy`` with its share log on) in a child
   process, the share log pointing at (a) a reachable database (embedded chdb
   in the child) and (b) an unreachable one (HTTP, closed port; every batch
   goes to the fsynced spool). bench/bench_proxy.py's SV1 load generator
   drives it from this process: a paced run at a fixed total rate
   (submit-to-reply p50/p99/p99.9), then a closed loop (shares/s, and its
   queueing-dominated latency), printed side by side. A third case puts the
   database behind HTTP in its own process (the tests' chdb front), so the
   embedded engine's CPU is not charged to the proxy process.

    .venv/bin/python bench/bench_shares.py [--rows 200000] [--batch-size 5000] [--queue-size 100000]
        [--paced-rows 100000] [--paced-rate 20000]
        [--proxy-connections 500] [--proxy-seconds 8] [--proxy-paced-rate 2000] [--skip-pipeline]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_proxy
import clickhouse_connect

from devnet.loadgen import make_share
from tproxy.shares.pipeline import ShareLog
from tproxy.shares.record import ShareRecord
from tproxy.shares.schema import SHARE_COLUMNS, SHARE_TYPES, Schema
from tproxy.shares.settings import ClickHouseSettings

ROOT = Path(__file__).resolve().parents[1]


def records(n: int, instance_id: str = "bench") -> list[ShareRecord]:
    t0 = int(time.time() * 1000) - 300_000
    return [make_share(s, instance_id=instance_id, received_at_ms=t0 + s * 300_000 // n) for s in range(1, n + 1)]


async def pipeline_rate(recs: list[ShareRecord], settings: ClickHouseSettings) -> tuple[float, float, int]:
    """Rows/s through ``ShareLog.answer`` (what the hub calls: reply + record; the reply is a
    no-op here) until every row is in the database; also the seconds the ``answer()`` calls
    took and the rows that went through the spool (more than ``queue_size`` in memory)."""
    log = ShareLog(settings, "bench")
    await log.start()
    miners = [object() for _ in range(100)]
    replies: list[bytes] = []
    t = time.perf_counter()
    for i, r in enumerate(recs):
        log.answer(miners[i % 100], replies.append, b"", r)
        if i % 1000 == 999:
            await asyncio.sleep(0)  # a proxy's loop yields between lines
    t_submitted = time.perf_counter() - t
    assert await log.flush(600), log.stats()
    elapsed = time.perf_counter() - t
    st = log.stats()
    assert st.written == len(recs) and st.dropped == 0, st
    await log.close()
    assert len(replies) == len(recs)
    return len(recs) / elapsed, t_submitted, st.spooled


async def pipeline_paced(recs: list[ShareRecord], settings: ClickHouseSettings, rate: float) -> tuple[float, float, int]:
    """``ShareLog.answer`` at a steady ``rate`` (rows/s, in 10 ms ticks), as a farm sends shares,
    until every row is in the database. Returns (process CPU seconds from the first answer() to
    the end of the flush, seconds the flush took after the last answer(), rows via the spool).
    The CPU is every thread's (the engine's included), so it compares with a plain insert's."""
    log = ShareLog(settings, "bench-paced")
    await log.start()
    miners = [object() for _ in range(100)]
    per_tick = max(1, int(rate / 100))
    loop = asyncio.get_running_loop()
    cpu = time.process_time()
    t0 = loop.time()
    for k in range(0, len(recs), per_tick):
        for i, r in enumerate(recs[k : k + per_tick], k):
            log.answer(miners[i % 100], _no_reply, b"", r)
        # The next tick's deadline, not a fixed sleep: the rate holds even when a tick runs long.
        await asyncio.sleep(max(0.0, t0 + (k + per_tick) / rate - loop.time()))
    t_last = time.perf_counter()
    assert await log.flush(600), log.stats()
    lag = time.perf_counter() - t_last
    used = time.process_time() - cpu
    st = log.stats()
    assert st.written == len(recs) and st.dropped == 0, st
    await log.close()
    return used, lag, st.spooled


def _no_reply(line: bytes) -> None:
    pass


def plain_rate(recs: list[ShareRecord], settings: ClickHouseSettings, batch_size: int,
               database: str = "bench_plain") -> float:
    """The same rows through clickhouse-connect alone: same engine, same schema (in its own
    database), same batch size, rows already built as tuples (no queue, no spool, no thread)."""
    plain = settings.model_copy(update={"database": database})
    sc = Schema(plain)
    client = clickhouse_connect.get_client(dsn=f"chdb://{settings.chdb_path}")
    try:
        client.command(sc.create_database())
        for stmt in sc.v1_statements():
            client.command(stmt)
        rows = [(*r.as_row()[:2], 1, *r.as_row()[2:]) for r in recs]
        t = time.perf_counter()
        for k in range(0, len(rows), batch_size):
            client.insert(sc.q(sc.shares), rows[k : k + batch_size], column_names=SHARE_COLUMNS,
                          column_type_names=SHARE_TYPES,
                          settings={"insert_deduplication_token": f"plain:{k}"})
        elapsed = time.perf_counter() - t
        n = client.query(f"SELECT count() FROM {sc.q(sc.shares)}").result_rows[0][0]
        assert n == len(rows), n
    finally:
        client.close()
    return len(rows) / elapsed


async def measure_submit_latency(submit: Callable[[ShareRecord], None], recs: list[ShareRecord],
                                 rate_per_s: float) -> list[float]:
    """Call ``submit`` for each record at ``rate_per_s`` (in 10 ms ticks) inside the running
    loop; return each call's duration in microseconds."""
    out: list[float] = []
    per_tick = max(1, int(rate_per_s / 100))
    for k in range(0, len(recs), per_tick):
        for r in recs[k : k + per_tick]:
            t = time.perf_counter_ns()
            submit(r)
            out.append((time.perf_counter_ns() - t) / 1000)
        await asyncio.sleep(0.01)
    return out


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def latency(settings: ClickHouseSettings, recs: list[ShareRecord], rate: float) -> tuple[list[float], object]:
    log = ShareLog(settings, "bench-lat")
    await log.start()
    lat = await measure_submit_latency(log.submit, recs, rate)
    await log.flush(5)
    st = log.stats()
    await log.close()
    return lat, st


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- proxy-level figure


async def serve_proxy(url: str, spool_dir: str, forward_ratio: float, max_connections: int, durability: str) -> None:
    """Child process: dev pool + proxy with the share log on ``url``; prints the SV1 port,
    then the share log's counters on stderr once a second."""
    from devnet.pool import DevPool, PoolSettings
    from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
    from tproxy.config import Settings, UpstreamSettings
    from tproxy.runtime import Proxy

    for name in ("", "urllib3", "clickhouse_connect", "tproxy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    secret, xonly = generate_keypair()
    pool = DevPool(PoolSettings(
        port=0, authority_secret_key=encode_secret_key(secret), fixed_difficulty=2.0**-32 / forward_ratio,
        new_block_interval_s=0, new_job_interval_s=0, share_batch_size=10,
    ))
    await pool.start()
    diff = bench_proxy.MINER_DIFFICULTY
    settings = Settings(
        upstreams=[UpstreamSettings(address="127.0.0.1", port=pool.port, authority_pubkey=encode_public_key(xonly))],
        downstream={"address": "127.0.0.1", "port": 0, "max_connections": max_connections, "idle_timeout_s": 600},
        difficulty={"start_difficulty": diff, "min_difficulty": diff, "vardiff": False},
        proxy={"instance_id": "bench-proxy", "job_keepalive_interval_s": 0},
        clickhouse={"url": url, "spool_dir": spool_dir, "connect_timeout_s": 1, "insert_timeout_s": 2,
                    "close_timeout_s": 2, "spool_fsync": True, "durability": durability},
    )
    proxy = Proxy(settings)
    await proxy.start()
    assert proxy.share_log is not None
    print(json.dumps({"port": proxy.sv1_port}), flush=True)
    while True:
        await asyncio.sleep(1)
        st = proxy.share_log.stats()
        sys.stderr.write(json.dumps({"written": st.written, "spooled": st.spooled, "queued": st.queued,
                                     "dropped": st.dropped, "db_up": st.db_up, "commits": st.journal_commits,
                                     "degraded": st.durability_degraded,
                                     "shares_forwarded": proxy.manager.shares_forwarded}) + "\n")
        sys.stderr.flush()


async def proxy_case(url: str, spool_dir: str, n: int, seconds: float, paced_rate: float,
                     forward_ratio: float, durability: str) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--serve-proxy", url, spool_dir, "--forward-ratio", str(forward_ratio),
           "--max-connections", str(n + 100), "--durability", durability]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout is not None
        port = json.loads(child.stdout.readline())["port"]
        await asyncio.sleep(1.5)  # let the upstream channel open
        conns = await bench_proxy.open_conns(port, n, echo=False)
        # Paced first: its latencies are then not disturbed by the share log still writing
        # the closed loop's backlog.
        pdone, plat = await bench_proxy.drive(conns, seconds, rate=paced_rate)
        done, lat = await bench_proxy.drive(conns, seconds)
        for c in conns:
            c.writer.close()
        await asyncio.sleep(1.2)  # one more counters line after the load
        return {
            "shares_per_s": done / seconds, "p50_ms": bench_proxy.pct(lat, 0.5) * 1000,
            "p99_ms": bench_proxy.pct(lat, 0.99) * 1000, "paced_per_s": pdone / seconds,
            "paced_p50_ms": bench_proxy.pct(plat, 0.5) * 1000, "paced_p99_ms": bench_proxy.pct(plat, 0.99) * 1000,
            "paced_p999_ms": bench_proxy.pct(plat, 0.999) * 1000, "sent": done + pdone,
        }
    finally:
        child.terminate()
        with contextlib.suppress(Exception):
            child.wait(10)
        if child.poll() is None:
            child.kill()
        tail = [ln for ln in (child.stderr.read() if child.stderr else "").splitlines() if ln.startswith("{")]
        if tail:
            print(f"    share log counters in the proxy after the load: {tail[-1]}")


@contextlib.contextmanager
def http_database(path: Path):  # type: ignore[no-untyped-def]
    """A ClickHouse HTTP endpoint in its own process: the tests' chdb-backed front
    (devnet/chdb_front.py), so the engine's CPU is not the proxy's."""
    code = ("import sys, threading; from devnet.chdb_front import ChdbHttpFront; "
            "f = ChdbHttpFront(sys.argv[1]); f.start(); print(f.url, flush=True); threading.Event().wait()")
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert p.stdout is not None
        yield p.stdout.readline().strip()
    finally:
        p.kill()
        p.wait(10)


async def proxy_level(tmp: Path, a: argparse.Namespace) -> None:
    print(f"\nproxy submit-to-reply with the share log on, database up vs down, durability "
          f"{' vs '.join(a.durability)}: {a.proxy_connections} SV1 connections, {a.proxy_seconds:g}s paced at "
          f"{a.proxy_paced_rate:,.0f} shares/s total, then {a.proxy_seconds:g}s closed loop; "
          f"~{a.forward_ratio:.0%} forwarded to the dev pool")
    res: dict[str, dict[str, object]] = {}
    with http_database(tmp / "front-db") as http_url:
        cases = [
            ("up, chdb", f"chdb://{tmp / 'proxy-db'}", "proxy-spool-up"),
            ("up, HTTP", http_url, "proxy-spool-http"),
            ("down (HTTP)", f"http://127.0.0.1:{closed_port()}", "proxy-spool-down"),
        ]
        for name, url, spool in cases:
            for mode in a.durability:
                key = f"{name}, {mode}"
                print(f"  database {name} ({url.split('@')[-1]}), durability {mode}:")
                res[key] = await proxy_case(url, str(tmp / f"{spool}-{mode}"), a.proxy_connections, a.proxy_seconds,
                                            a.proxy_paced_rate, a.forward_ratio, mode)
                print(f"    shares sent and answered: {res[key]['sent']}")
    print(f"  {'database, durability':22}  {'closed loop':>12}  {'p50':>8}  {'p99':>8}  | {'paced':>8}  {'p50':>8}  "
          f"{'p99':>8}  {'p99.9':>8}")
    for key, r in res.items():
        print(f"  {key:22}: {r['shares_per_s']:9,.0f}/s  {r['p50_ms']:5.2f} ms  {r['p99_ms']:5.2f} ms  | "
              f"{r['paced_per_s']:6,.0f}/s  {r['paced_p50_ms']:5.2f} ms  {r['paced_p99_ms']:5.2f} ms  "
              f"{r['paced_p999_ms']:5.2f} ms")
    if "fast" in a.durability and "sync" in a.durability:
        for name, _, _ in cases:
            f, y = res[f"{name}, fast"], res[f"{name}, sync"]
            print(f"  sync / fast, database {name}: throughput "
                  f"{float(y['shares_per_s']) / float(f['shares_per_s']):.2f}, "  # type: ignore[arg-type]
                  f"paced p50 {float(y['paced_p50_ms']) / float(f['paced_p50_ms']):.2f}, "  # type: ignore[arg-type]
                  f"paced p99 {float(y['paced_p99_ms']) / float(f['paced_p99_ms']):.2f}")  # type: ignore[arg-type]


async def main() -> None:
    for name in ("", "urllib3", "clickhouse_connect", "tproxy"):  # "database down" logs every attempt
        logging.getLogger(name).setLevel(logging.ERROR)
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--batch-size", type=int, default=5_000)
    p.add_argument("--queue-size", type=int, default=ClickHouseSettings().queue_size,
                   help="clickhouse.queue_size of the pipeline figure: above it batches detour via the spool")
    p.add_argument("--paced-rows", type=int, default=100_000, help="rows of the paced phase (0 = none)")
    p.add_argument("--paced-rate", type=float, default=20_000.0,
                   help="rows/s of the paced phase (100,000 miners at 1 share/10 s = 10,000)")
    p.add_argument("--latency-shares", type=int, default=30_000)
    p.add_argument("--latency-rate", type=float, default=10_000.0, help="shares per second")
    p.add_argument("--proxy-connections", type=int, default=500)
    p.add_argument("--proxy-seconds", type=float, default=8.0)
    p.add_argument("--proxy-paced-rate", type=float, default=2000.0, help="shares/s of the paced run")
    p.add_argument("--forward-ratio", type=float, default=0.1)
    p.add_argument("--skip-pipeline", action="store_true", help="only the proxy-level figure")
    p.add_argument("--skip-proxy", action="store_true", help="only the pipeline figures")
    p.add_argument("--durability", nargs="+", choices=["fast", "sync"], default=["fast", "sync"],
                   help="clickhouse.durability modes to measure, side by side")
    p.add_argument("--skip-latency", action="store_true", help="no ShareLog.submit() call-latency figure")
    p.add_argument("--serve-proxy", nargs=2, metavar=("URL", "SPOOL_DIR"), help=argparse.SUPPRESS)
    p.add_argument("--max-connections", type=int, default=10_000, help=argparse.SUPPRESS)
    a = p.parse_args()
    bench_proxy.raise_nofile()
    if a.serve_proxy:
        await serve_proxy(a.serve_proxy[0], a.serve_proxy[1], a.forward_ratio, a.max_connections, a.durability[0])
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-shares-"))
    try:
        if not a.skip_pipeline:
            await pipeline_figures(tmp, a)
        if not a.skip_proxy:
            await proxy_level(tmp, a)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # engines, spools, the front's staging files


async def pipeline_figures(tmp: Path, a: argparse.Namespace) -> None:
    base = {"batch_size": a.batch_size, "batch_max_age_s": 0.5, "spool_fsync": True, "queue_size": a.queue_size}
    emb = ClickHouseSettings(url=f"chdb://{tmp / 'db'}", spool_dir=str(tmp / "spool"), **base)
    recs = records(a.rows)
    print(f"share log bench: {a.rows} rows, batch {a.batch_size}, queue {a.queue_size}, embedded chdb at {tmp / 'db'}")
    # Process CPU (every thread, the engine's included) per row: steadier than rows/s on a
    # shared machine, and it shows what the pipeline adds to the insert itself.
    cpu = time.process_time()
    prate = plain_rate(recs, emb, a.batch_size)
    pcpu = (time.process_time() - cpu) / a.rows * 1e6
    for mode in a.durability:
        cpu = time.process_time()
        rate, t_sub, spooled = await pipeline_rate(recs, emb.model_copy(update={"durability": mode}))
        mcpu = (time.process_time() - cpu) / a.rows * 1e6
        print(f"  pipeline (ShareLog -> chdb), {mode:4} : {rate:12,.0f} rows/s  (answer() of all rows took "
              f"{t_sub:.2f} s, {spooled} via the spool)  ratio to plain {rate / prate:.2f}  "
              f"CPU {mcpu:5.1f} us/row ({mcpu / pcpu:.2f} of plain)")
    print(f"  plain clickhouse-connect -> chdb   : {prate:12,.0f} rows/s  CPU {pcpu:5.1f} us/row")
    if a.paced_rows:
        await paced_figures(tmp, a, base, pcpu)
    if a.skip_latency:
        return
    await latency_figures(tmp, a, emb)


async def paced_figures(tmp: Path, a: argparse.Namespace, base: dict[str, object], pcpu: float) -> None:
    """The steady state: a farm sends shares at a rate, not in a burst. 100,000 miners at one
    share per 10 s is 10,000 rows/s; the default pace is twice that. The figure is CPU per row
    (every thread's) next to the plain insert's, which does not depend on the rate."""
    recs = records(a.paced_rows, "bench-paced")
    print(f"paced: {a.paced_rows} rows at {a.paced_rate:,.0f} rows/s (steady state; the burst above is "
          f"{a.rows} rows as fast as answer() takes them)")
    figures = []
    for mode in a.durability:
        st = ClickHouseSettings(url=f"chdb://{tmp / 'db'}", spool_dir=str(tmp / f"spool-paced-{mode}"),
                                durability=mode, **base)  # type: ignore[arg-type]
        figures.append((mode, *await pipeline_paced(recs, st, a.paced_rate)))
    # The plain insert's CPU per row does not depend on the rate; measured again here (same
    # rows, after the paced runs) and averaged with the burst's, so a shift in the machine's
    # load during the paced runs shows as a gap between the two.
    cpu = time.process_time()
    plain_rate(recs, ClickHouseSettings(url=f"chdb://{tmp / 'db'}"), a.batch_size, "bench_plain_paced")
    pcpu2 = (time.process_time() - cpu) / a.paced_rows * 1e6
    ref = (pcpu + pcpu2) / 2
    for mode, used, lag, spooled in figures:
        mcpu = used / a.paced_rows * 1e6
        print(f"  pipeline (ShareLog -> chdb), {mode:4} : CPU {mcpu:5.1f} us/row ({mcpu / ref:.2f} of plain), "
              f"{spooled} via the spool, last row in the database {lag:.2f} s after its answer()")
    print(f"  plain clickhouse-connect -> chdb   : CPU {pcpu2:5.1f} us/row (burst run {pcpu:.1f}; ratios use the mean)")


async def latency_figures(tmp: Path, a: argparse.Namespace, emb: ClickHouseSettings) -> None:
    lrecs = records(a.latency_shares, "bench-lat")
    print(f"ShareLog.submit() latency inside a running event loop, {a.latency_shares} shares at "
          f"{a.latency_rate:,.0f}/s (the call alone; the proxy's submit-to-reply follows)")
    up, st_up = await latency(emb.model_copy(update={"batch_size": 1000, "batch_max_age_s": 0.2}), lrecs, a.latency_rate)
    down_s = ClickHouseSettings(url=f"http://127.0.0.1:{closed_port()}", spool_dir=str(tmp / "spool-down"),
                                batch_size=1000, batch_max_age_s=0.2, connect_timeout_s=1, insert_timeout_s=1,
                                close_timeout_s=1, spool_fsync=True)
    down, st_down = await latency(down_s, lrecs, a.latency_rate)
    for name, xs, st in (("database up  ", up, st_up), ("database down", down, st_down)):
        print(f"  {name}: p50 {statistics.median(xs):6.2f} us  p99 {pct(xs, 0.99):6.2f} us  "
              f"p99.9 {pct(xs, 0.999):7.2f} us  max {max(xs):8.1f} us")
        print(f"      {st}")


if __name__ == "__main__":
    asyncio.run(main())
