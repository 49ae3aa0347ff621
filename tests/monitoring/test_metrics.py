"""The Prometheus renderer: names, types, seeding, and piecewise rendering."""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from monitoring.metrics import REJECTION_CODES, MetricsInput, MetricsRenderer
from monitoring.slicing import Slicer
from monitoring.source import ShareLogState, UpstreamChannelState, UpstreamState
from tests.monitoring.static_source import StaticSource

REFERENCE_NAMES = {
    "sv2_server_channels": "gauge",
    "sv2_server_hashrate_total": "gauge",
    "sv2_server_channel_hashrate": "gauge",
    "sv2_server_shares_accepted_total": "counter",
    "sv2_server_shares_rejected_total": "counter",
    "sv2_server_blocks_found_total": "counter",
    "sv1_clients_total": "gauge",
    "sv1_hashrate_total": "gauge",
}


def _input(
    channels: list[UpstreamChannelState],
    *,
    workers: Iterable[tuple[str, float]] = (),
    windows: Iterable[tuple[str, str, float]] = (),
    share_log: ShareLogState | None = None,
) -> MetricsInput:
    return MetricsInput(
        upstream=UpstreamState(connected=True, channel_open=True, address="x:1", since=1.0),
        channels=channels,
        sv1_clients_total=3,
        sv1_hashrate_total=3.5e12,
        worker_hashrate=workers,
        worker_windows=windows,
        share_log=share_log,
        healthy=True,
        taken_at=1_700_000_000.0,
        last_build_seconds=0.25,
        last_max_slice_seconds=0.002,
    )


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


async def test_reference_names_and_types() -> None:
    src = StaticSource(3)
    text = (await MetricsRenderer().render(_input(src.channel_list), Slicer(1.0))).body.decode()
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
    for name, kind in REFERENCE_NAMES.items():
        assert types.get(name) == kind, (name, types.get(name))
    samples = _samples(text)
    for name in REFERENCE_NAMES:
        assert name in samples, name  # the exposed sample name equals the reference name
    assert not any(n.endswith("_created") for n in samples)


async def test_rejection_codes_seeded_and_extra_codes_kept() -> None:
    src = StaticSource(3)
    text = (await MetricsRenderer().render(_input(src.channel_list), Slicer(1.0))).body.decode()
    rejected = {
        labels["error_code"]: value for labels, value in _samples(text)["sv2_server_shares_rejected_total"]
    }
    for code in REJECTION_CODES:
        assert code in rejected
    assert rejected["stale-share"] == 9
    assert rejected["invalid-share"] == 0
    assert rejected["custom-pool-code"] == 2


async def test_piecewise_rendering_equals_one_piece() -> None:
    workers = [(f"w{i:04d}", float(i) * 1e12) for i in range(1000)]
    windows = [(w, win, 1.0) for w, _ in workers for win in ("5m", "1h", "24h")]
    share_log = StaticSource(1).share_log_state
    one = await MetricsRenderer(piece_size=10**9).render(
        _input([], workers=workers, windows=windows, share_log=share_log), Slicer(10.0)
    )
    slicer = Slicer(1e-6)  # yield after every piece
    many = await MetricsRenderer(piece_size=7).render(
        _input([], workers=workers, windows=windows, share_log=share_log), slicer
    )
    assert many.body == one.body
    assert slicer.slices > 100
    tail = MetricsRenderer().uptime_block(3.0)
    assert gzip.decompress(many.gzip_with(tail)) == one.body + tail
    assert gzip.decompress(many.gzip_with(b"")) == one.body  # the state is copied, never consumed
    samples = _samples(many.body.decode())
    assert len(samples["sv1_client_hashrate"]) == 1000
    assert len(samples["tproxy_worker_hashrate"]) == 3000
    assert many.body.count(b"# TYPE sv1_client_hashrate gauge") == 1


async def test_label_escaping_and_non_finite_values() -> None:
    workers = [('odd "name"\nwith\\stuff', math.inf), ("nan", math.nan)]
    text = (await MetricsRenderer().render(_input([], workers=workers), Slicer(1.0))).body.decode()
    got = dict((labels["worker"], v) for labels, v in _samples(text)["sv1_client_hashrate"])
    assert got == {'odd "name"\nwith\\stuff': 0.0, "nan": 0.0}


async def test_share_log_families_absent_without_share_log() -> None:
    text = (await MetricsRenderer().render(_input([]), Slicer(1.0))).body.decode()
    assert "tproxy_share_log" not in text
    share_log = StaticSource(1).share_log_state
    text = (await MetricsRenderer().render(_input([], share_log=share_log), Slicer(1.0))).body.decode()
    samples = _samples(text)
    assert samples["tproxy_share_log_written_total"] == [({}, 1_000_000.0)]
    assert samples["tproxy_share_log_queued"] == [({}, 12.0)]


def test_uptime_block_parses() -> None:
    text = MetricsRenderer().uptime_block(12.5).decode()
    assert _samples(text) == {"sv2_uptime_seconds": [({}, 12.5)]}
