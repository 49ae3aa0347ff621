"""The image's entry point and health probe, run here with this venv and the
Dockerfile's ENV (there is no Docker engine on the test machine).

* ``chdb://`` share log in an image without chdb: one line naming
  TPROXY__CLICKHOUSE__URL, exit 2, nothing started. The image without chdb is
  reproduced by a ``chdb`` package on PYTHONPATH whose import fails (the venv
  has the real one): the only stand-in in these tests.
* A bad config: one line, exit 2.
* A server URL: the entry point execs ``tproxy run``; the probe, following
  TPROXY__MONITORING__PORT, turns healthy once the proxy has its pool channel,
  and SIGTERM stops the proxy cleanly.
* The probe takes the port from the config file when the variable is unset,
  reports 503 with the proxy's reason, and fails on a closed port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devnet.pool import DevPool, PoolSettings
from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
from tests.helpers.deploy import REPO, image_env
from tproxy.config import DownstreamSettings, MonitoringSettings, Settings, UpstreamSettings
from tproxy.runtime import Proxy

ENTRYPOINT = REPO / "docker" / "entrypoint.py"
HEALTHCHECK = REPO / "docker" / "healthcheck.py"
CONFIG = REPO / "config-examples" / "tproxy.toml"


@pytest.fixture()
def no_chdb(tmp_path: Path) -> Path:
    stub = tmp_path / "no-chdb" / "chdb"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('raise ImportError("stand-in: this image has no chdb")\n')
    return stub.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment with the image's ENV, paths moved into tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TPROXY")}
    env.update(image_env())
    env["TPROXY_CONFIG"] = str(CONFIG)
    env["TPROXY__CLICKHOUSE__SPOOL_DIR"] = str(tmp_path / "spool")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `tproxy` of this venv
    env.update(extra)
    return env


def _run(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args], env=env, cwd=env.get("HOME", "/"),
                          capture_output=True, text=True, timeout=60, check=False)


def test_refuses_chdb_url_without_chdb(tmp_path: Path, no_chdb: Path) -> None:
    r = _run(ENTRYPOINT, _env(tmp_path, PYTHONPATH=str(no_chdb)))
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "TPROXY__CLICKHOUSE__URL" in lines[0] and "chdb://" in lines[0]
    assert not (tmp_path / "spool").exists()  # nothing was started


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    r = _run(ENTRYPOINT, _env(tmp_path, TPROXY__DOWNSTREAM__PORT="not-a-port"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "downstream.port" in lines[0] and "Traceback" not in r.stderr


def test_other_commands_go_to_tproxy(tmp_path: Path, no_chdb: Path) -> None:
    # `docker run IMAGE keygen`: no preflight (so no chdb needed), tproxy's own command.
    r = _run(ENTRYPOINT, _env(tmp_path, PYTHONPATH=str(no_chdb)), "keygen")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("authority_pubkey = ")


def _pool() -> tuple[DevPool, str]:
    secret, xonly = generate_keypair()
    pool = DevPool(PoolSettings(port=0, authority_secret_key=encode_secret_key(secret),  # type: ignore[arg-type]
                                new_block_interval_s=0, new_job_interval_s=0))
    return pool, encode_public_key(xonly)


async def _probe(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_run, HEALTHCHECK, env)


async def _until_healthy(env: dict[str, str], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60  # a generous bound for a loaded machine; not a performance check
    while True:
        r = await _probe(env)
        if r.returncode == 0:
            return
        assert proc.poll() is None, f"proxy exited {proc.returncode}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"never healthy: {r.stdout} / {log.read_text()[-2000:]}"
        await asyncio.sleep(0.3)


async def test_entrypoint_runs_the_proxy_and_the_probe_follows_the_port(tmp_path: Path, no_chdb: Path) -> None:
    pool, key = _pool()
    await pool.start()
    port = _free_port()
    upstreams = f'[{{"address":"127.0.0.1","port":{pool.port},"authority_pubkey":"{key}","user_identity":"farm"}}]'
    env = _env(
        tmp_path,
        PYTHONPATH=str(no_chdb),  # a server URL needs no chdb
        TPROXY__UPSTREAMS=upstreams,
        TPROXY__CLICKHOUSE__URL="http://127.0.0.1:1/mining",  # down: shares spool, health stays 200 meanwhile
        TPROXY__DOWNSTREAM__PORT="0",
        TPROXY__MONITORING__PORT=str(port),
    )
    closed = await _probe(env)
    assert closed.returncode == 1 and len(closed.stdout.strip().splitlines()) == 1
    assert f":{port}/health" in closed.stdout
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(ENTRYPOINT)], env=env, cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        await _until_healthy(env, proc, log)
        # Port from the config file when the variable is unset.
        cfg = tmp_path / "tproxy.toml"
        cfg.write_text(CONFIG.read_text().replace("port = 9092", f"port = {port}"))
        from_file = {k: v for k, v in env.items() if k != "TPROXY__MONITORING__PORT"}
        assert (await _probe({**from_file, "TPROXY_CONFIG": str(cfg)})).returncode == 0
        other = tmp_path / "other.toml"
        other.write_text(CONFIG.read_text().replace("port = 9092", f"port = {_free_port()}"))
        assert (await _probe({**from_file, "TPROXY_CONFIG": str(other)})).returncode == 1
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await pool.close()


@pytest.fixture()
def _unreachable_upstream_settings() -> Iterator[Settings]:
    _, xonly = generate_keypair()
    yield Settings(
        upstreams=[UpstreamSettings(address="127.0.0.1", port=_free_port(), authority_pubkey=encode_public_key(xonly))],
        downstream=DownstreamSettings(address="127.0.0.1", port=0),
        monitoring=MonitoringSettings(enabled=True, address="127.0.0.1", port=0, refresh_interval_s=0.1),
    )


async def test_probe_reports_503_with_the_reason(tmp_path: Path, _unreachable_upstream_settings: Settings) -> None:
    proxy = Proxy(_unreachable_upstream_settings, share_log=False)
    await proxy.start()
    try:
        env = _env(tmp_path, TPROXY__MONITORING__PORT=str(proxy.monitoring_port))
        r = await _probe(env)
        assert r.returncode == 1
        assert "answered 503" in r.stdout and "upstream not connected" in r.stdout, r.stdout
    finally:
        await proxy.close()


def test_probe_refuses_when_monitoring_is_disabled(tmp_path: Path) -> None:
    r = _run(HEALTHCHECK, _env(tmp_path, TPROXY__MONITORING__ENABLED="false"))
    assert r.returncode == 1 and "monitoring is disabled" in r.stdout
