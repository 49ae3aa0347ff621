"""The open-batch journal, and the reply gate of durability mode "sync".

Owns the per-batch journal files under ``spool_dir/journal/`` (open, append,
seal, delete, recovery at start), their failure and re-enable rules, and,
when ``durability = "sync"``, the group commit and the replies held for it.

File: ``{s|v}-{run_id hex}-{batch number}.jnl``; records
``len u32 | crc32 u32 | marshal(body)``: first a header, the tuple
``(instance_id, run_id, kind, batch number)``, then the rows, each record the
list of rows the batch received since the previous one (one per write or
commit: one ``marshal.dumps`` for all of them, not one per row). Journals
written before that hold one row (a tuple) per record; ``recover`` reads
both. A batch's number (and so its deduplication token) is fixed when its
first record arrives.

The journal does no per-row work on the share path: ``open`` is handed the
batch's own row list, ``added`` notes that a row was appended to it, and
the rows appended since the last take are encoded when the tick's write
(fast) or the next commit (sync) starts.

Two modes (``ClickHouseSettings.durability``):

* ``"fast"``: the records of one event-loop tick go out in one plain
  ``write()`` from a ``call_soon`` callback; no fsync. The reply to a share is
  written by the hub before that, so a SIGKILL can lose the records of the
  interrupted loop iteration although their miners hold an answer.
* ``"sync"`` (default): the buffered records go to a commit thread, which
  ``write()``s and ``fdatasync()``s them (plus the directory once after a new
  file) and reports back to the loop. One commit is in flight at a time;
  everything that arrives meanwhile waits in the buffer and goes out in the
  next one (group commit: one fdatasync per commit, not per share). The reply
  to a share is held (``answer()``) until the commit holding its record has
  returned; a later reply to the same miner waits behind it, so each miner
  sees its replies in request order. A SIGKILL then loses no answered share.

  Bounds: at most ``durability_max_waiting`` replies wait. Above it the loop
  blocks on the commit in flight (the miners wait: nothing is read meanwhile),
  for at most ``durability_stall_s``; a disk that stalls longer gets every held
  reply released unconfirmed (counted in ``degraded``) and an error line. A
  journal that cannot be written (disk full, out of descriptors) is turned off
  as in fast mode; replies are then written at once and counted in
  ``degraded`` (the records are in memory and reach ClickHouse or the spool as
  usual; only a kill in that time can lose them) until a write succeeds again.

  ``after_commit()`` is the same gate for a caller that holds its replies
  elsewhere (a worker process, ``tproxy.pipe_sink``): a callback told, in call
  order, whether the records appended before it are on disk, once that is known.

Every journal file descriptor is opened and closed on the event loop's
thread; the commit thread only writes and syncs descriptors that stay open
until its commit has been reported back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import marshal
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

from tproxy.shares.fdreserve import FdReserve
from tproxy.shares.ratelog import RateLimitedLog
from tproxy.shares.spool import Spool

log = logging.getLogger("tproxy.shares")

KIND_LETTER = ("s", "v", "e")  # shares, pool verdicts, events (spool KINDS order)
JREC = struct.Struct("<II")  # journal record: body length, CRC-32 of the body; body = marshal
# marshal version 2 has no back-references: half the encoding time of version 4 for
# ~15% more bytes (bench_shares rows); marshal.loads reads every version.
MARSHAL_VERSION = 2
DEFAULT_FDATASYNC: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)

Write = Callable[[bytes], None]
Done = Callable[[bool], None]  # after_commit's callback: True when the records are on disk


@dataclass(slots=True, eq=False)
class _Held:
    """The replies held for one commit group, in the order they are to be written."""

    group: int  # released once this commit group is settled
    # (miner, write, line) of each reply, flat: no object per reply for the garbage collector
    # to track while the reply waits (a tuple per held reply outlives a commit and took
    # bench_shares from 6 to 8-9 full collections per 200,000 shares).
    replies: list[object] = field(default_factory=list)
    shares: int = 0  # replies to shares whose record is in this group's commit
    unjournaled: int = 0  # replies to shares that were not journaled (held only to keep the order)


class _Commit(NamedTuple):
    fut: Future[None]
    group: int
    closes: list[int]  # descriptors sealed before this commit: closed once it returned


def batch_token(instance_id: str, run_id: int, kind: int, batch_no: int) -> str:
    return f"{instance_id}:{run_id:x}:{KIND_LETTER[kind]}:{batch_no}"


def encode_record(body: Any) -> bytes:
    """One journal record: ``len u32 | crc32 u32 | marshal(body)``; ``body`` holds plain values only."""
    data = marshal.dumps(body, MARSHAL_VERSION)
    return JREC.pack(len(data), zlib.crc32(data)) + data


def decode_records(data: bytes) -> tuple[tuple[Any, ...] | None, list[tuple[Any, ...]]]:
    """(header, rows) of a journal file's bytes, up to its last whole record (a torn tail,
    from a power loss or a kill during a commit, is left out). Reads both record layouts:
    a list of rows, and the older one row (a tuple) per record."""
    off = 0
    header: tuple[Any, ...] | None = None
    rows: list[tuple[Any, ...]] = []
    while off + JREC.size <= len(data):
        n, crc = JREC.unpack_from(data, off)
        body = data[off + JREC.size : off + JREC.size + n]
        if len(body) < n or zlib.crc32(body) != crc:
            break
        off += JREC.size + n
        obj = marshal.loads(body)
        if header is None:
            header = obj
        elif type(obj) is list:
            rows.extend(obj)
        else:
            rows.append(obj)
    return header, rows


class Journal:
    """The open-batch journal of one ShareLog (see the module docstring). Loop thread only,
    except ``recover`` (spool thread, at start) and ``_commit_io`` (commit thread)."""

    def __init__(self, directory: Path, instance_id: str, run_id: int, *, sync: bool, retry_s: float,
                 max_waiting: int, stall_s: float, rlog: RateLimitedLog,
                 fdatasync: Callable[[int], None] = DEFAULT_FDATASYNC) -> None:
        self.directory = directory
        self.instance_id, self.run_id = instance_id, run_id
        self.sync = sync
        self._retry_s, self._max_waiting, self._stall_s = retry_s, max_waiting, stall_s
        self._rlog = rlog
        self._fdatasync = fdatasync  # a seam: the tests slow it down
        self.ready = False  # enabled, directory made, old journals recovered
        self.on = False  # writing now (off for retry_s after a failure)
        self.failing = False  # the last write failed and none succeeded since
        self._retry_at = 0.0
        self.fs_errors = 0
        self._fd: list[int | None] = [None] * len(KIND_LETTER)
        self._path: list[str | None] = [None] * len(KIND_LETTER)
        self._rows: list[list[tuple[object, ...]]] = [[] for _ in KIND_LETTER]  # the open batch's rows
        self._taken = [0] * len(KIND_LETTER)  # rows of it already encoded into _buf
        self._buf: dict[int, list[bytes]] = {}  # fd -> encoded records not yet written
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reserve: FdReserve | None = None
        # sync mode
        self._exec: ThreadPoolExecutor | None = None
        self._dirfd: int | None = None
        self._new_file = False  # a file was created since the last commit: sync the directory too
        self._to_close: list[int] = []  # sealed descriptors whose records are all in the buffer
        self._inflight: _Commit | None = None
        self._group = 1  # the open group: records appended now are committed with it
        self._durable_upto = 0  # groups whose commit returned without error
        self._release_upto = 0  # groups whose replies may go out (durable, or given up on)
        self._held: deque[_Held] = deque()  # by group, oldest first
        self._held_by: dict[object, _Held] = {}  # miner -> the group of its latest held reply
        self._waiting = 0  # replies in _held
        self._watchers: deque[tuple[int, bool, Done]] = deque()  # (group, journaled, done): after_commit
        self.commits = 0
        self.degraded = 0  # share replies written before their record was known to be on disk

    # ------------------------------------------------------------------ lifecycle

    def attach(self, loop: asyncio.AbstractEventLoop, reserve: FdReserve) -> None:
        self._loop, self._reserve = loop, reserve
        if self.sync and self._exec is None:
            self._exec = ThreadPoolExecutor(1, thread_name_prefix="sharelog-journal")

    def enable(self) -> None:
        """After recovery (the directory exists): start journaling."""
        self.ready = self.on = True
        if self.sync and self._dirfd is None:
            try:
                assert self._reserve is not None
                self._dirfd = self._reserve.open(self.directory, os.O_RDONLY)
            except OSError as e:
                self._failed(e)  # retried by probe()

    def probe(self) -> None:
        """Ticker: turn a failed journal back on once its retry time has come; the next
        batch's open and write are the probe (a failure turns it off again)."""
        if self.ready and not self.on and time.monotonic() >= self._retry_at:
            self.on = True
            if self.sync and self._dirfd is None:
                with contextlib.suppress(OSError):
                    assert self._reserve is not None
                    self._dirfd = self._reserve.open(self.directory, os.O_RDONLY)

    async def close(self) -> None:
        """At ``ShareLog.close()``, after the last batch was sealed: commit what is buffered,
        release every held reply, close every descriptor."""
        while self._inflight is not None or (self.sync and self._take_all()):
            if self._inflight is None:
                self._start_commit()
            c = self._inflight
            assert c is not None
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(c.fut)
            self._settle(c)
            await asyncio.sleep(0)
        self._flush()
        self._give_up("share log closing")
        for fd in self._to_close:
            self._close_fd(fd)
        self._to_close = []
        if self._dirfd is not None:
            self._close_fd(self._dirfd)
            self._dirfd = None
        if self._exec is not None:
            self._exec.shutdown(wait=False)
            self._exec = None

    # ------------------------------------------------------------------ files

    def _name(self, kind: int, batch_no: int) -> str:
        return str(self.directory / f"{KIND_LETTER[kind]}-{self.run_id:x}-{batch_no}.jnl")

    def open(self, kind: int, batch_no: int, rows: list[tuple[object, ...]]) -> None:
        """Batch ``batch_no`` opens with the empty list ``rows``, which receives its rows: create
        its file (when on). The journal takes what was appended to ``rows`` (``added``) at each
        write or commit, until ``seal``; the share log must not replace or shrink the list."""
        if not self.on:
            return
        path = self._name(kind, batch_no)
        assert self._reserve is not None
        if self._reserve.held < self._reserve.size:
            self._close_sealed()
            if not self.on:  # a commit it waited for failed
                return
        try:
            fd = self._reserve.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        except OSError as e:
            self._failed(e)
            return
        self._fd[kind], self._path[kind] = fd, path
        self._rows[kind], self._taken[kind] = rows, len(rows)
        self._new_file = True
        self._buf.setdefault(fd, []).append(encode_record((self.instance_id, self.run_id, kind, batch_no)))

    def _close_sealed(self) -> None:
        """Out of descriptors (the reserve was drawn on): in sync mode the file of each batch
        sealed during a commit stays open until the commit after it, so a slow disk keeps
        many open and they would take the whole reserve (the next journal file or spool
        segment then fails with EMFILE). Run those commits now, the loop blocked for at most
        ``stall_s`` as in ``_backpressure``, so their files go back to the reserve first."""
        deadline = time.monotonic() + self._stall_s
        while self._to_close or (self._inflight is not None and self._inflight.closes):
            if self._inflight is None:
                if not self._take_all():
                    for fd in self._to_close:
                        self._close_fd(fd)
                    self._to_close = []
                    return
                self._start_commit()
            c = self._inflight
            assert c is not None
            left = deadline - time.monotonic()
            if left <= 0 or not concurrent.futures.wait([c.fut], timeout=left).done:
                return  # a stalled disk: the open that follows may fail (counted, retried)
            self._settle(c)

    def added(self, kind: int) -> bool:
        """A row was appended to the open batch's list of ``kind``: True when the journal takes
        it (this tick's write, or the next commit); False when the journal is not writing."""
        if self._fd[kind] is None:
            return False
        # One write() per tick (and commit), not per record: each write releases the GIL,
        # and a busy database thread then holds the loop up.
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return True

    def _take(self, kind: int) -> None:
        """Encode the rows appended to the open batch of ``kind`` since the last take as one
        record into the buffer."""
        fd, rows = self._fd[kind], self._rows[kind]
        lo, hi = self._taken[kind], len(rows)
        if fd is None or hi == lo:
            return
        self._taken[kind] = hi
        try:
            chunk = encode_record(rows[lo:hi])
        except ValueError as e:  # a value marshal cannot encode (a bug upstream): as a failed write
            self._failed(OSError(errno.EINVAL, f"cannot encode a row: {e}"))
            return
        buf = self._buf.get(fd)
        if buf is None:
            self._buf[fd] = [chunk]
        else:
            buf.append(chunk)

    def _take_all(self) -> bool:
        """Take every open batch's new rows; True when anything is buffered."""
        for kind in range(len(KIND_LETTER)):
            self._take(kind)
        return bool(self._buf)

    def seal(self, kind: int) -> str | None:
        """The batch of ``kind`` is sealed: detach its file; returns its path (deleted by
        ``done()`` once the batch is durable). Fast mode writes what is buffered for it now;
        sync mode leaves that to the next commit and closes the file after it."""
        self._take(kind)
        fd, path = self._fd[kind], self._path[kind]
        self._fd[kind] = self._path[kind] = None
        self._rows[kind] = []
        if fd is None:
            return path
        if not self.sync:
            chunks = self._buf.pop(fd, None)
            if chunks:
                self._write_now(fd, chunks)
            self._close_fd(fd)
        elif fd in self._buf or self._inflight is not None:
            self._to_close.append(fd)
        else:
            self._close_fd(fd)
        return path

    @staticmethod
    def done(path: str | None) -> None:
        """The batch is in ClickHouse or in the spool: its journal is no longer needed."""
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _close_fd(self, fd: int) -> None:
        try:
            if self._reserve is not None:
                self._reserve.close(fd)
            else:
                os.close(fd)
        except OSError:
            pass

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._take_all():
            return
        if self.sync:
            if self._inflight is None:
                self._start_commit()
            return
        buf, self._buf = self._buf, {}
        for fd, chunks in buf.items():
            if not self._write_now(fd, chunks):
                return

    def _write_now(self, fd: int, chunks: list[bytes]) -> bool:
        data = b"".join(chunks)
        try:
            # No fsync: survives a kill, not a power loss. A short write means a full disk.
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as e:
            self._failed(e)
            return False
        self._recovered()
        return True

    def _recovered(self) -> None:
        if self.failing:
            self.failing = False
            log.info("share log: open-batch journal in %s is writing again", self.directory)

    def _failed(self, e: OSError) -> None:
        self.fs_errors += 1
        self._rlog.log(logging.ERROR, "share log: open-batch journal in %s failed (%s); off, retried every %gs: "
                       "a killed process can meanwhile lose the records of the open batch%s",
                       self.directory, e, self._retry_s,
                       "; replies are not held for the disk meanwhile (durability_degraded)" if self.sync else "",
                       key=f"journal:{e.errno}")
        self.on = False
        self.failing = True
        self._retry_at = time.monotonic() + self._retry_s
        self._buf.clear()
        for k in range(len(KIND_LETTER)):
            # The path stays: the partial file is deleted with its batch (seal() hands it over).
            fd, self._fd[k] = self._fd[k], None
            if fd is not None:
                self._to_close.append(fd)
        if self._inflight is None:
            for fd in self._to_close:
                self._close_fd(fd)
            self._to_close = []
        # Records of the open group were discarded: their replies must not wait for a commit.
        self._release_upto = max(self._release_upto, self._group)
        self._group += 1
        if self._inflight is None:
            self._release()

    # ------------------------------------------------------------------ group commit (sync mode)

    def _start_commit(self) -> None:
        assert self._exec is not None and self._loop is not None
        # Every row added so far goes into this commit: a reply held with the open group
        # is released when this commit returns, so its row must be in it.
        self._take_all()
        work = [(fd, b"".join(chunks)) for fd, chunks in self._buf.items()]
        self._buf = {}
        dirfd = self._dirfd if self._new_file else None
        self._new_file = False
        group = self._group
        self._group += 1
        closes, self._to_close = self._to_close, []
        fut = self._exec.submit(self._commit_io, work, dirfd)
        commit = _Commit(fut, group, closes)
        self._inflight = commit
        loop = self._loop
        fut.add_done_callback(lambda _f: loop.call_soon_threadsafe(self._settle, commit))

    def _commit_io(self, work: list[tuple[int, bytes]], dirfd: int | None) -> None:
        # Commit thread. os.write and os.fdatasync release the GIL.
        for fd, data in work:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write")
        for fd, _ in work:
            self._fdatasync(fd)
        if dirfd is not None:
            os.fsync(dirfd)  # the new file's directory entry

    def _settle(self, c: _Commit) -> None:
        """Loop: a commit returned. Release the replies it covers, close the files sealed
        before it, and start the next commit with whatever arrived meanwhile."""
        if self._inflight is not c:
            return  # already settled (close() or a stall wait got here first)
        self._inflight = None
        self.commits += 1
        exc = c.fut.exception()
        if exc is None:
            self._durable_upto = c.group
            self._release_upto = max(self._release_upto, c.group)
            self._recovered()
        for fd in c.closes:
            self._close_fd(fd)
        if exc is not None:
            self._failed(exc if isinstance(exc, OSError) else OSError(errno.EIO, str(exc)))
        self._release()
        if self._inflight is None:
            if self._take_all():
                self._start_commit()  # takes the sealed descriptors along
            else:
                for fd in self._to_close:
                    self._close_fd(fd)
                self._to_close = []

    # ------------------------------------------------------------------ replies (sync mode)

    @property
    def waiting(self) -> int:
        return self._waiting

    def answer(self, key: object, write: Write, line: bytes, share: bool, journaled: bool) -> None:
        """Write the reply ``line`` to miner ``key``: at once, or (sync mode) once the commit
        holding its share's record returned, and never before an earlier held reply of
        that miner."""
        if share and journaled:
            h = self._held[-1] if self._held else None
            if h is None or h.group != self._group:
                h = _Held(self._group)
                self._held.append(h)
            h.shares += 1
        else:
            # Behind the miner's latest held reply, in the same group: out right after it.
            h = self._held_by.get(key)
            if h is None:
                if share:
                    self.degraded += 1
                write(line)
                return
            if share:
                h.unjournaled += 1
        h.replies.extend((key, write, line))
        self._held_by[key] = h
        self._waiting += 1
        if self._waiting > self._max_waiting:
            self._backpressure()

    def after_commit(self, done: Done, journaled: bool) -> None:
        """``done(durable)`` once the commit holding every record appended so far has returned
        (``durable`` True) or was given up on, or at once (False) when ``journaled`` is False (some
        of those records are not in the journal) and no earlier callback waits. Callbacks run in
        call order, like the held replies of one miner; they do not count toward the bound."""
        if not journaled and not self._watchers:
            done(False)
            return
        # Rows not yet committed (buffered or still to take) go with the open group; otherwise
        # they are in the commit in flight, or already on disk.
        group = self._group if journaled and self._take_all() else self._group - 1
        self._watchers.append((group, journaled, done))
        if group <= self._release_upto:
            self._release()

    def _release(self) -> None:
        held, upto, held_by = self._held, self._release_upto, self._held_by
        while held and held[0].group <= upto:
            h = held.popleft()
            self._waiting -= len(h.replies) // 3
            self.degraded += h.unjournaled + (h.shares if h.group > self._durable_upto else 0)
            r = h.replies
            for key, write, line in zip(r[0::3], r[1::3], r[2::3], strict=True):
                if held_by.get(key) is h:
                    del held_by[key]
                try:
                    cast(Write, write)(cast(bytes, line))
                except Exception:  # one broken connection must not keep the others' replies
                    log.debug("share log: a held reply could not be written", exc_info=True)
        watchers, durable = self._watchers, self._durable_upto
        while watchers and watchers[0][0] <= upto:
            group, journaled, done = watchers.popleft()
            try:
                done(journaled and group <= durable)
            except Exception:
                log.exception("share log: an after_commit callback failed")

    def _backpressure(self) -> None:
        """Too many replies wait: block the loop (no miner is read meanwhile) on the commit
        in flight, at most ``stall_s``; a disk stalled longer gets them released unconfirmed."""
        deadline = time.monotonic() + self._stall_s
        while self._waiting > self._max_waiting:
            if self._inflight is None:
                if not self._take_all():
                    break
                self._start_commit()
            c = self._inflight
            assert c is not None
            left = deadline - time.monotonic()
            if left <= 0 or not concurrent.futures.wait([c.fut], timeout=left).done:
                self._give_up(f"the disk did not confirm a commit within {self._stall_s:g}s")
                return
            self._settle(c)

    def _give_up(self, why: str) -> None:
        if self._held:
            self._rlog.log(logging.ERROR, "share log: %s; %d replies written before their shares were known "
                           "to be on disk (durability_degraded)", why, self._waiting, key="journal:stall")
        self._release_upto = max(self._release_upto, self._group)
        self._group += 1
        self._release()

    # ------------------------------------------------------------------ recovery (spool thread, at start)

    def recover(self, spool: Spool) -> tuple[int, int]:
        """Turn the journals a killed run left behind into spool frames under their batches'
        tokens, then delete them. Returns (batches, records)."""
        batches = records = 0
        for path in sorted(self.directory.glob("*.jnl")):
            header, rows = decode_records(spool.read_file(path))
            if header is not None and rows:
                instance_id, run_id, kind, batch_no = header
                spool.append(kind, batch_token(instance_id, run_id, kind, batch_no), int(rows[0][0]), rows)
                batches += 1
                records += len(rows)
            path.unlink()
        return batches, records
