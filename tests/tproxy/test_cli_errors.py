"""``tproxy`` on user mistakes: exit code 2, one stderr line naming the thing, never a traceback.

Every case runs the installed console script as a subprocess (from a temporary
directory, with no ``TPROXY__*`` variable inherited), the way an operator meets
it. Also: ``--version``, flags after the subcommand, bare ``tproxy``,
``check-config`` (secrets masked), the start banner of ``tproxy run`` and the
periodic status line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from devnet.pool import DevPool, PoolSettings
from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
from tests.helpers.sv1_client import Sv1TestClient
from tproxy.cli import build_parser
from tproxy.config import Settings, UpstreamSettings, load_settings, masked_dict
from tproxy.runtime import Proxy
from tproxy.startup import reporting, status_line

CONSOLE_SCRIPT = Path(sys.executable).parent / "tproxy"
SRI_DEV_PUBKEY = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72"


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def config_text(tmp_path: Path, **overrides: dict[str, str]) -> str:
    """A runnable config: closed upstream and database, listeners on free ports, spool in tmp_path.

    ``overrides``: per section, TOML values (``'"text"'``, ``"3"``) that replace or add keys.
    """
    sections: dict[str, dict[str, str]] = {
        "downstream": {"address": '"127.0.0.1"', "port": "0"},
        "monitoring": {"enabled": "true", "address": '"127.0.0.1"', "port": "0"},
        "clickhouse": {
            "url": f'"http://127.0.0.1:{closed_port()}/db"',
            "spool_dir": f'"{tmp_path / "spool"}"',
            "close_timeout_s": "1",
            "connect_timeout_s": "1",
        },
    }
    for name, values in overrides.items():
        sections.setdefault(name, {}).update(values)
    text = (
        f'[[upstreams]]\naddress = "127.0.0.1"\nport = {closed_port()}\n'
        f'authority_pubkey = "{SRI_DEV_PUBKEY}"\nuser_identity = "farm1"\n'
    )
    for name, values in sections.items():
        text += f"\n[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
    return text


def write_config(tmp_path: Path, text: str | None = None, /, **overrides: dict[str, str]) -> Path:
    p = tmp_path / "tproxy.toml"
    p.write_text(text if text is not None else config_text(tmp_path, **overrides))
    return p


@pytest.fixture(autouse=True)
def _no_tproxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.upper().startswith("TPROXY__"):
            monkeypatch.delenv(k)


def without_none(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` minus its None values, at any depth (TOML has no null: check-config comments them out)."""
    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items() if x is not None}
        return [walk(x) for x in v] if isinstance(v, list) else v

    out: dict[str, Any] = walk(d)
    return out


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TPROXY__")}
    env.update(extra)
    return env


def tproxy(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
        env=env if env is not None else clean_env(),
    )


def error_line(r: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a failed command (asserting exit 2, one line, no traceback)."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert r.returncode == 2, r.stderr
    assert lines[0].startswith("tproxy: configuration error: "), lines[0]
    return lines[0]


def run_error(tmp_path: Path, cfg: Path | None = None, /, **env: str) -> str:
    return error_line(tproxy("run", "--config", str(cfg or write_config(tmp_path)), cwd=tmp_path, env=clean_env(**env)))


# ------------------------------------------------------------------ listeners


def test_sv1_port_in_use(tmp_path: Path, busy_port: int) -> None:
    line = run_error(tmp_path, TPROXY__DOWNSTREAM__PORT=str(busy_port))
    assert f"downstream.port {busy_port}: address already in use" in line


def test_monitoring_port_in_use(tmp_path: Path, busy_port: int) -> None:
    line = run_error(tmp_path, TPROXY__MONITORING__PORT=str(busy_port))
    assert f"monitoring.port {busy_port}: address already in use" in line


@pytest.mark.parametrize(
    ("section", "address", "error"),
    [
        ("downstream", "nonexistent.invalid", "does not resolve"),
        ("monitoring", "nonexistent.invalid", "does not resolve"),
        ("monitoring", "192.0.2.1", "not an address of this host"),  # TEST-NET-1: nobody's
    ],
)
def test_listen_address_that_cannot_be_used(tmp_path: Path, section: str, address: str, error: str) -> None:
    cfg = write_config(tmp_path, **{section: {"address": f'"{address}"'}})
    line = run_error(tmp_path, cfg)
    assert f"{section}.address '{address}': {error}" in line


# ------------------------------------------------------------------ configuration values


def test_empty_token_in_the_file(tmp_path: Path) -> None:
    line = run_error(tmp_path, write_config(tmp_path, monitoring={"token": '""'}))
    assert "monitoring.token: must not be empty" in line


@pytest.mark.parametrize("token", ["", "two words", "caf\u00e9"])
def test_invalid_token_from_the_environment(tmp_path: Path, token: str) -> None:
    line = run_error(tmp_path, TPROXY__MONITORING__TOKEN=token)
    assert "monitoring.token (from TPROXY__MONITORING__TOKEN): " in line
    if token:
        assert token not in line  # a secret, even a bad one, is not echoed


@pytest.mark.parametrize(
    "name", ["TPROXY__BOGUS", "tproxy__downstream__bogus", "TPROXY__Monitoring__Tokn", "TPROXY__UPSTREAMS__0__PORT"]
)
def test_unknown_environment_variable(tmp_path: Path, name: str) -> None:
    line = run_error(tmp_path, **{name: "1"})
    assert f"environment variable {name}: no such setting" in line


@pytest.mark.parametrize("name", ["TPROXY__UPSTREAMS", "TPROXY__DOWNSTREAM"])
def test_bad_json_in_an_environment_variable(tmp_path: Path, name: str) -> None:
    cfg = write_config(tmp_path)
    line = run_error(tmp_path, cfg, **{name: '[{"address": '})
    assert f"environment variable {name}: not valid JSON" in line
    assert str(cfg) not in line  # the file is not to blame


def test_bad_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    line = run_error(tmp_path, TPROXY__DOWNSTREAM__PORT="abc")
    assert "downstream.port (from TPROXY__DOWNSTREAM__PORT): " in line


@pytest.mark.parametrize(("where", "key"), [("top", "bogus"), ("proxy", "proxy.bogus"), ("upstreams", "upstreams[0].bogus")])
def test_unknown_key_in_the_file(tmp_path: Path, where: str, key: str) -> None:
    text = config_text(tmp_path)
    if where == "top":
        text = "bogus = 1\n" + text
    elif where == "upstreams":
        text = text.replace("[[upstreams]]\n", "[[upstreams]]\nbogus = 1\n")
    else:
        text += "\n[proxy]\nbogus = 1\n"
    assert run_error(tmp_path, write_config(tmp_path, text)).endswith(f": {key}: Extra inputs are not permitted")


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert run_error(tmp_path, missing).endswith(f"config file not found: {missing}")


def test_unreadable_config_file(tmp_path: Path) -> None:
    # The tests run as root, for whom chmod 000 hides nothing: a directory cannot be read as a file.
    (tmp_path / "conf.d").mkdir()
    assert run_error(tmp_path, tmp_path / "conf.d").endswith(f"config file {tmp_path / 'conf.d'}: is a directory")


def test_config_file_that_is_not_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "binary.toml"
    cfg.write_bytes(b"\xff\xfe[[upstreams]\n")  # not even UTF-8
    assert f"{cfg}: " in run_error(tmp_path, cfg)


@pytest.mark.parametrize("kind", ["under a file", "is a file"])
def test_unusable_spool_dir(tmp_path: Path, kind: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    spool = blocker / "spool" if kind == "under a file" else blocker
    line = run_error(tmp_path, TPROXY__CLICKHOUSE__SPOOL_DIR=str(spool))
    assert f"clickhouse.spool_dir '{spool}': " in line and "is not a directory" in line
    assert not (tmp_path / "spool").exists()  # nothing was started


# ------------------------------------------------------------------ flags and commands


@pytest.mark.parametrize("argv", [["--version"], ["run", "--version"], ["check-config", "--version"]])
def test_version(tmp_path: Path, argv: list[str]) -> None:
    r = tproxy(*argv, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"tproxy {version('tproxy')}"


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["run", "--log-level", "debug"], "debug"),
        (["--log-level", "error", "run"], "error"),
        (["--log-level", "error", "run", "--log-level", "warning"], "warning"),
        (["check-config", "f.toml", "--log-level", "info"], "info"),
        (["run"], None),
    ],
)
def test_global_flags_before_or_after_the_subcommand(argv: list[str], level: str | None) -> None:
    args = build_parser({}).parse_args(argv)
    assert getattr(args, "log_level", None) == level


def test_flag_after_the_subcommand_on_the_command_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    r = tproxy("check-config", str(cfg), "--log-level", "debug", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = tproxy("check-config", "--config", str(cfg), "--log-level", "debug", cwd=tmp_path)
    assert r.returncode == 0 and tomllib.loads(r.stdout)["upstreams"], r.stderr
    r = tproxy("keygen", "--log-level", "warning", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("authority_pubkey = "), r.stderr


def test_bare_tproxy_prints_usage_and_exits_2(tmp_path: Path) -> None:
    r = tproxy(cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("usage: tproxy")
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, monitoring={"token": '"hunter2-token"'}, clickhouse={"username": '"u"', "password": '"hunter2-pass"'}
    )
    r = tproxy("check-config", str(cfg), cwd=tmp_path, env=clean_env(TPROXY__DOWNSTREAM__PORT="3333"))
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout + r.stderr
    shown = tomllib.loads(r.stdout)
    assert shown["monitoring"]["token"] == "***" and shown["clickhouse"]["password"] == "***"
    assert shown["downstream"]["port"] == 3333  # effective: the environment applied
    # What is printed is a config file: loaded back, it is the same configuration, secrets aside.
    again = tmp_path / "again.toml"
    again.write_text(r.stdout)
    assert without_none(masked_dict(load_settings(again))) == shown


def test_check_config_masks_a_password_given_in_the_url(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, clickhouse={"url": '"http://writer:hunter2-url@ch.example:8123/shares"'})
    r = tproxy("check-config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout
    assert 'url = "http://writer@ch.example:8123/shares"' in r.stdout


def test_check_config_reports_an_error_in_one_line(tmp_path: Path) -> None:
    line = error_line(tproxy("check-config", str(write_config(tmp_path, downstream={"port": "70000"})), cwd=tmp_path))
    assert "downstream.port" in line


# ------------------------------------------------------------------ banner and status line


async def test_run_prints_the_banner_then_stops_on_sigterm(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, monitoring={"token": '"hunter2-token"'})
    upstream_port = tomllib.loads(cfg.read_text())["upstreams"][0]["port"]
    child = await asyncio.create_subprocess_exec(
        str(CONSOLE_SCRIPT), "run", "--config", str(cfg), cwd=tmp_path, env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert child.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(120):  # until the banner's last line
            while not lines or "status line: every 300 s" not in lines[-1]:
                line = await child.stderr.readline()
                assert line, f"tproxy run exited early: {lines}"
                lines.append(line.decode().rstrip("\n"))
        child.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            _, rest = await child.communicate()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    text = "\n".join([*lines, rest.decode()])
    assert child.returncode == 0, text
    assert "Traceback" not in text and "hunter2" not in text
    assert re.search(r"SV1 miners connect to stratum\+tcp://127\.0\.0\.1:\d+$", text, re.M), text
    assert f"upstream: 127.0.0.1:{upstream_port} as 'farm1'" in text
    assert f"spool {tmp_path / 'spool'}" in text
    assert re.search(r"monitoring: http://127\.0\.0\.1:\d+/, bearer token required$", text, re.M), text


async def test_status_line_reports_miners_shares_and_upstream(caplog: pytest.LogCaptureFixture) -> None:
    secret, xonly = generate_keypair()
    diff = 1e-6  # ~4,300 hashes per share: fast in pure Python
    pool = DevPool(PoolSettings(
        port=0, authority_secret_key=encode_secret_key(secret), fixed_difficulty=diff,  # type: ignore[arg-type]
        share_batch_size=1, new_block_interval_s=0, new_job_interval_s=0,
    ))
    await pool.start()
    proxy = Proxy(Settings(
        upstreams=[UpstreamSettings(address="127.0.0.1", port=pool.port, authority_pubkey=encode_public_key(xonly))],
        downstream={"address": "127.0.0.1", "port": 0},  # type: ignore[arg-type]
        difficulty={"start_difficulty": diff, "min_difficulty": 1e-8, "vardiff": False},  # type: ignore[arg-type]
        status_interval_s=0.05,
    ), share_log=False)
    await proxy.start()
    try:
        c = await Sv1TestClient.connect(proxy.sv1_port)
        await c.handshake("farm.w1")
        job = await c.wait_job()
        assert (await c.submit("farm.w1", job, *c.find_share(job)))["result"] is True
        assert (await c.submit("farm.w1", job, *c.find_share(job, meets=False)))["error"] is not None
        line = status_line(proxy.monitoring_source)
        assert line.startswith(f"status: upstream 127.0.0.1:{pool.port} | 1 miners, ")
        assert "shares accepted 1, rejected 1" in line
        caplog.set_level(logging.INFO, logger="tproxy")
        with reporting(proxy):
            async with asyncio.timeout(30):
                while not any(r.getMessage().startswith("status: ") for r in caplog.records):
                    await asyncio.sleep(0.01)
        assert any(r.getMessage().startswith("SV1 miners connect to ") for r in caplog.records)
        await c.close()
    finally:
        await proxy.close()
        await pool.close()
