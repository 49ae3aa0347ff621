"""Rate-limited logging of repeated identical events (bad lines from one miner, failed probes).

``RateLimitedLog`` writes the first occurrence of a key at once, then at most
one line per ``interval_s`` for that key, saying how many identical events
were not logged in between; ``flush`` writes the remaining count (when a
connection ends). A flood from one peer is thus a few lines, never one line
per event, and nothing is silently lost: every suppressed event is counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

MAX_KEYS = 256  # one limiter per connection or per supervisor: a handful of keys in practice


@dataclass(slots=True)
class _Entry:
    last: float
    suppressed: int
    level: int
    what: str  # the key, as text, for the closing count


class RateLimitedLog:
    """Logs the first event of each key, then one summary line per interval."""

    def __init__(
        self, logger: logging.Logger, *, interval_s: float = 60.0, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = logger
        self.interval_s = interval_s
        self._now = now
        self._entries: dict[Hashable, _Entry] = {}
        self.suppressed_total = 0

    def log(self, level: int, key: Hashable, message: str) -> bool:
        """Log ``message`` unless ``key`` was logged less than ``interval_s`` ago; True if written."""
        t = self._now()
        entry = self._entries.get(key)
        if entry is not None and t - entry.last < self.interval_s:
            entry.suppressed += 1
            self.suppressed_total += 1
            return False
        if entry is not None and entry.suppressed:
            message = f"{message} ({entry.suppressed} more like this in the last {t - entry.last:.0f} s)"
        if entry is None and len(self._entries) >= MAX_KEYS:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = _Entry(t, 0, level, str(key))
        self._log.log(level, "%s", message)
        return True

    def flush(self, prefix: str = "") -> None:
        """One line per key with events not yet reported (call when the source goes away)."""
        for entry in self._entries.values():
            if entry.suppressed:
                self._log.log(entry.level, "%s%d more like this not logged (%s)", prefix, entry.suppressed, entry.what)
                entry.suppressed = 0
