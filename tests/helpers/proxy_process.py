"""A real ``tproxy run`` process for the share-log crash tests: its config, start, SIGKILL,
SIGTERM, the dev pool it mines against, and the spool read from a copy on disk.

Shared by tests/tproxy/shares/test_proxy_crash.py and test_proxy_kill_load.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devnet.pool import DevPool, PoolSettings
from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
from tproxy.shares.spool import KIND_SHARES, Spool

REPO = Path(__file__).resolve().parents[3]
AUTH_SECRET, AUTH_XONLY = generate_keypair()
MINER_DIFF = 1e-10  # the target clamps to 2**256-1: every nonce is a valid share, no grinding
POOL_DIFF = 2.0**-32 / 0.25  # about a quarter of the shares meet the pool target and are forwarded
INSTANCE = "crash-proxy"


def pool() -> DevPool:
    return DevPool(PoolSettings(
        port=0, authority_secret_key=encode_secret_key(AUTH_SECRET), fixed_difficulty=POOL_DIFF,
        share_batch_size=1, new_block_interval_s=0, new_job_interval_s=0,
    ))


def write_config(path: Path, pool_port: int, url: str, spool: Path, *, batch_max_age_s: float = 0.05,
                 batch_size: int = 50, journal: bool = True, durability: str | None = None) -> None:
    # durability "sync" (the default) needs the journal; without it only "fast" is valid.
    durability = durability or ("sync" if journal else "fast")
    path.write_text(f"""
log_level = "info"
[[upstreams]]
address = "127.0.0.1"
port = {pool_port}
authority_pubkey = "{encode_public_key(AUTH_XONLY)}"
user_identity = "farm"

[downstream]
address = "127.0.0.1"
port = 0

[difficulty]
start_difficulty = {MINER_DIFF}
min_difficulty = {MINER_DIFF}
vardiff = false

[proxy]
instance_id = "{INSTANCE}"
job_keepalive_interval_s = 0

[monitoring]
enabled = false

[clickhouse]
url = "{url}"
spool_dir = "{spool}"
batch_size = {batch_size}
batch_max_age_s = {batch_max_age_s}
connect_timeout_s = 0.5
insert_timeout_s = 1
retry_backoff_base_s = 0.05
retry_backoff_max_s = 0.3
close_timeout_s = 3
journal_open_batches = {str(journal).lower()}
durability = "{durability}"
""")


class ProxyProcess:
    """``python -m tproxy.cli run --config FILE`` with its log in a file (read for the SV1 port)."""

    def __init__(self, config: Path, logfile: Path) -> None:
        self.logfile = logfile
        self._log = open(logfile, "w")  # noqa: SIM115 - closed in wait()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "tproxy.cli", "run", "--config", str(config)],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    def log(self) -> str:
        return self.logfile.read_text()

    async def sv1_port(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"listening for SV1 miners on 127\.0\.0\.1:(\d+)", self.log())
            if m:
                return int(m.group(1))
            assert self.p.poll() is None, f"proxy exited rc={self.p.returncode}:\n{self.log()}"
            await asyncio.sleep(0.05)
        raise AssertionError(f"proxy did not start listening:\n{self.log()}")

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.wait()
        assert self.p.returncode == -signal.SIGKILL

    def terminate(self) -> None:
        self.p.send_signal(signal.SIGTERM)
        self.wait()
        assert self.p.returncode == 0, self.log()

    def wait(self) -> None:
        try:
            self.p.wait(30)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait(5)
            self._log.close()


def spooled_shares(spool: Path, scratch: Path) -> int:
    """Share rows in the spool on disk, read from a copy (open() may cut a torn tail)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for f in sorted(spool.glob("*.seg")) + sorted(spool.glob("*.ack")) if spool.exists() else []:
        with contextlib.suppress(FileNotFoundError):  # the live proxy may delete a file meanwhile
            shutil.copyfile(f, scratch / f.name)
    s = Spool(scratch, fsync=False)
    s.open()
    n = s.pending_by_kind[KIND_SHARES]
    s.close()
    return n


async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


