"""MinerSession alone: parsed requests and a clock in, reply bytes and typed events out.

No sockets, no event loop, no hub: every share is hashed for real (sv2.work)
against jobs built by ChannelState from the SRI vector's job.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sv2 import work
from tests.helpers.jobs import (
    find_nonce,
    future_job,
    lines,
    open_success,
    prev_hash,
    request,
    share_hash,
    submit,
)
from tests.helpers.vectors import load_vector
from tproxy.events import Job, MinerReady, Share
from tproxy.sv1 import protocol as p
from tproxy.sv1.session import MAX_JOBS_PER_MINER, MinerSession
from tproxy.sv1.vardiff import Vardiff
from tproxy.upstream.channel import ChannelState

T0 = 1_745_600_000.0  # just after the SRI vector job's ntime: its shares pass the 2 h ntime rule
DIFF = 1e-6
EN1 = b"\x00\x07"
MASK = 0x1FFFE000


def new_session(*, start_difficulty: float = DIFF, extranonce1: bytes = EN1, extranonce2_size: int = 4,
                honour_suggest: bool = True, max_past_jobs: int = MAX_JOBS_PER_MINER) -> MinerSession:
    vd = Vardiff(shares_per_minute=6.0, start_difficulty=start_difficulty, min_difficulty=1e-9,
                 max_difficulty=1e6, retarget_interval_s=1.0, now=T0)
    return MinerSession(client_id=5, peer="10.0.0.9:4028", extranonce1=extranonce1, extranonce2_size=extranonce2_size,
                        server_version_mask=MASK, vardiff=vd, honour_suggest_difficulty=honour_suggest,
                        max_past_jobs=max_past_jobs, now=T0)


def channel(*, extranonce1_size: int = 2, extranonce2_size: int = 4, **kw: Any) -> ChannelState:
    return ChannelState.from_open_success(open_success(1, 7, **kw), extranonce1_size=extranonce1_size,
                                          extranonce2_size=extranonce2_size)


def clean_job(ch: ChannelState, job_id: int = 1, *, prev: bytes | None = None, rolling: bool = True) -> Job:
    ch.on_new_extended_job(future_job(ch.channel_id, job_id, version_rolling_allowed=rolling))
    job = ch.on_set_new_prev_hash(prev_hash(ch.channel_id, job_id) if prev is None
                                  else prev_hash(ch.channel_id, job_id, prev=prev))
    assert job is not None
    return job


def ready(s: MinerSession, worker: str = "farm.w1") -> None:
    s.handle(request(1, "mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}]), T0)
    s.handle(request(2, "mining.subscribe", ["cgminer/4.12"]), T0)
    s.handle(request(3, "mining.authorize", [worker, "x"]), T0)


def reply(out: tuple[bytes, object]) -> dict[str, Any]:
    (msg,) = lines(out[0])
    return msg


def give_job(s: MinerSession, job: Job, sv1_job_id: str = "1", *, now: float = T0) -> list[dict[str, Any]]:
    return lines(s.send_job(sv1_job_id, job, b'{"id":null,"method":"mining.notify","params":["' + sv1_job_id.encode() + b'"]}\n',
                            clean=job.clean, now=now))


def test_subscribe_then_authorize_makes_the_miner_ready_once() -> None:
    s = new_session()
    line, ev = s.handle(request(1, "mining.subscribe", ["cpuminer/2.5.1"]), T0)
    res = reply((line, ev))["result"]
    assert ev is None and res[1] == EN1.hex() and res[2] == 4
    assert s.user_agent == "cpuminer/2.5.1"
    line, ev = s.handle(request(2, "mining.authorize", ["farm.w1", "x"]), T0)
    assert reply((line, ev))["result"] is True
    assert ev == MinerReady(5, "farm.w1") and s.ready
    _, ev = s.handle(request(3, "mining.authorize", ["farm.w2", "x"]), T0)
    assert ev is None and s.authorized == {"farm.w1", "farm.w2"} and s.worker_name == "farm.w1"


def test_authorize_before_subscribe_is_ready_at_subscribe_and_empty_worker_is_refused() -> None:
    s = new_session()
    msg = reply(s.handle(request(1, "mining.authorize", ["", "x"]), T0))
    assert msg["error"][0] == p.UNAUTHORIZED and not s.authorized
    assert s.handle(request(2, "mining.authorize", ["farm.w1", None]), T0)[1] is None
    assert s.handle(request(3, "mining.subscribe", []), T0)[1] == MinerReady(5, "farm.w1")


def test_configure_negotiates_version_rolling_within_the_server_mask() -> None:
    s = new_session()
    msg = reply(s.handle(request(1, "mining.configure", [["version-rolling"], {
        "version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2}]), T0))
    assert msg["result"]["version-rolling"] is True
    assert msg["result"]["version-rolling.mask"] == f"{MASK:08x}"
    assert s.version_mask == MASK and s.version_rolling_min_bit == 2


def test_extranonce_subscribe_and_unknown_methods_and_ping() -> None:
    s = new_session()
    assert reply(s.handle(request(1, "mining.extranonce.subscribe", []), T0))["result"] is True
    assert s.wants_set_extranonce
    assert reply(s.handle(request(2, "mining.ping", []), T0))["result"] == "pong"
    assert reply(s.handle(request(3, "mining.capabilities", []), T0))["error"][0] == p.METHOD_NOT_FOUND
    assert reply(s.handle(request(4, "mining.configure", [5]), T0))["error"][0] == p.INVALID_PARAMS


def test_suggest_difficulty_sets_the_first_difficulty_before_the_first_notify() -> None:
    s = new_session()
    assert reply(s.handle(request(1, "mining.suggest_difficulty", [0.5]), T0))["result"] is True
    assert s.difficulty == 0.5
    ready(s)
    sent = give_job(s, clean_job(channel()))
    assert [m["method"] for m in sent] == ["mining.set_difficulty", "mining.notify"]
    assert sent[0]["params"] == [0.5]


def test_suggest_difficulty_is_ignored_when_not_honoured() -> None:
    s = new_session(honour_suggest=False)
    s.handle(request(1, "mining.suggest_difficulty", [0.5]), T0)
    assert s.difficulty == DIFF


def test_valid_share_is_accepted_and_becomes_one_share_event() -> None:
    s = new_session()
    ready(s)
    job = clean_job(channel())
    give_job(s, job)
    en2 = b"\x00\x00\x00\x01"
    nonce = find_nonce(job, EN1, en2, s.target)
    line, ev = s.handle(submit(9, "farm.w1", "1", en2, job.ntime, nonce), T0 + 1)
    assert reply((line, ev)) == {"id": 9, "result": True, "error": None}
    assert isinstance(ev, Share) and ev.accepted
    h = share_hash(job, EN1, en2, nonce)
    assert ev.share_hash == h and ev.share_difficulty == work.share_difficulty(h)
    assert ev.job is job and ev.extranonce1 == EN1 and ev.extranonce2 == en2
    assert (ev.client_id, ev.worker_name, ev.sv1_job_id, ev.nonce, ev.ntime) == (5, "farm.w1", "1", nonce, job.ntime)
    assert ev.version == job.version and ev.received_at_ms == int((T0 + 1) * 1000)
    assert ev.target_difficulty == pytest.approx(DIFF, rel=1e-9)
    assert s.counters.accepted == 1 and s.counters.last_share_at == T0 + 1


def test_sri_vector_share_is_accepted_with_the_vectors_hash() -> None:
    """The SRI 'meets channel target' case through a session with the vector's extranonce layout."""
    v = load_vector("share_validation_sri")
    case = next(c for c in v["cases"] if c["sri_result"] == "Valid")
    rollable = v["channel"]["rollable_extranonce_size"]
    extranonce = bytes.fromhex(v["share_common"]["extranonce_hex"])
    ch = ChannelState.from_open_success(
        open_success(1, 1, extranonce_size=rollable, prefix=bytes.fromhex(v["channel"]["extranonce_prefix_hex"])),
        extranonce1_size=1, extranonce2_size=rollable - 1,
    )
    ch.on_new_extended_job(future_job(1, v["job"]["job_id"]))
    job = ch.on_set_new_prev_hash(prev_hash(1, v["job"]["job_id"], nbits=case["nbits"]))
    assert job is not None
    channel_target = int(case["channel_target_be_hex"], 16)
    s = new_session(start_difficulty=work.difficulty_from_target(channel_target) * 0.999,
                    extranonce1=extranonce[:1], extranonce2_size=rollable - 1)
    ready(s)
    give_job(s, job)
    _, ev = s.handle(submit(4, "farm.w1", "1", extranonce[1:], case["ntime"], case["nonce"]), T0)
    assert isinstance(ev, Share) and ev.accepted
    assert ev.share_hash.hex() == case["hash_internal_le_hex"]


def test_low_difficulty_share_is_refused_and_still_becomes_a_share_event() -> None:
    s = new_session(start_difficulty=1.0)
    ready(s)
    job = clean_job(channel())
    give_job(s, job)
    en2 = bytes(4)
    nonce = find_nonce(job, EN1, en2, s.target, meets=False)
    line, ev = s.handle(submit(9, "farm.w1", "1", en2, job.ntime, nonce), T0)
    assert reply((line, ev))["error"][0] == p.LOW_DIFFICULTY
    assert isinstance(ev, Share) and ev.verdict == "difficulty-too-low" and not ev.accepted
    assert ev.share_hash == share_hash(job, EN1, en2, nonce)
    assert s.counters.rejected_by_reason == {"difficulty-too-low": 1} and s.counters.accepted == 0


def test_duplicate_share_is_refused() -> None:
    s = new_session()
    ready(s)
    job = clean_job(channel())
    give_job(s, job)
    nonce = find_nonce(job, EN1, bytes(4), s.target)
    assert reply(s.handle(submit(1, "farm.w1", "1", bytes(4), job.ntime, nonce), T0))["result"] is True
    line, ev = s.handle(submit(2, "farm.w1", "1", bytes(4), job.ntime, nonce), T0)
    assert reply((line, ev))["error"][0] == p.DUPLICATE
    assert isinstance(ev, Share) and ev.verdict == "duplicate-share"


def test_share_for_a_job_retired_by_a_clean_job_is_stale_and_an_unknown_one_is_invalid() -> None:
    s = new_session()
    ready(s)
    ch = channel()
    old = clean_job(ch, 1)
    give_job(s, old, "a")
    new = clean_job(ch, 2, prev=bytes(range(32)))
    give_job(s, new, "b")
    nonce = find_nonce(old, EN1, bytes(4), s.target)
    line, ev = s.handle(submit(1, "farm.w1", "a", bytes(4), old.ntime, nonce), T0)
    assert reply((line, ev))["error"][0] == p.JOB_NOT_FOUND
    assert isinstance(ev, Share) and ev.verdict == "stale-share" and ev.job is None
    line, ev = s.handle(submit(2, "farm.w1", "zz", bytes(4), old.ntime, nonce), T0)
    assert reply((line, ev))["error"][0] == p.JOB_NOT_FOUND
    assert isinstance(ev, Share) and ev.verdict == "invalid-job-id"


def test_forget_jobs_makes_every_held_job_stale() -> None:
    s = new_session()
    ready(s)
    job = clean_job(channel())
    give_job(s, job, "a")
    s.forget_jobs()
    assert s.latest is None
    _, ev = s.handle(submit(1, "farm.w1", "a", bytes(4), job.ntime, 0), T0)
    assert isinstance(ev, Share) and ev.verdict == "stale-share"


def test_jobs_evicted_past_the_per_miner_bound_are_stale() -> None:
    s = new_session()
    ready(s)
    ch = channel()
    first = clean_job(ch)
    give_job(s, first, "0")
    for i in range(1, MAX_JOBS_PER_MINER + 1):  # keepalive-like copies (ntime rolled) under new SV1 ids
        assert s.send_job(str(i), replace(first, ntime=first.ntime + i), b"x\n", clean=False, now=T0) == b"x\n"
    assert "0" not in s.jobs and len(s.jobs) == MAX_JOBS_PER_MINER
    assert s.is_retired("0")


def test_max_past_jobs_bounds_the_jobs_a_share_may_name() -> None:
    s = new_session(max_past_jobs=3)
    ready(s)
    first = clean_job(channel())
    give_job(s, first, "0")
    for i in range(1, 4):
        s.send_job(str(i), replace(first, ntime=first.ntime + i), b"x\n", clean=False, now=T0)
    assert list(s.jobs) == ["1", "2", "3"] and s.is_retired("0")
    _, ev = s.handle(submit(1, "farm.w1", "0", bytes(4), first.ntime, 0), T0)
    assert isinstance(ev, Share) and ev.verdict == "stale-share"


@pytest.mark.parametrize(
    ("params", "code", "verdict"),
    [
        (["farm.w1", "1", "zz", "nothex", 5.5], p.OTHER, "malformed"),
        (["farm.other", "1", "00000000", "00000000", "00000000"], p.UNAUTHORIZED, "unauthorized"),
        (["farm.w1", "1", "00", "00000000", "00000000"], p.OTHER, "bad-extranonce-size"),
        (["farm.w1", "1", "00000000", "00000000", "00000000", "00000001"], p.OTHER, "invalid-version-bits"),
    ],
)
def test_refused_submits_answer_their_code_and_name_their_verdict(params: list[Any], code: int, verdict: str) -> None:
    s = new_session()
    ready(s)
    give_job(s, clean_job(channel()))
    line, ev = s.handle(request(7, "mining.submit", params), T0)
    assert reply((line, ev))["error"][0] == code
    assert isinstance(ev, Share) and ev.verdict == verdict and ev.target_difficulty == s.difficulty
    assert s.counters.rejected == 1


def test_submit_before_subscribe_is_not_subscribed() -> None:
    s = new_session()
    line, ev = s.handle(submit(1, "w", "1", bytes(4), 0, 0), T0)
    assert reply((line, ev))["error"][0] == p.NOT_SUBSCRIBED
    assert isinstance(ev, Share) and ev.verdict == "not-subscribed"


def test_version_rolled_share_is_accepted_within_the_mask_and_refused_when_the_pool_forbids_rolling() -> None:
    s = new_session()
    ready(s)
    ch = channel()
    job = clean_job(ch)
    give_job(s, job)
    bits = 0x00002000
    rolled = (job.version & ~MASK) | bits
    nonce = find_nonce(job, EN1, bytes(4), s.target, version=rolled)
    line, ev = s.handle(submit(1, "farm.w1", "1", bytes(4), job.ntime, nonce, version_bits=bits), T0)
    assert reply((line, ev))["result"] is True
    assert isinstance(ev, Share) and ev.version == rolled
    fixed = clean_job(ch, 2, prev=bytes(range(32)), rolling=False)
    sent = give_job(s, fixed, "2")
    assert [m["method"] for m in sent] == ["mining.set_version_mask", "mining.notify"]
    assert sent[0]["params"] == ["00000000"]
    _, ev = s.handle(submit(2, "farm.w1", "2", bytes(4), fixed.ntime, 1, version_bits=bits), T0)
    assert isinstance(ev, Share) and ev.verdict == "invalid-version-bits"


def _raise_by_vardiff(s: MinerSession, job: Job, sv1_job_id: str = "1") -> float:
    """Flood shares far above 6 a minute on ``sv1_job_id`` until vardiff retargets up; returns the time."""
    now = T0
    for k in range(40):
        now += 0.05
        en2 = (1000 + k).to_bytes(4, "big")
        _, ev = s.handle(submit(k, "farm.w1", sv1_job_id, en2, job.ntime, find_nonce(job, EN1, en2, s.target)), now)
        assert isinstance(ev, Share) and ev.accepted
    now += 1.0
    assert s.maybe_retarget(now, floor=1e-9)
    return now


def _old_only(job: Job, en2: bytes, old_target: int, new_target: int, ntime: int | None = None) -> int:
    """A nonce whose share meets ``old_target`` but not ``new_target``."""
    if ntime is not None:
        job = replace(job, ntime=ntime)
    nonce = find_nonce(job, EN1, en2, old_target)
    while work.hash_meets_target(share_hash(job, EN1, en2, nonce), new_target):
        nonce = find_nonce(job, EN1, en2, old_target, start=nonce + 1)
    return nonce


def test_after_a_retarget_up_shares_on_the_old_job_id_are_judged_at_the_old_difficulty_forever() -> None:
    """cpuminer keeps hashing the job it has after set_difficulty + notify (FIRMWARE.md row 9):
    its shares at the old difficulty are good shares, however late, while the job is held."""
    s = new_session()
    ready(s)
    job = clean_job(channel())
    give_job(s, job)
    old_target = s.target
    now = _raise_by_vardiff(s, job)
    assert s.difficulty > DIFF and s.target < old_target
    copy = s.retarget_copy(now)
    assert copy is not None and copy.job_id == job.job_id and copy.ntime > job.ntime and not copy.clean
    sent = give_job(s, copy, "2", now=now)
    assert [m["method"] for m in sent] == ["mining.set_difficulty", "mining.notify"]
    assert sent[0]["params"] == [s.difficulty]
    assert s.jobs["1"].target == old_target and s.jobs["2"].target == s.target  # "1" was not overwritten
    for k, late in enumerate((0.5, 30.0, 600.0)):  # no grace period: the job's own difficulty
        en2 = k.to_bytes(4, "big")
        _, ev = s.handle(submit(100 + k, "farm.w1", "1", en2, job.ntime, _old_only(job, en2, old_target, s.target)),
                         now + late)
        assert isinstance(ev, Share) and ev.accepted, ev
        assert ev.target_difficulty == pytest.approx(DIFF, rel=1e-9)


def test_after_a_retarget_shares_on_the_new_job_id_are_judged_at_the_new_difficulty() -> None:
    s = new_session()
    ready(s)
    job = clean_job(channel())
    give_job(s, job)
    old_target = s.target
    now = _raise_by_vardiff(s, job)
    copy = s.retarget_copy(now)
    assert copy is not None
    give_job(s, copy, "2", now=now)
    en2 = (7).to_bytes(4, "big")
    _, ev = s.handle(submit(1, "farm.w1", "2", en2, copy.ntime, _old_only(copy, en2, old_target, s.target)), now)
    assert isinstance(ev, Share) and ev.verdict == "difficulty-too-low"
    nonce = find_nonce(copy, EN1, en2, s.target)
    _, ev = s.handle(submit(2, "farm.w1", "2", en2, copy.ntime, nonce), now)
    assert isinstance(ev, Share) and ev.accepted and ev.job is copy
    assert ev.target_difficulty == pytest.approx(s.difficulty, rel=1e-9)


def test_duplicates_are_caught_across_copies_of_one_upstream_job() -> None:
    """Same upstream job + same extranonce2/ntime/nonce/version is one share, whichever sv1_job_id names it."""
    s = new_session()
    ready(s)
    job = clean_job(channel())
    give_job(s, job)
    now = _raise_by_vardiff(s, job)
    copy = s.retarget_copy(now)
    assert copy is not None
    give_job(s, copy, "2", now=now)
    en2 = (9).to_bytes(4, "big")
    nonce = find_nonce(copy, EN1, en2, s.target)
    _, ev = s.handle(submit(1, "farm.w1", "2", en2, copy.ntime, nonce), now)
    assert isinstance(ev, Share) and ev.accepted
    line, ev = s.handle(submit(2, "farm.w1", "1", en2, copy.ntime, nonce), now)  # the old id, same header
    assert reply((line, ev))["error"][0] == p.DUPLICATE
    assert isinstance(ev, Share) and ev.verdict == "duplicate-share"


def test_retarget_copies_roll_ntime_past_the_elapsed_time_and_never_repeat() -> None:
    s = new_session()
    ready(s)
    job = clean_job(channel())
    give_job(s, job, "1", now=T0)
    seen = {job.ntime}
    now = T0
    for i, wait in enumerate((0.0, 0.2, 5.0, 61.0)):
        now += wait
        copy = s.retarget_copy(now)
        assert copy is not None
        held = s.jobs[s.latest[0]] if s.latest else None
        assert held is not None
        # one second past anything the firmware may have rolled to since it got its copy
        assert copy.ntime == held.job.ntime + int(now - held.sent_at) + 1
        assert copy.ntime not in seen
        seen.add(copy.ntime)
        give_job(s, copy, f"c{i}", now=now)


def test_retarget_copy_is_refused_past_two_hours_ahead_and_an_older_copy_is_not_sent() -> None:
    s = new_session()
    ready(s)
    job = clean_job(channel())
    far = replace(job, ntime=int(T0) + 7200)  # a job already at the limit cannot roll
    give_job(s, job, "1")
    assert give_job(s, far, "2") != []
    assert s.retarget_copy(T0) is None
    # a non-clean copy of the same upstream job that is not newer than the miner's is not sent
    assert s.send_job("3", replace(job, ntime=job.ntime + 5), b"x\n", clean=False, now=T0) == b""
    assert "3" not in s.jobs and s.latest is not None and s.latest[0] == "2"


@pytest.mark.parametrize(
    ("ntime", "accepted"),
    [
        (0, False),
        (0xFFFFFFFF, False),
        ("job-1", False),
        ("now+7201", False),
        ("job", True),
        ("now+7000", True),
    ],
)
def test_ntime_before_the_job_or_over_two_hours_ahead_is_refused_locally(ntime: int | str, accepted: bool) -> None:
    s = new_session()
    ready(s)
    job = clean_job(channel())
    give_job(s, job)
    now = T0
    value = {"job-1": job.ntime - 1, "now+7201": int(now) + 7201, "job": job.ntime,
             "now+7000": int(now) + 7000}.get(ntime, ntime) if isinstance(ntime, str) else ntime
    assert isinstance(value, int)
    hashed = replace(job, ntime=value)
    nonce = find_nonce(hashed, EN1, bytes(4), s.target)  # a share that would meet the target
    line, ev = s.handle(submit(1, "farm.w1", "1", bytes(4), value, nonce), now)
    assert isinstance(ev, Share)
    if accepted:
        assert ev.accepted and ev.ntime == value
        return
    msg = reply((line, ev))
    assert msg["error"][0] == p.OTHER and "ntime" in msg["error"][1]
    assert ev.verdict == "ntime-out-of-range" and ev.share_hash == b""
    assert s.counters.rejected_by_reason == {"ntime-out-of-range": 1} and s.counters.accepted == 0


def test_get_transactions_says_the_pool_shares_none_in_a_form_bfgminer_accepts() -> None:
    """bfgminer asks after each notify (id "txlist<job id>"): a non-list answer means "no
    transaction list" to it (marks the pool opaque, keeps mining); an empty list would be
    checked against the merkle branch and warned about on every job."""
    s = new_session()
    ready(s)
    give_job(s, clean_job(channel()))
    msg = reply(s.handle(request("txlist1", "mining.get_transactions", ["1"]), T0))
    assert msg["id"] == "txlist1" and not isinstance(msg["result"], list)
    assert msg["error"][0] == p.OTHER and "merkle path" in msg["error"][1]


def test_retarget_never_goes_below_the_floor() -> None:
    s = new_session()
    ready(s)
    give_job(s, clean_job(channel()))
    # silence: vardiff wants to cut; the floor holds it at the current difficulty
    assert not s.maybe_retarget(T0 + 3600, floor=DIFF)
    assert s.difficulty == DIFF
    assert s.maybe_retarget(T0 + 7200, floor=DIFF / 100)
    assert DIFF / 100 <= s.difficulty < DIFF


def test_pool_verdicts_are_counted() -> None:
    s = new_session()
    s.on_verdict(True)
    s.on_verdict(False)
    s.on_verdict(True)
    assert (s.counters.pool_accepted, s.counters.pool_rejected) == (2, 1)


def _generic_judgement(s: MinerSession, job: Job, target: int, en2: bytes, ntime: int, nonce: int,
                       bits: int | None) -> tuple[int, bytes, float, bool]:
    """(version, hash, share difficulty, meets target) the way the session judged shares before its
    hot path was written out: every step through the generic, checking sv2.work functions."""
    if bits is None:
        candidates = [job.version]
    else:
        assert s.version_mask is not None
        masked = work.apply_version_bits(job.version, bits, s.version_mask)
        candidates = [masked] if masked == job.version ^ bits else [masked, job.version ^ bits]
    root = work.merkle_root(work.sha256d(work.coinbase(job.coinb1, s.extranonce1 + en2, job.coinb2)), job.merkle_path)
    version, h = candidates[0], b""
    for version in candidates:
        h = work.header_hash(version, job.prev_hash, root, ntime, job.nbits, nonce)
        if work.hash_meets_target(h, target):
            break
    return version, h, work.share_difficulty(h), work.hash_meets_target(h, target)


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=4, max_size=4), st.integers(0, 2**32 - 1), st.integers(0, 600),
       st.none() | st.integers(0, 0xFFFF).map(lambda b: (b << 13) & MASK), st.sampled_from([2.0**-31, 2.0**-32.5, 1e-9]),
       st.integers(0, 0xFFFF).map(lambda b: (b << 13) & MASK))
def test_the_share_check_judges_as_the_generic_work_functions(en2: bytes, nonce: int, dt: int, bits: int | None,
                                                              difficulty: float, job_bits: int) -> None:
    s = new_session()
    ready(s)
    s.set_difficulty(difficulty, T0)  # about half the shares meet 2**-31
    # job version bits inside the mask: the masked and the XOR (Bitaxe) forms then differ
    job = replace(clean_job(channel()), version=clean_job(channel()).version | job_bits)
    give_job(s, job)
    ntime = job.ntime + dt
    version, h, share_diff, meets = _generic_judgement(s, job, s.target, en2, ntime, nonce, bits)
    line, share = s.handle(submit(9, "farm.w1", "1", en2, ntime, nonce, bits), T0)
    assert isinstance(share, Share)
    assert (share.version, share.share_hash, share.share_difficulty) == (version, h, share_diff)
    assert share.verdict == ("accepted" if meets else "difficulty-too-low")
    assert reply((line, share)).get("result") is (True if meets else None)
    if meets:
        assert share.target_difficulty == work.difficulty_from_target(s.target)
        _, again = s.handle(submit(10, "farm.w1", "1", en2, ntime, nonce, bits), T0)
        assert isinstance(again, Share) and again.verdict == "duplicate-share"
