"""The frozen types that cross the seam between the proxy's two directions.

The proxy has a downstream side (``tproxy.sv1``: SV1 sockets, sessions, the
hub) and an upstream side (``tproxy.upstream``: the pool connection, the
supervisor, channels, the channel manager). They never import each other;
everything one tells the other is one of the types below, and the runtime
wires the two ``*Side`` protocols at the bottom of this module together.

Direction of each type:

* upstream -> sv1: ``Job``, ``Verdict``, ``ChannelAssigned``,
  ``DifficultyFloor``, ``JobsRetired``, ``UpstreamUp``, ``UpstreamDown``
  (together ``UpstreamEvent``), delivered to ``DownstreamSide.on_upstream_event``;
* sv1 -> upstream: ``Share`` (``UpstreamSide.forward``), ``MinerReady`` and
  ``MinerGone`` (``UpstreamSide.on_miner``);
* sv1 -> share log: every ``Share`` (``tproxy.shares.record.ShareRecord.from_share``)
  and every ``Verdict``.

Every type is immutable: frozen slots dataclasses, and a NamedTuple for the
per-share ``Share``. A ``Job`` is built once and shared by every miner.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

VERDICT_ACCEPTED = "accepted"
"""The verdict of a share that met its target (local) or that the pool accepted."""
VERDICT_TIMEOUT = "timeout"
"""The pool verdict of a forwarded share the pool never answered: none came within
``proxy.verdict_timeout_s``, or its channel closed first (no answer can come any more)."""
VERDICT_NTIME_OUT_OF_RANGE = "ntime-out-of-range"
"""The local verdict of a share whose ntime is before its job's or more than 2 h ahead of now."""

MAX_NTIME_AHEAD_S = 7200
"""Bitcoin's rule: a block's time may be at most two hours past the (network-adjusted) clock."""


def rolled_ntime(ntime: int, sent_at: float, now: float) -> int | None:
    """The ntime for a re-issued copy of work first sent at ``sent_at`` with ``ntime``.

    Firmware that rolls ntime itself follows the clock (bfgminer: job ntime plus
    the seconds since the notify, up to +60), so by ``now`` it may have hashed
    every ntime up to ``ntime + elapsed``. One second past that is new content
    even for firmware that restarts its extranonce2 counter on every notify.
    Never backwards, never more than ``MAX_NTIME_AHEAD_S`` past ``now``
    (None then: wait for the pool's next job instead).
    """
    rolled = ntime + max(int(now - sent_at), 0) + 1
    return rolled if rolled <= now + MAX_NTIME_AHEAD_S else None


@dataclass(frozen=True, slots=True)
class Job:
    """upstream -> sv1: one piece of work, ready to notify and to validate shares against.

    Built by ``tproxy.upstream.channel.ChannelState`` from NewExtendedMiningJob
    and SetNewPrevHash. ``upstream_target`` is the channel target in force
    when the job was issued: a share is forwarded only if it meets it.
    """

    channel_id: int
    job_id: int  # upstream job id
    version: int
    version_rolling_allowed: bool
    merkle_path: tuple[bytes, ...]
    coinb1: bytes  # stripped coinbase prefix ‖ upstream extranonce_prefix ‖ pad
    coinb2: bytes  # stripped coinbase suffix
    pad: bytes  # zero bytes that lead the SV2 rollable extranonce
    prev_hash: bytes  # header byte order
    nbits: int
    ntime: int
    upstream_target: int
    generation: int  # chain-tip generation this job belongs to
    clean: bool  # first job of a new chain tip


class Share(NamedTuple):
    """sv1 -> upstream and share log: one mining.submit with its local verdict.

    Every submit becomes a Share, valid or not (``verdict`` is "accepted" or a
    rejection reason from docs/NAMES.md). Fields the request did not get far
    enough to supply are empty: ``job`` is None for an unknown job id,
    ``share_hash`` is b"" when no hash was computed.

    A NamedTuple rather than a frozen dataclass because one is built for every
    share: it is as immutable and slot-less, and about 3.5x cheaper to build
    (0.55 vs 1.9 us measured; a frozen dataclass sets each field through
    ``object.__setattr__``).
    """

    received_at_ms: int  # unix ms when the submit was handled
    client_id: int
    worker_name: str
    sv1_job_id: str
    job: Job | None
    extranonce1: bytes
    extranonce2: bytes
    ntime: int
    nonce: int
    version: int  # full block version the share hashed with (0 if unknown)
    share_hash: bytes  # header hash, internal byte order
    share_difficulty: float
    target_difficulty: float  # difficulty of the target the share was checked against
    verdict: str

    @property
    def accepted(self) -> bool:
        return self.verdict == VERDICT_ACCEPTED


@dataclass(frozen=True, slots=True)
class Verdict:
    """upstream -> sv1 and share log: the pool's answer for one forwarded share."""

    received_at_ms: int
    client_id: int
    worker_name: str
    channel_id: int
    sequence_number: int
    share_seq: int  # the proxy's share_seq of the share (joins the share log row)
    verdict: str  # "accepted" or the pool's SV2 error code

    @property
    def accepted(self) -> bool:
        return self.verdict == VERDICT_ACCEPTED


@dataclass(frozen=True, slots=True)
class ChannelAssigned:
    """upstream -> sv1: a channel now serves one miner, or every ready miner (client_id None).

    Sent synchronously when the pool confirms the channel, before its first
    job. ``floor`` is the lowest difficulty the channel lets its miners have.
    """

    channel_id: int
    client_id: int | None
    user_identity: str
    floor: float


@dataclass(frozen=True, slots=True)
class DifficultyFloor:
    """upstream -> sv1: the pool's SetTarget moved a channel's difficulty floor."""

    channel_id: int
    floor: float


@dataclass(frozen=True, slots=True)
class JobsRetired:
    """upstream -> sv1: every job of the channel is stale; ``channel_closed`` if it is gone too."""

    channel_id: int
    channel_closed: bool


@dataclass(frozen=True, slots=True)
class UpstreamUp:
    """upstream -> sv1: a pool is connected and its channels are open (the outage is over)."""

    endpoint: str


@dataclass(frozen=True, slots=True)
class UpstreamDown:
    """upstream -> sv1: the pool connection is lost (miners stay; the outage clock starts)."""

    reason: str


@dataclass(frozen=True, slots=True)
class MinerReady:
    """sv1 -> upstream: a miner is subscribed and authorized and wants work."""

    client_id: int
    worker_name: str


@dataclass(frozen=True, slots=True)
class MinerGone:
    """sv1 -> upstream: a miner disconnected."""

    client_id: int


UpstreamEvent = (
    Job | Verdict | ChannelAssigned | DifficultyFloor | JobsRetired | UpstreamUp | UpstreamDown
)
MinerEvent = MinerReady | MinerGone


class UpstreamSide(Protocol):
    """What the SV1 hub asks of the upstream side (the channel manager implements it)."""

    def forward(self, share: Share, share_seq: int) -> tuple[int, int] | None:
        """Submit an accepted share upstream; (channel_id, sequence_number), or None if no live channel."""

    def on_miner(self, event: MinerEvent) -> None: ...


class DownstreamSide(Protocol):
    """What the channel manager asks of the SV1 side (the hub implements it)."""

    def on_upstream_event(self, event: UpstreamEvent) -> None: ...

    def demand(self, client_id: int | None) -> tuple[float, int]:
        """(nominal hashrate, hardest target) of one miner, or of every ready miner if None."""

    def demand_steps(self, client_id: int | None) -> Generator[None, None, tuple[float, int]]:
        """``demand``, yielding between miners (for a tick spread over several loop iterations)."""
