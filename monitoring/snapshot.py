"""The snapshot cache: the only place monitoring reads proxy state.

Owns ``SnapshotCache`` and the immutable ``Snapshot`` it publishes. A named
background task asks the ``MonitoringSource`` for the proxy's state every
``refresh_interval`` seconds, builds a complete, API-ready ``Snapshot`` (JSON
bodies pre-serialized per item, the Prometheus text rendered once, health
evaluated) and publishes it by assigning one attribute. Request handlers read
``cache.snapshot`` and nothing else: no lock, no await, no walk over live
objects, so a request costs only the sending of bytes that already exist
(and ``monitoring.api`` caps the rate of those).

The build walks every SV1 client (10,000+ on a farm) on the event loop, in
slices: after each item it checks a time budget (``slice_budget_s``, 1 ms by
default) and yields to the loop when it is spent. ``Snapshot.max_slice_seconds``
records the longest stretch a build held the loop.

Each build also records the farm hashrate (the sum of the SV1 clients'
vardiff estimates) in a ``HashrateHistory`` (``monitoring.history``), whose
``/api/v1/history`` body the snapshot carries for the dashboard's chart.

Per-worker share statistics over 5 minutes, 1 hour and 24 hours come from the
share log's aggregate (``MonitoringSource.worker_stats``, which may query the
database). They are fetched by a second task on their own, slower interval
with a timeout, kept in the cache, and folded into the next snapshot; a
request never queries them.

Hostile text and broken entries: every string taken from the source passes
through ``monitoring.text.clean_text`` here (lone surrogates become U+FFFD,
everything else is kept as received), so nothing downstream (JSON, the
Prometheus renderer, the URL lookup of a worker) can meet a string it cannot
encode. An entry (one client, channel, worker or statistics row) that still
fails to build is dropped from that snapshot alone: counted in
``SnapshotCache.dropped_entries`` (and ``tproxy_monitoring_dropped_entries_total``)
and logged, rate-limited, while the rest of the snapshot is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from types import MappingProxyType
from typing import Any

from monitoring.history import EMPTY_HISTORY, HashrateHistory
from monitoring.logs import log_limited
from monitoring.metrics import MetricsInput, MetricsRenderer, RenderedMetrics
from monitoring.slicing import Slicer
from monitoring.source import (
    EventEntry,
    MonitoringSource,
    ShareLogState,
    Sv1ClientState,
    UpstreamChannelState,
    UpstreamState,
    WorkerWindowStats,
)
from monitoring.text import clean_text

log = logging.getLogger("monitoring.snapshot")

# (label, seconds) of the per-worker windows, as the API and the metrics name them.
WORKER_WINDOWS: tuple[tuple[str, int], ...] = (("5m", 300), ("1h", 3600), ("24h", 86400))
HASHES_PER_DIFFICULTY = float(2**32)  # expected hashes per share of difficulty 1

# One worker's figures over one window: (shares_accepted, shares_rejected,
# accepted_difficulty_sum, last_share_at, measured_s). A tuple of atoms, which the
# GC stops tracking, rather than the source's dataclass instances. measured_s is
# the exact length the counts cover (the share log's windows are minute-aligned).
_Win = tuple[int, int, float, float | None, float]


def _win_hashrate(w: _Win | None) -> float:
    if w is None or w[4] <= 0:
        return 0.0
    return w[2] * HASHES_PER_DIFFICULTY / w[4]

_encode = json.JSONEncoder(separators=(",", ":")).encode


def dumps(obj: object) -> bytes:
    """Compact JSON bytes (the one JSON encoding used by monitoring)."""
    return _encode(obj).encode()


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _opt(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def sv1_worker_name(worker_name: str) -> str:
    """The part after the first '.' of an SV1 username ("account.rig7" -> "rig7").

    The whole name when there is no '.' or nothing follows it. This is what
    the reference API calls ``sv1_worker_name``.
    """
    _, dot, rest = worker_name.partition(".")
    return rest if dot and rest else worker_name


# -- the published snapshot ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Health:
    """Health as of one snapshot (staleness is added at request time)."""

    reasons: tuple[str, ...]
    upstream_ok: bool
    share_log_ok: bool | None  # None when the share log is not configured

    @property
    def ok(self) -> bool:
        return not self.reasons


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the HTTP handlers serve, frozen at one instant.

    The containers are tuples, bytes and read-only mapping proxies; the small
    summary dicts are shared read-only by convention (handlers copy before
    adding request-time fields).
    """

    seq: int  # 0 for the placeholder published before the first build
    taken_at: float  # unix seconds
    build_seconds: float
    max_slice_seconds: float  # longest event-loop stretch of this build
    slices: int
    upstream: UpstreamState
    health: Health
    server: Mapping[str, Any]  # /api/v1/server body
    global_info: Mapping[str, Any]  # /api/v1/global body without uptime_secs
    share_log: Mapping[str, Any] | None
    channels: tuple[bytes, ...]  # ServerExtendedChannelInfo JSON, by channel_id
    sv1_clients: tuple[bytes, ...]  # Sv1ClientInfo JSON, sorted by client_id
    sv1_by_id: Mapping[int, bytes]
    sv1_hashrate_total: float
    workers: tuple[bytes, ...]  # WorkerInfo JSON, sorted by worker_name
    workers_by_name: Mapping[str, bytes]
    worker_stats_at: float | None  # unix seconds of the worker statistics used
    metrics: RenderedMetrics  # Prometheus text without sv2_uptime_seconds
    history: bytes  # HistoryResponse JSON (farm hashrate, last hour and day)

    @classmethod
    def placeholder(cls) -> Snapshot:
        up = UpstreamState(connected=False, channel_open=False, address=None, since=None)
        return cls(
            seq=0,
            taken_at=0.0,
            build_seconds=0.0,
            max_slice_seconds=0.0,
            slices=0,
            upstream=up,
            health=Health(reasons=("no monitoring snapshot yet",), upstream_ok=False, share_log_ok=None),
            server=MappingProxyType(
                {"extended_channels_count": 0, "standard_channels_count": 0, "total_hashrate": 0.0, "upstream": _upstream_json(up)}
            ),
            global_info=MappingProxyType({}),
            share_log=None,
            channels=(),
            sv1_clients=(),
            sv1_by_id=MappingProxyType({}),
            sv1_hashrate_total=0.0,
            workers=(),
            workers_by_name=MappingProxyType({}),
            worker_stats_at=None,
            metrics=RenderedMetrics.empty(),
            history=EMPTY_HISTORY,
        )


# -- JSON shapes (field names: anchors 2.1/2.2 and docs/NAMES.md) ----------------


class _Dropped:
    """Counts the source entries a build had to leave out, and logs them (rate-limited)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def entry(self, kind: str, key: object, exc: Exception) -> None:
        self.count += 1
        # The key (a client id, a name) is cut short: it may be hostile text.
        log_limited(
            log,
            logging.WARNING,
            ("dropped", kind, type(exc).__name__),
            "monitoring snapshot left out %s %.80r: %s: %.200s",
            kind,
            key,
            type(exc).__name__,
            exc,
        )


def _clean_upstream(u: UpstreamState) -> UpstreamState:
    return u if u.address is None else dataclasses.replace(u, address=clean_text(u.address))


def _clean_channel(c: UpstreamChannelState) -> UpstreamChannelState:
    """The channel with its text cleaned (channels are few: a copy is cheap)."""
    reasons = {clean_text(k): int(v) for k, v in c.shares_rejected_by_reason.items()}
    return dataclasses.replace(c, user_identity=clean_text(c.user_identity), shares_rejected_by_reason=reasons)


def _upstream_json(u: UpstreamState) -> dict[str, Any]:
    return {"connected": u.connected, "channel_open": u.channel_open, "address": u.address, "since": u.since}


def _channel_json(c: UpstreamChannelState) -> dict[str, Any]:
    """The JSON shape of one channel already passed through ``_clean_channel``."""
    return {
        "channel_id": c.channel_id,
        "user_identity": c.user_identity,
        "nominal_hashrate": _opt(c.nominal_hashrate),
        "target_hex": c.target.to_bytes(32, "big").hex(),
        "extranonce_prefix_hex": c.extranonce_prefix.hex(),
        "full_extranonce_size": c.full_extranonce_size,
        "rollable_extranonce_size": c.rollable_extranonce_size,
        "version_rolling": c.version_rolling,
        "shares_acknowledged": c.shares_acknowledged,
        "shares_submitted": c.shares_submitted,
        "shares_rejected": c.shares_rejected,
        "shares_rejected_by_reason": dict(c.shares_rejected_by_reason),
        "acknowledged_work_sum": c.acknowledged_work_sum,
        "validated_work_sum": _finite(float(c.validated_work_sum)),
        "best_diff": _finite(float(c.best_diff)),
        "blocks_found": c.blocks_found,
        "verdicts_pending": c.verdicts_pending,
        "verdicts_timed_out": c.verdicts_timed_out,
    }


def _client_json(c: Sv1ClientState) -> dict[str, Any]:
    # Field names: the reference (stratum-apps 0.7+) replaced authorized_worker_name
    # by sv1_username (the full mining.authorize name) and sv1_worker_name (the part
    # after the first '.'); dashboards built for it (sv2-ui) read those two, so we
    # keep them. We add worker_name, which carries the same value as sv1_username,
    # because it is our one name for that concept (docs/NAMES.md): it is the key of
    # /api/v1/workers/{name}, the Prometheus label `worker` and the share-log column,
    # so a client row joins to those without a rename.
    name = clean_text(c.worker_name)
    return {
        "client_id": c.client_id,
        "channel_id": c.channel_id,
        "worker_name": name,
        "sv1_username": name,
        "sv1_worker_name": sv1_worker_name(name),
        "user_identity": clean_text(c.user_identity),
        "target_hex": c.target.to_bytes(32, "big").hex(),
        "hashrate": _opt(c.hashrate),
        "stable_hashrate": c.stable_hashrate,
        "extranonce1_hex": c.extranonce1.hex(),
        "extranonce2_len": c.extranonce2_len,
        "version_rolling_mask": None if c.version_rolling_mask is None else f"{c.version_rolling_mask:08x}",
        "version_rolling_min_bit": None if c.version_rolling_min_bit is None else f"{c.version_rolling_min_bit:08x}",
        "connection_ip": clean_text(c.connection_ip),
        "connected_at": c.connected_at,
        "shares_accepted": c.shares_accepted,
        "shares_rejected": c.shares_rejected,
        "last_share_at": c.last_share_at,
        "user_agent": c.user_agent,
    }


def _share_log_json(s: ShareLogState) -> dict[str, Any]:
    return {
        "queued": s.queued,
        "written": s.written,
        "spooled": s.spooled,
        "replayed": s.replayed,
        "retried": s.retried,
        "failed_batches": s.failed_batches,
        "dropped": s.dropped,
        "spool_pending": s.spool_pending,
        "oldest_unwritten_age_s": _finite(s.oldest_unwritten_age_s),
        "db_up": s.db_up,
    }


def _window_json(seconds: int, w: _Win | None) -> dict[str, Any]:
    hashrate = _win_hashrate(w)
    if w is None:
        w = (0, 0, 0.0, None, float(seconds))
    accepted, rejected, diff, last, _measured = w
    return {
        "window_s": seconds,
        "shares_accepted": accepted,
        "shares_rejected": rejected,
        "accepted_difficulty_sum": diff,
        "hashrate": hashrate,
        "last_share_at": last,
    }


# -- the build's pieces (module functions: they touch no cache state) ------------------


@dataclass(frozen=True, slots=True)
class _Clients:
    """What one walk over the SV1 clients produced (containers of atoms; see ``_build``)."""

    items: tuple[bytes, ...]  # Sv1ClientInfo JSON, sorted by client_id
    by_id: dict[int, bytes]
    hashrate: float  # sum of the finite vardiff estimates, H/s
    worker_hashrate: dict[str, float]  # workers with at least one estimate
    worker_first: dict[str, int]  # first client id of every connected worker
    worker_more: dict[str, list[int]]  # further ids (workers with several connections)

    def client_ids(self, name: str) -> list[int]:
        """The sorted client ids of one worker ([] when it has no connection)."""
        first = self.worker_first.get(name)
        if first is None:
            return []
        more = self.worker_more.get(name)
        return [first] if more is None else sorted([first, *more])


class _ClientScan:
    """The working state of one walk over the SV1 clients (containers of atoms; see ``_build``)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.bodies: list[bytes] = []
        self.by_id: dict[int, bytes] = {}
        self.w_hashrate: dict[str, float] = {}
        self.w_first: dict[str, int] = {}
        self.w_more: dict[str, list[int]] = {}
        self.total = 0.0
        self.in_order = True
        self.last_id = -1

    def add(self, c: Sv1ClientState) -> None:
        """Serialize one client and fold it into the per-worker figures.

        Everything that can raise on a broken entry happens before the first
        write to the scan's state, so a failing client leaves no trace.
        """
        body = dumps(_client_json(c))
        cid = c.client_id
        if type(cid) is not int:
            raise TypeError(f"client_id is {type(cid).__name__}, not int")
        hr = c.hashrate
        if hr is not None and not math.isfinite(hr):
            hr = None
        name = clean_text(c.worker_name)
        if cid <= self.last_id:
            self.in_order = False
        self.last_id = cid
        self.ids.append(cid)
        self.bodies.append(body)
        self.by_id[cid] = body
        if hr is not None:
            self.total += hr
        if name:
            self._add_worker(name, cid, hr)

    def _add_worker(self, name: str, cid: int, hr: float | None) -> None:
        if name in self.w_first:
            more = self.w_more.get(name)
            if more is None:
                self.w_more[name] = [cid]
            else:
                more.append(cid)
        else:
            self.w_first[name] = cid
        if hr is not None:
            self.w_hashrate[name] = self.w_hashrate.get(name, 0.0) + hr

    def result(self) -> _Clients:
        items = _by_client_id(self.ids, self.bodies, self.by_id, self.in_order)
        return _Clients(items, self.by_id, self.total, self.w_hashrate, self.w_first, self.w_more)


async def _scan_clients(clients: Iterable[Sv1ClientState], slicer: Slicer, dropped: _Dropped) -> _Clients:
    """Serialize each client, aggregate per worker, yield when the budget is spent.

    A client whose entry cannot be built is left out (``dropped``); the others are not affected.
    """
    scan = _ClientScan()
    for c in clients:
        try:
            scan.add(c)
        except Exception as e:  # a broken source entry costs that entry only
            dropped.entry("sv1 client", getattr(c, "client_id", None), e)
        if slicer.due():
            await slicer.pause()
    return scan.result()


def _by_client_id(ids: list[int], bodies: list[bytes], by_id: dict[int, bytes], in_order: bool) -> tuple[bytes, ...]:
    """The client bodies sorted by client_id (``ids``/``bodies`` in arrival order)."""
    if len(by_id) != len(ids):  # duplicate ids from the source: keep the last of each
        return tuple(by_id[i] for i in sorted(by_id))
    if in_order:
        return tuple(bodies)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    return tuple(bodies[i] for i in order)


async def _worker_bodies(
    names: list[str],
    clients: _Clients,
    stats: Mapping[str, tuple[_Win | None, ...]] | None,
    slicer: Slicer,
    dropped: _Dropped,
) -> tuple[tuple[bytes, ...], dict[str, bytes]]:
    """WorkerInfo JSON for each name, in order, and by name.

    ``stats`` is None when worker statistics were never loaded (``windows`` is
    then null); a worker absent from loaded statistics gets zero windows. A
    worker whose entry cannot be built is left out (``dropped``).
    """
    items: list[bytes] = []
    by_name: dict[str, bytes] = {}
    for name in names:
        try:
            body = _worker_body(name, clients, stats)
        except Exception as e:  # a broken entry costs that entry only
            dropped.entry("worker", name, e)
        else:
            items.append(body)
            by_name[name] = body
        if slicer.due():
            await slicer.pause()
    return tuple(items), by_name


def _worker_body(name: str, clients: _Clients, stats: Mapping[str, tuple[_Win | None, ...]] | None) -> bytes:
    windows_json: dict[str, Any] | None = None
    if stats is not None:
        st = stats.get(name)
        windows_json = {
            label: _window_json(seconds, st[i] if st is not None else None)
            for i, (label, seconds) in enumerate(WORKER_WINDOWS)
        }
    client_ids = clients.client_ids(name)
    return dumps(
        {
            "worker_name": name,
            "connections": len(client_ids),
            "client_ids": client_ids,
            "hashrate": clients.worker_hashrate.get(name),
            "windows": windows_json,
        }
    )


async def _group_stats(
    rows: Iterable[WorkerWindowStats], slicer: Slicer, dropped: _Dropped
) -> dict[str, tuple[_Win | None, ...]]:
    """worker_name -> one _Win (or None) per WORKER_WINDOWS entry; broken rows left out."""
    position = {seconds: i for i, (_, seconds) in enumerate(WORKER_WINDOWS)}
    empty: tuple[_Win | None, ...] = (None,) * len(WORKER_WINDOWS)
    grouped: dict[str, tuple[_Win | None, ...]] = {}
    for row in rows:
        try:
            i = position.get(row.window_s)
            if i is not None:
                name = clean_text(row.worker_name)
                win: _Win = (
                    int(row.shares_accepted),
                    int(row.shares_rejected),
                    _finite(float(row.accepted_difficulty_sum)),
                    None if row.last_share_at is None else float(row.last_share_at),
                    float(row.measured_s if row.measured_s else row.window_s),
                )
                cur = grouped.get(name, empty)
                grouped[name] = (*cur[:i], win, *cur[i + 1 :])
        except Exception as e:  # a broken row costs that row only
            dropped.entry("worker statistics row", getattr(row, "worker_name", None), e)
        if slicer.due():
            await slicer.pause()
    slicer.finish()
    return grouped


def _channels(channels: Iterable[UpstreamChannelState], dropped: _Dropped) -> tuple[list[UpstreamChannelState], tuple[bytes, ...]]:
    """The cleaned channels, sorted by id, and their JSON; broken ones left out."""
    good: list[tuple[int, UpstreamChannelState, bytes]] = []
    for c in channels:
        try:
            clean = _clean_channel(c)
            good.append((int(clean.channel_id), clean, dumps(_channel_json(clean))))
        except Exception as e:  # a broken channel costs that channel only
            dropped.entry("channel", getattr(c, "channel_id", None), e)
    good.sort(key=lambda t: t[0])
    return [c for _, c, _ in good], tuple(body for _, _, body in good)


def _worker_window_hashrates(
    names: list[str], stats: Mapping[str, tuple[_Win | None, ...]]
) -> Iterator[tuple[str, str, float]]:
    """(worker_name, window label, hashrate) for every worker with statistics."""
    for name in names:
        st = stats.get(name)
        if st is None:
            continue
        for win, (label, _seconds) in zip(st, WORKER_WINDOWS, strict=True):
            yield name, label, _win_hashrate(win)


def _summaries(
    now: float,
    upstream: UpstreamState,
    channels: Sequence[UpstreamChannelState],
    share_log: ShareLogState | None,
    clients: _Clients,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The /api/v1/server body and the /api/v1/global body (without uptime_secs)."""
    server_hashrate = _finite(sum(c.nominal_hashrate for c in channels if c.nominal_hashrate is not None))
    server = {
        "extended_channels_count": len(channels),
        "standard_channels_count": 0,
        "total_hashrate": server_hashrate,
        "upstream": _upstream_json(upstream),
    }
    global_info = {
        "server": {
            "total_channels": len(channels),
            "extended_channels": len(channels),
            "standard_channels": 0,
            "total_hashrate": server_hashrate,
        },
        "sv2_clients": None,  # a translator has no SV2 clients
        "sv1_clients": {"total_clients": len(clients.items), "total_hashrate": clients.hashrate},
        "share_log": _share_log_json(share_log) if share_log is not None else None,
        "snapshot_taken_at": now,
    }
    return server, global_info


def _read_only(d: dict[str, Any] | None) -> Mapping[str, Any] | None:
    return MappingProxyType(d) if d is not None else None


# -- the cache ------------------------------------------------------------------


class SnapshotCache:
    """Builds snapshots in the background and publishes the latest one."""

    def __init__(
        self,
        source: MonitoringSource,
        *,
        refresh_interval: float = 5.0,
        worker_stats_interval: float = 30.0,
        worker_stats_timeout: float = 10.0,
        max_share_log_lag_s: float = 120.0,
        max_db_down_s: float = 300.0,
        stale_after_s: float | None = None,
        slice_budget_s: float = 0.001,
        started_at: float | None = None,
        renderer: MetricsRenderer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """
        ``max_share_log_lag_s``: unhealthy when the oldest share not yet in
        ClickHouse is older than this. ``max_db_down_s``: unhealthy when the
        database has been unreachable (shares going to the spool) this long.
        ``stale_after_s``: unhealthy when the published snapshot is older than
        this (the refresher is stuck); default three intervals plus 5 s.
        """
        if refresh_interval <= 0 or worker_stats_interval <= 0:
            raise ValueError("intervals must be > 0")
        self._source = source
        self.refresh_interval = refresh_interval
        self.worker_stats_interval = worker_stats_interval
        self.worker_stats_timeout = worker_stats_timeout
        self.max_share_log_lag_s = max_share_log_lag_s
        self.max_db_down_s = max_db_down_s
        self.stale_after_s = stale_after_s if stale_after_s is not None else 3 * refresh_interval + 5.0
        self.slice_budget_s = slice_budget_s
        self._clock = clock
        self.started_at = started_at if started_at is not None else clock()
        self.renderer = renderer if renderer is not None else MetricsRenderer()

        self._snapshot = Snapshot.placeholder()
        self._seq = 0
        self._build_lock = asyncio.Lock()  # serializes builders only; readers never touch it
        self._refresh_task: asyncio.Task[None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self.refresh_errors = 0
        self.dropped_entries = 0  # source entries left out of builds (see the module doc)
        self.worker_stats_errors = 0
        self.last_worker_stats_error: str | None = None

        # Worker statistics: worker_name -> one _Win (or None) per WORKER_WINDOWS entry;
        # replaced whole on each successful fetch.
        self._worker_stats: Mapping[str, tuple[_Win | None, ...]] = MappingProxyType({})
        self._worker_stats_at: float | None = None

        # Health state carried from one build to the next.
        self._prev_dropped: int | None = None
        self._db_down_since: float | None = None

        # Farm hashrate samples for the dashboard's chart (one per build).
        self._history = HashrateHistory()

    # -- readers -------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The latest published snapshot. Never blocks, never awaits."""
        return self._snapshot

    def now(self) -> float:
        """The cache's clock (unix seconds)."""
        return self._clock()

    def uptime(self) -> float:
        return max(0.0, self._clock() - self.started_at)

    def health_now(self, snap: Snapshot) -> tuple[bool, tuple[str, ...], float]:
        """(ok, reasons, snapshot age): the snapshot's health plus staleness now."""
        age = max(0.0, self._clock() - snap.taken_at) if snap.seq else math.inf
        reasons = snap.health.reasons
        if snap.seq and age > self.stale_after_s:
            reasons = (*reasons, f"monitoring snapshot is stale ({age:.0f} s old)")
        return (not reasons, reasons, age)

    # -- lifecycle -------------------------------------------------------------

    async def start(self, *, first_stats_timeout: float = 2.0) -> None:
        """Fetch worker statistics, build the first snapshot, start both tasks.

        Start-up waits at most ``first_stats_timeout`` for the statistics (the
        database may be down; the windows then appear after a later fetch), and
        a failing first build is logged, not raised: health answers 503 until a
        build succeeds, and the proxy itself starts regardless.
        """
        if self._refresh_task is not None:
            raise RuntimeError("SnapshotCache already started")
        await self.refresh_worker_stats(timeout=min(self.worker_stats_timeout, first_stats_timeout))
        try:
            await self.refresh()
        except Exception:
            self.refresh_errors += 1
            log.exception("first monitoring snapshot build failed; retrying every %s s", self.refresh_interval)
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="monitoring-snapshot-refresh")
        self._stats_task = asyncio.create_task(self._stats_loop(), name="monitoring-worker-stats")

    async def close(self) -> None:
        """Cancel and await the background tasks (idempotent)."""
        tasks = [t for t in (self._refresh_task, self._stats_task) if t is not None]
        self._refresh_task = self._stats_task = None
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.refresh_errors += 1
                key = ("build failed", type(e).__name__)  # a stuck source fails the same way every interval
                log_limited(log, logging.ERROR, key, "monitoring snapshot build failed; keeping the previous snapshot", exc_info=e)

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.worker_stats_interval)
            await self.refresh_worker_stats()

    # -- worker statistics -------------------------------------------------------

    async def events(
        self, *, worker: str | None, event_type: str | None, since: float | None, offset: int, limit: int
    ) -> tuple[int, Sequence[EventEntry]]:
        """A page of the source's events (a live query, not from the snapshot), bounded by
        ``worker_stats_timeout``. Raises when the source cannot answer."""
        fetch = getattr(self._source, "events", None)
        if fetch is None:
            raise RuntimeError("this source has no events")
        async with asyncio.timeout(self.worker_stats_timeout):
            result: tuple[int, Sequence[EventEntry]] = await fetch(
                worker=worker, event_type=event_type, since=since, offset=offset, limit=limit
            )
        return result

    async def refresh_worker_stats(self, *, timeout: float | None = None) -> bool:
        """Fetch per-worker window statistics; on failure keep the previous ones."""
        windows = [s for _, s in WORKER_WINDOWS]
        try:
            async with asyncio.timeout(self.worker_stats_timeout if timeout is None else timeout):
                rows = await self._source.worker_stats(windows)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the source may fail in any way (database down...)
            self.worker_stats_errors += 1
            self.last_worker_stats_error = clean_text(f"{type(e).__name__}: {e}")[:500]
            log_limited(
                log,
                logging.WARNING,
                ("worker stats", type(e).__name__),
                "worker statistics unavailable: %s",
                self.last_worker_stats_error,
            )
            return False
        dropped = _Dropped()
        grouped = await _group_stats(rows, Slicer(self.slice_budget_s), dropped)
        self.dropped_entries += dropped.count
        self._worker_stats = MappingProxyType(grouped)
        self._worker_stats_at = self._clock()
        self.last_worker_stats_error = None
        return True

    # -- the build -----------------------------------------------------------------

    async def refresh(self) -> Snapshot:
        """Build a new snapshot from the source and publish it."""
        async with self._build_lock:
            snap = await self._build()
            self._snapshot = snap  # the one publishing step
            return snap

    async def _build(self) -> Snapshot:
        # Allocation note: CPython's cyclic GC walks every tracked container in the
        # process on a full collection (tens of ms with a large heap), and objects
        # that survive young collections bring the next full one closer. The build
        # therefore keeps its long-lived working state in containers of atoms (int,
        # float, str, bytes), which the GC does not track: parallel lists, not
        # lists of tuples; dicts of floats, not per-worker objects.
        t0 = perf_counter()
        slicer = Slicer(self.slice_budget_s)
        now = self._clock()
        src = self._source
        dropped = _Dropped()
        upstream = _clean_upstream(src.upstream())
        channels, channel_bodies = _channels(src.channels(), dropped)
        share_log = src.share_log()
        clients = await _scan_clients(src.sv1_clients(), slicer, dropped)
        if slicer.due():
            await slicer.pause()
        # Workers: the connected ones plus those with shares in the statistics windows.
        stats, stats_at = self._worker_stats, self._worker_stats_at
        names = sorted(clients.worker_first.keys() | stats.keys())
        if slicer.due():
            await slicer.pause()
        workers, workers_by_name = await _worker_bodies(
            names, clients, stats if stats_at is not None else None, slicer, dropped
        )
        self.dropped_entries += dropped.count
        health = self._evaluate_health(now, upstream, share_log)
        server, global_info = _summaries(now, upstream, channels, share_log, clients)
        windows = _worker_window_hashrates(names, stats)
        metrics = await self._render_metrics(now, upstream, channels, share_log, clients, names, windows, health, slicer)
        self._history.record(now, clients.hashrate)
        history = self._history.body()
        slicer.finish()
        self._seq += 1
        return Snapshot(
            seq=self._seq,
            taken_at=now,
            build_seconds=perf_counter() - t0,
            max_slice_seconds=slicer.max_slice_s,
            slices=slicer.slices,
            upstream=upstream,
            health=health,
            server=MappingProxyType(server),
            global_info=MappingProxyType(global_info),
            share_log=_read_only(global_info["share_log"]),
            channels=channel_bodies,
            sv1_clients=clients.items,
            sv1_by_id=MappingProxyType(clients.by_id),
            sv1_hashrate_total=clients.hashrate,
            workers=workers,
            workers_by_name=MappingProxyType(workers_by_name),
            worker_stats_at=stats_at,
            metrics=metrics,
            history=history,
        )

    async def _render_metrics(
        self,
        now: float,
        upstream: UpstreamState,
        channels: Sequence[UpstreamChannelState],
        share_log: ShareLogState | None,
        clients: _Clients,
        names: list[str],
        windows: Iterator[tuple[str, str, float]],
        health: Health,
        slicer: Slicer,
    ) -> RenderedMetrics:
        """The Prometheus exposition of this build, rendered on the build's slicer."""
        prev = self._snapshot  # the build figures published are those of the previous build
        data = MetricsInput(
            upstream=upstream,
            channels=channels,
            sv1_clients=len(clients.items),
            sv1_hashrate=clients.hashrate,
            worker_hashrate=((n, clients.worker_hashrate[n]) for n in names if n in clients.worker_hashrate),
            worker_windows=windows,
            share_log=share_log,
            healthy=health.ok,
            taken_at=now,
            last_build_seconds=prev.build_seconds,
            last_max_slice_seconds=prev.max_slice_seconds,
            dropped_entries=self.dropped_entries,
        )
        return await self.renderer.render(data, slicer)

    def _evaluate_health(self, now: float, up: UpstreamState, sl: ShareLogState | None) -> Health:
        reasons: list[str] = []
        upstream_ok = up.connected and up.channel_open
        if not up.connected:
            reasons.append("upstream not connected")
        elif not up.channel_open:
            reasons.append("upstream channel not open")
        share_log_ok: bool | None = None
        if sl is None:
            self._prev_dropped = None
            self._db_down_since = None
        else:
            share_log_ok = True
            if sl.oldest_unwritten_age_s > self.max_share_log_lag_s:
                share_log_ok = False
                reasons.append(
                    f"share log behind: oldest unwritten share is {sl.oldest_unwritten_age_s:.0f} s old"
                    f" (limit {self.max_share_log_lag_s:.0f} s)"
                )
            if self._prev_dropped is not None and sl.dropped > self._prev_dropped:
                share_log_ok = False
                reasons.append(f"share log dropped {sl.dropped - self._prev_dropped} records since the last refresh")
            self._prev_dropped = sl.dropped
            if sl.db_up:
                self._db_down_since = None
            else:
                if self._db_down_since is None:
                    self._db_down_since = now
                down_for = now - self._db_down_since
                if down_for > self.max_db_down_s:
                    share_log_ok = False
                    reasons.append(
                        f"share log database unreachable for {down_for:.0f} s (spooling; limit {self.max_db_down_s:.0f} s)"
                    )
        return Health(reasons=tuple(reasons), upstream_ok=upstream_ok, share_log_ok=share_log_ok)

