"""End to end over real TCP on 127.0.0.1: dev pool <-Noise-> proxy <-SV1-> scripted clients and synthetic miners.

Checks the issue's promises: forwarded shares are accepted by the pool and the
counts agree; every invalid share gets its SV1 error and is not forwarded; a
new prevhash reaches every miner as a clean notify; pool restarts, fallback,
fail-back and the pool's Reconnect lose no miner connection.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from devnet.miner import SyntheticMiner
from devnet.pool import DevPool
from sv2.messages import Reconnect
from tests.helpers.stack import pool_settings, proxy_settings, running
from tests.helpers.sv1_client import Sv1TestClient
from tproxy.runtime import Proxy

MODES = [pytest.param(True, id="aggregated"), pytest.param(False, id="non-aggregated")]


@pytest.mark.parametrize("aggregated", MODES)
async def test_valid_shares_are_forwarded_and_accepted(aggregated: bool) -> None:
    async with running(aggregated) as st:
        clients = [await st.client(f"farm.w{i}") for i in range(3)]
        assert len({c.extranonce1 for c in clients}) == 3  # unique per miner
        for c in clients:
            job = c.jobs[-1]
            for k in range(3):
                en2, ntime, nonce = c.find_share(job, en2=k.to_bytes(c.extranonce2_size, "big"))
                r = await c.submit(f"farm.w{clients.index(c)}", job, en2, ntime, nonce)
                assert r["result"] is True and r["error"] is None, r
        await st.settled()
        assert st.proxy.manager.shares_forwarded == 9
        assert st.pool_accepted() == 9 and st.pool_rejected() == 0
        accepted = sum(m.session.counters.pool_accepted for m in st.proxy.hub.miners.values())
        assert accepted == 9
        if not aggregated:
            assert len(st.proxy.manager.channels) == 3
        for c in clients:
            await c.close()


@pytest.mark.parametrize("aggregated", MODES)
async def test_invalid_shares_get_their_error_and_are_not_forwarded(aggregated: bool) -> None:
    async with running(aggregated) as st:
        c = await st.client("farm.w1")
        job = c.jobs[-1]
        en2, ntime, nonce = c.find_share(job)

        async def expect(resp: dict[str, object], code: int) -> None:
            assert resp["result"] is None and isinstance(resp["error"], list), resp
            assert resp["error"][0] == code, resp

        # unknown job
        await expect(await c.request("mining.submit", ["farm.w1", "nope", en2.hex(), f"{ntime:08x}", f"{nonce:08x}"]), 21)
        # unauthorized worker
        await expect(await c.request("mining.submit", ["farm.other", job.job_id, en2.hex(), f"{ntime:08x}", f"{nonce:08x}"]), 24)
        # low difficulty
        l_en2, l_ntime, l_nonce = c.find_share(job, meets=False)
        await expect(await c.submit("farm.w1", job, l_en2, l_ntime, l_nonce), 23)
        # bad extranonce2 size
        await expect(await c.request("mining.submit", ["farm.w1", job.job_id, "00", f"{ntime:08x}", f"{nonce:08x}"]), 20)
        # version bits outside the negotiated mask (0x1fffe000)
        await expect(await c.submit("farm.w1", job, en2, ntime, nonce, version_bits=0x00000001), 20)
        # ntime the pool would refuse: before the job's, or more than 2 hours ahead
        for bad in (0, 0xFFFFFFFF, job.ntime - 1):
            r = await c.request("mining.submit", ["farm.w1", job.job_id, en2.hex(), f"{bad:08x}", f"{nonce:08x}"])
            await expect(r, 20)
            assert "ntime" in r["error"][1], r
        # bfgminer's transaction probe: "none to give", not a list (it would check a list against the merkle path)
        r = await c.request("mining.get_transactions", [job.job_id], req_id=f"txlist{job.job_id}")
        assert r["error"][0] == 20 and not isinstance(r["result"], list), r
        # malformed params
        r = await c.request("mining.submit", ["farm.w1", job.job_id, "zz", "nothex", 5.5])
        assert r["result"] is None and r["error"] is not None
        assert st.proxy.manager.shares_forwarded == 0
        # the valid one, then its duplicate
        ok = await c.submit("farm.w1", job, en2, ntime, nonce)
        assert ok["result"] is True, ok
        await expect(await c.submit("farm.w1", job, en2, ntime, nonce), 22)
        # stale: a new block makes the old job stale
        before = len(c.jobs)
        await st.pool.announce_new_block()
        await c.wait_job(after=before, clean=True)
        s_en2, s_ntime, s_nonce = c.find_share(job, en2=b"\x01" * c.extranonce2_size)
        await expect(await c.submit("farm.w1", job, s_en2, s_ntime, s_nonce), 21)
        await st.settled()
        assert st.proxy.manager.shares_forwarded == 1
        assert st.pool_accepted() == 1
        # nothing else was harmed: the connection still works on the new job
        new = c.jobs[-1]
        n_en2, n_ntime, n_nonce = c.find_share(new)
        assert (await c.submit("farm.w1", new, n_en2, n_ntime, n_nonce))["result"] is True
        await c.close()


async def test_not_subscribed_and_unauthorized_before_handshake() -> None:
    async with running() as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        r = await c.request("mining.submit", ["w", "1", "00000000", "00000000", "00000000"])
        assert r["error"][0] == 25
        await c.request("mining.subscribe", [])
        r = await c.request("mining.submit", ["w", "1", "00000000", "00000000", "00000000"])
        assert r["error"][0] == 24
        await c.close()
        assert st.proxy.manager.shares_forwarded == 0


async def test_new_prevhash_reaches_every_miner_as_clean_notify() -> None:
    async with running() as st:
        clients = [await st.client(f"farm.w{i}") for i in range(4)]
        marks = [len(c.jobs) for c in clients]
        await st.pool.announce_new_block()
        jobs = [await c.wait_job(after=m, clean=True) for c, m in zip(clients, marks, strict=True)]
        assert len({j.job_id for j in jobs}) == 1
        assert all(j.clean for j in jobs)
        assert jobs[0].prevhash != clients[0].jobs[marks[0] - 1].prevhash
        for c in clients:
            await c.close()


async def test_set_difficulty_comes_before_its_notify() -> None:
    async with running() as st:
        c = await st.client()
        methods = [n["method"] for n in c.notifications]
        assert methods.index("mining.set_difficulty") < methods.index("mining.notify")
        await c.close()


async def test_pool_restart_loses_no_miner_and_shares_flow_again() -> None:
    pool = DevPool(pool_settings())
    await pool.start()
    port = pool.port
    proxy = Proxy(proxy_settings([port]), share_log=False)
    await proxy.start()
    try:
        c = await Sv1TestClient.connect(proxy.sv1_port)
        await c.handshake("farm.w1")
        first = await c.wait_job()
        await pool.close()
        await asyncio.sleep(0.3)
        assert not c.closed.is_set()
        mark = len(c.jobs)
        pool = DevPool(pool_settings(port))
        await pool.start()
        job = await c.wait_job(after=mark, timeout=20)
        assert job.job_id != first.job_id
        en2, ntime, nonce = c.find_share(job)
        assert (await c.submit("farm.w1", job, en2, ntime, nonce))["result"] is True
        # a share for a job of the dead connection is stale, not forwarded
        s_en2, s_ntime, s_nonce = c.find_share(first, en2=b"\x02" * 4)
        assert (await c.submit("farm.w1", first, s_en2, s_ntime, s_nonce))["error"][0] == 21

        async def accepted() -> None:
            while pool.total_accepted < 1:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(accepted(), 10)
        assert not c.closed.is_set()
        await c.close()
    finally:
        await proxy.close()
        await pool.close()


async def test_fallback_then_failback_keeps_miners_connected() -> None:
    primary = DevPool(pool_settings())
    backup = DevPool(pool_settings())
    await primary.start()
    await backup.start()
    p_port = primary.port
    proxy = Proxy(proxy_settings([p_port, backup.port]), share_log=False)
    await proxy.start()
    try:
        c = await Sv1TestClient.connect(proxy.sv1_port)
        await c.handshake("farm.w1")
        await c.wait_job()
        assert proxy.supervisor.current_index == 0
        await primary.close()  # kill the primary while the backup runs
        mark = len(c.jobs)
        job = await c.wait_job(after=mark, timeout=20)
        assert proxy.supervisor.current_index == 1
        en2, ntime, nonce = c.find_share(job)
        assert (await c.submit("farm.w1", job, en2, ntime, nonce))["result"] is True

        async def on_backup() -> None:
            while backup.total_accepted < 1:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(on_backup(), 10)
        primary = DevPool(pool_settings(p_port))
        await primary.start()
        mark = len(c.jobs)

        async def failed_back() -> None:
            while proxy.supervisor.current_index != 0:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(failed_back(), 20)
        job = await c.wait_job(after=mark, timeout=20)
        en2, ntime, nonce = c.find_share(job, en2=b"\x03" * 4)
        assert (await c.submit("farm.w1", job, en2, ntime, nonce))["result"] is True

        async def on_primary() -> None:
            while primary.total_accepted < 1:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(on_primary(), 10)
        assert not c.closed.is_set()
        await c.close()
    finally:
        await proxy.close()
        await primary.close()
        await backup.close()


async def test_pool_reconnect_message_is_obeyed() -> None:
    a = DevPool(pool_settings())
    b = DevPool(pool_settings())
    await a.start()
    await b.start()
    proxy = Proxy(proxy_settings([a.port]), share_log=False)
    await proxy.start()
    try:
        c = await Sv1TestClient.connect(proxy.sv1_port)
        await c.handshake("farm.w1")
        await c.wait_job()
        mark = len(c.jobs)
        a.send_to_all(Reconnect(new_host="127.0.0.1", new_port=b.port))
        job = await c.wait_job(after=mark, timeout=20)
        assert proxy.supervisor.current is not None and proxy.supervisor.current.endpoint.port == b.port
        en2, ntime, nonce = c.find_share(job)
        assert (await c.submit("farm.w1", job, en2, ntime, nonce))["result"] is True

        async def on_b() -> None:
            while b.total_accepted < 1:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(on_b(), 10)
        await c.close()
    finally:
        await proxy.close()
        await a.close()
        await b.close()


@pytest.mark.parametrize("aggregated", MODES)
async def test_synthetic_miners_all_dialects_books_balance(aggregated: bool) -> None:
    # The bitaxe dialect suggests an ASIC-sized difficulty; these CPU miners cannot meet it.
    async with running(aggregated, honour_suggest=False) as st:
        miners = [
            SyntheticMiner("127.0.0.1", st.proxy.sv1_port, worker_name=f"farm.{d}", dialect=d, hashrate_limit=200_000)
            for d in ("cpuminer", "bitaxe", "whatsminer", "antminer")
        ]
        tasks = [asyncio.create_task(m.run()) for m in miners]

        async def enough() -> None:
            while min(m.accepted for m in miners) < 3:
                await asyncio.sleep(0.05)

        try:
            await asyncio.wait_for(enough(), 30)
        finally:
            for m in miners:
                await m.close()
            for t in tasks:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
        await st.settled()
        assert all(m.rejected == 0 for m in miners), [m.rejected for m in miners]
        assert st.proxy.manager.shares_forwarded == st.pool_accepted() > 0
        assert st.pool_rejected() == 0


async def test_garbage_first_line_is_answered_fast_and_closed() -> None:
    async with running() as st:
        reader, writer = await asyncio.open_connection("127.0.0.1", st.proxy.sv1_port)
        writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40) + b"\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), 5)
        assert b"error" in reply
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the proxy
        writer.close()
        # the proxy still serves others
        c = await st.client()
        await c.close()


async def test_unknown_methods_are_answered_and_keep_the_miner() -> None:
    async with running() as st:
        c = await st.client()
        # (mining.get_transactions is answered on purpose: test_invalid_shares_get_their_error_and_are_not_forwarded)
        for method in ("mining.multi_version", "mining.capabilities"):
            r = await c.request(method, [])
            assert r["error"] is not None and r["error"][0] == -32601
        r = await c.request("mining.suggest_difficulty", [0.001])
        assert r["result"] is True
        r = await c.request("mining.extranonce.subscribe", [])
        assert r["result"] is True
        assert not c.closed.is_set()
        await c.close()


async def test_suggest_difficulty_sets_the_first_difficulty() -> None:
    async with running() as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        await c.request("mining.subscribe", [])
        assert (await c.request("mining.suggest_difficulty", [0.5]))["result"] is True
        await c.request("mining.authorize", ["farm.w1", ""])
        job = await c.wait_job()
        assert job.difficulty == 0.5
        await c.close()
