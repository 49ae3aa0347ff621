"""The SV1 TCP listener: sockets only.

Owns the sockets and their limits (connection cap, line length, lines per
read, first-message and idle timeouts, write-buffer bound for miners that
stop reading), line buffering and writes. Everything a miner says goes to
the hub (``tproxy.sv1.hub``) as one parsed request at a time. Errors in the
byte stream are handled by the one table in ``tproxy.errors``: a bad line
gets a JSON-RPC error (REPLY_ERROR); garbage that is not a line at all (an
over-long line, a TLS ClientHello before any request), or a flood of lines,
closes that one connection (CLOSE_CONNECTION); nothing else is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from tproxy.config import DownstreamSettings
from tproxy.errors import Action, PeerError, Sv1Flood, action_for
from tproxy.sv1 import protocol as p
from tproxy.sv1.hub import Miner

log = logging.getLogger("tproxy.sv1.server")

MINER_READ_CHUNK = 65536
MAX_MINER_WRITE_BUFFER = 1 << 20


class MinerHub(Protocol):
    """What the server needs from the hub."""

    def open(self, peer: str, write: Callable[[bytes], None], close: Callable[[], None]) -> Miner | None:
        """A new miner, or None to refuse it (e.g. extranonce space exhausted)."""

    def handle(self, miner: Miner, req: p.Request) -> None: ...

    def close(self, miner: Miner) -> None: ...


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
            self._accept, self.settings.address, self.settings.port, backlog=1024, limit=MINER_READ_CHUNK
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
            if transport.get_write_buffer_size() > MAX_MINER_WRITE_BUFFER:
                # The miner stopped reading; holding more for it would grow without bound.
                closing = True
                transport.abort()
                return
            transport.write(data)

        def close() -> None:
            nonlocal closing
            closing = True
            transport.close()

        miner = self.hub.open(peer, write, close)
        if miner is None:
            self.refused += 1
            return
        try:
            await self._read_loop(reader, writer, miner, lambda: closing)
        except PeerError as e:  # CLOSE_CONNECTION: the loop answers the REPLY_ERROR ones itself
            self.closed_for_garbage += 1
            log.info("client %d (%s): closing: %s", miner.client_id, peer, e)
            if isinstance(e, p.Sv1ProtocolError):
                write(p.error(None, e.code, str(e)))
        finally:
            self.hub.close(miner)

    async def _read_loop(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, miner: Miner, closing: Callable[[], bool]
    ) -> None:
        """Feed lines to the hub until the miner leaves; raises the PeerError that must close it."""
        buf = p.LineBuffer(self.settings.max_line_bytes)
        timeout = self.settings.first_message_timeout_s
        transport = writer.transport
        hub, session = self.hub, miner.session
        while not closing():
            try:
                async with asyncio.timeout(timeout):
                    data = await reader.read(MINER_READ_CHUNK)
            except TimeoutError:
                self.closed_idle += 1
                log.info("client %d (%s): idle timeout", miner.client_id, session.peer)
                return
            except OSError:  # reset by the miner: an ordinary way to leave
                return
            if not data:
                return
            timeout = self.settings.idle_timeout_s
            lines = buf.feed(data)
            if len(lines) > self.settings.max_pending_submits:
                raise Sv1Flood(f"{len(lines)} lines in one read (flood)")
            for line in lines:
                try:
                    msg = p.parse_line(line)
                except p.Sv1ProtocolError as e:
                    if action_for(e, greeted=session.greeted) is not Action.REPLY_ERROR:
                        raise
                    miner.write(p.error(None, e.code, str(e)))
                    continue
                if isinstance(msg, p.Request):
                    hub.handle(miner, msg)
            if transport.get_write_buffer_size() > MAX_MINER_WRITE_BUFFER // 2:
                await writer.drain()
