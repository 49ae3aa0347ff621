"""A scripted SV1 client for end-to-end tests: exact lines out, every reply and notification kept.

Unlike the synthetic miner it never decides anything on its own; a test says
what to send and then inspects what came back. ``find_share`` grinds nonces for
the latest job so a test can submit a share that meets (or misses) a target.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from sv2 import work


@dataclass
class NotifiedJob:
    job_id: str
    prevhash: str
    coinb1: bytes
    coinb2: bytes
    branches: list[bytes]
    version: int
    nbits: int
    ntime: int
    clean: bool
    difficulty: float


class Sv1TestClient:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self._ids = itertools.count(100)
        self._waiters: dict[Any, list[asyncio.Future[dict[str, Any]]]] = {}
        self.notifications: list[dict[str, Any]] = []
        self.jobs: list[NotifiedJob] = []
        self.difficulty = 0.0
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.worker = ""
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> Sv1TestClient:
        self = cls()
        self.reader, self.writer = await asyncio.open_connection(host, port)
        self._task = asyncio.create_task(self._read_loop())
        return self

    async def _read_loop(self) -> None:
        try:
            while line := await self.reader.readline():
                msg = json.loads(line)
                if msg.get("method"):
                    self._on_notification(msg)
                else:
                    waiters = self._waiters.get(msg.get("id"))
                    if waiters:
                        waiters.pop(0).set_result(msg)
                self._changed.set()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            self._changed.set()

    def _on_notification(self, msg: dict[str, Any]) -> None:
        self.notifications.append(msg)
        params = msg.get("params") or []
        if msg["method"] == "mining.set_difficulty":
            self.difficulty = float(params[0])
        elif msg["method"] == "mining.notify":
            self.jobs.append(
                NotifiedJob(
                    job_id=params[0],
                    prevhash=params[1],
                    coinb1=bytes.fromhex(params[2]),
                    coinb2=bytes.fromhex(params[3]),
                    branches=[bytes.fromhex(b) for b in params[4]],
                    version=int(params[5], 16),
                    nbits=int(params[6], 16),
                    ntime=int(params[7], 16),
                    clean=bool(params[8]),
                    difficulty=self.difficulty,
                )
            )
        elif msg["method"] == "mining.set_extranonce":
            self.extranonce1 = bytes.fromhex(params[0])
            self.extranonce2_size = int(params[1])

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, method: str, params: list[Any], *, req_id: Any = None, timeout: float = 10) -> dict[str, Any]:
        if req_id is None:
            req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(req_id, []).append(fut)
        await self.send_raw(json.dumps({"id": req_id, "method": method, "params": params}).encode() + b"\n")
        return await asyncio.wait_for(fut, timeout)

    async def next_reply(self, req_id: Any, timeout: float = 10) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(req_id, []).append(fut)
        return await asyncio.wait_for(fut, timeout)

    async def handshake(self, worker: str = "farm.worker1", *, configure: bool = True) -> None:
        if configure:
            r = await self.request("mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}])
            assert r["result"]["version-rolling"] is True
        r = await self.request("mining.subscribe", ["test-client/1.0"])
        self.extranonce1 = bytes.fromhex(r["result"][1])
        self.extranonce2_size = r["result"][2]
        r = await self.request("mining.authorize", [worker, "x"])
        assert r["result"] is True, r
        self.worker = worker

    async def wait_for(self, predicate: Any, timeout: float = 15) -> None:
        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                if predicate():
                    return
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_job(self, *, after: int = 0, clean: bool | None = None, timeout: float = 15) -> NotifiedJob:
        def ok() -> bool:
            return any(clean is None or j.clean == clean for j in self.jobs[after:])

        await self.wait_for(ok, timeout)
        return [j for j in self.jobs[after:] if clean is None or j.clean == clean][-1]

    def header_hash(self, job: NotifiedJob, en2: bytes, ntime: int, nonce: int, version: int | None = None) -> bytes:
        coinbase = job.coinb1 + self.extranonce1 + en2 + job.coinb2
        root = work.merkle_root(work.sha256d(coinbase), job.branches)
        prev = work.sv2_prevhash_from_sv1(job.prevhash)
        return work.sha256d(work.header(version if version is not None else job.version, prev, root, ntime, job.nbits, nonce))

    def find_share(
        self, job: NotifiedJob, *, en2: bytes | None = None, meets: bool = True, difficulty: float | None = None,
        version: int | None = None, start_nonce: int = 0,
    ) -> tuple[bytes, int, int]:
        """(extranonce2, ntime, nonce) whose hash meets (or misses) the target of ``difficulty``."""
        en2 = en2 if en2 is not None else bytes(self.extranonce2_size)
        target = work.target_from_difficulty(difficulty if difficulty is not None else job.difficulty)
        for nonce in range(start_nonce, start_nonce + 50_000_000):
            h = self.header_hash(job, en2, job.ntime, nonce, version)
            if work.hash_meets_target(h, target) == meets:
                return en2, job.ntime, nonce
        raise AssertionError("no nonce found")

    async def submit(
        self, worker: str, job: NotifiedJob, en2: bytes, ntime: int, nonce: int, version_bits: int | None = None,
    ) -> dict[str, Any]:
        params: list[Any] = [worker, job.job_id, en2.hex(), f"{ntime:08x}", f"{nonce:08x}"]
        if version_bits is not None:
            params.append(f"{version_bits:08x}")
        return await self.request("mining.submit", params)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
