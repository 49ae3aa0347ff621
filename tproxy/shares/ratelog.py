"""RateLimitedLog: one log line per distinct error, then a count every ``interval_s``.

A share log that cannot open a file or reach its disk retries many times a
second; logging every attempt grew a production log by 110 MB (issue 11).
``RateLimitedLog.log`` writes the first occurrence of a message at once,
counts identical ones (same level and same formatted text, or the same
explicit ``key``) for ``interval_s``, and then writes one summary line
("... repeated N times in the last Ts") when the next one arrives or when
``tick()`` is called after the interval has passed. The clock is injectable
for tests.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    level: int
    text: str
    window_start: float
    suppressed: int = 0


class RateLimitedLog:
    """Rate-limits identical log lines on one logger (see the module docstring)."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 256) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._max_keys = max_keys
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def log(self, level: int, msg: str, *args: object, key: str | None = None) -> bool:
        """Log ``msg % args`` unless the same line was logged less than ``interval_s`` ago.

        Returns True when a line was written now (the first one or a summary)."""
        text = msg % args if args else msg
        k = f"{level}:{key if key is not None else text}"
        now = self._clock()
        e = self._entries.get(k)
        if e is None:
            self._entries[k] = _Entry(level, text, now)
            if len(self._entries) > self._max_keys:
                self._emit(self._entries.popitem(last=False)[1], now)
            self.logger.log(level, "%s", text)
            return True
        e.suppressed += 1
        e.text = text
        if now - e.window_start >= self.interval_s:
            self._emit(e, now)
            return True
        return False

    def tick(self) -> None:
        """Write the summaries that are due and forget errors that stopped."""
        now = self._clock()
        for k, e in list(self._entries.items()):
            if now - e.window_start < self.interval_s:
                continue
            if e.suppressed:
                self._emit(e, now)
            else:
                del self._entries[k]  # quiet for a whole interval: the next one logs at once

    def _emit(self, e: _Entry, now: float) -> None:
        if e.suppressed:
            self.logger.log(e.level, "%s (repeated %d times in the last %.0fs)",
                            e.text, e.suppressed, now - e.window_start)
        e.suppressed = 0
        e.window_start = now
