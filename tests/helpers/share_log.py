"""Share-log test helpers: test-sized settings, deterministic records, the counter invariant, polling."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from devnet.loadgen import make_share
from tproxy.shares.record import ShareRecord
from tproxy.shares.settings import ClickHouseSettings

INSTANCE = "test-proxy"


def fast_settings(url: str, spool_dir: Path | str, **kw: Any) -> ClickHouseSettings:
    """Settings with test-sized timeouts and backoff (same code paths as production)."""
    base: dict[str, Any] = {
        "url": url,
        "spool_dir": str(spool_dir),
        "batch_size": 500,
        "batch_max_age_s": 0.05,
        "retry_backoff_base_s": 0.02,
        "retry_backoff_max_s": 0.2,
        "connect_timeout_s": 0.5,
        "insert_timeout_s": 0.5,
        "close_timeout_s": 3.0,
        "spool_fsync": False,
    }
    base.update(kw)
    return ClickHouseSettings(**base)


class SlowDisk:
    """fdatasync seam: blocks until ``gate`` is set (or raises ``fail`` once), then syncs for real."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.synced = 0  # fdatasync calls that returned
        self.fail: OSError | None = None

    def __call__(self, fd: int) -> None:
        assert self.gate.wait(30), "test never opened the gate"
        if self.fail is not None:
            e, self.fail = self.fail, None
            raise e
        os.fdatasync(fd)
        self.synced += 1


def shares(n: int, *, start: int = 1, instance_id: str = INSTANCE, now_ms: int | None = None) -> list[ShareRecord]:
    """``n`` deterministic shares (``devnet.loadgen.make_share``), spread over the last minutes."""
    t0 = int(time.time() * 1000) if now_ms is None else now_ms
    return [make_share(s, instance_id=instance_id, received_at_ms=t0 - 240_000 + (s * 7) % 240_000)
            for s in range(start, start + n)]


def assert_counters_consistent(st: Any) -> None:
    """The counter invariant of docs/SHARE_LOG.md: every share record that entered the share
    log (submitted, or found in the spool at start) is in exactly one place."""
    assert st.received + st.recovered == st.queued + st.written + st.spool_pending + st.quarantined_rows + st.dropped, st


async def wait_until(pred: Any, timeout_s: float = 30.0, what: str = "") -> None:
    """Poll ``pred()`` on the running loop until it is true (a liveness bound, not a timing check)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not pred():
        if loop.time() >= deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.02)
