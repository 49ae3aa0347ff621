"""SV1 listener limits: each abuse closes (or answers) that one connection; other miners are unharmed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from devnet.pool import DevPool
from tests.helpers.stack import Stack, pool_settings, proxy_settings
from tests.helpers.sv1_client import Sv1TestClient
from tproxy.runtime import Proxy
from tproxy.sv1.connection import MinerConnection


@contextlib.asynccontextmanager
async def stack(**downstream: object) -> AsyncIterator[Stack]:
    pool = DevPool(pool_settings())
    await pool.start()
    settings = proxy_settings([pool.port])
    settings = settings.model_copy(update={"downstream": settings.downstream.model_copy(update=downstream)})
    proxy = Proxy(settings, share_log=False)
    await proxy.start()
    try:
        yield Stack(pool, proxy)
    finally:
        await proxy.close()
        await pool.close()


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 5) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


async def assert_healthy(st: Stack, bystander: Sv1TestClient) -> None:
    """The bystander is still connected and can still get a share accepted."""
    assert not bystander.closed.is_set()
    job = bystander.jobs[-1]
    en2, ntime, nonce = bystander.find_share(job, en2=b"\x07" * bystander.extranonce2_size)
    assert (await bystander.submit(bystander.worker, job, en2, ntime, nonce))["result"] is True


async def test_overlong_line_closes_only_that_connection() -> None:
    async with stack(max_line_bytes=1024) as st:
        ok = await st.client("farm.ok")
        reader, writer = await asyncio.open_connection("127.0.0.1", st.proxy.sv1_port)
        writer.write(b'{"id":1,"method":"mining.subscribe","params":["' + b"a" * 5000)
        await writer.drain()
        data = await read_until_closed(reader)
        assert b"-32700" in data or b"too long" in data.lower()
        writer.close()
        await assert_healthy(st, ok)
        assert st.proxy.sv1.closed_for_garbage == 1


async def test_flood_of_lines_closes_only_that_connection() -> None:
    async with stack(max_pending_submits=50) as st:
        ok = await st.client("farm.ok")
        reader, writer = await asyncio.open_connection("127.0.0.1", st.proxy.sv1_port)
        writer.write(b'{"id":1,"method":"mining.ping","params":[]}\n' * 2000)
        await writer.drain()
        await read_until_closed(reader)
        writer.close()
        await assert_healthy(st, ok)


async def test_bad_json_after_handshake_gets_an_error_and_the_miner_stays() -> None:
    async with stack() as st:
        c = await st.client("farm.ok")
        await c.send_raw(b"{not json\n")
        await c.send_raw(b'[1,2,3]\n')
        await c.send_raw(b'{"id": 9, "method": 5, "params": []}\n')
        await c.wait_for(lambda: sum(1 for _ in c.notifications) >= 0 and not c.closed.is_set(), 1)
        r = await c.request("mining.ping", [])
        assert r["result"] == "pong"
        await assert_healthy(st, c)


async def test_connection_cap_refuses_extra_miners() -> None:
    async with stack(max_connections=2) as st:
        a = await st.client("farm.a")
        b = await st.client("farm.b")
        reader, writer = await asyncio.open_connection("127.0.0.1", st.proxy.sv1_port)
        assert await read_until_closed(reader) == b""
        writer.close()
        assert st.proxy.sv1.refused >= 1
        await assert_healthy(st, a)
        await a.close()
        await b.close()


async def test_silent_connection_is_cut_after_first_message_timeout() -> None:
    async with stack(first_message_timeout_s=0.3) as st:
        reader, writer = await asyncio.open_connection("127.0.0.1", st.proxy.sv1_port)
        assert await read_until_closed(reader, 5) == b""
        writer.close()
        assert st.proxy.sv1.closed_idle == 1


async def test_idle_miner_is_cut_after_idle_timeout() -> None:
    async with stack(idle_timeout_s=0.5) as st:
        c = await st.client("farm.idle")
        await asyncio.wait_for(c.closed.wait(), 5)
        assert st.proxy.sv1.closed_idle == 1
        assert not st.proxy.hub.miners  # its session was released


async def test_extranonce1_is_not_handed_out_again_right_after_a_disconnect() -> None:
    async with stack() as st:
        a = await st.client("farm.a")
        b = await st.client("farm.b")
        assert a.extranonce1 != b.extranonce1
        en1 = a.extranonce1
        await a.close()

        async def released() -> None:
            while len(st.proxy.hub.miners) != 1:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(released(), 5)
        c = await st.client("farm.c")
        # a reconnecting miner restarts extranonce2/nonces from 0: the same extranonce1
        # would reproduce shares the pool has already credited
        assert c.extranonce1 not in (en1, b.extranonce1)


@pytest.mark.parametrize(
    "subscribe_params",
    [[], ["cpuminer/2.5.1"], ["cpuminer/2.5.1", "ae6812eb4cd7735a302a8a9dd95cf71f"], ["bfgminer", None, "host", 3333]],
)
async def test_subscribe_variants_from_real_firmware(subscribe_params: list[object]) -> None:
    async with stack() as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        r = await c.request("mining.subscribe", subscribe_params)
        assert r["error"] is None and len(bytes.fromhex(r["result"][1])) == 2 and r["result"][2] == 4
        await c.close()


async def test_authorize_before_subscribe_and_null_password_and_repeated_ids() -> None:
    async with stack() as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        assert (await c.request("mining.authorize", ["farm.w1", None], req_id=2))["result"] is True
        sub = await c.request("mining.subscribe", ["cpuminer/2.5.1"], req_id=1)
        c.extranonce1 = bytes.fromhex(sub["result"][1])
        c.extranonce2_size = sub["result"][2]
        job = await c.wait_job()
        # cpuminer sends every submit with id 4: two in a row must both be answered
        en2a, nt, na = c.find_share(job, en2=b"\x00\x00\x00\x01")
        en2b, nt2, nb = c.find_share(job, en2=b"\x00\x00\x00\x02")
        line_a = json.dumps({"id": 4, "method": "mining.submit", "params": ["farm.w1", job.job_id, en2a.hex(), f"{nt:08x}", f"{na:08x}"]})
        line_b = json.dumps({"id": 4, "method": "mining.submit", "params": ["farm.w1", job.job_id, en2b.hex(), f"{nt2:08x}", f"{nb:08x}"]})
        first = asyncio.ensure_future(c.next_reply(4))
        second = asyncio.ensure_future(c.next_reply(4))
        await c.send_raw((line_a + "\n" + line_b + "\n").encode())
        assert (await first)["result"] is True and (await second)["result"] is True
        # string ids are echoed unchanged
        r = await c.request("mining.ping", [], req_id="abc")
        assert r["id"] == "abc"
        await c.close()


async def test_configure_replies_only_with_requested_extensions() -> None:
    async with stack() as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        r = await c.request("mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2}])
        assert set(r["result"]) <= {"version-rolling", "version-rolling.mask", "version-rolling.min-bit-count"}
        assert r["result"]["version-rolling.mask"] == "1fffe000"
        r = await c.request("mining.configure", [[], {}])
        assert r["result"] == {}
        await c.close()


async def test_lines_that_arrive_together_are_answered_in_order_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    sends: list[bytes] = []
    send = MinerConnection._send

    def spy(self: MinerConnection, data: bytes) -> None:
        sends.append(data)
        send(self, data)

    monkeypatch.setattr(MinerConnection, "_send", spy)
    async with stack() as st:
        reader, writer = await asyncio.open_connection("127.0.0.1", st.proxy.sv1_port)
        writer.write(
            b'{"id":1,"method":"mining.subscribe","params":["burst/1.0"]}\n'
            b'{"id":2,"method":"mining.authorize","params":["farm.burst","x"]}\n'
        )
        while b'"id":2' not in await asyncio.wait_for(reader.readline(), 5):
            pass
        sends.clear()
        # one client write: two pings with a bad line between them, the proxy reads them at once
        writer.write(b'{"id":11,"method":"mining.ping","params":[]}\n{not json\n{"id":12,"method":"mining.ping","params":[]}\n')
        ids = []
        while len(ids) < 3:
            msg = json.loads(await asyncio.wait_for(reader.readline(), 5))
            if "method" not in msg:  # a reply, not a notification
                ids.append(msg["id"])
        assert ids == [11, None, 12]
        together = [s for s in sends if s.count(b'"id":') >= 3]
        assert len(together) == 1, sends  # the three replies went out in one write
        replies = [json.loads(line) for line in together[0].splitlines()]
        assert [r["id"] for r in replies] == [11, None, 12]
        assert replies[1]["error"][0] == -32700
        writer.close()
