"""sv2.work against the shared vectors (SRI share validation, ESP-Miner mainnet
shares, Bitcoin blocks, target/difficulty tables) plus property tests."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sv2 import work
from sv2.errors import ProtocolError
from tests.helpers.vectors import load_vector

SRI = load_vector("share_validation_sri")
BIP141 = load_vector("bip141_strip")
ESP = load_vector("sv1_mainnet_shares_esp_miner")
BLOCKS = load_vector("bitcoin_blocks")
TD = load_vector("target_difficulty")

H = bytes.fromhex


def _u256_be(hex_be: str) -> int:
    return int(hex_be, 16)


# ---------------------------------------------------------------------------
# constants


def test_constants() -> None:
    assert work.DIFF1 == 0xFFFF << 208
    assert work.MAX_TARGET == 2**256 - 1
    assert _u256_be(TD["difficulty_1_target_be_hex"]) == work.DIFF1
    assert work.target_to_bytes(work.DIFF1).hex() == TD["difficulty_1_target_wire_le_hex"]
    assert work.target_from_nbits(0x1D00FFFF) == work.DIFF1


def test_sha256d_known() -> None:
    # sha256d of the empty string
    assert work.sha256d(b"").hex() == (
        "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456"
    )


# ---------------------------------------------------------------------------
# BIP141


@pytest.mark.parametrize("case", BIP141["cases"], ids=lambda c: c["name"])
def test_bip141_strip(case: dict[str, Any]) -> None:
    prefix, suffix = H(case["prefix_hex"]), H(case["suffix_hex"])
    p2, s2 = work.strip_bip141(prefix, suffix)
    if case.get("expected") == "unchanged":
        assert (p2, s2) == (prefix, suffix)
    else:
        assert p2.hex() == case["expected_prefix_hex"]
        assert s2.hex() == case["expected_suffix_hex"]
        # idempotent: the stripped form is left alone
        assert work.strip_bip141(p2, s2) == (p2, s2)


def test_bip141_short_inputs() -> None:
    with pytest.raises(ProtocolError):
        work.strip_bip141(b"\x02\x00\x00\x00\x00", b"")
    with pytest.raises(ProtocolError):
        work.strip_bip141(H("020000000001"), b"\x00" * 37)
    # not segwit: short suffix is fine
    assert work.strip_bip141(H("020000000100"), b"") == (H("020000000100"), b"")


# ---------------------------------------------------------------------------
# SRI share validation (three shares)


def _sri_job() -> tuple[bytes, bytes]:
    job = SRI["job"]
    prefix = H(job["coinbase_tx_prefix_hex (as sent, with BIP141 marker/flag)"])
    suffix = H(job["coinbase_tx_suffix_hex (as sent, with witness)"])
    return work.strip_bip141(prefix, suffix)


def test_sri_stripped_coinbase_and_txid() -> None:
    job = SRI["job"]
    prefix, suffix = _sri_job()
    assert prefix.hex() == job["coinbase_tx_prefix_stripped_hex"]
    assert suffix.hex() == job["coinbase_tx_suffix_stripped_hex"]
    extranonce = H(SRI["channel"]["extranonce_prefix_hex"]) + H(
        SRI["share_common"]["extranonce_hex"]
    )
    assert extranonce.hex() == SRI["share_common"]["full_extranonce_hex"]
    cb = work.coinbase(prefix, extranonce, suffix)
    assert (
        cb.hex()
        == SRI[
            "coinbase_hex (stripped prefix || extranonce_prefix || extranonce || stripped suffix)"
        ]
    )
    txid = work.sha256d(cb)
    assert txid.hex() == SRI["coinbase_txid_internal_hex"]
    assert work.display_hex(txid) == SRI["coinbase_txid_display_hex"]
    root = work.merkle_root(txid, [H(n) for n in job["merkle_path"]])
    assert root.hex() == SRI["merkle_root_internal_hex (empty path: equals txid)"]


@pytest.mark.parametrize("case", SRI["cases"], ids=lambda c: c["case"].split(" (")[0])
def test_sri_share(case: dict[str, Any]) -> None:
    prev_hash = H(SRI["set_new_prev_hash"]["prev_hash_hex (wire bytes = header bytes)"])
    assert work.display_hex(prev_hash) == SRI["set_new_prev_hash"]["prev_hash_display_be"]
    root = H(SRI["coinbase_txid_internal_hex"])
    args = (case["version"], prev_hash, root, case["ntime"], case["nbits"], case["nonce"])
    hdr = work.header(*args)
    assert len(hdr) == 80
    assert hdr.hex() == case["header_hex"]
    h = work.header_hash(*args)
    assert h == work.sha256d(hdr)
    assert h.hex() == case["hash_internal_le_hex"]
    assert work.display_hex(h) == case["hash_display_be_hex"]

    assert int(case["nbits_hex"], 16) == case["nbits"]
    network = work.target_from_nbits(case["nbits"])
    assert network == _u256_be(case["network_target_be_hex"])
    channel = work.target_from_bytes(H(case["channel_target_wire_le_hex"]))
    assert channel == _u256_be(case["channel_target_be_hex"])
    assert work.target_to_bytes(channel).hex() == case["channel_target_wire_le_hex"]

    assert work.hash_meets_target(h, channel) is case["hash_meets_channel_target"]
    assert work.hash_meets_target(h, network) is case["hash_meets_network_target"]
    assert work.share_difficulty(h) == pytest.approx(
        case["share_difficulty (0xFFFF<<208 / hash)"], rel=1e-12
    )


def test_hash_meets_target_equality_is_inclusive() -> None:
    h = bytes(range(32))
    t = int.from_bytes(h, "little")
    assert work.hash_meets_target(h, t)
    assert not work.hash_meets_target(h, t - 1)
    assert work.hash_meets_target(h, work.MAX_TARGET)
    assert not work.hash_meets_target(b"\x01" + bytes(31), 0)


# ---------------------------------------------------------------------------
# ESP-Miner mainnet shares


def test_esp_coinbase() -> None:
    c = ESP["coinbase_construction"]
    cb = work.coinbase(
        H(c["coinb1"]), H(c["extranonce1_hex"]) + H(c["extranonce2_hex"]), H(c["coinb2"])
    )
    assert cb.hex() == c["expected_coinbase_hex"]
    assert work.sha256d(cb).hex() == c["coinbase_txid_internal_hex"]


@pytest.mark.parametrize("case", ESP["merkle_roots"], ids=lambda c: c["case"])
def test_esp_merkle_root(case: dict[str, Any]) -> None:
    cb = work.coinbase(
        H(case["coinb1"]),
        H(case["extranonce1_hex"]) + H(case["extranonce2_hex"]),
        H(case["coinb2"]),
    )
    root = work.merkle_root(work.sha256d(cb), [H(b) for b in case["merkle_branch"]])
    assert root.hex() == case["expected_merkle_root_internal_hex"]


@pytest.mark.parametrize("case", ESP["shares"], ids=lambda c: c["case"].split(" (")[0])
def test_esp_share_difficulty(case: dict[str, Any]) -> None:
    n, d, sub = case["notify"], case["derived"], case["submit"]
    prev = work.sv2_prevhash_from_sv1(n["prevhash_sv1"])
    assert prev.hex() == d["prevhash_header_bytes_hex"]
    assert work.display_hex(prev) == d["prevhash_display_hex"]
    assert work.sv1_prevhash_from_sv2(prev) == n["prevhash_sv1"]
    if "coinb1" in n:
        cb = work.coinbase(
            H(n["coinb1"]), H(case["extranonce1_hex"]) + H(case["extranonce2_hex"]), H(n["coinb2"])
        )
        assert cb.hex() == d["coinbase_hex"]
        txid = work.sha256d(cb)
        assert txid.hex() == d["coinbase_txid_internal_hex"]
        root = work.merkle_root(txid, [H(b) for b in n["merkle_branch"]])
        assert root.hex() == d["merkle_root_internal_hex"]
        assert root.hex() == case["asserted_by_esp_miner_test"]["merkle_root_hex"]
    else:
        root = H(case["merkle_root_internal_hex"])
    version = work.apply_version_bits(
        int(n["version_hex"], 16), int(sub["version_bits_hex"], 16), 0x1FFFE000
    )
    ntime = int(sub.get("ntime_hex", n["ntime_hex"]), 16)
    args = (version, prev, root, ntime, int(n["nbits_hex"], 16), int(sub["nonce_hex"], 16))
    assert work.header(*args).hex() == d["header_hex"]
    h = work.header_hash(*args)
    assert work.display_hex(h) == d["hash_display_hex"]
    diff = work.share_difficulty(h)
    assert diff == pytest.approx(d["share_difficulty"], rel=1e-12)
    assert int(diff) == case["asserted_by_esp_miner_test"]["int(share_difficulty)"]


# ---------------------------------------------------------------------------
# Bitcoin blocks


@pytest.mark.parametrize("block", BLOCKS["blocks"], ids=lambda b: b["name"])
def test_block_header_and_hash(block: dict[str, Any]) -> None:
    prev = H(block["prev_display"])[::-1]
    assert prev.hex() == block["sv2_prev_hash_wire_hex"]
    assert work.sv1_prevhash_from_sv2(prev) == block["sv1_notify_prevhash"]
    assert work.sv2_prevhash_from_sv1(block["sv1_notify_prevhash"]) == prev
    root = H(block["merkle_root_display"])[::-1]
    nbits = int(block["nbits_hex"], 16)
    args = (block["version"], prev, root, block["time"], nbits, block["nonce"])
    assert work.header(*args).hex() == block["header_hex"]
    h = work.header_hash(*args)
    assert h.hex() == block["hash_internal_hex"]
    assert work.display_hex(h) == block["hash_display"]
    target = work.target_from_nbits(nbits)
    assert work.hash_meets_target(h, target)
    if "target_be_hex" in block:
        assert target == _u256_be(block["target_be_hex"])
        assert work.difficulty_from_target(target) == block["difficulty"]
    if "difficulty_from_nbits" in block:
        assert work.difficulty_from_target(target) == pytest.approx(
            block["difficulty_from_nbits"], rel=1e-15
        )


def test_genesis_coinbase_txid() -> None:
    g = BLOCKS["genesis_coinbase"]
    txid = work.sha256d(H(g["tx_hex"]))
    assert txid.hex() == g["txid_internal_hex"]
    assert work.display_hex(txid) == g["txid_display"]
    # the genesis coinbase has no witness: stripping leaves it alone
    split = g["synthetic_job_split"]
    p, s = (
        H(split["coinbase_tx_prefix_or_coinb1_hex"]),
        H(split["coinbase_tx_suffix_or_coinb2_hex"]),
    )
    assert work.strip_bip141(p, s) == (p, s)


@pytest.mark.parametrize("mode", ["sv1", "sv2"])
def test_genesis_synthetic_split_rebuilds_hash(mode: str) -> None:
    g = BLOCKS["genesis_coinbase"]
    split = g["synthetic_job_split"]
    genesis = BLOCKS["blocks"][0]
    prefix = H(split["coinbase_tx_prefix_or_coinb1_hex"])
    suffix = H(split["coinbase_tx_suffix_or_coinb2_hex"])
    if mode == "sv1":
        en = H(split["sv1_split"]["extranonce1_hex"]) + H(split["sv1_split"]["extranonce2_hex"])
        prev = work.sv2_prevhash_from_sv1(genesis["sv1_notify_prevhash"])
    else:
        en = H(split["sv2_split"]["extranonce_prefix_hex"]) + H(
            split["sv2_split"]["extranonce_hex"]
        )
        prev = H(genesis["sv2_prev_hash_wire_hex"])
    assert en.hex() == split["extranonce_8_bytes_hex"]
    cb = work.coinbase(prefix, en, suffix)
    assert cb.hex() == g["tx_hex"]
    root = work.merkle_root(work.sha256d(cb), [])
    assert root.hex() == split["expected_merkle_root_internal_hex"]
    h = work.header_hash(1, prev, root, 1231006505, 0x1D00FFFF, 2083236893)
    assert work.display_hex(h) == split["expected_block_hash_display"]


# ---------------------------------------------------------------------------
# targets, difficulty, nbits


@pytest.mark.parametrize("row", TD["nbits_examples"], ids=lambda r: r["nbits_hex"])
def test_nbits_examples(row: dict[str, Any]) -> None:
    t = work.target_from_nbits(int(row["nbits_hex"], 16))
    assert t == _u256_be(row["target_be_hex"])
    assert work.difficulty_from_target(t) == row["difficulty"]


def test_nbits_small_exponent_and_range() -> None:
    assert work.target_from_nbits(0x03123456) == 0x123456
    assert work.target_from_nbits(0x02123456) == 0x1234
    assert work.target_from_nbits(0x01123456) == 0x12
    assert work.target_from_nbits(0x00123456) == 0
    assert work.target_from_nbits(0xFF7FFFFF) == work.MAX_TARGET
    with pytest.raises(ValueError):
        work.target_from_nbits(-1)
    with pytest.raises(ValueError):
        work.target_from_nbits(2**32)


@pytest.mark.parametrize("row", TD["difficulty_target_pairs"], ids=lambda r: str(r["difficulty"]))
def test_difficulty_target_pairs(row: dict[str, Any]) -> None:
    d = row["difficulty"]
    t = work.target_from_difficulty(d)
    assert t == _u256_be(row["target_be_hex"])
    assert work.target_to_bytes(t).hex() == row["target_wire_le_hex"]
    assert work.target_from_bytes(H(row["target_wire_le_hex"])) == t
    assert work.difficulty_from_target(t) == pytest.approx(d, rel=1e-12)
    # the float and int spellings of an integral difficulty agree
    assert work.target_from_difficulty(float(d)) == t


def test_target_from_difficulty_clamps_and_rejects() -> None:
    assert work.target_from_difficulty(1e-80) == work.MAX_TARGET
    assert work.target_from_difficulty(1e80) == 0
    assert work.target_from_difficulty(1.0) == work.DIFF1
    for bad in (0, 0.0, -1.0, math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            work.target_from_difficulty(bad)


def test_target_from_difficulty_never_easier_than_asked() -> None:
    # floor: the target's difficulty is >= the requested one (up to float rounding)
    for d in (1e-8, 3e-7, 0.001, 0.3, 1.5, 3.0, 683.51, 1e6, 12345.678):
        t = work.target_from_difficulty(d)
        assert work.DIFF1 / t >= d * (1 - 1e-15)


def test_difficulty_from_target_edges() -> None:
    assert work.difficulty_from_target(0) == math.inf
    assert work.share_difficulty(bytes(32)) == math.inf
    assert work.difficulty_from_target(work.MAX_TARGET) == pytest.approx(2.3282709094019083e-10)
    with pytest.raises(ValueError):
        work.difficulty_from_target(-1)


def test_target_bytes_errors() -> None:
    with pytest.raises(ValueError):
        work.target_to_bytes(-1)
    with pytest.raises(ValueError):
        work.target_to_bytes(2**256)
    with pytest.raises(ValueError):
        work.target_from_bytes(b"\x00" * 31)


def test_pow2_rounding_table() -> None:
    rows = TD[
        "sri_integer_power_of_two_rounding (copied test table: advertised SV1 difficulty never rounds up)"
    ]
    assert rows
    for row in rows:
        assert work.round_difficulty_pow2_down(row["difficulty"]) == row["advertised"]


def test_pow2_rounding_threshold_and_never_up() -> None:
    assert work.round_difficulty_pow2_down(0.3) == 0.3  # below the default threshold
    assert work.round_difficulty_pow2_down(0.3, threshold=0.1) == 0.25
    assert work.round_difficulty_pow2_down(5.0, threshold=8.0) == 5.0
    assert work.round_difficulty_pow2_down(8.0, threshold=8.0) == 8.0
    assert work.round_difficulty_pow2_down(2.0**60 + 2.0**10) == 2.0**60
    for bad in (0.0, -2.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            work.round_difficulty_pow2_down(bad)


@given(st.floats(min_value=1e-12, max_value=1e18, allow_nan=False, allow_infinity=False))
def test_pow2_rounding_property(d: float) -> None:
    r = work.round_difficulty_pow2_down(d)
    if d < 1.0:
        assert r == d
    else:
        assert r <= d < 2 * r
        m, _ = math.frexp(r)
        assert m == 0.5  # an exact power of two


@pytest.mark.parametrize(
    "ex", TD["sri_hash_rate_to_target_examples"]["examples"], ids=lambda e: str(e["hashrate_hs"])
)
def test_hashrate_to_target_examples(ex: dict[str, Any]) -> None:
    t = work.hashrate_to_target(ex["hashrate_hs"], ex["shares_per_minute"])
    assert t == _u256_be(ex["target_be_hex"])
    assert work.target_to_bytes(t).hex() == ex["target_wire_le_hex"]
    assert work.difficulty_from_target(t) == ex["difficulty"]
    # the inverse formula gives the hashrate back
    assert work.target_to_hashrate(t, ex["shares_per_minute"]) == pytest.approx(
        ex["hashrate_hs"], rel=1e-9, abs=1.0
    )


def test_hashrate_formula_matches_text() -> None:
    formula = TD["sri_hash_rate_to_target_examples"]["formula"]
    assert "h*s" in formula
    h, spm = 123456789.0, 7.5
    hs = int(h * (60 / spm))
    assert work.hashrate_to_target(h, spm) == (2**256 - 1 - hs) // (hs + 1)


def test_hashrate_errors() -> None:
    for h, spm in ((1.0, 0.0), (1.0, -1.0), (-1.0, 6.0), (math.nan, 6.0), (1.0, math.inf)):
        with pytest.raises(ValueError):
            work.hashrate_to_target(h, spm)
    with pytest.raises(ValueError):
        work.target_to_hashrate(work.DIFF1, 0.0)
    with pytest.raises(ValueError):
        work.target_to_hashrate(-1, 6.0)
    # saturates instead of overflowing
    assert work.hashrate_to_target(1e300, 6.0) == (2**256 - 1 - (2**128 - 1)) // 2**128


# ---------------------------------------------------------------------------
# prevhash swap


def test_prevhash_swap_example_from_reference() -> None:
    b = BLOCKS["blocks"][1]
    assert b["sv1_notify_prevhash"].startswith("ab02cd818b9e567e")
    assert work.sv1_prevhash_from_sv2(H(b["sv2_prev_hash_wire_hex"])) == b["sv1_notify_prevhash"]


def test_prevhash_errors() -> None:
    with pytest.raises(ValueError):
        work.sv1_prevhash_from_sv2(b"\x00" * 31)
    with pytest.raises(ValueError):
        work.sv2_prevhash_from_sv1("00" * 31)
    with pytest.raises(ValueError):
        work.sv2_prevhash_from_sv1("zz" * 32)


@given(st.binary(min_size=32, max_size=32))
def test_prevhash_round_trip(b: bytes) -> None:
    s = work.sv1_prevhash_from_sv2(b)
    assert len(s) == 64
    assert work.sv2_prevhash_from_sv1(s) == b
    assert work.sv2_prevhash_from_sv1(s.upper()) == b
    # the word swap is its own inverse and keeps the word order
    swapped = bytes.fromhex(s)
    assert all(swapped[i : i + 4] == b[i : i + 4][::-1] for i in range(0, 32, 4))


@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_target_bytes_round_trip(t: int) -> None:
    b = work.target_to_bytes(t)
    assert len(b) == 32
    assert work.target_from_bytes(b) == t
    # comparing a hash equal to the target bytes is inclusive
    assert work.hash_meets_target(b, t)


@given(st.floats(min_value=1e-9, max_value=1e15, allow_nan=False, allow_infinity=False))
def test_difficulty_target_round_trip(d: float) -> None:
    t = work.target_from_difficulty(d)
    assert work.difficulty_from_target(t) == pytest.approx(d, rel=1e-9)


# ---------------------------------------------------------------------------
# header and version rolling


def test_header_rejects_bad_fields() -> None:
    z = bytes(32)
    with pytest.raises(ValueError):
        work.header(1, z[:31], z, 0, 0, 0)
    with pytest.raises(ValueError):
        work.header(1, z, z + b"\x00", 0, 0, 0)
    with pytest.raises(ValueError):
        work.header(2**32, z, z, 0, 0, 0)
    with pytest.raises(ValueError):
        work.header(1, z, z, -1, 0, 0)


def test_apply_version_bits() -> None:
    sv = load_vector("sv1_messages")["submit_to_sv2"]
    assert (
        work.apply_version_bits(
            sv["job_version"],
            int(sv["version_bits_hex"], 16),
            int(sv["version_rolling_mask_hex"], 16),
        )
        == sv["expected_sv2_version"]
    )
    assert work.apply_version_bits(0x20000000, 0x00006000, 0x1FFFE000) == 0x20006000
    # bits outside the mask are ignored, bits inside replace the job's
    assert work.apply_version_bits(0x20000004, 0xE0001FFF, 0x1FFFE000) == 0x20000004
    assert work.apply_version_bits(0x3FFFFFFF, 0, 0x1FFFE000) == 0x20001FFF
    # XOR-style bits (Bitaxe) equal masked bits when the job has nothing inside the mask
    job, rolled = 0x20000000, 0x2ABC0000 & 0x1FFFE000 | 0x20000000
    assert work.apply_version_bits(job, rolled ^ job, 0x1FFFE000) == rolled
    assert work.version_bits_within_mask(0x1FFFE000, 0x1FFFE000)
    assert not work.version_bits_within_mask(0x00001000, 0x1FFFE000)
    assert work.version_bits_within_mask(0, 0)
    assert work.VERSION_ROLLING_MASK == 0x1FFFFFE0
    assert work.SRI_SV1_VERSION_MASK == 0x1FFFE000


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_apply_version_bits_property(job: int, bits: int, mask: int) -> None:
    v = work.apply_version_bits(job, bits, mask)
    assert 0 <= v < 2**32
    assert v & ~mask & 0xFFFFFFFF == job & ~mask & 0xFFFFFFFF
    assert v & mask == bits & mask
