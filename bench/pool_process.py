"""The benchmarks' dev pool in a process of its own (in production the pool is remote).

Owns the bench pool's settings (every share valid for the miner, about
``forward_ratio`` of them meet the pool's target), the pool child
(``python bench/pool_process.py --forward-ratio R``: prints
``{"port": .., "pubkey": ..}`` once it listens, and ``{"pool_accepted": ..,
"pool_rejected": ..}`` when SIGTERM stops it; it ignores SIGINT, its parent
stops it) and ``PoolProcess``, the parent's handle: start, CPU seconds, stop
(with the counters), never left running.

bench_proxy.py and bench_workers.py run it by default, so that the proxy's CPU
per share and its event-loop stalls are the proxy's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def pool_settings(forward_ratio: float, secret: str) -> Any:
    """The bench pool: no new blocks or jobs; P(hash <= target(d)) = 2**-32 / d for uniform hashes."""
    from devnet.pool import PoolSettings

    return PoolSettings(
        port=0,
        authority_secret_key=secret,
        fixed_difficulty=2.0**-32 / forward_ratio,
        new_block_interval_s=0,
        new_job_interval_s=0,
        share_batch_size=10,
    )


async def serve(forward_ratio: float) -> None:
    """The child: the dev pool until SIGTERM, then its counters on stdout."""
    from devnet.pool import DevPool
    from sv2.keys import encode_public_key, encode_secret_key, generate_keypair

    secret, xonly = generate_keypair()
    pool = DevPool(pool_settings(forward_ratio, encode_secret_key(secret)))
    await pool.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"port": pool.port, "pubkey": encode_public_key(xonly)}), flush=True)
    await stop.wait()
    counters = {"pool_accepted": pool.total_accepted, "pool_rejected": pool.total_rejected}
    await pool.close()
    print(json.dumps(counters), flush=True)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PoolProcess:
    """The pool child, started at once; ``stop()`` ends it and returns its counters."""

    def __init__(self, forward_ratio: float) -> None:
        cmd = [sys.executable, __file__, "--forward-ratio", str(forward_ratio)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.counters: dict[str, int] = {}
        try:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the dev pool process exited before it listened")
            info = json.loads(line)
        except BaseException:
            self.stop()
            raise
        self.port: int = int(info["port"])
        self.pubkey: str = str(info["pubkey"])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def stop(self) -> dict[str, int]:
        """SIGTERM, then its counters (empty if it had died); killed if it does not exit in 10 s."""
        if self.proc.stdout is None or self.proc.stdout.closed:
            return self.counters  # stopped already
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        for line in reversed((out or "").splitlines()):
            with contextlib.suppress(ValueError):
                self.counters = json.loads(line)
                break
        return self.counters

    def __enter__(self) -> PoolProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--forward-ratio", type=float, default=0.1)
    args = ap.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    sys.path.insert(0, str(ROOT))
    asyncio.run(serve(args.forward_ratio))


if __name__ == "__main__":
    main()
