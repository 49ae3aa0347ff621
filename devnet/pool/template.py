"""Block templates and jobs of the dev pool: coinbase, merkle path, header, targets.

Owns the pool's view of work: a ``BlockTemplate`` (height, fake transactions,
witness commitment) and the ``Job`` cut from it for one extranonce length
(coinbase prefix/suffix around the extranonce, merkle path). The coinbase is
a real segwit transaction: version, marker/flag, one null-outpoint input
whose scriptSig is the BIP34 height push, a pool-tag push and
``OP_PUSHBYTES_n`` followed by the extranonce, then the reward output, a
witness commitment ``OP_RETURN``, the 32-byte witness reserved value and the
locktime.

The hashing helpers here are deliberately independent of ``sv2.work``: the
dev pool is the oracle the proxy is tested against, so a byte-order mistake
shared by both would otherwise go unnoticed.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from devnet.pool.settings import PoolSettings, bip34_height_push

DIFF1_TARGET = 0xFFFF << 208
MAX_TARGET = (1 << 256) - 1
WITNESS_RESERVED_VALUE = bytes(32)
_WITNESS_MAGIC = bytes.fromhex("aa21a9ed")


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def compact_size(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def push(data: bytes) -> bytes:
    """A script push of ``data`` (direct push up to 75 bytes, else OP_PUSHDATA1)."""
    if len(data) <= 75:
        return bytes([len(data)]) + data
    if len(data) <= 255:
        return b"\x4c" + bytes([len(data)]) + data
    raise ValueError("push too long for a coinbase scriptSig")


def merkle_root_of(hashes: list[bytes]) -> bytes:
    """Bitcoin merkle root of internal-order hashes (odd levels duplicate the last node)."""
    level = list(hashes)
    if not level:
        raise ValueError("no hashes")
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def coinbase_merkle_path(txids: list[bytes]) -> list[bytes]:
    """The merkle path of the coinbase (index 0) in a block whose other txids are ``txids``.

    The coinbase's own hash never appears in its path, so a placeholder stands
    in for it; the nodes derived from the placeholder are never siblings of
    index 0 and are thrown away.
    """
    level = [bytes(32), *txids]
    path: list[bytes] = []
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        path.append(level[1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return path


def merkle_root_from_path(coinbase_txid: bytes, path: list[bytes] | tuple[bytes, ...]) -> bytes:
    root = coinbase_txid
    for node in path:
        root = sha256d(root + node)
    return root


def target_from_nbits(nbits: int) -> int:
    exp = nbits >> 24
    mant = nbits & 0x007FFFFF
    if exp <= 3:
        return mant >> (8 * (3 - exp))
    return mant << (8 * (exp - 3))


def target_from_difficulty(difficulty: float) -> int:
    """``floor(DIFF1 / d)``; a float is taken at its shortest decimal repr (1e-4 means 1/10000)."""
    if not difficulty > 0 or not math.isfinite(difficulty):
        raise ValueError("difficulty must be a finite number > 0")
    q = Fraction(repr(float(difficulty)))
    return min(MAX_TARGET, (DIFF1_TARGET * q.denominator) // q.numerator)


def difficulty_from_target(target: int) -> float:
    return DIFF1_TARGET / max(target, 1)


def hashrate_to_target(hashrate: float, shares_per_minute: float) -> int:
    """SRI's ``hash_rate_to_target``: ``floor((2^256 - 1 - hs) / (hs + 1))``, hs = hashes per share."""
    hs_f = max(0.0, hashrate * (60.0 / shares_per_minute))
    hs = (1 << 128) - 1 if hs_f >= 2.0**128 else int(hs_f)
    return (MAX_TARGET - hs) // (hs + 1)


def hash_value(block_hash: bytes) -> int:
    """A header hash as the little-endian integer that is compared with targets."""
    return int.from_bytes(block_hash, "little")


def build_header(version: int, prev_hash: bytes, merkle_root: bytes, ntime: int, nbits: int, nonce: int) -> bytes:
    return struct.pack("<I", version) + prev_hash + merkle_root + struct.pack("<III", ntime, nbits, nonce)


def strip_bip141(prefix: bytes, suffix: bytes) -> tuple[bytes, bytes]:
    """Remove the segwit marker/flag and the witness reserved value (SRI's rule)."""
    if len(prefix) > 5 and prefix[4] == 0 and prefix[5] != 0:
        return prefix[:4] + prefix[6:], suffix[:-38] + suffix[-4:]
    return prefix, suffix


def parse_transaction(raw: bytes) -> None:
    """Check that ``raw`` is exactly one non-witness Bitcoin transaction; raise ValueError if not."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(raw):
            raise ValueError("truncated transaction")
        out = raw[pos : pos + n]
        pos += n
        return out

    def varint() -> int:
        first = take(1)[0]
        if first < 0xFD:
            return first
        size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        return int.from_bytes(take(size), "little")

    take(4)
    n_in = varint()
    if n_in == 0:
        raise ValueError("no inputs (or a witness marker): not a stripped transaction")
    for _ in range(n_in):
        take(36)
        take(varint())
        take(4)
    n_out = varint()
    for _ in range(n_out):
        take(8)
        take(varint())
    take(4)
    if pos != len(raw):
        raise ValueError(f"{len(raw) - pos} trailing bytes after the transaction")


@dataclass(frozen=True, slots=True)
class Job:
    """One job for one full-extranonce length, cut from a ``BlockTemplate``.

    ``coinbase_prefix``/``coinbase_suffix`` are the stripped (txid) form used
    for validation; ``wire_prefix``/``wire_suffix`` are what goes into
    NewExtendedMiningJob (unstripped when ``send_unstripped``).
    """

    job_id: int
    template_id: int
    version: int
    version_rolling_allowed: bool
    coinbase_prefix: bytes
    coinbase_suffix: bytes
    wire_prefix: bytes
    wire_suffix: bytes
    merkle_path: tuple[bytes, ...]
    full_extranonce_size: int

    def coinbase(self, full_extranonce: bytes) -> bytes:
        return self.coinbase_prefix + full_extranonce + self.coinbase_suffix

    def merkle_root(self, full_extranonce: bytes) -> bytes:
        return merkle_root_from_path(sha256d(self.coinbase(full_extranonce)), self.merkle_path)


@dataclass(slots=True)
class BlockTemplate:
    """A block being mined: height, the other transactions, and the coinbase outputs."""

    template_id: int
    height: int
    txids: list[bytes]
    settings: PoolSettings
    jobs: dict[int, Job] = field(default_factory=dict)  # full extranonce size -> job

    @classmethod
    def random(cls, template_id: int, height: int, settings: PoolSettings) -> BlockTemplate:
        return cls(template_id, height, [os.urandom(32) for _ in range(settings.fake_tx_count)], settings)

    def witness_commitment(self) -> bytes:
        # The coinbase's wtxid counts as 32 zero bytes; fake txids double as wtxids.
        root = merkle_root_of([bytes(32), *self.txids])
        return sha256d(root + WITNESS_RESERVED_VALUE)

    def coinbase_parts(self, full_extranonce_size: int) -> tuple[bytes, bytes]:
        """The unstripped (segwit) coinbase split around the extranonce."""
        s = self.settings
        script_head = (
            bip34_height_push(self.height)
            + push(s.pool_tag.encode("ascii"))
            + bytes([full_extranonce_size])  # OP_PUSHBYTES_n for the extranonce that follows
        )
        script_len = len(script_head) + full_extranonce_size
        prefix = (
            struct.pack("<I", 2)
            + b"\x00\x01"  # segwit marker and flag
            + b"\x01"  # one input
            + bytes(32)
            + b"\xff\xff\xff\xff"  # null outpoint
            + compact_size(script_len)
            + script_head
        )
        commitment_script = b"\x6a\x24" + _WITNESS_MAGIC + self.witness_commitment()
        outputs = (
            b"\x02"
            + struct.pack("<q", s.coinbase_value_sats)
            + compact_size(len(s.output_script))
            + s.output_script
            + struct.pack("<q", 0)
            + compact_size(len(commitment_script))
            + commitment_script
        )
        suffix = (
            b"\xff\xff\xff\xff"  # input sequence
            + outputs
            + b"\x01\x20"
            + WITNESS_RESERVED_VALUE  # witness: one 32-byte item
            + struct.pack("<I", 0)  # locktime
        )
        return prefix, suffix

    def job_for(self, full_extranonce_size: int, new_job_id: Callable[[], int]) -> Job:
        """The job of this template for one extranonce length.

        Cached, so every channel with that layout (a whole group) shares one job id.
        """
        cached = self.jobs.get(full_extranonce_size)
        if cached is not None:
            return cached
        job_id = new_job_id()
        prefix, suffix = self.coinbase_parts(full_extranonce_size)
        stripped_prefix, stripped_suffix = strip_bip141(prefix, suffix)
        send_raw = self.settings.send_unstripped
        job = Job(
            job_id=job_id,
            template_id=self.template_id,
            version=self.settings.block_version,
            version_rolling_allowed=self.settings.version_rolling_allowed,
            coinbase_prefix=stripped_prefix,
            coinbase_suffix=stripped_suffix,
            wire_prefix=prefix if send_raw else stripped_prefix,
            wire_suffix=suffix if send_raw else stripped_suffix,
            merkle_path=tuple(coinbase_merkle_path(self.txids)),
            full_extranonce_size=full_extranonce_size,
        )
        self.jobs[full_extranonce_size] = job
        return job
