"""Optional: the share log against a real ClickHouse server.

Runs only when ``TPROXY_TEST_CLICKHOUSE_URL`` is set (for example
``http://default:pw@127.0.0.1:8123``); skipped otherwise. Uses a throw-away
database and drops it afterwards.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.share_log import INSTANCE, fast_settings, shares
from tproxy.shares.pipeline import ShareLog
from tproxy.shares.spool import KIND_SHARES
from tproxy.shares.store import Store

URL = os.environ.get("TPROXY_TEST_CLICKHOUSE_URL")
pytestmark = pytest.mark.skipif(not URL, reason="TPROXY_TEST_CLICKHOUSE_URL not set")


async def test_real_server_exact_and_dedup(tmp_path: Path, opened: Any) -> None:
    assert URL is not None
    db = f"tproxy_test_{uuid.uuid4().hex[:8]}"
    s = fast_settings(URL, tmp_path / "spool", database=db, insert_timeout_s=10, connect_timeout_s=3)
    log = await opened(ShareLog(s, INSTANCE))
    try:
        sent = shares(20_000)
        for r in sent:
            log.submit(r)
        assert await log.flush(60)
        sc = log._store.schema
        (row,) = await log._query_rows(f"SELECT count(), uniqExact(share_seq) FROM {sc.q(sc.shares)}")
        assert row == (20_000, 20_000)
        (agg,) = await log._query_rows(f"SELECT sum(shares) FROM {sc.q(sc.minute)}")
        assert agg == (20_000,)
        store = Store(s, INSTANCE)
        try:
            rows = [(*r.as_row()[:2], 1, *r.as_row()[2:]) for r in sent[:100]]
            store.insert(KIND_SHARES, rows, "real-dup")
            store.insert(KIND_SHARES, rows, "real-dup")
            (row,) = store.query_rows(f"SELECT count() FROM {sc.q(sc.shares)}")
            assert row == (20_100,)
        finally:
            store.close()
        ws = await log.worker_hashrate(10)
        assert sum(w.shares for w in ws) == 20_100
    finally:
        await log._query_rows(f"DROP DATABASE IF EXISTS `{db}`")
