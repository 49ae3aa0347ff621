"""The channel manager, driven by SV2 messages from a pool writer double and by the real SV1 hub.

No sockets, no event loop (tests/helpers/rig.py): channel assignment in both
modes, share forwarding with sequence numbers, verdict attribution, upstream
loss and return, SetTarget floors, CloseChannel, UpdateChannel, keepalives.
"""

from __future__ import annotations

import asyncio

import pytest

from sv2 import work
from sv2.messages import (
    CloseChannel,
    OpenExtendedMiningChannel,
    OpenMiningChannelError,
    SetTarget,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesSuccess,
    UpdateChannel,
)
from tests.helpers.jobs import open_success
from tests.helpers.rig import MinerSocketDouble, PoolWriterDouble, Rig
from tproxy.errors import UpstreamError


def test_aggregated_one_channel_for_every_miner() -> None:
    rig = Rig()
    a, b = rig.ready_miner("farm.a"), rig.ready_miner("farm.b")
    rig.pool_up()
    (req,) = rig.pool.of_type(OpenExtendedMiningChannel)
    assert req.user_identity == "farm"
    assert req.min_extranonce_size == rig.settings.downstream.extranonce1_size + rig.settings.downstream.extranonce2_size
    (cid,) = rig.answer_opens()
    assert a.miner is not None and b.miner is not None
    assert a.miner.channel_id == b.miner.channel_id == cid
    assert rig.hub.outage_since is None  # UpstreamUp once the shared channel is open
    c = rig.ready_miner("farm.c")  # arriving later: same channel, no new open
    assert c.miner is not None and c.miner.channel_id == cid
    assert len(rig.pool.of_type(OpenExtendedMiningChannel)) == 1


def test_non_aggregated_one_channel_per_miner_and_jobs_only_to_its_owner() -> None:
    rig = Rig(aggregated=False)
    a = rig.ready_miner("farm.a")
    rig.pool_up()
    b = rig.ready_miner("farm.b")  # upstream already up: its channel is requested at once
    assert [m.user_identity for m in rig.pool.of_type(OpenExtendedMiningChannel)] == ["farm.farm.a", "farm.farm.b"]
    ca, cb = rig.answer_opens()
    assert a.miner is not None and b.miner is not None
    assert (a.miner.channel_id, b.miner.channel_id) == (ca, cb)
    rig.new_block(ca, 1)
    assert len(a.notifies()) == 1 and b.notifies() == []
    rig.new_block(cb, 1)
    assert len(b.notifies()) == 1 and len(a.notifies()) == 1


def test_forwarded_shares_carry_increasing_sequence_numbers_and_the_full_extranonce() -> None:
    rig = Rig()
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    job = rig.new_block(cid, 1)
    assert sock.miner is not None
    en1 = sock.miner.session.extranonce1
    for k in range(3):
        assert rig.share(sock, job, k.to_bytes(4, "big"))["result"] is True
    sent = rig.pool.of_type(SubmitSharesExtended)
    assert [m.sequence_number for m in sent] == [0, 1, 2]
    assert all(m.channel_id == cid and m.job_id == job.job_id and m.ntime == job.ntime for m in sent)
    assert [m.extranonce for m in sent] == [job.pad + en1 + k.to_bytes(4, "big") for k in range(3)]
    assert [(r.channel_id, r.sequence_number, r.forwarded) for r in rig.log.shares] == [(cid, k, True) for k in range(3)]
    stats = rig.manager.channels[cid].stats
    assert stats.shares_submitted == 3 and stats.validated_work_sum == pytest.approx(3 * 1e-6)
    assert stats.best_diff == max(r.share_difficulty for r in rig.log.shares)


def test_success_and_error_verdicts_are_attributed_to_the_share_and_its_miner() -> None:
    rig = Rig()
    alice, bob = rig.ready_miner("farm.alice"), rig.ready_miner("farm.bob")
    rig.pool_up()
    (cid,) = rig.answer_opens()
    job = rig.new_block(cid, 1)
    for k in range(2):
        rig.share(alice, job, k.to_bytes(4, "big"))
    rig.share(bob, job, b"\x00\x00\x00\x09")
    seqs = {r.sequence_number: r.share_seq for r in rig.log.shares}
    # The pool acknowledges 0..1 in one Success, and rejects 2.
    rig.manager.on_upstream_message(rig.pool, SubmitSharesSuccess(cid, 1, 2, 2))
    rig.manager.on_upstream_message(rig.pool, SubmitSharesError(cid, 2, "stale-share"))
    assert alice.miner is not None and bob.miner is not None
    assert (alice.miner.session.counters.pool_accepted, alice.miner.session.counters.pool_rejected) == (2, 0)
    assert (bob.miner.session.counters.pool_accepted, bob.miner.session.counters.pool_rejected) == (0, 1)
    assert [(v.sequence_number, v.share_seq, v.pool_verdict, v.channel_id) for v in rig.log.verdicts] == [
        (0, seqs[0], "accepted", cid), (1, seqs[1], "accepted", cid), (2, seqs[2], "stale-share", cid)]
    stats = rig.manager.channels[cid].stats
    assert (stats.shares_acknowledged, stats.shares_rejected, stats.shares_rejected_by_reason) == (2, 1, {"stale-share": 1})
    # an error for a sequence number never sent is counted but attributed to nobody
    rig.manager.on_upstream_message(rig.pool, SubmitSharesError(cid, 77, "invalid-job-id"))
    assert len(rig.log.verdicts) == 3 and stats.shares_rejected == 2


def test_upstream_loss_makes_jobs_stale_and_the_next_upstream_serves_the_same_miners() -> None:
    rig = Rig()
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    old_job = rig.new_block(cid, 1)
    assert sock.miner is not None
    en1 = sock.miner.session.extranonce1
    old_id = sock.notifies()[-1][0]
    rig.manager.on_upstream_lost(rig.pool, "closed by the pool")
    assert rig.manager.channels == {} and sock.miner.channel_id is None
    assert rig.hub.outage_since is not None and not sock.closed
    # a share for the lost channel's job is stale, and nothing is forwarded
    assert rig.share(sock, old_job, bytes(4), sv1_job_id=old_id)["error"][0] == 21
    assert rig.log.shares[-1].verdict == "stale-share" and rig.log.shares[-1].sv1_job_id == old_id
    backup = rig.pool_up(PoolWriterDouble(name="backup:3334"))
    (cid2,) = rig.answer_opens(first_channel_id=40)
    job = rig.new_block(cid2, 5)
    assert sock.miner.channel_id == cid2 and sock.miner.session.extranonce1 == en1  # survives the switch
    assert sock.notifies()[-1][8] is True
    assert rig.share(sock, job, b"\x00\x00\x00\x05")["result"] is True
    (sent,) = backup.of_type(SubmitSharesExtended)
    assert sent.channel_id == cid2 and sent.sequence_number == 0


def test_set_target_raises_a_non_aggregated_miners_floor_before_its_next_notify() -> None:
    rig = Rig(aggregated=False)
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens(target=work.target_from_difficulty(1e-7))  # easier than the miner: floor 1e-8 rules
    rig.new_block(cid, 1)
    assert sock.miner is not None and sock.miner.session.difficulty == 1e-6
    harder = work.target_from_difficulty(4e-6)
    rig.manager.on_upstream_message(rig.pool, SetTarget(cid, work.target_to_bytes(harder)))
    assert sock.miner.session.difficulty == pytest.approx(4e-6, rel=1e-6)
    mark = len(sock.written)
    rig.new_block(cid, 2, prev=bytes(range(32)))
    assert sock.methods(mark) == ["mining.set_difficulty", "mining.notify"]


def test_set_target_does_not_move_aggregated_miners() -> None:
    rig = Rig()
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    rig.manager.on_upstream_message(rig.pool, SetTarget(cid, work.target_to_bytes(work.target_from_difficulty(4e-6))))
    assert sock.miner is not None and sock.miner.session.difficulty == 1e-6
    assert rig.manager.channels[cid].state.target == work.target_from_difficulty(4e-6)


def test_close_channel_aggregated_drops_the_connection_non_aggregated_reopens() -> None:
    rig = Rig()
    rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    rig.manager.on_upstream_message(rig.pool, CloseChannel(cid, "maintenance"))
    assert rig.pool.closed and rig.manager.channels == {}  # the supervisor reconnects

    rig = Rig(aggregated=False)
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    rig.manager.on_upstream_message(rig.pool, CloseChannel(cid, "maintenance"))
    assert not rig.pool.closed and len(rig.pool.of_type(OpenExtendedMiningChannel)) == 2
    (cid2,) = rig.answer_opens(first_channel_id=20)
    assert sock.miner is not None and sock.miner.channel_id == cid2


def test_non_aggregated_miner_leaving_closes_its_channel_even_while_it_opens() -> None:
    rig = Rig(aggregated=False)
    a, b = rig.ready_miner("farm.a"), rig.ready_miner("farm.b")
    rig.pool_up()
    (ca, _cb) = rig.answer_opens()
    assert a.miner is not None and b.miner is not None
    rig.hub.close(a.miner)
    assert rig.pool.of_type(CloseChannel) == [CloseChannel(ca, "miner-disconnected")]
    assert ca not in rig.manager.channels
    c = rig.ready_miner("farm.c")
    assert c.miner is not None
    rig.hub.close(c.miner)  # gone before the pool answered its open
    (late,) = rig.answer_opens(first_channel_id=30)
    assert rig.pool.of_type(CloseChannel)[-1] == CloseChannel(late, "miner-disconnected")
    assert late not in rig.manager.channels


def test_refused_or_unusable_aggregated_channel_opens_nothing() -> None:
    rig = Rig()
    sock = rig.ready_miner()
    rig.pool_up()
    (req,) = rig.pool.of_type(OpenExtendedMiningChannel)
    rig.manager.on_upstream_message(rig.pool, OpenMiningChannelError(req.request_id, "unknown-user"))
    assert rig.manager.channels == {}
    rig.pool_up()
    (_, req2) = rig.pool.of_type(OpenExtendedMiningChannel)
    rig.manager.on_upstream_message(rig.pool, open_success(req2.request_id, 3, extranonce_size=3))  # too small a grant
    assert rig.manager.channels == {}
    assert sock.miner is not None and sock.miner.channel_id is None and rig.hub.outage_since is not None


async def test_on_upstream_up_raises_when_the_pool_refuses_the_aggregated_channel() -> None:
    """The one async entry point: the supervisor awaits it and moves to the next upstream on UpstreamError."""
    rig = Rig()
    rig.ready_miner()
    task = asyncio.ensure_future(rig.manager.on_upstream_up(rig.pool))
    await asyncio.sleep(0)
    (req,) = rig.pool.of_type(OpenExtendedMiningChannel)
    rig.manager.on_upstream_message(rig.pool, OpenMiningChannelError(req.request_id, "unknown-user"))
    with pytest.raises(UpstreamError, match="unknown-user"):
        await task
    assert rig.manager.up is None


def test_update_channel_follows_the_miners_hashrate() -> None:
    rig = Rig()
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    job = rig.new_block(cid, 1)
    for k in range(5):
        rig.clock.t += 1.0
        rig.share(sock, job, k.to_bytes(4, "big"))
    rig.manager.tick()
    assert rig.pool.of_type(UpdateChannel) == []  # too soon after the open
    rig.clock.t += 20.0
    rig.manager.tick()
    (upd,) = rig.pool.of_type(UpdateChannel)
    assert upd.channel_id == cid and upd.nominal_hash_rate > 0
    assert sock.miner is not None
    assert work.target_from_bytes(upd.maximum_target) == sock.miner.session.target
    assert rig.manager.channels[cid].stats.nominal_hashrate == upd.nominal_hash_rate


@pytest.mark.parametrize("closed_meanwhile", [False, True])
def test_a_channel_closed_while_a_tick_in_steps_sums_its_demand_gets_no_update_channel(closed_meanwhile: bool) -> None:
    rig = Rig(aggregated=False)  # a pool's CloseChannel leaves the connection up: the proxy reopens
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    job = rig.new_block(cid, 1)
    for k in range(5):
        rig.clock.t += 1.0
        rig.share(sock, job, k.to_bytes(4, "big"))
    rig.clock.t += 20.0
    steps = rig.manager.tick_steps()  # as the running proxy takes it: the loop runs between two steps
    next(steps)  # summing the channel's demand
    if closed_meanwhile:
        rig.manager.on_upstream_message(rig.pool, CloseChannel(cid, "maintenance"))
    for _ in steps:
        pass
    assert not rig.pool.closed
    assert [u.channel_id for u in rig.pool.of_type(UpdateChannel)] == ([] if closed_meanwhile else [cid])


def test_keepalive_job_rolls_ntime_when_the_pool_is_quiet() -> None:
    rig = Rig(job_keepalive_interval_s=30)
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    job = rig.new_block(cid, 1)
    rig.clock.t += 29
    rig.manager.tick()
    assert len(sock.notifies()) == 1
    rig.clock.t += 2
    rig.manager.tick()
    first, keepalive = sock.notifies()
    assert keepalive[0] != first[0] and keepalive[8] is False
    # one second past the 31 s elapsed: past any ntime firmware rolled to on the first copy
    assert int(keepalive[7], 16) == job.ntime + 32 and keepalive[1:7] == first[1:7]
    # a share for the keepalive copy hashes with the rolled ntime and is forwarded under the same upstream job
    ka_job = rig.manager.channels[cid].latest
    assert ka_job is not None and ka_job.job_id == job.job_id
    assert rig.share(sock, ka_job, bytes(4))["result"] is True
    (sent,) = rig.pool.of_type(SubmitSharesExtended)
    assert sent.ntime == job.ntime + 32 and sent.job_id == job.job_id


def test_user_identity_is_cut_to_255_utf8_bytes_at_a_character_boundary() -> None:
    from tproxy.upstream.manager import str0_255

    cut = str0_255("é" * 200)  # 400 bytes
    assert len(cut.encode()) == 254 and cut == "é" * 127
    assert str0_255("a\ud800b") == "a\ufffdb"
    assert str0_255("x" * 300) == "x" * 255


def test_verdicts_the_pool_never_gives_are_aged_out_counted_and_logged_once_per_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(verdict_timeout_s=60.0)
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    job = rig.new_block(cid, 1)
    for k in range(3):
        rig.share(sock, job, k.to_bytes(4, "big"))
    rig.clock.t += 30.0
    rig.share(sock, job, b"\x00\x00\x00\x09")
    ch = rig.manager.channels[cid]
    assert ch.verdicts_pending == 4
    rig.clock.t += 29.0
    rig.manager.tick()
    assert ch.verdicts_pending == 4 and rig.log.verdicts == []  # 59 s: still awaited
    rig.clock.t += 1.0
    with caplog.at_level("WARNING", logger="tproxy.upstream.manager"):
        rig.manager.tick()
    assert ch.verdicts_pending == 1 and ch.stats.verdicts_timed_out == 3
    assert [r.message for r in caplog.records if "timed out" in r.message] == [
        f"channel {cid}: 3 forwarded share(s) timed out awaiting the pool's verdict: no verdict within 60 s"]
    seqs = {r.sequence_number: r.share_seq for r in rig.log.shares}
    assert [(v.sequence_number, v.share_seq, v.pool_verdict) for v in rig.log.verdicts] == [
        (n, seqs[n], "timeout") for n in range(3)]
    assert sock.miner is not None
    c = sock.miner.session.counters
    assert (c.pool_timed_out, c.pool_rejected, c.pool_accepted) == (3, 0, 0)
    # a late Success for them finds nothing to attribute; the fourth is still answered normally
    rig.manager.on_upstream_message(rig.pool, SubmitSharesSuccess(cid, 3, 4, 4))
    assert [v.pool_verdict for v in rig.log.verdicts] == ["timeout"] * 3 + ["accepted"]
    assert ch.verdicts_pending == 0


def test_verdicts_pending_when_the_channel_is_lost_are_timed_out_at_once() -> None:
    rig = Rig()
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    job = rig.new_block(cid, 1)
    rig.share(sock, job, bytes(4))
    rig.manager.on_upstream_lost(rig.pool, "closed by the pool")
    assert [v.pool_verdict for v in rig.log.verdicts] == ["timeout"]
    assert rig.manager.totals().verdicts_timed_out == 1


def _forward_and_answer(rig: Rig, sock: MinerSocketDouble, cid: int, job_id: int, n: int, first_en2: int) -> None:
    """``n`` shares forwarded on a new block; the pool accepts all but the last, which it rejects."""
    job = rig.new_block(cid, job_id)
    for k in range(n):
        assert rig.share(sock, job, (first_en2 + k).to_bytes(4, "big"))["result"] is True
    seqs = sorted(r.sequence_number for r in rig.log.shares if r.channel_id == cid and r.forwarded)
    rig.manager.on_upstream_message(rig.pool, SubmitSharesSuccess(cid, seqs[-2], 2, 2))
    rig.manager.on_upstream_message(rig.pool, SubmitSharesError(cid, seqs[-1], "stale-share"))


def test_lifetime_totals_survive_upstream_loss_and_return_and_per_connection_figures_restart() -> None:
    rig = Rig()
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    _forward_and_answer(rig, sock, cid, 1, 3, 0)
    first = rig.manager.channels[cid].stats
    assert (first.shares_submitted, first.shares_acknowledged, first.shares_rejected) == (3, 2, 1)
    rig.manager.on_upstream_lost(rig.pool, "closed by the pool")
    assert rig.manager.totals().shares_submitted == 3  # no channel open: the totals stay
    rig.pool_up(PoolWriterDouble(name="backup:3334"))
    (cid2,) = rig.answer_opens(first_channel_id=40)
    _forward_and_answer(rig, sock, cid2, 5, 3, 100)
    ch = rig.manager.channels[cid2]
    assert (ch.stats.shares_submitted, ch.stats.shares_acknowledged, ch.stats.shares_rejected) == (3, 2, 1)
    life = ch.lifetime()
    assert life.user_identity == ch.stats.user_identity == "farm"
    assert (life.shares_submitted, life.shares_acknowledged, life.shares_rejected) == (6, 4, 2)
    assert life.shares_rejected_by_reason == {"stale-share": 2}
    assert life.acknowledged_work_sum == 4 and life.validated_work_sum == pytest.approx(2 * first.validated_work_sum)
    assert life.best_diff >= first.best_diff
    total = rig.manager.totals()
    assert (total.shares_submitted, total.shares_acknowledged, total.shares_rejected) == (6, 4, 2)


def test_channel_hashrate_drops_to_zero_as_soon_as_the_last_miner_leaves() -> None:
    rig = Rig()
    socks = [rig.ready_miner(f"farm.w{i}") for i in range(2)]
    rig.pool_up()
    (cid,) = rig.answer_opens()
    job = rig.new_block(cid, 1)
    for k in range(6):
        rig.clock.t += 1.0
        rig.share(socks[k % 2], job, k.to_bytes(4, "big"))
    rig.clock.t += 20.0
    rig.manager.tick()
    ch = rig.manager.channels[cid]
    assert ch.stats.nominal_hashrate > 0 and len(rig.pool.of_type(UpdateChannel)) == 1
    for s in socks[:1]:
        assert s.miner is not None
        rig.hub.close(s.miner)
    assert ch.stats.nominal_hashrate > 0  # one miner left
    rig.clock.t += 1.0  # well inside the UpdateChannel rate limit
    assert socks[1].miner is not None
    rig.hub.close(socks[1].miner)
    assert ch.stats.nominal_hashrate == 0.0  # at once, not at the next UpdateChannel
    assert len(rig.pool.of_type(UpdateChannel)) == 1  # the rate limit holds...
    rig.clock.t += 10.0
    rig.manager.tick()
    upd = rig.pool.of_type(UpdateChannel)[-1]  # ...and the pool hears it when it allows
    assert len(rig.pool.of_type(UpdateChannel)) == 2 and upd.nominal_hash_rate == 0.0
