"""Wiring: start the snapshot cache and the HTTP server from configuration.

Owns ``start_monitoring``, the one call the proxy runtime makes. It returns
``None`` when monitoring is not enabled (nothing is started, no port is
bound), otherwise a ``Monitoring`` handle whose ``close()`` stops the server
and the cache's tasks.
"""

from __future__ import annotations

import logging
from typing import Protocol

from monitoring.api import MonitoringServer, RateLimits
from monitoring.snapshot import SnapshotCache
from monitoring.source import MonitoringSource

log = logging.getLogger("monitoring")


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class MonitoringConfig(Protocol):
    """The fields of ``tproxy.config.MonitoringSettings`` that monitoring reads."""

    @property
    def enabled(self) -> bool: ...
    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def token(self) -> _Secret | None: ...
    @property
    def refresh_interval_s(self) -> float: ...
    @property
    def worker_stats_interval_s(self) -> float: ...
    @property
    def max_share_log_lag_s(self) -> float: ...

    # Optional (read with defaults, so older config objects keep working):
    # max_db_down_s, rate_limit, api_rate, api_burst, health_rate, health_burst, max_wait_s.


def rate_limits(config: object) -> RateLimits | None:
    """The admission control a config asks for; None when ``rate_limit`` is false.

    Fields a config object does not have take ``RateLimits``' defaults.
    """
    if not getattr(config, "rate_limit", True):
        return None
    d = RateLimits()
    return RateLimits(
        api_rate=getattr(config, "api_rate", d.api_rate),
        api_burst=getattr(config, "api_burst", d.api_burst),
        health_rate=getattr(config, "health_rate", d.health_rate),
        health_burst=getattr(config, "health_burst", d.health_burst),
        max_wait_s=getattr(config, "max_wait_s", d.max_wait_s),
    )


class Monitoring:
    """A running monitoring service: the cache and the server in front of it."""

    def __init__(self, cache: SnapshotCache, server: MonitoringServer) -> None:
        self.cache = cache
        self.server = server

    async def close(self) -> None:
        await self.server.close()
        await self.cache.close()


async def start_monitoring(source: MonitoringSource, config: MonitoringConfig) -> Monitoring | None:
    """Start monitoring as configured; ``None`` (and nothing started) when disabled."""
    if not config.enabled:
        log.info("monitoring disabled")
        return None
    cache = SnapshotCache(
        source,
        refresh_interval=config.refresh_interval_s,
        worker_stats_interval=config.worker_stats_interval_s,
        max_share_log_lag_s=config.max_share_log_lag_s,
        max_db_down_s=getattr(config, "max_db_down_s", 300.0),
    )
    token = config.token.get_secret_value() if config.token is not None else None
    server = MonitoringServer(cache, host=config.address, port=config.port, token=token, limits=rate_limits(config))
    await cache.start()
    try:
        await server.start()
    except BaseException:
        await cache.close()
        raise
    return Monitoring(cache, server)
