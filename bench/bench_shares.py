"""Benchmark of the share log (tproxy.shares): prints figures, asserts nothing.

1. Rows/s through the whole ShareLog pipeline (submit -> batcher -> database
   thread -> clickhouse-connect -> embedded chdb engine), versus rows/s of plain
   clickhouse-connect inserts of the same rows, same batch size, same engine
   and schema, in the same run; and the ratio.
2. Latency of ``ShareLog.submit()`` inside a running event loop at a steady
   share rate, with the database up (embedded engine) and down (an HTTP URL
   on a closed port: every batch goes to the disk spool). The proxy's own
   submit-to-reply figure belongs next to it once the proxy measures it
   (``measure_submit_latency`` takes any callable doing one share).

    .venv/bin/python bench/bench_shares.py [--rows 200000] [--batch-size 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clickhouse_connect

from tproxy.shares.loadgen import make_share
from tproxy.shares.pipeline import ShareLog
from tproxy.shares.record import ShareRecord
from tproxy.shares.schema import SHARE_COLUMNS, SHARE_TYPES, Schema
from tproxy.shares.settings import ClickHouseSettings


def records(n: int, instance_id: str = "bench") -> list[ShareRecord]:
    t0 = int(time.time() * 1000) - 300_000
    return [make_share(s, instance_id=instance_id, received_at_ms=t0 + s * 300_000 // n) for s in range(1, n + 1)]


async def pipeline_rate(recs: list[ShareRecord], settings: ClickHouseSettings) -> tuple[float, float]:
    log = ShareLog(settings, "bench")
    await log.start()
    t = time.perf_counter()
    for i, r in enumerate(recs):
        log.submit(r)
        if i % 1000 == 999:
            await asyncio.sleep(0)  # a proxy's loop yields between lines
    t_submitted = time.perf_counter() - t
    assert await log.flush(600), log.stats()
    elapsed = time.perf_counter() - t
    st = log.stats()
    assert st.written == len(recs) and st.dropped == 0, st
    await log.close()
    return len(recs) / elapsed, t_submitted


def plain_rate(recs: list[ShareRecord], settings: ClickHouseSettings, batch_size: int) -> float:
    """The same rows through clickhouse-connect alone: same engine, same schema (in its own
    database), same batch size, rows already built as tuples (no queue, no spool, no thread)."""
    plain = settings.model_copy(update={"database": "bench_plain"})
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


async def main() -> None:
    for name in ("", "urllib3", "clickhouse_connect", "tproxy"):  # "database down" logs every attempt
        logging.getLogger(name).setLevel(logging.ERROR)
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--batch-size", type=int, default=5_000)
    p.add_argument("--latency-shares", type=int, default=30_000)
    p.add_argument("--latency-rate", type=float, default=10_000.0, help="shares per second")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-shares-"))
    base = {"batch_size": a.batch_size, "batch_max_age_s": 0.5, "spool_fsync": True}
    emb = ClickHouseSettings(url=f"chdb://{tmp / 'db'}", spool_dir=str(tmp / "spool"), **base)
    recs = records(a.rows)
    print(f"share log bench: {a.rows} rows, batch {a.batch_size}, embedded chdb at {tmp / 'db'}")
    rate, t_sub = await pipeline_rate(recs, emb)
    prate = plain_rate(recs, emb, a.batch_size)
    print(f"  pipeline (ShareLog -> chdb)        : {rate:12,.0f} rows/s  (submit() of all rows took {t_sub:.2f} s)")
    print(f"  plain clickhouse-connect -> chdb   : {prate:12,.0f} rows/s")
    print(f"  ratio pipeline / plain             : {rate / prate:12.2f}")

    lrecs = records(a.latency_shares, "bench-lat")
    print(f"ShareLog.submit() latency inside a running event loop, {a.latency_shares} shares at "
          f"{a.latency_rate:,.0f}/s (not the proxy's submit-to-reply: no proxy exists yet)")
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
