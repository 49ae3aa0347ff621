"""Client-side state of one upstream SV2 extended channel, sans-IO.

Owns what the pool told us about a channel: its extranonce prefix and size,
its target, the queued future jobs, the active chain tip, and the sequence
numbers of the shares we forwarded. It turns upstream job messages into
immutable ``tproxy.events.Job`` objects the SV1 side can notify, following the SRI client
channel rules (reference section 7):

* a job with ``min_ntime`` None is *future*: stored, never notified;
* ``SetNewPrevHash`` activates a future job, makes every older job stale
  (the chain ``generation`` goes up) and drops the other future jobs;
* the upstream target is snapshotted when a job becomes active, so a later
  ``SetTarget`` does not change the target of the active job;
* each job remembers the extranonce prefix it was created under.

Extranonce layout. The SV2 coinbase is
``prefix ‖ extranonce_prefix ‖ rollable ‖ suffix`` where ``rollable`` is
``extranonce_size`` bytes. We hand the SV1 miner ``coinb1 = prefix ‖
extranonce_prefix ‖ pad`` and an ``extranonce1`` that is purely local
(``extranonce1_size`` bytes chosen by the proxy), so that a miner's
extranonce1 survives an upstream reconnect, failover or SetExtranoncePrefix:
only coinb1 changes, and coinb1 comes with every notify. ``pad`` is the zero
slack when the pool grants more rollable bytes than we need.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from sv2 import work
from sv2.messages import (
    NewExtendedMiningJob,
    OpenExtendedMiningChannelSuccess,
    SetExtranoncePrefix,
    SetNewPrevHash,
    SetTarget,
)
from tproxy.errors import UpstreamError
from tproxy.events import Job

MAX_FUTURE_JOBS = 16


class ChannelLayoutError(UpstreamError):
    """The pool granted fewer rollable extranonce bytes than the proxy needs."""


@dataclass(slots=True)
class _FutureJob:
    msg: NewExtendedMiningJob
    extranonce_prefix: bytes


@dataclass(slots=True)
class ChannelState:
    """What we know about one open extended channel (plus its group id)."""

    channel_id: int
    group_channel_id: int
    extranonce_prefix: bytes
    extranonce_size: int
    target: int
    extranonce1_size: int
    extranonce2_size: int
    prev_hash: bytes | None = None
    nbits: int = 0
    min_ntime: int = 0
    generation: int = 0
    active: Job | None = None
    next_sequence_number: int = 0
    _future: OrderedDict[int, _FutureJob] = field(default_factory=OrderedDict)
    # Jobs whose SetNewPrevHash we have not seen yet but which arrived active
    # (min_ntime set) before any chain tip: SRI pools never do this, but a pool
    # that does should not crash us.
    dropped_jobs: int = 0

    @classmethod
    def from_open_success(
        cls, msg: OpenExtendedMiningChannelSuccess, *, extranonce1_size: int, extranonce2_size: int
    ) -> ChannelState:
        needed = extranonce1_size + extranonce2_size
        if msg.extranonce_size < needed:
            raise ChannelLayoutError(
                f"pool granted extranonce_size={msg.extranonce_size}, "
                f"need {needed} (extranonce1 {extranonce1_size} + extranonce2 {extranonce2_size})"
            )
        return cls(
            channel_id=msg.channel_id,
            group_channel_id=msg.group_channel_id,
            extranonce_prefix=bytes(msg.extranonce_prefix),
            extranonce_size=msg.extranonce_size,
            target=work.target_from_bytes(msg.target),
            extranonce1_size=extranonce1_size,
            extranonce2_size=extranonce2_size,
        )

    @property
    def pad(self) -> bytes:
        return bytes(self.extranonce_size - self.extranonce1_size - self.extranonce2_size)

    def addressed_to(self, channel_id: int) -> bool:
        return channel_id in (self.channel_id, self.group_channel_id)

    # -- upstream events -------------------------------------------------

    def on_new_extended_job(self, msg: NewExtendedMiningJob) -> Job | None:
        """Store a future job, or return the job to notify if it is active now."""
        if msg.min_ntime is None:
            self._future[msg.job_id] = _FutureJob(msg, self.extranonce_prefix)
            while len(self._future) > MAX_FUTURE_JOBS:
                self._future.popitem(last=False)
            return None
        if self.prev_hash is None:
            self.dropped_jobs += 1
            return None
        job = self._build(msg, self.extranonce_prefix, ntime=msg.min_ntime, clean=False)
        self.active = job
        return job

    def on_set_new_prev_hash(self, msg: SetNewPrevHash) -> Job | None:
        """Activate the named future job; returns it (clean), or None if unknown."""
        fut = self._future.pop(msg.job_id, None)
        self.prev_hash = bytes(msg.prev_hash)
        self.nbits = msg.nbits
        self.min_ntime = msg.min_ntime
        self.generation += 1
        self._future.clear()
        if fut is None:
            self.active = None
            return None
        job = self._build(fut.msg, fut.extranonce_prefix, ntime=msg.min_ntime, clean=True)
        self.active = job
        return job

    def on_set_target(self, msg: SetTarget) -> None:
        self.target = work.target_from_bytes(msg.maximum_target)

    def on_set_extranonce_prefix(self, msg: SetExtranoncePrefix) -> None:
        self.extranonce_prefix = bytes(msg.extranonce_prefix)

    def take_sequence_number(self) -> int:
        n = self.next_sequence_number
        self.next_sequence_number = (n + 1) & 0xFFFFFFFF
        return n

    # -- helpers -----------------------------------------------------------

    def _build(self, msg: NewExtendedMiningJob, prefix: bytes, *, ntime: int, clean: bool) -> Job:
        assert self.prev_hash is not None
        cb_prefix, cb_suffix = work.strip_bip141(bytes(msg.coinbase_tx_prefix), bytes(msg.coinbase_tx_suffix))
        pad = self.pad
        return Job(
            channel_id=self.channel_id,
            job_id=msg.job_id,
            version=msg.version,
            version_rolling_allowed=msg.version_rolling_allowed,
            merkle_path=tuple(bytes(n) for n in msg.merkle_path),
            coinb1=cb_prefix + prefix + pad,
            coinb2=cb_suffix,
            pad=pad,
            prev_hash=self.prev_hash,
            nbits=self.nbits,
            ntime=ntime,
            upstream_target=self.target,
            generation=self.generation,
            clean=clean,
        )
