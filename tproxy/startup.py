"""What ``tproxy run`` says and checks around the proxy's start: user mistakes become one line.

Owns:

* the start-up checks that need no network: the spool directory
  (``check_spool_dir``), run before anything is started;
* ``listener_errors``: turns the ``OSError`` of a listener that cannot bind
  (port in use, address that does not resolve or is not this host's) into a
  ``ConfigError`` naming the setting; the runtime wraps each listener's start
  in it, and binds every listener before it connects upstream;
* the start-up log buffer (``hold_logs`` / ``release_logs`` /
  ``discard_logs``): log lines written while the proxy starts are held, so a
  start that fails on a configuration error prints only the one error line,
  and a start that succeeds prints them all, followed by the banner;
* the banner (where miners connect, which upstreams, where shares go, the
  monitoring URL) and the periodic one-line status (``reporting``), read
  from the same ``monitoring_source`` the monitoring server reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from logging.handlers import MemoryHandler
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tproxy.errors import ConfigError

if TYPE_CHECKING:
    from monitoring.source import ShareLogState, Sv1ClientState, UpstreamState
    from tproxy.config import Settings
    from tproxy.shares.settings import ClickHouseSettings

log = logging.getLogger("tproxy")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def tproxy_version() -> str:
    try:
        return version("tproxy")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


# ------------------------------------------------------------------ checks


def check_spool_dir(settings: ClickHouseSettings) -> None:
    """``clickhouse.spool_dir`` exists as a writable directory, or can be created.

    Creates nothing (``check-config`` runs it too): the share log creates the
    directory, parents included, when it starts.
    """
    path = Path(settings.spool_dir).absolute()
    probe = path
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: mkdir would fail on it
            raise ConfigError(f"clickhouse.spool_dir {settings.spool_dir!r}: {probe} is a dangling link")
        probe = probe.parent
    name = f"clickhouse.spool_dir {settings.spool_dir!r}"
    where = "" if probe == path else f"cannot be created, {probe}"
    if not probe.is_dir():
        raise ConfigError(f"{name}: {where or 'it'} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}: {where or 'it'} is not writable")


@contextlib.contextmanager
def listener_errors(section: str, address: str, port: int) -> Iterator[None]:
    """Re-raise a listener's bind failure as a ``ConfigError`` naming ``section.address|port``."""
    try:
        yield
    except socket.gaierror as e:
        raise ConfigError(f"{section}.address {address!r}: does not resolve ({e.strerror})") from None
    except OSError as e:
        raise ConfigError(_bind_message(section, address, port, e)) from None


def _bind_message(section: str, address: str, port: int, e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"{section}.port {port}: address already in use (on {address})"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"{section}.address {address!r}: not an address of this host"
    if e.errno == errno.EACCES:
        return f"{section}.port {port}: permission denied (ports below 1024 need privileges)"
    return f"{section}.address/port {address}:{port}: cannot listen ({e.strerror or e})"


# ------------------------------------------------------------------ start-up log buffer

_held: list[MemoryHandler] = []


def hold_logs(level: str) -> None:
    """Log to stderr at ``level``, holding every record until release_logs() or discard_logs()."""
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter(LOG_FORMAT))
    # flushLevel above CRITICAL: only a full buffer (a very chatty start) lets records through early.
    buf = MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1, target=stream, flushOnClose=False)
    root = logging.getLogger()
    root.addHandler(buf)
    root.setLevel(getattr(logging, level.upper()))
    _held.append(buf)


def _swap(replacement: logging.Handler) -> MemoryHandler | None:
    if not _held:
        return None
    buf = _held.pop()
    root = logging.getLogger()
    # One assignment: a record logged meanwhile goes to exactly one of the two handlers.
    root.handlers = [replacement if h is buf else h for h in root.handlers]
    return buf


def release_logs() -> None:
    """Start-up succeeded (or failed unexpectedly): print what was held, log directly from now on."""
    if _held and _held[-1].target is not None:
        buf = _swap(_held[-1].target)
        if buf is not None:
            buf.flush()
            buf.close()


def discard_logs() -> None:
    """Start-up failed on a configuration error: drop what was held (the error line says it all)."""
    buf = _swap(logging.NullHandler())
    if buf is not None:
        with buf.lock or contextlib.nullcontext():
            buf.buffer.clear()
        buf.close()


# ------------------------------------------------------------------ banner and status


class StatusSource(Protocol):
    """The part of ``monitoring.source.MonitoringSource`` the status line reads."""

    def upstream(self) -> UpstreamState: ...
    def sv1_clients(self) -> Iterator[Sv1ClientState]: ...
    def share_log(self) -> ShareLogState | None: ...


class RunningProxy(Protocol):
    """What the banner and the status line read of ``tproxy.runtime.Proxy``."""

    @property
    def settings(self) -> Settings: ...
    @property
    def sv1_port(self) -> int: ...
    @property
    def monitoring_port(self) -> int | None: ...
    @property
    def monitoring_source(self) -> StatusSource: ...


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _where(address: str) -> str:
    return " (all interfaces)" if address in ("0.0.0.0", "::", "") else ""


def banner_lines(proxy: RunningProxy) -> list[str]:
    """Where the proxy listens, which upstreams it uses, where shares go, the monitoring URL."""
    s = proxy.settings
    ch = s.clickhouse
    ups = [f"{_host(u.address)}:{u.port}" + (f" as {u.user_identity!r}" if u.user_identity else "") for u in s.upstreams]
    store = f"chdb://{ch.chdb_path}" if ch.is_embedded else ch.redacted_url()
    if s.monitoring.enabled and proxy.monitoring_port is not None:
        auth = ", bearer token required" if s.monitoring.token is not None else ""
        mon = f"http://{_host(s.monitoring.address)}:{proxy.monitoring_port}/{_where(s.monitoring.address)}{auth}"
    else:
        mon = "disabled ([monitoring] enabled = false)"
    mode = "aggregated" if s.proxy.aggregate_channels else "non-aggregated"
    status = f"every {s.status_interval_s:g} s" if s.status_interval_s > 0 else "off"
    return [
        f"tproxy {tproxy_version()} started: instance {s.proxy.instance_id}, {mode} channels",
        f"SV1 miners connect to stratum+tcp://{_host(s.downstream.address)}:{proxy.sv1_port}{_where(s.downstream.address)}",
        "upstream: " + ups[0] + (f" (fallbacks, in order: {', '.join(ups[1:])})" if ups[1:] else ""),
        f"shares: {store} (database {ch.database}), spool {Path(ch.spool_dir).absolute()}",
        f"monitoring: {mon}",
        f"status line: {status}",
    ]


def format_hashrate(hs: float) -> str:
    for unit, scale in (("EH/s", 1e18), ("PH/s", 1e15), ("TH/s", 1e12), ("GH/s", 1e9), ("MH/s", 1e6), ("kH/s", 1e3)):
        if hs >= scale:
            return f"{hs / scale:.2f} {unit}"
    return f"{hs:.0f} H/s"


def status_line(source: StatusSource) -> str:
    """One line: upstream, miners, hashrate, shares of the connected miners, share-log backlog."""
    up = source.upstream()
    miners = accepted = rejected = 0
    hashrate = 0.0
    for c in source.sv1_clients():
        miners += 1
        accepted += c.shares_accepted
        rejected += c.shares_rejected
        hashrate += c.hashrate or 0.0
    upstream = f"upstream {up.address}" if up.connected and up.address else "no upstream connected"
    parts = [
        upstream,
        f"{miners} miners, {format_hashrate(hashrate)}",
        f"shares accepted {accepted}, rejected {rejected}",
    ]
    sl = source.share_log()
    if sl is not None:
        backlog = f"share log backlog {sl.queued + sl.spool_pending} ({sl.spool_pending} spooled)"
        if sl.oldest_unwritten_age_s > 0:
            backlog += f", oldest {sl.oldest_unwritten_age_s:.0f} s"
        parts.append(backlog + ("" if sl.db_up else ", database down") + (f", {sl.dropped} DROPPED" if sl.dropped else ""))
    return "status: " + " | ".join(parts)


async def _status_loop(source: StatusSource, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            log.info("%s", status_line(source))
        except Exception as e:  # a reading that fails must not end the status line for good
            log.warning("status line unavailable: %s: %s", type(e).__name__, e)


@contextlib.contextmanager
def reporting(proxy: RunningProxy) -> Iterator[None]:
    """After a successful start: log the banner, release held logs, run the status line until exit."""
    for line in banner_lines(proxy):
        log.info("%s", line)
    release_logs()
    interval = proxy.settings.status_interval_s
    task = asyncio.create_task(_status_loop(proxy.monitoring_source, interval), name="status-line") if interval > 0 else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
