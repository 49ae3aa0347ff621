"""The read-only view of a running proxy that monitoring reads (``ProxyView``).

``tproxy.monitor_source.ProxyMonitoringSource`` copies numbers out of this
and nothing else, during a snapshot refresh. ``tproxy.runtime.Proxy``
implements it by delegating to the SV1 hub (miners, clock), the channel
manager (channels) and the upstream supervisor (status). Callers must treat
every object it returns as read-only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tproxy.sv1.hub import Miner
    from tproxy.upstream.manager import LiveChannel
    from tproxy.upstream.supervisor import UpstreamStatus


class ProxyView(Protocol):
    def now(self) -> float:
        """The clock the hashrate estimates run on (the hub's)."""

    def miners(self) -> Iterable[Miner]:
        """Every connected SV1 miner: its session (identity, difficulty, counters) and channel_id."""

    def channels(self) -> Iterable[LiveChannel]:
        """Every open upstream channel: its state (target, extranonce layout), counters
        (``stats`` since it opened, ``lifetime()`` across reconnects) and ``verdicts_pending``."""

    def upstream_status(self) -> UpstreamStatus:
        """Whether a pool is connected, which, and since when (or down since when)."""
