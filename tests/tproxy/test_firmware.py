"""Scripted firmware clients (devnet.firmware, docs/FIRMWARE.md) mining through dev pool + proxy.

Over real TCP on 127.0.0.1 with real Noise and real sha256d. Every test
asserts what issue 10 asks of the proxy: no share rejected except truly
invalid ones (the clients submit only shares that meet the difficulty their
firmware believes in, so: none), no work submitted twice, the pool accepted
exactly what the proxy forwarded, and every forwarded share got the pool's
verdict (the dev pool's ack timer acknowledges the last partial batch).
"""

from __future__ import annotations

import pytest

from devnet.firmware import (
    BfgMiner,
    BraiinsOs,
    CpuMiner,
    CpuMinerOpt,
    EspMiner,
    FirmwareClient,
    NerdMiner,
    Whatsminer,
)
from tests.helpers.firmware_stack import FirmwareStack, firmware_stack
from tests.helpers.waiting import until

DIFF = 2e-6  # ~8,600 hashes per share
HASHRATE = 40_000.0
SHARES = 6


def assert_clean_run(st: FirmwareStack, c: FirmwareClient) -> None:
    """Issue 10's promises for one client that has been settled."""
    assert c.violations == [], c.violations
    assert dict(c.rejected) == {}, c.rejected
    assert c.duplicates() == []
    assert c.accepted == len(c.submitted) > 0
    assert st.forwarded() == c.accepted  # the pool's difficulty is far below: every accepted share goes up
    assert st.pool.total_accepted == st.forwarded() and st.pool.total_rejected == 0
    assert st.verdicted() == st.forwarded()


async def mine_through_block_and_job(st: FirmwareStack, c: FirmwareClient) -> None:
    """Mine SHARES shares on each of: the first job, a new non-clean job, a new block."""
    await until(lambda: c.accepted >= SHARES)
    for announce in (st.pool.announce_new_job, st.pool.announce_new_block):
        notifies, accepted = c.notifies, c.accepted
        await announce()
        await until(lambda: c.notifies > notifies)
        await until(lambda: c.accepted >= accepted + SHARES)


PROFILES = [
    pytest.param(CpuMiner, {}, id="cpuminer"),
    pytest.param(BfgMiner, {}, id="bfgminer"),
    pytest.param(CpuMinerOpt, {"suggest": 256.0}, id="cpuminer-opt"),
    pytest.param(EspMiner, {}, id="esp-miner"),
    pytest.param(Whatsminer, {}, id="whatsminer"),
    pytest.param(BraiinsOs, {"cpu_difficulty": True}, id="braiins-os"),
    pytest.param(NerdMiner, {}, id="nerdminer"),
]


@pytest.mark.parametrize(("cls", "kw"), PROFILES)
async def test_profile_mines_through_new_jobs_and_blocks(cls: type[FirmwareClient], kw: dict[str, object]) -> None:
    async with firmware_stack(start_difficulty=DIFF, vardiff=False) as st:
        c = st.client(cls, hashrate=HASHRATE, **kw)
        async with c:
            await until(c.ready.is_set)
            await mine_through_block_and_job(st, c)
        await st.settled(c)
        assert_clean_run(st, c)
        assert c.difficulties[0] == DIFF
