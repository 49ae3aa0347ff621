"""ClickHouseSettings: defaults, URL forms, env overrides, and the password never shown."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.helpers.share_log import fast_settings
from tproxy.config import load_settings
from tproxy.shares.pipeline import ShareLog
from tproxy.shares.settings import ClickHouseSettings, redact_url

SRI_DEV_PUBKEY = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72"
MINIMAL = f'[[upstreams]]\naddress = "127.0.0.1"\nport = 34254\nauthority_pubkey = "{SRI_DEV_PUBKEY}"\n'


def test_defaults_embedded_relative_path() -> None:
    s = ClickHouseSettings()
    assert s.is_embedded and s.url == "chdb://./data/shares.chdb"
    assert Path(s.chdb_path).is_absolute() and s.chdb_path.endswith("data/shares.chdb")
    assert s.effective_database == "tproxy"


def test_password_in_url_moves_to_secret() -> None:
    s = ClickHouseSettings(url="https://alice:s3cr%40t-pw@ch.example:8443/mining")
    assert s.password is not None and s.password.get_secret_value() == "s3cr@t-pw"
    assert "s3cr" not in s.url and s.url == "https://alice@ch.example:8443/mining"
    assert s.effective_database == "mining"
    p = s.http_params()
    assert (p["host"], p["port"], p["username"], p["secure"]) == ("ch.example", 8443, "alice", True)
    text = repr(s) + str(s) + s.model_dump_json() + str(s.public_dict()) + s.redacted_url()
    assert "s3cr" not in text
    assert s.public_dict()["password"] == "***"


def test_redact_url() -> None:
    assert redact_url("http://u:pw@h:8123/db") == "http://u:***@h:8123/db"
    assert redact_url("http://h:8123") == "http://h:8123"


@pytest.mark.parametrize("url", ["mysql://h/db", "http://", "chdb://"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValidationError):
        ClickHouseSettings(url=url)


def test_env_overrides_through_the_central_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in list(os.environ):
        if k.upper().startswith("TPROXY__"):
            monkeypatch.delenv(k)
    cfg = tmp_path / "t.toml"
    cfg.write_text(MINIMAL + '[clickhouse]\nurl = "http://bob@h:8123"\nbatch_size = 10\n')
    monkeypatch.setenv("TPROXY__CLICKHOUSE__BATCH_SIZE", "4321")
    monkeypatch.setenv("TPROXY__CLICKHOUSE__PASSWORD", "env-secret-pw")
    monkeypatch.setenv("TPROXY__CLICKHOUSE__CLUSTER", "farm")
    s = load_settings(cfg)
    ch = s.clickhouse
    assert ch.batch_size == 4321 and ch.cluster == "farm"
    assert ch.password is not None and ch.password.get_secret_value() == "env-secret-pw"
    assert "env-secret-pw" not in repr(s) + s.model_dump_json() + str(ch.public_dict())


async def test_password_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A share log whose server is unreachable logs the failure, never the password."""
    caplog.set_level(logging.DEBUG)
    s = fast_settings("http://default:TopSecret-9f3@127.0.0.1:9/db", tmp_path / "spool")
    log = ShareLog(s, "pw-test")
    await log.start()
    from tests.helpers.share_log import shares

    for r in shares(10):
        log.submit(r)
    await log.close()
    assert log.stats().spooled == 10 and log.stats().dropped == 0
    assert "TopSecret-9f3" not in caplog.text
    assert "127.0.0.1:9" in caplog.text  # the failure itself is logged
