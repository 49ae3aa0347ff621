"""Difficulty memory: the difficulty each worker name had when it was last seen.

Owns one small local JSON file (``difficulty.memory_path``; by default
``difficulty_memory.json`` beside the share log's spool directory), so it
works with the embedded database, with the database down, and across
restarts. The hub reads it when a worker authorizes (a worker that comes
back starts where it left, not at ``start_difficulty``; a
``mining.suggest_difficulty`` still wins) and writes it on every difficulty
change and disconnect; the file is rewritten at most every
``FLUSH_INTERVAL_S`` (from ``Hub.tick``, on a thread of its own so the
event loop never waits for the disk) and at shutdown, atomically (temporary
file, fsync, rename). A SIGKILL loses at most the changes of the
last interval.

Without a path (a hub built without a persistent location, e.g. in tests) the
memory lives only as long as the process.

Bounded: at most ``max_workers`` entries (the least recently seen are
dropped) and entries older than ``max_age_s`` are forgotten. A missing or
damaged file is an empty memory (logged), never an error.
"""

from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("tproxy.sv1.diffmemory")

FLUSH_INTERVAL_S = 5.0
_FORMAT = 1


class DifficultyMemory:
    """worker name -> (difficulty, unix time last seen). Not thread-safe: the event loop only."""

    def __init__(self, path: str | Path | None, *, max_age_s: float, max_workers: int) -> None:
        self.path = Path(path) if path is not None else None  # None: kept in memory only
        self.max_age_s = max_age_s
        self.max_workers = max_workers
        self._entries: dict[str, tuple[float, float]] = {}  # insertion order = least recently seen first
        self._dirty = False
        self._last_flush = -math.inf
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future[bool] | None = None

    def load(self, now: float) -> int:
        """Read the file (at start); returns how many entries are kept."""
        if self.path is None:
            return 0
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            raw = data["workers"] if data.get("format") == _FORMAT else {}
            items = [(str(k), float(v[0]), float(v[1])) for k, v in raw.items()]
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            log.warning("difficulty memory %s unreadable (%s); starting empty", self.path, e)
            return 0
        items.sort(key=lambda x: x[2])
        for name, d, seen in items:
            if math.isfinite(d) and d > 0 and now - seen <= self.max_age_s:
                self._entries[name] = (d, seen)
        self._trim()
        return len(self._entries)

    def recall(self, worker: str, now: float) -> float | None:
        """The remembered difficulty of ``worker``, or None (unknown or older than max_age_s)."""
        e = self._entries.get(worker)
        if e is None or now - e[1] > self.max_age_s:
            return None
        return e[0]

    def remember(self, worker: str, difficulty: float, now: float) -> None:
        if not worker or not (math.isfinite(difficulty) and difficulty > 0):
            return
        self._entries.pop(worker, None)
        self._entries[worker] = (difficulty, now)
        self._dirty = True
        self._trim()

    def _trim(self) -> None:
        while len(self._entries) > self.max_workers:
            del self._entries[next(iter(self._entries))]

    def maybe_flush(self, now: float) -> None:
        """Debounced write (``Hub.tick``), on the memory's own thread; one write at a time."""
        if not self._dirty or self.path is None or now - self._last_flush < FLUSH_INTERVAL_S:
            return
        if self._pending is not None and not self._pending.done():
            return  # the previous write is still under way: the next tick tries again
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="diffmemory")
        self._last_flush = now
        self._dirty = False  # set again by the thread if the write fails
        self._pending = self._writer.submit(self._write, self._payload(now))

    def flush(self, now: float) -> bool:
        """Write the file now if anything changed (at shutdown; waits for a write under way).
        False if it could not be written."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None
        if not self._dirty or self.path is None:
            return True
        self._last_flush = now
        self._dirty = False
        return self._write(self._payload(now))

    def _payload(self, now: float) -> dict[str, Any]:
        live = {k: [d, seen] for k, (d, seen) in self._entries.items() if now - seen <= self.max_age_s}
        return {"format": _FORMAT, "workers": live}

    def _write(self, payload: dict[str, Any]) -> bool:
        assert self.path is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(payload, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("difficulty memory %s could not be written (%s); retried", self.path, e)
            self._dirty = True
            return False
        return True

    def __len__(self) -> int:
        return len(self._entries)
