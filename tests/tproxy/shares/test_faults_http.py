"""Fault tests over HTTP against a real engine (devnet/chdb_front.py):
a closed port, a server that stalls (with and without executing the insert first), and a
server that answers 500 for a while (same two ways). In every case shares keep flowing,
submit() stays fast, and after recovery the table holds every share exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devnet.chdb_front import ChdbHttpFront
from tests.helpers.share_log import INSTANCE, fast_settings, shares
from tproxy.shares.pipeline import ShareLog

N = 6000
CHUNK = 200


async def feed_through_fault(
    log: ShareLog, fault: Callable[[], None], heal: Callable[[], None], *, heal_after_s: float
) -> None:
    """Submit N shares in chunks while the fault is on for ``heal_after_s``.

    submit() is synchronous (it cannot wait for the database); its latency
    during faults is a bench/bench_shares.py figure, not a threshold here.
    """
    sent = shares(N)
    fault_at = 5
    t_fault = 0.0
    healed = False
    for k in range(0, N, CHUNK):
        if k // CHUNK == fault_at:
            fault()
            t_fault = time.monotonic()
        if t_fault and not healed and time.monotonic() - t_fault >= heal_after_s:
            heal()
            healed = True
        for r in sent[k : k + CHUNK]:
            assert log.submit(r) is None
        await asyncio.sleep(0.03)
    if not healed:
        await asyncio.sleep(max(0.0, heal_after_s - (time.monotonic() - t_fault)))
        heal()


def exact(front: ChdbHttpFront) -> tuple[int, int, int]:
    n = int(front.scalar("SELECT count() FROM tproxy.shares"))
    distinct = int(front.scalar("SELECT uniqExact(share_seq) FROM tproxy.shares"))
    agg = int(front.scalar("SELECT sum(shares) FROM tproxy.worker_minute"))
    return n, distinct, agg


FAULTS: dict[str, tuple[Callable[[ChdbHttpFront], None], Callable[[ChdbHttpFront], None], float]] = {
    "closed_port": (lambda f: f.stop(), lambda f: f.start(), 1.0),
    "stall": (lambda f: f.stall(execute=False), lambda f: f.unstall(), 1.6),
    "stall_after_insert_landed": (lambda f: f.stall(execute=True), lambda f: f.unstall(), 1.6),
    "http_500": (lambda f: f.fail_next(6, execute=False), lambda f: None, 0.0),
    "http_500_after_insert_landed": (lambda f: f.fail_next(6, execute=True, inserts_only=True), lambda f: None, 0.0),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_no_loss_no_duplicate(fault: str, front: ChdbHttpFront, tmp_path: Path, opened: Any) -> None:
    on, off, heal_after = FAULTS[fault]
    s = fast_settings(front.url, tmp_path / "spool", batch_size=300, insert_timeout_s=1.0, connect_timeout_s=1.0)
    log = await opened(ShareLog(s, INSTANCE))
    assert log.stats().db_up and log.stats().schema_version == 2
    await feed_through_fault(log, lambda: on(front), lambda: off(front), heal_after_s=heal_after)
    assert await log.flush(30), log.stats()
    st = log.stats()
    assert exact(front) == (N, N, N)
    assert st.written == N and st.dropped == 0 and st.queued == 0 and st.spool_pending == 0
    assert st.failed_batches > 0 and st.spooled > 0 and st.replayed == st.spooled and st.retried > 0
    assert st.db_up
    if "landed" in fault:
        # The server really did execute inserts whose answer the client never got,
        # and the retries with the same token were dropped by the engine.
        assert front.inserts_executed > N // 300 + 1
    assert list((tmp_path / "spool").glob("*.seg")) == []
