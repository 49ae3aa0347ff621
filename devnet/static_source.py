"""StaticSource: a deterministic, in-process ``MonitoringSource`` over fixed data.

It is not a mock of the proxy: it is a plain implementation of the
``MonitoringSource`` protocol, so the monitoring package can be exercised end
to end (snapshot, metrics, real HTTP) without a proxy. The monitoring tests
mutate it (remove a client, close the channel, make the share log fall
behind) and refresh the cache to see the effect; bench/bench_monitoring.py
uses it as a 10,000-client source.

Data layout for ``StaticSource(n)``: client ids 1..n; ``workers`` distinct
worker names ``farm.rigNNNNN`` assigned round-robin (so with n > workers some
workers have two connections); every 7th client has no hashrate estimate yet;
one upstream extended channel (id 1) serving everyone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import replace

from monitoring.source import (
    EventEntry,
    ShareLogState,
    Sv1ClientState,
    UpstreamChannelState,
    UpstreamState,
    WorkerWindowStats,
)

BASE_TIME = 1_760_000_000.0
DIFF1_TARGET = 0xFFFF << 208


def worker_of(i: int, workers: int) -> str:
    return f"farm.rig{i % workers:05d}"


def make_client(client_id: int, worker_name: str) -> Sv1ClientState:
    i = client_id
    return Sv1ClientState(
        client_id=client_id,
        channel_id=1,
        worker_name=worker_name,
        user_identity="farm.proxy",
        target=DIFF1_TARGET // (1024 + i),
        hashrate=None if i % 7 == 0 else 1.0e14 + i * 1.0e9,
        extranonce1=i.to_bytes(4, "big"),
        extranonce2_len=4,
        version_rolling_mask=0x1FFFE000 if i % 2 == 0 else None,
        version_rolling_min_bit=2 if i % 4 == 0 else None,
        connection_ip=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
        connected_at=BASE_TIME + i,
        shares_accepted=10 * i,
        shares_rejected=i % 3,
        stable_hashrate=i % 2 == 1,
        last_share_at=None if i % 5 == 0 else BASE_TIME + 1000 + i,
    )


class StaticSource:
    """A MonitoringSource over fixed, mutable-by-tests data."""

    def __init__(self, n_clients: int = 60, *, workers: int | None = None) -> None:
        self.workers = workers if workers is not None else max(1, (n_clients * 2) // 3)
        self.clients: dict[int, Sv1ClientState] = {
            i: make_client(i, worker_of(i, self.workers)) for i in range(1, n_clients + 1)
        }
        self.upstream_state = UpstreamState(
            connected=True, channel_open=True, address="pool.example.org:34254", since=BASE_TIME
        )
        self.channel_list: list[UpstreamChannelState] = [
            UpstreamChannelState(
                channel_id=1,
                user_identity="farm.proxy",
                nominal_hashrate=2.5e15,
                target=DIFF1_TARGET // 65536,
                extranonce_prefix=bytes.fromhex("00010203"),
                full_extranonce_size=12,
                rollable_extranonce_size=8,
                version_rolling=True,
                shares_acknowledged=123_456,
                shares_submitted=123_470,
                shares_rejected=14,
                shares_rejected_by_reason={"stale-share": 9, "duplicate-share": 3, "custom-pool-code": 2},
                acknowledged_work_sum=8_090_812_416,
                validated_work_sum=8_091_000_000.5,
                best_diff=7.5e9,
                blocks_found=1,
            )
        ]
        self.share_log_state: ShareLogState | None = ShareLogState(
            queued=12,
            written=1_000_000,
            spooled=2_000,
            replayed=1_990,
            retried=4,
            failed_batches=2,
            dropped=0,
            oldest_unwritten_age_s=0.8,
            db_up=True,
            spool_pending=10,
        )
        self.worker_stats_error: Exception | None = None
        self.worker_stats_delay: float = 0.0
        # One connect and one authorize per client, newest first (the events table's order).
        self.event_list: list[EventEntry] = [
            EventEntry(BASE_TIME + c.client_id + k / 10, 1, 2 * c.client_id - 1 + k, t,
                       c.worker_name if k else "", c.client_id, f"{c.connection_ip}:4000", "cgminer/4.11",
                       "", 0.0, 1024.0 + c.client_id, 1, "")
            for c in reversed(list(self.clients.values())) for k, t in ((1, "authorize"), (0, "connect"))
        ]
        self.calls: dict[str, int] = {"upstream": 0, "channels": 0, "sv1_clients": 0, "share_log": 0, "worker_stats": 0}

    # -- MonitoringSource ----------------------------------------------------

    def upstream(self) -> UpstreamState:
        self.calls["upstream"] += 1
        return self.upstream_state

    def channels(self) -> Sequence[UpstreamChannelState]:
        self.calls["channels"] += 1
        return list(self.channel_list)

    def sv1_clients(self) -> Iterator[Sv1ClientState]:
        self.calls["sv1_clients"] += 1
        # A generator over a copy, as the protocol asks: the cache yields to the
        # loop between slices and the live dict may change meanwhile.
        return iter(list(self.clients.values()))

    def share_log(self) -> ShareLogState | None:
        self.calls["share_log"] += 1
        return self.share_log_state

    async def events(
        self, *, worker: str | None, event_type: str | None, since: float | None, offset: int, limit: int
    ) -> tuple[int, Sequence[EventEntry]]:
        rows = [e for e in self.event_list
                if (worker is None or e.worker_name == worker) and (event_type is None or e.type == event_type)
                and (since is None or e.at >= since)]
        return len(rows), rows[offset : offset + limit]

    async def worker_stats(self, windows: Sequence[int]) -> Sequence[WorkerWindowStats]:
        self.calls["worker_stats"] += 1
        if self.worker_stats_delay:
            await asyncio.sleep(self.worker_stats_delay)
        if self.worker_stats_error is not None:
            raise self.worker_stats_error
        rows: list[WorkerWindowStats] = []
        names = sorted({c.worker_name for c in self.clients.values() if c.worker_name})
        for k, name in enumerate(names):
            for w in windows:
                scale = w // 300
                rows.append(
                    WorkerWindowStats(
                        worker_name=name,
                        window_s=w,
                        shares_accepted=(5 + k % 11) * scale,
                        shares_rejected=k % 2,
                        accepted_difficulty_sum=float((5 + k % 11) * scale * 1024),
                        last_share_at=BASE_TIME + 2000 + k,
                    )
                )
        # A worker that has left but still has shares in the windows.
        for w in windows:
            rows.append(
                WorkerWindowStats(
                    worker_name="farm.gone",
                    window_s=w,
                    shares_accepted=3,
                    shares_rejected=0,
                    accepted_difficulty_sum=3072.0,
                    last_share_at=BASE_TIME,
                )
            )
        return rows

    # -- test controls -------------------------------------------------------

    def remove_client(self, client_id: int) -> Sv1ClientState:
        return self.clients.pop(client_id)

    def add_client(self, client: Sv1ClientState) -> None:
        self.clients[client.client_id] = client

    def set_upstream(self, **changes: object) -> None:
        self.upstream_state = replace(self.upstream_state, **changes)  # type: ignore[arg-type]

    def set_share_log(self, **changes: object) -> None:
        assert self.share_log_state is not None
        self.share_log_state = replace(self.share_log_state, **changes)  # type: ignore[arg-type]
