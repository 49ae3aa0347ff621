"""The share log through the whole stack, in one process: dev pool <-SV2-> Proxy (share log on an
embedded chdb engine in tmp_path) <-SV1-> scripted clients.

Every share a miner sent is one row with the verdict the miner was answered with; forwarded
shares carry their upstream channel_id and a unique sequence_number; the pool's verdict (an
acceptance or a rejection) joins back to the row through ``shares_with_verdict``; the
per-minute aggregate agrees with the raw rows.

The chdb engine of this process is owned by the proxy's ShareLog (one engine path per
process), so every query goes through ``ShareLog._query_rows`` on its database thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from devnet.pool import DevPool
from sv2 import work
from tests.helpers.share_log import fast_settings
from tests.helpers.stack import pool_settings, proxy_settings
from tests.helpers.sv1_client import Sv1TestClient
from tproxy.runtime import Proxy


async def until(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_every_share_once_with_its_verdict_pool_verdict_and_aggregate(tmp_path: Path) -> None:
    pool = DevPool(pool_settings())
    await pool.start()
    settings = proxy_settings([pool.port]).model_copy(
        update={"clickhouse": fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool")}
    )
    proxy = Proxy(settings)
    await proxy.start()
    log = proxy.share_log
    assert log is not None
    sent: Counter[tuple[str, str]] = Counter()  # (worker, verdict) as answered to the miner
    clients: list[Sv1TestClient] = []
    try:
        cid = await _submit_one_of_every_verdict(pool, proxy, sent, clients)
        await until(lambda: pool.total_accepted + pool.total_rejected >= proxy.manager.shares_forwarded)
        assert pool.total_accepted == 5 and pool.total_rejected == 2
        await until(lambda: log.stats().verdicts_pending == 0 and log.stats().queued == 0)
        assert await log.flush(10)
        n = await _assert_rows_and_pool_verdicts(log, pool, proxy, sent, cid)
        await _assert_aggregate_matches_rows(log, settings.proxy.instance_id, n)
    finally:
        for c in clients:
            await c.close()
        await proxy.close()
        await pool.close()


async def _submit_one_of_every_verdict(
    pool: DevPool, proxy: Proxy, sent: Counter[tuple[str, str]], clients: list[Sv1TestClient]
) -> int:
    """Two miners submit accepted shares and one share of every local reject verdict, then two
    shares the pool rejects (its target silently raised). Returns the upstream channel id."""
    async def client(worker: str) -> Sv1TestClient:
        c = await Sv1TestClient.connect(proxy.sv1_port)
        clients.append(c)
        await c.handshake(worker)
        await c.wait_job()
        return c

    async def ok(c: Sv1TestClient, worker: str, job: Any, k: int) -> None:
        en2, ntime, nonce = c.find_share(job, en2=k.to_bytes(c.extranonce2_size, "big"))
        r = await c.submit(worker, job, en2, ntime, nonce)
        assert r["result"] is True, r
        sent[(worker, "accepted")] += 1

    async def err(r: dict[str, Any], code: int, worker: str, verdict: str) -> None:
        assert r["result"] is None and r["error"][0] == code, r
        sent[(worker, verdict)] += 1

    a = await client("farm.alice")
    b = await client("farm.bob")
    ja = a.jobs[-1]
    for k in range(3):
        await ok(a, "farm.alice", ja, k)
    for k in range(2):
        await ok(b, "farm.bob", b.jobs[-1], k)
    en2, ntime, nonce = a.find_share(ja, en2=(0).to_bytes(a.extranonce2_size, "big"))
    await err(await a.submit("farm.alice", ja, en2, ntime, nonce), 22, "farm.alice", "duplicate-share")
    l_en2, l_ntime, l_nonce = a.find_share(ja, en2=(7).to_bytes(4, "big"), meets=False)
    await err(await a.submit("farm.alice", ja, l_en2, l_ntime, l_nonce), 23, "farm.alice", "difficulty-too-low")
    await err(await a.request("mining.submit", ["farm.alice", "nope", en2.hex(), f"{ntime:08x}", f"{nonce:08x}"]),
              21, "farm.alice", "invalid-job-id")
    await err(await a.request("mining.submit", ["farm.alice", ja.job_id, "00", f"{ntime:08x}", f"{nonce:08x}"]),
              20, "farm.alice", "bad-extranonce-size")
    await err(await a.submit("farm.alice", ja, en2, ntime, nonce, version_bits=0x00000001),
              20, "farm.alice", "invalid-version-bits")
    r = await a.request("mining.submit", ["farm.other", ja.job_id, en2.hex(), f"{ntime:08x}", f"{nonce:08x}"])
    assert r["error"][0] == 24, r
    sent[("?", "unauthorized")] += 1  # which worker name an unauthorized row carries is not asserted

    # A new block: the old job is stale.
    mark = len(a.jobs)
    await pool.announce_new_block()
    await a.wait_job(after=mark, clean=True)
    s_en2, s_ntime, s_nonce = a.find_share(ja, en2=(9).to_bytes(4, "big"))
    await err(await a.submit("farm.alice", ja, s_en2, s_ntime, s_nonce), 21, "farm.alice", "stale-share")

    # The pool silently raises its target for the next jobs: the proxy forwards shares
    # it accepted and the pool rejects them; that verdict must join back to the rows.
    cid = next(iter(proxy.manager.channels))
    pool.channels[cid].target = work.target_from_difficulty(1e6)
    mark_b = len(b.jobs)
    await pool.announce_new_block()
    jb = await b.wait_job(after=mark_b, clean=True)
    for k in range(2):
        await ok(b, "farm.bob", jb, 10 + k)
    return cid


async def _assert_rows_and_pool_verdicts(
    log: Any, pool: DevPool, proxy: Proxy, sent: Counter[tuple[str, str]], cid: int
) -> int:
    """Every answered share is exactly one row with its verdict; forwarded rows and the pool's
    verdicts join back. Returns the number of rows."""
    q = log._query_rows
    n = sum(sent.values())
    (count, distinct, runs, lo, hi), = await q(
        "SELECT count(), uniqExact(run_id, share_seq), uniqExact(run_id), min(share_seq), max(share_seq) "
        "FROM tproxy.shares")
    assert (count, distinct, runs, lo, hi) == (n, n, 1, 1, n)

    rows = await q("SELECT worker_name, verdict, count() FROM tproxy.shares GROUP BY worker_name, verdict")
    got = Counter({(w if v != "unauthorized" else "?", v): int(c) for w, v, c in rows})
    assert got == sent

    # Forwarded: exactly the accepted shares, on the upstream channel, unique sequence numbers.
    (fwd, fwd_acc, fwd_ch, fwd_seq, unfwd_seq), = await q(
        "SELECT countIf(forwarded), countIf(forwarded AND verdict = 'accepted'), "
        f"countIf(forwarded AND channel_id = {cid}), uniqExactIf(sequence_number, forwarded), "
        "countIf(NOT forwarded AND sequence_number != 0) FROM tproxy.shares")
    n_acc = sum(v for (_, verdict), v in sent.items() if verdict == "accepted")
    assert fwd == fwd_acc == fwd_ch == fwd_seq == n_acc == proxy.manager.shares_forwarded == 7
    assert unfwd_seq == 0

    # The pool's verdicts, joined on (instance_id, run_id, share_seq).
    joined = await q(
        "SELECT worker_name, forwarded, pool_verdict, count() FROM tproxy.shares_with_verdict "
        "GROUP BY worker_name, forwarded, pool_verdict")
    by = {(w, bool(f), pv): int(c) for w, f, pv, c in joined}
    assert by[("farm.alice", True, "accepted")] == 3
    assert by[("farm.bob", True, "accepted")] == 2
    bob_rejected = {pv: c for (w, f, pv), c in by.items() if w == "farm.bob" and f and pv != "accepted"}
    assert sum(bob_rejected.values()) == 2 and "" not in bob_rejected, by
    assert set(bob_rejected) == set(pool.rejected_by_code()), (bob_rejected, pool.rejected_by_code())
    assert all(pv == "" for (_, f, pv) in by if not f)  # no verdict for unforwarded shares
    (verdict_rows, verdict_keys), = await q(
        "SELECT count(), uniqExact(run_id, share_seq) FROM tproxy.pool_verdicts")
    assert verdict_rows == verdict_keys == 7
    return n


async def _assert_aggregate_matches_rows(log: Any, instance_id: str, n: int) -> None:
    """The per-minute aggregate agrees with the raw rows, worker by worker."""
    q = log._query_rows
    # The per-minute aggregate agrees with the raw rows, worker by worker.
    since = {"instance_id": instance_id, "window_start": int(time.time()) // 60 * 60 - 3600}
    schema = log._store.schema
    raw = await q(schema.raw_worker_query(), since)
    agg = await q(schema.worker_hashrate_query(), since)
    assert [(r[0], int(r[1]), int(r[2]), int(r[5]), int(r[6])) for r in agg] == \
        [(r[0], int(r[1]), int(r[2]), int(r[5]), int(r[6])) for r in raw]
    # Difficulty sums: same values, summed in another order (float rounding only).
    assert [float(r[k]) for r in agg for k in (3, 4)] == pytest.approx(
        [float(r[k]) for r in raw for k in (3, 4)], rel=1e-12)
    assert sum(int(r[1]) for r in agg) == n
    stats = {w.worker_name: w for w in await log.worker_hashrate(60)}
    assert stats["farm.alice"].accepted_shares == 3 and stats["farm.bob"].accepted_shares == 4
    assert stats["farm.bob"].hashrate > 0
    st = log.stats()
    assert st.dropped == 0 and st.spooled == 0 and st.written == n and st.verdicts_written == 7
