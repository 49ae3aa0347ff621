"""One SV1 miner's connection: the ``asyncio.Protocol`` between its socket and the hub.

Owns what happens to one connection's bytes; the listener (``tproxy.sv1.server``)
owns the set of connections, the connection cap, the counters and the close log.

* Reading: ``data_received`` feeds ``protocol.LineBuffer`` (at most
  ``max_line_bytes`` per line) and hands each parsed request to the hub. More
  than ``max_pending_submits`` complete lines in one read (of at most
  ``MINER_READ_CHUNK`` bytes) close the connection as a flood; a TLS
  ClientHello in the first bytes closes it after one error line; a bad line
  gets a JSON-RPC error and the miner stays (``tproxy.errors`` decides which).
* Deadlines (``_Deadline``) count complete lines: the first line, and a
  subscribe or authorize, within ``first_message_timeout_s`` of the connect;
  then a line every ``idle_timeout_s``.
* Writing: the replies written while one read is handled go out in one
  ``transport.write`` when it is done, in order; other writes (job fan-out, a
  reply the share log releases later) go out at once. Writes never block and
  are bounded: more than ``write_buffer_max_bytes`` unsent, or unsent bytes
  that have not moved for ``write_timeout_s``, abort the connection (a miner
  that stopped reading). Past half the bound (the transport's high-water mark)
  at the end of a read, reading pauses until the miner has read down to an
  eighth, for at most ``write_timeout_s``; then it is closed the same way.
* Closing: the hub hears ``close(miner, reason)`` exactly once: at once when
  this side ends the connection (deadline, TLS, garbage, flood, the miner's
  EOF, shutdown), otherwise when asyncio reports the connection lost (the
  hub's own close, a slow-reader abort, a reset). Never from inside a write:
  the hub may be iterating its miners (fan-out) when a write aborts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from tproxy.errors import Action, PeerError, Sv1Flood, action_for
from tproxy.ratelog import RateLimitedLog
from tproxy.sv1 import protocol as p
from tproxy.sv1.worker_events import (
    REASON_BAD_INPUT,
    REASON_CLOSED,
    REASON_FLOOD,
    REASON_IDLE,
    REASON_SLOW_READER,
)

if TYPE_CHECKING:
    from tproxy.sv1.hub import Miner
    from tproxy.sv1.server import Sv1Server

# The listener's logger: operators (and tests) filter SV1 connection logs by this one name.
log = logging.getLogger("tproxy.sv1.server")

MINER_READ_CHUNK = 65536
"""The most bytes one read hands on: the unit the flood bound (lines per read) counts in."""


class MinerConnection(asyncio.Protocol):
    """One miner's socket: lines in, replies out, its limits and deadlines."""

    __slots__ = (
        "_batch",
        "_deadline",
        "_done",
        "_draining",
        "_errors",
        "_first",
        "_head",
        "_last_size",
        "_lines",
        "_server",
        "_stalled_since",
        "_transport",
        "_write_paused",
        "close_reason",
        "closing",
        "miner",
    )

    _transport: asyncio.Transport
    _deadline: _Deadline

    def __init__(self, server: Sv1Server) -> None:
        self._server = server
        self.miner: Miner | None = None
        self.closing = False  # closed or closing: nothing more is read or written
        self.close_reason: str | None = None  # why this side closes it (the disconnect event's reason)
        self._done = False  # the hub has heard close (or never heard open)
        self._lines = p.LineBuffer(server.settings.max_line_bytes)
        self._head: bytes | None = b""  # the first bytes, until they tell whether the client speaks TLS
        self._first = True  # no complete line yet
        self._batch: list[bytes] | None = None  # writes held while a read is handled
        self._write_paused = False  # over the high-water mark (asyncio's pause_writing)
        self._draining: asyncio.TimerHandle | None = None  # reading paused until the miner reads
        self._stalled_since: float | None = None
        self._last_size = 0
        self._errors: RateLimitedLog | None = None  # bad lines from this miner, made at the first

    @property
    def backed_up(self) -> bool:
        """Reading is paused until the miner reads what waits for it (at most ``write_timeout_s``)."""
        return self._draining is not None

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        server = self._server
        settings = server.settings
        if len(server.connections) >= settings.max_connections:
            self._refuse()
            return
        peername = transport.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        bound = settings.write_buffer_max_bytes
        transport.set_write_buffer_limits(high=max(bound // 2, 1), low=max(bound // 8, 1))
        miner = server.hub.open(peer, self.write, self.close)
        if miner is None:
            self._refuse()
            return
        self.miner = miner
        server.connections.add(self)
        loop = asyncio.get_running_loop()
        self._deadline = _Deadline(loop, loop.time() + settings.first_message_timeout_s, self._deadline_passed)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._batch = []
        error: PeerError | None = None
        try:
            if len(data) <= MINER_READ_CHUNK:
                self._read(data)
            else:
                self._read_chunks(data)
        except PeerError as e:  # CLOSE_CONNECTION; the REPLY_ERROR ones are answered in _handle_lines
            error = e
        finally:
            self._flush()
        if error is not None:
            self._close_for(error)
        elif self._write_paused and not self.closing and self._draining is None:
            self._wait_for_reader()

    def eof_received(self) -> bool:
        self._end()  # the miner left: an ordinary way to go
        self.closing = True
        return False  # asyncio closes the transport once what is written has gone out

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._end()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        """Below the low-water mark: read again (or act on a deadline that passed meanwhile)."""
        self._write_paused = False
        draining = self._draining
        if draining is None:
            return
        draining.cancel()
        self._draining = None
        if self.closing:
            return
        if self._deadline.expired:
            # Not closed from inside this callback: asyncio's transport (3.11) would then call
            # connection_lost twice when its buffer has just emptied.
            asyncio.get_running_loop().call_soon(self._deadline_passed)
        else:
            self._transport.resume_reading()

    # ------------------------------------------------------------------ reading

    def _read_chunks(self, data: bytes) -> None:
        for i in range(0, len(data), MINER_READ_CHUNK):
            if self.closing:
                return
            self._read(data[i : i + MINER_READ_CHUNK])

    def _read(self, data: bytes) -> None:
        """One read's bytes to the hub as requests; raises the PeerError that must close the connection."""
        if self._head is not None:
            head = (self._head + data)[: p.TLS_SNIFF_BYTES]
            verdict = p.tls_sniff(head)
            if verdict:
                raise p.TlsClientHello(p.TLS_MESSAGE)
            self._head = None if verdict is False or b"\n" in data else head
        lines = self._lines.feed(data)
        if not lines:
            return
        self._first = False
        settings = self._server.settings
        if len(lines) > settings.max_pending_submits:
            raise Sv1Flood(f"{len(lines)} lines in one read (flood)")
        miner = self.miner
        assert miner is not None
        self._handle_lines(lines, miner)
        if miner.session.greeted:
            self._deadline.extend(settings.idle_timeout_s)
        # else: the first-message deadline stands until the miner subscribes or authorizes,
        # so lines that never lead to mining (pings, unknown methods) cannot hold a slot

    def _handle_lines(self, lines: list[bytes], miner: Miner) -> None:
        session = miner.session
        for line in lines:
            try:
                msg = p.parse_line(line)
            except p.Sv1ProtocolError as e:
                if action_for(e, greeted=session.greeted) is not Action.REPLY_ERROR:
                    raise
                if self._errors is None:
                    self._errors = RateLimitedLog(log)
                self._errors.log(logging.INFO, type(e).__name__, f"client {miner.client_id} ({session.peer}): bad line: {e}")
                self.write(p.error(None, e.code, str(e)))
                continue
            if isinstance(msg, p.Request):
                self._handle_request(miner, msg)

    def _handle_request(self, miner: Miner, req: p.Request) -> None:
        try:
            self._server.hub.handle(miner, req)
        except PeerError:
            raise  # acted on by data_received, through the errors table
        except Exception:
            # Our bug, not the miner's: logged with its traceback (rate-limited), the
            # request answered with an error, and the miner kept.
            self._server.internal_error(req.method)
            self.write(p.error(req.id, p.OTHER, "internal error"))

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes) -> None:
        """The hub's write: held while a read is handled (one ``transport.write`` at its end), else sent."""
        batch = self._batch
        if batch is not None:
            batch.append(data)
        else:
            self._send(data)

    def _flush(self) -> None:
        batch = self._batch
        self._batch = None
        if batch:
            self._send(batch[0] if len(batch) == 1 else b"".join(batch))

    def _send(self, data: bytes) -> None:
        transport = self._transport
        if self.closing or transport.is_closing():
            # Gone (reset by the miner, or aborted): connection_lost is on its way. Writing on
            # would only make asyncio log "socket.send() raised exception." for every reply
            # still being produced for this miner (the soak counted ~100 such lines).
            return
        size = transport.get_write_buffer_size()
        if size:  # the kernel's buffer is full: is the miner still reading at all?
            settings = self._server.settings
            bound = settings.write_buffer_max_bytes
            if size + len(data) > bound:
                self._close_slow(f"{size} bytes unsent (write_buffer_max_bytes {bound})")
                return
            now = time.monotonic()
            if size < self._last_size:
                self._stalled_since = None  # it is reading, slowly
            elif self._stalled_since is None:
                self._stalled_since = now
            elif now - self._stalled_since > settings.write_timeout_s:
                self._close_slow(f"{size} bytes unsent for {now - self._stalled_since:.0f} s")
                return
        else:
            self._stalled_since = None
        transport.write(data)
        self._last_size = transport.get_write_buffer_size()

    def _wait_for_reader(self) -> None:
        """Backed up after a read: read no more until the miner reads, for at most ``write_timeout_s``."""
        self._transport.pause_reading()
        timeout = self._server.settings.write_timeout_s
        self._draining = asyncio.get_running_loop().call_later(timeout, self._reader_timed_out)

    def _reader_timed_out(self) -> None:
        self._draining = None
        if not self.closing:
            timeout = self._server.settings.write_timeout_s
            self._close_slow(f"{self._transport.get_write_buffer_size()} bytes unsent for {timeout:g} s")

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """The hub's close: what was written goes out, then the connection closes."""
        self._flush()
        self.closing = True
        self._transport.close()

    def shutdown(self, reconnect_wait_s: int) -> None:
        """The proxy stops: ask the miner to come back to this address in ``reconnect_wait_s``, then close."""
        transport = self._transport
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, tuple) and not transport.is_closing():
            with contextlib.suppress(Exception):
                transport.write(p.reconnect(str(sock[0]), int(sock[1]), reconnect_wait_s))
        self._shut()

    def _refuse(self) -> None:
        self._server.refused += 1
        self._done = True
        self.closing = True
        self._transport.close()

    def _close_for(self, e: PeerError) -> None:
        """Close for the miner's bytes: a TLS ClientHello, an over-long line, a flood, garbage."""
        miner = self.miner
        assert miner is not None
        server, peer = self._server, miner.session.peer
        if isinstance(e, p.TlsClientHello):
            # One parse-error line (a human with netcat or a log capture sees why), then close:
            # the client's TLS stack reports it as a protocol error either way.
            self.close_reason = REASON_BAD_INPUT
            server.closed_tls += 1
            server.log_close("tls", miner.client_id, peer, f"closed: {p.TLS_MESSAGE}")
            self._send(p.error(None, e.code, p.TLS_MESSAGE))
        else:
            self.close_reason = REASON_FLOOD if isinstance(e, Sv1Flood) else REASON_BAD_INPUT
            server.closed_for_garbage += 1
            server.log_close(type(e).__name__, miner.client_id, peer, f"closing: {e}")
            if isinstance(e, p.Sv1ProtocolError):
                self._send(p.error(None, e.code, str(e)))
        self._shut()

    def _deadline_passed(self) -> None:
        if not self.closing and self._draining is None:
            self._timed_out()
        # while draining the miner cannot send: resume_writing acts on it once the miner has read

    def _timed_out(self) -> None:
        miner = self.miner
        assert miner is not None
        server, settings = self._server, self._server.settings
        self.close_reason = REASON_IDLE
        server.closed_idle += 1
        if self._first:
            why = f"no complete first line within {settings.first_message_timeout_s:g} s"
        elif not miner.session.greeted:
            why = f"no subscribe or authorize within {settings.first_message_timeout_s:g} s"
        else:
            why = f"idle: no complete line for {settings.idle_timeout_s:g} s"
        server.log_close("timeout", miner.client_id, miner.session.peer, f"closing: {why}")
        self._shut()

    def _close_slow(self, why: str) -> None:
        miner = self.miner
        assert miner is not None
        self.close_reason = REASON_SLOW_READER
        self._server.closed_slow += 1
        self._server.log_close("slow", miner.client_id, miner.session.peer, f"closing: not reading: {why}")
        self.closing = True
        self._transport.abort()  # the hub hears it from connection_lost

    def _shut(self) -> None:
        """This side ends the connection: the hub hears it now; what is written still goes out."""
        self._end()
        self.closing = True
        self._transport.close()

    def _end(self) -> None:
        """Tell the hub (once), stop the timers, leave the listener's set."""
        if self._done:
            return
        self._done = True
        self._deadline.cancel()
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None
        self._server.connections.discard(self)
        miner = self.miner
        assert miner is not None
        if self._errors is not None:
            self._errors.flush(f"client {miner.client_id} ({miner.session.peer}): ")
        self._server.hub.close(miner, self.close_reason or REASON_CLOSED)


class _Deadline:
    """A connection's read deadline: moved on every complete line by storing a float.

    ``asyncio.timeout_at`` around each read scheduled and cancelled one timer per
    share (about 8% of the share path under cProfile). This keeps one timer per
    connection, re-armed only when it fires before the deadline it was last moved
    to (or at once when the deadline moves earlier: the first-message deadline may
    be later than the idle one). When it passes, ``expired`` is set and
    ``on_expiry`` is called.
    """

    __slots__ = ("_armed_at", "_handle", "_loop", "_on_expiry", "expired", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float, on_expiry: Callable[[], None]) -> None:
        self._loop = loop
        self._on_expiry = on_expiry
        self.when = when
        self.expired = False
        self._armed_at = when
        self._handle = loop.call_at(when, self._fire)

    def extend(self, seconds: float) -> None:
        """The deadline is now ``seconds`` from now."""
        self.when = when = self._loop.time() + seconds
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
        self._on_expiry()

    def cancel(self) -> None:
        self._handle.cancel()
