"""Waiting for a condition in tests without a wall-clock threshold.

``until`` polls a condition; its timeout is a hang guard (generous, for a
loaded CI machine), never the thing a test asserts: a test that needs
"within N ms" belongs in bench/.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

HANG_GUARD_S = 30.0


async def until(condition: Callable[[], bool], *, timeout: float = HANG_GUARD_S, interval: float = 0.01) -> None:
    """Return once ``condition()`` is true; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(interval)
