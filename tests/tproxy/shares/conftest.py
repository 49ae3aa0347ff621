"""Fixtures of the share-log tests: settings on a fresh embedded engine, the HTTP front, share logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devnet.chdb_front import ChdbHttpFront
from tests.helpers.share_log import fast_settings
from tproxy.shares.settings import ClickHouseSettings


@pytest.fixture
def embedded(tmp_path: Path) -> ClickHouseSettings:
    return fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool")


@pytest.fixture
def front(tmp_path: Path) -> Iterator[ChdbHttpFront]:
    f = ChdbHttpFront(str(tmp_path / "front-db"))
    f.start()
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
async def opened() -> Any:
    """``opened(ShareLog(...))`` starts a share log and guarantees close() at teardown,
    so a failed test does not leave the process's chdb engine open on its path."""
    from tproxy.shares.pipeline import ShareLog

    logs: list[ShareLog] = []

    async def _open(log: ShareLog) -> ShareLog:
        logs.append(log)
        await log.start()
        return log

    yield _open
    for log in logs:
        await log.close()
