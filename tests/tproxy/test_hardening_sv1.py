"""Hostile SV1 peers over real TCP (issues 10.6, 11.1, 11.2, 11.6, 11.7): each is answered or closed
alone, with one log line and no traceback, while a normal miner beside it keeps mining."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl

import pytest

from tests.helpers.hostile import (
    deaf_miner,
    dribble,
    mine_one,
    read_until_closed,
    sslv2_hello,
    stack_with,
    tls_client_hello_via_ssl,
    tls_record_hello,
)
from tests.helpers.sv1_client import Sv1TestClient
from tests.helpers.waiting import until
from tproxy.sv1 import protocol as p


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# -- A: numbers of any size and type ------------------------------------------------------


@pytest.mark.parametrize(
    "method,params",
    [
        ("mining.suggest_difficulty", [10**400]),
        ("mining.suggest_difficulty", ["1e400"]),
        ("mining.suggest_difficulty", [None]),
        ("mining.suggest_difficulty", [True]),
        ("mining.suggest_difficulty", [-(10**400)]),
        ("mining.configure", [["minimum-difficulty"], {"minimum-difficulty.value": 10**400}]),
        ("mining.configure", [["version-rolling"], {"version-rolling.mask": 2**64}]),
        ("mining.configure", [["version-rolling"], {"version-rolling.min-bit-count": [16]}]),
        ("mining.submit", ["farm.h", "1", 10**400, "0", "0"]),
    ],
    ids=lambda v: repr(v)[:24],
)
async def test_hostile_numbers_get_an_error_reply_and_the_miner_stays(
    method: str, params: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with stack_with() as st:
        c = await st.client("farm.h")
        r = await c.request(method, params)
        # submit errors use Stratum code 20 (firmware shows it); the others are invalid params
        assert r["error"] is not None and r["error"][0] in (p.INVALID_PARAMS, p.OTHER), r
        # a number past the JSON decoder's digit limit: a parse error for that line
        parse_error = asyncio.ensure_future(c.next_reply(None))
        await c.send_raw(b'{"id":77,"method":"mining.suggest_difficulty","params":[1' + b"0" * 5000 + b"]}\n")
        assert (await parse_error)["error"][0] == p.PARSE_ERROR
        # nesting deep enough to exhaust a recursive walk: also a parse error for that line
        parse_error = asyncio.ensure_future(c.next_reply(None))
        await c.send_raw(b'{"id":78,"method":"mining.submit","params":[' + b"[" * 990 + b'"\\ud800"' + b"]" * 990 + b"]}\n")
        assert (await parse_error)["error"][0] == p.PARSE_ERROR
        r = await c.request("mining.ping", [])
        assert r["result"] == "pong" and not c.closed.is_set()
        assert await mine_one(c)
        await c.close()
    no_tracebacks(caplog)


# -- B: invalid text ----------------------------------------------------------------------


async def test_worker_name_with_a_lone_surrogate_mines_under_the_replacement_character(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with stack_with() as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        await c.handshake("rig\ud800x")  # json.dumps writes it as the escape "\ud800"
        await c.wait_job()
        assert await mine_one(c)
        await until(lambda: st.pool.total_accepted == 1)
        (miner,) = st.proxy.hub.miners.values()
        assert miner.session.worker_name == "rig\ufffdx"
        assert miner.session.counters.accepted == 1
        # a long name with control characters is kept exactly (no truncation)
        long_name = "farm.\x00\x1b\u00e9" + "w" * 5000
        r = await c.request("mining.authorize", [long_name, "x"])
        assert r["result"] is True
        assert long_name in miner.session.authorized
        await c.close()
    no_tracebacks(caplog)


# -- C: slow lines ------------------------------------------------------------------------


async def test_a_dribbling_client_is_closed_at_the_first_message_deadline() -> None:
    async with stack_with(downstream={"first_message_timeout_s": 0.6}) as st:
        ok = await st.client("farm.ok")
        line = p.request(1, "mining.subscribe", ["x" * 200])  # 0.2 s per byte: ~45 s to finish
        assert await dribble(st.proxy.sv1_port, line, 0.2)
        assert st.proxy.sv1.closed_idle == 1
        assert await mine_one(ok)
        await ok.close()


async def test_complete_lines_that_never_subscribe_are_closed_at_the_first_message_deadline() -> None:
    async with stack_with(downstream={"first_message_timeout_s": 1.0}) as st:
        ok = await st.client("farm.ok")
        loiterer = await Sv1TestClient.connect(st.proxy.sv1_port)
        pongs = 0
        async with asyncio.timeout(30):
            while not loiterer.closed.is_set():
                try:  # answered every time, yet never a subscribe: no mining, no slot
                    pongs += (await loiterer.request("mining.ping", [], timeout=5))["result"] == "pong"
                except (TimeoutError, ConnectionError):
                    break
                await asyncio.sleep(0.1)
        await until(lambda: st.proxy.sv1.closed_idle == 1)
        assert pongs >= 1
        assert await mine_one(ok)
        await loiterer.close()
        await ok.close()


async def test_partial_lines_after_subscribe_are_closed_at_the_idle_timeout() -> None:
    async with stack_with(downstream={"idle_timeout_s": 1.0, "first_message_timeout_s": 30}) as st:
        ok = await st.client("farm.ok")
        reader, writer = await asyncio.open_connection("127.0.0.1", st.proxy.sv1_port)
        writer.write(p.request(1, "mining.subscribe", ["slowpoke"]))
        await writer.drain()
        closed = asyncio.create_task(read_until_closed(reader))
        n = 0
        while not closed.done():  # bytes of a line that never ends, faster than the idle timeout
            writer.write(b"{")
            await writer.drain()
            n += 1
            assert (await ok.request("mining.ping", []))["result"] == "pong"  # a real miner's lines count
            await asyncio.sleep(0.1)
        assert n >= 3  # bytes kept coming more often than the idle timeout; only complete lines count
        assert b'"result"' in closed.result()  # it was answered, then timed out
        assert st.proxy.sv1.closed_idle == 1
        writer.close()
        ok_en2 = 3
        assert await mine_one(ok, en2_seed=ok_en2)
        await ok.close()


# -- D: TLS on the SV1 port -----------------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_real_tls_handshake_is_closed_with_one_log_line(
    version: ssl.TLSVersion, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tproxy.sv1.server")
    async with stack_with() as st:
        ok = await st.client("farm.ok")
        outcome = await asyncio.to_thread(tls_client_hello_via_ssl, st.proxy.sv1_port, version)
        assert outcome != "handshake completed"
        await until(lambda: st.proxy.sv1.closed_tls == 1)
        lines = [r.getMessage() for r in caplog.records if "TLS" in r.getMessage()]
        assert len(lines) == 1 and "plain stratum+tcp" in lines[0]
        assert await mine_one(ok)
        await ok.close()
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    "hello",
    [tls_record_hello(v) for v in (0x0300, 0x0301, 0x0302, 0x0303, 0x0304)] + [sslv2_hello(0x0002), sslv2_hello(0x0301)],
    ids=["ssl3", "tls1.0", "tls1.1", "tls1.2", "tls1.3-record", "sslv2", "sslv2-hello-tls1.0"],
)
async def test_hand_built_hellos_are_recognised_even_one_byte_at_a_time(hello: bytes) -> None:
    async with stack_with() as st:
        reader, writer = await asyncio.open_connection("127.0.0.1", st.proxy.sv1_port)
        writer.write(hello)
        await writer.drain()
        sent = await read_until_closed(reader)  # one parse-error line naming the cause, then closed
        assert sent.count(b"\n") == 1 and b"plain stratum+tcp" in sent
        writer.close()
        assert await dribble(st.proxy.sv1_port, hello[:5], 0.05)
        assert st.proxy.sv1.closed_tls == 2
        assert st.proxy.sv1.closed_for_garbage == 0


# -- E: a miner that never reads ----------------------------------------------------------


async def test_a_miner_that_stops_reading_its_replies_is_closed_at_the_write_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with stack_with(downstream={"write_timeout_s": 1.0}) as st:  # default 1 MiB buffer bound
        ok = await st.client("farm.ok")
        _reader, deaf = await deaf_miner(st.proxy.sv1_port, "farm.deaf")
        ping = json.dumps({"id": "i" * 8000, "method": "mining.ping", "params": []}).encode() + b"\n"
        sent = accepted = 0
        async with asyncio.timeout(60):
            while st.proxy.sv1.closed_slow == 0:  # its own replies pile up at the proxy
                try:
                    deaf.write(ping)
                    await deaf.drain()
                except ConnectionError:
                    break
                sent += 1
                if sent % 100 == 0:  # the other miner is answered throughout
                    accepted += await mine_one(ok, en2_seed=sent)
        await until(lambda: st.proxy.sv1.closed_slow == 1)
        assert accepted == sent // 100
        assert await mine_one(ok, en2_seed=1)
        await until(lambda: len(st.proxy.hub.miners) == 1)
        deaf.close()
        await ok.close()
    lines = [r.getMessage() for r in caplog.records if "not reading" in r.getMessage()]
    assert len(lines) == 1 and "unsent for" in lines[0], lines  # the write-time bound closed it
    no_tracebacks(caplog)


async def test_a_miner_that_stops_reading_is_not_read_and_its_deadline_waits_until_it_reads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While a miner's replies are backed up the proxy stops reading it (its lines cannot arrive), so
    an idle deadline that passes meanwhile is acted on once it has read: closed idle, not slow."""
    caplog.set_level(logging.INFO)
    settings = {"idle_timeout_s": 1.0, "first_message_timeout_s": 30, "write_timeout_s": 300}
    async with stack_with(downstream=settings) as st:  # default 1 MiB buffer bound
        reader, deaf = await deaf_miner(st.proxy.sv1_port, "farm.deaf")
        (conn,) = st.proxy.sv1.connections
        ping = json.dumps({"id": "i" * 8000, "method": "mining.ping", "params": []}).encode() + b"\n"

        async def flood() -> None:
            with contextlib.suppress(ConnectionError):
                while True:  # blocks in drain once the proxy stops reading
                    deaf.write(ping)
                    await deaf.drain()

        flooding = asyncio.create_task(flood())
        await until(lambda: conn.backed_up)
        # past the idle deadline (one second after the last line the proxy read): the timer
        # fires while the proxy is not reading this miner, and the miner is kept
        await asyncio.sleep(1.5)
        assert conn.backed_up and st.proxy.sv1.closed_idle == 0 and st.proxy.sv1.closed_slow == 0
        flooding.cancel()
        await read_until_closed(reader)  # it reads: the proxy resumes, sees the deadline, closes it
        await until(lambda: st.proxy.sv1.closed_idle == 1)
        assert st.proxy.sv1.closed_slow == 0
        await until(lambda: not st.proxy.hub.miners)
        ok = await st.client("farm.ok")
        assert await mine_one(ok)
        deaf.close()
        await ok.close()
    lines = [r.getMessage() for r in caplog.records if "closing:" in r.getMessage()]
    assert len(lines) == 1 and "idle: no complete line for 1 s" in lines[0], lines
    no_tracebacks(caplog)


# -- rate-limited logs ----------------------------------------------------------------------


async def test_a_flood_of_bad_lines_is_logged_once_plus_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tproxy.sv1.server")
    async with stack_with() as st:
        c = await st.client("farm.noisy")
        for _ in range(50):
            await c.send_raw(b"this is not json\n")
        r = await c.request("mining.ping", [])
        assert r["result"] == "pong"
        await c.close()
        await until(lambda: not st.proxy.hub.miners)
    bad = [r.getMessage() for r in caplog.records if "bad line" in r.getMessage()]
    counts = [r.getMessage() for r in caplog.records if "49 more like this" in r.getMessage()]
    assert len(bad) == 1 and len(counts) == 1, [r.getMessage() for r in caplog.records]


async def test_many_closes_for_one_reason_from_one_host_log_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tproxy.sv1.server")
    async with stack_with() as st:
        for _ in range(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", st.proxy.sv1_port)
            writer.write(tls_record_hello(0x0301))
            await writer.drain()
            await read_until_closed(reader)
            writer.close()
        await until(lambda: st.proxy.sv1.closed_tls == 10)  # every one counted
    lines = [r.getMessage() for r in caplog.records if "plain stratum+tcp" in r.getMessage()]
    assert len(lines) == 1, lines


async def test_a_deaf_miner_is_closed_when_job_fan_out_exceeds_its_buffer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with stack_with(downstream={"write_buffer_max_bytes": 32 * 1024, "write_timeout_s": 300}) as st:
        ok = await st.client("farm.ok")
        _reader, writer = await deaf_miner(st.proxy.sv1_port, "farm.deaf")
        async with asyncio.timeout(120):
            while st.proxy.sv1.closed_slow == 0:  # the pool sends job after job to both miners
                seen = len(ok.jobs)
                await st.pool.announce_new_job()
                await ok.wait_job(after=seen)  # the reading miner gets every one
        await until(lambda: len(st.proxy.hub.miners) == 1)
        assert await mine_one(ok, en2_seed=9)
        writer.close()
        await ok.close()
    lines = [r.getMessage() for r in caplog.records if "not reading" in r.getMessage()]
    assert len(lines) == 1 and "write_buffer_max_bytes" in lines[0], lines
    no_tracebacks(caplog)


async def test_an_internal_error_is_answered_logged_once_with_its_traceback_and_keeps_the_miner(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug of ours (injected: the one fault that cannot be produced honestly) is not the miner's fault."""
    from tproxy.sv1.session import MinerSession

    def broken(self: MinerSession, req: p.Request, now: float) -> bytes:
        raise ZeroDivisionError("injected bug")

    caplog.set_level(logging.INFO, logger="tproxy.sv1.server")
    async with stack_with() as st:
        c = await st.client("farm.w1")
        monkeypatch.setattr(MinerSession, "_suggest_difficulty", broken)
        for _ in range(3):
            r = await c.request("mining.suggest_difficulty", [512])
            assert r["error"][0] == p.OTHER and "internal" in r["error"][1]
        assert (await c.request("mining.ping", []))["result"] == "pong"
        assert await mine_one(c)
        assert st.proxy.sv1.internal_errors == 3
        await c.close()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
