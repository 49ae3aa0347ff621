"""Vardiff against a simulated miner (Poisson shares at a fixed hashrate, simulated clock)."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import pytest

from tproxy.sv1 import vardiff as vd
from tproxy.sv1.vardiff import Vardiff

SPM = 6.0
TICK = 1.0


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

    def run_until(self, end: float) -> None:
        v = self.v
        while self.t < end:
            h = self.hashrate(self.t) if callable(self.hashrate) else self.hashrate
            rate = h / (v.difficulty * 2**32)
            if rate > 0:
                a = self.t + self.rng.expovariate(rate)
                while a < self.t + TICK:
                    v.record_share(a)
                    self.shares.append((a, v.difficulty))
                    a += self.rng.expovariate(rate)
            self.t += TICK
            new = v.maybe_retarget(self.t)
            if new is not None:
                assert new == v.difficulty
                self.changes.append((self.t, new))

    def share_rate_per_min(self, start: float, end: float) -> float:
        n = sum(1 for t, _ in self.shares if start <= t < end)
        return n / ((end - start) / 60.0)


def make(start: float, lo: float = 1e-8, hi: float = 1e15, interval: float = 30.0) -> Vardiff:
    return Vardiff(SPM, start, lo, hi, interval, now=0.0)


# ---------------------------------------------------------------------------
# convergence


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_converges_from_far_below(seed: int) -> None:
    """A 100 TH/s miner started at difficulty 1 (a share flood) climbs fast, in bounded steps."""
    h = 1e14
    sim = Sim(make(1.0), h, seed)
    sim.run_until(5.0)
    assert sim.changes, "a flood must trigger a retarget before the first interval"
    assert sim.changes[0][0] <= 2.0
    sim.run_until(600.0)
    for (_, a), (_, b) in zip([(0.0, 1.0), *sim.changes], sim.changes, strict=False):
        assert b / a <= vd.MAX_STEP * (1 + 1e-12)
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
    # the first cut waits for ZERO_SHARE_EXPECTED missing shares
    assert sim.changes[0][0] >= vd.ZERO_SHARE_EXPECTED * 60.0 / SPM
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


# ---------------------------------------------------------------------------
# stability


@pytest.mark.parametrize("seed", range(8))
def test_no_flapping_at_steady_state(seed: int) -> None:
    h = 1e12
    sim = Sim(make(ideal(h)), h, seed)
    sim.run_until(4 * 3600.0)
    assert len(sim.changes) <= 1, sim.changes


def test_moderate_deviation_is_tolerated() -> None:
    """A miner 1.3x off target is inside the hysteresis band: no retarget."""
    h = 1e12
    total = 0
    for seed in range(5):
        for f in (1.3, 1 / 1.3):
            sim = Sim(make(ideal(h) * f), h, seed)
            sim.run_until(2 * 3600.0)
            total += len(sim.changes)
    assert total <= 1


# ---------------------------------------------------------------------------
# zero shares


def test_zero_share_decay() -> None:
    interval = 60.0 / SPM
    v = make(1024.0, lo=1e-3)
    first_wait = vd.ZERO_SHARE_EXPECTED * interval
    cuts: list[tuple[float, float]] = []
    t = 0.0
    while t < 3600.0:
        t += TICK
        new = v.maybe_retarget(t)
        if new is not None:
            cuts.append((t, new))
    assert cuts[0] == (first_wait, 1024.0 / vd.ZERO_SHARE_STEP)
    diffs = [d for _, d in cuts]
    assert diffs == sorted(diffs, reverse=True)
    assert diffs[-1] == 1e-3
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(cuts)]
    # each silent stage waits less (down to the minimum), so the slide accelerates
    assert gaps[0] < first_wait
    assert all(g2 <= g1 for g1, g2 in itertools.pairwise(gaps))
    assert min(gaps) >= min(interval, 30.0)
    # 1024 -> 1e-3 is 20 bits: far sooner than 20 first-stage waits
    assert cuts[-1][0] < 4 * first_wait
    assert v.estimated_hashrate(t) == 0.0


def test_a_share_resets_the_zero_share_escalation() -> None:
    interval = 60.0 / SPM
    v = make(1024.0)
    first_wait = vd.ZERO_SHARE_EXPECTED * interval
    assert v.maybe_retarget(first_wait - 1) is None
    assert v.maybe_retarget(first_wait) == 256.0
    v.record_share(first_wait + 1)
    # the next cut waits a full first stage again from the last share
    assert v.maybe_retarget(first_wait + 1 + first_wait - 1) is None
    assert v.maybe_retarget(first_wait + 1 + first_wait) == 64.0


# ---------------------------------------------------------------------------
# hashrate estimate, suggest, overrides


def test_estimated_hashrate_at_steady_state() -> None:
    h = 2e12
    sim = Sim(make(ideal(h)), h, seed=11)
    assert sim.v.estimated_hashrate(0.0) == 0.0
    sim.run_until(1800.0)
    assert 0.7 <= sim.v.estimated_hashrate(sim.t) / h <= 1.4


def test_estimate_is_carried_over_a_change() -> None:
    v = make(1.0)
    for i in range(60):
        v.record_share(float(i))  # 1 share/s at difficulty 1
    est = v.estimated_hashrate(v.last_now)
    assert est == pytest.approx(2**32, rel=0.05)
    v.difficulty = 8.0  # a change at last_now (59 s)
    assert v.estimated_hashrate(61.0) == est  # new window still empty
    for i in range(5):
        v.record_share(62.0 + i)
    assert v.estimated_hashrate(70.0) != est


def test_first_share_is_not_a_huge_hashrate() -> None:
    v = make(1000.0)
    v.record_share(0.01)
    # elapsed counts as at least one share interval
    assert v.estimated_hashrate(0.02) == pytest.approx(1000.0 * 2**32 / (60.0 / SPM))


def test_suggest_is_bounded_and_applied() -> None:
    v = make(100.0, lo=1.0, hi=1e4)
    assert v.suggest(1000.0) == 1000.0
    assert v.difficulty == 1000.0
    assert v.suggest(1e9) == 1e4
    assert v.suggest(1e-9) == 1.0
    assert v.suggest(math.nan) == 1.0  # ignored
    assert v.suggest(-5.0) == 1.0


def test_setter_overrides_and_restarts_the_window() -> None:
    v = make(100.0)
    for i in range(10):
        v.record_share(float(i))
    v.maybe_retarget(10.0)
    v.difficulty = 200.0
    assert v.difficulty == 200.0
    # a fresh window: nothing due right after the change
    assert v.maybe_retarget(11.0) is None
    with pytest.raises(ValueError):
        v.difficulty = 0.0


def test_share_memory_is_bounded() -> None:
    v = make(1.0)
    for i in range(5 * vd.MAX_WINDOW_SHARES):
        v.record_share(i * 1e-4)
    assert len(v._shares) <= vd.MAX_WINDOW_SHARES
    assert v.estimated_hashrate(0.5) > 0


def test_reset_forgets_silence() -> None:
    v = make(1024.0)
    v.reset(500.0)  # e.g. the first job reached the miner only now
    assert v.maybe_retarget(501.0) is None
    assert v.maybe_retarget(500.0 + vd.ZERO_SHARE_EXPECTED * 60.0 / SPM) == 256.0
