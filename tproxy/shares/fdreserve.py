"""FdReserve: descriptors the share log holds back so it can still open its files.

When something else in the process (say 20,000 idle monitoring connections)
uses every descriptor up to ``RLIMIT_NOFILE``, ``open()`` fails with EMFILE.
The share log must still be able to open its journal, spool segments, ack
files and the spool directory (for fsync). ``FdReserve`` opens ``size``
descriptors on ``/dev/null`` up front and:

* ``open(path, flags)``: tries ``os.open``; on EMFILE/ENFILE it closes one
  reserved descriptor and tries again (the freed slot is the lowest free
  one, so the second ``open`` normally gets it back; when another thread's
  ``open``/``socket`` took it in between, the next reserved one is freed);
* ``close(fd)``: instead of freeing the slot while the reserve is short, it
  ``dup2``s a ``/dev/null`` descriptor onto ``fd``: the slot changes hands
  atomically and no other part of the process can take it in between.

So the reserve keeps its size however often files are opened and closed.
``refill()`` tops it up when it ran short (e.g. two files open at once).
A failure that remains (no reserve left, ENOSPC, EACCES) is raised to the
caller, which treats it as retry-later. Thread-safe (one lock).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading

OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE})


class FdReserve:
    """A small pool of held descriptors (see the module docstring)."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._fds: list[int] = []
        self._lock = threading.Lock()
        self.refill()

    @property
    def held(self) -> int:
        return len(self._fds)

    def refill(self) -> None:
        with self._lock:
            while len(self._fds) < self.size:
                try:
                    self._fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
                except OSError:
                    return

    def open(self, path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
        try:
            return os.open(path, flags | os.O_CLOEXEC, mode)
        except OSError as e:
            if e.errno not in OUT_OF_FDS:
                raise
            with self._lock:
                while True:
                    if not self._fds:
                        raise
                    os.close(self._fds.pop())
                    try:
                        return os.open(path, flags | os.O_CLOEXEC, mode)
                    except OSError as again:
                        if again.errno not in OUT_OF_FDS:
                            raise

    def close(self, fd: int) -> None:
        with self._lock:
            if len(self._fds) < self.size and self._fds:
                try:
                    os.dup2(self._fds[0], fd, inheritable=False)  # the slot now holds /dev/null: still ours
                except OSError:
                    pass
                else:
                    self._fds.append(fd)
                    return
        os.close(fd)

    def close_all(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
