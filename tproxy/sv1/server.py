"""The SV1 TCP listener: sockets only.

Owns the sockets and their limits (connection cap, line length, lines per
read, first-message and idle deadlines, write-buffer and write-time bounds
for miners that stop reading), line buffering and writes. Everything a miner
says goes to the hub (``tproxy.sv1.hub``) as one parsed request at a time.
Errors in the byte stream are handled by the one table in ``tproxy.errors``:
a bad line gets a JSON-RPC error (REPLY_ERROR); garbage that is not a line at
all (an over-long line, a TLS ClientHello), or a flood of lines, closes that
one connection (CLOSE_CONNECTION); nothing else is affected.

Deadlines count complete lines, not bytes: the first line must be complete,
and a subscribe or authorize answered, within ``first_message_timeout_s`` of
the connect; after that each line must be complete within ``idle_timeout_s``
of the previous one. A client dribbling bytes, or sending lines that never
lead to mining, cannot hold a slot. Repeated identical errors from one connection are logged once
per minute with a count (``tproxy.ratelog``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from tproxy.config import DownstreamSettings
from tproxy.errors import Action, PeerError, Sv1Flood, action_for
from tproxy.ratelog import RateLimitedLog
from tproxy.sv1 import protocol as p
from tproxy.sv1.hub import Miner
from tproxy.sv1.worker_events import (
    REASON_BAD_INPUT,
    REASON_CLOSED,
    REASON_FLOOD,
    REASON_IDLE,
    REASON_SLOW_READER,
)

log = logging.getLogger("tproxy.sv1.server")

MINER_READ_CHUNK = 65536


class MinerHub(Protocol):
    """What the server needs from the hub."""

    def open(self, peer: str, write: Callable[[bytes], None], close: Callable[[], None]) -> Miner | None:
        """A new miner, or None to refuse it (e.g. extranonce space exhausted)."""

    def handle(self, miner: Miner, req: p.Request) -> None: ...

    def close(self, miner: Miner, reason: str = ...) -> None:
        """The connection is gone; ``reason`` says why (the disconnect event's reason)."""


class Sv1Server:
    """Listens for SV1 miners."""

    def __init__(self, settings: DownstreamSettings, hub: MinerHub) -> None:
        self.settings = settings
        self.hub = hub
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.refused = 0
        self.closed_for_garbage = 0
        self.closed_idle = 0
        self.closed_tls = 0
        self.closed_slow = 0  # stopped reading: write buffer or write time exceeded
        self.internal_errors = 0
        self._bug_log = RateLimitedLog(log)
        # One line per (reason, host) a minute: a scanner or a broken controller opening
        # thousands of connections is a few lines with counts, each distinct miner still one line.
        self._close_log = RateLimitedLog(log)

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    @property
    def port(self) -> int:
        assert self._server is not None
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def start(self, *, reuse_port: bool = False) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.settings.address, self.settings.port, backlog=1024, limit=MINER_READ_CHUNK,
            reuse_port=reuse_port,
        )

    async def close(self, *, reconnect_wait_s: int = 5) -> None:
        """Stop accepting; ask every miner to come back in ``reconnect_wait_s`` (a restart)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers.values()):
            sock = writer.get_extra_info("sockname")
            if isinstance(sock, tuple) and not writer.is_closing():
                with contextlib.suppress(Exception):
                    writer.write(p.reconnect(str(sock[0]), int(sock[1]), reconnect_wait_s))
        for t in list(self._conns):
            t.cancel()
        for t in list(self._conns):
            with contextlib.suppress(BaseException):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.settings.max_connections:
            self.refused += 1
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self._writers[task] = writer
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            self._writers.pop(task, None)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        out = _Output(writer, self.settings, peer, self)
        miner = self.hub.open(peer, out.write, out.close)
        if miner is None:
            self.refused += 1
            return
        out.client_id = miner.client_id
        errors = RateLimitedLog(log)
        try:
            await self._read_loop(reader, out, miner, errors)
        except p.TlsClientHello as e:
            out.close_reason = REASON_BAD_INPUT
            # One parse-error line (a human with netcat or a log capture sees why), then close:
            # the client's TLS stack reports it as a protocol error either way.
            self.closed_tls += 1
            self.log_close("tls", miner.client_id, peer, f"closed: {p.TLS_MESSAGE}")
            out.write(p.error(None, e.code, p.TLS_MESSAGE))
        except PeerError as e:  # CLOSE_CONNECTION: the loop answers the REPLY_ERROR ones itself
            out.close_reason = REASON_FLOOD if isinstance(e, Sv1Flood) else REASON_BAD_INPUT
            self.closed_for_garbage += 1
            self.log_close(type(e).__name__, miner.client_id, peer, f"closing: {e}")
            if isinstance(e, p.Sv1ProtocolError):
                out.write(p.error(None, e.code, str(e)))
        finally:
            errors.flush(f"client {miner.client_id} ({peer}): ")
            self.hub.close(miner, out.close_reason or REASON_CLOSED)

    async def _read_loop(self, reader: asyncio.StreamReader, out: _Output, miner: Miner, errors: RateLimitedLog) -> None:
        """Feed lines to the hub until the miner leaves; raises the PeerError that must close it."""
        buf = p.LineBuffer(self.settings.max_line_bytes)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        deadline = _Deadline(loop, task, loop.time() + self.settings.first_message_timeout_s)
        first = True  # no complete line yet
        head: bytes | None = b""  # the first bytes, until they tell whether the client speaks TLS
        try:
            while not out.closing:
                if deadline.expired:  # passed while the loop was draining, not reading
                    out.close_reason = REASON_IDLE
                    self._timed_out(miner, first)
                    return
                deadline.reading = True
                try:
                    data = await reader.read(MINER_READ_CHUNK)
                except asyncio.CancelledError:
                    if not deadline.expired or task.uncancel() > 0:
                        raise  # not (only) our deadline: a shutdown
                    out.close_reason = REASON_IDLE
                    self._timed_out(miner, first)
                    return
                except OSError:  # reset by the miner: an ordinary way to leave
                    return
                finally:
                    deadline.reading = False
                if not data:
                    return
                if head is not None:
                    head = (head + data)[: p.TLS_SNIFF_BYTES]
                    verdict = p.tls_sniff(head)
                    if verdict:
                        raise p.TlsClientHello(p.TLS_MESSAGE)
                    if verdict is False or b"\n" in data:
                        head = None
                lines = buf.feed(data)
                if not lines:
                    continue
                first = False
                if len(lines) > self.settings.max_pending_submits:
                    raise Sv1Flood(f"{len(lines)} lines in one read (flood)")
                self._handle_lines(lines, miner, errors)
                if miner.session.greeted:
                    deadline.move(loop.time() + self.settings.idle_timeout_s)
                # else: the first-message deadline stands until the miner subscribes or authorizes,
                # so lines that never lead to mining (pings, unknown methods) cannot hold a slot
                if out.backed_up:
                    await out.drain_if_backed_up()
        finally:
            deadline.cancel()

    def _handle_lines(self, lines: list[bytes], miner: Miner, errors: RateLimitedLog) -> None:
        session = miner.session
        for line in lines:
            try:
                msg = p.parse_line(line)
            except p.Sv1ProtocolError as e:
                if action_for(e, greeted=session.greeted) is not Action.REPLY_ERROR:
                    raise
                errors.log(logging.INFO, type(e).__name__, f"client {miner.client_id} ({session.peer}): bad line: {e}")
                miner.write(p.error(None, e.code, str(e)))
                continue
            if isinstance(msg, p.Request):
                self._handle_request(miner, msg)

    def _handle_request(self, miner: Miner, req: p.Request) -> None:
        try:
            self.hub.handle(miner, req)
        except PeerError:
            raise  # acted on by the caller's table
        except Exception:
            # Our bug, not the miner's: logged with its traceback (rate-limited), the
            # request answered with an error, and the miner kept.
            self.internal_errors += 1
            if self._bug_log.log(logging.ERROR, req.method[:64], f"internal error handling {req.method[:64]!r}"):
                log.exception("traceback of the internal error")
            miner.write(p.error(req.id, p.OTHER, "internal error"))

    def _timed_out(self, miner: Miner, first: bool) -> None:
        self.closed_idle += 1
        if first:
            why = f"no complete first line within {self.settings.first_message_timeout_s:g} s"
        elif not miner.session.greeted:
            why = f"no subscribe or authorize within {self.settings.first_message_timeout_s:g} s"
        else:
            why = f"idle: no complete line for {self.settings.idle_timeout_s:g} s"
        self.log_close("timeout", miner.client_id, miner.session.peer, f"closing: {why}")

    def log_close(self, kind: str, client_id: int, peer: str, message: str) -> None:
        """One INFO line for a connection the server closes (rate-limited per reason and host)."""
        host = peer.rsplit(":", 1)[0]
        self._close_log.log(logging.INFO, (kind, host), f"client {client_id} ({peer}): {message}")


class _Deadline:
    """The read loop's deadline: moved on every complete line by storing a float.

    ``asyncio.timeout_at`` around each read scheduled and cancelled one timer per
    share (about 8% of the share path under cProfile). This keeps one timer per
    connection, re-armed only when it fires before the deadline it was last moved
    to (or at once when the deadline moves earlier: the first-message deadline may
    be later than the idle one). When it passes during a read, the task is
    cancelled (as asyncio.timeout does, told apart from a shutdown by
    ``Task.uncancel``); when it passes while the loop is not reading (draining),
    ``expired`` is checked before the next read.
    """

    __slots__ = ("_armed_at", "_handle", "_loop", "_task", "expired", "reading", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[None], when: float) -> None:
        self._loop = loop
        self._task = task
        self.when = when
        self.expired = False
        self.reading = False
        self._armed_at = when
        self._handle = loop.call_at(when, self._fire)

    def move(self, when: float) -> None:
        self.when = when
        if when < self._armed_at:
            self._handle.cancel()
            self._arm()

    def _arm(self) -> None:
        self._armed_at = self.when
        self._handle = self._loop.call_at(self.when, self._fire)

    def _fire(self) -> None:
        if self.when > self._loop.time():  # moved since it was armed
            self._arm()
            return
        self.expired = True
        if self.reading:
            self._task.cancel()

    def cancel(self) -> None:
        self._handle.cancel()


class _Output:
    """One miner's outgoing side: writes that never block, bounded in bytes and in time.

    A miner that stops reading makes the kernel buffer fill and then the
    transport's; once more than ``write_buffer_max_bytes`` wait, or the unsent
    bytes have not moved for ``write_timeout_s``, the connection is aborted
    (one log line) so the hub's fan-out never waits on it.
    """

    def __init__(self, writer: asyncio.StreamWriter, settings: DownstreamSettings, peer: str, server: Sv1Server) -> None:
        self._writer = writer
        self._transport = transport = writer.transport
        self._max = settings.write_buffer_max_bytes
        self._timeout = settings.write_timeout_s
        self._peer = peer
        self._server = server
        self.client_id = 0
        self.closing = False
        self.close_reason: str | None = None  # why the server closes it (the disconnect event's reason)
        self._stalled_since: float | None = None
        self._last_size = 0
        # Drain (in the read loop) before the hard bound is reached.
        transport.set_write_buffer_limits(high=max(self._max // 2, 1), low=max(self._max // 8, 1))

    def write(self, data: bytes) -> None:
        if self.closing or self._transport.is_closing():
            # Gone (reset by the miner, or aborted): the read loop is about to see it. Writing on
            # would only make asyncio log "socket.send() raised exception." for every reply
            # still being produced for this miner (the soak counted ~100 such lines).
            return
        size = self._transport.get_write_buffer_size()
        if size:  # the kernel's buffer is full: is the miner still reading at all?
            if size + len(data) > self._max:
                self._close_slow(f"{size} bytes unsent (write_buffer_max_bytes {self._max})")
                return
            now = time.monotonic()
            if size < self._last_size:
                self._stalled_since = None  # it is reading, slowly
            elif self._stalled_since is None:
                self._stalled_since = now
            elif now - self._stalled_since > self._timeout:
                self._close_slow(f"{size} bytes unsent for {now - self._stalled_since:.0f} s")
                return
        else:
            self._stalled_since = None
        self._transport.write(data)
        self._last_size = self._transport.get_write_buffer_size()

    @property
    def backed_up(self) -> bool:
        """More than half of ``write_buffer_max_bytes`` waits: the read loop drains before reading on."""
        return not self.closing and self._transport.get_write_buffer_size() > self._max // 2

    async def drain_if_backed_up(self) -> None:
        """Wait (bounded by ``write_timeout_s``) for a backed-up miner to read, or close it."""
        if self.closing or self._transport.get_write_buffer_size() <= self._max // 2:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()  # returns below the low-water mark (max / 8)
        except OSError:
            return  # the miner went away; the read loop sees it
        except TimeoutError:
            self._close_slow(f"{self._transport.get_write_buffer_size()} bytes unsent for {self._timeout:g} s")

    def _close_slow(self, why: str) -> None:
        self.close_reason = REASON_SLOW_READER
        self._server.closed_slow += 1
        self._server.log_close("slow", self.client_id, self._peer, f"closing: not reading: {why}")
        self.closing = True
        self._transport.abort()

    def close(self) -> None:
        self.closing = True
        self._transport.close()
