"""Admission control for the monitoring API.

Owns ``CostLimiter``, the token bucket that caps how much of the proxy's event
loop the HTTP API may take. Snapshot reads are free, but answering is not:
parsing a request and pushing a 2 MB ``/metrics`` body through the socket
costs CPU on the loop that also carries shares. Without a cap, in
bench/bench_monitoring.py 16 clients in a tight loop (about 2,000 requests/s)
cut a saturated stand-in share loop to about a tenth of its rate and made the
p99 wake-up lateness of a 1 ms timer ten times worse.

Every response costs ``1 + bytes / 64 KiB`` units. A response waits (without
using CPU) until the bucket covers it, so a hammering client is simply slowed
down to the configured rate; when the wait would exceed ``max_wait_s`` the
request is refused with 429 instead, which bounds the number of waiting
requests and their latency. Health probes get their own bucket so that an API
flood cannot make a load balancer see the proxy as down, and requests without
the configured token get a small one that never waits (``monitoring.api``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

BYTES_PER_UNIT = 65_536


def response_cost(nbytes: int) -> float:
    """Cost of one response in bucket units."""
    return 1.0 + nbytes / BYTES_PER_UNIT


class CostLimiter:
    """Token bucket in cost units; waiters reserve tokens in arrival order."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_wait_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._tokens = burst  # may go negative: tokens reserved by waiting requests
        self._updated = clock()
        self.admitted = 0
        self.refused = 0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def reserve(self, cost: float) -> float | None:
        """Reserve ``cost`` units; the delay to wait before answering, or None to refuse.

        A cost above the burst is charged as the burst, so any response can be served.
        """
        cost = min(cost, self.burst)
        self._refill()
        wait = 0.0 if self._tokens >= cost else (cost - self._tokens) / self.rate
        if wait > self.max_wait_s:
            self.refused += 1
            return None
        self._tokens -= cost
        self.admitted += 1
        return wait

    async def acquire(self, cost: float) -> bool:
        """Wait until ``cost`` units are available; False (immediately) when refused."""
        wait = self.reserve(cost)
        if wait is None:
            return False
        if wait > 0:
            await asyncio.sleep(wait)
        return True

    def retry_after(self) -> int:
        """Seconds a refused client should wait (for the Retry-After header)."""
        return max(1, int(self.max_wait_s + 0.999))
