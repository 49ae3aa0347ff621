"""The proxy's side of the monitoring boundary: ``MonitoringSource`` over live state.

Copies numbers out of a ``tproxy.view.ProxyView`` (SV1 miners, upstream
channels, upstream status, the clock) and the share log into the immutable
records of ``monitoring.source``. Cheap and synchronous (except
``worker_stats``, which reads the share log's per-minute aggregate).

A channel's counters are its lifetime totals (``LiveChannel.lifetime``: they
survive reconnects to the pool, so exported counters never reset). Figures
``monitoring.source.UpstreamChannelState`` may not have yet (``CHANNEL_EXTRAS``:
verdicts awaited and timed out, the per-connection counters) are filled in only
when the record declares them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitoring.source import (
    EventEntry,
    ShareLogState,
    Sv1ClientState,
    UpstreamChannelState,
    UpstreamState,
    WorkerWindowStats,
)

if TYPE_CHECKING:
    from tproxy.shares.pipeline import ShareLog
    from tproxy.upstream.manager import LiveChannel
    from tproxy.view import ProxyView

CHANNEL_EXTRAS = (
    "verdicts_pending",  # forwarded shares awaiting the pool's verdict now
    "verdicts_timed_out",  # lifetime: forwarded shares the pool never answered
    "connection_shares_submitted",  # since this channel opened (this pool connection)
    "connection_shares_acknowledged",
    "connection_shares_rejected",
)
_CHANNEL_FIELDS = frozenset(f.name for f in dataclasses.fields(UpstreamChannelState))


def channel_extras(ch: LiveChannel, lifetime_timed_out: int) -> dict[str, int]:
    """The ``CHANNEL_EXTRAS`` of one channel."""
    stats = ch.stats
    return {
        "verdicts_pending": ch.verdicts_pending,
        "verdicts_timed_out": lifetime_timed_out,
        "connection_shares_submitted": stats.shares_submitted,
        "connection_shares_acknowledged": stats.shares_acknowledged,
        "connection_shares_rejected": stats.shares_rejected,
    }


class ShareLogReadings:
    """The share-log half of ``MonitoringSource`` (the same for one process and for workers)."""

    share_log_: ShareLog | None
    event_counts: Callable[[], Mapping[str, int]] | None = None  # events emitted per type

    def share_log(self) -> ShareLogState | None:
        if self.share_log_ is None:
            return None
        st = self.share_log_.stats()
        return ShareLogState(
            queued=st.queued,
            written=st.written,
            spooled=st.spooled,
            replayed=st.replayed,
            retried=st.retried,
            failed_batches=st.failed_batches,
            dropped=st.dropped,
            oldest_unwritten_age_s=st.oldest_unwritten_age_s,
            db_up=st.db_up,
            spool_pending=st.spool_pending,
            events_by_type=self._event_counts(),
            events_written=st.events_written,
            events_pending=st.events_pending,
        )

    def _event_counts(self) -> dict[str, int]:
        from tproxy.shares.record import EVENT_TYPES

        counts = self.event_counts() if self.event_counts is not None else {}
        out = {t: counts.get(t, 0) for t in EVENT_TYPES}  # every type, 0 included: stable series
        return out

    async def events(
        self, *, worker: str | None, event_type: str | None, since: float | None, offset: int, limit: int
    ) -> tuple[int, Sequence[EventEntry]]:
        if self.share_log_ is None:
            return 0, []
        since_ms = int(since * 1000) if since is not None else None
        total, rows = await self.share_log_.events(
            worker=worker, event_type=event_type, since_ms=since_ms, offset=offset, limit=limit
        )
        return total, [
            EventEntry(ms / 1000, int(run), int(seq), t, w, int(cid), a, ua, why, float(od), float(d), int(ch), det)
            for ms, run, seq, t, w, cid, a, ua, why, od, d, ch, det in rows
        ]

    def sv1_clients(self) -> Iterator[Sv1ClientState]:
        raise NotImplementedError  # both sources implement it; worker_stats reads connection times

    def now(self) -> float:
        """The clock the connection times were taken with."""
        return time.time()

    def _connected_since(self) -> dict[str, float]:
        """worker_name -> when its oldest live connection was made."""
        since: dict[str, float] = {}
        for c in self.sv1_clients():
            if c.worker_name:
                since[c.worker_name] = min(c.connected_at, since.get(c.worker_name, c.connected_at))
        return since

    async def worker_stats(self, windows: Sequence[int]) -> Sequence[WorkerWindowStats]:
        """Per-worker figures over each window. A worker that has been connected for less than
        the window is measured over the time it was there: from the earlier of its oldest live
        connection and its first share in the window (a reconnect keeps the earlier shares'
        time), so neither a fresh start-up nor a new miner reads low (issue 10.4). A worker
        that is gone keeps the whole window."""
        if self.share_log_ is None:
            return []
        since = self._connected_since()
        out: list[WorkerWindowStats] = []
        for window_s in windows:
            minutes = max(1, window_s // 60)
            for w in await self.share_log_.worker_hashrate(minutes):
                measured = w.window_s  # minute-aligned: between window_s - 60 and window_s
                connected = since.get(w.worker_name)
                if connected is not None:
                    start = connected if w.first_share_at is None else min(connected, w.first_share_at)
                    measured = max(1.0, min(measured, self.now() - start))
                out.append(
                    WorkerWindowStats(
                        worker_name=w.worker_name,
                        window_s=window_s,
                        shares_accepted=w.accepted_shares,
                        shares_rejected=w.shares - w.accepted_shares,
                        accepted_difficulty_sum=w.accepted_difficulty,
                        last_share_at=w.last_share_at,
                        measured_s=measured,
                    )
                )
        return out


class ProxyMonitoringSource(ShareLogReadings):
    """Implements ``monitoring.source.MonitoringSource`` for a running proxy."""

    def __init__(
        self,
        view: ProxyView,
        share_log: ShareLog | None,
        event_counts: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.view = view
        self.share_log_ = share_log
        self.event_counts = event_counts  # events emitted per type (the hub's WorkerEvents.counts)

    def now(self) -> float:
        return self.view.now()

    def upstream(self) -> UpstreamState:
        st = self.view.upstream_status()
        return UpstreamState(
            connected=st.connected,
            channel_open=any(True for _ in self.view.channels()),
            address=st.address,
            since=st.since,
        )

    def channels(self) -> Sequence[UpstreamChannelState]:
        out = []
        for ch in list(self.view.channels()):
            st, stats = ch.state, ch.lifetime()
            extras: dict[str, Any] = {
                k: v for k, v in channel_extras(ch, stats.verdicts_timed_out).items() if k in _CHANNEL_FIELDS
            }
            out.append(
                UpstreamChannelState(
                    channel_id=st.channel_id,
                    user_identity=stats.user_identity,
                    nominal_hashrate=stats.nominal_hashrate,
                    target=st.target,
                    extranonce_prefix=st.extranonce_prefix,
                    full_extranonce_size=st.extranonce_size,
                    rollable_extranonce_size=st.extranonce1_size + st.extranonce2_size,
                    version_rolling=st.active.version_rolling_allowed if st.active is not None else True,
                    shares_acknowledged=stats.shares_acknowledged,
                    shares_submitted=stats.shares_submitted,
                    shares_rejected=stats.shares_rejected,
                    shares_rejected_by_reason=dict(stats.shares_rejected_by_reason),
                    acknowledged_work_sum=stats.acknowledged_work_sum,
                    validated_work_sum=stats.validated_work_sum,
                    best_diff=stats.best_diff,
                    blocks_found=stats.blocks_found,
                    **extras,
                )
            )
        return out

    def sv1_clients(self) -> Iterator[Sv1ClientState]:
        miners = list(self.view.miners())
        identities = {ch.state.channel_id: ch.stats.user_identity for ch in self.view.channels()}
        clock = self.view.now()

        def gen() -> Iterator[Sv1ClientState]:
            for m in miners:
                s = m.session
                # Estimate as of now, not as of the miner's last share: with vardiff off
                # nothing else moves vardiff's clock, and a miner that went silent kept
                # its last hashrate forever.
                est = s.hashrate(clock)
                c = s.counters
                yield Sv1ClientState(
                    client_id=s.client_id,
                    channel_id=m.channel_id,
                    worker_name=s.worker_name,
                    user_identity=identities.get(m.channel_id, "") if m.channel_id is not None else "",
                    target=s.target,
                    hashrate=est if c.accepted else None,
                    extranonce1=s.extranonce1,
                    extranonce2_len=s.extranonce2_size,
                    version_rolling_mask=s.version_mask,
                    version_rolling_min_bit=s.version_rolling_min_bit,
                    connection_ip=s.peer.rsplit(":", 1)[0],
                    connected_at=s.connected_at,
                    shares_accepted=c.accepted,
                    shares_rejected=c.rejected,
                    stable_hashrate=c.accepted >= 10,
                    last_share_at=c.last_share_at or None,
                    user_agent=s.user_agent,
                )

        return gen()


@dataclass(frozen=True, slots=True)
class WorkerView:
    """What one worker process reports of itself (``tproxy.workers``), ids already made cluster-unique."""

    upstream: UpstreamState
    channels: tuple[UpstreamChannelState, ...]
    clients: tuple[Sv1ClientState, ...]


class ClusterMonitoringSource(ShareLogReadings):
    """``MonitoringSource`` of the parent of several workers: their last reported views, merged.

    Each worker sends a ``WorkerView`` every refresh interval; a worker that exits is dropped
    until its replacement reports. The upstream counts as connected when every reporting
    worker is connected (a worker without its pool leaves its miners without work).
    """

    def __init__(self, share_log: ShareLog | None) -> None:
        self.share_log_ = share_log
        self._views: dict[int, WorkerView] = {}

    def update(self, index: int, view: WorkerView) -> None:
        self._views[index] = view

    def drop(self, index: int) -> None:
        self._views.pop(index, None)

    def views(self) -> list[WorkerView]:
        return [v for _, v in sorted(self._views.items())]

    def upstream(self) -> UpstreamState:
        ups = [v.upstream for v in self.views()]
        if not ups:
            return UpstreamState(connected=False, channel_open=False, address=None, since=None)
        connected = all(u.connected for u in ups)
        # Connected: since the last worker connected; down: since the first went down.
        changes = [u.since for u in ups if u.connected == connected and u.since is not None]
        since = (max(changes) if connected else min(changes)) if changes else None
        address = next((u.address for u in ups if u.connected), ups[0].address)
        return UpstreamState(connected=connected, channel_open=any(u.channel_open for u in ups), address=address, since=since)

    def channels(self) -> Sequence[UpstreamChannelState]:
        return [ch for v in self.views() for ch in v.channels]

    def sv1_clients(self) -> Iterator[Sv1ClientState]:
        views = self.views()  # a copy: a worker reporting meanwhile does not disturb the iteration
        return (c for v in views for c in v.clients)
