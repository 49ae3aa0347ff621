"""Events, worker_state and the difficulty memory through the whole stack (issue 13): dev pool
<-SV2-> Proxy (share log on an embedded chdb engine in tmp_path) <-SV1-> scripted clients over
127.0.0.1.

* connect, authorize, share, disconnect, reconnect: the events table holds exactly the expected
  rows in order, the upstream connection is an ``upstream_up`` row, and ``worker_state`` shows the
  worker online again with its user agent, address and last share;
* a worker mines until vardiff raises its difficulty, the proxy is restarted, the worker
  reconnects and its first ``mining.set_difficulty`` carries the remembered difficulty (and a
  worker that sends ``mining.suggest_difficulty`` gets its own figure instead);
* the database (HTTP front) is down while miners come and go over two proxy runs: every event
  of both runs lands exactly once once it is back.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from devnet.pool import DevPool
from monitoring.openapi import openapi_document
from tests.helpers.monitoring_http import raw_get, running
from tests.helpers.schema_check import ResponseChecker
from tests.helpers.share_log import fast_settings
from tests.helpers.stack import DIFF, pool_settings, proxy_settings
from tests.helpers.sv1_client import Sv1TestClient
from tproxy.config import Settings
from tproxy.runtime import Proxy
from tproxy.shares import record as r
from tproxy.shares.spool import KIND_EVENTS


async def until(pred: Any, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.02)


def settings_for(tmp_path: Path, pool: DevPool, **difficulty: Any) -> Settings:
    s = proxy_settings([pool.port])
    return s.model_copy(update={
        "clickhouse": fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool"),
        "difficulty": s.difficulty.model_copy(update=difficulty),
    })


async def events_of(proxy: Proxy) -> list[tuple[Any, ...]]:
    log = proxy.share_log
    assert log is not None and await log.flush(10)
    sc = log._store.schema
    return await log._query_rows(
        f"SELECT event_type, worker_name, reason, user_agent, address FROM {sc.q(sc.events)} "
        "ORDER BY run_id, event_seq")


async def test_connect_share_disconnect_reconnect_events_and_state(tmp_path: Path) -> None:
    pool = DevPool(pool_settings())
    await pool.start()
    proxy = Proxy(settings_for(tmp_path, pool))
    await proxy.start()
    try:
        c = await Sv1TestClient.connect(proxy.sv1_port)
        await c.handshake("farm.rig17")
        job = await c.wait_job()
        en2, ntime, nonce = c.find_share(job)
        assert (await c.submit("farm.rig17", job, en2, ntime, nonce))["result"] is True
        addr = f"127.0.0.1:{c.writer.get_extra_info('sockname')[1]}"
        await c.close()
        await until(lambda: not proxy.hub.miners, what="disconnect seen")
        c2 = await Sv1TestClient.connect(proxy.sv1_port)
        await c2.handshake("farm.rig17")
        await c2.wait_job()
        rows = await events_of(proxy)
        worker_rows = [x for x in rows if x[0] not in (r.EVENT_UPSTREAM_UP, r.EVENT_UPSTREAM_DOWN)]
        assert [(t, w, why) for t, w, why, _ua, _a in worker_rows] == [
            (r.EVENT_CONNECT, "", ""),
            (r.EVENT_AUTHORIZE, "farm.rig17", ""),
            (r.EVENT_DISCONNECT, "farm.rig17", "closed"),
            (r.EVENT_CONNECT, "", ""),
            (r.EVENT_AUTHORIZE, "farm.rig17", ""),
        ]
        assert worker_rows[1][3:] == ("test-client/1.0", addr)
        assert [x[0] for x in rows].count(r.EVENT_UPSTREAM_UP) == 1
        up = next(x for x in rows if x[0] == r.EVENT_UPSTREAM_UP)
        assert up[2] == "connected"
        assert proxy.hub.events.counts[r.EVENT_CONNECT] == 2
        log = proxy.share_log
        assert log is not None
        state = await log._query_rows(log._store.schema.worker_state_query(), {"instance_id": "e2e"})
        assert len(state) == 1
        name, online, _since, last_share_ms, diff, ua, _addr, _cid, last_event, _upd = state[0]
        assert (name, online, diff, ua, last_event) == ("farm.rig17", True, DIFF, "test-client/1.0", r.EVENT_AUTHORIZE)
        assert last_share_ms == 0  # the new connection has not shared yet
        await _check_api(proxy)
        await c2.close()
    finally:
        await proxy.close()
        await pool.close()


async def _check_api(proxy: Proxy) -> None:
    """/api/v1/events pages and filters the same rows; /metrics counts events per type."""
    checker = ResponseChecker(openapi_document())
    async with running(proxy.monitoring_source, limits=None) as server:
        status, body = await raw_get(server.port, "/api/v1/events?worker=farm.rig17&limit=2")
        page = json.loads(body)
        checker.check("/api/v1/events", status, page)
        assert (page["total"], page["limit"]) == (3, 2)
        assert [e["type"] for e in page["items"]] == [r.EVENT_AUTHORIZE, r.EVENT_DISCONNECT]  # newest first
        status, body = await raw_get(server.port, "/api/v1/events?type=connect&offset=1")
        page = json.loads(body)
        assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["worker_name"] == ""
        status, body = await raw_get(server.port, "/api/v1/events?since=4102444800")  # year 2100
        assert json.loads(body)["total"] == 0
        status, body = await raw_get(server.port, "/api/v1/events?since=yesterday")
        assert status == 400 and json.loads(body)["parameter"] == "since"
        status, body = await raw_get(server.port, "/metrics")
        assert b'tproxy_events_total{type="connect"} 2.0' in body
        assert b'tproxy_events_total{type="offline"} 0.0' in body


async def _mine_until_retarget(proxy: Proxy, c: Sv1TestClient, worker: str) -> None:
    """Submit shares far faster than vardiff's target rate until the proxy raises the difficulty."""
    deadline = time.monotonic() + 30
    k = 0
    while c.difficulty <= DIFF:
        assert time.monotonic() < deadline, "vardiff never raised the difficulty"
        job = c.jobs[-1]
        k += 1
        en2, ntime, nonce = c.find_share(job, en2=k.to_bytes(c.extranonce2_size, "big"))
        await c.submit(worker, job, en2, ntime, nonce)


async def test_difficulty_remembered_across_restart(tmp_path: Path) -> None:
    pool = DevPool(pool_settings())
    await pool.start()
    s = settings_for(tmp_path, pool, vardiff=True, retarget_interval_s=0.5, shares_per_minute=6.0)
    try:
        proxy = Proxy(s)
        await proxy.start()
        try:
            c = await Sv1TestClient.connect(proxy.sv1_port)
            await c.handshake("farm.rig9")
            await c.wait_job()
            await _mine_until_retarget(proxy, c, "farm.rig9")
            await c.close()
            await until(lambda: not proxy.hub.miners, what="disconnect seen")
        finally:
            await proxy.close()
        memory = json.loads((tmp_path / "difficulty_memory.json").read_text())["workers"]
        remembered = memory["farm.rig9"][0]
        assert remembered > DIFF
        proxy = Proxy(s)  # the restart: a new process state, the same files
        await proxy.start()
        try:
            c = await Sv1TestClient.connect(proxy.sv1_port)
            await c.handshake("farm.rig9")
            await c.wait_job()
            first = next(n for n in c.notifications if n["method"] == "mining.set_difficulty")
            assert first["params"][0] == remembered
            # mining.suggest_difficulty still wins when sent.
            c2 = await Sv1TestClient.connect(proxy.sv1_port)
            await c2.request("mining.subscribe", ["test-client/1.0"])
            await c2.request("mining.suggest_difficulty", [DIFF * 4])
            await c2.request("mining.authorize", ["farm.rig9", "x"])
            await c2.wait_job()
            first2 = next(n for n in c2.notifications if n["method"] == "mining.set_difficulty")
            assert first2["params"][0] == DIFF * 4
            rows = await events_of(proxy)
            assert (r.EVENT_DIFFICULTY, "farm.rig9", "memory") in [x[:3] for x in rows]
            await c.close()
            await c2.close()
        finally:
            await proxy.close()
    finally:
        await pool.close()


async def test_events_survive_database_outage_and_proxy_restart(tmp_path: Path) -> None:
    """The database (over HTTP, devnet/chdb_front.py) is down while miners come and go and the
    proxy is restarted; once it is back every event of both runs is in the table exactly once."""
    from devnet.chdb_front import ChdbHttpFront

    front = ChdbHttpFront(str(tmp_path / "front-db"))
    front.start()
    pool = DevPool(pool_settings())
    await pool.start()
    s = proxy_settings([pool.port]).model_copy(update={"clickhouse": fast_settings(
        front.url, tmp_path / "spool", insert_timeout_s=1.0, connect_timeout_s=1.0)})
    emitted = 0
    try:
        for run in range(2):
            proxy = Proxy(s)
            await proxy.start()
            try:
                if run == 0:
                    front.stop()  # down from here until the second run is under way
                for k in range(3):
                    c = await Sv1TestClient.connect(proxy.sv1_port)
                    await c.handshake(f"farm.r{run}w{k}")
                    await c.wait_job()
                    await c.close()
                await until(lambda p=proxy: not p.hub.miners, what="disconnects seen")  # type: ignore[misc]
                if run == 1:
                    front.start()
            finally:
                await proxy.close()
            emitted += sum(proxy.hub.events.counts.values())
            if run == 0:  # nothing reached the database: every event of the run went to the spool
                assert proxy.share_log is not None
                assert proxy.share_log._spooled[KIND_EVENTS] == sum(proxy.hub.events.counts.values())
        proxy = Proxy(s)  # a third start replays what the second could not write
        await proxy.start()
        try:
            log = proxy.share_log
            assert log is not None and await log.flush(30)
        finally:
            await proxy.close()  # its upstream_down is written by close()
        emitted += sum(proxy.hub.events.counts.values())
        n = int(front.scalar("SELECT count() FROM tproxy.events"))
        distinct = int(front.scalar("SELECT uniqExact(run_id, event_seq) FROM tproxy.events"))
        assert (n, distinct) == (emitted, emitted)
        assert int(front.scalar("SELECT countIf(event_type = 'disconnect') FROM tproxy.events")) == 6
        assert int(front.scalar("SELECT count() FROM tproxy.worker_state FINAL WHERE NOT online")) == 6
    finally:
        await pool.close()
        front.close()
