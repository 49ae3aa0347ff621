"""The scripted firmware clients against a scripted SV1 server over real TCP on 127.0.0.1.

These check the oracle itself: that each client writes what docs/FIRMWARE.md
says its firmware writes, in that order, and treats a re-sent notify, a new
difficulty and a bad reply the way that firmware does. The proxy is not
involved (tests/tproxy/test_firmware.py runs the clients through it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from devnet.firmware import (
    BfgMiner,
    BraiinsOs,
    CpuMiner,
    EspMiner,
    FirmwareClient,
    NerdMiner,
    Whatsminer,
)
from devnet.miner import MinerJob, sha256d
from tests.helpers.waiting import until

EN1 = "0a0b0c0d"
DIFF = 1e-7  # ~430 hashes per share
COINB1 = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff0e03a0bb0d"
COINB2 = "ffffffff01" + "00f2052a01000000" + "160014" + "00" * 20 + "00000000"


def notify(job_id: str, clean: bool = False, ntime: int = 0x6700_0000) -> dict[str, Any]:
    return {"id": None, "method": "mining.notify", "params": [
        job_id, "00" * 32, COINB1, COINB2, [sha256d(b"tx").hex()], "20000000", "1d00ffff", f"{ntime:08x}", clean,
    ]}


class Server:
    """One scripted SV1 peer: the test reads what the client wrote and writes the replies."""

    def __init__(self) -> None:
        self.conn: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future())
        self.port = 0

    async def recv(self) -> dict[str, Any]:
        reader, _ = await self.conn
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line, "client closed the connection"
        msg: dict[str, Any] = json.loads(line)
        return msg

    async def recv_request(self, method: str) -> dict[str, Any]:
        """The next line that is not a submit (submits are answered true on the way)."""
        while True:
            msg = await self.recv()
            if msg.get("method") != "mining.submit":
                assert msg.get("method") == method, msg
                return msg
            await self.send({"id": msg["id"], "result": True, "error": None})

    async def send(self, *msgs: dict[str, Any]) -> None:
        _, writer = await self.conn
        for m in msgs:
            writer.write(json.dumps(m).encode() + b"\n")
        await writer.drain()

    async def closed(self) -> bool:
        reader, _ = await self.conn
        return await asyncio.wait_for(reader.read(), 10) == b""

    async def answer_submits(self) -> None:
        while True:
            msg = await self.recv()
            if msg.get("method") == "mining.submit":
                await self.send({"id": msg["id"], "result": True, "error": None})


@asynccontextmanager
async def scripted(cls: type[FirmwareClient], **kw: Any) -> AsyncIterator[tuple[Server, FirmwareClient]]:
    srv = Server()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not srv.conn.done():
            srv.conn.set_result((reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = cls("127.0.0.1", port, hashrate=50_000.0, **kw)
    client.start()
    try:
        yield srv, client
    finally:
        await client.close()
        server.close()
        if srv.conn.done():
            srv.conn.result()[1].close()


def subscribe_reply(rid: Any) -> dict[str, Any]:
    return {"id": rid, "result": [[["mining.notify", "1"]], EN1, 4], "error": None}


def ok(rid: Any) -> dict[str, Any]:
    return {"id": rid, "result": True, "error": None}


async def test_esp_miner_writes_three_lines_back_to_back_then_suggests() -> None:
    async with scripted(EspMiner) as (srv, c):
        lines = [await srv.recv() for _ in range(3)]  # nothing answered yet
        assert [(m["id"], m["method"]) for m in lines] == [
            (1, "mining.configure"), (2, "mining.subscribe"), (3, "mining.authorize")]
        assert lines[0]["params"] == [["version-rolling"], {"version-rolling.mask": "ffffffff"}]
        assert lines[1]["params"] == ["bitaxe/BM1370/v2.15.0"]
        await srv.send({"id": 1, "result": {"version-rolling": True, "version-rolling.mask": "1fffe000"},
                        "error": None}, subscribe_reply(2), ok(3))
        assert await srv.recv_request("mining.suggest_difficulty") == {
            "id": 4, "method": "mining.suggest_difficulty", "params": [1000]}
        await srv.send({"id": None, "method": "mining.set_difficulty", "params": [DIFF]}, notify("a"))
        sub = await srv.recv()
        assert sub["method"] == "mining.submit" and len(sub["params"]) == 6
        job = c.jobs["a"]
        rolled = job.version ^ int(sub["params"][5], 16)  # XOR form: the rolled bits lie in the mask
        assert rolled != job.version and (rolled ^ job.version) & ~0x1FFFE000 == 0
        assert c.violations == []


async def test_esp_miner_flags_a_notify_before_the_subscribe_reply() -> None:
    async with scripted(EspMiner) as (srv, c):
        for _ in range(3):
            await srv.recv()
        await srv.send(notify("early"))
        await until(lambda: bool(c.violations))
        assert c.violations == ["mining.notify before the subscribe reply"]


async def test_whatsminer_suggests_before_anything_else() -> None:
    async with scripted(Whatsminer) as (srv, _):
        first = await srv.recv()
        assert first == {"id": 1, "method": "mining.suggest_difficulty", "params": [65536]}
        configure = await srv.recv()
        assert configure["method"] == "mining.configure" and configure["params"][1]["version-rolling.mask"] == "1fffe000"
        await srv.send(ok(1), {"id": 2, "result": {"version-rolling": True, "version-rolling.mask": "1fffe000"},
                               "error": None})
        sub = await srv.recv()
        assert sub == {"id": 3, "method": "mining.subscribe", "params": ["whatsminer/v1.0", "27dce2daa197369b"]}


async def test_braiins_os_closes_on_a_mask_other_than_1fffe000() -> None:
    async with scripted(BraiinsOs) as (srv, c):
        configure = await srv.recv()
        assert configure["id"] == 0 and configure["params"][1] == {
            "version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 16}
        await srv.send({"id": 0, "result": {"version-rolling": True, "version-rolling.mask": "00ffe000"},
                        "error": None})
        assert await srv.closed()
        assert c.violations and "configure reply refused" in c.violations[0]


async def test_braiins_os_subscribes_with_four_params_and_an_empty_password() -> None:
    async with scripted(BraiinsOs) as (srv, c):
        await srv.recv()
        await srv.send({"id": 0, "result": {"version-rolling": True, "version-rolling.mask": "1fffe000"},
                        "error": None})
        sub, auth = await srv.recv(), await srv.recv()  # back to back, before any reply
        assert sub["params"] == ["Braiins OS 2019-06-05", None, f"127.0.0.1:{c.port}", None]
        assert auth == {"id": 3, "method": "mining.authorize", "params": ["bc1qexample.w1", ""]}
        await srv.send(subscribe_reply(1), ok(3), notify("j"))
        await until(lambda: c.notifies == 1 and c.ready.is_set())
        assert not c.mining_allowed() and c.hashes == 0  # no set_difficulty yet: BOS does not mine
        await srv.send({"id": None, "method": "mining.set_difficulty", "params": [0.5]})
        await until(lambda: c.difficulty is not None)
        assert c.violations == [
            "mining.notify before any mining.set_difficulty",  # what this script did on purpose
            "difficulty 0.5 < 1: BOS truncates it to 0",
        ]
        assert c.difficulty == 1.0 and c.mining_allowed()  # this client truncates but does not crash


async def test_nerdminer_takes_the_first_line_as_the_subscribe_reply() -> None:
    async with scripted(NerdMiner) as (srv, c):
        await srv.recv()
        await srv.send({"id": None, "method": "mining.set_difficulty", "params": [DIFF]}, subscribe_reply(1))
        assert await srv.closed()
        assert c.violations and c.violations[0].startswith("unusable subscribe reply")


def test_nerdminer_nonce_is_not_zero_padded() -> None:
    assert NerdMiner("127.0.0.1", 1).nonce_param(0x0ABC1234) == "abc1234"


async def _mine_then_renotify(cls: type[FirmwareClient]) -> FirmwareClient:
    """Job "1" at DIFF, then a retarget done the defective way: set_difficulty + the same notify again."""
    async with scripted(cls) as (srv, c):
        sub = await srv.recv_request("mining.subscribe")
        await srv.send(subscribe_reply(sub["id"]))
        auth = await srv.recv_request("mining.authorize")
        await srv.send(ok(auth["id"]), {"id": None, "method": "mining.set_difficulty", "params": [DIFF]}, notify("1"))
        answering = asyncio.create_task(srv.answer_submits())
        try:
            await until(lambda: len(c.submitted) >= 5)
            await srv.send({"id": None, "method": "mining.set_difficulty", "params": [DIFF / 2]}, notify("1"))
            mark = len(c.submitted)
            await until(lambda: len(c.submitted) >= mark + 10)
        finally:
            answering.cancel()
        return c


async def test_cpuminer_keeps_its_work_and_difficulty_on_a_known_job_id() -> None:
    c = await _mine_then_renotify(CpuMiner)
    assert {s.difficulty for s in c.submitted} == {DIFF}  # the new value never reached the work
    assert c.duplicates() == []
    assert set(c.jobs) == {"1"}


async def test_bfgminer_restarts_on_a_known_job_id_and_repeats_its_shares() -> None:
    c = await _mine_then_renotify(BfgMiner)
    assert {s.difficulty for s in c.submitted} == {DIFF, DIFF / 2}
    dups = c.duplicates()
    assert dups and all(d.job_id == "1" and d.difficulty == DIFF / 2 for d in dups)


def test_bfgminer_reads_integer_difficulties_on_its_own_diff1() -> None:
    c = BfgMiner("127.0.0.1", 1)
    assert c.target_for(2.0) == ((1 << 224) - 1) // 2
    assert c.target_for(0.5) == (0xFFFF << 208) * 2


@pytest.mark.parametrize("cls", [CpuMiner, BfgMiner])
def test_header_is_built_like_devnet_miner(cls: type[FirmwareClient]) -> None:
    c = cls("127.0.0.1", 1)
    c.extranonce1, c.extranonce2_size = bytes.fromhex(EN1), 4
    job = MinerJob.from_notify(notify("x")["params"], difficulty=DIFF, extranonce1=c.extranonce1, extranonce2_size=4)
    c.jobs["x"] = job
    c.start_work(job, 3)
    assert c.work is not None and c.work.extranonce2 == (3).to_bytes(4, "little")
    assert c.work.header76 == job.header((3).to_bytes(4, "little"), job.version, 0)[:76]
