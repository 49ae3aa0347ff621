"""The ShareRecord: one row per share the proxy received, valid or not.

This is the contract between the share path and the share log
(tproxy.shares). The SV1 hub derives one from every ``tproxy.events.Share``
with ``ShareRecord.from_share`` (the only place a share's fields become
columns) and hands it to the sink without awaiting anything. Names follow
docs/NAMES.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from tproxy.events import VERDICT_ACCEPTED, Share

__all__ = ["EVENT_TYPES", "VERDICT_ACCEPTED", "EventRecord", "PoolVerdictRecord", "ShareRecord"]


class _ShareRow(NamedTuple):
    received_at_ms: int  # unix time in milliseconds, when the submit line was parsed
    instance_id: str
    share_seq: int  # per-instance monotonic counter; (instance_id, share_seq) is unique
    worker_name: str
    client_id: int
    channel_id: int  # upstream channel (0 if none)
    sequence_number: int  # upstream sequence number (0 if not forwarded)
    sv1_job_id: str
    job_id: int  # upstream job id (0 if the SV1 job was unknown)
    nonce: int
    ntime: int
    version: int  # full block version the share hashed with (0 if unknown)
    extranonce: str  # hex of extranonce1 || extranonce2 as the miner rolled it
    share_hash: str  # display hex ("" if it could not be computed)
    target_difficulty: float
    share_difficulty: float  # 0.0 if it could not be computed
    verdict: str  # "accepted" or a rejection reason (docs/NAMES.md)
    forwarded: bool


class ShareRecord(_ShareRow):
    """One share row (the fields of ``_ShareRow``, in column order).

    A NamedTuple, like ``tproxy.events.Share``, because one is built for every
    share: as immutable as the frozen dataclass it was, and cheaper to build (a
    frozen dataclass stores each of the 18 fields through ``object.__setattr__``;
    ``from_share`` went from 2.9 to 1.3 us, measured with timeit).
    """

    __slots__ = ()

    COLUMNS: ClassVar[tuple[str, ...]] = _ShareRow._fields

    def as_row(self) -> tuple[object, ...]:
        return tuple(self)

    @classmethod
    def from_share(
        cls, share: Share, *, instance_id: str, share_seq: int, forwarded_to: tuple[int, int] | None
    ) -> ShareRecord:
        """The row of one share; ``forwarded_to`` is (channel_id, sequence_number) if it went upstream."""
        job = share.job
        if forwarded_to is not None:
            channel_id, sequence_number = forwarded_to
        else:
            channel_id, sequence_number = (job.channel_id if job is not None else 0), 0
        return cls(
            share.received_at_ms,
            instance_id,
            share_seq,
            share.worker_name,
            share.client_id,
            channel_id,
            sequence_number,
            share.sv1_job_id[:64],
            job.job_id if job is not None else 0,
            share.nonce,
            share.ntime,
            share.version,
            (share.extranonce1 + share.extranonce2).hex(),
            share.share_hash[::-1].hex(),
            share.target_difficulty,
            share.share_difficulty,
            share.verdict,
            forwarded_to is not None,
        )


@dataclass(frozen=True, slots=True)
class PoolVerdictRecord:
    """The pool's later answer for one forwarded share, appended (never an UPDATE).

    SubmitShares.Success acknowledges a range of sequence numbers; the channel manager
    expands it into one record (one ``tproxy.events.Verdict``) per share it forwarded in that range.
    """

    received_at_ms: int
    instance_id: str
    channel_id: int
    sequence_number: int
    share_seq: int
    pool_verdict: str  # "accepted" or the SV2 error code

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "received_at_ms",
        "instance_id",
        "channel_id",
        "sequence_number",
        "share_seq",
        "pool_verdict",
    )

    def as_row(self) -> tuple[object, ...]:
        return tuple(getattr(self, c) for c in self.COLUMNS)


# Event types (the ``event_type`` column of the ``events`` table; docs/SHARE_LOG.md).
EVENT_CONNECT = "connect"  # a TCP connection was accepted (no worker name yet)
EVENT_AUTHORIZE = "authorize"  # the first worker of a connection authorized (user agent, address)
EVENT_DISCONNECT = "disconnect"  # the connection ended; ``reason`` says why
EVENT_DIFFICULTY = "difficulty"  # the worker's difficulty changed (old, new; ``reason`` vardiff/suggest/floor/memory)
EVENT_OFFLINE = "offline"  # a connected worker sent no share for ``events.worker_silence_s``
EVENT_ONLINE = "online"  # a worker marked offline by silence sent a share again
EVENT_POOL_REJECT_BURST = "pool_reject_burst"  # the pool rejected ``reject_burst_count`` shares of a worker in a row
EVENT_BLOCK_FOUND = "block_found"  # a share met the network target of its job
EVENT_UPSTREAM_UP = "upstream_up"  # a pool connection is up (``detail`` = endpoint; ``reason`` first/same/switch)
EVENT_UPSTREAM_DOWN = "upstream_down"  # the pool connection was lost (``reason``)
EVENT_TYPES: tuple[str, ...] = (
    EVENT_CONNECT, EVENT_AUTHORIZE, EVENT_DISCONNECT, EVENT_DIFFICULTY, EVENT_OFFLINE, EVENT_ONLINE,
    EVENT_POOL_REJECT_BURST, EVENT_BLOCK_FOUND, EVENT_UPSTREAM_UP, EVENT_UPSTREAM_DOWN,
)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One thing that happened to a worker or to the upstream: one row of ``events``.

    Worker events carry the worker's whole state after the event (``online``,
    ``since_ms``, ``last_share_ms``, ``difficulty``, user agent, address): the
    ``worker_state`` table is a projection of these rows (materialized view), so
    it needs no second write path. Upstream events have ``worker_name`` "".
    """

    time_ms: int
    instance_id: str
    event_seq: int  # per-run monotonic; (instance_id, run_id, event_seq) is unique
    event_type: str
    worker_name: str = ""
    client_id: int = 0
    address: str = ""
    user_agent: str = ""
    reason: str = ""
    old_difficulty: float = 0.0  # difficulty events only
    difficulty: float = 0.0  # the worker's difficulty after the event
    channel_id: int = 0
    detail: str = ""
    online: bool = False
    since_ms: int = 0  # when the worker went online/offline (the state it is in)
    last_share_ms: int = 0  # its last share (0: none yet)

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "time_ms", "instance_id", "event_seq", "event_type", "worker_name", "client_id", "address",
        "user_agent", "reason", "old_difficulty", "difficulty", "channel_id", "detail", "online",
        "since_ms", "last_share_ms",
    )

    def as_row(self) -> tuple[object, ...]:
        return tuple(getattr(self, c) for c in self.COLUMNS)
