"""A process out of descriptors (EMFILE) while the database is down: the share log keeps
its reserve, treats what it cannot open as retry-later, quarantines nothing, and replays
every share exactly once when descriptors and the database are back. Each case runs the
share log in a child process (tests/tproxy/shares/fd_exhaust_child.py) whose
RLIMIT_NOFILE is used up by plain /dev/null descriptors, on a slow disk (each journal
fdatasync takes SLOW_SYNC_S longer meanwhile: the journal then holds the files of
several sealed batches at once, which once took the whole reserve)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devnet.chdb_front import ChdbHttpFront

REPO = Path(__file__).resolve().parents[3]
N1, N2 = 1500, 1500
SLOW_SYNC_S = 0.2


def read_event(p: subprocess.Popen[str], event: str, timeout: float = 120.0) -> dict[str, Any]:
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            err = p.stderr.read() if p.stderr else ""
            raise AssertionError(f"child exited before {event!r}: rc={p.wait()} stderr={err[-3000:]}")
        msg: dict[str, Any] = json.loads(line)
        if msg["event"] == event:
            return msg
    raise AssertionError(f"no {event!r} within {timeout}s")


@pytest.mark.parametrize("reserve", [8, 0], ids=["with-reserve", "no-reserve"])
def test_out_of_descriptors_then_recover(front: ChdbHttpFront, tmp_path: Path, reserve: int) -> None:
    spool = tmp_path / "spool"
    front.stop()
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.tproxy.shares.fd_exhaust_child", front.url, str(spool), str(N1), str(N2),
         str(reserve), str(SLOW_SYNC_S)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        spooled = read_event(p, "spooled")
        assert spooled["spool_pending"] == N1 and spooled["written"] == 0
        ex = read_event(p, "exhausted")
        assert ex["hogged"] > 100
        assert ex["quarantined"] == 0 and ex["quarantined_rows"] == 0
        if reserve:
            # The reserve covered every file the share log needed: nothing failed, the
            # journal stayed on, every batch reached the spool.
            assert ex["fs_errors"] == 0 and ex["journal_on"] and ex["spool_pending"] == N1 + N2, ex
        else:
            assert ex["fs_errors"] > 0, ex  # it did hit EMFILE, and took it as retry-later
        front.start()
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        done = read_event(p, "flushed")
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert done["flushed"] and p.returncode == 0
    assert (done["written"], done["quarantined"], done["quarantined_rows"], done["dropped"]) == (N1 + N2, 0, 0, 0)
    assert done["received"] == N1 + N2 and done["queued"] == 0 and done["spool_pending"] == 0
    assert not (spool / "quarantine").exists() or not list((spool / "quarantine").iterdir())
    assert int(front.scalar("SELECT count() FROM tproxy.shares")) == N1 + N2
    assert int(front.scalar("SELECT uniqExact(share_seq) FROM tproxy.shares")) == N1 + N2
