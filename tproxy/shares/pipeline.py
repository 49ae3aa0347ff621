"""ShareLog: the durable share log the proxy hands every ShareRecord to.

Owns the in-memory queue, the batcher, the database thread, the spool
thread and the counters. The share path calls ``submit()`` /
``submit_pool_verdict()``: a tuple is appended to the batch being built and
the call returns; nothing on that path waits for the database or the disk.

Flow::

    submit() ─▶ building batch ─(batch_size or batch_max_age_s)─▶ ready deque
                                                                    │
          database up, spool empty, queue under queue_size ◀────────┤
          │ writer task: insert on the DB thread, token attached     │ otherwise
          ▼                                                          ▼
      ClickHouse  ◀── replay in order, with backoff ───  spool (disk, spool thread)
                        (writer task, same token)            ▲
                                                             └── a failed direct insert

* A batch gets its deduplication token when it is sealed:
  ``{instance_id}:{run_id hex}:{s|v}:{batch number}``. ``run_id`` is new for
  every process start (``share_seq`` restarts at 1), so tokens never repeat
  across restarts, and the same batch always carries the same token: a
  retry, a replay of a spooled copy, or a replay after a crash whose insert
  did land before the crash are all dropped by ClickHouse.
* A direct insert is tried once. If it fails the batch is written to the
  spool at once (so a kill during an outage loses nothing that was sealed)
  and retried from there with exponential backoff. While the spool holds
  anything, new batches go to the spool too, so the replay order is the
  order the batches were sealed in.
* Text: every string field passes ``tproxy.text.clean_text`` in
  ``submit()`` (valid Unicode stored as received, lone surrogates become
  U+FFFD), so a row always encodes. Behind that, a batch the database
  rejects as bad data is split in halves until only the rows it rejects one
  by one are left; those go to ``spool_dir/quarantine`` (counted in
  ``quarantined_rows``) and every other row is written.
* Files: the share log keeps a few descriptors in reserve
  (``tproxy.shares.fdreserve``) and treats a file it cannot open, read or
  write (EMFILE, ENFILE, ENOSPC, EACCES...) as retry-later, never as
  corruption. A spool or journal that failed is probed again every
  ``spool_retry_s`` and re-enabled by the first write that succeeds; while
  the spool cannot be written, batches wait in memory and go straight to
  the database, which is probed at the same pace when it is down.
* ``close()`` writes what it can within ``close_timeout_s`` and spools the
  rest, including a batch whose insert is still in flight (its token makes a
  late landing harmless).

* Open-batch journal (``journal_open_batches``, on by default;
  ``tproxy.shares.journal``): every record is also appended to a small file
  per batch under ``spool_dir/journal/`` until its batch is in ClickHouse or
  the spool. After a SIGKILL (or OOM kill, or a crash) the next start finds the
  files of the batches that were still open or in flight, appends each to the
  spool under the token that batch had or would have had, and replays them
  like any spooled batch: one that did land is dropped by ClickHouse's
  deduplication.
* Durability (``durability``): in ``"sync"`` (default) the hub's reply to a
  share (``answer()``) is held until the journal's group commit (write +
  fdatasync on the journal thread) holding the record returned, so a SIGKILL
  loses no answered share; in ``"fast"`` the reply is written at once and the
  journal gets one plain ``write()`` per loop tick: a SIGKILL can lose the
  records of the loop iteration it interrupts (docs/SHARE_LOG.md).

``submit`` and ``answer`` must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from tproxy.shares.fdreserve import FdReserve
from tproxy.shares.journal import DEFAULT_FDATASYNC, Journal, batch_token
from tproxy.shares.ratelog import RateLimitedLog
from tproxy.shares.record import EventRecord, PoolVerdictRecord, ShareRecord
from tproxy.shares.settings import ClickHouseSettings
from tproxy.shares.spool import (
    KIND_EVENTS,
    KIND_SHARES,
    KIND_VERDICTS,
    KINDS,
    FrameRef,
    Spool,
    SpoolCorrupt,
)
from tproxy.shares.store import Store, is_bad_data
from tproxy.text import clean_text

log = logging.getLogger("tproxy.shares")

T = TypeVar("T")
DOWN_LOG_INTERVAL_S = 60.0
ERROR_LOG_INTERVAL_S = 60.0  # identical file-system errors: first one, then a count this often


@dataclass(frozen=True, slots=True)
class ShareLogStats:
    """A snapshot of the share log's counters. Totals only grow for the life of the process.

    Record counters (``queued``, ``written``, ``spooled``, ``replayed``,
    ``spool_pending``, ``received``, ``recovered``, ``quarantined_rows``)
    count share records; pool verdicts have their own.

    Invariant (docs/SHARE_LOG.md), whenever the event loop is between two steps
    of the share log and no spool write is under way::

        received + recovered == queued + written + spool_pending + quarantined_rows + dropped
    """

    queued: int  # share records in memory (building, sealed, in flight)
    written: int  # share rows written to ClickHouse (directly or by replay)
    spooled: int  # share records written to the spool
    replayed: int  # spooled share records later written to ClickHouse
    retried: int  # insert attempts of a batch that had failed before
    failed_batches: int  # insert attempts that failed
    dropped: int  # records lost; stays 0 (only a submit after close() counts here)
    oldest_unwritten_age_s: float  # age of the oldest record not yet in ClickHouse; 0.0 if none
    spool_pending: int  # share records in the spool not yet replayed
    spool_bytes: int
    db_up: bool  # the last insert or migration attempt succeeded
    verdicts_written: int
    verdicts_pending: int  # pool verdicts in memory or in the spool
    quarantined: int  # spool segments / batches moved to quarantine
    schema_version: int  # 0 until migrations ran
    received: int = 0  # share records submit() got (including any after close())
    recovered: int = 0  # share records found in the spool (and journal) at start
    quarantined_rows: int = 0  # share records moved to quarantine (rejected rows, damaged segments)
    fs_errors: int = 0  # spool/journal file operations that failed and will be retried
    spool_ok: bool = True  # the last spool write (or probe) succeeded
    journal_on: bool = False  # the open-batch journal is writing
    durability: str = "fast"  # "sync": share replies wait for the journal's fdatasync
    durability_waiting: int = 0  # replies held until their commit returns (sync)
    durability_degraded: int = 0  # share replies written before their record was known on disk (sync)
    journal_commits: int = 0  # group commits (write + fdatasync) the journal made (sync)
    events_written: int = 0  # event rows written to ClickHouse
    events_pending: int = 0  # events in memory or in the spool


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One worker over a trailing window, from the per-minute aggregate.

    ``hashrate`` (H/s) = ``accepted_difficulty`` * 2**32 / ``window_s``, where
    ``accepted_difficulty`` sums the *assigned* ``target_difficulty`` of accepted
    shares (pool accounting). ``share_difficulty_sum`` sums what the accepted
    shares achieved (luck included).
    """

    worker_name: str
    window_s: float
    shares: int
    accepted_shares: int
    accepted_difficulty: float
    share_difficulty_sum: float
    hashrate: float
    first_share_at: float | None
    last_share_at: float | None


class _SpoolSnap(NamedTuple):
    """The spool's figures, taken on the spool thread right after an operation."""

    seq: int
    frames: int
    rows: tuple[int, ...]
    bytes: int
    head_ms: int | None
    quarantined: int
    quarantined_rows: tuple[int, ...]
    ack_failures: int


_Frame = tuple[FrameRef, tuple[tuple[object, ...], ...]]  # a spooled batch and its rows


@dataclass(slots=True)
class _Batch:
    kind: int
    token: str
    rows: list[tuple[object, ...]]
    first_ms: int
    journal: str | None = None  # the open-batch journal file to delete once durable


class ShareLog:
    """The durable, exactly-once share log (see the module docstring)."""

    def __init__(self, settings: ClickHouseSettings, instance_id: str, *, now: Callable[[], float] = time.time,
                 fdatasync: Callable[[int], None] = DEFAULT_FDATASYNC) -> None:
        self.settings = settings
        self.instance_id = instance_id
        self._now = now
        # Milliseconds since the epoch in the high bits: later runs sort later.
        self.run_id = ((time.time_ns() // 1_000_000) << 16) | secrets.randbits(16)
        self._store = Store(settings, instance_id)
        self._spool = Spool(settings.spool_dir, segment_bytes=settings.spool_segment_bytes, fsync=settings.spool_fsync)
        self._reserve: FdReserve | None = None  # opened by start(), handed to the spool
        self._rlog = RateLimitedLog(log, ERROR_LOG_INTERVAL_S)
        self._batch_size = settings.batch_size
        self._queue_size = settings.queue_size
        self._building: list[list[tuple[object, ...]]] = [[] for _ in KINDS]
        self._building_first_ms = [0] * len(KINDS)
        self._batch_no = [0] * len(KINDS)
        self._ready: deque[_Batch] = deque()
        # Batches out of the ready deque but not yet in ClickHouse or on disk,
        # with the spool write's future when one is under way.
        self._transit: dict[int, tuple[_Batch, Future[Any] | None]] = {}
        self._mem = [0] * len(KINDS)  # records in memory, per kind
        self._written = [0] * len(KINDS)
        self._spooled = [0] * len(KINDS)
        self._replayed = [0] * len(KINDS)
        self._retried = 0
        self._failed_batches = 0
        self._dropped = 0
        self._received = [0] * len(KINDS)
        self._recovered = [0] * len(KINDS)
        self._fs_errors = 0
        self._failed_tokens: set[str] = set()
        self._spool_open = False  # the spool was scanned (start(), retried until it works)
        self._spool_ok = True  # the last spool write or probe succeeded
        self._spool_frames = 0
        self._spool_rows = [0] * len(KINDS)
        self._spool_bytes = 0
        self._spool_head_ms: int | None = None
        self._quarantined = 0
        self._quarantined_rows = [0] * len(KINDS)
        self._ack_failures = 0
        self._snap_taken = 0  # written on the spool thread only
        self._snap_applied = 0
        self._db_up = False
        self._schema_version = 0
        self._down_since: float | None = None
        self._last_down_log = 0.0
        self._backoff_s = 0.0
        self._ahead: Future[_Frame | None] | None = None  # replay's read of the next frame (one at most)
        self._wake_writer = asyncio.Event()
        self._wake_spooler = asyncio.Event()
        self._db_exec: ThreadPoolExecutor | None = None
        self._spool_exec: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._closing = False
        self._closed = False
        self._sync = settings.durability == "sync"
        self._unjournaled = 0  # records not journaled since the last when_durable()
        self._journal = Journal(
            Path(settings.spool_dir) / "journal", instance_id, self.run_id, sync=self._sync,
            retry_s=settings.spool_retry_s, max_waiting=settings.durability_max_waiting,
            stall_s=settings.durability_stall_s, rlog=self._rlog, fdatasync=fdatasync,
        )

    # ------------------------------------------------------------------ hot path

    def submit(self, record: ShareRecord) -> None:
        """Queue one share row. O(1), never blocks, never raises on database trouble.

        String fields are stored as ``clean_text`` makes them; the ASCII check
        in front of it is the same rule's fast path (ASCII is stored as is)."""
        self._submit_share(record)

    def answer(self, miner: object, write: Callable[[bytes], None], line: bytes, record: ShareRecord | None) -> None:
        """The hub's reply ``line`` to one request of ``miner``, and the share it carried (if any).

        ``durability = "fast"``: the reply is written, then the record queued (as
        ``submit``). ``"sync"``: the record is queued and journaled, and the reply is
        written once the journal's group commit holding it has returned (fdatasync); any
        reply to that miner meanwhile waits behind it, so its replies keep their order."""
        if not self._sync:
            write(line)
            if record is not None:
                self._submit_share(record)
            return
        journaled = record is not None and self._submit_share(record)
        self._journal.answer(miner, write, line, record is not None, journaled)

    def when_durable(self, done: Callable[[bool], None]) -> None:
        """``done(durable)`` once every record submitted so far is known to be on disk (``durable``
        True: durability "sync" and the journal's group commit holding them returned) or never will
        be (False: "fast", a record the journal did not take, a failed or given-up commit, close).
        Calls are answered in order. For replies held elsewhere (``tproxy.pipe_sink``)."""
        journaled, self._unjournaled = self._unjournaled == 0, 0
        if not self._sync or self._closed:
            done(False)
            return
        self._journal.after_commit(done, journaled)

    def _submit_share(self, record: ShareRecord) -> bool:
        r = record
        i, w, j, e, h, v = r.instance_id, r.worker_name, r.sv1_job_id, r.extranonce, r.share_hash, r.verdict
        try:
            plain = i.isascii() and w.isascii() and j.isascii() and e.isascii() and h.isascii() and v.isascii()
        except AttributeError:  # not a str (a bug upstream): left as is, the database isolates that row
            plain = False
        if not plain:
            i, w, j, e, h, v = (clean_text(x) if isinstance(x, str) else x for x in (i, w, j, e, h, v))
        return self._add(
            KIND_SHARES,
            (
                r.received_at_ms, i, self.run_id, r.share_seq, w, r.client_id,
                r.channel_id, r.sequence_number, j, r.job_id, r.nonce, r.ntime, r.version,
                e, h, r.target_difficulty, r.share_difficulty, v, r.forwarded,
            ),
        )

    def submit_pool_verdict(self, record: PoolVerdictRecord) -> None:
        """Queue the pool's verdict for one forwarded share (same properties as ``submit``)."""
        r = record
        i, v = r.instance_id, r.pool_verdict
        if not (isinstance(i, str) and isinstance(v, str) and i.isascii() and v.isascii()):
            i, v = (clean_text(x) if isinstance(x, str) else x for x in (i, v))
        self._add(
            KIND_VERDICTS,
            (r.received_at_ms, i, self.run_id, r.channel_id, r.sequence_number, r.share_seq, v),
        )

    def submit_event(self, record: EventRecord) -> None:
        """Queue one worker or upstream event (same properties and guarantees as ``submit``)."""
        r = record
        texts = tuple(
            clean_text(x) if isinstance(x, str) and not x.isascii() else x
            for x in (r.instance_id, r.event_type, r.worker_name, r.address, r.user_agent, r.reason, r.detail)
        )
        i, t, w, a, u, why, detail = texts
        self._add(
            KIND_EVENTS,
            (
                r.time_ms, i, self.run_id, r.event_seq, t, w, r.client_id, a, u, why,
                r.old_difficulty, r.difficulty, r.channel_id, detail, r.online, r.since_ms, r.last_share_ms,
            ),
        )

    def _add(self, kind: int, row: tuple[object, ...]) -> bool:
        """Queue one row; True when it is also in the journal's buffer."""
        self._received[kind] += 1
        if self._closed:
            self._dropped += 1
            if self._dropped == 1:
                log.error("share log: record submitted after close(); it is lost (counted in dropped)")
            return False
        b = self._building[kind]
        if not b:
            self._building_first_ms[kind] = int(self._now() * 1000)
            # The batch being opened will be sealed as number batch_no + 1: its token is known now.
            self._journal.open(kind, self._batch_no[kind] + 1, b)
        b.append(row)
        journaled = self._journal.added(kind)
        if not journaled:
            self._unjournaled += 1
        self._mem[kind] += 1
        if len(b) >= self._batch_size:
            self._seal(kind)
        if sum(self._mem) > self._queue_size:
            # Over the memory bound: the spooler moves the oldest sealed batches to
            # disk (on its thread; this call does not wait for it).
            self._wake_spooler.set()
        return journaled

    def _seal(self, kind: int) -> None:
        rows = self._building[kind]
        if not rows:
            return
        self._building[kind] = []
        self._batch_no[kind] += 1
        token = batch_token(self.instance_id, self.run_id, kind, self._batch_no[kind])
        journal = self._journal.seal(kind)
        self._ready.append(_Batch(kind, token, rows, self._building_first_ms[kind], journal))
        self._wake_writer.set()
        self._wake_spooler.set()

    def _journal_done(self, batch: _Batch) -> None:
        self._journal.done(batch.journal)
        batch.journal = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the spool, run migrations (off the loop), start the writer, spooler and ticker.

        Spooled batches from an earlier run are replayed by the writer in the
        background, oldest first. A database that is down at start does not
        fail start(): records go to the spool until it answers.
        """
        if self._started:
            return
        self._started = True
        self._db_exec = ThreadPoolExecutor(1, thread_name_prefix="sharelog-db")
        self._spool_exec = ThreadPoolExecutor(1, thread_name_prefix="sharelog-spool")
        # Descriptors held back from the start, so the share log can open its files
        # even when the rest of the process has used up RLIMIT_NOFILE.
        self._reserve = FdReserve(self.settings.fd_reserve)
        self._spool.reserve = self._reserve
        self._journal.attach(asyncio.get_running_loop(), self._reserve)
        await self._open_spool()
        await self._migrate()
        log.info(
            "share log: %s database %s, run_id %x, batch %d / %.3gs, queue %d, spool %s",
            self.settings.redacted_url(), self._store.schema.db, self.run_id, self._batch_size,
            self.settings.batch_max_age_s, self._queue_size, self.settings.spool_dir,
        )
        self._tasks = [
            asyncio.create_task(self._writer(), name="sharelog-writer"),
            asyncio.create_task(self._spooler(), name="sharelog-spooler"),
            asyncio.create_task(self._ticker(), name="sharelog-ticker"),
        ]

    async def _open_spool(self) -> bool:
        """Scan the spool and turn journals a killed run left into spool frames.

        False when a file cannot be opened now (EMFILE, EACCES...): nothing is
        quarantined for that, and the spooler calls this again every
        ``spool_retry_s``; until then batches stay in memory or go to the database."""
        try:
            report = await self._in_spool(self._spool.open)
            jb = jr = 0
            if self.settings.journal_open_batches:
                await self._in_spool(self._journal.directory.mkdir, 0o700, True, True)
                jb, jr = await self._in_spool(self._journal.recover, self._spool)
        except OSError as e:
            self._fs_error("cannot open the spool (retrying)", e)
            self._spool_ok = False
            return False
        self._spool_open = self._spool_ok = True
        self._recovered = list(self._spool_rows)
        if self.settings.journal_open_batches and not self._journal.ready:
            self._journal.enable()
        if jb:
            log.warning("share log: recovered %d records of %d batches a killed run had not made "
                        "durable (open-batch journal); they are spooled for replay", jr, jb)
        if report.frames or report.truncated_bytes or report.quarantined:
            log.info(
                "share log: spool %s holds %d batches (%d records) to replay%s%s",
                self.settings.spool_dir, report.frames, report.rows,
                f", cut a torn tail of {report.truncated_bytes} bytes" if report.truncated_bytes else "",
                f", quarantined {len(report.quarantined)} segment(s)" if report.quarantined else "",
            )
        self._wake_both()
        return True

    def _fs_error(self, what: str, e: BaseException) -> None:
        """A spool/journal file operation failed: counted, logged rate-limited, retried later."""
        self._fs_errors += 1
        # Keyed by the kind of failure, not the file name: one line per error kind per interval.
        self._rlog.log(logging.ERROR, "share log: %s in %s: %s", what, self.settings.spool_dir, e,
                       key=f"{what}:{getattr(e, 'errno', None) or type(e).__name__}")

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Seal the open batches and wait until nothing is in memory or in the spool.

        Returns False on timeout (for tests, benches and orderly maintenance;
        the proxy itself never needs to call it)."""
        for kind in KINDS:
            self._seal(kind)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(self._mem) or self._spool_frames or self._transit:
            if loop.time() >= deadline:
                return False
            for kind in KINDS:
                self._seal(kind)
            await asyncio.sleep(0.005)
        return True

    async def close(self) -> None:
        """Write what can be written within ``close_timeout_s``, spool the rest, stop.

        Bounded: the database gets ``close_timeout_s``; the spool writes that
        follow only wait for the local disk."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closing = True
        for kind in KINDS:
            self._seal(kind)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.close_timeout_s
        while (self._ready or self._transit) and loop.time() < deadline:
            await asyncio.sleep(0.005)
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        # Finish spool writes under way; spool batches whose insert is in flight.
        for batch, fut in list(self._transit.values()):
            if fut is not None:
                with contextlib.suppress(Exception):
                    _, snap = await asyncio.wrap_future(fut)
                    self._after_spooled(batch, snap)
            else:
                self._transit.pop(id(batch), None)
                self._ready.appendleft(batch)
        for kind in KINDS:
            self._seal(kind)
        left = 0
        await self._journal.close()  # every held reply goes out; nothing journals after this
        while self._ready:
            batch = self._ready.popleft()
            if not await self._spool_batch(batch, retry_on_error=False):
                left += len(batch.rows)
        if left:
            self._dropped += left
            log.error("share log: %d records could neither be written nor spooled at close; they are lost", left)
        with contextlib.suppress(Exception):
            await self._in_spool(self._spool.close)
        assert self._db_exec is not None and self._spool_exec is not None
        db_close = loop.run_in_executor(self._db_exec, self._store.close)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(db_close), 2.0)
        self._db_exec.shutdown(wait=False, cancel_futures=True)
        self._spool_exec.shutdown(wait=True)
        if self._reserve is not None:
            self._reserve.close_all()
        st = self.stats()
        log.info(
            "share log closed: written %d, spooled %d (%d pending replay), verdicts written %d, dropped %d",
            st.written, st.spooled, st.spool_pending, st.verdicts_written, st.dropped,
        )

    # ------------------------------------------------------------------ stats / queries

    def stats(self) -> ShareLogStats:
        now_ms = self._now() * 1000
        firsts = [self._building_first_ms[k] for k in KINDS if self._building[k]]
        firsts.extend(b.first_ms for b in self._ready)
        firsts.extend(b.first_ms for b, _ in self._transit.values())
        if self._spool_head_ms is not None:
            firsts.append(self._spool_head_ms)
        oldest = max(0.0, (now_ms - min(firsts)) / 1000) if firsts else 0.0
        return ShareLogStats(
            queued=self._mem[KIND_SHARES],
            written=self._written[KIND_SHARES],
            spooled=self._spooled[KIND_SHARES],
            replayed=self._replayed[KIND_SHARES],
            retried=self._retried,
            failed_batches=self._failed_batches,
            dropped=self._dropped,
            oldest_unwritten_age_s=oldest,
            spool_pending=self._spool_rows[KIND_SHARES],
            spool_bytes=self._spool_bytes,
            db_up=self._db_up,
            verdicts_written=self._written[KIND_VERDICTS],
            verdicts_pending=self._mem[KIND_VERDICTS] + self._spool_rows[KIND_VERDICTS],
            events_written=self._written[KIND_EVENTS],
            events_pending=self._mem[KIND_EVENTS] + self._spool_rows[KIND_EVENTS],
            quarantined=self._quarantined,
            schema_version=self._schema_version,
            received=self._received[KIND_SHARES],
            recovered=self._recovered[KIND_SHARES],
            quarantined_rows=self._quarantined_rows[KIND_SHARES],
            fs_errors=self._fs_errors + self._ack_failures + self._journal.fs_errors,
            spool_ok=self._spool_ok,
            journal_on=self._journal.on and not self._journal.failing,
            durability="sync" if self._sync else "fast",
            durability_waiting=self._journal.waiting,
            durability_degraded=self._journal.degraded,
            journal_commits=self._journal.commits,
        )

    async def worker_hashrate(self, window_minutes: int) -> list[WorkerStats]:
        """Shares and hashrate per worker of this instance over the last ``window_minutes``.

        The window is the current (partial) minute plus the ``window_minutes - 1``
        before it, up to now; ``window_s`` is its exact length. Reads only the
        per-minute aggregate. Raises if the database cannot be queried."""
        if window_minutes < 1:
            raise ValueError("window_minutes must be >= 1")
        now = self._now()
        start = (int(now) // 60 - (window_minutes - 1)) * 60
        seconds = max(now - start, 1.0)
        rows = await self._query_rows(
            self._store.schema.worker_hashrate_query(), {"instance_id": self.instance_id, "window_start": start}
        )
        return [
            WorkerStats(
                worker_name=w,
                window_s=seconds,
                shares=int(n),
                accepted_shares=int(acc),
                accepted_difficulty=float(dsum),
                share_difficulty_sum=float(ssum),
                hashrate=float(dsum) * 2**32 / seconds,
                first_share_at=f / 1000 if n else None,
                last_share_at=last / 1000 if n else None,
            )
            for w, n, acc, dsum, ssum, f, last in rows
        ]

    async def events(
        self, *, worker: str | None, event_type: str | None, since_ms: int | None, offset: int, limit: int
    ) -> tuple[int, list[tuple[Any, ...]]]:
        """(total matching, one page newest first) of this instance's events (``Schema.events_query``
        columns). Raises if the database cannot be queried."""
        sc = self._store.schema
        flags = {"worker": worker is not None, "event_type": event_type is not None, "since": since_ms is not None}
        params: dict[str, Any] = {"instance_id": self.instance_id, "worker": worker, "event_type": event_type,
                                  "since_ms": since_ms, "limit": limit, "offset": offset}
        params = {k: v for k, v in params.items() if v is not None}
        total = await self._query_rows(sc.events_count_query(**flags), params)
        rows = await self._query_rows(sc.events_query(**flags), params)
        return int(total[0][0]), rows

    async def _query_rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query on the database thread (also used by tests and the bench)."""
        if self._db_exec is None:
            raise RuntimeError("share log not started")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_exec, self._store.query_rows, sql, parameters)

    # ------------------------------------------------------------------ threads

    def _spool_snapshot(self) -> _SpoolSnap:
        # Runs on the spool thread right after an operation; the sequence number lets the
        # loop ignore a snapshot that arrives after a newer one.
        s = self._spool
        self._snap_taken += 1
        return _SpoolSnap(self._snap_taken, s.pending_frames, tuple(s.pending_by_kind),
                          s.pending_bytes, s.head_first_ms, len(s.quarantined),
                          tuple(s.quarantined_rows), s.ack_failures)

    def _apply_snapshot(self, snap: _SpoolSnap) -> None:
        if snap.seq <= self._snap_applied:
            return
        self._snap_applied = snap.seq
        self._spool_frames, self._spool_bytes, self._spool_head_ms = snap.frames, snap.bytes, snap.head_ms
        self._spool_rows = list(snap.rows)
        self._quarantined, self._quarantined_rows = snap.quarantined, list(snap.quarantined_rows)
        self._ack_failures = snap.ack_failures
        self._wake_both()

    def _wake_both(self) -> None:
        # Every change of the state the writer and the spooler route on wakes both;
        # each re-checks its own condition, so a spurious wake costs one check.
        self._wake_writer.set()
        self._wake_spooler.set()

    def _spool_call(self, fn: Callable[..., T], *args: Any) -> Future[tuple[T, Any]]:
        assert self._spool_exec is not None

        def call() -> tuple[T, Any]:
            try:
                return fn(*args), self._spool_snapshot()
            except BaseException as e:
                with contextlib.suppress(AttributeError):
                    e.spool_snapshot = self._spool_snapshot()  # type: ignore[attr-defined]
                raise

        return self._spool_exec.submit(call)

    async def _in_spool(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            r, snap = await asyncio.wrap_future(self._spool_call(fn, *args))
        except BaseException as e:
            snap = getattr(e, "spool_snapshot", None)
            if snap is not None:
                self._apply_snapshot(snap)
            self._wake_writer.set()
            raise
        self._apply_snapshot(snap)
        return r

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._db_exec is not None
        return await asyncio.get_running_loop().run_in_executor(self._db_exec, fn, *args)

    # ------------------------------------------------------------------ database state

    def _scrub(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        pw = self.settings.password
        if pw is not None and pw.get_secret_value():
            text = text.replace(pw.get_secret_value(), "***")
        return text[:500]

    def _note_down(self, exc: BaseException, what: str) -> None:
        now = time.monotonic()
        if self._db_up or self._down_since is None:
            self._down_since = now
            self._last_down_log = now
            log.warning(
                "share log: %s failed on %s (%s); records go to the spool %s until it recovers",
                what, self.settings.redacted_url(), self._scrub(exc), self.settings.spool_dir,
            )
        elif now - self._last_down_log >= DOWN_LOG_INTERVAL_S:
            self._last_down_log = now
            log.warning(
                "share log: database still failing after %.0fs (%s); %d records in the spool",
                now - self._down_since, self._scrub(exc), sum(self._spool_rows),
            )
        else:
            log.debug("share log: %s failed: %s", what, self._scrub(exc))
        self._db_up = False
        self._wake_both()
        self._backoff_s = min(
            self.settings.retry_backoff_max_s,
            max(self.settings.retry_backoff_base_s, self._backoff_s * 2),
        )

    def _note_up(self) -> None:
        if not self._db_up:
            if self._down_since is not None:
                log.info(
                    "share log: database %s is back after %.1fs; replaying %d spooled records",
                    self.settings.redacted_url(), time.monotonic() - self._down_since,
                    sum(self._spool_rows),
                )
            self._down_since = None
        self._db_up = True
        self._backoff_s = 0.0
        self._wake_both()

    async def _migrate(self) -> bool:
        try:
            self._schema_version = await self._in_db(self._store.migrate)
        except Exception as e:
            self._note_down(e, "schema migration")
            return False
        self._note_up()
        return True

    async def _sleep_backoff(self) -> None:
        # Jitter keeps several proxies from retrying in lockstep.
        await asyncio.sleep(self._backoff_s * (0.8 + 0.4 * secrets.randbelow(1000) / 1000))

    async def _insert(self, kind: int, rows: Any, token: str) -> BaseException | None:
        if token in self._failed_tokens:
            self._retried += 1
        try:
            await self._in_db(self._store.insert, kind, rows, token)
        except Exception as e:
            self._failed_batches += 1
            self._failed_tokens.add(token)
            if is_bad_data(e):
                # The database is fine; some rows of this batch are not (the caller isolates them).
                self._rlog.log(logging.ERROR, "share log: batch %s rejected as bad data (%s); isolating the "
                               "rejected rows", token, self._scrub(e), key=f"bad-data:{type(e).__name__}")
            else:
                self._note_down(e, "insert")
            return e
        self._failed_tokens.discard(token)
        self._note_up()
        return None

    async def _write_rows(self, kind: int, rows: Any, token: str) -> tuple[bool, list[tuple[int, str]]]:
        """Insert one batch. Returns (done, rejected rows as (index, error)): done is False
        when nothing is settled (database unreachable) and the whole batch must be retried;
        when True every row not in ``rejected`` is in ClickHouse."""
        exc = await self._insert(kind, rows, token)
        if exc is None:
            return True, []
        if not is_bad_data(exc):
            return False, []
        try:
            rejected = await self._in_db(self._store.insert_isolating, kind, rows, token)
        except Exception as e:
            self._note_down(e, "insert")
            return False, []
        self._failed_tokens.discard(token)
        self._note_up()
        return True, rejected

    # ------------------------------------------------------------------ tasks

    def _should_spool(self) -> bool:
        return (
            not self._db_up
            or self._schema_version == 0
            or self._spool_frames > 0
            or sum(self._mem) > self._queue_size
        )

    async def _writer(self) -> None:
        while True:
            try:
                await self._writer_step()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug must not silently stop the log: say so loudly and go on.
                log.exception("share log: writer error; retrying")
                await asyncio.sleep(1.0)

    async def _writer_step(self) -> None:
        while True:
            if self._schema_version == 0 and not await self._migrate():
                await self._probe_pause()
                continue
            # Batches in memory go straight to the database when the spool is empty, and
            # also when the spool cannot be written: then they have no other way out, and
            # the database is probed with them while it is down.
            direct = self._ready and (self._spool_frames == 0 or not self._spool_ok)
            if direct and (self._db_up or not self._spool_ok):
                if not self._db_up:
                    await self._probe_pause()
                    if not self._ready:
                        continue
                await self._write_direct(self._ready.popleft())
                continue
            if self._spool_frames > 0:
                if not await self._replay_one():
                    await self._probe_pause()
                continue
            self._wake_writer.clear()
            await self._wake_writer.wait()

    async def _probe_pause(self) -> None:
        # While the spool cannot take batches, memory is their only place: probe the
        # database at least every spool_retry_s instead of the full backoff.
        if not self._spool_ok:
            self._backoff_s = min(self._backoff_s, self.settings.spool_retry_s)
        await self._sleep_backoff()

    async def _write_direct(self, batch: _Batch) -> None:
        self._transit[id(batch)] = (batch, None)
        done, rejected = await self._write_rows(batch.kind, batch.rows, batch.token)
        if done and rejected:
            bad = [batch.rows[i] for i, _ in rejected]
            try:
                await self._in_spool(self._spool.quarantine_rows, batch.kind, batch.token, batch.first_ms,
                                     bad, rejected[0][1])
            except Exception as e:
                # Retried as a whole later: the parts that landed carry fixed tokens.
                self._fs_error("cannot write rejected rows to quarantine (retrying)", e)
                done = False
        self._transit.pop(id(batch), None)
        if done:
            n = len(batch.rows)
            self._written[batch.kind] += n - len(rejected)
            self._mem[batch.kind] -= n
            self._journal_done(batch)
        elif self._spool_ok and self._spool_open:
            await self._spool_batch(batch)
        else:
            self._ready.appendleft(batch)

    async def _replay_one(self) -> bool:
        """Insert the spool's oldest batch; True when the writer may go on at once.

        While it is inserted, the spool thread reads the next frame (``_read_ahead``), so a
        spool drained at the database's pace does not wait for the disk and the decoding
        between two inserts. The next call takes those rows if that frame is then the head."""
        ahead, self._ahead = self._ahead, None
        try:
            ref, rows = await self._in_spool(self._read_head, ahead)
        except SpoolCorrupt:
            return True  # that segment is quarantined; go on with the next
        except OSError as e:
            self._fs_error("cannot read the spool (retrying; nothing quarantined)", e)
            return False
        if ref is None:
            return True
        if self._spool_exec is not None:
            self._ahead = self._spool_exec.submit(self._read_ahead)
        done, rejected = await self._write_rows(ref.kind, rows, ref.token)
        if not done:
            return False
        try:
            await self._in_spool(self._settle_frame, ref, rows, rejected)
        except OSError as e:
            self._fs_error("cannot write rejected rows to quarantine (retrying)", e)
            return False
        good = ref.nrows - len(rejected)
        self._written[ref.kind] += good
        self._replayed[ref.kind] += good
        return True

    def _settle_frame(self, ref: FrameRef, rows: tuple[tuple[object, ...], ...], rejected: list[tuple[int, str]]) -> None:
        # Spool thread: quarantine the rejected rows and ack the frame in one step, so the
        # counters never see the rows both pending and quarantined.
        if rejected:
            self._spool.quarantine_rows(ref.kind, ref.token, ref.first_ms, [rows[i] for i, _ in rejected],
                                        rejected[0][1])
        self._spool.ack(ref)

    def _read_head(self, ahead: Future[_Frame | None] | None) -> _Frame | tuple[None, tuple[()]]:
        # Spool thread. ``ahead`` ran before this call on this (single) thread, so it is done.
        ref = self._spool.head()
        if ref is None:
            return None, ()
        if ahead is not None and ahead.done() and not ahead.cancelled():
            got = ahead.result()
            if got is not None and got[0] == ref:
                return got
        return ref, self._spool.read(ref)

    def _read_ahead(self) -> _Frame | None:
        # Spool thread: the frame after the head, read without side effects. A frame it
        # cannot read now or finds damaged is read again (and judged) when it is the head.
        ref = self._spool.second()
        if ref is None:
            return None
        try:
            return ref, self._spool.read(ref, quarantine=False)
        except (OSError, SpoolCorrupt):
            return None

    async def _spooler(self) -> None:
        while True:
            try:
                await self._spooler_step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("share log: spooler error; retrying")
                await asyncio.sleep(1.0)

    async def _spooler_step(self) -> None:
        while True:
            if not self._spool_open:
                if not await self._open_spool():
                    await asyncio.sleep(self.settings.spool_retry_s)
                continue
            if self._ready and self._should_spool():
                batch = self._ready.popleft()
                await self._spool_batch(batch)
                continue
            self._wake_spooler.clear()
            if self._spool_ok:
                await self._wake_spooler.wait()
                continue
            # The spool failed and nothing needs it right now: probe it on a timer, so it
            # is known to work again before the next outage needs it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_spooler.wait(), self.settings.spool_retry_s)
            if not self._spool_ok and not (self._ready and self._should_spool()):
                try:
                    await self._in_spool(self._spool.probe)
                except Exception as e:
                    self._fs_error("spool still not writable", e)
                else:
                    self._spool_recovered()

    def _spool_recovered(self) -> None:
        if not self._spool_ok:
            self._spool_ok = True
            log.info("share log: spool %s is writable again", self.settings.spool_dir)
            self._wake_both()

    async def _spool_batch(self, batch: _Batch, *, retry_on_error: bool = True) -> bool:
        fut = self._spool_call(self._spool.append, batch.kind, batch.token, batch.first_ms, batch.rows)
        self._transit[id(batch)] = (batch, fut)
        try:
            _, snap = await asyncio.shield(asyncio.wrap_future(fut))
        except asyncio.CancelledError:
            raise  # close() finishes this one
        except Exception as e:
            if self._transit.pop(id(batch), None) is None:
                return False  # close() took it over
            self._spool_ok = False
            self._wake_writer.set()  # the writer now sends batches straight to the database
            self._fs_error("cannot write to the spool; keeping the batch in memory", e)
            if retry_on_error:
                self._ready.appendleft(batch)
                await asyncio.sleep(self.settings.spool_retry_s)
            return False
        self._after_spooled(batch, snap)
        self._spool_recovered()
        return True

    def _after_spooled(self, batch: _Batch, snap: Any) -> None:
        if self._transit.pop(id(batch), None) is None:
            return
        n = len(batch.rows)
        self._spooled[batch.kind] += n
        self._mem[batch.kind] -= n
        self._journal_done(batch)
        self._apply_snapshot(snap)
        self._wake_writer.set()

    async def _ticker(self) -> None:
        max_age_ms = self.settings.batch_max_age_s * 1000
        tick = min(0.25, self.settings.batch_max_age_s / 4)
        while True:
            await asyncio.sleep(tick)
            now_ms = self._now() * 1000
            for kind in KINDS:
                if self._building[kind] and now_ms - self._building_first_ms[kind] >= max_age_ms:
                    self._seal(kind)
            self._journal.probe()
            self._rlog.tick()
            if self._reserve is not None and self._reserve.held < self._reserve.size:
                self._reserve.refill()
