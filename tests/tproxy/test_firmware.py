"""Scripted firmware clients (devnet.firmware, docs/FIRMWARE.md) mining through dev pool + proxy.

Over real TCP on 127.0.0.1 with real Noise and real sha256d. Every test
asserts what issue 10 asks of the proxy: no share rejected except truly
invalid ones (the clients submit only shares that meet the difficulty their
firmware believes in, so: none), no work submitted twice, the pool accepted
exactly what the proxy forwarded, and every forwarded share got the pool's
verdict (the dev pool's ack timer acknowledges the last partial batch).

Two kinds of runs: each profile at a fixed difficulty across a new job and a
new block (passes today), and each profile across at least 5 vardiff
retargets up and down, forced by switching the client's hashrate between
FAST and SLOW with a 1 s retarget interval. The proxy used to re-send the
same sv1_job_id (same work) with the new target on a retarget: firmware that
ignore a known id (cpuminer, ESP-Miner) never saw the new difficulty, and
firmware that restart on every notify from a fixed point (bfgminer,
NerdMiner, Braiins OS) submitted the same headers again (issue 10.1). A
retarget now re-issues the work under a new job id with a rolled ntime.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

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

STALE = 21  # SV1 "Job not found": the code the proxy answers a stale share with
DIFF = 2e-6  # ~8,600 hashes per share
HASHRATE = 40_000.0
SHARES = 6


RETARGET_HANG_GUARD_S = 120.0  # a retarget needs the window to see the new rate; generous on a loaded machine


async def grows(value: Callable[[], int], start: int, by: int = 1) -> None:
    """Wait until ``value()`` reached ``start + by`` (the timeout is a hang guard, not asserted)."""
    await until(lambda: value() >= start + by, timeout=RETARGET_HANG_GUARD_S)


IN_FLIGHT_AT_A_BLOCK = 3  # shares a CPU-speed client can have in flight while a block change propagates


def assert_clean_run(st: FirmwareStack, c: FirmwareClient) -> None:
    """Issue 10's promises for one client that has been settled."""
    assert c.violations == [], c.violations
    # Truly invalid: a share written just before the client read the new block's clean notify
    # (its job was dropped by that notify) is stale, and the proxy is right to say so.
    raced = [s for s in c.submitted if s.error is not None and s.error[0] == STALE and s.job_id not in c.jobs]
    invalid = [s for s in c.submitted if s.accepted is False and s not in raced]
    assert invalid == [], Counter(s.error for s in invalid)
    assert c.duplicates() == []  # same header = same work, whatever the job id
    assert len({s.key for s in c.submitted}) == len(c.submitted)
    assert c.accepted == len(c.submitted) - len(raced) > 0
    assert st.forwarded() == c.accepted  # the pool's difficulty is far below: every accepted share goes up
    # The same race one hop up: a share the proxy accepted and forwarded just before the new
    # block's SetNewPrevHash reached it arrives at the pool after the pool moved on, and the pool
    # rejects it as stale. Only that, and only for the in-flight shares of a block change.
    rejected = st.pool.rejected_by_code()
    assert set(rejected) <= {"stale-share"}, rejected
    assert st.pool.total_rejected <= IN_FLIGHT_AT_A_BLOCK, rejected
    assert st.pool.total_accepted + st.pool.total_rejected == st.forwarded()
    assert st.verdicted() == st.forwarded()


async def mine_through_block_and_job(st: FirmwareStack, c: FirmwareClient) -> None:
    """Mine SHARES shares on each of: the first job, a new non-clean job, a new block."""
    await until(lambda: c.accepted >= SHARES)
    for announce in (st.pool.announce_new_job, st.pool.announce_new_block):
        notifies, accepted = c.notifies, c.accepted
        await announce()
        await grows(lambda: c.notifies, notifies)
        await grows(lambda: c.accepted, accepted, SHARES)


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
            c.pause()
            await st.settled(c)
        assert_clean_run(st, c)
        assert c.difficulties == [DIFF]
        await profile_specifics(c)


async def profile_specifics(c: FirmwareClient) -> None:
    """What each firmware needs from the proxy beyond the common promises (FIRMWARE.md section 4)."""
    if isinstance(c, EspMiner | Whatsminer | BraiinsOs):
        # 6-param submits (XOR form for ESP-Miner, masked for the others) with rolled bits, all accepted
        assert all(s.version for s in c.submitted), c.submitted[:3]
    else:
        assert all(s.version is None for s in c.submitted)
    if isinstance(c, BfgMiner):
        # rule 14: mining.get_transactions (string id "txlist<id>") gets an answer, never silence
        assert c.txlist_requests
        await until(lambda: all(f.done() for f in c.txlist_requests))
    if isinstance(c, CpuMinerOpt):
        # rule 14: extranonce.subscribe is answered with true (cpuminer-opt waits 3 s for it)
        assert c.extranonce_subscribe_reply is not None and c.extranonce_subscribe_reply["result"] is True


# ---------------------------------------------------------------------------- retargets

FAST, SLOW = 30_000.0, 2_000.0  # hashes per second: vardiff sees 15x more or fewer shares
RETARGETS = 5
STALE_LIMIT = 40  # shares at an outdated difficulty after a retarget: the miner never got it


async def new_difficulty_reaches_the_work(c: FirmwareClient) -> None:
    """The firmware hashes at the latest difficulty the proxy sent (as that firmware applies it)."""
    mark = len(c.submitted)

    def applied() -> bool:
        return c.work is not None and c.work.difficulty == c.difficulties[-1]

    def stale() -> int:
        return sum(1 for s in c.submitted[mark:] if s.difficulty != c.difficulties[-1])

    await until(lambda: applied() or stale() >= STALE_LIMIT)
    assert applied(), (
        f"still hashing at {c.work.difficulty if c.work else None} after {stale()} shares; "
        f"the proxy sent {c.difficulties[-1]}"
    )


async def force_retargets(c: FirmwareClient, retargets: int, each_way: int) -> None:
    """Alternate the client's hashrate until the proxy retargeted ``retargets`` times, at least
    ``each_way`` up and down; after each retarget the new difficulty must reach the miner's work."""
    up = True
    while True:
        ups, downs = c.retargets()
        if ups + downs >= retargets and ups >= each_way and downs >= each_way:
            return
        c.hashrate = FAST if up else SLOW
        if up:
            await grows(lambda: c.retargets()[0], ups)
        else:
            await grows(lambda: c.retargets()[1], downs)
        await new_difficulty_reaches_the_work(c)
        # mine a little at the new difficulty before turning around
        await grows(lambda: len(c.submitted), len(c.submitted), 3)
        up = not up


async def retarget_run(
    cls: type[FirmwareClient], *, retargets: int = RETARGETS, each_way: int = 2, **kw: object
) -> None:
    async with firmware_stack(
        # 10 shares/s wanted: about 7e-7 at FAST; SLOW ends at min_difficulty (~6 shares/s)
        start_difficulty=2.5e-7, min_difficulty=8e-8, vardiff=True, retarget_interval_s=1.0, shares_per_minute=600,
    ) as st:
        c = st.client(cls, hashrate=FAST, nonces_per_work=2048, **kw)
        async with c:
            await until(c.ready.is_set)
            await force_retargets(c, retargets, each_way)
            c.pause()
            await st.settled(c)
        ups, downs = c.retargets()
        assert ups + downs >= retargets and ups >= each_way and downs >= each_way, c.difficulties
        assert_clean_run(st, c)


async def test_cpuminer_keeps_its_old_work_across_retargets_up_and_down() -> None:
    # cpuminer ignores a notify whose job id it knows: the new difficulty must come with a new id,
    # and its shares on the old job stay good at the old job's difficulty.
    await retarget_run(CpuMiner)


async def test_bfgminer_restarting_on_every_notify_submits_no_duplicates_across_retargets() -> None:
    # bfgminer restarts from extranonce2 0, nonce 0 on every notify: a retarget notify that
    # leaves the work unchanged makes it submit the same headers again.
    await retarget_run(BfgMiner)


@pytest.mark.parametrize(("cls", "kw"), [
    # ignores a known job id unless clean_jobs: sees the new difficulty only with a new id
    pytest.param(EspMiner, {}, id="esp-miner"),
    # restart every notify at a fixed extranonce2: a re-notify must carry changed work
    pytest.param(NerdMiner, {}, id="nerdminer"),
    pytest.param(BraiinsOs, {"cpu_difficulty": True}, id="braiins-os"),
    # a re-notify continues the extranonce2 counter / restarts without repeating
    pytest.param(Whatsminer, {}, id="whatsminer"),
    pytest.param(CpuMinerOpt, {}, id="cpuminer-opt"),
])
async def test_other_profiles_across_retargets_up_and_down(cls: type[FirmwareClient], kw: dict[str, object]) -> None:
    # The must-show runs (cpuminer, bfgminer) go through 5 retargets; one up and one down
    # exercise the same re-issue path for the other profiles at half the time.
    await retarget_run(cls, retargets=2, each_way=1, **kw)
