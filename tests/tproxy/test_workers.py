"""``[proxy] workers = 2``: two worker processes on one SV1 port, one share log, one monitoring server.

Real processes (``python -m tproxy.workers``), real TCP on 127.0.0.1, the dev pool in this
process, the share log on an embedded chdb engine in tmp_path (owned by the parent, i.e. this
process). Which worker serves a miner is read from its client_id (the worker's generation is
its high 32 bits), as anybody reading /api/v1 can.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from devnet.pool import DevPool
from monitoring.source import UpstreamState
from tests.helpers.monitoring_http import raw_get
from tests.helpers.share_log import SlowDisk, fast_settings
from tests.helpers.stack import pool_settings, proxy_settings
from tests.helpers.sv1_client import Sv1TestClient
from tests.helpers.waiting import until
from tproxy.config import Settings
from tproxy.errors import ConfigError
from tproxy.monitor_source import ClusterMonitoringSource, WorkerView
from tproxy.workers import CLIENT_ID_SHIFT, SHARE_SEQ_SHIFT, Cluster, encode, read_message

MINERS = 12


def cluster_settings(pool_port: int, tmp_path: Path | None = None, **clickhouse: Any) -> Settings:
    s = proxy_settings([pool_port], workers=2)
    update: dict[str, Any] = {
        "monitoring": s.monitoring.model_copy(
            update={"enabled": True, "port": 0, "refresh_interval_s": 0.2, "rate_limit": False}
        )
    }
    if tmp_path is not None:
        update["clickhouse"] = fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool", **clickhouse)
    return s.model_copy(update=update)


@asynccontextmanager
async def cluster(tmp_path: Path | None = None, **clickhouse: Any) -> AsyncIterator[tuple[DevPool, Cluster]]:
    pool = DevPool(pool_settings())
    await pool.start()
    c = Cluster(cluster_settings(pool.port, tmp_path, **clickhouse), share_log=tmp_path is not None)
    try:
        await c.start()
        yield pool, c
    finally:
        await c.close()
        await pool.close()


async def api(c: Cluster, path: str) -> Any:
    assert c.monitoring_port is not None
    status, body = await raw_get(c.monitoring_port, path)
    assert status == 200, (status, body)
    return json.loads(body)


async def api_clients(c: Cluster) -> list[dict[str, Any]]:
    return list((await api(c, "/api/v1/sv1/clients?limit=100"))["items"])


async def wait_api_clients(c: Cluster, n: int) -> list[dict[str, Any]]:
    """The client list once monitoring shows exactly ``n`` clients that have made a share."""
    seen: list[dict[str, Any]] = []

    async def poll() -> bool:
        nonlocal seen
        seen = await api_clients(c)
        return len(seen) == n and all(x["shares_accepted"] >= 1 for x in seen)

    async with asyncio.timeout(60):
        while not await poll():
            await asyncio.sleep(0.1)
    return seen


async def connect_and_share(port: int, n: int, first: int = 0) -> list[Sv1TestClient]:
    clients = []
    for i in range(first, first + n):
        c = await Sv1TestClient.connect(port)
        clients.append(c)
        await c.handshake(f"farm.w{i}")
        job = await c.wait_job()
        en2, ntime, nonce = c.find_share(job)
        r = await c.submit(f"farm.w{i}", job, en2, ntime, nonce)
        assert r["result"] is True, r
    return clients


def generation(client_id: int) -> int:
    return client_id >> CLIENT_ID_SHIFT


async def pool_settled(pool: DevPool, c: Cluster) -> int:
    """Wait until the pool answered every share the workers say they forwarded; return that count."""
    forwarded = 0

    async def done() -> bool:
        nonlocal forwarded
        chans = (await api(c, "/api/v1/server/channels"))["extended_channels"]
        forwarded = sum(ch["shares_submitted"] for ch in chans)
        return len(chans) == 2 and forwarded > 0 and pool.total_accepted + pool.total_rejected == forwarded

    async with asyncio.timeout(60):
        while not await done():
            await asyncio.sleep(0.1)
    return forwarded


async def test_two_workers_share_the_port_and_monitoring_shows_every_miner() -> None:
    async with cluster() as (pool, c):
        clients = await connect_and_share(c.sv1_port, MINERS)
        try:
            seen = await wait_api_clients(c, MINERS)
            gens = {generation(x["client_id"]) for x in seen}
            assert gens == {1, 2}, f"the kernel gave every miner to one worker: {gens}"
            assert len({x["client_id"] for x in seen}) == MINERS
            one = max(seen, key=lambda x: x["client_id"])  # a client of worker 1: id above 2**33
            assert (await api(c, f"/api/v1/sv1/clients/{one['client_id']}"))["worker_name"] == one["worker_name"]
            assert {x["worker_name"] for x in seen} == {f"farm.w{i}" for i in range(MINERS)}
            forwarded = await pool_settled(pool, c)
            assert pool.total_accepted == forwarded == MINERS  # DIFF equals the pool's: every share forwarded
            chans = (await api(c, "/api/v1/server/channels"))["extended_channels"]
            assert len({ch["channel_id"] for ch in chans}) == 2
            assert len({ch["extranonce_prefix_hex"] for ch in chans}) == 2  # one pool connection each
            assert pool.total_accepted == sum(ch["shares_acknowledged"] for ch in chans)
            status, body = await raw_get(c.monitoring_port or 0, "/metrics")
            assert status == 200
            assert f"sv1_clients {MINERS}" in body.decode()
            health = await api(c, "/api/v1/health")
            assert health["status"] == "ok", health  # every worker has its pool
        finally:
            for cl in clients:
                await cl.close()


async def test_every_share_of_both_workers_logged_once(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (pool, c):
        log = c.share_log
        assert log is not None
        clients = await connect_and_share(c.sv1_port, MINERS)
        try:
            await wait_api_clients(c, MINERS)
            await pool_settled(pool, c)
            await until(lambda: log.stats().written == MINERS and log.stats().verdicts_written == MINERS)
            assert await log.flush(10)
            rows = await log._query_rows(  # the chdb engine belongs to this process's share log
                f"SELECT share_seq, client_id, verdict FROM {log._store.schema.db}.shares"
            )
            verdicts = await log._query_rows(
                f"SELECT share_seq, pool_verdict FROM {log._store.schema.db}.pool_verdicts"
            )
        finally:
            for cl in clients:
                await cl.close()
    assert len(rows) == MINERS and all(v == "accepted" for _, _, v in rows)
    seqs = [r[0] for r in rows]
    assert len(set(seqs)) == MINERS  # no duplicate (run_id, share_seq): one run_id, distinct seqs
    assert {s >> SHARE_SEQ_SHIFT for s in seqs} == {1, 2}  # both workers' shares reached the log
    assert {r[1] >> CLIENT_ID_SHIFT for r in rows} == {1, 2}
    assert sorted(v[0] for v in verdicts) == sorted(seqs) and {v[1] for v in verdicts} == {"accepted"}


async def test_a_killed_worker_is_restarted_and_its_miners_move_to_the_other() -> None:
    async with cluster() as (_pool, c):
        clients = await connect_and_share(c.sv1_port, MINERS)
        try:
            seen = await wait_api_clients(c, MINERS)
            victims = sum(1 for x in seen if generation(x["client_id"]) == 1)
            assert 0 < victims < MINERS
            old_pid = c.worker_pids()[0]
            assert old_pid is not None
            os.kill(old_pid, signal.SIGKILL)
            # Its miners lose their connection; the others keep theirs.
            await until(lambda: sum(cl.closed.is_set() for cl in clients) == victims)
            # They reconnect at once (to worker 1, or to worker 0's successor if it is up already)
            # and mine on: every share answered true.
            clients += await connect_and_share(c.sv1_port, victims, first=MINERS)
            # The parent starts a new worker 0 (generation 3) on the same port.
            await until(lambda: c.slots[0].generation == 3 and c.slots[0].serving)
            assert c.worker_pids()[0] not in (None, old_pid)
            seen = await wait_api_clients(c, MINERS)
            assert generation(min(x["client_id"] for x in seen)) >= 2  # no client of the dead worker left
            assert c.slots[0].restarts == 1
            # The new worker serves miners too.
            later = await connect_and_share(c.sv1_port, MINERS, first=2 * MINERS)
            clients += later
            seen = await wait_api_clients(c, 2 * MINERS)
            assert 3 in {generation(x["client_id"]) for x in seen}
        finally:
            for cl in clients:
                await cl.close()


# ------------------------------------------------------------------ durability "sync" and events across the pipe


_EN2 = itertools.count(1)


async def burst(client: Sv1TestClient, n: int) -> list[tuple[int, bool]]:
    """``n`` distinct valid shares sent in one write (pipelined); (nonce, answered true) of each."""
    job = client.jobs[-1]
    en2 = next(_EN2).to_bytes(client.extranonce2_size, "big")  # never the shares of another call
    found, nonce = [], -1
    for _ in range(n):
        en2, ntime, nonce = client.find_share(job, en2=en2, start_nonce=nonce + 1)
        found.append((en2, ntime, nonce))
    ids = list(range(10_000, 10_000 + n))
    replies = [asyncio.ensure_future(client.next_reply(i, timeout=60)) for i in ids]
    await client.send_raw(b"".join(
        json.dumps({"id": i, "method": "mining.submit", "params": [
            client.worker, job.job_id, en2.hex(), f"{ntime:08x}", f"{nonce:08x}"]}).encode() + b"\n"
        for i, (en2, ntime, nonce) in zip(ids, found, strict=True)
    ))  # fmt: skip
    return [(nonce, (await r)["result"] is True) for (_, _, nonce), r in zip(found, replies, strict=True)]


async def logged_nonces(c: Cluster) -> list[tuple[str, int]]:
    log = c.share_log
    assert log is not None
    assert await log.flush(30)
    rows = await log._query_rows(f"SELECT worker_name, nonce FROM {log._store.schema.db}.shares")
    return [(str(w), int(n)) for w, n in rows]


async def test_a_worker_killed_right_after_a_burst_loses_no_accepted_share(tmp_path: Path) -> None:
    """Durability "sync" with workers: a reply waits until the parent journaled its share, so a
    SIGKILL of the worker right after its miners saw their shares accepted loses none of them."""
    async with cluster(tmp_path) as (_pool, c):
        log = c.share_log
        assert log is not None and c.settings.clickhouse.durability == "sync"
        clients = await connect_and_share(c.sv1_port, MINERS)
        try:
            seen = await wait_api_clients(c, MINERS)
            on_first = {x["worker_name"] for x in seen if generation(x["client_id"]) == 1}
            victims = [cl for cl in clients if cl.worker in on_first]
            assert victims, "the kernel gave every miner to the other worker"
            results = await asyncio.gather(*(burst(cl, 12) for cl in victims))
            pid = c.worker_pids()[0]
            assert pid is not None
            os.kill(pid, signal.SIGKILL)  # at once: the last replies were just read
            accepted = {(cl.worker, nonce) for cl, res in zip(victims, results, strict=True) for nonce, ok in res if ok}
            assert len(accepted) == 12 * len(victims)
            await until(lambda: sum(cl.closed.is_set() for cl in clients) == len(victims))
            await until(lambda: log.stats().received >= MINERS + len(accepted))  # the other worker's too
            logged = await logged_nonces(c)
        finally:
            for cl in clients:
                await cl.close()
    missing = accepted - set(logged)
    assert not missing, f"{len(missing)} accepted shares of the killed worker are not in the share log"
    assert len(logged) == len(set(logged)) == MINERS + len(accepted)  # and none twice


async def test_a_worker_holds_its_replies_for_the_parents_journal_within_the_stall_bound(tmp_path: Path) -> None:
    """The reply to a share waits for the parent's fdatasync; above durability_max_waiting held
    replies the worker waits at most durability_stall_s for the parent, then writes them (as one
    process does when its own disk stalls)."""
    async with cluster(tmp_path, durability_max_waiting=4, durability_stall_s=1.0) as (_pool, c):
        log = c.share_log
        assert log is not None
        clients = await connect_and_share(c.sv1_port, 1)
        miner = clients[0]
        try:
            disk = SlowDisk()
            log._journal._fdatasync = disk  # the parent's journal: a disk that waits for the gate
            one = asyncio.ensure_future(burst(miner, 1))
            for _ in range(40):  # many pipe round trips: the reply is held, not slow
                await asyncio.sleep(0.01)
            assert not one.done()
            disk.gate.set()
            assert await one == [(one.result()[0][0], True)]
            assert disk.synced >= 1
            # Over the bound with the parent's disk stalled: written after at most stall_s, unconfirmed.
            disk = SlowDisk()
            log._journal._fdatasync = disk
            await asyncio.sleep(0.1)  # the previous commit, if any, has returned
            held = await burst(miner, 5)
            assert all(ok for _, ok in held) and disk.synced == 0 and not disk.gate.is_set()
            disk.gate.set()
            await until(lambda: log.stats().received == 7)
            logged = await logged_nonces(c)
        finally:
            for cl in clients:
                await cl.close()
    assert len(logged) == len(set(logged)) == 7  # connect_and_share's share, the held one, the five


async def test_worker_events_reach_the_share_log_and_metrics(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (_pool, c):
        log = c.share_log
        assert log is not None
        clients = await connect_and_share(c.sv1_port, MINERS)
        seen = await wait_api_clients(c, MINERS)
        for cl in clients:
            await cl.close()
        await until(lambda: c.event_counts["disconnect"] == MINERS)
        assert await log.flush(30)
        rows = await log._query_rows(
            f"SELECT event_type, worker_name, client_id, event_seq FROM {log._store.schema.db}.events"
        )
        expected = [f'tproxy_events_total{{type="{t}"}} {n}' for t, n in (
            ("connect", MINERS), ("authorize", MINERS), ("disconnect", MINERS), ("upstream_up", 2))]
        text = ""
        async with asyncio.timeout(30):  # monitoring serves a snapshot refreshed every 0.2 s
            while not all(line in text for line in expected):
                await asyncio.sleep(0.1)
                status, body = await raw_get(c.monitoring_port or 0, "/metrics")
                assert status == 200
                text = body.decode()
    ids = {x["worker_name"]: x["client_id"] for x in seen}  # the ids monitoring showed
    by_type: dict[str, set[tuple[str, int]]] = {}
    for t, w, cid, _ in rows:
        by_type.setdefault(str(t), set()).add((str(w), int(cid)))
    assert {cid for _, cid in by_type["connect"]} == set(ids.values())
    assert by_type["authorize"] == set(ids.items()) == by_type["disconnect"]
    assert {generation(cid) for cid in ids.values()} == {1, 2}  # both workers' events
    seqs = [int(r[3]) for r in rows]
    assert len(set(seqs)) == len(seqs) and {s >> SHARE_SEQ_SHIFT for s in seqs} == {1, 2}


CONSOLE_SCRIPT = Path(sys.executable).parent / "tproxy"
COUNT_ROWS = """
import sys, clickhouse_connect
c = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
print(c.query("SELECT count(), uniqExact(share_seq) FROM tproxy.shares").result_rows[0])
"""


def run_config(tmp_path: Path, pool_port: int) -> Path:
    s = proxy_settings([pool_port])
    up = s.upstreams[0]
    text = (
        f'[[upstreams]]\naddress = "127.0.0.1"\nport = {pool_port}\nauthority_pubkey = "{up.authority_pubkey}"\n'
        f'\n[downstream]\naddress = "127.0.0.1"\nport = 0\n'
        f"\n[difficulty]\nstart_difficulty = {s.difficulty.start_difficulty}\nvardiff = false\n"
        f'\n[proxy]\nworkers = 2\ninstance_id = "run"\n'
        f'\n[clickhouse]\nurl = "chdb://{tmp_path / "db"}"\nspool_dir = "{tmp_path / "spool"}"\n'
    )
    path = tmp_path / "tproxy.toml"
    path.write_text(text)
    return path


async def test_tproxy_run_with_workers_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    """``tproxy run``: SIGTERM to the parent; every miner is told to reconnect, every share is in the log."""
    pool = DevPool(pool_settings())
    await pool.start()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TPROXY__")}
    child = await asyncio.create_subprocess_exec(
        str(CONSOLE_SCRIPT), "run", "--config", str(run_config(tmp_path, pool.port)), cwd=tmp_path, env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stderr is not None
    lines: list[str] = []
    clients: list[Sv1TestClient] = []
    try:
        async with asyncio.timeout(120):  # until the banner names the port
            while not (m := re.search(r"SV1 miners connect to stratum\+tcp://127\.0\.0\.1:(\d+)", "\n".join(lines))):
                line = await child.stderr.readline()
                assert line, f"tproxy run exited early: {lines}"
                lines.append(line.decode().rstrip("\n"))
        clients = await connect_and_share(int(m.group(1)), 6)
        child.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            _, rest = await child.communicate()
        for cl in clients:
            await cl.wait_for(lambda cl=cl: any(n.get("method") == "client.reconnect" for n in cl.notifications))
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        for cl in clients:
            await cl.close()
        await pool.close()
    text = "\n".join([*lines, rest.decode()])
    assert child.returncode == 0 and "Traceback" not in text, text
    count = subprocess.run(
        [sys.executable, "-c", COUNT_ROWS, str(tmp_path / "db")], capture_output=True, text=True, timeout=120, check=True
    )
    assert count.stdout.strip() == "(6, 6)", count


async def test_a_port_in_use_is_one_configuration_error_before_any_worker_starts() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        s = cluster_settings(1)
        s = s.model_copy(update={"downstream": s.downstream.model_copy(update={"port": busy.getsockname()[1]})})
        c = Cluster(s, share_log=False)
        try:
            with pytest.raises(ConfigError, match=r"downstream\.port \d+: address already in use"):
                await c.start()
        finally:
            await c.close()
        assert c.worker_pids() == [None, None]


# ------------------------------------------------------------------ pieces without processes


def _up(connected: bool, since: float, address: str = "pool:1") -> UpstreamState:
    return UpstreamState(connected=connected, channel_open=connected, address=address, since=since)


def test_merged_upstream_is_connected_only_when_every_reporting_worker_is() -> None:
    src = ClusterMonitoringSource(None)
    assert src.upstream() == UpstreamState(connected=False, channel_open=False, address=None, since=None)
    src.update(0, WorkerView(_up(True, 10.0), (), ()))
    src.update(1, WorkerView(_up(True, 20.0), (), ()))
    assert src.upstream() == _up(True, 20.0)  # connected since the last one connected
    src.update(1, WorkerView(_up(False, 30.0, "pool:2"), (), ()))
    up = src.upstream()
    assert (up.connected, up.channel_open, up.since, up.address) == (False, True, 30.0, "pool:1")
    src.drop(1)  # a worker that exited is left out until its successor reports
    assert src.upstream() == _up(True, 10.0)


async def test_a_frame_cut_short_reads_as_end_of_stream() -> None:
    reader = asyncio.StreamReader()
    whole = encode(("rows", [(1, "a")], []))
    reader.feed_data(whole + whole[:-1])
    reader.feed_eof()
    assert await read_message(reader) == ("rows", [(1, "a")], [])
    assert await read_message(reader) is None
