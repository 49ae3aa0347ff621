"""The running proxy: builds every component from ``Settings`` and owns their lifetimes.

Start order: share log (migrations, spool replay), bridge, SV1 listener,
upstream supervisor, monitoring. Stop order is the reverse, and the share
log is closed last so that every share the miners sent is flushed or spooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

from tproxy.bridge import Bridge
from tproxy.config import Settings
from tproxy.monitor_source import ProxyMonitoringSource
from tproxy.shares.pipeline import ShareLog
from tproxy.sv1.server import Sv1Server
from tproxy.upstream import UpstreamSupervisor

log = logging.getLogger("tproxy")


class Proxy:
    """One translator proxy instance."""

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
        self.bridge = Bridge(settings, self.share_log, now=now)
        self.sv1 = Sv1Server(settings.downstream, self.bridge)
        self.supervisor = UpstreamSupervisor(settings.upstreams, settings.proxy, self.bridge, now=now)
        self.monitoring_source = ProxyMonitoringSource(self.bridge, self.supervisor, self.share_log)
        self._monitoring: object | None = None
        self._cache: object | None = None

    @property
    def sv1_port(self) -> int:
        return self.sv1.port

    @property
    def monitoring_port(self) -> int | None:
        srv = self._monitoring
        return getattr(srv, "port", None) if srv is not None else None

    async def start(self) -> None:
        if self.share_log is not None:
            await self.share_log.start()
        self.bridge.start()
        await self.sv1.start()
        self.supervisor.start()
        mon = self.settings.monitoring
        if mon.enabled:
            from monitoring.api import MonitoringServer
            from monitoring.snapshot import SnapshotCache

            cache = SnapshotCache(
                self.monitoring_source,
                refresh_interval=mon.refresh_interval_s,
                worker_stats_interval=mon.worker_stats_interval_s,
            )
            await cache.start()
            server = MonitoringServer(
                cache,
                host=mon.address,
                port=mon.port,
                token=mon.token.get_secret_value() if mon.token else None,
                max_share_log_lag_s=mon.max_share_log_lag_s,
            )
            await server.start()
            self._cache, self._monitoring = cache, server
        log.info(
            "proxy %s listening for SV1 miners on %s:%d (%s mode)",
            self.settings.proxy.instance_id,
            self.settings.downstream.address,
            self.sv1.port,
            "aggregated" if self.settings.proxy.aggregate_channels else "non-aggregated",
        )

    async def close(self) -> None:
        for obj in (self._monitoring, self._cache):
            if obj is not None:
                with contextlib.suppress(Exception):
                    await obj.close()  # type: ignore[attr-defined]
        await self.supervisor.stop()
        await self.sv1.close()
        await self.bridge.stop()
        if self.share_log is not None:
            await self.share_log.close()


async def run_until_signalled(settings: Settings) -> None:
    """``tproxy run``: start, serve until SIGINT/SIGTERM, shut down gracefully."""
    proxy = Proxy(settings)
    await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await proxy.close()
