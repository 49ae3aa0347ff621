"""The boundary between the proxy and monitoring.

This module owns the plain, immutable records the proxy hands to monitoring and
the ``MonitoringSource`` protocol the proxy implements. Nothing here knows
about HTTP, Prometheus or asyncio tasks; nothing in monitoring reaches past
this boundary into live proxy objects.

Rules for implementers (the proxy):

* Every method except ``worker_stats`` is synchronous and cheap: it copies
  numbers out of live objects, it never awaits, never takes a lock that the
  share path holds for long, never does I/O.
* ``sv1_clients()`` may describe 10,000+ connections. The snapshot cache
  consumes it in slices and yields to the event loop between slices, so the
  iterable must stay valid while other tasks run: return a generator over a
  *copy* of the session list (``list(self._sessions.values())`` is a cheap
  shallow copy) that builds each ``Sv1ClientState`` lazily. A generator over
  the live dict would raise "dictionary changed size during iteration".
* Units follow docs/NAMES.md: ``hashrate`` in H/s, times in unix seconds,
  targets as 256-bit integers, byte strings as ``bytes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class UpstreamState:
    """The SV2 upstream connection as a whole."""

    connected: bool  # TCP + Noise handshake + SetupConnection done
    channel_open: bool  # at least one extended channel is open upstream
    address: str | None  # "host:port" of the current (or last) upstream; None if never connected
    since: float | None  # unix seconds when ``connected`` last changed; None if never


@dataclass(frozen=True, slots=True)
class UpstreamChannelState:
    """One open upstream extended channel.

    Named ``UpstreamChannelState`` rather than ``ChannelState`` because
    ``tproxy.upstream.channel.ChannelState`` already names the live, mutable channel.
    """

    channel_id: int
    user_identity: str
    nominal_hashrate: float | None  # H/s announced upstream; None when the proxy does not track it
    target: int  # current upstream target (256-bit integer)
    extranonce_prefix: bytes
    full_extranonce_size: int  # bytes after the prefix (the SV2 ``extranonce_size``)
    rollable_extranonce_size: int  # bytes the miners roll (extranonce1 + extranonce2)
    version_rolling: bool
    shares_acknowledged: int  # counted from SubmitShares.Success new_submits_accepted_count
    shares_submitted: int  # forwarded upstream
    shares_rejected: int  # SubmitShares.Error received
    shares_rejected_by_reason: Mapping[str, int]  # SV2 error code -> count
    acknowledged_work_sum: int  # sum of SubmitShares.Success new_shares_sum
    validated_work_sum: float  # summed difficulty of the shares forwarded
    best_diff: float  # best share difficulty forwarded on this channel
    blocks_found: int
    verdicts_pending: int = 0  # forwarded shares awaiting the pool's verdict now
    verdicts_timed_out: int = 0  # forwarded shares never verdicted within proxy.verdict_timeout_s


@dataclass(frozen=True, slots=True)
class Sv1ClientState:
    """One SV1 connection (a miner)."""

    client_id: int
    channel_id: int | None  # upstream channel serving it; None before it has one
    worker_name: str  # SV1 username exactly as sent in mining.authorize ("" before authorize)
    user_identity: str  # identity its channel uses upstream ("" when none)
    target: int  # the miner's current SV1 share target (256-bit integer)
    hashrate: float | None  # vardiff estimate in H/s; None before the first estimate
    extranonce1: bytes
    extranonce2_len: int
    version_rolling_mask: int | None  # negotiated in mining.configure; None if not configured
    version_rolling_min_bit: int | None  # the miner's min-bit-count; None if not sent
    connection_ip: str
    connected_at: float  # unix seconds
    shares_accepted: int
    shares_rejected: int
    stable_hashrate: bool = False  # vardiff considers the estimate settled
    last_share_at: float | None = None  # unix seconds of the last submit; None if none yet
    user_agent: str = ""  # from mining.subscribe; "" when the miner sent none


@dataclass(frozen=True, slots=True)
class ShareLogState:
    """Counters of the share-log pipeline (queue -> batcher -> ClickHouse, spool on failure).

    Counters named like totals (``written``, ``spooled``...) only grow for the
    life of the process.
    """

    queued: int  # records in the in-memory queue now
    written: int  # rows written to ClickHouse (directly or by replay)
    spooled: int  # rows written to the disk spool because the database failed
    replayed: int  # spooled rows later written to ClickHouse
    retried: int  # batch insert retries
    failed_batches: int  # batch inserts that failed (and were spooled)
    dropped: int  # records lost (queue and spool both full); should stay 0
    oldest_unwritten_age_s: float  # age of the oldest record not yet in ClickHouse; 0.0 if none
    db_up: bool  # the last insert (or probe) succeeded
    spool_pending: int = 0  # rows in the spool not yet replayed
    events_by_type: Mapping[str, int] = field(default_factory=dict)  # events emitted since start, per type
    events_written: int = 0  # event rows written to ClickHouse
    events_pending: int = 0  # event rows in memory or in the spool


@dataclass(frozen=True, slots=True)
class EventEntry:
    """One row of the share log's ``events`` table (worker or upstream event)."""

    at: float  # unix seconds (millisecond precision)
    run_id: int
    event_seq: int
    type: str
    worker_name: str  # "" for upstream events and before authorize
    client_id: int
    address: str
    user_agent: str
    reason: str
    old_difficulty: float
    difficulty: float
    channel_id: int
    detail: str


@dataclass(frozen=True, slots=True)
class WorkerWindowStats:
    """One worker's shares over one trailing window, from the share log's aggregate."""

    worker_name: str
    window_s: int  # one of the windows the cache asked for (300, 3600, 86400)
    shares_accepted: int
    shares_rejected: int
    accepted_difficulty_sum: float  # sum of target_difficulty over accepted shares
    last_share_at: float | None = None  # unix seconds
    measured_s: float | None = None  # exact seconds the counts cover (None: window_s)


class MonitoringSource(Protocol):
    """The read-only interface the proxy implements for monitoring.

    Called only by ``SnapshotCache``. It is the whole of what monitoring knows
    about the proxy: monitoring never reaches into proxy objects or their
    private attributes, only calls these methods and reads the frozen records
    they return.
    """

    def upstream(self) -> UpstreamState:
        """Current upstream connection state."""
        ...

    def channels(self) -> Sequence[UpstreamChannelState]:
        """Every open upstream extended channel (usually one when aggregating)."""
        ...

    def sv1_clients(self) -> Iterable[Sv1ClientState]:
        """Every SV1 connection; see the module docstring for the iteration rule."""
        ...

    def share_log(self) -> ShareLogState | None:
        """Share-log pipeline counters; None when the share log is not configured."""
        ...

    async def worker_stats(self, windows: Sequence[int]) -> Sequence[WorkerWindowStats]:
        """Per-worker shares for each trailing window (seconds) in ``windows``.

        May query the database. Called on its own, slower interval with a
        timeout; return one entry per (worker, window) that had any share.
        Raise (any exception) when the data is unavailable.
        """
        ...

    async def events(
        self, *, worker: str | None, event_type: str | None, since: float | None, offset: int, limit: int
    ) -> tuple[int, Sequence[EventEntry]]:
        """(total matching, one page newest first) of the events table. May query the
        database; raise (any exception) when it is unavailable."""
        ...
