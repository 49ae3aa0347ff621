"""The dev pool in its own process (``tproxy pool``), so a test can SIGSTOP it: TCP stays open, nothing answers.

A stopped process is the real "hung pool" of issue 11.8: the kernel keeps
accepting and buffering, the pool never reads, answers or sends. The
authority key is ``tests.helpers.stack``'s, so ``proxy_settings`` works
unchanged. Used with ``with pool_process() as pool:``; the process is killed
(after SIGCONT) on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sv2.keys import encode_secret_key
from tests.helpers.stack import AUTH_SECRET, DIFF
from tests.helpers.waiting import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PoolProcess:
    proc: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        """SIGSTOP: the pool hangs with every connection open."""
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dev pool exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise TimeoutError("dev pool did not start listening")


@contextlib.contextmanager
def pool_process(tmp_path: Path, port: int | None = None) -> Iterator[PoolProcess]:
    """Start ``tproxy pool`` on ``port`` (a free one if None) and wait until it listens."""
    port = port or free_port()
    config = tmp_path / f"pool-{port}.toml"
    config.write_text(
        "\n".join(
            [
                'address = "127.0.0.1"',
                f"port = {port}",
                f'authority_secret_key = "{encode_secret_key(AUTH_SECRET)}"',
                f"fixed_difficulty = {DIFF!r}",
                "share_batch_size = 1",
                "new_block_interval_s = 0",
                "new_job_interval_s = 0",
            ]
        )
        + "\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPROXY")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tproxy.cli", "pool", "--config", str(config)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc)
        yield PoolProcess(proc, port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=HANG_GUARD_S)
