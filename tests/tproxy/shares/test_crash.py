"""Crash tests: a share-log process (``python -m devnet.loadgen``) is SIGKILLed while
the database is unreachable; a new process on the same spool replays it; the table holds
every share exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devnet.chdb_front import ChdbHttpFront

REPO = Path(__file__).resolve().parents[3]
N = 8000


def start_loadgen(url: str, spool: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "devnet.loadgen", "--url", url, "--spool-dir", str(spool),
         "--instance-id", "crash", "--batch-size", "500", "--insert-timeout", "1", *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def wait_event(p: subprocess.Popen[str], event: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    assert p.stdout is not None
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            raise AssertionError(f"loadgen exited before {event!r}: rc={p.poll()} stderr={p.stderr.read() if p.stderr else ''}")
        msg = json.loads(line)
        if msg["event"] == event:
            return msg
    raise AssertionError(f"no {event!r} within {timeout}s")


def kill(p: subprocess.Popen[str]) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert p.returncode == -signal.SIGKILL


def check(front: ChdbHttpFront) -> tuple[int, int, int]:
    return (
        int(front.scalar("SELECT count() FROM tproxy.shares")),
        int(front.scalar("SELECT uniqExact(share_seq) FROM tproxy.shares")),
        int(front.scalar("SELECT sum(shares) FROM tproxy.worker_minute")),
    )


def test_sigkill_with_database_down_then_replay(front: ChdbHttpFront, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    front.stop()  # the database is unreachable for the whole first life
    p = start_loadgen(front.url, spool, "--count", str(N), "--then", "hang")
    durable = wait_event(p, "durable")
    assert durable["spooled"] == N and durable["written"] == 0 and durable["dropped"] == 0
    kill(p)
    assert list(spool.glob("*.seg"))
    front.start()
    p2 = start_loadgen(front.url, spool, "--count", "0", "--then", "close")
    closed = wait_event(p2, "closed")
    p2.wait(30)
    assert closed["flushed"] and closed["replayed"] == N and closed["spool_pending"] == 0
    assert check(front) == (N, N, N)


def test_sigkill_after_inserts_landed_unacknowledged(front: ChdbHttpFront, tmp_path: Path) -> None:
    """The server executes every insert but never answers: the batches are both in the
    table and in the spool when the process dies. Replay must not duplicate them."""
    spool = tmp_path / "spool"
    first = start_loadgen(front.url, spool, "--count", "0", "--then", "close")  # creates the schema
    wait_event(first, "closed")
    first.wait(30)
    front.stall(execute=True, inserts_only=True)
    p = start_loadgen(front.url, spool, "--count", str(N), "--then", "hang", "--no-compress")
    durable = wait_event(p, "durable")
    assert durable["spooled"] == N and durable["dropped"] == 0
    time.sleep(0.5)  # let a retry or two land as well
    kill(p)
    front.unstall()
    landed = int(front.scalar("SELECT count() FROM tproxy.shares"))
    assert landed > 0  # some batches really are in the table already
    p2 = start_loadgen(front.url, spool, "--count", "0", "--then", "close")
    closed = wait_event(p2, "closed")
    p2.wait(30)
    assert closed["flushed"] and closed["replayed"] == N
    assert check(front) == (N, N, N)
