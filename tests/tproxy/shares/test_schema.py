"""Schema: idempotent versioned migrations, TTL follows the setting, dedup tokens really
deduplicate on the embedded engine (table and aggregate), cluster DDL is well-formed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import chdb
import pytest

from tests.helpers.share_log import INSTANCE, fast_settings, shares
from tproxy.shares.schema import Schema
from tproxy.shares.settings import ClickHouseSettings
from tproxy.shares.spool import KIND_SHARES
from tproxy.shares.store import Store


@pytest.fixture
def store(embedded: ClickHouseSettings) -> Iterator[Store]:
    st = Store(embedded, INSTANCE)
    try:
        yield st
    finally:
        st.close()


def share_rows(n: int, run_id: int = 7) -> list[tuple[object, ...]]:
    out = []
    for r in shares(n):
        row = list(r.as_row())
        row.insert(2, run_id)  # run_id follows instance_id in SHARE_COLUMNS
        out.append(tuple(row))
    return out


def test_migrations_idempotent_and_versioned(store: Store) -> None:
    assert store.migrate() == 2
    assert store.migrate() == 2
    sc = store.schema
    rows = store.query_rows(f"SELECT version, count() FROM {sc.q(sc.migrations_table)} GROUP BY version ORDER BY version")
    assert rows == [(1, 1), (2, 1)]
    tables = {r[0] for r in store.query_rows("SELECT name FROM system.tables WHERE database = 'tproxy'")}
    assert {"shares", "pool_verdicts", "worker_minute", "worker_minute_mv", "shares_with_verdict", "schema_migrations"} <= tables
    engine = store.query_rows("SELECT engine_full FROM system.tables WHERE database='tproxy' AND name='shares'")[0][0]
    assert "PARTITION BY toYYYYMMDD(received_at)" in engine and "ORDER BY (worker_name, received_at)" in engine
    assert "toIntervalDay(180)" in engine and "non_replicated_deduplication_window = 10000" in engine


def test_ttl_follows_setting(tmp_path: Path) -> None:
    s = fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool", ttl_days=30)
    st = Store(s, INSTANCE)
    try:
        st.migrate()
        q = "SELECT engine_full FROM system.tables WHERE database='tproxy' AND name='shares'"
        assert "toIntervalDay(30)" in st.query_rows(q)[0][0]
        st2 = Store(fast_settings(s.url, tmp_path / "spool", ttl_days=7), INSTANCE)
        st2._client = st.client  # same engine handle
        st2.migrate()
        assert "toIntervalDay(7)" in st.query_rows(q)[0][0]
        st3 = Store(fast_settings(s.url, tmp_path / "spool", ttl_days=0), INSTANCE)
        st3._client = st.client
        st3.migrate()
        assert "TTL" not in st.query_rows(q)[0][0]
    finally:
        st.close()


def test_same_token_is_deduplicated_in_table_and_aggregate(store: Store) -> None:
    store.migrate()
    sc = store.schema
    rows = share_rows(1000)
    for _ in range(3):
        store.insert(KIND_SHARES, rows, "tok-A")
    count = lambda: store.query_rows(f"SELECT count() FROM {sc.q(sc.shares)}")[0][0]  # noqa: E731
    agg = lambda: store.query_rows(f"SELECT sum(shares) FROM {sc.q(sc.minute)}")[0][0]  # noqa: E731
    assert count() == 1000 and agg() == 1000
    store.insert(KIND_SHARES, rows, "tok-B")  # a different batch with equal content is kept
    assert count() == 2000 and agg() == 2000
    # A token is remembered across a restart of the engine (the window is on disk).
    store.reset()
    store.insert(KIND_SHARES, rows, "tok-A")
    assert count() == 2000 and agg() == 2000


def test_cluster_ddl_is_replicated_distributed_and_parses(tmp_path: Path) -> None:
    s = ClickHouseSettings(url="http://h:8123", cluster="farm", database="mining", table_prefix="p_")
    sc = Schema(s)
    stmts = [sc.create_database(), sc.create_migrations_table(), *sc.v1_statements()]
    assert all("ON CLUSTER `farm`" in x for x in stmts)
    text = "\n".join(stmts)
    assert "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')" in text
    assert "ReplicatedAggregatingMergeTree(" in text
    assert "`mining`.`p_shares_local`" in text and "`mining`.`p_worker_minute_local`" in text
    assert text.count("ENGINE = Distributed(`farm`, `mining`, `p_shares_local`, cityHash64(instance_id, run_id, share_seq))") == 1
    assert "replicated_deduplication_window = 10000" in text
    assert "FROM `mining`.`p_shares_local`" in text  # the MV reads the local table
    # Every statement is valid ClickHouse syntax (the engine's own parser).
    conn = chdb.connect(":memory:")
    try:
        for x in [*stmts, sc.modify_ttl(sc.local(sc.shares), "received_at"), sc.worker_hashrate_query()]:
            lit = "'" + x.replace("\\", "\\\\").replace("'", "\\'") + "'"
            out = str(conn.query(f"SELECT formatQuery({lit})", "TSVRaw"))
            assert out.strip(), x
    finally:
        conn.close()


def test_hashrate_query_agrees_with_raw(store: Store) -> None:
    store.migrate()
    sc = store.schema
    store.insert(KIND_SHARES, share_rows(5000), "tok-H")
    start = (int(time.time()) // 60 - 9) * 60
    p = {"instance_id": INSTANCE, "window_start": start}
    assert store.query_rows(sc.worker_hashrate_query(), p) == store.query_rows(sc.raw_worker_query(), p)
