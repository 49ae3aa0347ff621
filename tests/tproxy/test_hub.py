"""The SV1 hub, with the real channel manager behind it: no sockets, no event loop (tests/helpers/rig.py)."""

from __future__ import annotations

from sv2 import work
from sv2.messages import SubmitSharesExtended
from tests.helpers.jobs import find_nonce, share_hash
from tests.helpers.rig import PoolWriterDouble, Rig
from tests.helpers.stack import proxy_settings


def test_extranonce1_fresh_values_first_then_the_longest_freed() -> None:
    settings = proxy_settings([3333])
    settings.downstream.extranonce1_size = 1
    rig = Rig(settings=settings)
    socks = [rig.connect() for _ in range(256)]
    en1s = [s.miner.session.extranonce1 for s in socks if s.miner is not None]
    assert sorted(en1s) == [bytes([i]) for i in range(256)]
    assert rig.hub.open("10.0.0.2:1", lambda b: None, lambda: None) is None  # space exhausted
    for i in (7, 3):
        m = socks[i].miner
        assert m is not None
        rig.hub.close(m)
    again = [rig.connect().miner for _ in range(2)]
    assert [m.session.extranonce1 for m in again if m is not None] == [b"\x07", b"\x03"]  # freed order


def test_a_reconnecting_miner_gets_a_fresh_extranonce1_while_fresh_ones_remain() -> None:
    rig = Rig()
    a, b = rig.connect(), rig.connect()
    assert a.miner is not None and b.miner is not None
    en1 = a.miner.session.extranonce1
    rig.hub.close(a.miner)
    c = rig.connect()
    assert c.miner is not None and c.miner.session.extranonce1 not in (en1, b.miner.session.extranonce1)
    assert len(rig.hub.miners) == 2


def test_job_is_rendered_once_and_the_same_line_goes_to_every_miner() -> None:
    rig = Rig()
    socks = [rig.ready_miner(f"farm.w{i}") for i in range(3)]
    rig.pool_up()
    (cid,) = rig.answer_opens()
    rig.new_block(cid, 1)
    for s in socks:  # first job: set_difficulty, then the clean notify
        assert s.methods() == ["mining.set_difficulty", "mining.notify"]
    marks = [len(s.written) for s in socks]
    rig.new_block(cid, 2, prev=bytes(range(32)))
    new = [s.written[m:] for s, m in zip(socks, marks, strict=True)]
    assert all(len(w) == 1 for w in new)
    assert new[0][0] is new[1][0] is new[2][0]  # one bytes object: rendered once, not per miner
    params = socks[0].notifies()[-1]
    assert params[0] == "2" and params[8] is True  # second SV1 job id, clean


def test_a_miner_that_arrives_later_gets_the_latest_job_as_clean() -> None:
    rig = Rig()
    rig.ready_miner("farm.w1")
    rig.pool_up()
    (cid,) = rig.answer_opens()
    rig.new_block(cid, 1)
    late = rig.ready_miner("farm.late")
    assert late.methods() == ["mining.set_difficulty", "mining.notify"]
    assert late.notifies()[-1][8] is True
    assert late.miner is not None and late.miner.channel_id == cid


def test_vardiff_tick_sends_set_difficulty_before_the_resent_notify() -> None:
    settings = proxy_settings([3333])
    settings.difficulty.vardiff = True
    settings.difficulty.shares_per_minute = 6.0
    settings.difficulty.retarget_interval_s = 1.0
    rig = Rig(settings=settings)
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    job = rig.new_block(cid, 1)
    assert sock.miner is not None
    start = sock.miner.session.difficulty
    for k in range(40):  # far more than 6 a minute
        rig.clock.t += 0.05
        assert rig.share(sock, job, k.to_bytes(4, "big"))["result"] is True
    mark = len(sock.written)
    rig.clock.t += 1.0
    rig.hub.tick()
    assert sock.miner.session.difficulty > start
    assert sock.methods(mark) == ["mining.set_difficulty", "mining.notify"]
    sent = sock.messages(mark)
    assert sent[0]["params"] == [sock.miner.session.difficulty]
    first = sock.notifies()[0]
    # the same work under a NEW sv1_job_id, ntime rolled, not clean; the old id keeps its difficulty
    assert sent[1]["params"][0] != first[0] and sent[1]["params"][8] is False
    assert int(sent[1]["params"][7], 16) > job.ntime and sent[1]["params"][1:7] == first[1:7]
    assert sock.miner.session.jobs[first[0]].target == work.target_from_difficulty(start)


def test_outage_longer_than_the_limit_disconnects_every_miner_once() -> None:
    rig = Rig(outage_reconnect_after_s=60.0)
    socks = [rig.ready_miner(f"farm.w{i}") for i in range(2)]
    rig.pool_up()
    rig.answer_opens()
    assert rig.hub.outage_since is None
    rig.manager.on_upstream_lost(rig.pool, "closed by the pool")
    assert rig.hub.outage_since == rig.clock.t
    rig.clock.t += 59.0
    rig.hub.tick()
    assert not any(s.closed for s in socks)
    rig.clock.t += 1.0
    rig.hub.tick()
    assert all(s.closed for s in socks)
    assert rig.hub.outage_disconnects == 2
    rig.hub.tick()  # closing already: not counted twice
    assert rig.hub.outage_disconnects == 2


def test_an_upstream_that_returns_in_time_ends_the_outage() -> None:
    rig = Rig(outage_reconnect_after_s=60.0)
    sock = rig.ready_miner()
    rig.pool_up()
    rig.answer_opens()
    rig.manager.on_upstream_lost(rig.pool, "closed by the pool")
    rig.clock.t += 30
    rig.pool_up(PoolWriterDouble())
    rig.answer_opens()
    assert rig.hub.outage_since is None
    rig.clock.t += 3600
    rig.hub.tick()
    assert not sock.closed and rig.hub.outage_disconnects == 0


def test_every_share_goes_to_the_share_log_and_only_those_meeting_the_upstream_target_go_upstream() -> None:
    rig = Rig()
    sock = rig.ready_miner()
    rig.pool_up()
    pool_target = work.target_from_difficulty(4e-6)  # the pool wants 4x fewer shares than the miner sends
    (cid,) = rig.answer_opens(target=pool_target)
    job = rig.new_block(cid, 1)
    assert sock.miner is not None
    s = sock.miner.session
    en1 = s.extranonce1
    # meets the pool's target too: forwarded
    assert rig.share(sock, job, b"\x00\x00\x00\x01", target=pool_target)["result"] is True
    # meets the miner's target only: accepted and logged, not forwarded
    en2 = b"\x00\x00\x00\x02"
    nonce = find_nonce(job, en1, en2, s.target)
    while work.hash_meets_target(share_hash(job, en1, en2, nonce), pool_target):
        nonce = find_nonce(job, en1, en2, s.target, start=nonce + 1)
    assert rig.share(sock, job, en2, nonce=nonce)["result"] is True
    # refused: logged with its reason, never forwarded
    assert rig.share(sock, job, b"\x00\x00\x00\x03", target=work.target_from_difficulty(1.0), meets=False)["error"][0] == 23
    (sent,) = rig.pool.of_type(SubmitSharesExtended)
    assert sent.extranonce == job.pad + en1 + b"\x00\x00\x00\x01"
    assert [(r.verdict, r.forwarded) for r in rig.log.shares] == [
        ("accepted", True), ("accepted", False), ("difficulty-too-low", False)]
    assert [r.share_seq for r in rig.log.shares] == [1, 2, 3]
    assert rig.log.shares[0].channel_id == cid and rig.log.shares[0].sequence_number == sent.sequence_number
    assert rig.manager.shares_forwarded == 1
