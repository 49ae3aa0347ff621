"""A running monitoring server over a StaticSource, and raw-socket helpers, for the monitoring tests.

``running`` starts the cache and a real ``MonitoringServer`` on 127.0.0.1
(port 0) and stops both on exit. ``raw_get`` sends one request exactly as
given (no URL normalization by a client library) and returns the status and
body. ``open_fds`` counts this process's open file descriptors (Linux /proc).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from monitoring.api import MonitoringServer
from monitoring.snapshot import SnapshotCache
from monitoring.source import MonitoringSource


@asynccontextmanager
async def running(source: MonitoringSource, **server_kw: Any) -> AsyncIterator[MonitoringServer]:
    cache = SnapshotCache(source, refresh_interval=3600.0)  # tests refresh explicitly
    await cache.start()
    server = MonitoringServer(cache, port=0, **server_kw)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
        await cache.close()


async def raw_get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of ``GET target`` sent verbatim on a fresh connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        writer.write(head.encode() + b"\r\n")
        data = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), body


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
