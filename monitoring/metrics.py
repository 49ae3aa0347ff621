"""Prometheus exposition of one snapshot.

Owns the metric names, their types and labels, and the rendering of the
exposition text. The text is rendered once per snapshot (during the snapshot
build) and cached as bytes, so a scrape costs one byte concatenation: only
``sv2_uptime_seconds`` is computed at scrape time, as the reference does.

Rendering uses prometheus-client's own formatter (``generate_latest``) on a
private ``CollectorRegistry`` holding one private collector; nothing touches
the global registry. Because each snapshot is rendered from scratch, a label
set that disappeared (a miner left, a channel closed) is simply absent from
the next text while every other series continues without a gap, and a scrape
mutates nothing.

Names follow the stratum-apps reference (anchors 2.3) where one exists. Where
the reference exposes a gauge named ``*_total`` for a value that only grows
(shares, blocks), we expose a real counter with the same sample name
(prometheus-client appends ``_total`` to counter families, so the families are
declared without it). Three reference gauges go up and down yet end in
``_total`` (``sv2_server_hashrate_total``, ``sv1_clients_total``,
``sv1_hashrate_total``), which Prometheus reserves for counters: by default
they are exposed without the suffix, and ``sri_metric_names=True`` restores
the reference names (``SRI_GAUGE_NAMES``). Metrics of our own are prefixed
``tproxy_``; the per-worker label is ``worker`` (docs/NAMES.md).

Large families (one sample per worker) are rendered in pieces of
``piece_size`` samples, with a yield to the event loop whenever the slicer's
budget is spent: formatting 10,000 samples in one go would hold the loop for
tens of milliseconds.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from monitoring.slicing import Slicer
from monitoring.source import ShareLogState, UpstreamChannelState, UpstreamState

__all__ = [
    "CONTENT_TYPE_LATEST",
    "REJECTION_CODES",
    "SRI_GAUGE_NAMES",
    "MetricsInput",
    "MetricsRenderer",
    "RenderedMetrics",
]

# SV2 SubmitShares.Error codes seeded with 0 on every channel, so alert rules
# see the series before the first rejection (the reference does the same).
REJECTION_CODES: tuple[str, ...] = (
    "invalid-channel-id",
    "invalid-share",
    "stale-share",
    "invalid-job-id",
    "difficulty-too-low",
    "duplicate-share",
    "bad-extranonce-size",
)

# Default gauge name -> the stratum-apps (SRI) name of the same gauge. Prometheus
# reserves the ``_total`` suffix for counters (``promtool check metrics`` rejects
# these three), so by default they are exposed without it; the SRI names are an
# option (``MonitoringSettings.sri_metric_names``) for dashboards built on them.
SRI_GAUGE_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "sv2_server_hashrate": "sv2_server_hashrate_total",
        "sv1_clients": "sv1_clients_total",
        "sv1_hashrate": "sv1_hashrate_total",
    }
)

_Kind = Literal["gauge", "counter"]
_Sample = tuple[Sequence[str], float]
_Piece = CounterMetricFamily | GaugeMetricFamily


@dataclass(frozen=True, slots=True)
class MetricsInput:
    """Everything the exposition is made of; built by the snapshot cache."""

    upstream: UpstreamState
    channels: Sequence[UpstreamChannelState]
    sv1_clients: int  # connected SV1 clients
    sv1_hashrate: float  # sum of their vardiff estimates, H/s
    # The two per-worker iterables may be generators: they are consumed once, by render().
    worker_hashrate: Iterable[tuple[str, float]]  # (worker_name, summed vardiff estimate), sorted
    worker_windows: Iterable[tuple[str, str, float]]  # (worker_name, window label, hashrate)
    share_log: ShareLogState | None
    healthy: bool
    taken_at: float  # unix seconds
    last_build_seconds: float  # of the previous build (this one is not finished yet)
    last_max_slice_seconds: float
    dropped_entries: int = 0  # source entries left out of snapshots so far (SnapshotCache.dropped_entries)


@dataclass(frozen=True, slots=True)
class _Family:
    kind: _Kind
    name: str  # without the ``_total`` that prometheus-client adds to counters
    doc: str
    labels: tuple[str, ...]
    samples: Iterable[_Sample]


class RenderedMetrics:
    """The exposition of one snapshot, plain and gzip-compressed.

    The text is compressed once, during the build; the compressor is left
    unflushed so that a scrape can append the scrape-time uptime family to a
    *copy* of it (about 40 us) and get one valid gzip stream. Prometheus asks
    for gzip, which cuts a 10,000-miner body from ~2 MB to ~130 KB on the wire.
    """

    __slots__ = ("_gzip_head", "_gzip_state", "body")

    def __init__(self, body: bytes, gzip_head: bytes, gzip_state: zlib._Compress) -> None:
        self.body = body
        self._gzip_head = gzip_head
        self._gzip_state = gzip_state  # never used directly: only copied

    @classmethod
    def empty(cls) -> RenderedMetrics:
        c = _gzip_compressor()
        return cls(b"", c.compress(b""), c)

    def plain_with(self, tail: bytes) -> bytes:
        return self.body + tail

    def gzip_with(self, tail: bytes) -> bytes:
        c = self._gzip_state.copy()
        return self._gzip_head + c.compress(tail) + c.flush()


def _gzip_compressor() -> zlib._Compress:
    # Level 1: ~5 ms per 2 MB (spread over the build's slices), ratio ~15 on this text.
    return zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)


class _PieceCollector(Collector):
    """Hands the registry the one family piece being formatted."""

    def __init__(self) -> None:
        self.piece: Metric | None = None

    def collect(self) -> Iterator[Metric]:
        if self.piece is not None:
            yield self.piece


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


class MetricsRenderer:
    """Renders a ``MetricsInput`` into Prometheus text exposition bytes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        *,
        piece_size: int = 64,
        rejection_codes: Sequence[str] = REJECTION_CODES,
        worker_window_metrics: bool = True,
        sri_metric_names: bool = False,
    ) -> None:
        """``sri_metric_names``: name three gauges as stratum-apps does (``SRI_GAUGE_NAMES``)."""
        if piece_size < 1:
            raise ValueError("piece_size must be >= 1")
        names = SRI_GAUGE_NAMES if sri_metric_names else {n: n for n in SRI_GAUGE_NAMES}
        self._server_hashrate_name = names["sv2_server_hashrate"]
        self._sv1_clients_name = names["sv1_clients"]
        self._sv1_hashrate_name = names["sv1_hashrate"]
        self._piece_size = piece_size
        self._rejection_codes = tuple(rejection_codes)
        self._worker_window_metrics = worker_window_metrics
        self._collector = _PieceCollector()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._collector)

    # -- scrape time ---------------------------------------------------------

    def uptime_block(self, uptime_s: float) -> bytes:
        """The ``sv2_uptime_seconds`` family, the one value computed per scrape."""
        return (
            b"# HELP sv2_uptime_seconds Seconds since the proxy started\n"
            b"# TYPE sv2_uptime_seconds gauge\n"
            b"sv2_uptime_seconds " + repr(float(max(0.0, uptime_s))).encode() + b"\n"
        )

    def connections_block(self, open_: int, refused: int, timed_out: int, evicted: int = 0) -> bytes:
        """The monitoring port's connection figures (``monitoring.connections``), read per scrape."""
        return (
            b"# HELP tproxy_monitoring_connections Open connections to the monitoring port\n"
            b"# TYPE tproxy_monitoring_connections gauge\n"
            b"tproxy_monitoring_connections " + repr(float(open_)).encode() + b"\n"
            b"# HELP tproxy_monitoring_connections_evicted_total Idle connections closed to admit a new one at max_connections\n"
            b"# TYPE tproxy_monitoring_connections_evicted_total counter\n"
            b"tproxy_monitoring_connections_evicted_total " + repr(float(evicted)).encode() + b"\n"
            b"# HELP tproxy_monitoring_connections_refused_total Connections closed at once: at max_connections with every connection mid-request\n"
            b"# TYPE tproxy_monitoring_connections_refused_total counter\n"
            b"tproxy_monitoring_connections_refused_total " + repr(float(refused)).encode() + b"\n"
            b"# HELP tproxy_monitoring_connections_timed_out_total Connections cut by the header or send timeout\n"
            b"# TYPE tproxy_monitoring_connections_timed_out_total counter\n"
            b"tproxy_monitoring_connections_timed_out_total " + repr(float(timed_out)).encode() + b"\n"
        )

    # -- per snapshot ----------------------------------------------------------

    async def render(self, data: MetricsInput, slicer: Slicer) -> RenderedMetrics:
        """Format (and compress) every family; yields to the loop via ``slicer``."""
        out: list[bytes] = []
        gz = _gzip_compressor()
        gz_out: list[bytes] = []
        size = self._piece_size
        for fam in self._families(data):
            first = True
            piece = self._new_piece(fam)
            count = 0
            for labels, value in fam.samples:
                piece.add_metric(labels, value)
                count += 1
                if count >= size:
                    # Formatting dominates the cost (a few us per sample), so the
                    # budget is checked per piece: a slice overshoots by at most one.
                    text = self._format(piece, first)
                    out.append(text)
                    gz_out.append(gz.compress(text))
                    first = False
                    piece = self._new_piece(fam)
                    count = 0
                    if slicer.due():
                        await slicer.pause()
            if count or first:
                text = self._format(piece, first)
                out.append(text)
                gz_out.append(gz.compress(text))
                if slicer.due():
                    await slicer.pause()
        return RenderedMetrics(b"".join(out), b"".join(gz_out), gz)

    @staticmethod
    def _new_piece(fam: _Family) -> _Piece:
        if fam.kind == "counter":
            return CounterMetricFamily(fam.name, fam.doc, labels=fam.labels)
        return GaugeMetricFamily(fam.name, fam.doc, labels=fam.labels)

    def _format(self, piece: _Piece, first: bool) -> bytes:
        self._collector.piece = piece
        try:
            text = generate_latest(self._registry)
        finally:
            self._collector.piece = None
        if first:
            return text
        # Later pieces of the same family: drop the "# HELP" and "# TYPE" lines.
        # Label values and help text never contain a raw newline (both escaped).
        return text.split(b"\n", 2)[2]

    def _families(self, d: MetricsInput) -> Iterator[_Family]:
        """Every family of one snapshot, in exposition order."""
        yield from self._server_families(d.channels)
        yield from self._sv1_families(d)
        yield from self._state_families(d)
        yield from self._share_log_families(d.share_log)
        yield from self._snapshot_families(d)

    def _server_families(self, channels: Sequence[UpstreamChannelState]) -> Iterator[_Family]:
        """The upstream side (the reference's ``sv2_server_*``)."""
        yield _Family(
            "gauge",
            "sv2_server_channels",
            "Open upstream channels by type",
            ("channel_type",),
            [(("extended",), float(len(channels))), (("standard",), 0.0)],
        )
        yield _Family(
            "gauge",
            self._server_hashrate_name,
            "Sum of the nominal hashrate of the upstream channels (H/s)",
            (),
            [((), _finite(sum(c.nominal_hashrate for c in channels if c.nominal_hashrate is not None)))],
        )
        yield _Family(
            "gauge",
            "sv2_server_channel_hashrate",
            "Nominal hashrate of one upstream channel (H/s)",
            ("channel_id", "user_identity"),
            [
                ((str(c.channel_id), c.user_identity), _finite(c.nominal_hashrate))
                for c in channels
                if c.nominal_hashrate is not None
            ],
        )
        yield _Family(
            "counter",
            "sv2_server_shares_accepted",
            "Shares the pool acknowledged on an upstream channel",
            ("channel_id", "user_identity"),
            [((str(c.channel_id), c.user_identity), float(c.shares_acknowledged)) for c in channels],
        )
        yield _Family(
            "counter",
            "sv2_server_shares_rejected",
            "Shares the pool rejected on an upstream channel, by SV2 error code",
            ("channel_id", "user_identity", "error_code"),
            list(self._rejections(channels)),
        )
        yield _Family(
            "counter",
            "sv2_server_blocks_found",
            "Blocks found on the open upstream channels (resets when channels are reopened)",
            (),
            [((), float(sum(c.blocks_found for c in channels)))],
        )
        labels = ("channel_id", "user_identity")
        yield _Family(
            "gauge",
            "tproxy_channel_verdicts_pending",
            "Forwarded shares awaiting the pool's verdict",
            labels,
            [((str(c.channel_id), c.user_identity), float(c.verdicts_pending)) for c in channels],
        )
        yield _Family(
            "counter",
            "tproxy_channel_verdicts_timed_out",
            "Forwarded shares the pool never answered within proxy.verdict_timeout_s",
            labels,
            [((str(c.channel_id), c.user_identity), float(c.verdicts_timed_out)) for c in channels],
        )

    def _sv1_families(self, d: MetricsInput) -> Iterator[_Family]:
        """The miners' side: totals and the per-worker families (the large ones)."""
        yield _Family("gauge", self._sv1_clients_name, "Connected SV1 clients", (), [((), float(d.sv1_clients))])
        yield _Family(
            "gauge",
            self._sv1_hashrate_name,
            "Sum of the SV1 clients' estimated hashrate (H/s)",
            (),
            [((), _finite(d.sv1_hashrate))],
        )
        yield _Family(
            "gauge",
            "sv1_client_hashrate",
            "Estimated hashrate of one worker, summed over its connections (H/s)",
            ("worker",),
            (((w,), _finite(h)) for w, h in d.worker_hashrate),
        )
        if self._worker_window_metrics:
            yield _Family(
                "gauge",
                "tproxy_worker_hashrate",
                "Hashrate of one worker measured from its accepted shares over a trailing window (H/s)",
                ("worker", "window"),
                (((w, win), _finite(h)) for w, win, h in d.worker_windows),
            )

    @staticmethod
    def _state_families(d: MetricsInput) -> Iterator[_Family]:
        """The 0/1 state gauges: upstream and health."""
        flags: tuple[tuple[str, str, bool], ...] = (
            ("tproxy_upstream_connected", "1 when the SV2 upstream connection is up", d.upstream.connected),
            ("tproxy_upstream_channel_open", "1 when an upstream channel is open", d.upstream.channel_open),
            ("tproxy_healthy", "1 when /health answers 200 (as of this snapshot)", d.healthy),
        )
        for name, doc, on in flags:
            yield _Family("gauge", name, doc, (), [((), 1.0 if on else 0.0)])

    @staticmethod
    def _snapshot_families(d: MetricsInput) -> Iterator[_Family]:
        """The monitoring's own figures (of the previous build: this one is not finished)."""
        gauges: tuple[tuple[str, str, float], ...] = (
            ("tproxy_monitoring_snapshot_timestamp_seconds", "Unix time the monitoring snapshot was taken", d.taken_at),
            ("tproxy_monitoring_snapshot_build_seconds", "Wall time of the previous snapshot build", d.last_build_seconds),
            (
                "tproxy_monitoring_snapshot_max_stall_seconds",
                "Longest event-loop stretch of the previous snapshot build",
                d.last_max_slice_seconds,
            ),
        )
        for name, doc, value in gauges:
            yield _Family("gauge", name, doc, (), [((), value)])
        yield _Family(
            "counter",
            "tproxy_monitoring_dropped_entries",
            "Source entries (clients, channels, workers, statistics rows) left out of a snapshot because they failed to build",
            (),
            [((), float(d.dropped_entries))],
        )

    def _rejections(self, channels: Sequence[UpstreamChannelState]) -> Iterator[_Sample]:
        for c in channels:
            cid = str(c.channel_id)
            by_reason = c.shares_rejected_by_reason
            for code in self._rejection_codes:
                yield (cid, c.user_identity, code), float(by_reason.get(code, 0))
            for code, n in by_reason.items():
                if code not in self._rejection_codes:
                    yield (cid, c.user_identity, code), float(n)

    @staticmethod
    def _share_log_families(s: ShareLogState | None) -> Iterator[_Family]:
        if s is None:
            return
        gauges: tuple[tuple[str, str, float], ...] = (
            ("tproxy_share_log_queued", "Share records waiting in the in-memory queue", float(s.queued)),
            ("tproxy_share_log_spool_pending", "Share records in the disk spool not yet replayed", float(s.spool_pending)),
            (
                "tproxy_share_log_oldest_unwritten_age_seconds",
                "Age of the oldest share record not yet in ClickHouse",
                _finite(s.oldest_unwritten_age_s),
            ),
            ("tproxy_share_log_db_up", "1 when the last ClickHouse insert succeeded", 1.0 if s.db_up else 0.0),
        )
        for name, doc, value in gauges:
            yield _Family("gauge", name, doc, (), [((), value)])
        counters: tuple[tuple[str, str, int], ...] = (
            ("tproxy_share_log_written", "Share records written to ClickHouse", s.written),
            ("tproxy_share_log_spooled", "Share records written to the disk spool", s.spooled),
            ("tproxy_share_log_replayed", "Spooled share records later written to ClickHouse", s.replayed),
            ("tproxy_share_log_retried", "Batch insert retries", s.retried),
            ("tproxy_share_log_failed_batches", "Batch inserts that failed", s.failed_batches),
            ("tproxy_share_log_dropped", "Share records lost", s.dropped),
            ("tproxy_share_log_events_written", "Event rows written to ClickHouse", s.events_written),
        )
        for name, doc, n in counters:
            yield _Family("counter", name, doc, (), [((), float(n))])
        yield _Family("gauge", "tproxy_share_log_events_pending", "Event rows in memory or in the spool", (),
                      [((), float(s.events_pending))])
        if s.events_by_type:
            yield _Family("counter", "tproxy_events", "Worker and upstream events emitted, per type", ("type",),
                          [((t,), float(n)) for t, n in sorted(s.events_by_type.items())])
