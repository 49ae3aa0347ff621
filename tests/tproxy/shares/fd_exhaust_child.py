"""Child process of test_descriptors.py: a ShareLog in a process that runs out of descriptors.

    python -m tests.tproxy.shares.fd_exhaust_child URL SPOOL_DIR N_BEFORE N_DURING FD_RESERVE SLOW_SYNC_S

With the database at URL down: submits N_BEFORE shares and waits until they are
spooled; then opens /dev/null until EMFILE (RLIMIT_NOFILE is lowered first, so
that is quick), submits N_DURING more shares and lets the share log run (journal
opens, spool appends, replay attempts) for a while; prints ``exhausted``; waits
for a line on stdin (the parent starts the database), frees the descriptors and
flushes. While out of descriptors each journal fdatasync takes SLOW_SYNC_S longer (a
busy disk: batches are sealed faster than commits return, so the journal holds the
files of several sealed batches at once). Prints one JSON object per line: ``spooled``, ``exhausted``, ``flushed``
(each with the share log's counters).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import resource
import sys
import time

from tproxy.shares.pipeline import ShareLog
from tproxy.shares.record import ShareRecord
from tproxy.shares.settings import ClickHouseSettings

INSTANCE = "fd-test"


def make_share(seq: int, received_at_ms: int) -> ShareRecord:
    return ShareRecord(
        received_at_ms=received_at_ms, instance_id=INSTANCE, share_seq=seq, worker_name=f"rig{seq % 5}",
        client_id=seq % 5 + 1, channel_id=1, sequence_number=seq, sv1_job_id=f"{seq % 97:x}", job_id=seq % 1000,
        nonce=seq, ntime=received_at_ms // 1000, version=0x20000000, extranonce=f"{seq:08x}",
        share_hash=f"{seq:064x}", target_difficulty=1024.0, share_difficulty=2048.0, verdict="accepted",
        forwarded=True,
    )


def emit(event: str, log: ShareLog, **extra: object) -> None:
    print(json.dumps({"event": event, **dataclasses.asdict(log.stats()), **extra}), flush=True)


async def submit(log: ShareLog, first: int, n: int) -> None:
    t0 = int(time.time() * 1000)
    for seq in range(first, first + n):
        log.submit(make_share(seq, t0 - 60_000 + seq))
        if seq % 50 == 0:
            await asyncio.sleep(0.01)


class SlowDisk:
    """The journal's fdatasync seam: ``delay_s`` longer per call while ``slow``."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s, self.slow = delay_s, False

    def __call__(self, fd: int) -> None:
        if self.slow:
            time.sleep(self.delay_s)
        os.fdatasync(fd)


async def main(url: str, spool: str, n1: int, n2: int, reserve: int, slow_sync_s: float) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    s = ClickHouseSettings(
        url=url, spool_dir=spool, batch_size=100, batch_max_age_s=0.05, spool_fsync=True,
        spool_segment_bytes=1 << 16, spool_retry_s=0.05, fd_reserve=reserve,
        retry_backoff_base_s=0.02, retry_backoff_max_s=0.1, connect_timeout_s=1, insert_timeout_s=2,
    )
    disk = SlowDisk(slow_sync_s)
    log = ShareLog(s, INSTANCE, fdatasync=disk)
    await log.start()
    await submit(log, 1, n1)
    while log.stats().queued:
        await asyncio.sleep(0.02)
    emit("spooled", log)
    hog: list[int] = []
    while True:
        try:
            hog.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            break
    disk.slow = True
    await submit(log, n1 + 1, n2)
    await asyncio.sleep(1.5)  # replay attempts, rotations, journal opens: all out of descriptors
    # A loaded machine may need longer to spool everything; stop waiting as soon as the
    # share log reports a file error (the no-reserve case, where it cannot finish).
    deadline = time.monotonic() + 30
    while log.stats().queued and not log.stats().fs_errors and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    emit("exhausted", log, hogged=len(hog))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    disk.slow = False
    for fd in hog:
        os.close(fd)
    flushed = await log.flush(90)
    emit("flushed", log, flushed=flushed)
    await log.close()


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), float(a[5])))
