"""Hostile SV1 peers for hardening tests: raw sockets that dribble, speak TLS, or never read.

Each helper does one misbehaviour over real TCP on 127.0.0.1; the tests
assert that the proxy closes (or answers) that one peer and that a normal
miner beside it keeps mining.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator

from devnet.pool import DevPool
from tests.helpers.stack import Stack, pool_settings, proxy_settings
from tests.helpers.sv1_client import Sv1TestClient
from tests.helpers.waiting import HANG_GUARD_S
from tproxy.runtime import Proxy


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = HANG_GUARD_S) -> bytes:
    """Everything the proxy sends until it closes the connection (the timeout is a hang guard)."""
    out = b""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                out += chunk
    return out


async def dribble(port: int, data: bytes, interval_s: float, *, forever: bool = False) -> bool:
    """Send ``data`` one byte every ``interval_s`` (repeating if ``forever``); True once the proxy closed us."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    closed = asyncio.create_task(read_until_closed(reader))
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            while not closed.done():
                for b in data:
                    if closed.done():
                        break
                    try:
                        writer.write(bytes([b]))
                        await writer.drain()
                    except ConnectionError:
                        break
                    await asyncio.sleep(interval_s)
                if not forever:
                    break
            await closed
            return True
    finally:
        closed.cancel()
        writer.close()


def tls_client_hello_via_ssl(port: int, version: ssl.TLSVersion) -> str:
    """Start a real TLS handshake (Python's ssl module) against the plain SV1 port; how it ended."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = version
    ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.do_handshake()
        except (ssl.SSLError, OSError) as e:
            return type(e).__name__
    return "handshake completed"  # would mean the SV1 port spoke TLS


def tls_record_hello(version: int) -> bytes:
    """A minimal ClientHello in a TLS record of ``version`` (0x0300..0x0304), as scanners send."""
    body = struct.pack(">H", min(version, 0x0303)) + bytes(32) + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16" + struct.pack(">HH", version, len(handshake)) + handshake


def sslv2_hello(version: int = 0x0301) -> bytes:
    """An SSLv2-format ClientHello (2-byte header with the top bit set), as old clients send."""
    body = b"\x01" + struct.pack(">HHHH", version, 3, 0, 16) + b"\x00\x00\x2f" + bytes(16)
    return struct.pack(">H", 0x8000 | len(body)) + body


@contextlib.asynccontextmanager
async def stack_with(
    *, downstream: dict[str, object] | None = None, proxy: dict[str, object] | None = None
) -> AsyncIterator[Stack]:
    """A dev pool and a proxy like ``stack.running``, with downstream and proxy settings overridden."""
    pool = DevPool(pool_settings())
    await pool.start()
    settings = proxy_settings([pool.port], **(proxy or {}))
    settings = settings.model_copy(update={"downstream": settings.downstream.model_copy(update=downstream or {})})
    px = Proxy(settings, share_log=False)
    await px.start()
    try:
        yield Stack(pool, px)
    finally:
        await px.close()
        await pool.close()


async def mine_one(c: Sv1TestClient, *, en2_seed: int = 1) -> bool:
    """Submit one valid share for the client's latest job; True if the proxy accepted it."""
    job = c.jobs[-1]
    en2, ntime, nonce = c.find_share(job, en2=en2_seed.to_bytes(c.extranonce2_size, "big"))
    return (await c.submit(c.worker, job, en2, ntime, nonce))["result"] is True


async def deaf_miner(port: int, worker: str, *, rcvbuf: int = 4096) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A miner that subscribes and authorizes, then never reads again (tiny receive buffer, so
    what the proxy sends backs up at the proxy quickly instead of in this kernel's buffers)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b'{"id":1,"method":"mining.subscribe","params":["deaf/1.0"]}\n'
        + b'{"id":2,"method":"mining.authorize","params":["' + worker.encode() + b'","x"]}\n'
    )
    await writer.drain()
    async with asyncio.timeout(HANG_GUARD_S):
        while b'"id":2' not in await reader.readline():
            pass
    return reader, writer
