"""A stand-alone share-log runner: synthetic shares into a ShareLog, as the proxy would send them.

Owns nothing the proxy needs; it exists so the crash test (and an operator
checking a database) can run a real ShareLog in its own process, kill it,
and start it again on the same spool. The proxy replaces it later: what it
does with a ShareLog (start, submit from the event loop, close) is exactly
what ``tproxy.runtime.Proxy`` does.

    python -m devnet.loadgen --url chdb://./data/x.chdb --spool-dir ./data/spool \\
        --count 10000 [--start-seq 1] [--then close|hang] [--batch-size N]

Prints one JSON object per line on stdout: ``started``, ``durable`` (every
submitted record is in ClickHouse or on disk) and, with ``--then close``,
``closed`` after a flush. ``--then hang`` waits forever after ``durable``
(the test kills it). Records are deterministic functions of ``share_seq``
(see ``make_share``), so a checker knows exactly what was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import time

from tproxy.shares.pipeline import ShareLog
from tproxy.shares.record import VERDICT_ACCEPTED, ShareRecord
from tproxy.shares.settings import ClickHouseSettings

REJECT_EVERY = 10  # every 10th share is rejected ("stale-share")


def make_share(seq: int, *, instance_id: str, received_at_ms: int, workers: int = 8) -> ShareRecord:
    """The synthetic share number ``seq``. Difficulties are multiples of 1/256 so their
    sums are exact in binary floating point, and the checks can compare exactly."""
    w = seq % workers
    accepted = seq % REJECT_EVERY != 0
    return ShareRecord(
        received_at_ms=received_at_ms,
        instance_id=instance_id,
        share_seq=seq,
        worker_name=f"farm.worker{w}",
        client_id=w + 1,
        channel_id=1 + w % 2,
        sequence_number=seq if accepted else 0,
        sv1_job_id=f"{seq % 97:x}",
        job_id=seq % 1000,
        nonce=(seq * 2654435761) & 0xFFFFFFFF,
        ntime=received_at_ms // 1000,
        version=0x20000000,
        extranonce=f"{w:04x}{seq:08x}",
        share_hash=f"{seq:064x}",
        target_difficulty=float(1 << (10 + w % 4)),
        share_difficulty=1024.0 + (seq % 4096) / 256,
        verdict=VERDICT_ACCEPTED if accepted else "stale-share",
        forwarded=accepted,
    )


def _emit(event: str, log: ShareLog, **extra: object) -> None:
    print(json.dumps({"event": event, **dataclasses.asdict(log.stats()), **extra}), flush=True)


async def run(args: argparse.Namespace) -> int:
    settings = ClickHouseSettings(
        url=args.url,
        database=args.database,
        spool_dir=args.spool_dir,
        batch_size=args.batch_size,
        batch_max_age_s=args.batch_max_age,
        insert_timeout_s=args.insert_timeout,
        connect_timeout_s=min(args.insert_timeout, 3.0),
        retry_backoff_base_s=0.05,
        retry_backoff_max_s=0.5,
        close_timeout_s=args.close_timeout,
        compress=not args.no_compress,
    )
    log = ShareLog(settings, args.instance_id)
    await log.start()
    _emit("started", log)
    now_ms = int(time.time() * 1000)
    for k in range(args.count):
        seq = args.start_seq + k
        log.submit(make_share(seq, instance_id=args.instance_id, received_at_ms=now_ms + k // 100))
        if k % 500 == 499:
            await asyncio.sleep(0)  # let the batcher run, as the proxy's loop would
    while log.stats().queued:
        await asyncio.sleep(0.01)
    _emit("durable", log)
    if args.then == "hang":
        await asyncio.Event().wait()
    flushed = await log.flush(args.flush_timeout)
    await log.close()
    _emit("closed", log, flushed=flushed)
    return 0 if flushed else 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devnet.loadgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--spool-dir", required=True)
    p.add_argument("--database", default="tproxy")
    p.add_argument("--instance-id", default="loadgen")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--start-seq", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--batch-max-age", type=float, default=0.2)
    p.add_argument("--insert-timeout", type=float, default=2.0)
    p.add_argument("--close-timeout", type=float, default=5.0)
    p.add_argument("--flush-timeout", type=float, default=60.0)
    p.add_argument("--no-compress", action="store_true", help="HTTP: send inserts uncompressed")
    p.add_argument("--then", choices=("close", "hang"), default="close")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
