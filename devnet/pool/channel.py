"""Server-side state of one dev-pool mining channel, sans-IO, and SRI-order share validation.

Owns, per channel: the extranonce layout, the current target, the queued
future jobs, the active job and the past jobs of the current chain tip (each
with the target snapshotted when it became active, like SRI), the stale job
ids, the hashes already seen on this chain tip, the pending acknowledgement
batch, the carried fractional work of past acknowledgements and the
channel's counters.

``PoolChannel.submit`` validates a share in exactly the order of the SRI pool
(reference section 6): stale-share, invalid-job-id, bad-extranonce-size,
invalid-share (unparseable coinbase, ntime before the tip), version bits,
network target (block found), job target with duplicate detection,
difficulty-too-low.

``SubmitShares.Success.new_shares_sum`` (a U64) is the sum of the job-target
difficulties of the shares it acknowledges. SRI truncates each batch's float
sum, so a channel below difficulty 1 always reads 0. The dev pool instead
sums in fixed point (``WORK_FRACTION_BITS`` fractional bits) and sends the
integer part, carrying the fraction into the channel's next Success: over any
run of Successes the values sent add up to the floor of the channel's total
accepted difficulty, whatever the difficulty. Each share's difficulty is
rounded *up* to a multiple of 2^-64: a target made from a decimal difficulty
d is ``floor(DIFF1 / d)``, so ``DIFF1 / target`` is a hair above d and ten
shares of 0.3 count exactly 3 (rounding down would make them 2.999...).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from devnet.pool.template import (
    DIFF1_TARGET,
    Job,
    build_header,
    difficulty_from_target,
    hash_value,
    merkle_root_from_path,
    parse_transaction,
    sha256d,
)

VERSION_ROLLING_MASK = 0x1FFFFFE0
MAX_FUTURE_JOBS = 16
MAX_PAST_JOBS = 64
MAX_STALE_JOB_IDS = 1024
WORK_FRACTION_BITS = 64  # fixed-point resolution of the acknowledged work sum
U64_MAX = (1 << 64) - 1

# SubmitShares.Error codes (SRI mining/src/lib.rs)
STALE_SHARE = "stale-share"
INVALID_JOB_ID = "invalid-job-id"
BAD_EXTRANONCE_SIZE = "bad-extranonce-size"
INVALID_SHARE = "invalid-share"
VERSION_ROLLING_NOT_ALLOWED = "version-rolling-not-allowed"
INVALID_NON_ROLLABLE_VERSION_BIT = "invalid-non-rollable-version-bit"
DUPLICATE_SHARE = "duplicate-share"
DIFFICULTY_TOO_LOW = "difficulty-too-low"
INVALID_CHANNEL_ID = "invalid-channel-id"


@dataclass(frozen=True, slots=True)
class ChainTip:
    """What SetNewPrevHash announced: the block being built on."""

    prev_hash: bytes  # header byte order
    nbits: int
    min_ntime: int
    height: int


@dataclass(slots=True)
class ChannelCounters:
    """Per-channel statistics; kept by the pool after the channel is closed."""

    channel_id: int
    user_identity: str
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    last_sequence_number: int | None = None
    blocks_found: int = 0
    accepted_difficulty: float = 0.0  # sum of the job-target difficulty of accepted shares
    acks_sent: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(frozen=True, slots=True)
class ActiveJob:
    job: Job
    target: int  # the channel target when this job became active


@dataclass(frozen=True, slots=True)
class ShareResult:
    """Outcome of one share. ``ack`` is set when a SubmitShares.Success is due:
    (last_sequence_number, new_submits_accepted_count, new_shares_sum)."""

    error: str | None
    block_found: bool = False
    hash: bytes | None = None
    ack: tuple[int, int, int] | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None


class PoolChannel:
    """One standard or extended channel as the pool sees it."""

    def __init__(
        self,
        channel_id: int,
        group_id: int,
        *,
        standard: bool,
        user_identity: str,
        extranonce_prefix: bytes,
        extranonce_size: int,
        target: int,
        max_target: int,
        share_batch_size: int,
        max_seen_shares: int,
    ) -> None:
        self.channel_id = channel_id
        self.group_id = group_id
        self.standard = standard
        self.user_identity = user_identity
        self.extranonce_prefix = extranonce_prefix
        self.extranonce_size = 0 if standard else extranonce_size
        self.target = target
        self.max_target = max_target
        self.share_batch_size = share_batch_size
        self.max_seen_shares = max_seen_shares
        self.future: OrderedDict[int, Job] = OrderedDict()
        self.active: ActiveJob | None = None
        self.past: OrderedDict[int, ActiveJob] = OrderedDict()
        self.stale: OrderedDict[int, None] = OrderedDict()
        self.tip: ChainTip | None = None
        self.seen: dict[bytes, None] = {}
        self.pending_count = 0
        self.pending_last_sequence_number = 0
        # Accepted difficulty not yet sent in a Success, in units of 2^-WORK_FRACTION_BITS:
        # the pending batch plus the fraction carried from earlier Successes.
        self.pending_work = 0
        self.counters = ChannelCounters(channel_id, user_identity)

    @property
    def full_extranonce_size(self) -> int:
        return len(self.extranonce_prefix) + self.extranonce_size

    # -- jobs ------------------------------------------------------------------

    def add_future_job(self, job: Job) -> None:
        self.future[job.job_id] = job
        while len(self.future) > MAX_FUTURE_JOBS:
            self.future.popitem(last=False)

    def add_active_job(self, job: Job) -> None:
        """A job with min_ntime set: active at once; the previous active job becomes past."""
        if self.active is not None:
            self.past[self.active.job.job_id] = self.active
            while len(self.past) > MAX_PAST_JOBS:
                old, _ = self.past.popitem(last=False)
                self._mark_stale(old)
        self.active = ActiveJob(job, self.target)

    def set_new_prev_hash(self, job_id: int, tip: ChainTip) -> bool:
        """Activate future job ``job_id`` on a new chain tip; everything older goes stale."""
        job = self.future.pop(job_id, None)
        if job is None:
            return False
        if self.active is not None:
            self._mark_stale(self.active.job.job_id)
        for old in self.past:
            self._mark_stale(old)
        self.past.clear()
        self.future.clear()
        self.seen.clear()
        self.active = ActiveJob(job, self.target)
        self.tip = tip
        return True

    def _mark_stale(self, job_id: int) -> None:
        self.stale[job_id] = None
        while len(self.stale) > MAX_STALE_JOB_IDS:
            self.stale.popitem(last=False)

    def _lookup(self, job_id: int) -> ActiveJob | None:
        if self.active is not None and self.active.job.job_id == job_id:
            return self.active
        return self.past.get(job_id)

    # -- shares ----------------------------------------------------------------

    def check(
        self, job_id: int, extranonce: bytes | None, ntime: int, nonce: int, version: int, network_target: int
    ) -> tuple[str | None, bool, bytes | None, ActiveJob | None]:
        """Validate without side effects: (error, block_found, hash, job)."""
        if job_id in self.stale:
            return STALE_SHARE, False, None, None
        aj = self._lookup(job_id)
        if aj is None or self.tip is None:
            return INVALID_JOB_ID, False, None, None
        if self.standard:
            full = self.extranonce_prefix
        else:
            if extranonce is None or len(extranonce) != self.extranonce_size:
                return BAD_EXTRANONCE_SIZE, False, None, aj
            full = self.extranonce_prefix + extranonce
        coinbase = aj.job.coinbase(full)
        try:
            parse_transaction(coinbase)
        except ValueError:
            return INVALID_SHARE, False, None, aj
        if ntime < self.tip.min_ntime:
            return INVALID_SHARE, False, None, aj
        mask = VERSION_ROLLING_MASK if aj.job.version_rolling_allowed else 0
        if (version & ~mask) != (aj.job.version & ~mask):
            code = INVALID_NON_ROLLABLE_VERSION_BIT if aj.job.version_rolling_allowed else VERSION_ROLLING_NOT_ALLOWED
            return code, False, None, aj
        root = merkle_root_from_path(sha256d(coinbase), aj.job.merkle_path)
        h = sha256d(build_header(version, self.tip.prev_hash, root, ntime, self.tip.nbits, nonce))
        value = hash_value(h)
        if value <= network_target:
            if h in self.seen:
                return DUPLICATE_SHARE, False, h, aj
            return None, True, h, aj
        if value <= aj.target:
            if h in self.seen:
                return DUPLICATE_SHARE, False, h, aj
            return None, False, h, aj
        return DIFFICULTY_TOO_LOW, False, h, aj

    def submit(
        self,
        sequence_number: int,
        job_id: int,
        extranonce: bytes | None,
        ntime: int,
        nonce: int,
        version: int,
        network_target: int,
    ) -> ShareResult:
        """Validate a share, update the counters and the acknowledgement batch."""
        error, block, h, aj = self.check(job_id, extranonce, ntime, nonce, version, network_target)
        c = self.counters
        c.last_sequence_number = sequence_number
        if error is not None:
            c.rejected[error] += 1
            return ShareResult(error, hash=h)
        assert h is not None and aj is not None
        self.seen[h] = None
        while len(self.seen) > self.max_seen_shares:
            del self.seen[next(iter(self.seen))]
        ack = self.credit(sequence_number, aj.target, block_found=block)
        return ShareResult(None, block_found=block, hash=h, ack=ack)

    def credit(self, sequence_number: int, target: int, *, block_found: bool = False) -> tuple[int, int, int] | None:
        """Count one accepted share of job target ``target``; return the Success due now, if any."""
        c = self.counters
        c.accepted += 1
        c.accepted_difficulty += difficulty_from_target(target)
        if block_found:
            c.blocks_found += 1
        self.pending_count += 1
        self.pending_last_sequence_number = sequence_number
        self.pending_work += -(-(DIFF1_TARGET << WORK_FRACTION_BITS) // max(target, 1))  # ceil
        if block_found or self.pending_count >= self.share_batch_size:
            return self.take_ack()
        return None

    def take_ack(self) -> tuple[int, int, int] | None:
        """Drain the pending batch: (last accepted sequence number, count, work sum).

        The work sum is the integer part of the pending work; the fraction
        stays in ``pending_work`` for the next Success (see the module docstring).
        """
        if self.pending_count == 0:
            return None
        whole = min(self.pending_work >> WORK_FRACTION_BITS, U64_MAX)
        ack = (self.pending_last_sequence_number, self.pending_count, whole)
        self.pending_work -= whole << WORK_FRACTION_BITS
        self.pending_count = 0
        self.counters.acks_sent += 1
        return ack
