"""The Prometheus renderer: names, types, seeding, and piecewise rendering."""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devnet.static_source import StaticSource
from monitoring.metrics import REJECTION_CODES, SRI_GAUGE_NAMES, MetricsInput, MetricsRenderer
from monitoring.slicing import Slicer
from monitoring.source import ShareLogState, UpstreamChannelState, UpstreamState
from tests.helpers.promtool import check_metrics, requires_promtool

# The default names: the reference's, except three gauges without its "_total".
REFERENCE_NAMES = {
    "sv2_server_channels": "gauge",
    "sv2_server_hashrate": "gauge",
    "sv2_server_channel_hashrate": "gauge",
    "sv2_server_shares_accepted_total": "counter",
    "sv2_server_shares_rejected_total": "counter",
    "sv2_server_blocks_found_total": "counter",
    "sv1_clients": "gauge",
    "sv1_hashrate": "gauge",
}
# With sri_metric_names=True: exactly the stratum-apps names.
SRI_NAMES = {
    **{k: v for k, v in REFERENCE_NAMES.items() if k not in SRI_GAUGE_NAMES},
    "sv2_server_hashrate_total": "gauge",
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
        sv1_clients=3,
        sv1_hashrate=3.5e12,
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


def _types(text: str) -> dict[str, str]:
    """family name (as on the "# TYPE" line) -> type"""
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
    return types


async def _full_text(renderer: MetricsRenderer) -> str:
    src = StaticSource(3)
    data = _input(
        src.channel_list,
        workers=[("farm.rig1", 1e12)],
        windows=[("farm.rig1", "5m", 1e12)],
        share_log=src.share_log_state,
    )
    return (await renderer.render(data, Slicer(1.0))).body.decode() + renderer.uptime_block(1.0).decode()


@pytest.mark.parametrize(("sri", "expected"), [(False, REFERENCE_NAMES), (True, SRI_NAMES)])
async def test_reference_names_and_types(sri: bool, expected: dict[str, str]) -> None:
    text = await _full_text(MetricsRenderer(sri_metric_names=sri))
    types = _types(text)
    samples = _samples(text)
    for name, kind in expected.items():
        assert types.get(name) == kind, (name, types.get(name))
        assert name in samples, name  # the exposed sample name equals the expected name
    assert not any(n.endswith("_created") for n in samples)


async def test_default_names_have_no_gauge_ending_in_total() -> None:
    text = await _full_text(MetricsRenderer())
    types = _types(text)
    assert len(types) > 20  # every family, share log included
    gauges = {n for n, kind in types.items() if kind == "gauge"}
    assert not {n for n in gauges if n.endswith("_total")}
    assert not set(SRI_GAUGE_NAMES.values()) & set(_samples(text))
    # counters keep the suffix
    counters = {n for n, kind in types.items() if kind == "counter"}
    assert {"sv2_server_shares_accepted_total", "tproxy_share_log_written_total"} <= counters
    assert all(n.endswith("_total") for n in counters), counters
    assert counters <= set(_samples(text))


async def test_sri_option_renames_only_the_three_gauges() -> None:
    default = await _full_text(MetricsRenderer())
    sri = await _full_text(MetricsRenderer(sri_metric_names=True))
    renamed = default
    for ours, theirs in SRI_GAUGE_NAMES.items():
        assert f"\n{ours} " in default and f"\n{theirs} " in sri
        renamed = renamed.replace(f" {ours} ", f" {theirs} ").replace(f"\n{ours} ", f"\n{theirs} ")
    assert renamed == sri  # same values, same order; only the three names differ


@requires_promtool
async def test_promtool_accepts_the_default_names_and_rejects_the_sri_ones() -> None:
    status, output = check_metrics(await _full_text(MetricsRenderer()))
    assert status == 0, output
    # the option exists for dashboards, not for promtool: it flags exactly the three gauges
    status, output = check_metrics(await _full_text(MetricsRenderer(sri_metric_names=True)))
    assert status != 0
    flagged = {line.split()[0] for line in output.splitlines() if "_total" in line}
    assert flagged == set(SRI_GAUGE_NAMES.values()), output


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


async def test_pending_and_timed_out_verdicts_per_channel() -> None:
    # Issue 10: the proxy shows how many forwarded shares await the pool's verdict, and how many
    # were aged out (their pool verdict in the share log is "timeout").
    import dataclasses

    src = StaticSource(1)
    ch = dataclasses.replace(src.channel_list[0], verdicts_pending=7, verdicts_timed_out=3)
    text = (await MetricsRenderer().render(_input([ch]), Slicer(1.0))).body.decode()
    types, samples = _types(text), _samples(text)
    assert types["tproxy_channel_verdicts_pending"] == "gauge"
    assert types["tproxy_channel_verdicts_timed_out_total"] == "counter"
    labels = {"channel_id": str(ch.channel_id), "user_identity": ch.user_identity}
    assert samples["tproxy_channel_verdicts_pending"] == [(labels, 7.0)]
    assert samples["tproxy_channel_verdicts_timed_out_total"] == [(labels, 3.0)]
