"""``tproxy import-sri``: SRI translator configs of both layouts convert into configs our loader accepts.

Also: the mapping of each documented SRI key, the computed start difficulty,
one-line errors with exit 2, and a converted config that actually runs (dev
pool <-Noise-> proxy <-SV1-> a raw client that receives a mining.notify).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from devnet.pool import DevPool, PoolSettings
from sv2.keys import encode_public_key, encode_secret_key, generate_keypair
from tproxy.config import Settings, UpstreamSettings, load_settings
from tproxy.runtime import Proxy
from tproxy.sri_import import SriImportError, convert, render_toml, run, start_difficulty

REPO = Path(__file__).resolve().parents[2]
SRI_DIR = REPO / "config-examples" / "sri"
NEW_LAYOUT = SRI_DIR / "translator-config.toml"
OLD_LAYOUT = SRI_DIR / "proxy-config-legacy.toml"
DEV_KEY = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72"


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    # The loader honours TPROXY__* variables; the conversion is checked on its own.
    for k in list(os.environ):
        if k.upper().startswith("TPROXY__"):
            monkeypatch.delenv(k)


def _convert_to(tmp_path: Path, src: Path) -> tuple[Path, list[str]]:
    out = tmp_path / "tproxy.toml"
    notes: list[str] = []
    assert run(str(src), str(out), err=notes.append) == 0, notes
    return out, notes


def test_new_layout_converts_and_loads(tmp_path: Path) -> None:
    out, notes = _convert_to(tmp_path, NEW_LAYOUT)
    s = load_settings(out)
    assert [(u.address, u.port, u.user_identity) for u in s.upstreams] == [
        ("127.0.0.1", 34254, "farm1"),
        ("backup.pool.example", 34254, "farm1-backup"),
    ]
    assert s.upstreams[0].authority_pubkey == DEV_KEY
    assert (s.downstream.address, s.downstream.port, s.downstream.extranonce2_size) == ("0.0.0.0", 34255, 4)
    assert s.proxy.aggregate_channels is True
    assert s.proxy.job_keepalive_interval_s == 60
    assert (s.monitoring.enabled, s.monitoring.address, s.monitoring.port) == (True, "0.0.0.0", 9092)
    assert s.monitoring.refresh_interval_s == 15
    assert s.difficulty.vardiff is True and s.difficulty.shares_per_minute == 6
    # 10 TH/s at 6 shares/min: 1e13 * 60 / (6 * 2**32)
    assert math.isclose(s.difficulty.start_difficulty, 1e13 * 60 / (6 * 2**32), rel_tol=1e-12)
    assert s.proxy.nominal_hashrate_per_miner == 1e13
    assert s.proxy.instance_id.startswith("tproxy-")
    for key in ("verify_payout", "supported_extensions", "required_extensions", "log_file",
                "max_supported_version", "min_supported_version"):
        assert any(n.startswith(f"no equivalent: {key} ") for n in notes), key


def test_old_layout_converts_and_loads(tmp_path: Path) -> None:
    out, notes = _convert_to(tmp_path, OLD_LAYOUT)
    s = load_settings(out)
    assert [(u.address, u.port, u.authority_pubkey, u.user_identity) for u in s.upstreams] == [
        ("127.0.0.1", 34254, DEV_KEY, "")
    ]
    assert s.downstream.extranonce2_size == 8  # from min_extranonce2_size
    assert s.monitoring.enabled is False  # no monitoring_address: off, as in SRI
    assert math.isclose(s.difficulty.start_difficulty, 1e14 * 60 / (10 * 2**32), rel_tol=1e-12)
    assert any("channel_diff_update_interval" in n and n.startswith("no equivalent") for n in notes)
    assert any("channel_nominal_hashrate" in n and n.startswith("no equivalent") for n in notes)


def test_start_difficulty_formula() -> None:
    # 2**32 hashes per minute at 1 share/minute is difficulty 60 ... at 60 shares/minute, 1.
    assert start_difficulty(2.0**32 / 60, 1.0) == 1.0
    assert start_difficulty(2.0**32, 60.0) == 1.0


def _minimal(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "upstreams": [{"address": "pool.example", "port": 3333, "authority_pubkey": DEV_KEY, "user_identity": "me"}],
        "downstream_address": "0.0.0.0",
        "downstream_port": 34255,
    }
    base.update(extra)
    return base


def test_unknown_keys_are_reported_not_fatal() -> None:
    conv = convert(_minimal(shiny_new_option=1, downstream_difficulty_config={"surprise": True}))
    assert "unknown key, ignored: shiny_new_option" in conv.notes
    assert "unknown key, ignored: downstream_difficulty_config.surprise" in conv.notes


@pytest.mark.parametrize(
    ("sri", "fragment"),
    [
        ({"downstream_port": 34255}, "not an SRI translator config"),
        ({"downstream": {"port": 1}, "upstreams": []}, "looks like a tproxy config"),
        (_minimal(upstream_address="x"), "both [[upstreams]] and upstream_address"),
        (_minimal(downstream_port="34255"), "downstream_port: expected int"),
        (_minimal(downstream_port=70000), "downstream: port"),
        (_minimal(monitoring_address="9092"), "monitoring_address: expected ip:port"),
        (_minimal(downstream_difficulty_config={"min_individual_miner_hashrate": 0.0}), "must be positive"),
        (
            _minimal(upstreams=[{"address": "a", "port": 1, "authority_pubkey": "nope"}]),
            "upstreams[0]: authority_pubkey",
        ),
    ],
)
def test_bad_configs_are_refused(sri: dict[str, object], fragment: str) -> None:
    with pytest.raises(SriImportError) as e:
        convert(sri)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tproxy.cli", "import-sri", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )


def test_cli_stdout_is_a_loadable_config(tmp_path: Path) -> None:
    r = _cli(str(NEW_LAYOUT), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "mapped: downstream_port -> downstream.port = 34255" in r.stderr
    assert tomllib.loads(r.stdout)["downstream"]["port"] == 34255
    (tmp_path / "out.toml").write_text(r.stdout)
    assert load_settings(tmp_path / "out.toml").upstreams[1].address == "backup.pool.example"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "no such file"),
        ("this is = = not toml", "not valid TOML"),
        ('name = "just some toml"\n', "not an SRI translator config"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path: Path, content: str | None, fragment: str) -> None:
    src = tmp_path / "sri.toml"
    if content is not None:
        src.write_text(content)
    r = _cli(str(src), "-o", str(tmp_path / "out.toml"), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out.toml").exists()


# -- a converted config runs -----------------------------------------------------


async def _first_notify(port: int) -> dict[str, object]:
    """A minimal SV1 miner: subscribe, authorize, return the first mining.notify."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i, (method, params) in enumerate(
            [("mining.subscribe", ["sri-import-test"]), ("mining.authorize", ["farm1.w1", "x"])], start=1
        ):
            writer.write(json.dumps({"id": i, "method": method, "params": params}).encode() + b"\n")
        await writer.drain()
        while True:
            line = await reader.readline()
            assert line, "proxy closed the SV1 connection before sending a job"
            msg = json.loads(line)
            if msg.get("method") == "mining.notify":
                return dict(msg)
    finally:
        writer.close()


def _pool_key() -> tuple[str, str]:
    secret, xonly = generate_keypair()
    return encode_secret_key(secret), encode_public_key(xonly)


@pytest.mark.parametrize("src", [NEW_LAYOUT, OLD_LAYOUT], ids=["new-layout", "old-layout"])
async def test_converted_config_runs_against_the_dev_pool(tmp_path: Path, src: Path) -> None:
    out, _ = _convert_to(tmp_path, src)
    settings: Settings = load_settings(out)
    secret, public = _pool_key()
    pool = DevPool(PoolSettings(port=0, authority_secret_key=secret, new_block_interval_s=0, new_job_interval_s=0))  # type: ignore[arg-type]
    await pool.start()
    # Only what ties the converted config to this machine is overridden: the pool
    # address/key (the example points at a public dev key) and free local ports.
    settings.upstreams = [UpstreamSettings(address="127.0.0.1", port=pool.port, authority_pubkey=public,
                                           user_identity=settings.upstreams[0].user_identity)]
    settings.downstream.address, settings.downstream.port = "127.0.0.1", 0
    settings.monitoring.address, settings.monitoring.port = "127.0.0.1", 0
    proxy = Proxy(settings, share_log=False)
    try:
        await proxy.start()
        notify = await asyncio.wait_for(_first_notify(proxy.sv1_port), 20)
        params = notify["params"]
        assert isinstance(params, list) and len(params) == 9  # job id .. clean_jobs
    finally:
        await proxy.close()
        await pool.close()


def test_strings_survive_the_toml_round_trip(tmp_path: Path) -> None:
    identity = 'farm "north"\\rack\u00e9\t#1'
    conv = convert(_minimal(upstreams=[{"address": "pool.example", "port": 3333, "authority_pubkey": DEV_KEY,
                                         "user_identity": identity}],
                            monitoring_address="[::]:9092"))
    out = tmp_path / "t.toml"
    out.write_text(render_toml(conv, "x.toml"))
    s = load_settings(out)
    assert s.upstreams[0].user_identity == identity
    assert (s.monitoring.address, s.monitoring.port) == ("::", 9092)
