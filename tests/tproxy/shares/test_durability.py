"""Durability mode "sync" of the share log (tproxy/shares/journal.py): group commit and the reply gate.

The fdatasync the journal's commit thread calls is replaced by a seam that waits on a
``threading.Event`` (a slow disk, made controllable) and then calls the real
``os.fdatasync``. The database is an HTTP URL on a closed port (down): the journal does
not depend on it. Replies are plain ``list.append`` callables (what the hub hands over
is the SV1 server's write function).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from pathlib import Path
from typing import Any

import pydantic
import pytest

from tests.helpers.share_log import INSTANCE, SlowDisk, fast_settings, shares, wait_until
from tproxy.shares.journal import decode_records
from tproxy.shares.pipeline import ShareLog
from tproxy.shares.settings import ClickHouseSettings


def down_url() -> str:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sk.getsockname()[1]}"


def settings(tmp_path: Path, **kw: Any) -> ClickHouseSettings:
    return fast_settings(down_url(), tmp_path / "spool", batch_max_age_s=60, batch_size=100_000, **kw)


def journal_rows(tmp_path: Path) -> int:
    """Rows (headers excluded) in the journal files on disk."""
    return sum(len(decode_records(p.read_bytes())[1]) for p in (tmp_path / "spool" / "journal").glob("*.jnl"))


async def turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0.005)


async def test_replies_wait_for_fdatasync_and_keep_their_order(tmp_path: Path) -> None:
    disk = SlowDisk()
    log = ShareLog(settings(tmp_path), INSTANCE, fdatasync=disk)
    await log.start()
    try:
        out_a: list[tuple[bytes, int]] = []  # (reply, fdatasync calls returned when it was written)
        out_b: list[bytes] = []
        a, b = object(), object()

        def write_a(line: bytes) -> None:
            out_a.append((line, disk.synced))

        for i, r in enumerate(shares(3)):
            log.answer(a, write_a, f"share{i}".encode(), r)
        log.answer(a, write_a, b"after", None)  # a non-share reply queues behind the held ones
        log.answer(b, out_b.append, b"b-hello", None)  # a miner with nothing held: at once
        assert out_b == [b"b-hello"]
        await turns()  # the first commit is in flight, stuck in fdatasync
        assert out_a == [] and log.stats().durability_waiting == 4
        for i, r in enumerate(shares(100, start=4)):  # all of these wait for the next commit
            log.answer(a, write_a, f"m{i}".encode(), r)
        await turns()
        assert out_a == [] and disk.synced == 0
        disk.gate.set()
        await wait_until(lambda: len(out_a) == 104, what="every reply")
        assert [line for line, _ in out_a] == [b"share0", b"share1", b"share2", b"after"] + [
            f"m{i}".encode() for i in range(100)]
        # Each reply went out only after the fdatasync of the commit holding its share returned.
        assert all(synced >= 1 for _, synced in out_a[:4]) and all(synced >= 2 for _, synced in out_a[4:])
        st = log.stats()
        assert st.journal_commits == 2 and disk.synced == 2  # 103 shares, two group commits
        assert st.durability == "sync" and st.durability_degraded == 0 and st.durability_waiting == 0
        assert journal_rows(tmp_path) == 103
    finally:
        disk.gate.set()
        await log.close()


async def test_fast_mode_answers_at_once_and_never_syncs(tmp_path: Path) -> None:
    disk = SlowDisk()  # gate never opened: a call would fail the test (after 30 s)
    log = ShareLog(settings(tmp_path, durability="fast"), INSTANCE, fdatasync=disk)
    await log.start()
    try:
        out: list[bytes] = []
        for i, r in enumerate(shares(50)):
            log.answer(object(), out.append, f"s{i}".encode(), r)
            assert len(out) == i + 1  # written inside answer(), before the record is journaled
        assert journal_rows(tmp_path) == 0
        await turns(2)  # one loop turn: the journal's plain write()
        assert journal_rows(tmp_path) == 50
        st = log.stats()
        assert st.durability == "fast" and st.journal_commits == 0 and st.received == 50
    finally:
        disk.gate.set()
        await log.close()
    assert disk.synced == 0


async def test_failed_commit_releases_replies_as_degraded_then_recovers(tmp_path: Path) -> None:
    disk = SlowDisk()
    disk.fail = OSError(errno.EIO, "injected fdatasync failure")
    disk.gate.set()
    log = ShareLog(settings(tmp_path, spool_retry_s=0.05), INSTANCE, fdatasync=disk)
    await log.start()
    try:
        out: list[bytes] = []
        m = object()
        for i, r in enumerate(shares(5)):
            log.answer(m, out.append, f"s{i}".encode(), r)
        await wait_until(lambda: len(out) == 5, what="replies after the failed commit")
        st = log.stats()
        assert st.durability_degraded == 5 and not st.journal_on and st.fs_errors >= 1
        # The ticker turns the journal back on; records of the next batch are held and synced again.
        await wait_until(lambda: log._journal.on, what="journal probed again")
        log._seal(0)  # the next record opens a new batch, whose journal open is the probe
        for i, r in enumerate(shares(3, start=6)):
            log.answer(m, out.append, f"t{i}".encode(), r)
        await wait_until(lambda: len(out) == 8, what="replies after recovery")
        st = log.stats()
        assert st.durability_degraded == 5 and st.journal_on and disk.synced >= 1
    finally:
        await log.close()


async def test_too_many_waiting_replies_block_then_give_up_on_a_stalled_disk(tmp_path: Path) -> None:
    disk = SlowDisk()
    log = ShareLog(settings(tmp_path, durability_max_waiting=5, durability_stall_s=0.2), INSTANCE, fdatasync=disk)
    await log.start()
    try:
        out: list[bytes] = []
        m = object()
        recs = shares(12)
        for i in range(5):
            log.answer(m, out.append, f"s{i}".encode(), recs[i])
        await turns()
        assert out == []  # at the bound, not over it: held
        # Over the bound with the disk stalled: the call blocks up to durability_stall_s, then
        # every held reply goes out unconfirmed (memory stays bounded, the loop goes on).
        log.answer(m, out.append, b"s5", recs[5])
        assert out == [f"s{i}".encode() for i in range(6)]
        st = log.stats()
        assert st.durability_degraded == 6 and st.durability_waiting == 0
        # A disk that answers within the stall bound: the call returns with the replies confirmed.
        for i in range(6, 11):
            log.answer(m, out.append, f"s{i}".encode(), recs[i])
        threading.Timer(0.05, disk.gate.set).start()
        log.answer(m, out.append, b"s11", recs[11])
        await wait_until(lambda: len(out) == 12, what="the rest")
        assert out == [f"s{i}".encode() for i in range(12)]
        assert log.stats().durability_degraded == 6
    finally:
        disk.gate.set()
        await log.close()


async def test_when_durable_answers_in_order_once_the_commit_returned(tmp_path: Path) -> None:
    """The gate for replies held elsewhere (a worker process): True once the commit holding the
    records submitted before it returned, in call order; False when the journal did not take them."""
    disk = SlowDisk()
    log = ShareLog(settings(tmp_path, spool_retry_s=60), INSTANCE, fdatasync=disk)
    await log.start()
    try:
        told: list[tuple[str, bool, int]] = []  # (which, durable, fdatasync calls returned by then)

        def done(which: str) -> Any:
            return lambda durable: told.append((which, durable, disk.synced))

        for r in shares(3):
            log.submit(r)
        log.when_durable(done("a"))
        await turns()  # the first commit is stuck in fdatasync
        for r in shares(2, start=4):
            log.submit(r)
        log.when_durable(done("b"))  # its records wait for the next commit
        await turns()
        assert told == []
        disk.gate.set()
        await wait_until(lambda: len(told) == 2, what="both callbacks")
        assert told == [("a", True, 1), ("b", True, 2)]
        log.when_durable(done("nothing new"))  # no record since: everything is already on disk
        assert told[-1] == ("nothing new", True, 2)
        # The journal is off (a failed write): records are not journaled, told at once.
        log._journal._failed(OSError(errno.EIO, "injected"))
        log.submit(shares(1, start=9)[0])
        log.when_durable(done("off"))
        assert told[-1] == ("off", False, 2)
    finally:
        disk.gate.set()
        await log.close()
    told.clear()
    log.when_durable(done("closed"))
    assert told == [("closed", False, 2)]


async def test_close_waits_for_the_commit_and_releases_held_replies(tmp_path: Path) -> None:
    disk = SlowDisk()
    log = ShareLog(settings(tmp_path), INSTANCE, fdatasync=disk)
    await log.start()
    out: list[bytes] = []
    m = object()
    for i, r in enumerate(shares(4)):
        log.answer(m, out.append, f"s{i}".encode(), r)
    log.answer(m, out.append, b"ping", None)
    await turns()
    closing = asyncio.create_task(log.close())
    await turns()
    assert out == [] and not closing.done()
    disk.gate.set()
    await closing
    assert out == [b"s0", b"s1", b"s2", b"s3", b"ping"]
    st = log.stats()
    assert st.durability_degraded == 0 and st.spool_pending == 4  # database down: spooled at close


async def test_a_row_the_journal_cannot_encode_turns_it_off_and_releases_the_replies(tmp_path: Path) -> None:
    """Rows are encoded when the commit starts; a value marshal cannot encode (a bug upstream)
    fails like a write: the journal goes off, the held replies go out as degraded."""
    disk = SlowDisk()
    disk.gate.set()
    log = ShareLog(settings(tmp_path), INSTANCE, fdatasync=disk)
    await log.start()
    try:
        out: list[bytes] = []
        good, bad = shares(2)
        log.answer(object(), out.append, b"good", good)
        log.answer(object(), out.append, b"bad", bad._replace(worker_name=object()))  # type: ignore[arg-type]
        await wait_until(lambda: len(out) == 2, what="both replies")
        st = log.stats()
        assert out == [b"good", b"bad"] and not st.journal_on and st.durability_degraded == 2
        assert st.fs_errors >= 1 and st.durability_waiting == 0
    finally:
        await log.close()


def test_sync_needs_the_journal() -> None:
    assert ClickHouseSettings().durability == "sync"
    with pytest.raises(pydantic.ValidationError, match="journal_open_batches"):
        ClickHouseSettings(journal_open_batches=False)
    assert ClickHouseSettings(journal_open_batches=False, durability="fast").durability == "fast"
    with pytest.raises(pydantic.ValidationError):
        ClickHouseSettings(durability="fsync")
