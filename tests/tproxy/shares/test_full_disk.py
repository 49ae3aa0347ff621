"""A full spool disk, for real: the spool lives on a small tmpfs (mounted for the test; the
test is skipped where mounting is not allowed) that a filler file fills up.

The journal and the spool turn themselves back on as soon as space returns (no restart);
when the database comes back while the disk is still full, batches go straight to it;
afterwards every share is in the table once, the counters agree (docs/SHARE_LOG.md
invariant), and no zero-byte ``*.ack.tmp`` or empty segment is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devnet.chdb_front import ChdbHttpFront
from tests.helpers.share_log import (
    INSTANCE,
    assert_counters_consistent,
    fast_settings,
    shares,
    wait_until,
)
from tproxy.shares.pipeline import ShareLog
from tproxy.shares.spool import KIND_SHARES, Spool


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path) -> Path:
    """Fill the file system with one file; returns it (delete it to make room again)."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
        with contextlib.suppress(OSError):  # whatever is left of the last page
            while os.write(fd, b"\0"):
                pass
    finally:
        os.close(fd)
    return filler


def leftovers(spool: Path) -> list[str]:
    bad = [p.name for p in spool.rglob("*.ack.tmp")]
    bad += [p.name for p in spool.glob("*.seg") if p.stat().st_size == 0]
    return bad


def test_spool_append_on_a_full_disk_keeps_whole_frames(small_fs: Path) -> None:
    sp = Spool(small_fs / "spool", segment_bytes=1 << 16, fsync=True)
    sp.open()
    rows: list[tuple[object, ...]] = [(k, "x" * 200) for k in range(20)]
    n_ok = 0
    filler = None
    for k in range(400):
        if k == 5:
            filler = fill(small_fs)
        try:
            sp.append(KIND_SHARES, f"t:{k}", k, rows)
            n_ok += 1
        except OSError as e:
            assert e.errno == errno.ENOSPC
    assert filler is not None and n_ok < 400
    assert sp.pending_frames == n_ok
    filler.unlink()
    for k in range(400, 410):
        sp.append(KIND_SHARES, f"t:{k}", k, rows)
    sp.close()
    # Reopen: every frame written is whole and in order; no torn frame, nothing quarantined.
    sp2 = Spool(small_fs / "spool", segment_bytes=1 << 16, fsync=False)
    rep = sp2.open()
    assert rep.frames == n_ok + 10 and rep.truncated_bytes == 0 and rep.quarantined == ()
    assert leftovers(small_fs / "spool") == []


async def test_full_disk_then_recovery(small_fs: Path, front: ChdbHttpFront, opened: Any) -> None:
    spool = small_fs / "spool"
    front.stop()
    s = fast_settings(front.url, spool, batch_size=100, spool_segment_bytes=1 << 16, spool_retry_s=0.05,
                      spool_fsync=True)
    log = await opened(ShareLog(s, INSTANCE))
    sent = shares(2300)
    feed = iter(sent)

    async def submit(n: int) -> None:
        for k in range(n):
            log.submit(next(feed))
            if k % 50 == 49:
                await asyncio.sleep(0.005)  # a proxy's loop turns between lines

    # 1. Database down, disk full: nothing can be spooled or journaled; batches wait in memory.
    await submit(300)
    await wait_until(lambda: log.stats().queued == 0, what="first batches spooled")
    filler = fill(small_fs)
    await submit(500)
    await wait_until(lambda: not log.stats().spool_ok and not log.stats().journal_on, what="spool and journal off")
    st = log.stats()
    assert st.queued > 0 and st.fs_errors > 0 and st.quarantined == 0
    assert_counters_consistent(st)

    # 2. Space returns (database still down): spool and journal come back by themselves.
    filler.unlink()
    await wait_until(lambda: log.stats().spool_ok and log.stats().queued == 0, what="spool back")
    await submit(300)
    await wait_until(lambda: log.stats().queued == 0, what="spooled after recovery")
    st = log.stats()
    assert st.journal_on and st.spool_pending == 1100 and st.written == 0
    assert_counters_consistent(st)

    # 3. Disk full again, then the database comes back: batches go straight to it.
    filler = fill(small_fs)
    await submit(600)
    await wait_until(lambda: not log.stats().spool_ok, what="spool off again")
    front.start()
    await wait_until(lambda: log.stats().queued == 0 and log.stats().written >= 600, 60, "direct writes")
    assert filler.exists()  # the disk was still full while those were written
    # The spool is replayed with the disk still full: its ack files cannot be written
    # (counted; the frames stay exactly-once through their tokens), and no .ack.tmp stays.
    errors = log.stats().fs_errors
    await wait_until(lambda: log.stats().replayed >= 300, 60, "replay on a full disk")
    assert filler.exists() and log.stats().fs_errors > errors
    assert leftovers(spool) == []
    filler.unlink()
    await submit(600)
    assert await log.flush(60)
    st = log.stats()
    assert (st.received, st.written, st.queued, st.spool_pending, st.dropped) == (2300, 2300, 0, 0, 0), st
    assert (st.quarantined, st.quarantined_rows) == (0, 0)
    assert st.spool_ok and st.journal_on
    assert_counters_consistent(st)
    await log.close()
    assert int(front.scalar("SELECT count() FROM tproxy.shares")) == 2300
    assert int(front.scalar("SELECT uniqExact(share_seq) FROM tproxy.shares")) == 2300
    assert leftovers(spool) == []
    assert list((spool / "journal").glob("*.jnl")) == []
