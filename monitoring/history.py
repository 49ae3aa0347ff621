"""Farm hashrate history for the dashboard's chart: a small in-memory ring buffer.

Owns ``HashrateHistory``. The snapshot cache records one sample per build (the
sum of the SV1 clients' vardiff estimates, the same figure as
``sv1_clients.total_hashrate``); the history keeps those samples for the last
hour, and one sample per minute (the mean of that minute's samples) for the
last 24 hours. It is served pre-serialized at ``/api/v1/history``.

Why memory and not the share log: the dashboard must draw with or without a
database, and the proxy's own estimate is what the rest of the dashboard
shows. The price is that the history starts empty when the proxy restarts.
Memory is bounded: at most ``3600 / refresh_interval`` + 1440 samples.
"""

from __future__ import annotations

import json
import math
from collections import deque

HOUR_S = 3600.0
DAY_S = 86400.0
MINUTE_S = 60.0

_encode = json.JSONEncoder(separators=(",", ":")).encode


def _sample(at: float, hashrate: float) -> bytes:
    return b'{"at":%s,"hashrate":%s}' % (_encode(at).encode(), _encode(hashrate).encode())


class HashrateHistory:
    """Samples of one figure over the last hour (every record) and day (per-minute means).

    Each sample is serialized once, when it is stored, so ``body()`` is a join
    of ready bytes (about 2,000 of them at most): cheap enough for every
    snapshot build, which runs on the event loop.
    """

    def __init__(self) -> None:
        self._hour: deque[tuple[float, bytes]] = deque()  # (at, sample JSON)
        self._day: deque[tuple[float, bytes]] = deque()  # completed minutes: (minute start, mean JSON)
        self._minute: float | None = None  # start of the minute being accumulated
        self._minute_sum = 0.0
        self._minute_n = 0
        self._day_joined = b""  # the completed minutes, joined once per minute

    def record(self, at: float, hashrate: float) -> None:
        """Add one sample (non-finite or negative values count as 0)."""
        hr = hashrate if math.isfinite(hashrate) and hashrate > 0 else 0.0
        self._hour.append((at, _sample(at, hr)))
        while self._hour and self._hour[0][0] < at - HOUR_S:
            self._hour.popleft()
        minute = math.floor(at / MINUTE_S) * MINUTE_S
        if self._minute is not None and minute != self._minute:
            self._close_minute(minute)
        if self._minute is None or minute != self._minute:
            self._minute, self._minute_sum, self._minute_n = minute, 0.0, 0
        self._minute_sum += hr
        self._minute_n += 1

    def _close_minute(self, new_minute: float) -> None:
        """Store the finished minute; keep the 1439 minutes before ``new_minute`` (24 h with it)."""
        assert self._minute is not None and self._minute_n
        self._day.append((self._minute, _sample(self._minute, self._minute_sum / self._minute_n)))
        while self._day and self._day[0][0] <= new_minute - DAY_S:
            self._day.popleft()
        self._day_joined = b",".join(b for _, b in self._day)

    def body(self) -> bytes:
        """The ``HistoryResponse`` JSON: the day list ends with the current (partial) minute."""
        day = self._day_joined
        if self._minute is not None:
            current = _sample(self._minute, self._minute_sum / self._minute_n)
            day = day + b"," + current if day else current
        hour = b",".join(b for _, b in self._hour)
        return b'{"hour":[%b],"day":[%b]}' % (hour, day)


EMPTY_HISTORY = b'{"hour":[],"day":[]}'
