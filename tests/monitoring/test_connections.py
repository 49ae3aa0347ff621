"""Connection limits of the monitoring port, with real sockets on 127.0.0.1.

The timeouts are set short so the tests finish quickly; nothing asserts how
fast a connection is cut, only that it is (the waits are hang guards).
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from devnet.static_source import StaticSource
from monitoring.connections import ConnectionLimits
from tests.helpers.monitoring_http import open_fds, raw_get, running
from tests.helpers.waiting import until

CAP = 20


async def _closed_by_peer(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent before it closed the connection."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


async def test_at_the_cap_idle_connections_make_way_and_time_out() -> None:
    limits = ConnectionLimits(max_connections=CAP, idle_timeout_s=3600.0, header_timeout_s=1.0)
    async with running(StaticSource(5), connections=limits) as server:
        gate = server.gate
        port = server.port
        assert (await raw_get(port, "/health"))[0] == 200
        await until(lambda: gate.open == 0)
        baseline = open_fds()

        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CAP + 50)]
        watchers = [asyncio.create_task(_closed_by_peer(r)) for r, _ in conns]
        await until(lambda: gate.evicted == 50)
        assert gate.open == CAP and gate.refused == 0
        # The oldest idle connections made way, closed without a response.
        assert await asyncio.gather(*watchers[:50]) == [b""] * 50
        assert not any(w.done() for w in watchers[50:])

        # Decision (monitoring.connections): no slot is reserved, but a probe arriving while an
        # idle flood holds the cap evicts the oldest idle connection and is answered.
        status, _ = await raw_get(port, "/health")
        assert status == 200 and gate.evicted == 51 and gate.refused == 0

        await until(lambda: gate.open == 0)  # the rest owe their headers: cut by the timer
        assert await asyncio.gather(*watchers) == [b""] * (CAP + 50)
        assert gate.header_timeouts == CAP - 1
        for _, w in conns:
            w.close()
        await until(lambda: open_fds() <= baseline)
        assert gate.open == 0


async def test_slowloris_is_cut_by_the_header_timeout() -> None:
    limits = ConnectionLimits(header_timeout_s=0.3, idle_timeout_s=3600.0)
    async with running(StaticSource(5), connections=limits) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        watcher = asyncio.create_task(_closed_by_peer(reader))

        async def dribble() -> None:
            for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
                if watcher.done():
                    return
                writer.write(bytes([b]))
                await asyncio.sleep(0.02)

        await asyncio.wait_for(dribble(), 60)
        assert await asyncio.wait_for(watcher, 30) == b""  # cut before its headers ended, no response
        assert (server.gate.header_timeouts, server.gate.send_timeouts) == (1, 0)
        await until(lambda: server.gate.open == 0)
        writer.close()


async def test_keep_alive_connection_idle_between_requests_is_not_cut_by_the_header_timer() -> None:
    limits = ConnectionLimits(header_timeout_s=0.2, idle_timeout_s=3600.0)
    async with running(StaticSource(5), connections=limits) as server:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(base_url=server.url, connector=connector) as http:
            for _ in range(3):
                async with http.get("/health") as r:
                    assert r.status == 200
                    await r.read()
                await asyncio.sleep(0.5)  # idle longer than the header timeout: the idle timer governs
        assert server.gate.timed_out == 0


async def test_peer_that_stops_reading_is_cut_by_the_send_timeout() -> None:
    limits = ConnectionLimits(send_timeout_s=0.3, header_timeout_s=3600.0)
    async with running(StaticSource(2000), connections=limits, limits=None) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 100)  # pipelined, never read
        try:
            await until(lambda: server.gate.timed_out == 1)
            assert server.gate.send_timeouts == 1
            await until(lambda: server.gate.open == 0)
        finally:
            sock.close()


async def test_bodies_are_refused_without_being_read() -> None:
    async with running(StaticSource(5)) as server:
        for extra, start in (
            (b"Content-Length: 100000000\r\n", b"first bytes of a body"),
            (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n"),  # the last chunk never comes
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /api/v1/global HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n" + start)
            data = await asyncio.wait_for(_closed_by_peer(reader), 30)  # closed: the body is not awaited
            assert data.startswith(b"HTTP/1.1 413 "), data[:200]
            assert b'"error"' in data
            writer.close()


async def test_request_line_limit() -> None:
    limits = ConnectionLimits(max_request_line=16_384)
    async with running(StaticSource(5), connections=limits) as server:
        status, _ = await raw_get(server.port, "/api/v1/workers/" + "x" * 16_000)
        assert status == 404  # within the limit: parsed, no such worker
        status, _ = await raw_get(server.port, "/api/v1/workers/" + "x" * 17_000)
        assert status == 400


async def test_kept_alive_connection_is_closed_after_the_idle_timeout() -> None:
    limits = ConnectionLimits(idle_timeout_s=0.3, header_timeout_s=3600.0)
    async with running(StaticSource(5), connections=limits) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in head
        length = int(next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")).split(b":")[1])
        await reader.readexactly(length)
        assert await asyncio.wait_for(_closed_by_peer(reader), 30) == b""  # then nothing, and closed
        assert server.gate.timed_out == 0  # aiohttp's keep-alive timer, not a cut
        await until(lambda: server.gate.open == 0)
        writer.close()
