"""The running proxy: builds every component from ``Settings``, wires them, owns their lifetimes.

Wiring: the SV1 server feeds the hub (``tproxy.sv1.hub.Hub``); the hub and
the channel manager (``tproxy.upstream.manager.ChannelManager``) are joined
through the two sides of ``tproxy.events``; the supervisor drives the
manager; the share log receives the hub's records; monitoring reads the
proxy through ``tproxy.view.ProxyView``, which ``Proxy`` implements.

Start order: share log (migrations, spool replay), periodic tick, SV1
listener, monitoring, upstream supervisor (every listener is bound before the
proxy connects upstream, so a port in use stops it first). Stop order is the
reverse, and the share log is closed last so that every share the miners sent
is flushed or spooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import signal
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from monitoring.slicing import Slicer
from tproxy.config import Settings
from tproxy.errors import ConfigError
from tproxy.monitor_source import ProxyMonitoringSource
from tproxy.shares.pipeline import ShareLog
from tproxy.startup import listener_errors, reporting
from tproxy.sv1.hub import Hub, Miner
from tproxy.sv1.server import Sv1Server
from tproxy.upstream.manager import ChannelManager, LiveChannel
from tproxy.upstream.supervisor import UpstreamStatus, UpstreamSupervisor

if TYPE_CHECKING:
    from monitoring.service import Monitoring
    from tproxy.workers import Cluster

log = logging.getLogger("tproxy")

TICK_S = 1.0
TICK_SLICE_S = 0.0002  # the longest stretch of a tick between two yields to the loop (about two shares' work)


class Proxy:
    """One translator proxy instance (and its ``tproxy.view.ProxyView``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        share_log: bool = True,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.share_log: ShareLog | None = (
            ShareLog(settings.clickhouse, settings.proxy.instance_id, now=now) if share_log else None
        )
        # Events go to the share log too; the difficulty memory persists beside its spool.
        self.hub = Hub(settings, self.share_log, now=now, event_sink=self.share_log, persist_memory=share_log)
        self.manager = ChannelManager(settings, self.hub, now=now)
        self.hub.connect_upstream(self.manager)
        self.sv1 = Sv1Server(settings.downstream, self.hub)
        self.supervisor = UpstreamSupervisor(settings.upstreams, settings.proxy, self.manager, now=now)
        self.monitoring_source = ProxyMonitoringSource(self, self.share_log, lambda: self.hub.events.counts)
        self._monitoring: Monitoring | None = None
        self._tick_task: asyncio.Task[None] | None = None

    @property
    def sv1_port(self) -> int:
        return self.sv1.port

    @property
    def monitoring_port(self) -> int | None:
        return self._monitoring.server.port if self._monitoring is not None else None

    # -- ProxyView ---------------------------------------------------------------

    def now(self) -> float:
        return self.hub.now()

    def miners(self) -> Iterable[Miner]:
        return self.hub.miners.values()

    def channels(self) -> Iterable[LiveChannel]:
        return self.manager.channels.values()

    def upstream_status(self) -> UpstreamStatus:
        return self.supervisor.status()

    # -- lifetime ----------------------------------------------------------------

    def tick(self) -> None:
        """The periodic work of both sides: vardiff and the outage watchdog, then UpdateChannel and keepalives."""
        self.hub.tick()
        self.manager.tick()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self._sliced_tick()
            except Exception:  # a bug in periodic work must not stop it for good
                log.exception("periodic tick failed")

    async def _sliced_tick(self) -> None:
        """``tick``, with its per-miner work (the hub's vardiff and silence checks, the manager's
        sum of the miners' demand) cut into stretches of at most about
        ``TICK_SLICE_S`` between which the loop serves the miners' shares. In one piece, the
        tick of 1,000 miners held the loop for 1 to 3 ms of CPU every second, and the shares
        that arrived meanwhile waited for it (bench/bench_tail.py)."""
        slicer = Slicer(TICK_SLICE_S)
        for _ in itertools.chain(self.hub.tick_steps(), self.manager.tick_steps()):
            if slicer.due():
                await slicer.pause()
        slicer.finish()

    async def start(self) -> None:
        await self.start_serving()
        from monitoring.service import start_monitoring

        ms = self.settings.monitoring
        with listener_errors("monitoring", ms.address, ms.port):
            self._monitoring = await start_monitoring(self.monitoring_source, ms)
        self.start_upstream()  # only once every listener is bound

    async def start_serving(self, *, reuse_port: bool = False) -> None:
        """Share log, periodic tick, SV1 listener (``reuse_port``: one of several workers on one port)."""
        if self.share_log is not None:
            await self.share_log.start()
        self._tick_task = asyncio.create_task(self._tick_loop(), name="proxy-tick")
        ds = self.settings.downstream
        with listener_errors("downstream", ds.address, ds.port):  # bind failures: one line, exit 2
            await self.sv1.start(reuse_port=reuse_port)

    def start_upstream(self) -> None:
        """Connect upstream; called once every listener is bound."""
        self.supervisor.start()
        log.info(
            "proxy %s listening for SV1 miners on %s:%d (%s mode)",
            self.settings.proxy.instance_id,
            self.settings.downstream.address,
            self.sv1.port,
            "aggregated" if self.settings.proxy.aggregate_channels else "non-aggregated",
        )

    async def close(self) -> None:
        if self._monitoring is not None:
            await self._monitoring.close()
        await self.supervisor.stop()
        await self.sv1.close()
        self.hub.events.close()  # the difficulty memory, after every miner's disconnect
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(BaseException):
                await self._tick_task
        if self.share_log is not None:
            await self.share_log.close()


GC_THRESHOLDS = (10_000, 50, 100)


def tune_gc() -> None:
    """Collect cyclic garbage less often, and never rescan start-up objects.

    The share path allocates many short-lived, acyclic objects (parsed JSON,
    tuples) that reference counting frees; with CPython's default thresholds the
    cyclic collector still runs every 700 net allocations and regularly walks
    every live object of thousands of connections. Measured with
    bench/bench_proxy.py at 5,000 connections: default thresholds 10.1k shares/s
    and a paced p99 of 119 ms; these thresholds 13.7k shares/s and 27 ms
    (collector off entirely: 14.4k and 13 ms, which a long-running process
    cannot afford).

    The youngest generation's threshold bounds the pause: a young collection
    walks every tracked object allocated since the last one that is still
    alive, and the share path leaves several per share for a while (the
    duplicate check's keys, vardiff's samples: tuples the collector untracks
    on that first walk). Measured with bench/bench_tail.py (1,000 miners
    paced at 2,000 shares/s for 20 s, CPU time, loaded machine): at 50,000
    one young collection per run, holding the loop for 17 to 24 ms; at 10,000
    four to six, of 4 to 7 ms each, for about the same total (21 to 26 ms).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``proxy.event_loop`` names (None: asyncio's default); uvloop is an
    optional extra, so asking for it without it installed is a configuration error."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        raise ConfigError(
            'proxy.event_loop = "uvloop" but uvloop is not installed (pip install "tproxy[fast]")'
        ) from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(settings: Settings) -> None:
    """``tproxy run``: ``run_until_signalled`` on the configured event loop."""
    with asyncio.Runner(loop_factory=loop_factory(settings.proxy.event_loop)) as runner:
        runner.run(run_until_signalled(settings))


async def run_until_signalled(settings: Settings) -> None:
    """``tproxy run``: start, serve until SIGINT/SIGTERM, shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before start(): a signal during start-up is a stop too
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    proxy: Proxy | Cluster
    if settings.proxy.workers > 1:
        from tproxy.workers import Cluster

        proxy = Cluster(settings)
    else:
        proxy = Proxy(settings)
    try:
        await proxy.start()
        with reporting(proxy):  # banner, held start-up logs, periodic status line
            tune_gc()
            await stop.wait()
    finally:
        log.info("shutting down")
        await proxy.close()
