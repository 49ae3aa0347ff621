"""Hostile SV1 and HTTP clients for the soak (bench/soak.py), all bounded in time and count.

Owns: a minimal scripted SV1 client (``Sv1Script``) that the soak's canary
miners use (with a miner difficulty so low that every nonce is a valid share,
no hashing is needed), and the hostile payloads and behaviours: bad text in
worker names, garbage and TLS bytes, huge and non-finite numbers, line
floods, connection floods, readers that never read, first lines dribbled a
byte at a time, idle TCP connections. Every function here stops on its own:
each takes a count and/or a number of seconds, and closes what it opened.

Nothing here asserts anything about the proxy: the soak judges the proxy by
what its canaries were answered and what reached the share log.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"

# Worker names a miner may send: a lone surrogate (valid JSON "\ud800", invalid UTF-8), a NUL,
# terminal control sequences, and 10,000 characters.
BAD_NAMES: tuple[str, ...] = (
    "farm.\ud800lone",
    "farm.nul\x00byte",
    "farm.ctl\x01\x1b[31m\r\n\x7f",
    "farm." + "x" * 10_000,
    "farm.\udfff\ud800\ud83d",
    "",
    " ",
    "farm.%2F..%2F%00",
    "farm.\u202eRTL\ufeff\u200b",
)

# Lines that are not SV1: not JSON, JSON of the wrong shape, wrong types in the right shape.
GARBAGE_LINES: tuple[bytes, ...] = (
    b"\xff\xfe\xfd not utf-8 \xc0\xaf\n",
    b"{\n",
    b"[]\n",
    b"null\n",
    b"42\n",
    b'"just a string"\n',
    b'{"id":1}\n',
    b'{"id":1,"method":null,"params":null}\n',
    b'{"id":1,"method":"mining.subscribe","params":"notalist"}\n',
    b'{"id":{"a":1},"method":"mining.subscribe","params":[]}\n',
    b'{"id":1,"method":"mining.authorize","params":[null,null]}\n',
    b'{"id":1,"method":"mining.authorize","params":[1,2,3,4,5]}\n',
    b'{"id":1,"method":"mining.submit","params":["w","j","zz","zz","zz"]}\n',
    b'{"id":1,"method":"mining.submit","params":[]}\n',
    b'{"id":1,"method":"\\u0000\\ud800","params":[]}\n',
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00" * 64 + b"\n",
    b"\r\n\r\n\n\n",
)

# A TLS 1.2 ClientHello record as a miner configured for stratum+ssl would send first.
TLS_CLIENT_HELLO = bytes.fromhex(
    "16030100a5010000a10303" + "00" * 32 + "00" + "0020" + "c02bc02fc02cc030cca9cca8c013c014009c009d002f0035"
    "000a" + "0100" + "0058" + "000000140012000f6578616d706c652e6578616d706c65"
    "000b000403000102000a000a0008001d001700180019000d0012001004030804040105030805050108060601"
)

# Raw JSON text (not json.dumps: these literals are what a hostile miner can write).
BIG_NUMBERS: tuple[str, ...] = (
    "1" + "0" * 400, "1e999", "-1e999", "NaN", "Infinity", "-1", "0", "-0.0", "true", "null",
    '"1e999"', "[[[[[]]]]]", "{}", "1e-400", "4.9e-324", "18446744073709551617",
)


def big_number_lines(value: str) -> list[bytes]:
    """Requests that carry ``value`` where a number is expected."""
    return [
        f'{{"id":1,"method":"mining.suggest_difficulty","params":[{value}]}}\n'.encode(),
        f'{{"id":2,"method":"mining.configure","params":[["minimum-difficulty","version-rolling"],'
        f'{{"minimum-difficulty.value":{value},"version-rolling.mask":{value},'
        f'"version-rolling.min-bit-count":{value}}}]}}\n'.encode(),
        f'{{"id":{value},"method":"mining.subscribe","params":["hostile/{value[:20]}",{value}]}}\n'.encode(),
        f'{{"id":3,"method":"mining.extranonce.subscribe","params":[{value}]}}\n'.encode(),
    ]


def nested_line(depth: int) -> bytes:
    """A request whose params nest ``depth`` lists deep (a recursive parser's stack)."""
    return b'{"id":1,"method":"mining.suggest_difficulty","params":' + b"[" * depth + b"]" * depth + b"}\n"


@dataclass
class Job:
    job_id: str
    ntime: int


@dataclass
class Sv1Script:
    """A scripted SV1 client: exact requests out, replies matched by id, the latest job kept."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    extranonce1: str = ""
    extranonce2_size: int = 4
    job: Job | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _waiting: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _new_job: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, host: str = HOST, timeout: float = 5.0) -> Sv1Script:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=1 << 20), timeout)
        self = cls(reader, writer)
        self._task = asyncio.create_task(self._read_loop())
        return self

    async def _read_loop(self) -> None:
        try:
            while line := await self.reader.readline():
                with contextlib.suppress(ValueError):
                    self._on_message(json.loads(line))
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            self.closed.set()
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))
            self._waiting.clear()

    def _on_message(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        if msg.get("method") == "mining.notify":
            params = msg.get("params") or []
            self.job = Job(str(params[0]), int(params[7], 16))
            self._new_job.set()
        elif msg.get("method") is None and isinstance(msg.get("id"), int):
            fut = self._waiting.pop(msg["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def request(self, method: str, params: list[Any], timeout: float = 10.0) -> dict[str, Any]:
        if self.closed.is_set():
            raise ConnectionError("connection closed")
        req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        self.writer.write(json.dumps({"id": req_id, "method": method, "params": params}).encode() + b"\n")
        try:
            await asyncio.wait_for(self.writer.drain(), timeout)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(req_id, None)

    async def handshake(self, worker: str, timeout: float = 10.0) -> None:
        """configure, subscribe, authorize, then wait for the first job."""
        await self.request("mining.configure", [["version-rolling"], {"version-rolling.mask": "1fffe000"}], timeout)
        r = await self.request("mining.subscribe", ["soak-canary/1.0"], timeout)
        self.extranonce1, self.extranonce2_size = str(r["result"][1]), int(r["result"][2])
        r = await self.request("mining.authorize", [worker, "x"], timeout)
        if r.get("result") is not True:
            raise ConnectionError(f"authorize refused: {r.get('error')}")
        await asyncio.wait_for(self._new_job.wait(), timeout)

    async def submit(self, worker: str, nonce: int, timeout: float = 10.0) -> dict[str, Any]:
        """A share on the latest job (any nonce is valid at the soak's miner difficulty)."""
        if self.job is None:
            raise ConnectionError("no job")
        en2 = "00" * self.extranonce2_size
        params = [worker, self.job.job_id, en2, f"{self.job.ntime:08x}", f"{nonce:08x}"]
        return await self.request("mining.submit", params, timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


@dataclass
class HostileTally:
    """What the hostile clients did and saw (for the soak's report, not a verdict)."""

    connections: int = 0
    refused: int = 0  # connect failed or was reset at once
    lines_sent: int = 0
    replies: int = 0  # lines the proxy sent back
    cut: int = 0  # connections the proxy closed on us
    shares_answered: int = 0  # shares hostile-named miners were answered for


async def _open(port: int, tally: HostileTally, timeout: float = 5.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(HOST, port, limit=1 << 20), timeout)
    except (OSError, TimeoutError):
        tally.refused += 1
        return None
    tally.connections += 1
    return r, w


async def _drain_replies(reader: asyncio.StreamReader, seconds: float, tally: HostileTally) -> None:
    """Read what comes back for ``seconds``; count lines and whether the proxy closed the connection."""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            line = await asyncio.wait_for(reader.readline(), left)
            if not line:
                tally.cut += 1
                return
            tally.replies += 1
    except OSError:  # reset by the proxy
        tally.cut += 1
    except (TimeoutError, ValueError, asyncio.LimitOverrunError):
        return


async def send_lines(port: int, lines: list[bytes], tally: HostileTally, *, read_s: float = 1.0) -> None:
    """One connection: write ``lines`` (each may be any bytes), read replies for ``read_s``, close."""
    opened = await _open(port, tally)
    if opened is None:
        return
    reader, writer = opened
    try:
        for line in lines:
            writer.write(line)
            tally.lines_sent += 1
            await asyncio.wait_for(writer.drain(), 5)
        await _drain_replies(reader, read_s, tally)
    except (OSError, TimeoutError):
        tally.cut += 1
    finally:
        writer.close()


async def bad_name_miner(port: int, name: str, nonces: range, tally: HostileTally) -> None:
    """Authorize under a hostile name and submit one share per nonce (these rows must be logged too)."""
    try:
        c = await Sv1Script.connect(port)
    except (OSError, TimeoutError):
        tally.refused += 1
        return
    tally.connections += 1
    try:
        await c.handshake(name)
        for nonce in nonces:
            await c.submit(name, nonce)
            tally.shares_answered += 1
    except (OSError, TimeoutError, ConnectionError, KeyError, IndexError, TypeError, ValueError):
        tally.cut += 1
    finally:
        await c.close()


async def dribble(port: int, data: bytes, delay_s: float, max_s: float, tally: HostileTally) -> bool:
    """Send ``data`` one byte every ``delay_s`` seconds until sent, cut, or ``max_s`` elapsed.
    Returns whether the proxy cut the connection before that."""
    opened = await _open(port, tally)
    if opened is None:
        return True
    reader, writer = opened
    deadline = time.monotonic() + max_s
    cut = False
    try:
        for b in data:
            if time.monotonic() > deadline:
                break
            if reader.at_eof() or writer.transport.is_closing():
                cut = True
                break
            writer.write(bytes([b]))
            await asyncio.wait_for(writer.drain(), 5)
            await asyncio.sleep(delay_s)
        else:
            tally.lines_sent += 1
    except (OSError, TimeoutError):
        cut = True
    finally:
        writer.close()
    if cut:
        tally.cut += 1
    return cut


async def flood_connections(port: int, n: int, hold_s: float, tally: HostileTally, *, send: bytes = b"") -> int:
    """Open up to ``n`` connections (each optionally sending ``send``), hold them ``hold_s``, close all.
    Returns how many were still open at the end of the hold (not closed by the server)."""
    sockets: list[socket.socket] = []
    loop = asyncio.get_running_loop()
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(s, (HOST, port)), 2)
                if send:
                    await loop.sock_sendall(s, send)
            except (OSError, TimeoutError):
                tally.refused += 1
                s.close()
                continue
            tally.connections += 1
            sockets.append(s)
        await asyncio.sleep(hold_s)
        return sum(1 for s in sockets if _still_open(s))
    finally:
        for s in sockets:
            s.close()


def _still_open(s: socket.socket) -> bool:
    """Whether the peer has not closed ``s``: read (and discard) what is buffered, up to EOF,
    a reset, or nothing more to read now. Called at the end of a hold, when reading is allowed."""
    try:
        for _ in range(100_000):
            if s.recv(1 << 16) == b"":
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    return True


async def slow_reader(port: int, worker: str, requests: int, hold_s: float, tally: HostileTally) -> bool:
    """Subscribe and authorize, then send ``requests`` more requests, 10 lines every 50 ms (a
    pace no flood rule objects to), each with a 4,000-character id the reply must echo, and
    never read a reply while jobs keep coming, for ``hold_s``. Returns whether the proxy cut
    the connection meanwhile."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel buffers little for us
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + hold_s
    try:
        await asyncio.wait_for(loop.sock_connect(s, (HOST, port)), 5)
    except (OSError, TimeoutError):
        tally.refused += 1
        s.close()
        return True
    tally.connections += 1
    try:
        hello = (
            b'{"id":1,"method":"mining.subscribe","params":["slow/1.0"]}\n'
            + json.dumps({"id": 2, "method": "mining.authorize", "params": [worker, "x"]}).encode() + b"\n"
        )
        await loop.sock_sendall(s, hello)
        chunk = json.dumps({"id": "i" * 4000, "method": "mining.subscribe", "params": []}).encode() + b"\n"
        with contextlib.suppress(TimeoutError):  # the proxy may stop reading us: that is its right
            for _ in range(requests // 10):
                await asyncio.wait_for(loop.sock_sendall(s, chunk * 10), max(0.01, deadline - time.monotonic()))
                tally.lines_sent += 10
                await asyncio.sleep(0.05)
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        cut = not _still_open(s)
    except OSError:  # reset by the proxy
        cut = True
    finally:
        s.close()
    if cut:
        tally.cut += 1
    return cut
