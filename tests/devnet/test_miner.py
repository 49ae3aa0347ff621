"""Synthetic SV1 miner against a tiny SV1 server written here, over real TCP.

The server checks every submitted share with ``sv2.work`` (independent of the
miner's own hashing), so a byte-order mistake on either side shows up as a
rejected share.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from devnet.miner import DIALECTS, MinerJob, SyntheticMiner, run_miners, target_from_difficulty
from sv2 import work
from tests.helpers.vectors import load_vector

BLOCKS = load_vector("bitcoin_blocks")
GENESIS = BLOCKS["genesis_coinbase"]["synthetic_job_split"]
EN1 = GENESIS["sv1_split"]["extranonce1_hex"]
DIFF = 2e-6  # ~8,600 hashes per share


@dataclass
class Notify:
    job_id: str
    prevhash_sv1: str
    coinb1: str
    coinb2: str
    branch: list[str]
    version: int
    nbits: int
    ntime: int

    def params(self, clean: bool) -> list[Any]:
        return [
            self.job_id, self.prevhash_sv1, self.coinb1, self.coinb2, self.branch,
            f"{self.version:08x}", f"{self.nbits:08x}", f"{self.ntime:08x}", clean,
        ]


def block_job(job_id: str = "j1") -> Notify:
    """The genesis coinbase split, on block 125552's prevhash, with a two-node branch."""
    b = BLOCKS["blocks"][1]
    return Notify(
        job_id=job_id,
        prevhash_sv1=b["sv1_notify_prevhash"],
        coinb1=GENESIS["coinbase_tx_prefix_or_coinb1_hex"],
        coinb2=GENESIS["coinbase_tx_suffix_or_coinb2_hex"],
        branch=[("11" * 32), ("22" * 32)],
        version=0x20000000,
        nbits=0x1A44B9F2,
        ntime=b["time"],
    )


@dataclass
class Conn:
    writer: asyncio.StreamWriter
    lines: list[dict[str, Any]] = field(default_factory=list)
    mask: int | None = None
    extranonce1: str = EN1
    jobs: dict[str, tuple[Notify, int, str]] = field(default_factory=dict)  # id -> (job, target, en1)

    def send(self, obj: dict[str, Any]) -> None:
        self.writer.write(json.dumps(obj).encode() + b"\n")

    def notify(self, job: Notify, difficulty: float, *, clean: bool = True, set_diff: bool = True) -> None:
        if set_diff:
            self.send({"id": None, "method": "mining.set_difficulty", "params": [difficulty]})
        self.jobs[job.job_id] = (job, work.target_from_difficulty(difficulty), self.extranonce1)
        self.send({"id": None, "method": "mining.notify", "params": job.params(clean)})


class TinySv1Server:
    """A few dozen lines of SV1 pool: enough for one job and share checking."""

    def __init__(self, difficulty: float = DIFF, server_mask: int = 0x1FFFE000) -> None:
        self.difficulty = difficulty
        self.server_mask = server_mask
        self.conns: list[Conn] = []
        self.accepted: list[tuple[list[Any], bytes]] = []
        self.rejected: list[tuple[list[Any], int]] = []
        self.on_authorize: Callable[[Conn], None] | None = None
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TinySv1Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for c in self.conns:
            c.writer.close()
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        c = Conn(writer)
        self.conns.append(c)
        while line := await reader.readline():
            msg = json.loads(line)
            c.lines.append(msg)
            self._on_message(c, msg)
            await writer.drain()

    def _on_message(self, c: Conn, msg: dict[str, Any]) -> None:
        method, params, rid = msg["method"], msg["params"], msg["id"]
        if method == "mining.configure":
            asked = int(params[1].get("version-rolling.mask", "ffffffff"), 16)
            c.mask = asked & self.server_mask
            c.send({"id": rid, "result": {"version-rolling": True, "version-rolling.mask": f"{c.mask:08x}"}, "error": None})
        elif method == "mining.subscribe":
            subs = [["mining.set_difficulty", "d1"], ["mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f"]]
            c.send({"id": rid, "result": [subs, c.extranonce1, 4], "error": None})
        elif method == "mining.authorize":
            c.send({"id": rid, "result": True, "error": None})
            if self.on_authorize is not None:
                self.on_authorize(c)
            else:
                c.notify(block_job(), self.difficulty)
        elif method == "mining.submit":
            code = self._check(c, params)
            if code == 0:
                c.send({"id": rid, "result": True, "error": None})
            else:
                c.send({"id": rid, "result": None, "error": [code, "rejected", None]})
        else:  # suggest_difficulty, extranonce.subscribe
            c.send({"id": rid, "result": True, "error": None})

    def _check(self, c: Conn, params: list[Any]) -> int:
        if params[1] not in c.jobs:
            self.rejected.append((params, 21))
            return 21
        job, target, en1 = c.jobs[params[1]]
        en2 = bytes.fromhex(params[2])
        assert len(en2) == 4
        version = job.version
        if len(params) == 6:
            assert c.mask is not None, "6-param submit without a negotiated mask"
            bits = int(params[5], 16)
            assert work.version_bits_within_mask(bits, c.mask), f"{bits:08x} outside {c.mask:08x}"
            version = work.apply_version_bits(job.version, bits, c.mask)
        cb = bytes.fromhex(job.coinb1) + bytes.fromhex(en1) + en2 + bytes.fromhex(job.coinb2)
        root = work.merkle_root(work.sha256d(cb), [bytes.fromhex(n) for n in job.branch])
        h = work.header_hash(
            version, work.sv2_prevhash_from_sv1(job.prevhash_sv1), root,
            int(params[3], 16), job.nbits, int(params[4], 16),
        )
        if not work.hash_meets_target(h, target):
            self.rejected.append((params, 23))
            return 23
        self.accepted.append((params, h))
        return 0


def test_genesis_header_from_notify() -> None:
    """MinerJob rebuilds the genesis header from its SV1 split (coinbase, word swap, LE fields)."""
    g = BLOCKS["blocks"][0]
    job = MinerJob.from_notify(
        ["g", g["sv1_notify_prevhash"], GENESIS["coinbase_tx_prefix_or_coinb1_hex"],
         GENESIS["coinbase_tx_suffix_or_coinb2_hex"], [], "00000001", g["nbits_hex"], f"{g['time']:08x}", True],
        difficulty=1.0, extranonce1=bytes.fromhex(EN1), extranonce2_size=4,
    )
    header = job.header(bytes.fromhex(GENESIS["sv1_split"]["extranonce2_hex"]), 1, g["nonce"])
    assert header.hex() == g["header_hex"]
    assert work.sha256d(header)[::-1].hex() == g["hash_display"]
    assert job.target == target_from_difficulty(1.0) == work.DIFF1


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_dialect_handshake_and_valid_shares(dialect: str) -> None:
    async with TinySv1Server() as srv:
        miner = SyntheticMiner("127.0.0.1", srv.port, worker_name=f"w.{dialect}", dialect=dialect, record=True)  # type: ignore[arg-type]
        async with miner:
            await miner.wait_for(lambda m: m.accepted >= 3, timeout=10)
        assert miner.rejected == 0 and not srv.rejected
        lines = srv.conns[0].lines
        methods = [m["method"] for m in lines if m["method"] != "mining.submit"]
        submits = [m for m in lines if m["method"] == "mining.submit"]
        assert len(submits) >= 3
        assert miner.record is not None and all(r.meets_target for r in miner.record)
        if dialect == "cpuminer":
            assert methods == ["mining.subscribe", "mining.authorize"]
            assert lines[0]["params"] == ["cpuminer/2.5.1"]
            assert all(s["id"] == 4 and len(s["params"]) == 5 for s in submits)
        elif dialect == "bitaxe":
            assert methods == [
                "mining.configure", "mining.subscribe", "mining.suggest_difficulty",
                "mining.extranonce.subscribe", "mining.authorize",
            ]
            assert lines[0]["params"] == [["version-rolling"], {"version-rolling.mask": "ffffffff"}]
            assert all(len(s["params"]) == 6 for s in submits)
            # XOR form: the job version 0x20000000 has no bits inside the mask, so
            # rolled ^ job == rolled & mask, and rolling is actually exercised.
            assert any(int(s["params"][5], 16) != 0 for s in submits)
        else:
            assert methods == ["mining.configure", "mining.subscribe", "mining.authorize"]
            ext = lines[0]["params"][1]
            assert ext["version-rolling.mask"] == "1fffe000" and "version-rolling.min-bit-count" in ext
            assert all(len(s["params"]) == 6 for s in submits)
            assert all(int(s["params"][5], 16) & ~0x1FFFE000 == 0 for s in submits)
            assert any(int(s["params"][5], 16) != 0 for s in submits)
        # Every accepted share's hash is the one the miner computed.
        by_nonce = {r.nonce: r.hash for r in miner.record}
        for params, h in srv.accepted:
            assert by_nonce[int(params[4], 16)] == h


async def test_set_difficulty_waits_for_next_notify_and_clean_jobs() -> None:
    async with TinySv1Server() as srv:
        async with SyntheticMiner("127.0.0.1", srv.port, dialect="cpuminer") as miner:
            await miner.wait_for(lambda m: m.accepted >= 1)
            c = srv.conns[0]
            c.send({"id": None, "method": "mining.set_difficulty", "params": [4e-6]})
            await c.writer.drain()
            await miner.wait_for(lambda m: m.difficulty == 4e-6)
            assert miner.job is not None and miner.job.difficulty == DIFF  # not applied yet
            c.notify(block_job("j2"), 4e-6, clean=True, set_diff=False)
            await c.writer.drain()
            await miner.wait_for(lambda m: m.job is not None and m.job.job_id == "j2")
            assert miner.job.difficulty == 4e-6 and miner.clean_jobs_received == 2
            before = len(srv.accepted)
            await miner.wait_for(lambda m: len(srv.accepted) >= before + 2)
        assert not srv.rejected
        assert srv.accepted[-1][0][1] == "j2"


async def test_set_extranonce_applies_to_next_notify() -> None:
    async with TinySv1Server() as srv:
        async with SyntheticMiner("127.0.0.1", srv.port, dialect="bitaxe") as miner:
            await miner.wait_for(lambda m: m.accepted >= 1)
            c = srv.conns[0]
            c.send({"id": None, "method": "mining.set_extranonce", "params": ["a1b2c3d4", 4]})
            c.extranonce1 = "a1b2c3d4"
            c.notify(block_job("j2"), DIFF, clean=True)
            await c.writer.drain()
            before = len(srv.accepted)
            await miner.wait_for(lambda m: len(srv.accepted) >= before + 2)
            assert miner.extranonce1.hex() == "a1b2c3d4"
        assert not srv.rejected


async def test_client_reconnect_moves_to_the_new_server() -> None:
    async with TinySv1Server() as a, TinySv1Server() as b:
        async with SyntheticMiner("127.0.0.1", a.port, dialect="cpuminer") as miner:
            await miner.wait_for(lambda m: m.accepted >= 1)
            c = a.conns[0]
            c.send({"id": None, "method": "client.reconnect", "params": ["127.0.0.1", b.port, 0]})
            await c.writer.drain()
            await miner.wait_for(lambda m: len(b.accepted) >= 1)
            assert miner.port == b.port and miner.reconnect_requests == 1
        # cpuminer resumes with the previous mining.notify subscription id
        assert b.conns[0].lines[0]["params"] == ["cpuminer/2.5.1", "ae6812eb4cd7735a302a8a9dd95cf71f"]


async def test_reconnects_with_backoff_after_a_drop() -> None:
    async with TinySv1Server() as srv:
        miner = SyntheticMiner("127.0.0.1", srv.port, dialect="antminer", backoff_initial_s=0.05)
        async with miner:
            await miner.wait_for(lambda m: m.accepted >= 1)
            srv.conns[0].writer.transport.abort()
            await miner.wait_for(lambda m: m.connects >= 2 and len(srv.conns) == 2 and m.ready.is_set())
            before = miner.accepted
            await miner.wait_for(lambda m: m.accepted > before)


async def test_submit_invalid_and_submit_raw() -> None:
    async with TinySv1Server() as srv:
        miner = SyntheticMiner("127.0.0.1", srv.port, dialect="whatsminer", submit_invalid=True)
        async with miner:
            await miner.wait_for(lambda m: m.accepted >= 2 and m.rejected >= 2)
            assert miner.rejected_by_code[23] == miner.rejected
            assert miner.invalid_submitted >= miner.rejected
            resp = await miner.submit_raw(["w", "no-such-job", "00000000", "00000000", "00000000", "00000000"])
            assert resp["error"][0] == 21 and resp["result"] is None


async def test_hashrate_limit_is_respected() -> None:
    async with TinySv1Server(difficulty=1e-3) as srv:  # no shares: just hashing
        async with SyntheticMiner(
            "127.0.0.1", srv.port, hashrate_limit=40_000, batch_size=1000
        ) as miner:
            await miner.wait_for(lambda m: m.ready.is_set())
            start, t0 = miner.hashes, asyncio.get_running_loop().time()
            await asyncio.sleep(0.5)
            rate = (miner.hashes - start) / (asyncio.get_running_loop().time() - t0)
        assert 15_000 < rate < 60_000


async def test_run_miners_mixed_dialects() -> None:
    async with TinySv1Server() as srv:
        miners = await run_miners(4, "127.0.0.1", srv.port, duration=1.0, dialects=DIALECTS)
    assert [m.dialect for m in miners] == list(DIALECTS)
    assert all(m.accepted >= 1 for m in miners), [m.accepted for m in miners]
    assert not srv.rejected
