"""Vardiff retargets as real firmware lives them: hub + channel manager + firmware models, no sockets.

The models (tests/helpers/firmware.py) follow docs/FIRMWARE.md: cpuminer keeps
hashing the job it has after set_difficulty + notify; bfgminer restarts its
work (extranonce2 0) on every notify. The defect these pin down (issue 10):
a retarget re-sent the same sv1_job_id with the new difficulty, so cpuminer's
shares at the old difficulty were rejected "low difficulty" and bfgminer
redid work it had already submitted (duplicates).
"""

from __future__ import annotations

from sv2 import work
from sv2.messages import SubmitSharesExtended
from tests.helpers.firmware import Bfgminer, Cpuminer, FirmwareModel
from tests.helpers.rig import Rig
from tests.helpers.stack import proxy_settings


def vardiff_rig(*, keepalive_s: float = 0) -> Rig:
    settings = proxy_settings([3333], job_keepalive_interval_s=keepalive_s)
    d = settings.difficulty
    d.vardiff = True
    d.shares_per_minute = 6.0
    d.retarget_interval_s = 1.0
    d.start_difficulty = d.min_difficulty = 1e-10
    d.max_difficulty = 1e-7  # about 430 hashes a share: bounds the grinding
    return Rig(settings=settings)


def flood_until_retarget(rig: Rig, fw: FirmwareModel, *, max_shares: int = 400) -> list[dict[str, object]]:
    """Shares far faster than 6 a minute, ticking the hub, until a set_difficulty arrives; the replies."""
    replies = []
    marks = len(fw.notified)
    for _ in range(max_shares):
        rig.clock.t += 0.05
        replies.append(fw.share())
        rig.hub.tick()
        if fw.feed() or len(fw.notified) > marks:
            return replies
    raise AssertionError("vardiff never retargeted")


def start(rig: Rig, fw_cls: type[FirmwareModel]) -> FirmwareModel:
    sock = rig.ready_miner()
    fw = fw_cls(rig, sock)
    rig.pool_up()
    (cid,) = rig.answer_opens()
    rig.new_block(cid, 1)
    fw.feed()
    assert fw.current is not None
    return fw


def test_cpuminer_keeps_hashing_the_old_job_after_a_retarget_up_and_every_share_is_accepted() -> None:
    rig = vardiff_rig()
    fw = start(rig, Cpuminer)
    assert isinstance(fw, Cpuminer)
    old = fw.current
    assert old is not None
    assert all(r["result"] is True for r in flood_until_retarget(rig, fw))
    new = fw.notified[-1]
    assert new.sv1_job_id != old.sv1_job_id and not new.clean and new.difficulty > old.difficulty
    assert fw.current is old  # the threads are still on the old job
    new_target = work.target_from_difficulty(new.difficulty)
    below_new = 0
    en1 = fw.extranonce1
    for _ in range(12):
        en2 = fw.extranonce2.to_bytes(fw.extranonce2_size, "big")
        reply = fw.share()
        assert reply["result"] is True, reply
        h = old.hash(en1, en2, old.grind(en1, en2))
        below_new += not work.hash_meets_target(h, new_target)
    assert below_new > 0  # shares only the old difficulty allows: judged at the old job's difficulty
    accepted = [r for r in rig.log.shares if r.sv1_job_id == old.sv1_job_id]
    assert all(r.verdict == "accepted" for r in accepted)
    # its next scan round takes the new job: judged at the new difficulty
    fw.next_scan()
    assert fw.share()["result"] is True
    last = rig.log.shares[-1]
    assert last.sv1_job_id == new.sv1_job_id and last.target_difficulty == new.difficulty


def test_bfgminer_never_gets_the_same_work_twice_through_retargets_up_and_down_and_keepalives() -> None:
    rig = vardiff_rig(keepalive_s=30)
    fw = start(rig, Bfgminer)
    assert isinstance(fw, Bfgminer)
    retargets = 0
    for _phase in range(2):
        # up: a flood
        for _ in range(2):
            assert all(r["result"] is True for r in flood_until_retarget(rig, fw))
            retargets += 1
            assert fw.share()["result"] is True  # bfgminer restarted on the re-issue: a new share, not a duplicate
        # down: silence (keepalive copies of the same upstream job come too)
        before = len(fw.notified)
        for _ in range(600):
            rig.clock.t += 1.0
            rig.hub.tick()
            rig.manager.tick()
            if any(w.difficulty < fw.notified[before - 1].difficulty for w in fw.feed()):
                retargets += 1
                break
        else:
            raise AssertionError("vardiff never lowered the difficulty")
        assert fw.share()["result"] is True
    assert retargets >= 6
    assert fw.repeats == []  # no notify repeated content it had already hashed
    ids = [w.sv1_job_id for w in fw.notified]
    assert len(set(ids)) == len(ids)  # every notify has a new sv1_job_id
    assert len({w.content for w in fw.notified}) == len(fw.notified)
    ntimes = [w.ntime for w in fw.notified]
    assert ntimes == sorted(ntimes)  # never backwards
    assert all(not w.clean for w in fw.notified[1:])
    verdicts = [r.verdict for r in rig.log.shares]
    assert "duplicate-share" not in verdicts and set(verdicts) == {"accepted"}
    # every share went upstream with the ntime of the copy it was found on
    sent = rig.pool.of_type(SubmitSharesExtended)
    assert {m.ntime for m in sent} == {r.ntime for r in rig.log.shares if r.forwarded}
    assert len({m.ntime for m in sent}) > 1 and {m.job_id for m in sent} == {1}
