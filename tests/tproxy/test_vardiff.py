"""Vardiff against a simulated miner (Poisson shares at a fixed hashrate, simulated clock).

Every scenario runs on a simulated clock: shares are drawn from a seeded
``random.Random`` (exponential inter-arrival times at ``hashrate / (difficulty
* 2^32)``, redrawn at every tick, so a difficulty change takes effect at once),
and ``maybe_retarget`` is called once per simulated second, as the hub's
1 s tick does. Convergence scenarios run over ``SEEDS`` and assert for each.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tproxy.sv1 import vardiff as vd
from tproxy.sv1.vardiff import Vardiff

SPM = 6.0
T = 60.0 / SPM  # seconds per share on target
R = 30.0  # retarget interval
TICK = 1.0
SEEDS = range(20)
WARMUP = 300.0  # the first minutes, where a silent first interval may cut a miner on target


def ideal(hashrate: float, spm: float = SPM) -> float:
    return hashrate * (60.0 / spm) / 2**32


class Sim:
    """Drives a Vardiff like the hub does: shares as they come, a retarget check each tick."""

    def __init__(
        self,
        v: Vardiff,
        hashrate: float | Callable[[float], float],
        seed: int,
    ) -> None:
        self.v = v
        self.hashrate = hashrate
        self.rng = random.Random(seed)
        self.t = 0.0
        self.changes: list[tuple[float, float]] = []
        self.shares: list[tuple[float, float]] = []  # (time, difficulty)

    def rate(self) -> float:
        return self.hashrate(self.t) if callable(self.hashrate) else self.hashrate

    def run_until(self, end: float, each_tick: Callable[[Sim], None] | None = None) -> None:
        v = self.v
        while self.t < end:
            rate = self.rate() / (v.difficulty * 2**32)
            if rate > 0:
                a = self.t + self.rng.expovariate(rate)
                while a < self.t + TICK:
                    v.record_share(a, v.difficulty)  # the session credits the job's difficulty
                    self.shares.append((a, v.difficulty))
                    a += self.rng.expovariate(rate)
            self.t += TICK
            new = v.maybe_retarget(self.t)
            if new is not None:
                assert new == v.difficulty
                self.changes.append((self.t, new))
            if each_tick is not None:
                each_tick(self)

    def share_rate_per_min(self, start: float, end: float) -> float:
        n = sum(1 for t, _ in self.shares if start <= t < end)
        return n / ((end - start) / 60.0)

    def last_time_off(self, hashrate: float, end: float) -> float:
        """Run to ``end``; the last tick at which the difficulty was more than 2x off (0: never)."""
        last = [0.0]

        def check(sim: Sim) -> None:
            if not 0.5 <= sim.v.difficulty / ideal(hashrate) <= 2.0:
                last[0] = sim.t

        self.run_until(end, check)
        return last[0]


def make(start: float, lo: float = 1e-8, hi: float = 1e15, interval: float = R) -> Vardiff:
    return Vardiff(SPM, start, lo, hi, interval, now=0.0)


def silent_ticks(v: Vardiff, end: float, start: float = 0.0) -> list[tuple[float, float]]:
    """Tick a miner that sends nothing from ``start`` to ``end``; the changes."""
    cuts: list[tuple[float, float]] = []
    t = start
    while t < end:
        t += TICK
        new = v.maybe_retarget(t)
        if new is not None:
            cuts.append((t, new))
    return cuts


# ---------------------------------------------------------------------------
# convergence: 100x fast, 100x slow, silent, suggest_difficulty


@pytest.mark.parametrize("seed", SEEDS)
def test_100x_fast_miner_is_within_2x_after_three_intervals(seed: int) -> None:
    h = 1e12
    start = ideal(h) / 100
    sim = Sim(make(start), h, seed)
    assert sim.last_time_off(h, 3600.0) < 3 * R
    # The flood is overwhelming evidence: one early, large step (no fixed cap).
    t0, d0 = sim.changes[0]
    assert t0 <= 5.0
    assert 0.5 <= d0 / ideal(h) <= 2.0


@pytest.mark.parametrize("seed", SEEDS)
def test_100x_slow_miner_is_within_2x_after_three_intervals(seed: int) -> None:
    h = 1e12
    start = ideal(h) * 100
    sim = Sim(make(start), h, seed)
    assert sim.last_time_off(h, 3600.0) < 3 * R
    assert sim.changes[0][0] <= 3 * R


def test_silent_miner_is_cut_every_interval_down_to_the_floor() -> None:
    lo = 1e-6
    v = make(1024.0, lo=lo)
    cuts = silent_ticks(v, 1800.0)
    times = [t for t, _ in cuts]
    assert times == [R * (k + 1) for k in range(len(cuts))]  # on schedule, every interval
    # Each cut goes to the Poisson bound of the silence so far: the rate at which
    # zero shares over the window's exposure had probability e^-SILENCE_C.
    d = [1024.0]
    for _, new in cuts[:3]:
        exposure = sum(R / x for x in d)
        assert new == pytest.approx(vd.SILENCE_C * T / exposure, rel=1e-9)
        d.append(new)
    assert d[1] == pytest.approx(1024.0 * vd.SILENCE_C / (R / T))
    diffs = [x for _, x in cuts]
    assert diffs == sorted(diffs, reverse=True)
    assert diffs[-1] == lo
    assert len(cuts) <= 6  # 1024 -> 1e-6 is 30 bits: a handful of intervals
    assert silent_ticks(v, 3600.0, start=1800.0) == []  # stays put at the floor
    assert v.estimated_hashrate(1800.0) == 0.0


def test_a_share_ends_the_silence_rule() -> None:
    v = make(1024.0)
    first = v.maybe_retarget(R)
    assert first == pytest.approx(1024.0 * vd.SILENCE_C / (R / T))
    v.record_share(R + 1.0)
    # One share where about three were due at the new level is no evidence either way.
    assert v.maybe_retarget(2 * R) is None
    assert v.difficulty == first


def test_reset_forgets_silence() -> None:
    v = make(1024.0)
    v.reset(500.0)  # e.g. the first job reached the miner only now
    assert v.maybe_retarget(501.0) is None
    assert v.maybe_retarget(500.0 + R - 1) is None
    assert v.maybe_retarget(500.0 + R) == pytest.approx(1024.0 * vd.SILENCE_C / (R / T))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("off", [100.0, 1 / 100])
def test_suggested_difficulty_is_honoured_then_converges(seed: int, off: float) -> None:
    h = 1e12
    v = make(1024.0, lo=1e-8, hi=1e15)
    suggested = ideal(h) * off
    assert v.suggest(suggested) == suggested
    v.reset(0.0)  # the first job goes out after the suggestion
    assert v.difficulty == suggested
    sim = Sim(v, h, seed)
    assert sim.last_time_off(h, 1800.0) < 3 * R


def test_suggested_difficulty_is_bounded() -> None:
    v = make(100.0, lo=1.0, hi=1e4)
    assert v.suggest(1000.0) == 1000.0
    assert v.difficulty == 1000.0
    assert v.suggest(1e9) == 1e4
    assert v.suggest(1e-9) == 1.0
    assert v.suggest(math.nan) == 1.0  # ignored
    assert v.suggest(-5.0) == 1.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_converges_from_far_below(seed: int) -> None:
    """A 100 TH/s miner started at difficulty 1 (a share flood) climbs at once."""
    h = 1e14
    sim = Sim(make(1.0), h, seed)
    sim.run_until(5.0)
    assert sim.changes, "a flood must trigger a retarget before the first interval"
    assert sim.changes[0][0] <= 2.0
    # one step of more than 4x (the old fixed cap): the evidence is overwhelming
    assert sim.changes[0][1] / 1.0 > 1000.0
    sim.run_until(600.0)
    assert 0.5 <= sim.v.difficulty / ideal(h) <= 2.0
    sim.run_until(600.0 + 3600.0)
    assert 3.0 <= sim.share_rate_per_min(600.0, 4200.0) <= 12.0
    assert 0.5 <= sim.v.difficulty / ideal(h) <= 2.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_converges_from_far_above(seed: int) -> None:
    """A 1 MH/s CPU miner started at difficulty 1024 (no shares at all) comes down fast."""
    h = 1e6
    sim = Sim(make(1024.0), h, seed)
    sim.run_until(900.0)
    assert sim.changes
    assert sim.changes[0][0] == R  # the first silent interval already cuts
    assert 0.4 <= sim.v.difficulty / ideal(h) <= 2.5
    sim.run_until(900.0 + 3600.0)
    assert 3.0 <= sim.share_rate_per_min(900.0, 4500.0) <= 12.0


@pytest.mark.parametrize("factor", [3.0, 1 / 3])
def test_follows_a_hashrate_change(factor: float) -> None:
    h0 = 1e12
    sim = Sim(make(ideal(h0)), lambda t: h0 if t < 1800 else h0 * factor, seed=7)
    sim.run_until(1800.0)
    assert sim.changes == []
    sim.run_until(1800.0 + 1200.0)
    assert sim.changes
    assert 0.5 <= sim.v.difficulty / ideal(h0 * factor) <= 2.0


# ---------------------------------------------------------------------------
# stability


@pytest.mark.parametrize("seed", SEEDS)
def test_no_flapping_at_the_right_difficulty(seed: int) -> None:
    """An hour on target: at most the warm-up pair (a cut after a silent first
    interval, odds e^-3, and the raise back), and after it at most one change,
    within 2x."""
    h = 1e12
    sim = Sim(make(ideal(h)), h, seed)
    sim.run_until(3600.0)
    assert len(sim.changes) <= 2, sim.changes
    late = [d for t, d in sim.changes if t > WARMUP]
    assert len(late) <= 1, sim.changes
    assert all(0.5 <= d / ideal(h) <= 2.0 for d in late)
    assert 0.5 <= sim.v.difficulty / ideal(h) <= 2.0


def test_moderate_deviation_is_tolerated() -> None:
    """A miner 1.3x off target is inside the hysteresis band: never moved out of 2x,
    and rarely moved at all. (Over 120 two-hour runs: 0.25 changes per run after the
    warm-up on average, at most 2 in one run, at most 5 in a block of 10 runs; a
    1.3x deviation is real, so a correction of it is no flap.)"""
    h = 1e12
    late_total = 0
    for seed in range(5):
        for f in (1.3, 1 / 1.3):
            sim = Sim(make(ideal(h) * f), h, seed)
            sim.run_until(2 * 3600.0)
            late = [d for t, d in sim.changes if t > WARMUP]
            assert len(late) <= 2, sim.changes
            assert all(0.5 <= d / ideal(h) <= 2.0 for d in late)
            late_total += len(late)
    assert late_total <= 6


# ---------------------------------------------------------------------------
# bounds


def test_never_above_ceiling() -> None:
    lo, hi = 1e-8, 1000.0
    sim = Sim(make(1.0, lo, hi), 1e14, seed=4)
    sim.run_until(1800.0)
    assert sim.v.difficulty == hi
    assert all(lo <= d <= hi for _, d in sim.changes)


def test_never_below_floor() -> None:
    lo, hi = 0.5, 1e6
    sim = Sim(make(1024.0, lo, hi), 0.0, seed=5)  # a miner that finds nothing
    sim.run_until(3600.0)
    assert sim.v.difficulty == lo
    assert all(lo <= d <= hi for _, d in sim.changes)
    n = len(sim.changes)
    sim.run_until(7200.0)
    assert len(sim.changes) == n  # stays put at the floor


def test_start_difficulty_is_clamped() -> None:
    assert make(1e-12, lo=1e-8).difficulty == 1e-8
    assert make(1e20, hi=1e15).difficulty == 1e15


def test_floor_hint_applies_at_next_check() -> None:
    v = make(100.0, lo=1.0, hi=1e6)
    v.set_floor_hint(500.0)
    assert v.min_difficulty == 500.0
    assert v.maybe_retarget(0.5) == 500.0
    assert v.difficulty == 500.0
    v.set_floor_hint(10.0)  # lowering is ignored
    assert v.min_difficulty == 500.0
    v.set_floor_hint(1e9)  # never above the ceiling
    assert v.min_difficulty == 1e6
    v.set_floor_hint(math.nan)
    assert v.min_difficulty == 1e6


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        Vardiff(0.0, 1.0, 1.0, 2.0, now=0.0)
    with pytest.raises(ValueError):
        Vardiff(6.0, 1.0, 2.0, 1.0, now=0.0)
    with pytest.raises(ValueError):
        Vardiff(6.0, 1.0, 0.0, 1.0, now=0.0)
    with pytest.raises(ValueError):
        Vardiff(6.0, math.nan, 1.0, 2.0, now=0.0)
    with pytest.raises(ValueError):
        Vardiff(6.0, 1.0, 1.0, 2.0, retarget_interval_s=0.0, now=0.0)
    with pytest.raises(ValueError):
        Vardiff(6.0, 1.0, 1.0, 2.0, now=0.0, window_s=-1.0)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["share", "tick", "suggest", "set", "reset", "floor"]),
        st.floats(min_value=0.0, max_value=120.0),
        st.floats(min_value=-3.0, max_value=3.0),  # log10 of a factor
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(min_value=1e-6, max_value=1e9),
    lo_exp=st.floats(min_value=-8.0, max_value=2.0),
    span=st.floats(min_value=0.0, max_value=12.0),
    ops=_OPS,
)
def test_difficulty_stays_bounded_finite_and_positive(
    start: float, lo_exp: float, span: float, ops: list[tuple[str, float, float]]
) -> None:
    lo = 10.0**lo_exp
    v = Vardiff(SPM, start, lo, lo * 10.0**span, R, now=0.0)
    t = 0.0
    for kind, dt, log_f in ops:
        t += dt
        f = 10.0**log_f
        if kind == "share":
            v.record_share(t, v.difficulty * f)
        elif kind == "suggest":
            v.suggest(v.difficulty * f)
        elif kind == "set":
            v.difficulty = v.difficulty * f  # a caller override may leave the bounds...
        elif kind == "reset":
            v.reset(t)
        elif kind == "floor":
            v.set_floor_hint(v.min_difficulty * f)
        new = v.maybe_retarget(t)  # ...the next check brings it back
        d = v.difficulty
        assert math.isfinite(d) and d > 0
        assert v.min_difficulty <= d <= v.max_difficulty
        assert new is None or new == d
        est = v.estimated_hashrate(t)
        assert math.isfinite(est) and est >= 0.0


# ---------------------------------------------------------------------------
# hashrate estimate


@pytest.mark.parametrize("seed", SEEDS)
def test_estimate_does_not_overshoot_after_a_retarget(seed: int) -> None:
    """The window spans changes: right after the flood raise, and over the next
    intervals, the estimate stays within 2x of the true rate."""
    h = 1e12
    ratios: list[float] = []

    def record(sim: Sim) -> None:
        if sim.changes:
            ratios.append(sim.v.estimated_hashrate(sim.t) / h)

    sim = Sim(make(ideal(h) / 100), h, seed)
    sim.run_until(5 * R, record)
    assert ratios
    assert min(ratios) >= 0.5 and max(ratios) <= 2.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("off", [100.0, 1.0])
def test_estimate_is_sane_once_measured(seed: int, off: float) -> None:
    """Through silence cuts and the raises after them (100x slow; on target, where a
    silent first interval is cut too), once the window holds 24 shares the estimate
    stays within 2x of the true rate."""
    h = 1e12
    ratios: list[float] = []

    def record(sim: Sim) -> None:
        n, _ = sim.v._window(sim.t)
        if n >= 24:
            ratios.append(sim.v.estimated_hashrate(sim.t) / h)

    sim = Sim(make(ideal(h) * off), h, seed)
    sim.run_until(1800.0, record)
    assert ratios
    assert min(ratios) >= 0.5 and max(ratios) <= 2.0


def test_no_spike_from_the_first_shares_after_a_change() -> None:
    v = make(1.0)
    for i in range(60):
        v.record_share(float(i))  # 1 share/s at difficulty 1
    before = v.estimated_hashrate(60.0)
    assert before == pytest.approx(2**32, rel=0.05)
    v.difficulty = 8.0  # raised at 59 s (last_now)
    for k in range(3):  # three lucky shares in the first second at the new difficulty
        v.record_share(59.2 + 0.2 * k)
    # A window restarted at the change would read 3 * 8 / 1 s: 24x.
    assert v.estimated_hashrate(60.0) == pytest.approx(before, rel=0.1)


def test_estimated_hashrate_at_steady_state() -> None:
    h = 2e12
    sim = Sim(make(ideal(h)), h, seed=11)
    assert sim.v.estimated_hashrate(0.0) == 0.0
    sim.run_until(1800.0)
    assert 0.7 <= sim.v.estimated_hashrate(sim.t) / h <= 1.4


def test_estimate_is_continuous_over_a_change() -> None:
    v = make(1.0)
    for i in range(60):
        v.record_share(float(i))  # 1 share/s at difficulty 1
    est = v.estimated_hashrate(v.last_now)
    assert est == pytest.approx(2**32, rel=0.05)
    v.difficulty = 8.0  # a change at last_now (59 s)
    assert v.estimated_hashrate(61.0) == pytest.approx(est, rel=0.05)
    for i in range(5):
        v.record_share(62.0 + i)  # 1 share/s at difficulty 8: the rate went up 8x
    assert v.estimated_hashrate(67.0) > est


def test_first_share_is_not_a_huge_hashrate() -> None:
    v = make(1000.0)
    v.record_share(0.01)
    # with fewer than MIN_SHARES_FOR_ESTIMATE shares, no more than the current difficulty's rate
    assert v.estimated_hashrate(0.02) == pytest.approx(1000.0 * 2**32 / T)
    v.record_share(0.015)
    assert v.estimated_hashrate(0.02) == pytest.approx(1000.0 * 2**32 / T)


def test_a_share_at_an_old_lower_difficulty_counts_for_less() -> None:
    v = make(8.0)
    v.record_share(5.0, 1.0)  # an old job's share after a raise from 1 to 8
    v.record_share(6.0, 8.0)
    n, _ = v._window(10.0)
    assert n == pytest.approx(1.0 + 1.0 / 8.0)
    v.record_share(7.0, 64.0)  # a share at a higher difficulty is still one event
    n, _ = v._window(10.0)
    assert n == pytest.approx(2.0 + 1.0 / 8.0)


# ---------------------------------------------------------------------------
# overrides


def test_setter_overrides_and_does_not_retarget_at_once() -> None:
    v = make(100.0)
    for i in range(10):
        v.record_share(float(i))
    v.maybe_retarget(10.0)
    v.difficulty = 200.0
    assert v.difficulty == 200.0
    # the next check is a full interval after the change
    assert v.maybe_retarget(11.0) is None
    with pytest.raises(ValueError):
        v.difficulty = 0.0


def test_share_memory_is_bounded() -> None:
    v = make(1.0)
    for i in range(5 * vd.MAX_WINDOW_SHARES):
        v.record_share(i * 1e-4)
    assert len(v._shares) <= vd.MAX_WINDOW_SHARES
    assert v.estimated_hashrate(0.5) > 0


def test_estimate_is_finite_when_shares_come_with_no_time_elapsed() -> None:
    # A share recorded at the very instant the window starts (a simulated clock that has not
    # moved) gave exposure 0 and a ZeroDivisionError in the hub's monitoring read.
    v = Vardiff(shares_per_minute=6.0, start_difficulty=1.0, min_difficulty=1e-8, max_difficulty=1e15, now=100.0)
    for _ in range(5):
        v.record_share(100.0, 1.0)
    rate = v.estimated_hashrate(100.0)
    assert math.isfinite(rate) and rate > 0


@given(st.one_of(st.none(), st.floats(allow_nan=True), st.floats(min_value=0.0, max_value=4.0)),
       st.floats(min_value=1e-9, max_value=1e6))
def test_share_weight_is_min_one_of_the_share_difficulty_over_the_current(credit: float | None, current: float) -> None:
    v = Vardiff(shares_per_minute=6.0, start_difficulty=current, min_difficulty=1e-12, max_difficulty=1e12, now=0.0)
    v.difficulty = current
    v.record_share(1.0, credit)
    expected = 1.0 if credit is None else min(1.0, max(credit, 0.0) / current)
    weight = v._shares[-1][1]
    assert weight == expected or (math.isnan(weight) and math.isnan(expected))
