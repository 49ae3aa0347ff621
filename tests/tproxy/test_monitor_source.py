"""ProxyMonitoringSource over the real hub and channel manager (tests/helpers/rig.py), no sockets.

The view is the runtime's three delegations written out (``tproxy.runtime.Proxy``
needs sockets to build); what is tested is what the source copies out of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from monitoring.source import UpstreamChannelState
from sv2.messages import SubmitSharesSuccess
from tests.helpers.rig import PoolWriterDouble, Rig
from tproxy.monitor_source import CHANNEL_EXTRAS, ProxyMonitoringSource, channel_extras
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
