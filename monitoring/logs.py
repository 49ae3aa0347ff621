"""Rate-limited logging of repeated identical errors.

Owns ``LogLimiter``, ``log_limited`` and ``RateLimitFilter``. A hostile or
broken peer can trigger the same error thousands of times a second (a bad
request line, a source entry that fails to serialize); logging each one
would fill the disk and cost the event loop more than the error itself. The
first occurrence of a key is logged, repeats within ``interval_s`` are
counted and dropped, and the next one logged after the interval says how
many were suppressed.

A key is what makes two errors "identical": the caller's choice for
``log_limited`` (for example the message template and the exception type,
never the peer address, so a flood from many addresses is still one key);
for ``RateLimitFilter`` the logger, level, message template and exception
type of the record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any


class LogLimiter:
    """Decides, per key, whether a log line may be written now."""

    def __init__(
        self,
        interval_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._max_keys = max_keys
        # key -> [time of the last line written, repeats suppressed since]
        self._state: dict[Hashable, list[float]] = {}

    def check(self, key: Hashable) -> int | None:
        """None to drop this line; else how many repeats were dropped before it."""
        now = self._clock()
        st = self._state.get(key)
        if st is not None and now - st[0] < self.interval_s:
            st[1] += 1
            return None
        suppressed = 0 if st is None else int(st[1])
        if st is None and len(self._state) >= self._max_keys:
            # Bounded memory: forget the key written longest ago (dicts keep insertion order).
            self._state.pop(next(iter(self._state)))
        self._state.pop(key, None)
        self._state[key] = [now, 0]
        return suppressed


DEFAULT_LIMITER = LogLimiter()


def log_limited(
    logger: logging.Logger,
    level: int,
    key: Hashable,
    msg: str,
    *args: Any,
    exc_info: bool | BaseException = False,
    limiter: LogLimiter = DEFAULT_LIMITER,
) -> bool:
    """Log ``msg % args`` unless ``key`` was logged within the limiter's interval.

    Returns True when the line was written. A written line that follows
    dropped repeats ends with "(N similar messages suppressed)".
    """
    suppressed = limiter.check((logger.name, key))
    if suppressed is None:
        return False
    if suppressed:
        msg = f"{msg} ({suppressed} similar messages suppressed)"
    logger.log(level, msg, *args, exc_info=exc_info)
    return True


class RateLimitFilter(logging.Filter):
    """The same limit for a logger we do not call ourselves (aiohttp's request errors)."""

    def __init__(self, limiter: LogLimiter | None = None) -> None:
        super().__init__()
        self.limiter = limiter if limiter is not None else LogLimiter()

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        suppressed = self.limiter.check((record.name, record.levelno, str(record.msg), exc_type))
        if suppressed is None:
            return False
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} similar messages suppressed)"
        return True
