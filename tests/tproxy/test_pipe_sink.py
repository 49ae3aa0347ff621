"""A worker's PipeSink over a real socketpair: what happens to rows while the parent reads slowly.

The parent end is a plain socket this test reads (or does not read) itself; the worker end is
the real ``ParentPipe`` transport. The pipe's bound is lowered so a few hundred rows back it up.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest

from tests.helpers.share_log import shares
from tproxy import pipe_sink
from tproxy.pipe_sink import ParentPipe, PipeSink

_LEN = struct.Struct(">I")


async def _worker_end(sock: socket.socket, **kw: Any) -> PipeSink:
    loop = asyncio.get_running_loop()
    transport, pipe = await loop.create_unix_connection(ParentPipe, sock=sock)
    transport.set_write_buffer_limits(high=1 << 30)  # the sink's own bound is what is tested
    return PipeSink(pipe, sock.fileno(), generation=1, index=0, sync=False, max_waiting=100, stall_s=1.0, **kw)


async def _read_rows(sock: socket.socket, want: int, timeout_s: float = 20.0) -> int:
    """Read frames from the parent end until ``want`` share rows came (or the time is up)."""
    loop = asyncio.get_running_loop()
    buf = bytearray()
    got = 0
    deadline = loop.time() + timeout_s
    while got < want and loop.time() < deadline:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), max(0.01, deadline - loop.time()))
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 4 and len(buf) >= 4 + _LEN.unpack_from(buf)[0]:
            end = 4 + _LEN.unpack_from(buf)[0]
            msg = pipe_sink._decode(bytes(buf[4:end]))
            del buf[:end]
            assert msg is not None and msg[0] == "rows"
            got += len(msg[2])
    return got


def _pair() -> tuple[socket.socket, socket.socket]:
    parent, worker = socket.socketpair()
    for s in (parent, worker):
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return parent, worker


async def test_rows_wait_while_the_parent_reads_slowly_then_all_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipe_sink, "MAX_PIPE_BUFFER", 2048)
    monkeypatch.setattr(pipe_sink, "RETRY_DELAY_S", 0.01)
    parent, worker = _pair()
    sink = await _worker_end(worker)
    records = shares(3000)
    for i in range(0, len(records), 100):  # bursts over several flushes, none read meanwhile
        for r in records[i : i + 100]:
            sink.submit(r)
        await asyncio.sleep(0.02)
    assert sink.lost == 0
    assert await _read_rows(parent, len(records)) == len(records)
    assert sink.lost == 0
    parent.close()


async def test_rows_past_the_bound_are_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipe_sink, "MAX_PIPE_BUFFER", 2048)
    monkeypatch.setattr(pipe_sink, "MAX_PENDING_ROWS", 500)
    monkeypatch.setattr(pipe_sink, "RETRY_DELAY_S", 0.01)
    parent, worker = _pair()
    sink = await _worker_end(worker)
    records = shares(3000)
    for i in range(0, len(records), 100):
        for r in records[i : i + 100]:
            sink.submit(r)
        await asyncio.sleep(0.02)
    assert sink.lost > 0  # memory stays bounded: the parent did not read at all
    got = await _read_rows(parent, len(records), timeout_s=2.0)
    assert got + sink.lost == len(records)  # every row either arrived or is counted
    parent.close()


async def test_no_share_rows_when_the_parent_keeps_none() -> None:
    parent, worker = _pair()
    sink = await _worker_end(worker, share_rows=False)
    for r in shares(50):
        sink.submit(r)
    await asyncio.sleep(0.05)
    assert await _read_rows(parent, 1, timeout_s=0.3) == 0
    assert sink.lost == 0
    parent.close()
