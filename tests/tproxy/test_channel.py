"""tproxy.upstream.channel: future/active jobs, chain tips, per-job targets, extranonce layout."""

from __future__ import annotations

import pytest

from sv2 import work
from sv2.messages import (
    NewExtendedMiningJob,
    OpenExtendedMiningChannelSuccess,
    SetExtranoncePrefix,
    SetNewPrevHash,
    SetTarget,
)
from tests.helpers.vectors import load_vector
from tproxy.upstream.channel import ChannelLayoutError, ChannelState

EASY = work.target_from_difficulty(1e-6)
HARD = work.target_from_difficulty(1.0)


def open_success(extranonce_size: int = 16, prefix: bytes = b"\x01\x00\x00\x07") -> OpenExtendedMiningChannelSuccess:
    return OpenExtendedMiningChannelSuccess(
        request_id=1,
        channel_id=7,
        target=work.target_to_bytes(EASY),
        extranonce_size=extranonce_size,
        extranonce_prefix=prefix,
        group_channel_id=99,
    )


def job_msg(job_id: int, min_ntime: int | None, *, channel_id: int = 7) -> NewExtendedMiningJob:
    return NewExtendedMiningJob(
        channel_id=channel_id,
        job_id=job_id,
        min_ntime=min_ntime,
        version=0x20000000,
        version_rolling_allowed=True,
        merkle_path=(bytes(range(32)),),
        coinbase_tx_prefix=bytes.fromhex("01000000") + b"\x01" + bytes(32) + b"\xff\xff\xff\xff" + b"\x10" + b"pfx",
        coinbase_tx_suffix=b"sfx" + bytes(4),
    )


def prevhash(job_id: int, *, ntime: int = 1_700_000_000, channel_id: int = 7) -> SetNewPrevHash:
    return SetNewPrevHash(channel_id=channel_id, job_id=job_id, prev_hash=bytes(range(32)), min_ntime=ntime, nbits=0x1D00FFFF)


def channel(**kw: int) -> ChannelState:
    return ChannelState.from_open_success(open_success(**kw), extranonce1_size=2, extranonce2_size=4)


def test_layout_pads_the_slack_into_coinb1() -> None:
    ch = channel()
    assert ch.pad == bytes(10)  # 16 granted - 2 local - 4 miner
    assert ch.addressed_to(7) and ch.addressed_to(99) and not ch.addressed_to(8)


def test_layout_refuses_too_small_a_grant() -> None:
    with pytest.raises(ChannelLayoutError, match="extranonce_size=5"):
        channel(extranonce_size=5)


def test_future_job_waits_for_prevhash_then_activates_clean() -> None:
    ch = channel()
    assert ch.on_new_extended_job(job_msg(1, None)) is None
    job = ch.on_set_new_prev_hash(prevhash(1, ntime=1234))
    assert job is not None and job.clean and job.job_id == 1
    assert job.ntime == 1234 and job.nbits == 0x1D00FFFF and job.prev_hash == bytes(range(32))
    assert job.coinb1.endswith(b"\x01\x00\x00\x07" + bytes(10))  # upstream prefix then pad
    assert job.generation == 1


def test_active_job_before_any_prevhash_is_dropped_not_crashing() -> None:
    ch = channel()
    assert ch.on_new_extended_job(job_msg(5, 100)) is None
    assert ch.dropped_jobs == 1


def test_active_job_after_prevhash_is_not_clean_and_same_generation() -> None:
    ch = channel()
    ch.on_new_extended_job(job_msg(1, None))
    ch.on_set_new_prev_hash(prevhash(1))
    job = ch.on_new_extended_job(job_msg(2, 1_700_000_005))
    assert job is not None and not job.clean and job.generation == 1 and job.ntime == 1_700_000_005


def test_prevhash_for_unknown_job_advances_generation_and_clears_active() -> None:
    ch = channel()
    ch.on_new_extended_job(job_msg(1, None))
    ch.on_set_new_prev_hash(prevhash(1))
    assert ch.on_set_new_prev_hash(prevhash(42)) is None
    assert ch.active is None and ch.generation == 2


def test_set_target_applies_to_jobs_activated_later_only() -> None:
    ch = channel()
    ch.on_new_extended_job(job_msg(1, None))
    first = ch.on_set_new_prev_hash(prevhash(1))
    ch.on_set_target(SetTarget(channel_id=7, maximum_target=work.target_to_bytes(HARD)))
    assert first is not None and first.upstream_target == EASY
    second = ch.on_new_extended_job(job_msg(2, 1_700_000_001))
    assert second is not None and second.upstream_target == HARD


def test_set_extranonce_prefix_applies_to_jobs_received_afterwards() -> None:
    ch = channel()
    ch.on_new_extended_job(job_msg(1, None))
    ch.on_set_extranonce_prefix(SetExtranoncePrefix(channel_id=7, extranonce_prefix=b"\xaa\xbb\xcc\xdd"))
    old = ch.on_set_new_prev_hash(prevhash(1))
    new = ch.on_new_extended_job(job_msg(2, 1_700_000_001))
    assert old is not None and new is not None
    assert old.coinb1.endswith(b"\x01\x00\x00\x07" + bytes(10))
    assert new.coinb1.endswith(b"\xaa\xbb\xcc\xdd" + bytes(10))


def test_future_jobs_are_bounded() -> None:
    ch = channel()
    for i in range(100):
        ch.on_new_extended_job(job_msg(i, None))
    assert ch.on_set_new_prev_hash(prevhash(0)) is None  # evicted long ago
    assert len(ch._future) == 0


def test_sequence_numbers_wrap_at_u32() -> None:
    ch = channel()
    ch.next_sequence_number = 0xFFFFFFFF
    assert ch.take_sequence_number() == 0xFFFFFFFF
    assert ch.take_sequence_number() == 0


def test_sri_share_vector_validates_through_channel_jobs() -> None:
    """The SRI channels-sv2 share vectors rebuild the same hashes through our Job layout."""
    v = load_vector("share_validation_sri")
    chan = v["channel"]
    prefix = bytes.fromhex(chan["extranonce_prefix_hex"])
    rollable = chan["rollable_extranonce_size"]
    success = OpenExtendedMiningChannelSuccess(
        request_id=1, channel_id=1, target=work.target_to_bytes(work.MAX_TARGET),
        extranonce_size=rollable, extranonce_prefix=prefix, group_channel_id=2,
    )
    ch = ChannelState.from_open_success(success, extranonce1_size=0 + 1, extranonce2_size=rollable - 1)
    j = v["job"]
    ch.on_new_extended_job(
        NewExtendedMiningJob(
            channel_id=1, job_id=j["job_id"], min_ntime=None, version=j["version"],
            version_rolling_allowed=True, merkle_path=tuple(bytes.fromhex(x) for x in j["merkle_path"]),
            coinbase_tx_prefix=bytes.fromhex(j["coinbase_tx_prefix_hex (as sent, with BIP141 marker/flag)"]),
            coinbase_tx_suffix=bytes.fromhex(j["coinbase_tx_suffix_hex (as sent, with witness)"]),
        )
    )
    snph = v["set_new_prev_hash"]
    job = ch.on_set_new_prev_hash(
        SetNewPrevHash(
            channel_id=1, job_id=j["job_id"], prev_hash=bytes.fromhex(snph["prev_hash_hex (wire bytes = header bytes)"]),
            min_ntime=snph["min_ntime"], nbits=v["cases"][0]["nbits"],
        )
    )
    assert job is not None
    assert job.coinb2 == bytes.fromhex(j["coinbase_tx_suffix_stripped_hex"])
    assert job.coinb1 == bytes.fromhex(j["coinbase_tx_prefix_stripped_hex"]) + prefix
    extranonce = bytes.fromhex(v["share_common"]["extranonce_hex"])
    coinbase = job.coinb1 + extranonce + job.coinb2
    assert coinbase.hex() == v["coinbase_hex (stripped prefix || extranonce_prefix || extranonce || stripped suffix)"]
    root = work.merkle_root(work.sha256d(coinbase), job.merkle_path)
    checked = 0
    for case in v["cases"]:
        header = work.header(case["version"], job.prev_hash, root, case["ntime"], case["nbits"], case["nonce"])
        assert header.hex() == case["header_hex"]
        h = work.sha256d(header)
        assert h[::-1].hex() == case["hash_display_be_hex"]
        target = int(case["channel_target_be_hex"], 16)
        assert work.hash_meets_target(h, target) == case["hash_meets_channel_target"]
        checked += 1
    assert checked == len(v["cases"]) >= 3
