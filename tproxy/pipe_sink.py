"""A worker's end of the pipe to its parent (``proxy.workers`` > 1), and its share and event sink.

Owns the frame format (``encode`` / ``read_message``: length-prefixed pickle),
``ParentPipe`` (the worker's reading end: acks are handled as they arrive,
every other message is queued for ``next()``; ``read_now`` reads while the
event loop is blocked) and ``PipeSink`` (the hub's ``ShareSink`` and
``EventSink`` in a worker).

``PipeSink`` gives every record cluster-unique ids (``tproxy.workers``: the
worker's ``generation`` and slot ``index``) and sends them as plain tuples in
``("rows", seq, shares, verdicts, events)`` frames. Two modes, the parent's
``clickhouse.durability``:

* ``"fast"`` (or no share log): a reply is written at once; rows go out at
  most ``FLUSH_DELAY_S`` after their record, ``seq`` 0 (no acknowledgement).
  A killed worker loses the rows it had not sent. While the parent reads
  slowly (more than ``MAX_PIPE_BUFFER`` bytes unsent), rows wait in the
  worker, up to ``MAX_PENDING_ROWS``; only past that, or once the pipe is
  closed, are they dropped (counted in ``lost``, one error line).
* With no share log in the parent (``share_rows`` False) no share or verdict
  row is sent at all (nothing would keep them); events still go, for the
  parent's per-type counts.
* ``"sync"``: as in one process (``tproxy.shares.journal``), the reply to a
  share is held until the parent acknowledges ``("ack", seq, durable)`` that
  the frame holding its record is in its fdatasync'ed journal; a later reply
  to the same miner waits behind it. One frame is in flight at a time; rows
  that arrive meanwhile go in the next one, sent when the ack comes (one round
  trip per parent commit, not per share). A SIGKILL of the worker then loses
  no answered share. Bounds, mirroring the journal's: above
  ``durability_max_waiting`` held replies the event loop blocks (no miner is
  read) on the parent's ack, at most ``durability_stall_s``; then every held
  reply is written unconfirmed, counted in ``degraded``, with an error line.
  An ack with ``durable`` False (the parent's journal was off or failed) and
  a closed pipe release the replies as degraded too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import pickle
import select
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from tproxy.shares.record import EventRecord, PoolVerdictRecord, ShareRecord

log = logging.getLogger("tproxy.workers")

SHARE_SEQ_SHIFT = 40  # 2**40 shares per worker process (three years at 10,000/s)
CLIENT_ID_SHIFT = 32
CHANNEL_ID_SHIFT = 24
# Fast mode: rows are sent at most this long after their record: one write (and one wake-up of
# the parent) per batch of ticks rather than per event-loop tick; the share log batches far longer.
FLUSH_DELAY_S = 0.01
MAX_PIPE_BUFFER = 64 << 20  # bytes of rows queued for a parent that does not read
MAX_PENDING_ROWS = 200_000  # rows a worker keeps while the pipe is over MAX_PIPE_BUFFER
RETRY_DELAY_S = 0.1  # fast mode: how soon a backed-up pipe is tried again

_LEN = struct.Struct(">I")
Write = Callable[[bytes], None]


def encode(message: tuple[Any, ...]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(body)) + body


def _decode(body: bytes) -> tuple[Any, ...] | None:
    try:
        message = pickle.loads(body)  # our own child or parent: a trusted peer
    except Exception as e:  # a bug on the other side: end this pipe, not the process
        log.error("unreadable message on the worker pipe (%s: %s); closing it", type(e).__name__, e)
        return None
    return message if isinstance(message, tuple) and message else None


async def read_message(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None at end of stream (a frame cut short by a dying peer included)."""
    try:
        head = await reader.readexactly(_LEN.size)
        body = await reader.readexactly(_LEN.unpack(head)[0])
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return _decode(body)


class ParentPipe(asyncio.Protocol):
    """The worker's end of the pipe. Acks go to ``on_ack`` as they are read; other messages to
    ``next()`` (None once the pipe is closed)."""

    def __init__(self) -> None:
        self.on_ack: Callable[[int, bool], None] | None = None
        self.transport: asyncio.Transport | None = None
        self.ended = False
        self._buf = bytearray()
        self._messages: asyncio.Queue[tuple[Any, ...] | None] = asyncio.Queue()
        self._lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= _LEN.size:
            end = _LEN.size + _LEN.unpack_from(buf)[0]
            if len(buf) < end:
                return
            msg = _decode(bytes(buf[_LEN.size : end]))
            del buf[:end]
            if msg is None:
                self._end()
                if self.transport is not None:
                    self.transport.close()
                return
            if msg[0] == "ack" and self.on_ack is not None:
                self.on_ack(msg[1], msg[2])
            else:
                self._messages.put_nowait(msg)

    def eof_received(self) -> bool | None:
        self._end()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        if not self._lost.done():
            self._lost.set_result(None)

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self._messages.put_nowait(None)

    async def next(self) -> tuple[Any, ...] | None:
        msg = await self._messages.get()
        if msg is None:
            self._messages.put_nowait(None)  # every later call sees the end too
        return msg

    def read_now(self, fd: int, timeout: float) -> bool:
        """With the event loop blocked: wait up to ``timeout`` for bytes from the parent and take
        them in (acks handled at once). False on timeout or when the pipe is closed."""
        poller = select.poll()  # not select(): no FD_SETSIZE limit
        poller.register(fd, select.POLLIN)
        if self.ended or not poller.poll(max(0, math.ceil(timeout * 1000))):
            return False
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self._end()
            return False
        self.data_received(data)
        return True

    async def closed(self, timeout: float) -> None:
        """Close the pipe once what is written went out (at most ``timeout``)."""
        if self.transport is not None:
            self.transport.close()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._lost)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()


class _Held(NamedTuple):
    frame: int  # released by the ack of this frame (or a later one)
    key: object  # the miner
    write: Write
    line: bytes
    share: bool


class PipeSink:
    """The worker hub's ``ShareSink`` and ``EventSink`` (see the module docstring)."""

    def __init__(self, pipe: ParentPipe, fd: int, *, generation: int, index: int, sync: bool,
                 max_waiting: int, stall_s: float, share_rows: bool = True) -> None:
        assert pipe.transport is not None
        self._pipe, self._transport, self._fd = pipe, pipe.transport, fd
        pipe.on_ack = self._on_ack
        self._seq_base = generation << SHARE_SEQ_SHIFT
        self._client_base = generation << CLIENT_ID_SHIFT
        self._channel_base = index << CHANNEL_ID_SHIFT
        self.sync = sync
        self.share_rows = share_rows
        self._max_waiting, self._stall_s = max_waiting, stall_s
        self._shares: list[tuple[object, ...]] = []
        self._verdicts: list[tuple[object, ...]] = []
        self._events: list[tuple[object, ...]] = []
        self._scheduled = False
        self._seq = 0  # the last frame sent (sync)
        self._inflight = False  # a frame awaits its ack (sync)
        self._acked = asyncio.Event()
        self._held: deque[_Held] = deque()
        self._held_by: dict[object, int] = {}  # miner -> replies of it in _held
        self.lost = 0  # records produced after the pipe closed
        self.degraded = 0  # share replies written before their record was known to be on disk (sync)

    # ------------------------------------------------------------------ records

    def channel(self, channel_id: int) -> int:
        return self._channel_base | channel_id if channel_id else 0

    def submit(self, record: ShareRecord) -> None:
        if not self.share_rows:
            return
        r = record
        self._shares.append((
            r.received_at_ms, r.instance_id, self._seq_base | r.share_seq, r.worker_name,
            self._client_base | r.client_id, self.channel(r.channel_id), r.sequence_number, r.sv1_job_id,
            r.job_id, r.nonce, r.ntime, r.version, r.extranonce, r.share_hash, r.target_difficulty,
            r.share_difficulty, r.verdict, r.forwarded,
        ))  # fmt: skip
        self._schedule()

    def submit_pool_verdict(self, record: PoolVerdictRecord) -> None:
        if not self.share_rows:
            return
        r = record
        self._verdicts.append((
            r.received_at_ms, r.instance_id, self.channel(r.channel_id), r.sequence_number,
            self._seq_base | r.share_seq, r.pool_verdict,
        ))  # fmt: skip
        self._schedule()

    def submit_event(self, record: EventRecord) -> None:
        r = record
        self._events.append((
            r.time_ms, r.instance_id, self._seq_base | r.event_seq, r.event_type, r.worker_name,
            self._client_base | r.client_id if r.client_id else 0, r.address, r.user_agent, r.reason,
            r.old_difficulty, r.difficulty, self.channel(r.channel_id), r.detail, r.online, r.since_ms,
            r.last_share_ms,
        ))  # fmt: skip
        self._schedule()

    def answer(self, miner: object, write: Write, line: bytes, record: ShareRecord | None) -> None:
        """Write the reply ``line``: at once ("fast"), or ("sync") once the parent acknowledged the
        frame holding ``record``, and never before an earlier held reply of that miner."""
        if record is not None:
            self.submit(record)
        if not self.sync or self._pipe.ended:
            if record is not None and self.sync:
                self.degraded += 1
            write(line)
            return
        if record is not None:
            self._hold(_Held(self._seq + 1, miner, write, line, True))  # the next frame holds it
        elif miner in self._held_by:
            self._hold(_Held(self._seq, miner, write, line, False))  # behind that miner's held replies
        else:
            write(line)
            return
        if len(self._held) > self._max_waiting:
            self._backpressure()

    # ------------------------------------------------------------------ frames

    def _pending(self) -> bool:
        return bool(self._shares or self._verdicts or self._events)

    def _schedule(self) -> None:
        if self._scheduled or (self.sync and self._inflight):
            return  # sync: the ack of the frame in flight sends the next one
        self._scheduled = True
        loop = asyncio.get_running_loop()
        if self.sync:
            loop.call_soon(self.flush)  # this tick's rows in one frame
        else:
            loop.call_later(FLUSH_DELAY_S, self.flush)

    def flush(self) -> None:
        """Send the pending rows (sync: unless a frame awaits its ack)."""
        self._scheduled = False
        if self._pending() and not (self.sync and self._inflight):
            self._send()

    def _send(self) -> None:
        t = self._transport
        ended = self._pipe.ended or t.is_closing()
        if not ended and t.get_write_buffer_size() > MAX_PIPE_BUFFER and self._pending_rows() <= MAX_PENDING_ROWS:
            # The parent reads slowly (a burst, a busy loop): the rows wait here and are tried again.
            self._retry_later()
            return
        shares, verdicts, events = self._shares, self._verdicts, self._events
        self._shares, self._verdicts, self._events = [], [], []
        if ended or t.get_write_buffer_size() > MAX_PIPE_BUFFER:
            # The parent is gone, or stalled past MAX_PENDING_ROWS: bound this process's memory
            # (the parent's share log is where records wait, spool included).
            if not self.lost:
                log.error("share records lost: the parent does not read the pipe")
            self.lost += len(shares) + len(verdicts) + len(events)
            self._give_up("the parent does not read the pipe")
            return
        seq = 0
        if self.sync:
            self._seq = seq = self._seq + 1
            self._inflight = True
        t.write(encode(("rows", seq, shares, verdicts, events)))

    def _pending_rows(self) -> int:
        return len(self._shares) + len(self._verdicts) + len(self._events)

    def _retry_later(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(RETRY_DELAY_S, self.flush)

    # ------------------------------------------------------------------ held replies (sync)

    @property
    def waiting(self) -> int:
        return len(self._held)

    def _hold(self, h: _Held) -> None:
        self._held.append(h)
        self._held_by[h.key] = self._held_by.get(h.key, 0) + 1

    def _on_ack(self, seq: int, durable: bool) -> None:
        if seq >= self._seq:
            self._inflight = False
            self._acked.set()
        self._release(seq, durable)
        if not self._inflight and self._pending():
            self._send()

    def _release(self, upto: int, durable: bool) -> None:
        held = self._held
        while held and held[0].frame <= upto:
            h = held.popleft()
            n = self._held_by[h.key] - 1
            if n:
                self._held_by[h.key] = n
            else:
                del self._held_by[h.key]
            if h.share and not durable:
                self.degraded += 1
            try:
                h.write(h.line)
            except Exception:  # one broken connection must not keep the others' replies
                log.debug("a held reply could not be written", exc_info=True)

    def _give_up(self, why: str) -> None:
        """Write every held reply unconfirmed; stop waiting for the frame in flight."""
        if self._held:
            log.error("share log: %s; %d replies written before their shares were known to be on disk "
                      "(durability_degraded)", why, len(self._held))
        self._inflight = False
        self._acked.set()
        self._release(self._seq + 1, False)
        if self._pending():
            self._schedule()  # the rows held back for the frame in flight go now

    def _backpressure(self) -> None:
        """Too many replies wait: block the loop (no miner is read meanwhile) on the parent's ack,
        at most ``stall_s``; a parent silent longer gets them released unconfirmed."""
        deadline = time.monotonic() + self._stall_s
        while len(self._held) > self._max_waiting:
            if not self._inflight:
                if not self._pending():
                    break
                self._send()
                if not self._inflight:
                    break  # could not send: released already
            if not self._pipe.read_now(self._fd, deadline - time.monotonic()):
                self._give_up(f"the parent did not confirm a commit within {self._stall_s:g}s")
                return

    async def settle(self) -> None:
        """At stop: send what is pending and wait (sync: at most ``stall_s``) until the parent
        acknowledged it; any reply still held then goes out unconfirmed."""
        deadline = asyncio.get_running_loop().time() + self._stall_s
        while self.sync and (self._inflight or self._pending()) and not self._pipe.ended:
            if not self._inflight:
                self._send()
                continue
            self._acked.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._acked.wait()
            except TimeoutError:
                break
        if self._pending():
            self._send()
        if self._held:
            self._give_up("stopping before the parent confirmed every share")
