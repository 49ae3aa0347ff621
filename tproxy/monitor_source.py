"""The proxy's side of the monitoring boundary: ``MonitoringSource`` over live state.

Copies numbers out of the bridge, the upstream supervisor and the share log
into the immutable records of ``monitoring.source``. Cheap and synchronous
(except ``worker_stats``, which reads the share log's per-minute aggregate).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from monitoring.source import (
    ShareLogState,
    Sv1ClientState,
    UpstreamChannelState,
    UpstreamState,
    WorkerWindowStats,
)

if TYPE_CHECKING:
    from tproxy.bridge import Bridge
    from tproxy.shares.pipeline import ShareLog
    from tproxy.upstream import UpstreamSupervisor


class ProxyMonitoringSource:
    """Implements ``monitoring.source.MonitoringSource`` for a running proxy."""

    def __init__(
        self,
        bridge: Bridge,
        supervisor: UpstreamSupervisor,
        share_log: ShareLog | None,
        *,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.bridge = bridge
        self.supervisor = supervisor
        self.share_log_ = share_log
        # The clock of the hashrate estimates: the bridge's own (the one vardiff runs on).
        self._now: Callable[[], float] = now if now is not None else getattr(bridge, "_now", time.time)

    def upstream(self) -> UpstreamState:
        sup = self.supervisor
        cur = sup.current
        return UpstreamState(
            connected=cur is not None,
            channel_open=bool(self.bridge.channels),
            address=str(cur.endpoint) if cur is not None else None,
            since=cur.connected_at if cur is not None else sup.down_since,
        )

    def channels(self) -> Sequence[UpstreamChannelState]:
        out = []
        for ch in list(self.bridge.channels.values()):
            st, stats = ch.state, ch.stats
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
                )
            )
        return out

    def sv1_clients(self) -> Iterator[Sv1ClientState]:
        sessions = list(self.bridge.sessions.values())
        channels = self.bridge.channels
        clock = self._now()

        def gen() -> Iterator[Sv1ClientState]:
            for s in sessions:
                ch = channels.get(s.channel_id) if s.channel_id is not None else None
                # Estimate as of now, not as of the miner's last share (vardiff.last_now):
                # with vardiff off nothing else moves last_now, and a miner that went silent
                # kept its last hashrate forever. The bridge estimates at now too.
                now = max(clock, s.vardiff.last_now)
                est = s.vardiff.estimated_hashrate(now)
                c = s.counters
                yield Sv1ClientState(
                    client_id=s.client_id,
                    channel_id=s.channel_id,
                    worker_name=s.worker_name,
                    user_identity=ch.stats.user_identity if ch is not None else "",
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
            spool_pending=getattr(st, "spool_pending", 0),
        )

    async def worker_stats(self, windows: Sequence[int]) -> Sequence[WorkerWindowStats]:
        if self.share_log_ is None:
            return []
        out: list[WorkerWindowStats] = []
        for window_s in windows:
            minutes = max(1, window_s // 60)
            for w in await self.share_log_.worker_hashrate(minutes):
                out.append(
                    WorkerWindowStats(
                        worker_name=w.worker_name,
                        window_s=window_s,
                        shares_accepted=w.accepted_shares,
                        shares_rejected=w.shares - w.accepted_shares,
                        accepted_difficulty_sum=w.accepted_difficulty,
                        last_share_at=w.last_share_at,
                        measured_s=w.window_s,  # minute-aligned: between window_s - 60 and window_s
                    )
                )
        return out
