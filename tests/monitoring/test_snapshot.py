"""SnapshotCache: content, publishing, failure handling, task ownership, loop stalls."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from devnet.static_source import StaticSource, make_client
from monitoring.snapshot import Snapshot, SnapshotCache, sv1_worker_name
from monitoring.source import Sv1ClientState
from tests.helpers.waiting import until


def _items(raw: tuple[bytes, ...]) -> list[dict[str, Any]]:
    return [json.loads(b) for b in raw]


async def test_placeholder_before_first_build() -> None:
    cache = SnapshotCache(StaticSource(3))
    snap = cache.snapshot
    assert snap.seq == 0
    ok, reasons, _ = cache.health_now(snap)
    assert not ok and reasons == ("no monitoring snapshot yet",)


async def test_build_content() -> None:
    src = StaticSource(30, workers=20)
    cache = SnapshotCache(src)
    await cache.refresh_worker_stats()
    snap = await cache.refresh()
    clients = _items(snap.sv1_clients)
    assert [c["client_id"] for c in clients] == list(range(1, 31))
    c7 = json.loads(snap.sv1_by_id[7])
    assert c7["hashrate"] is None  # every 7th client has no estimate yet
    assert c7["worker_name"] == c7["sv1_username"] == "farm.rig00007"
    assert c7["sv1_worker_name"] == "rig00007"
    assert c7["target_hex"] == src.clients[7].target.to_bytes(32, "big").hex()
    expected_total = sum(c.hashrate for c in src.clients.values() if c.hashrate is not None)
    assert snap.global_info["sv1_clients"] == {"total_clients": 30, "total_hashrate": expected_total}
    # worker farm.rig00001 has clients 1 and 21
    w1 = json.loads(snap.workers_by_name["farm.rig00001"])
    assert w1["client_ids"] == [1, 21]
    assert src.clients[21].hashrate is None  # so the worker's sum is client 1's estimate alone
    assert w1["hashrate"] == src.clients[1].hashrate
    assert set(w1["windows"]) == {"5m", "1h", "24h"}
    # a worker with shares in the windows but no connection is listed too
    gone = json.loads(snap.workers_by_name["farm.gone"])
    assert gone["connections"] == 0 and gone["hashrate"] is None
    assert gone["windows"]["5m"]["hashrate"] == 3072.0 * 2**32 / 300
    names = [json.loads(b)["worker_name"] for b in snap.workers]
    assert names == sorted(names)


async def test_snapshot_is_immutable_and_swapped_whole() -> None:
    src = StaticSource(5)
    cache = SnapshotCache(src)
    first = await cache.refresh()
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.seq = 99  # type: ignore[misc]
    with pytest.raises(TypeError):
        first.sv1_by_id[1] = b"x"  # type: ignore[index]
    src.remove_client(1)
    second = await cache.refresh()
    assert cache.snapshot is second and second.seq == first.seq + 1
    assert 1 in first.sv1_by_id and 1 not in second.sv1_by_id  # the old one is untouched


async def test_unsorted_and_duplicate_client_ids() -> None:
    src = StaticSource(0)

    class Shuffled(StaticSource):
        def sv1_clients(self) -> Iterator[Sv1ClientState]:
            yield from (make_client(i, "w") for i in (5, 3, 9, 1))
            yield dataclasses.replace(make_client(3, "w"), shares_accepted=777)

    cache = SnapshotCache(Shuffled(0))
    snap = await cache.refresh()
    assert [c["client_id"] for c in _items(snap.sv1_clients)] == [1, 3, 5, 9]
    assert json.loads(snap.sv1_by_id[3])["shares_accepted"] == 777
    assert src.clients == {}


async def test_source_failure_keeps_previous_snapshot() -> None:
    class Flaky(StaticSource):
        fail = False

        def sv1_clients(self) -> Iterator[Sv1ClientState]:
            it = super().sv1_clients()
            yield next(it)
            if self.fail:
                raise RuntimeError("dictionary changed size during iteration")
            yield from it

    src = Flaky(10)
    cache = SnapshotCache(src, refresh_interval=0.01)
    await cache.start()
    try:
        good = cache.snapshot
        src.fail = True
        await until(lambda: cache.refresh_errors >= 2)
        assert cache.snapshot is good
        src.fail = False
        await until(lambda: cache.snapshot is not good)
        assert cache.snapshot.seq > good.seq
    finally:
        await cache.close()


async def test_worker_stats_failure_and_timeout_keep_previous() -> None:
    src = StaticSource(5)
    cache = SnapshotCache(src, worker_stats_timeout=0.05)
    snap = await cache.refresh()
    assert json.loads(snap.workers[0])["windows"] is None  # never loaded
    assert await cache.refresh_worker_stats()
    loaded_at = cache.snapshot.worker_stats_at
    src.worker_stats_error = ConnectionError("clickhouse down")
    assert not await cache.refresh_worker_stats()
    assert cache.last_worker_stats_error == "ConnectionError: clickhouse down"
    src.worker_stats_error = None
    src.worker_stats_delay = 1.0
    assert not await cache.refresh_worker_stats()
    assert "TimeoutError" in (cache.last_worker_stats_error or "")
    snap = await cache.refresh()
    assert snap.worker_stats_at is not None and snap.worker_stats_at != loaded_at
    assert json.loads(snap.workers_by_name["farm.rig00001"])["windows"] is not None


async def test_tasks_are_named_owned_and_cancelled() -> None:
    cache = SnapshotCache(StaticSource(5), refresh_interval=0.01, worker_stats_interval=0.01)
    await cache.start()
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert {"monitoring-snapshot-refresh", "monitoring-worker-stats"} <= names
    with pytest.raises(RuntimeError):
        await cache.start()
    await asyncio.sleep(0.05)
    await cache.close()
    await cache.close()  # idempotent
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert not names & {"monitoring-snapshot-refresh", "monitoring-worker-stats"}


def test_sv1_worker_name_rule() -> None:
    assert sv1_worker_name("acct.rig7") == "rig7"
    assert sv1_worker_name("acct.rig.7") == "rig.7"
    assert sv1_worker_name("acct.") == "acct."
    assert sv1_worker_name("acct") == "acct"
    assert sv1_worker_name("") == ""


async def _build_with_ticker(cache: SnapshotCache) -> tuple[Snapshot, int]:
    """Build while a 'share path' task that yields on every turn counts the loop
    iterations it gets during the build (no clock involved)."""
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker(), name="test-ticker")
    await asyncio.sleep(0)  # let it start
    before = ticks
    snap = await cache.refresh()
    during = ticks - before
    done = True
    await task
    return snap, during


async def test_build_of_10000_clients_yields_to_other_tasks() -> None:
    # Structural check of the slicing; the stall figures (ms) are bench/bench_monitoring.py's.
    src = StaticSource(10_000)
    cache = SnapshotCache(src)
    await cache.refresh_worker_stats()
    snap, ticks = await _build_with_ticker(cache)
    assert len(snap.sv1_clients) == 10_000
    assert snap.slices > 20  # ~1 ms budget, a build of hundreds of ms: many slices
    # Every pause between two slices let the other task run (each pause yields twice).
    assert ticks >= 2 * (snap.slices - 1)
    # The same build with an unreachable budget is one stretch: the other task never runs.
    unsliced = SnapshotCache(src, slice_budget_s=3600.0)
    await unsliced.refresh_worker_stats()
    one_piece, one_piece_ticks = await _build_with_ticker(unsliced)
    assert one_piece.slices == 1 and one_piece_ticks == 0
    assert one_piece.sv1_clients == snap.sv1_clients and one_piece.workers == snap.workers
    assert _without_timestamp(one_piece.metrics.body) == _without_timestamp(snap.metrics.body)


def _without_timestamp(metrics: bytes) -> list[bytes]:
    return [ln for ln in metrics.splitlines() if not ln.startswith(b"tproxy_monitoring_snapshot_timestamp_seconds ")]


async def test_start_survives_a_broken_source_and_slow_statistics() -> None:
    class Broken(StaticSource):
        broken = True

        def upstream(self) -> Any:
            if self.broken:
                raise RuntimeError("not wired yet")
            return super().upstream()

    src = Broken(3)
    src.worker_stats_delay = 3600.0  # the statistics never arrive
    cache = SnapshotCache(src, refresh_interval=0.02)
    await cache.start(first_stats_timeout=0.05)
    try:
        # start() returned without the statistics: it gave up on them, it did not wait
        assert src.calls["worker_stats"] == 1 and cache.worker_stats_errors == 1
        assert "TimeoutError" in (cache.last_worker_stats_error or "")
        assert cache.snapshot.seq == 0 and cache.refresh_errors == 1
        src.broken = False
        await until(lambda: cache.snapshot.seq > 0)
        assert cache.health_now(cache.snapshot)[0]
    finally:
        await cache.close()


def test_worker_window_hashrate_uses_the_measured_window_length() -> None:
    from monitoring.snapshot import HASHES_PER_DIFFICULTY, _window_json

    # The share log's "5 minute" window is minute-aligned: here it covered 240 s.
    row = _window_json(300, (3, 1, 10.0, None, 240.0))
    assert row["window_s"] == 300
    assert row["hashrate"] == 10.0 * HASHES_PER_DIFFICULTY / 240.0
    assert _window_json(300, None)["hashrate"] == 0.0
