"""The SV1 TCP listener: sockets only.

Owns the listening socket, the set of miner connections and what is kept
across them: the connection cap (``max_connections``; past it, and when the
hub has no extranonce1 left, a connection is refused), the counters of
connections refused and closed by this side, the close log (one INFO line
per reason and host a minute, ``tproxy.ratelog``), the log of our own bugs,
and shutdown (every miner is sent ``client.reconnect`` and closed).

Each connection is a ``MinerConnection`` (``tproxy.sv1.connection``, an
``asyncio.Protocol``): line buffering, the per-connection limits (line
length, lines per read, TLS ClientHello, first-message and idle deadlines
counting complete lines, write-buffer and write-time bounds for miners that
stop reading) and writes. Everything a miner says goes to the hub
(``tproxy.sv1.hub``) as one parsed request at a time. Errors in the byte
stream are handled by the one table in ``tproxy.errors``: a bad line gets a
JSON-RPC error (REPLY_ERROR); garbage that is not a line at all (an
over-long line, a TLS ClientHello), or a flood of lines, closes that one
connection (CLOSE_CONNECTION); nothing else is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from tproxy.config import DownstreamSettings
from tproxy.ratelog import RateLimitedLog
from tproxy.sv1 import protocol as p
from tproxy.sv1.connection import MinerConnection
from tproxy.sv1.hub import Miner

log = logging.getLogger("tproxy.sv1.server")


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
        self.connections: set[MinerConnection] = set()  # open, and not yet closed by the hub
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
        return len(self.connections)

    @property
    def port(self) -> int:
        assert self._server is not None
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def start(self, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: MinerConnection(self), self.settings.address, self.settings.port, backlog=1024,
            reuse_port=reuse_port,
        )

    async def close(self, *, reconnect_wait_s: int = 5) -> None:
        """Stop accepting; ask every miner to come back in ``reconnect_wait_s`` (a restart)."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown(reconnect_wait_s)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def log_close(self, kind: str, client_id: int, peer: str, message: str) -> None:
        """One INFO line for a connection the server closes (rate-limited per reason and host)."""
        host = peer.rsplit(":", 1)[0]
        self._close_log.log(logging.INFO, (kind, host), f"client {client_id} ({peer}): {message}")

    def internal_error(self, method: str) -> None:
        """Count a bug of ours met while handling ``method``; logged with its traceback (rate-limited).

        Called from the ``except`` block that caught it."""
        self.internal_errors += 1
        if self._bug_log.log(logging.ERROR, method[:64], f"internal error handling {method[:64]!r}"):
            log.exception("traceback of the internal error")
