"""Connection limits of the monitoring port.

Owns ``ConnectionLimits`` (the numbers), ``ConnectionGate`` (the asyncio
protocol factory that enforces them in front of aiohttp's request handler)
and ``mark_requests`` (the middleware that tells the gate when a request has
been read). The monitoring server runs in the proxy's process: every
connection it holds is a file descriptor the SV1 listener cannot use, and
idle connections used to be held forever (20,000 of them exhausted the
descriptors, locking out new miners and making /health unreachable).

What a connection may do, and what happens otherwise:

* ``max_connections`` open at once. At the cap, a new connection evicts the
  oldest admitted connection that is not serving a request (a silent or
  slowly dribbling one, or an idle keep-alive), counted in ``evicted``; only
  when every admitted connection is in the middle of a request is the new
  one closed at once, without a response (``refused``). A slot cannot be
  reserved for /health (the path is unknown until the request is read), so
  this is what keeps an idle flood from locking out probes and scrapes: a
  real client sends its request right after connecting, and the flood's
  older idle connections make way for it. Every connection that is not
  actively exchanging a request is also cut after a few seconds (below)
  (tests/monitoring/test_connections.py).
* ``header_timeout_s`` from connecting to the end of the first request's
  headers, and on a kept-alive connection from the first byte of a later
  request to the end of its headers (slowloris: a client that sends its
  headers byte by byte is cut; a silent new connection too; counted in
  ``header_timeouts``).
* ``idle_timeout_s`` without a request after a response (aiohttp's
  keep-alive timer; it does not restart on partial data).
* ``send_timeout_s`` with the socket's send buffer full (a peer that stopped
  reading a large /metrics body is cut, counted in ``timed_out``).
* Request line up to ``max_request_line`` bytes (a worker name may be
  thousands of characters, percent-encoded up to 9 bytes each), header lines
  up to ``max_field_size`` bytes, at most ``max_headers`` headers. Longer is
  a 400 from aiohttp's parser.
* Bodies are never read: the API is GET-only, a request that announces a
  body is answered 413 (``monitoring.api``) and the connection closed
  without reading it (``lingering_time=0``).

aiohttp's own error log (malformed requests) goes through a rate-limited
logger (``monitoring.logs.RateLimitFilter``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from monitoring.logs import RateLimitFilter, log_limited

log = logging.getLogger("monitoring.connections")

# aiohttp logs each malformed request with a traceback; through this logger,
# repeats of one error are dropped for a minute (monitoring.logs).
HTTP_LOG = logging.getLogger("monitoring.http")
HTTP_LOG.addFilter(RateLimitFilter())


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-port connection limits (see the module doc; config: ``[monitoring]``)."""

    max_connections: int = 256
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    send_timeout_s: float = 30.0
    # 64 KiB: the longest worker name the SV1 side accepts with its default
    # 16 KiB line limit, percent-encoded (x3), plus the path.
    max_request_line: int = 65_536
    max_field_size: int = 8_190
    max_headers: int = 32

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        if min(self.header_timeout_s, self.idle_timeout_s, self.send_timeout_s) <= 0:
            raise ValueError("connection timeouts must be > 0")

    def runner_kwargs(self) -> dict[str, Any]:
        """The aiohttp ``AppRunner`` (request handler) arguments these limits set."""
        return {
            "keepalive_timeout": self.idle_timeout_s,
            "max_line_size": self.max_request_line,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
            "lingering_time": 0,  # never read a body we did not ask for
            "handler_cancellation": True,  # a peer that leaves cancels its request
            "logger": HTTP_LOG,
        }


class ConnectionGate:
    """Protocol factory for ``loop.create_server``: caps and times connections.

    ``make_handler`` builds the protocol that serves an admitted connection
    (aiohttp's ``runner.server``, set when the server starts); it is only
    called for admitted ones.
    """

    def __init__(self, limits: ConnectionLimits, make_handler: Callable[[], asyncio.Protocol] | None = None) -> None:
        self.make_handler = make_handler
        self.limits = limits
        self.open = 0  # admitted connections not yet closed
        self.refused = 0  # closed at once: at the cap with every admitted connection mid-request
        self.evicted = 0  # idle connections closed to admit a new one at the cap
        self._admitted: dict[_Guarded, None] = {}  # oldest first
        self.header_timeouts = 0  # cut: headers not complete within header_timeout_s
        self.send_timeouts = 0  # cut: peer not reading for send_timeout_s

    @property
    def timed_out(self) -> int:
        """Connections cut by the header or the send timeout."""
        return self.header_timeouts + self.send_timeouts

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self)

    def _evict_oldest_idle(self) -> bool:
        victim = next((g for g in self._admitted if not g.in_request), None)
        if victim is None:
            return False
        self.evicted += 1
        victim.abort()  # connection_lost runs later; the slot is the new connection's now
        return True

    def _admit(self, guard: _Guarded) -> asyncio.Protocol | None:
        if self.open >= self.limits.max_connections and self._evict_oldest_idle():
            log_limited(
                log, logging.WARNING, "evict",
                "monitoring connection limit (%d) reached: closing the oldest idle connections (%d so far)",
                self.limits.max_connections, self.evicted,
            )
        elif self.open >= self.limits.max_connections:
            self.refused += 1
            log_limited(
                log,
                logging.WARNING,
                "cap",
                "monitoring connection limit (%d) reached: refusing new connections (%d refused so far)",
                self.limits.max_connections,
                self.refused,
            )
            return None
        if self.make_handler is None:
            raise RuntimeError("ConnectionGate has no handler factory (server not started)")
        self.open += 1
        self._admitted[guard] = None
        return self.make_handler()

    def _released(self, guard: _Guarded) -> None:
        if guard in self._admitted:  # once per connection: eviction, then connection_lost
            del self._admitted[guard]
            self.open -= 1

    def _expired(self, what: str) -> None:
        if what == "header":
            self.header_timeouts += 1
        else:
            self.send_timeouts += 1
        log_limited(log, logging.INFO, what, "monitoring connection cut: %s timeout", what)


class _Guarded(asyncio.Protocol):
    """One connection: forwards to aiohttp's handler, enforces the gate's timers."""

    __slots__ = ("_gate", "_header_timer", "_in_request", "_inner", "_pending", "_send_timer", "_transport")

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._in_request = False
        self._pending = False  # bytes arrived while a request was being handled

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        inner = self._gate._admit(self)
        if inner is None:
            transport.abort()  # at the cap: closed at once, nothing sent
            return
        self._inner = inner
        self._arm_header_timer()  # a new connection owes its first request's headers at once
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._in_request:
            self._pending = True
        elif self._header_timer is None:
            self._arm_header_timer()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is None:
            return
        if self._send_timer is None:
            loop = asyncio.get_running_loop()
            self._send_timer = loop.call_later(self._gate.limits.send_timeout_s, self._expire, "send")
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is None:
            return
        self._cancel_send_timer()
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_send_timer()
        inner, self._inner = self._inner, None
        if inner is not None:
            self._gate._released(self)
            inner.connection_lost(exc)

    @property
    def in_request(self) -> bool:
        return self._in_request

    def abort(self) -> None:
        """Close at once (eviction); ``connection_lost`` follows and frees the slot."""
        if self._transport is not None:
            self._gate._released(self)
            self._transport.abort()

    # -- request boundaries (from ``mark_requests``) -------------------------------

    def request_started(self) -> None:
        """The headers of a request have been read: the header timer is done."""
        self._cancel_header_timer()
        self._in_request = True
        self._pending = False

    def request_finished(self) -> None:
        self._in_request = False
        if self._pending and self._inner is not None:
            self._pending = False
            self._arm_header_timer()  # a pipelined request started arriving meanwhile

    # -- timers --------------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self._gate.limits.header_timeout_s, self._expire, "header")

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _expire(self, what: str) -> None:
        if what == "header":
            self._header_timer = None
        else:
            self._send_timer = None
        if self._inner is not None and self._transport is not None:
            self._gate._expired(what)
            self._transport.abort()


def _guard_of(request: web.BaseRequest) -> _Guarded | None:
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, _Guarded) else None


@web.middleware
async def mark_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's gate a request was read (a no-op without a gate)."""
    guard = _guard_of(request)
    if guard is None:
        return await handler(request)
    guard.request_started()
    try:
        return await handler(request)
    finally:
        guard.request_finished()


DEFAULT_CONNECTION_LIMITS = ConnectionLimits()
