"""``tproxy pool | demo | miner``: devnet's commands reach the product CLI through entry points.

Run as subprocesses from a directory outside the repository, so the commands
come from the installed distribution's ``tproxy.commands`` entry points (the
way the console script finds them), not from the working directory.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from devnet.cli import parse_endpoint
from devnet.pool import DevPool, PoolSettings
from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
from tproxy.cli import COMMAND_GROUP, load_command, plugin_commands
from tproxy.config import Settings, UpstreamSettings
from tproxy.errors import ConfigError
from tproxy.runtime import Proxy

CONSOLE_SCRIPT = Path(sys.executable).parent / "tproxy"
DIFF = 1e-6  # ~4,300 hashes per share: fast in pure Python


def tproxy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tproxy.cli", *args], capture_output=True, text=True, timeout=120, cwd=cwd,
    )


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_devnet_commands_are_installed_entry_points() -> None:
    commands = plugin_commands()
    assert {"pool", "demo", "miner"} <= commands.keys(), (
        "devnet's tproxy.commands entry points are missing: reinstall (pip install -e .)"
    )
    assert "run" not in commands and "keygen" not in commands and "check-config" not in commands


def test_console_script_lists_the_plugin_commands(tmp_path: Path) -> None:
    assert CONSOLE_SCRIPT.is_file(), f"console script not installed at {CONSOLE_SCRIPT}"
    r = subprocess.run([str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    listed = re.search(r"\{(run,[a-z,-]+)\}", r.stdout)
    assert listed is not None, r.stdout
    assert set(listed.group(1).split(",")) == {"run", "check-config", "keygen", "import-sri", "pool", "demo", "miner"}


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ("pool", ["--config"]),
        ("demo", ["--miners", "--duration", "--non-aggregated", "--data-dir", "--monitoring-port"]),
        ("miner", ["endpoint", "--worker", "--dialect", "--hashrate-limit", "--duration", "--interval"]),
    ],
)
def test_command_help(command: str, flags: list[str], tmp_path: Path) -> None:
    r = tproxy(command, "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: tproxy {command}")
    for flag in flags:
        assert flag in r.stdout
    assert r.stderr == ""


def test_miner_against_a_closed_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    port = closed_port()
    r = tproxy("miner", f"127.0.0.1:{port}", "--duration", "5", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"tproxy miner: cannot connect to 127.0.0.1:{port}")
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("endpoint", ["nohostport", "127.0.0.1:", ":3333", "127.0.0.1:70000", "h:p"])
def test_miner_with_a_malformed_endpoint_is_one_line_and_exit_2(endpoint: str, tmp_path: Path) -> None:
    r = tproxy("miner", endpoint, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"tproxy: configuration error: endpoint {endpoint!r}: expected host:port"]


def test_demo_argument_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    r = tproxy("demo", "--miners", "0", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["tproxy: configuration error: --miners must be at least 1"]


def test_parse_endpoint_forms() -> None:
    assert parse_endpoint("127.0.0.1:34255") == ("127.0.0.1", 34255)
    assert parse_endpoint("stratum+tcp://proxy.farm:3333") == ("proxy.farm", 3333)
    assert parse_endpoint("[::1]:3333") == ("::1", 3333)
    with pytest.raises(ConfigError):
        parse_endpoint("stratum+tcp://proxy.farm")


def test_an_absent_plugin_package_is_skipped_silently(capsys: pytest.CaptureFixture[str]) -> None:
    # what the production image sees: the entry point is declared, devnet is not installed
    ep = EntryPoint(name="ghost", value="no_such_package_9f3.cli:command", group=COMMAND_GROUP)
    assert load_command(ep) is None
    assert capsys.readouterr().err == ""


def test_a_broken_plugin_is_one_warning_line(capsys: pytest.CaptureFixture[str]) -> None:
    ep = EntryPoint(name="broken", value="json:no_such_attribute", group=COMMAND_GROUP)
    assert load_command(ep) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tproxy: command 'broken' unavailable: AttributeError")


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    """Dev pool + proxy (no share log) on 127.0.0.1; every share meets the pool's target."""
    secret, xonly = generate_keypair()
    pool = DevPool(PoolSettings(
        port=0, authority_secret_key=encode_secret_key(secret), fixed_difficulty=DIFF,  # type: ignore[arg-type]
        share_batch_size=1, new_block_interval_s=0, new_job_interval_s=0,
    ))
    await pool.start()
    p = Proxy(Settings(
        upstreams=[UpstreamSettings(address="127.0.0.1", port=pool.port, authority_pubkey=encode_public_key(xonly))],
        downstream={"address": "127.0.0.1", "port": 0},  # type: ignore[arg-type]
        difficulty={"start_difficulty": DIFF, "min_difficulty": 1e-8, "vardiff": False},  # type: ignore[arg-type]
    ), share_log=False)
    await p.start()
    try:
        yield p
    finally:
        await p.close()
        await pool.close()


def _accepted(line: str) -> tuple[int, int] | None:
    m = re.search(r"accepted=(\d+)\s+rejected=(\d+)", line)
    return None if m is None else (int(m.group(1)), int(m.group(2)))


async def test_miner_mines_through_the_proxy_until_ctrl_c(proxy: Proxy, tmp_path: Path) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tproxy.cli", "miner", f"127.0.0.1:{proxy.sv1_port}",
        "--worker", "cli.w1", "--interval", "0.2",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(120):  # until the miner itself reports 3 accepted shares
            while (counts := _accepted(lines[-1] if lines else "")) is None or counts[0] < 3:
                line = await child.stdout.readline()
                assert line, f"miner exited early: {lines}"
                lines.append(line.decode().rstrip("\n"))
        names = {s.worker_name for s in (m.session for m in proxy.hub.miners.values())}
        child.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            rest, err = await child.communicate()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    lines += rest.decode().splitlines()
    assert names == {"cli.w1"}
    assert child.returncode == 130, err.decode()
    assert b"Traceback" not in err
    assert lines[0] == f"mining on 127.0.0.1:{proxy.sv1_port} as cli.w1 (cpuminer)"
    final = _accepted(lines[-1])  # the status line printed on Ctrl-C
    assert final is not None, lines[-1]
    assert final[0] >= 3 and final[1] == 0
    assert proxy.manager.shares_forwarded >= final[0]  # the pool's target is the miners': all forwarded
