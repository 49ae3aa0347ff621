"""tproxy.config: TOML + TPROXY__ environment, errors that name the key, no secrets in repr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tproxy.config import load_settings
from tproxy.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SRI_DEV_PUBKEY = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72"

MINIMAL = f"""
[[upstreams]]
address = "127.0.0.1"
port = 34254
authority_pubkey = "{SRI_DEV_PUBKEY}"
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in list(os.environ):
        if k.upper().startswith("TPROXY__"):
            monkeypatch.delenv(k)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "tproxy.toml"
    p.write_text(text)
    return p


def test_example_config_loads_as_is() -> None:
    s = load_settings(REPO / "config-examples" / "tproxy.toml")
    assert s.upstreams[0].port == 34254
    assert s.downstream.extranonce2_size == 4
    assert s.monitoring.address == "127.0.0.1"
    assert s.downstream.max_past_jobs == 32 and s.proxy.verdict_timeout_s == 60


def test_defaults_are_safe(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL))
    assert s.monitoring.enabled is False and s.monitoring.address == "127.0.0.1"
    assert s.clickhouse.url.startswith("chdb://")
    assert s.downstream.max_connections <= 256**s.downstream.extranonce1_size
    assert s.downstream.max_past_jobs == 32  # as many jobs per miner as before the key existed
    assert s.proxy.verdict_timeout_s == 60.0


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TPROXY__DOWNSTREAM__PORT", "3333")
    monkeypatch.setenv("TPROXY__PROXY__AGGREGATE_CHANNELS", "false")
    monkeypatch.setenv("TPROXY__CLICKHOUSE__BATCH_SIZE", "77")
    s = load_settings(write(tmp_path, MINIMAL + "\n[downstream]\nport = 4444\n"))
    assert s.downstream.port == 3333
    assert s.proxy.aggregate_channels is False
    assert s.clickhouse.batch_size == 77


def test_upstreams_from_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TPROXY__UPSTREAMS", f'[{{"address": "10.0.0.1", "port": 3336, "authority_pubkey": "{SRI_DEV_PUBKEY}"}}]'
    )
    s = load_settings(None)
    assert s.upstreams[0].address == "10.0.0.1"


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[downstream]\nport = 70000\n", "downstream.port"),
        ("[downstream]\nextranonce2_size = 1\n", "downstream.extranonce2_size"),
        ("[downstream]\nversion_rolling_mask = \"xyz\"\n", "downstream.version_rolling_mask"),
        ("[difficulty]\nmin_difficulty = -1\n", "difficulty.min_difficulty"),
        ("[proxy]\nno_such_key = 1\n", "proxy.no_such_key"),
        ("[downstream]\nmax_past_jobs = 0\n", "downstream.max_past_jobs"),
        ("[proxy]\nverdict_timeout_s = 0\n", "proxy.verdict_timeout_s"),
        ("[downstream]\nmax_connections = 70000\nextranonce1_size = 2\n", "downstream"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(write(tmp_path, MINIMAL + extra))
    assert key in str(e.value)


def test_bad_authority_key_names_the_upstream(tmp_path: Path) -> None:
    text = MINIMAL.replace(SRI_DEV_PUBKEY, SRI_DEV_PUBKEY[:-1] + "x")
    with pytest.raises(ConfigError, match=r"upstreams\[0\]\.authority_pubkey"):
        load_settings(write(tmp_path, text))


def test_missing_upstreams_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="upstreams"):
        load_settings(write(tmp_path, "log_level = \"info\"\n"))


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, "[[upstreams]\naddress = "))


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    s = load_settings(
        write(tmp_path, MINIMAL + "\n[monitoring]\ntoken = \"hunter2-token\"\n[clickhouse]\nurl = \"http://u:hunter2-pass@h:8123/db\"\n")
    )
    text = repr(s) + str(s) + s.model_dump_json()
    assert "hunter2-token" not in text
    assert s.monitoring.token is not None and s.monitoring.token.get_secret_value() == "hunter2-token"


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, MINIMAL + "[downstream]\nport = \"abc\"\n")
    r = subprocess.run(
        [sys.executable, "-m", "tproxy.cli", "run", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert r.returncode == 2
    assert "downstream.port" in r.stderr
    assert "Traceback" not in r.stderr


# -- the environment: unknown names and malformed JSON name the variable ----------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("TPROXY__BOGUS", "bogus"),
        ("tproxy__downstream__bogus", "downstream.bogus"),
        ("TPROXY__DOWNSTREAM__PORT__EXTRA", "downstream.port.extra"),
        ("TPROXY__UPSTREAMS__0__PORT", "upstreams.0.port"),
        ("TPROXY__", "empty name"),
    ],
)
def test_unknown_environment_variable_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, shown: str
) -> None:
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError) as e:
        load_settings(write(tmp_path, MINIMAL))
    assert str(e.value) == f"environment variable {name}: no such setting ({shown})"


def test_environment_names_are_case_insensitive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("tproxy__Downstream__PORT", "3333")
    monkeypatch.setenv("TPROXY__LOG_LEVEL", "debug")
    s = load_settings(write(tmp_path, MINIMAL))
    assert s.downstream.port == 3333 and s.log_level == "debug"


def test_a_whole_section_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TPROXY__DOWNSTREAM", '{"port": 3334, "address": "127.0.0.1"}')
    s = load_settings(write(tmp_path, MINIMAL))
    assert (s.downstream.address, s.downstream.port) == ("127.0.0.1", 3334)


@pytest.mark.parametrize("name", ["TPROXY__UPSTREAMS", "TPROXY__DOWNSTREAM", "tproxy__monitoring"])
def test_bad_json_in_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    cfg = write(tmp_path, MINIMAL)
    monkeypatch.setenv(name, "[{oops")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    assert str(e.value).startswith(f"environment variable {name}: not valid JSON (")
    assert str(cfg) not in str(e.value)


def test_bad_environment_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TPROXY__DIFFICULTY__MIN_DIFFICULTY", "-1")
    monkeypatch.setenv("TPROXY__UPSTREAMS", '[{"address": "h", "port": 0, "authority_pubkey": "x"}]')
    with pytest.raises(ConfigError) as e:
        load_settings(write(tmp_path, MINIMAL))
    msg = str(e.value)
    assert "difficulty.min_difficulty (from TPROXY__DIFFICULTY__MIN_DIFFICULTY): " in msg
    assert "upstreams[0].port (from TPROXY__UPSTREAMS): " in msg
    assert "upstreams[0].authority_pubkey (from TPROXY__UPSTREAMS): not a valid authority public key" in msg
    assert "\n" not in msg


# -- files ---------------------------------------------------------------------------------


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*: is a directory$"):
        load_settings(tmp_path)


# -- the monitoring token ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "error"),
    [("", "must not be empty"), (" ", "printable ASCII"), ("a\tb", "printable ASCII"), ("p\u00e4ss", "printable ASCII")],
)
def test_bad_tokens_are_refused_without_echoing_them(tmp_path: Path, token: str, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(write(tmp_path, MINIMAL), monitoring={"token": token})
    assert str(e.value).startswith("monitoring.token: ") and error in str(e.value)
    if token.strip():
        assert token not in str(e.value)


def test_a_one_character_token_is_accepted(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL), monitoring={"token": "t"})
    assert s.monitoring.token is not None and s.monitoring.token.get_secret_value() == "t"


# -- check-config's rendering ----------------------------------------------------------------


def test_effective_config_as_toml_masks_secrets_and_loads_back(tmp_path: Path) -> None:
    import tomllib

    from tproxy.config import masked_dict, to_toml

    s = load_settings(
        write(tmp_path, MINIMAL + '[monitoring]\ntoken = "hunter2-token"\n[clickhouse]\nurl = "https://u:hunter2-pass@h/db"\n')
    )
    text = to_toml(masked_dict(s))
    assert "hunter2" not in text
    shown = tomllib.loads(text)
    assert shown["monitoring"]["token"] == "***" and shown["clickhouse"]["password"] == "***"
    assert shown["clickhouse"]["url"] == "https://u@h/db"
    assert "# cluster is not set" in text
    again = load_settings(write(tmp_path, text))
    assert masked_dict(again) == masked_dict(s)
    assert again.difficulty.min_difficulty == s.difficulty.min_difficulty == 1e-8
