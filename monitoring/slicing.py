"""Cooperative time slicing for long loops on the event loop.

Owns ``Slicer``: code that walks thousands of items (the snapshot build, the
metrics rendering) asks ``due()`` after each item and awaits ``pause()`` when
its time budget is spent, so no single stretch holds the event loop longer than
about one budget. The slicer also records the longest stretch it saw, which is
the figure we publish as the build's worst event-loop stall.
"""

from __future__ import annotations

import asyncio
from time import perf_counter


class Slicer:
    """Time budget for one synchronous stretch between two yields to the loop."""

    __slots__ = ("_start", "budget_s", "max_slice_s", "slices")

    def __init__(self, budget_s: float) -> None:
        if budget_s <= 0:
            raise ValueError("budget_s must be > 0")
        self.budget_s = budget_s
        self.max_slice_s = 0.0
        self.slices = 0
        self._start = perf_counter()

    def due(self) -> bool:
        """True when the current stretch has used its budget."""
        return perf_counter() - self._start >= self.budget_s

    async def pause(self) -> None:
        """End the current stretch, let other tasks run, start a new stretch.

        Yields twice. A task waiting on a timer or a socket is woken in two
        loop iterations (the timer or I/O callback resolves its future, which
        schedules the task's step for the *next* iteration); with a single
        yield we would run a second slice before that step, doubling the wait
        a share sees. The extra iteration costs microseconds.
        """
        self._close()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self._start = perf_counter()

    def finish(self) -> None:
        """End the last stretch (call once when the work is done)."""
        self._close()

    def _close(self) -> None:
        elapsed = perf_counter() - self._start
        self.slices += 1
        if elapsed > self.max_slice_s:
            self.max_slice_s = elapsed
