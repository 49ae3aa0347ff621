"""Mining work arithmetic: coinbase, merkle root, header, targets, difficulty.

Pure functions, no I/O, no clock. They sit on the share hot path, so they stay
small and avoid intermediate objects. Byte-order rules (reference section 8):

* hashes (txid, merkle nodes, prev_hash, header hash) are the raw 32 bytes as
  they sit in a header ("internal" order); the "display" hex is the reverse;
* a hash or an SV2 U256 target is compared as a **little-endian** integer;
* header integers (version, ntime, nbits, nonce) are little-endian U32;
* the SV1 ``mining.notify`` prevhash is the header prev_hash with the bytes of
  every 4-byte word reversed (the same operation converts back).

``DIFF1`` is the difficulty-1 target ``0xFFFF << 208`` (nbits ``0x1d00ffff``),
the constant real SV1 miners use. Difficulty of a target ``T`` is
``DIFF1 / T``; the difficulty a share achieved is ``DIFF1 / H``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable
from fractions import Fraction

from sv2.errors import ProtocolError

__all__ = [
    "DIFF1",
    "HASHES_PER_DIFF1",
    "MAX_TARGET",
    "SRI_SV1_VERSION_MASK",
    "VERSION_ROLLING_MASK",
    "apply_version_bits",
    "coinbase",
    "coinbase_merkle_root",
    "difficulty_from_target",
    "display_hex",
    "hash_meets_target",
    "hashrate_to_target",
    "header",
    "header_hash",
    "header_hash_unchecked",
    "merkle_root",
    "round_difficulty_pow2_down",
    "sha256d",
    "share_difficulty",
    "strip_bip141",
    "sv1_prevhash_from_sv2",
    "sv2_prevhash_from_sv1",
    "target_from_bytes",
    "target_from_difficulty",
    "target_from_nbits",
    "target_to_bytes",
    "target_to_hashrate",
    "version_bits_within_mask",
]

DIFF1 = 0xFFFF << 208
"""Difficulty-1 target (``0x00000000FFFF0000…``), the nbits 0x1d00ffff target."""

MAX_TARGET = 2**256 - 1
"""Largest U256 target (every hash meets it)."""

HASHES_PER_DIFF1 = 2**32
"""Hashes per difficulty-1 share used for hashrate estimates (the usual convention)."""

VERSION_ROLLING_MASK = 0x1FFFFFE0
"""BIP320 general-purpose version bits: what SV2 ``version_rolling_allowed`` permits."""

SRI_SV1_VERSION_MASK = 0x1FFFE000
"""The classic 16-bit ASIC mask the SRI translator offers in mining.configure."""

_U32 = 0xFFFFFFFF
_HASH_SIZE = 32  # a SHA256d hash or a U256 target on the wire
_HEADER = struct.Struct(f"<I{_HASH_SIZE}s{_HASH_SIZE}sIII")
_WORDS_BE = struct.Struct(">8I")
_WORDS_LE = struct.Struct("<8I")
_U128_MAX = 2**128 - 1

_sha256 = hashlib.sha256
_pack_header = _HEADER.pack


# ---------------------------------------------------------------------------
# hashing, coinbase, merkle root, header


def sha256d(b: bytes) -> bytes:
    """Double SHA-256 of ``b`` (32 bytes, internal order)."""
    return _sha256(_sha256(b).digest()).digest()


def display_hex(hash32: bytes) -> str:
    """Display (block-explorer) hex of an internal-order hash: the bytes reversed."""
    return hash32[::-1].hex()


def strip_bip141(prefix: bytes, suffix: bytes) -> tuple[bytes, bytes]:
    """Remove the BIP141 marker, flag and witness from a split coinbase (SRI rule).

    When ``prefix[4] == 0`` and ``prefix[5] != 0`` (segwit marker and flag), drop
    ``prefix[4:6]`` and the 34 bytes just before the suffix's final 4-byte
    locktime (witness count, length and the 32-byte reserved value). Otherwise
    both are returned unchanged. Raises ``ProtocolError`` when the parts are too
    short to be a coinbase (SRI would panic there).
    """
    if len(prefix) < 6:
        raise ProtocolError(f"coinbase_tx_prefix too short ({len(prefix)} bytes)")
    if prefix[4] != 0 or prefix[5] == 0:
        return prefix, suffix
    if len(suffix) < 38:
        raise ProtocolError(
            f"coinbase_tx_suffix too short to carry a witness ({len(suffix)} bytes)"
        )
    return prefix[:4] + prefix[6:], suffix[:-38] + suffix[-4:]


def coinbase(prefix: bytes, extranonce: bytes, suffix: bytes) -> bytes:
    """Serialized coinbase: ``prefix ‖ extranonce ‖ suffix``.

    SV2: ``extranonce`` is ``extranonce_prefix ‖ extranonce``; SV1: it is
    ``extranonce1 ‖ extranonce2`` and prefix/suffix are coinb1/coinb2.
    """
    return prefix + extranonce + suffix


def merkle_root(coinbase_txid: bytes, merkle_path: Iterable[bytes]) -> bytes:
    """Fold the merkle path (nodes as received, no reversal) onto the coinbase txid."""
    root = coinbase_txid
    for node in merkle_path:
        root = _sha256(_sha256(root + node).digest()).digest()
    return root


def coinbase_merkle_root(coinbase: bytes, merkle_path: Iterable[bytes]) -> bytes:
    """``merkle_root(sha256d(coinbase), merkle_path)`` in one call: the share hot path's form."""
    root = _sha256(_sha256(coinbase).digest()).digest()
    for node in merkle_path:
        root = _sha256(_sha256(root + node).digest()).digest()
    return root


def header(
    version: int, prev_hash: bytes, merkle_root: bytes, ntime: int, nbits: int, nonce: int
) -> bytes:
    """The 80-byte block header. ``prev_hash`` and ``merkle_root`` in header order.

    Raises ``ValueError`` when a hash is not 32 bytes or an integer is not a U32.
    """
    if len(prev_hash) != _HASH_SIZE or len(merkle_root) != _HASH_SIZE:
        raise ValueError(f"prev_hash and merkle_root must be {_HASH_SIZE} bytes")
    try:
        return _HEADER.pack(version, prev_hash, merkle_root, ntime, nbits, nonce)
    except struct.error as e:
        raise ValueError(f"header field out of U32 range: {e}") from None


def header_hash(
    version: int, prev_hash: bytes, merkle_root: bytes, ntime: int, nbits: int, nonce: int
) -> bytes:
    """Double SHA-256 of the header (internal order; ``display_hex`` for explorers)."""
    return sha256d(header(version, prev_hash, merkle_root, ntime, nbits, nonce))


def header_hash_unchecked(
    version: int, prev_hash: bytes, merkle_root: bytes, ntime: int, nbits: int, nonce: int
) -> bytes:
    """``header_hash`` for fields already known valid (the share hot path).

    The caller guarantees what ``header`` checks: both hashes are 32 bytes (a
    shorter one would be zero-padded here, not refused) and every integer is a
    U32 (``struct.error`` otherwise).
    """
    return _sha256(_sha256(_pack_header(version, prev_hash, merkle_root, ntime, nbits, nonce)).digest()).digest()


# ---------------------------------------------------------------------------
# targets and difficulty


def hash_meets_target(hash32: bytes, target: int) -> bool:
    """True when the hash, read little-endian, is ``<= target`` (SRI pool rule)."""
    return int.from_bytes(hash32, "little") <= target


def share_difficulty(hash32: bytes) -> float:
    """Difficulty the share achieved: ``DIFF1 / H`` (``inf`` for an all-zero hash)."""
    h = int.from_bytes(hash32, "little")
    if h == 0:
        return math.inf
    return DIFF1 / h


def difficulty_from_target(t: int) -> float:
    """``DIFF1 / t`` as a float (``inf`` for a zero target)."""
    if t < 0:
        raise ValueError("target must not be negative")
    if t == 0:
        return math.inf
    return DIFF1 / t


def target_from_difficulty(d: float) -> int:
    """``floor(DIFF1 / d)`` in exact rational arithmetic, clamped to ``MAX_TARGET``.

    A float ``d`` is taken at the decimal value of its shortest repr
    (``Fraction(repr(d))``), i.e. 0.001 means exactly 1/1000 and 1e-8 exactly
    10**-8, as a person or a config file means them (the vectors pin this).
    Raises ``ValueError`` unless ``d`` is a finite number > 0.
    """
    if isinstance(d, int):
        if d <= 0:
            raise ValueError(f"difficulty must be > 0, got {d!r}")
        return min(DIFF1 // d, MAX_TARGET)
    if not math.isfinite(d) or d <= 0:
        raise ValueError(f"difficulty must be a finite number > 0, got {d!r}")
    if d.is_integer():
        return min(DIFF1 // int(d), MAX_TARGET)
    q = Fraction(repr(float(d)))
    return min((DIFF1 * q.denominator) // q.numerator, MAX_TARGET)


def target_from_nbits(nbits: int) -> int:
    """Expand compact ``nbits`` (mantissa = low 23 bits, exponent = high byte).

    The result is clamped to ``MAX_TARGET``; the sign bit is ignored.
    """
    if not 0 <= nbits <= _U32:
        raise ValueError(f"nbits out of U32 range: {nbits!r}")
    mantissa = nbits & 0x007FFFFF
    exponent = nbits >> 24
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return min(mantissa << (8 * (exponent - 3)), MAX_TARGET)


def target_to_bytes(t: int) -> bytes:
    """SV2 U256 wire form of a target: 32 bytes little-endian."""
    if not 0 <= t <= MAX_TARGET:
        raise ValueError("target out of U256 range")
    return t.to_bytes(_HASH_SIZE, "little")


def target_from_bytes(b: bytes) -> int:
    """Target from its 32-byte little-endian wire form."""
    if len(b) != _HASH_SIZE:
        raise ValueError(f"a U256 target is {_HASH_SIZE} bytes, got {len(b)}")
    return int.from_bytes(b, "little")


def hashrate_to_target(hashrate: float, shares_per_minute: float) -> int:
    """SRI ``hash_rate_to_target``: ``floor((2^256 - 1 - hs) / (hs + 1))``.

    ``hs = trunc(hashrate * (60 / shares_per_minute))`` saturated to U128, as
    SRI computes it. Hashrate 0 gives ``MAX_TARGET``.
    """
    if not shares_per_minute > 0 or not math.isfinite(shares_per_minute):
        raise ValueError(f"shares_per_minute must be finite and > 0, got {shares_per_minute!r}")
    if math.isnan(hashrate) or hashrate < 0:
        raise ValueError(f"hashrate must be >= 0, got {hashrate!r}")
    hs_f = hashrate * (60.0 / shares_per_minute)
    hs = _U128_MAX if hs_f >= 2.0**128 else int(hs_f)
    return (MAX_TARGET - hs) // (hs + 1)


def target_to_hashrate(target: int, shares_per_minute: float) -> float:
    """SRI ``hash_rate_from_target``: ``(2^256 - t) / (s * (t + 1))``, s = 60/spm.

    Integer arithmetic as in SRI: ``s`` is scaled by 100 and truncated, the
    quotient is truncated to an integer.
    """
    if not shares_per_minute > 0 or not math.isfinite(shares_per_minute):
        raise ValueError(f"shares_per_minute must be finite and > 0, got {shares_per_minute!r}")
    if not 0 <= target <= MAX_TARGET:
        raise ValueError("target out of U256 range")
    s100 = int(60.0 / shares_per_minute * 100.0)
    if s100 == 0:
        raise ValueError("shares_per_minute too large (share interval rounds to zero)")
    numerator = 2**256 - target
    denominator = max((target + 1) * s100 // 100, 1)
    return float(numerator // denominator)


def round_difficulty_pow2_down(d: float, threshold: float = 1.0) -> float:
    """Round ``d`` down to a power of two once ``d >= threshold`` (SRI translator).

    Below the threshold ``d`` is returned unchanged. Never rounds up, so the
    miner's target is never harder than the one it was derived from.
    """
    if not math.isfinite(d) or d <= 0:
        raise ValueError(f"difficulty must be a finite number > 0, got {d!r}")
    if d < threshold:
        return d
    _, exponent = math.frexp(d)  # d = m * 2**exponent with 0.5 <= m < 1
    return math.ldexp(1.0, exponent - 1)


# ---------------------------------------------------------------------------
# prevhash forms


def sv1_prevhash_from_sv2(prev_hash32: bytes) -> str:
    """SV1 notify prevhash: header bytes with each 4-byte word byte-reversed, hex."""
    if len(prev_hash32) != _HASH_SIZE:
        raise ValueError(f"prev_hash must be {_HASH_SIZE} bytes, got {len(prev_hash32)}")
    return _WORDS_LE.pack(*_WORDS_BE.unpack(prev_hash32)).hex()


def sv2_prevhash_from_sv1(prevhash_hex: str) -> bytes:
    """Header bytes (= SV2 prev_hash) from an SV1 notify prevhash hex string."""
    try:
        raw = bytes.fromhex(prevhash_hex)
    except ValueError:
        raise ValueError("prevhash is not hex") from None
    if len(raw) != _HASH_SIZE:
        raise ValueError(f"prevhash must be {_HASH_SIZE} bytes, got {len(raw)}")
    return _WORDS_LE.pack(*_WORDS_BE.unpack(raw))


# ---------------------------------------------------------------------------
# version rolling


def apply_version_bits(job_version: int, version_bits: int, mask: int) -> int:
    """BIP310 rolled version: ``(job_version & ~mask) | (version_bits & mask)``, as a U32."""
    return ((job_version & ~mask) | (version_bits & mask)) & _U32


def version_bits_within_mask(version_bits: int, mask: int) -> bool:
    """BIP310 validity: ``version_bits & ~mask == 0``."""
    return version_bits & ~mask & _U32 == 0
