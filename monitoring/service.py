"""Wiring: start the snapshot cache and the HTTP server from configuration.

Owns ``MonitoringConfig``, the read-only interface of the configuration that
monitoring reads (every field, no defaults of its own), and
``start_monitoring``, the one call the proxy runtime makes. It returns
``None`` when monitoring is not enabled (nothing is started, no port is
bound), otherwise a ``Monitoring`` handle whose ``close()`` stops the server
and the cache's tasks.
"""

from __future__ import annotations

import logging
from typing import Protocol

from monitoring.api import MonitoringServer, RateLimits
from monitoring.connections import ConnectionLimits
from monitoring.metrics import MetricsRenderer
from monitoring.snapshot import SnapshotCache
from monitoring.source import MonitoringSource

log = logging.getLogger("monitoring")


class Secret(Protocol):
    """A secret string that is only revealed on request (pydantic's ``SecretStr``)."""

    def get_secret_value(self) -> str: ...


class MonitoringConfig(Protocol):
    """Every field monitoring reads from its configuration, read-only.

    ``tproxy.config.MonitoringSettings`` implements it (field meanings and
    defaults are documented there); monitoring never imports the proxy's
    config module, and reads nothing else from the object.
    """

    @property
    def enabled(self) -> bool: ...
    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def token(self) -> Secret | None: ...
    @property
    def refresh_interval_s(self) -> float: ...
    @property
    def worker_stats_interval_s(self) -> float: ...
    @property
    def max_share_log_lag_s(self) -> float: ...
    @property
    def max_db_down_s(self) -> float: ...
    @property
    def rate_limit(self) -> bool: ...
    @property
    def api_rate(self) -> float: ...
    @property
    def api_burst(self) -> float: ...
    @property
    def health_rate(self) -> float: ...
    @property
    def health_burst(self) -> float: ...
    @property
    def max_wait_s(self) -> float: ...
    @property
    def sri_metric_names(self) -> bool: ...
    @property
    def unauth_rate(self) -> float: ...
    @property
    def unauth_burst(self) -> float: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def header_timeout_s(self) -> float: ...
    @property
    def idle_timeout_s(self) -> float: ...
    @property
    def send_timeout_s(self) -> float: ...
    @property
    def max_request_line_bytes(self) -> int: ...


def rate_limits(config: MonitoringConfig) -> RateLimits | None:
    """The admission control a config asks for; None when ``rate_limit`` is false."""
    if not config.rate_limit:
        return None
    return RateLimits(
        api_rate=config.api_rate,
        api_burst=config.api_burst,
        health_rate=config.health_rate,
        health_burst=config.health_burst,
        max_wait_s=config.max_wait_s,
        unauth_rate=config.unauth_rate,
        unauth_burst=config.unauth_burst,
    )


def connection_limits(config: MonitoringConfig) -> ConnectionLimits:
    """The connection limits of the monitoring port (``monitoring.connections``)."""
    return ConnectionLimits(
        max_connections=config.max_connections,
        header_timeout_s=config.header_timeout_s,
        idle_timeout_s=config.idle_timeout_s,
        send_timeout_s=config.send_timeout_s,
        max_request_line=config.max_request_line_bytes,
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
        max_db_down_s=config.max_db_down_s,
        renderer=MetricsRenderer(sri_metric_names=config.sri_metric_names),
    )
    token = config.token.get_secret_value() if config.token is not None else None
    server = MonitoringServer(
        cache,
        host=config.address,
        port=config.port,
        token=token,
        limits=rate_limits(config),
        connections=connection_limits(config),
    )
    await cache.start()
    try:
        await server.start()
    except BaseException:
        await cache.close()
        raise
    return Monitoring(cache, server)
