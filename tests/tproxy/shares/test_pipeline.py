"""ShareLog on the embedded engine: 100,000 shares exactly, the aggregate agrees with the raw
table, pool verdicts join, overflow goes through the spool, bad batches are quarantined."""

from __future__ import annotations

import inspect
import math
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.share_log import INSTANCE, assert_counters_consistent, fast_settings, shares
from tproxy.shares.pipeline import ShareLog
from tproxy.shares.record import PoolVerdictRecord, ShareRecord
from tproxy.shares.settings import ClickHouseSettings
from tproxy.shares.spool import KIND_SHARES, Spool


async def totals(log: ShareLog) -> tuple[int, int, float, float]:
    sc = log._store.schema
    (row,) = await log._query_rows(
        f"SELECT count(), uniqExact(share_seq), sum(target_difficulty), sum(share_difficulty) FROM {sc.q(sc.shares)}"
    )
    return int(row[0]), int(row[1]), float(row[2]), float(row[3])


async def test_100k_shares_exact_and_aggregate_agrees(tmp_path: Path, opened: Any) -> None:
    s = fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool", batch_size=5000, batch_max_age_s=0.5)
    log = await opened(ShareLog(s, INSTANCE))
    sent = shares(100_000)
    # submit() is a plain function: it cannot await the database (its latency is a
    # bench/bench_shares.py figure, not a unit-test threshold).
    assert not inspect.iscoroutinefunction(ShareLog.submit)
    for i, r in enumerate(sent):
        assert log.submit(r) is None
        if i % 2000 == 1999:
            await __import__("asyncio").sleep(0)
    assert await log.flush(60)
    n, distinct, tsum, ssum = await totals(log)
    assert n == distinct == 100_000
    # Difficulties are multiples of 1/256: the float sums are exact.
    assert tsum == math.fsum(r.target_difficulty for r in sent)
    assert ssum == math.fsum(r.share_difficulty for r in sent)
    sc = log._store.schema
    start = (int(time.time()) // 60 - 9) * 60
    p = {"instance_id": INSTANCE, "window_start": start}
    agg = await log._query_rows(sc.worker_hashrate_query(), p)
    raw = await log._query_rows(sc.raw_worker_query(), p)
    assert agg == raw and len(agg) == 8
    (m,) = await log._query_rows(f"SELECT sum(shares), sum(accepted_shares) FROM {sc.q(sc.minute)}")
    assert m == (100_000, sum(1 for r in sent if r.verdict == "accepted"))
    ws = await log.worker_hashrate(10)
    assert [w.worker_name for w in ws] == [r[0] for r in raw]
    for w, r in zip(ws, raw, strict=True):
        assert w.shares == r[1] and w.accepted_shares == r[2] and w.accepted_difficulty == r[3]
        assert w.hashrate == pytest.approx(r[3] * 2**32 / w.window_s)
        assert 540 <= w.window_s <= 600
    st = log.stats()
    assert (st.written, st.spooled, st.dropped, st.queued, st.failed_batches) == (100_000, 0, 0, 0, 0)
    assert st.db_up and st.oldest_unwritten_age_s == 0.0
    await log.close()


async def test_pool_verdicts_join_without_rewriting_rows(embedded: ClickHouseSettings, opened: Any) -> None:
    log = await opened(ShareLog(embedded, INSTANCE))
    sent = shares(300)
    for r in sent:
        log.submit(r)
    forwarded = [r for r in sent if r.forwarded]
    for k, r in enumerate(forwarded):
        log.submit_pool_verdict(PoolVerdictRecord(
            received_at_ms=r.received_at_ms + 50, instance_id=INSTANCE, channel_id=r.channel_id,
            sequence_number=r.sequence_number, share_seq=r.share_seq,
            pool_verdict="accepted" if k % 5 else "difficulty-too-low",
        ))
    assert await log.flush(30)
    sc = log._store.schema
    got = dict(await log._query_rows(
        f"SELECT pool_verdict, count() FROM {sc.q(sc.joined_view)} GROUP BY pool_verdict"
    ))
    rejected = sum(1 for k in range(len(forwarded)) if k % 5 == 0)
    assert got == {"accepted": len(forwarded) - rejected, "difficulty-too-low": rejected, "": len(sent) - len(forwarded)}
    assert log.stats().verdicts_written == len(forwarded)
    await log.close()


async def test_share_seq_restart_does_not_collide(tmp_path: Path, opened: Any) -> None:
    """A restarted proxy starts share_seq at 1 again: new run_id, new tokens, nothing deduplicated away."""
    s = fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool")
    for _ in range(2):
        log = await opened(ShareLog(s, INSTANCE))
        for r in shares(1200):
            log.submit(r)
        assert await log.flush(30)
        n, distinct, *_ = await totals(log)
        await log.close()
    assert (n, distinct) == (2400, 1200)


async def test_queue_overflow_goes_through_spool_exactly_once(tmp_path: Path, opened: Any) -> None:
    s = fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool", batch_size=500, queue_size=1000)
    log = await opened(ShareLog(s, INSTANCE))
    sent = shares(10_000)
    for r in sent:  # no yield to the loop: the queue overflows
        log.submit(r)
    assert log.stats().queued == 10_000
    assert await log.flush(60)
    st = log.stats()
    assert st.spooled > 0 and st.replayed == st.spooled and st.dropped == 0
    assert st.written == 10_000
    n, distinct, *_ = await totals(log)
    assert n == distinct == 10_000
    await log.close()
    assert list((tmp_path / "spool").glob("*.seg")) == []


async def test_bad_batch_is_quarantined_and_the_rest_flows(tmp_path: Path, opened: Any) -> None:
    s = fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool", batch_size=100)
    log = await opened(ShareLog(s, INSTANCE))
    good = shares(1000)
    for r in good[:500]:
        log.submit(r)
    assert await log.flush(30)
    bad = [ShareRecord(**{**{f: getattr(r, f) for f in ShareRecord.COLUMNS}, "nonce": -5}) for r in shares(100, start=5000)]
    for r in bad:
        log.submit(r)
    for r in good[500:]:
        log.submit(r)
    assert await log.flush(30)
    n, distinct, *_ = await totals(log)
    assert n == distinct == 1000
    st = log.stats()
    assert st.quarantined == 1 and st.dropped == 0
    assert len(list((tmp_path / "spool" / "quarantine").glob("rejected-*.seg"))) == 1
    await log.close()


async def test_close_spools_and_next_start_replays(tmp_path: Path, opened: Any) -> None:
    """Records still in memory at close() are spooled when the database cannot take them."""
    spool = tmp_path / "spool"
    down = fast_settings("http://127.0.0.1:9", spool)
    log = await opened(ShareLog(down, INSTANCE))
    for r in shares(3000):
        log.submit(r)
    await log.close()
    st = log.stats()
    assert (st.spooled, st.written, st.dropped, st.spool_pending) == (3000, 0, 0, 3000)
    up = fast_settings(f"chdb://{tmp_path / 'db'}", spool)
    log2 = await opened(ShareLog(up, INSTANCE))
    assert await log2.flush(30)
    assert log2.stats().replayed == 3000
    n, distinct, *_ = await totals(log2)
    assert n == distinct == 3000
    await log2.close()


async def test_replay_read_ahead_leaves_damage_to_the_head_read(tmp_path: Path, opened: Any) -> None:
    """Replay reads the next frame while the head is inserted. A damaged next frame is not
    quarantined by that read ahead (its segment still holds the head): the frames before it
    are written and acked, then it is quarantined when it is the head, as without read ahead."""
    sent = shares(300)
    sp = Spool(tmp_path / "spool", fsync=False)
    sp.open()
    for k in range(3):
        part = sent[k * 100 : (k + 1) * 100]
        sp.append(KIND_SHARES, f"{INSTANCE}:test:s:{k + 1}", part[0].received_at_ms,
                  [(*r.as_row()[:2], 7, *r.as_row()[2:]) for r in part])
    sp.close()
    (seg,) = (tmp_path / "spool").glob("*.seg")
    log = ShareLog(fast_settings(f"chdb://{tmp_path / 'db'}", tmp_path / "spool"), INSTANCE)
    scan = log._spool.open

    def open_then_damage() -> Any:
        # The damage happens after the start-up scan, so replay's reads are what find it.
        report = scan()
        data = bytearray(seg.read_bytes())
        data[-10] ^= 0x01  # in the body of the last frame
        seg.write_bytes(bytes(data))
        return report

    log._spool.open = open_then_damage  # type: ignore[method-assign]
    log = await opened(log)
    assert await log.flush(60)
    st = log.stats()
    assert (st.recovered, st.written, st.replayed, st.quarantined_rows, st.spool_pending) == (300, 200, 200, 100, 0)
    assert_counters_consistent(st)
    sc = log._store.schema
    (row,) = await log._query_rows(f"SELECT count(), uniqExact(share_seq), max(share_seq) FROM {sc.q(sc.shares)}")
    assert tuple(row) == (200, 200, 200)
    assert len(list((tmp_path / "spool" / "quarantine").glob("*.seg"))) == 1
