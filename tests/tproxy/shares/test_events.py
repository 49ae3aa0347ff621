"""Events and worker_state (issue 13) in the share log: the schema (embedded engine and cluster
DDL), token deduplication of events, worker_state as the newest event's projection, and events
surviving a database outage plus a restart of the share log with no loss and no duplicates."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chdb
import pytest

from devnet.chdb_front import ChdbHttpFront
from tests.helpers.share_log import INSTANCE, fast_settings, wait_until
from tproxy.shares.pipeline import ShareLog
from tproxy.shares.record import EVENT_AUTHORIZE, EVENT_DIFFICULTY, EVENT_DISCONNECT, EventRecord
from tproxy.shares.schema import Schema
from tproxy.shares.settings import ClickHouseSettings
from tproxy.shares.spool import KIND_EVENTS
from tproxy.shares.store import Store


@pytest.fixture
def store(embedded: ClickHouseSettings) -> Iterator[Store]:
    st = Store(embedded, INSTANCE)
    try:
        yield st
    finally:
        st.close()


def worker_events(worker: str, n: int, t0: int, *, seq0: int = 1) -> list[EventRecord]:
    """authorize, n-2 difficulty changes, disconnect: each row carries the state after it."""
    out = [EventRecord(t0, INSTANCE, seq0, EVENT_AUTHORIZE, worker, 1, "10.0.0.1:4000", "cgminer/4",
                       difficulty=1.0, online=True, since_ms=t0)]
    for i in range(1, n - 1):
        out.append(EventRecord(t0 + i, INSTANCE, seq0 + i, EVENT_DIFFICULTY, worker, 1, "10.0.0.1:4000",
                               "cgminer/4", "vardiff", float(i), float(i + 1), online=True, since_ms=t0,
                               last_share_ms=t0 + i))
    out.append(EventRecord(t0 + n, INSTANCE, seq0 + n - 1, EVENT_DISCONNECT, worker, 1, "10.0.0.1:4000",
                           "cgminer/4", "closed", difficulty=float(n - 1), online=False, since_ms=t0 + n,
                           last_share_ms=t0 + n - 2))
    return out


def rows_of(records: list[EventRecord], run_id: int = 9) -> list[tuple[object, ...]]:
    out = []
    for r in records:
        row = list(r.as_row())
        row.insert(2, run_id)  # run_id follows instance_id in EVENT_COLUMNS
        out.append(tuple(row))
    return out


def test_events_deduplicated_and_state_is_newest_event(store: Store) -> None:
    assert store.migrate() == 2
    sc = store.schema
    t0 = int(time.time() * 1000)
    rows = rows_of(worker_events("rig17", 5, t0) + worker_events("rig18", 3, t0, seq0=100)[:2])
    for _ in range(3):
        store.insert(KIND_EVENTS, rows, "tok-E")
    assert store.query_rows(f"SELECT count() FROM {sc.q(sc.events)}")[0][0] == len(rows)
    state = store.query_rows(sc.worker_state_query(), {"instance_id": INSTANCE})
    by_name = {r[0]: r for r in state}
    # rig17 left: offline since its disconnect, last difficulty 4, last share kept.
    _name, online, since, last_share, diff, ua, addr, _cid, last_event, _upd = by_name["rig17"]
    assert (online, since, last_share, diff, ua, addr, last_event) == (
        False, t0 + 5, t0 + 3, 4.0, "cgminer/4", "10.0.0.1:4000", EVENT_DISCONNECT)
    assert by_name["rig18"][1] is True and by_name["rig18"][8] == EVENT_DIFFICULTY
    page = store.query_rows(sc.events_query(worker=True, event_type=False, since=False),
                            {"instance_id": INSTANCE, "worker": "rig17", "limit": 2, "offset": 0})
    assert [r[3] for r in page] == [EVENT_DISCONNECT, EVENT_DIFFICULTY]  # newest first


def test_cluster_ddl_of_events_parses() -> None:
    sc = Schema(ClickHouseSettings(url="http://h:8123", cluster="farm", database="mining", table_prefix="p_"))
    stmts = sc.v2_statements()
    text = "\n".join(stmts)
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', version)" in text
    assert "ENGINE = Distributed(`farm`, `mining`, `p_events_local`, cityHash64(instance_id, worker_name))" in text
    assert "FROM `mining`.`p_events_local`" in text
    conn = chdb.connect(":memory:")
    try:
        for x in [*stmts, sc.worker_state_query(), sc.events_query(worker=True, event_type=True, since=True)]:
            lit = "'" + x.replace("\\", "\\\\").replace("'", "\\'") + "'"
            assert str(conn.query(f"SELECT formatQuery({lit})", "TSVRaw")).strip(), x
    finally:
        conn.close()


async def test_events_survive_outage_and_restart(front: ChdbHttpFront, tmp_path: Path, opened: Any) -> None:
    s = fast_settings(front.url, tmp_path / "spool", batch_size=50, insert_timeout_s=1.0, connect_timeout_s=1.0)
    t0 = int(time.time() * 1000)
    first = await opened(ShareLog(s, INSTANCE))
    for r in worker_events("a", 40, t0):
        first.submit_event(r)
    assert await first.flush(20)
    front.stop()  # database down: the next events go to the spool
    later = worker_events("b", 120, t0 + 1000, seq0=1000)
    for r in later[:60]:
        first.submit_event(r)
    await wait_until(lambda: first.stats().events_pending == 60 and not first._mem[KIND_EVENTS], what="spooled")
    await first.close()  # a restart of the proxy while the database is still down
    front.start()
    second = await opened(ShareLog(s, INSTANCE))
    for r in later[60:]:
        second.submit_event(r)
    assert await second.flush(30)
    assert int(front.scalar("SELECT count() FROM tproxy.events")) == 160
    assert int(front.scalar("SELECT uniqExact(worker_name, event_seq) FROM tproxy.events")) == 160
    assert front.scalar("SELECT online FROM tproxy.worker_state FINAL WHERE worker_name = 'b'") in (0, False, "false")
    assert float(front.scalar("SELECT difficulty FROM tproxy.worker_state FINAL WHERE worker_name = 'b'")) == 119.0


def test_documented_example_queries_run_and_answer(tmp_path: Path) -> None:
    """The SQL of docs/SHARE_LOG.md "Example queries" runs on the embedded engine and gives the
    expected answers for a worker that was away 5 minutes and came back once."""
    import re

    st = Store(fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool"), "farm1-proxy-a")
    try:
        st.migrate()
        t0 = int(time.time() * 1000) - 1_800_000
        evs = [
            EventRecord(t0, "farm1-proxy-a", 1, EVENT_AUTHORIZE, "farm.rig17", 1, "a", "u", online=True, since_ms=t0),
            EventRecord(t0 + 600_000, "farm1-proxy-a", 2, EVENT_DISCONNECT, "farm.rig17", 1, "a", "u", "idle",
                        online=False, since_ms=t0 + 600_000),
            EventRecord(t0 + 900_000, "farm1-proxy-a", 3, EVENT_AUTHORIZE, "farm.rig17", 2, "a", "u", online=True,
                        since_ms=t0 + 900_000),
        ]
        st.insert(KIND_EVENTS, rows_of(evs), "doc")
        doc = (Path(__file__).parents[3] / "docs" / "SHARE_LOG.md").read_text()
        downtime, reconnects, why = re.findall(r"```sql\n(.*?)```", doc[doc.index("### Example queries"):], re.S)[:3]
        assert sum(r[2] for r in st.query_rows(downtime)) == 5.0  # minutes offline
        assert sum(r[2] for r in st.query_rows(reconnects)) == 1
        assert [(r[1], r[2]) for r in st.query_rows(why)] == [(EVENT_DISCONNECT, "idle")]
    finally:
        st.close()
