"""Upstream events through the whole stack: keepalive, UpdateChannel, SetExtranoncePrefix,
CloseChannel, pool rejections attributed to the miner, the outage cut-off, the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devnet.pool import DevPool
from sv2 import work
from sv2.keys import decode_public_key, decode_secret_key, xonly_from_secret
from sv2.messages import CloseChannel, SetExtranoncePrefix
from tests.helpers.stack import Stack, pool_settings, proxy_settings, running
from tests.helpers.sv1_client import Sv1TestClient
from tproxy import runtime
from tproxy.runtime import Proxy

REPO = Path(__file__).resolve().parents[2]


async def _until(pred: object, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not pred():  # type: ignore[operator]
            await asyncio.sleep(0.02)


def pool_channel_id(st: Stack) -> int:
    assert len(st.pool.channels) == 1
    return next(iter(st.pool.channels))


async def test_keepalive_job_rolls_ntime_and_is_accepted() -> None:
    async with running(job_keepalive_interval_s=1) as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        await c.handshake("farm.w1")
        first = await c.wait_job()
        ka = await c.wait_job(after=len(c.jobs), timeout=5)
        assert ka.job_id != first.job_id and not ka.clean
        assert ka.prevhash == first.prevhash and ka.coinb1 == first.coinb1
        assert ka.ntime > first.ntime
        en2, ntime, nonce = c.find_share(ka)
        assert (await c.submit("farm.w1", ka, en2, ntime, nonce))["result"] is True
        await _until(lambda: st.pool.total_accepted == 1)
        # the original job is still valid too (not clean)
        en2, ntime, nonce = c.find_share(first, en2=b"\x00\x00\x00\x09")
        assert (await c.submit("farm.w1", first, en2, ntime, nonce))["result"] is True
        await c.close()


async def test_update_channel_follows_measured_hashrate() -> None:
    import time as _time

    offset = [0.0]  # the handshake happens at real time; later ticks are pushed forward

    pool = DevPool(pool_settings(fixed_difficulty=None))
    await pool.start()
    settings = proxy_settings([pool.port])
    proxy = Proxy(settings, share_log=False, now=lambda: _time.time() + offset[0])
    await proxy.start()
    try:
        c = await Sv1TestClient.connect(proxy.sv1_port)
        await c.handshake("farm.w1")
        job = await c.wait_job()
        for k in range(5):
            en2, ntime, nonce = c.find_share(job, en2=k.to_bytes(4, "big"))
            assert (await c.submit("farm.w1", job, en2, ntime, nonce))["result"] is True
        ch = next(iter(proxy.manager.channels.values()))
        before_target = ch.state.target
        assert ch.stats.nominal_hashrate == 0.0
        offset[0] += 20.0  # 20 s later: UpdateChannel is due
        proxy.tick()
        assert ch.stats.nominal_hashrate > 0
        # the pool answers UpdateChannel with SetTarget: the proxy's channel target moves
        await _until(lambda: ch.state.target != before_target)
        await c.close()
    finally:
        await proxy.close()
        await pool.close()


async def test_set_extranonce_prefix_keeps_extranonce1_and_shares_stay_valid() -> None:
    async with running() as st:
        c = await st.client("farm.w1")
        en1 = c.extranonce1
        cid = pool_channel_id(st)
        new_prefix = b"\xaa\xbb\xcc\xdd"
        pch = st.pool.channels[cid]
        pch.extranonce_prefix = new_prefix
        conn = st.pool._owner(cid)
        assert conn is not None
        conn.send(SetExtranoncePrefix(channel_id=cid, extranonce_prefix=new_prefix))
        mark = len(c.jobs)
        await st.pool.announce_new_block()
        job = await c.wait_job(after=mark, clean=True)
        assert c.extranonce1 == en1  # no mining.set_extranonce needed, no reconnect
        assert new_prefix in job.coinb1
        en2, ntime, nonce = c.find_share(job)
        assert (await c.submit("farm.w1", job, en2, ntime, nonce))["result"] is True
        await st.settled()
        assert st.pool.total_accepted == 1 and st.pool.total_rejected == 0
        await c.close()


async def test_pool_close_channel_in_aggregated_mode_reopens_and_keeps_miners() -> None:
    async with running() as st:
        c = await st.client("farm.w1")
        cid = pool_channel_id(st)
        conn = st.pool._owner(cid)
        assert conn is not None
        mark = len(c.jobs)
        conn.send(CloseChannel(channel_id=cid, reason_code="maintenance"))
        job = await c.wait_job(after=mark, timeout=15)
        assert not c.closed.is_set()
        en2, ntime, nonce = c.find_share(job)
        assert (await c.submit("farm.w1", job, en2, ntime, nonce))["result"] is True
        await _until(lambda: st.pool.total_accepted == 1)
        await c.close()


async def test_pool_rejections_are_attributed_to_the_miner_and_worker() -> None:
    async with running() as st:
        a = await st.client("farm.alice")
        b = await st.client("farm.bob")
        cid = pool_channel_id(st)
        # The pool silently raises its target for jobs activated from now on; the proxy
        # still believes the old one, so it forwards shares the pool will refuse.
        st.pool.channels[cid].target = work.target_from_difficulty(1e6)
        mark_a, mark_b = len(a.jobs), len(b.jobs)
        await st.pool.announce_new_block()
        ja = await a.wait_job(after=mark_a, clean=True)
        await b.wait_job(after=mark_b, clean=True)
        for k in range(2):
            en2, ntime, nonce = a.find_share(ja, en2=k.to_bytes(4, "big"))
            assert (await a.submit("farm.alice", ja, en2, ntime, nonce))["result"] is True
        await st.settled()
        assert st.pool.total_rejected == 2
        sessions = {m.session.worker_name: m.session for m in st.proxy.hub.miners.values()}
        assert sessions["farm.alice"].counters.pool_rejected == 2
        assert sessions["farm.bob"].counters.pool_rejected == 0
        ch = next(iter(st.proxy.manager.channels.values()))
        assert ch.stats.shares_rejected_by_reason == {"difficulty-too-low": 2}
        await a.close()
        await b.close()


async def test_outage_longer_than_the_limit_disconnects_miners_cleanly() -> None:
    async with running(outage_reconnect_after_s=1.0) as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        await c.handshake("farm.w1")
        await c.wait_job()
        await st.pool.close()
        await asyncio.wait_for(c.closed.wait(), 10)
        assert st.proxy.hub.outage_disconnects == 1


async def test_a_tick_spread_over_many_loop_iterations_still_does_all_its_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "TICK_SLICE_S", 1e-9)  # the running tick yields to the loop before every miner
    # vardiff on: its pass over the miners (a yield before each) comes before the outage watchdog
    async with running(outage_reconnect_after_s=1.0, difficulty_kw={"vardiff": True}) as st:
        clients = [await Sv1TestClient.connect(st.proxy.sv1_port) for _ in range(3)]
        for i, c in enumerate(clients):
            await c.handshake(f"farm.w{i}")
            await c.wait_job()
        await st.pool.close()
        for c in clients:
            await asyncio.wait_for(c.closed.wait(), 10)
        assert st.proxy.hub.outage_disconnects == 3


def test_keygen_prints_a_matching_pair() -> None:
    r = subprocess.run([sys.executable, "-m", "tproxy.cli", "keygen"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0
    lines = dict(line.split(" = ") for line in r.stdout.strip().splitlines())
    pub = decode_public_key(lines["authority_pubkey"].strip('"'))
    sec = decode_secret_key(lines["authority_secret_key"].strip('"'))
    assert xonly_from_secret(sec) == pub


def test_run_starts_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        TPROXY__DOWNSTREAM__PORT="0",
        TPROXY__MONITORING__ENABLED="false",
        TPROXY__UPSTREAMS='[{"address": "127.0.0.1", "port": 9, "authority_pubkey": "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72"}]',
        TPROXY__CLICKHOUSE__URL=f"chdb://{tmp_path / 'shares.chdb'}",
        TPROXY__CLICKHOUSE__SPOOL_DIR=str(tmp_path / "spool"),
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "tproxy.cli", "run", "--config", str(REPO / "config-examples" / "tproxy.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )
    assert p.stdout is not None
    seen = []
    for line in p.stdout:  # up, and the unreachable pool was tried and reported
        seen.append(line)
        if "upstream 127.0.0.1:9 unavailable" in line:
            break
    assert any("listening for SV1 miners" in ln for ln in seen)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, "".join(seen) + out
    assert "upstream 127.0.0.1:9 unavailable" in "".join(seen) + out
    assert "Traceback" not in "".join(seen) + out


async def test_graceful_shutdown_sends_client_reconnect_to_the_proxy_itself() -> None:
    async with running() as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        await c.handshake("farm.w1")
        await c.wait_job()
        port = st.proxy.sv1_port
    await asyncio.wait_for(c.closed.wait(), 5)
    rec = [n for n in c.notifications if n["method"] == "client.reconnect"]
    assert rec and rec[0]["params"][:2] == ["127.0.0.1", port] and rec[0]["params"][2] > 0


async def test_version_mask_follows_the_pools_rolling_permission() -> None:
    async with running(pool_kw=dict(version_rolling_allowed=False)) as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        await c.handshake("farm.w1")  # negotiates version rolling (mask 1fffe000)
        job = await c.wait_job()
        methods = [n["method"] for n in c.notifications]
        assert methods.index("mining.set_version_mask") < methods.index("mining.notify")
        mask_msg = next(n for n in c.notifications if n["method"] == "mining.set_version_mask")
        assert mask_msg["params"] == ["00000000"]
        # an unrolled share is fine, and the pool accepts it
        en2, ntime, nonce = c.find_share(job)
        assert (await c.submit("farm.w1", job, en2, ntime, nonce, version_bits=0))["result"] is True
        await _until(lambda: st.pool.total_accepted == 1)
        # a rolled one is refused locally instead of being rejected upstream
        r = await c.submit("farm.w1", job, en2, ntime, nonce + 1, version_bits=0x00002000)
        assert r["error"][0] == 20
        assert st.pool.total_rejected == 0
        await c.close()


async def test_non_aggregated_miner_is_kept_at_or_above_its_channel_difficulty() -> None:
    async with running(aggregated=False, pool_kw=dict(fixed_difficulty=4e-6), difficulty_kw={"start_difficulty": 1e-7}) as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        await c.handshake("farm.w1")
        job = await c.wait_job()
        assert job.difficulty >= 4e-6 * 0.999  # never below what the channel needs
        en2, ntime, nonce = c.find_share(job)
        assert (await c.submit("farm.w1", job, en2, ntime, nonce))["result"] is True
        await _until(lambda: st.pool.total_accepted == 1)  # so every valid share is useful upstream
        await c.close()


async def test_vardiff_raises_a_fast_miners_difficulty_before_the_next_notify() -> None:
    async with running(difficulty_kw={"vardiff": True, "shares_per_minute": 6.0, "retarget_interval_s": 1.0}) as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        await c.handshake("farm.w1")
        job = await c.wait_job()
        start = c.difficulty
        mark = len(c.notifications)  # a retarget may land while we are still submitting
        for k in range(40):  # far more than 6 a minute
            en2, ntime, nonce = c.find_share(job, en2=k.to_bytes(4, "big"))
            assert (await c.submit("farm.w1", job, en2, ntime, nonce))["result"] is True
        await c.wait_for(lambda: any(n["method"] == "mining.notify" for n in c.notifications[mark:]), 10)
        new = [n["method"] for n in c.notifications[mark:]]
        assert new.index("mining.set_difficulty") < new.index("mining.notify")
        assert c.difficulty > start
        # shares at the old difficulty still in flight are accepted for a grace period
        en2, ntime, nonce = c.find_share(job, en2=(99).to_bytes(4, "big"), difficulty=start)
        assert (await c.submit("farm.w1", job, en2, ntime, nonce))["result"] is True
        await c.close()


async def test_duplicate_detection_spans_keepalive_copies_of_a_job() -> None:
    async with running(job_keepalive_interval_s=1) as st:
        c = await Sv1TestClient.connect(st.proxy.sv1_port)
        await c.handshake("farm.w1")
        first = await c.wait_job()
        ka = await c.wait_job(after=len(c.jobs), timeout=5)
        assert ka.ntime > first.ntime
        en2, ntime, nonce = c.find_share(ka)
        assert (await c.submit("farm.w1", ka, en2, ntime, nonce))["result"] is True
        # the same header submitted under the first copy's SV1 id is the same share upstream
        # (not the other way round: a share under a copy may not have an ntime before the copy's)
        r = await c.submit("farm.w1", first, en2, ntime, nonce)
        assert r["error"][0] == 22
        await _until(lambda: st.pool.total_accepted == 1)
        assert st.pool.total_rejected == 0
        await c.close()


async def test_every_job_of_an_old_chain_tip_is_stale_not_unknown() -> None:
    async with running() as st:
        c = await st.client("farm.w1")
        first = c.jobs[-1]
        mark = len(c.jobs)
        await st.pool.announce_new_job()  # non-clean: the first job stays valid
        second = await c.wait_job(after=mark, clean=False)
        mark = len(c.jobs)
        await st.pool.announce_new_block()
        await c.wait_job(after=mark, clean=True)
        for old in (first, second):
            en2, ntime, nonce = c.find_share(old)
            assert (await c.submit("farm.w1", old, en2, ntime, nonce))["error"][0] == 21
        session = next(iter(st.proxy.hub.miners.values())).session
        assert session.counters.rejected_by_reason == {"stale-share": 2}
        await c.close()


async def test_channel_counts_best_share_and_blocks_found() -> None:
    async with running(pool_kw=dict(nbits=0x207FFFFF)) as st:  # regtest-easy: every share is a block
        c = await st.client("farm.w1")
        job = c.jobs[-1]
        diffs = []
        for k in range(3):
            en2, ntime, nonce = c.find_share(job, en2=k.to_bytes(4, "big"))
            diffs.append(work.share_difficulty(c.header_hash(job, en2, ntime, nonce)))
            assert (await c.submit("farm.w1", job, en2, ntime, nonce))["result"] is True
        await st.settled()
        stats = next(iter(st.proxy.manager.channels.values())).stats
        assert stats.blocks_found == 3 == st.pool.blocks_found
        assert stats.best_diff == max(diffs)
        await c.close()
