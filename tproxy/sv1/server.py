"""The SV1 TCP listener: accepts miners, enforces limits, feeds lines to sessions.

Owns the sockets and their limits (connection cap, line length, first-message
and idle timeouts, write-buffer bound for miners that stop reading). Policy
lives in ``MinerSession``; the bridge creates a session per connection. A bad
line gets a JSON-RPC error; garbage that is not a line at all (an over-long
line, a TLS ClientHello) closes that one connection quickly; nothing else is
affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from tproxy.config import DownstreamSettings
from tproxy.sv1 import protocol as p
from tproxy.sv1.session import MinerSession

log = logging.getLogger("tproxy.sv1.server")

READ_CHUNK = 65536
MAX_WRITE_BUFFER = 1 << 20


class SessionFactory(Protocol):
    def open_session(self, peer: str, write: Callable[[bytes], None], close: Callable[[], None]) -> MinerSession | None:
        """A new session, or None to refuse the miner (e.g. extranonce space exhausted)."""

    def close_session(self, session: MinerSession) -> None: ...


class Sv1Server:
    """Listens for SV1 miners."""

    def __init__(self, settings: DownstreamSettings, factory: SessionFactory) -> None:
        self.settings = settings
        self.factory = factory
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.refused = 0
        self.closed_for_garbage = 0
        self.closed_idle = 0

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    @property
    def port(self) -> int:
        assert self._server is not None
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.settings.address, self.settings.port, backlog=1024, limit=READ_CHUNK
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
        transport = writer.transport
        closing = False

        def write(data: bytes) -> None:
            nonlocal closing
            if closing:
                return
            if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                # The miner stopped reading; holding more for it would grow without bound.
                closing = True
                transport.abort()
                return
            transport.write(data)

        def close() -> None:
            nonlocal closing
            closing = True
            transport.close()

        session = self.factory.open_session(peer, write, close)
        if session is None:
            self.refused += 1
            return
        buf = p.LineBuffer(self.settings.max_line_bytes)
        timeout = self.settings.first_message_timeout_s
        try:
            while not closing:
                try:
                    async with asyncio.timeout(timeout):
                        data = await reader.read(READ_CHUNK)
                except TimeoutError:
                    self.closed_idle += 1
                    log.info("client %d (%s): idle timeout", session.client_id, peer)
                    return
                except OSError:  # reset by the miner: an ordinary way to leave
                    return
                if not data:
                    return
                timeout = self.settings.idle_timeout_s
                try:
                    lines = buf.feed(data)
                except p.Sv1ProtocolError as e:
                    self.closed_for_garbage += 1
                    log.info("client %d (%s): closing: %s", session.client_id, peer, e)
                    write(p.error(None, e.code, str(e)))
                    return
                if len(lines) > self.settings.max_pending_submits:
                    self.closed_for_garbage += 1
                    log.info("client %d (%s): closing: %d lines in one read (flood)", session.client_id, peer, len(lines))
                    return
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        msg = p.parse_line(line)
                    except p.Sv1ProtocolError as e:
                        if session.subscribed or session.authorized:
                            write(p.error(None, e.code, str(e)))
                            continue
                        # Garbage before any valid request (a TLS ClientHello from
                        # bfgminer, an HTTP probe): answer and hang up at once.
                        self.closed_for_garbage += 1
                        write(p.error(None, e.code, str(e)))
                        return
                    if isinstance(msg, p.Request):
                        session.handle(msg)
                if transport.get_write_buffer_size() > MAX_WRITE_BUFFER // 2:
                    await writer.drain()
        finally:
            session.closed = True
            self.factory.close_session(session)
