"""ProxyMonitoringSource over the real hub and channel manager (tests/helpers/rig.py), no sockets.

The view is the runtime's three delegations written out (``tproxy.runtime.Proxy``
needs sockets to build); what is tested is what the source copies out of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pytest

from monitoring.source import UpstreamChannelState
from sv2.messages import SubmitSharesSuccess
from tests.helpers.rig import PoolWriterDouble, Rig
from tproxy.monitor_source import CHANNEL_EXTRAS, ProxyMonitoringSource, channel_extras
from tproxy.shares.pipeline import WorkerStats
from tproxy.sv1.hub import Miner
from tproxy.upstream.manager import LiveChannel
from tproxy.upstream.supervisor import UpstreamStatus


class RigView:
    """``tproxy.view.ProxyView`` over a Rig, as ``tproxy.runtime.Proxy`` delegates it."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    def now(self) -> float:
        return self.rig.hub.now()

    def miners(self) -> Iterable[Miner]:
        return self.rig.hub.miners.values()

    def channels(self) -> Iterable[LiveChannel]:
        return self.rig.manager.channels.values()

    def upstream_status(self) -> UpstreamStatus:
        return UpstreamStatus(connected=self.rig.manager.up is not None, address=None, since=None)


def test_channel_counters_are_lifetime_totals_across_a_reconnect_and_extras_are_per_channel() -> None:
    rig = Rig()
    sock = rig.ready_miner()
    rig.pool_up()
    (cid,) = rig.answer_opens()
    job = rig.new_block(cid, 1)
    for k in range(2):
        rig.share(sock, job, k.to_bytes(4, "big"))
    rig.manager.on_upstream_message(rig.pool, SubmitSharesSuccess(cid, 1, 2, 2))
    rig.manager.on_upstream_lost(rig.pool, "closed by the pool")
    rig.pool_up(PoolWriterDouble(name="backup:3334"))
    (cid2,) = rig.answer_opens(first_channel_id=40)
    job = rig.new_block(cid2, 5)
    rig.share(sock, job, b"\x00\x00\x00\x05")
    source = ProxyMonitoringSource(RigView(rig), None)
    (st,) = source.channels()
    assert st.channel_id == cid2
    assert (st.shares_submitted, st.shares_acknowledged) == (3, 2)  # not reset by the reconnect
    (ch,) = rig.manager.channels.values()
    extras = channel_extras(ch, ch.lifetime().verdicts_timed_out)
    assert set(extras) == set(CHANNEL_EXTRAS)
    assert extras["verdicts_pending"] == 1 and extras["connection_shares_submitted"] == 1
    assert extras["connection_shares_acknowledged"] == 0 and extras["verdicts_timed_out"] == 0
    declared = {f.name for f in dataclasses.fields(UpstreamChannelState)}
    assert {"verdicts_pending", "verdicts_timed_out"} <= declared and st.verdicts_pending == 1
    for name in set(CHANNEL_EXTRAS) & declared:  # filled in once monitoring declares them
        assert getattr(st, name) == extras[name]


class AggregateStandIn:
    """Test double of the share log's per-minute aggregate (``ShareLog.worker_hashrate``): fixed
    rows, so the window arithmetic of the monitoring source is tested without ClickHouse (the
    aggregate itself is tested against chdb in tests/tproxy/shares)."""

    def __init__(self, rows: list[WorkerStats]) -> None:
        self.rows = rows

    async def worker_hashrate(self, window_minutes: int) -> list[WorkerStats]:
        return self.rows


def _stats(worker: str, *, first: float | None, window_s: float = 300.0) -> WorkerStats:
    return WorkerStats(worker, window_s, 10, 10, 10.0, 12.0, 10.0 * 2**32 / window_s, first, first)


async def test_window_hashrate_of_workers_connected_for_less_than_the_window() -> None:
    # Issue 10.4: right after start-up, or for a miner that joined 30 s ago, dividing the work by
    # the whole window under-reports it.
    rig = Rig()
    rig.ready_miner("farm.new")  # connected at the rig's clock now
    rig.clock.t += 30.0
    now = rig.clock.t
    rows = [
        _stats("farm.new", first=now - 25.0),  # mined only since it connected 30 s ago
        _stats("farm.gone", first=now - 200.0),  # not connected any more: the whole window
    ]
    source = ProxyMonitoringSource(RigView(rig), AggregateStandIn(rows))  # type: ignore[arg-type]
    by = {w.worker_name: w for w in await source.worker_stats([300])}
    assert by["farm.new"].measured_s == pytest.approx(30.0)
    assert by["farm.gone"].measured_s == 300.0


async def test_a_reconnected_worker_keeps_the_time_of_its_earlier_shares() -> None:
    rig = Rig()
    rig.ready_miner("farm.back")
    rig.clock.t += 10.0
    now = rig.clock.t
    rows = [_stats("farm.back", first=now - 240.0)]  # mined before this connection, within the window
    source = ProxyMonitoringSource(RigView(rig), AggregateStandIn(rows))  # type: ignore[arg-type]
    (w,) = await source.worker_stats([300])
    assert w.measured_s == pytest.approx(240.0)
