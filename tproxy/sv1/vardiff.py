"""Per-miner variable difficulty, pure and clock-injected.

The caller passes ``now`` (seconds, any monotonic origin) to every method;
nothing here reads a clock. One ``Vardiff`` per SV1 connection.

Algorithm
---------
* **Estimate.** A miner of ``lam`` difficulty-1 shares per second (hashrate
  ``lam * 2^32``) at difficulty ``d`` finds shares as a Poisson process of
  rate ``lam / d``. Over a sliding window (``window_s``, by default 20
  retarget intervals) that spans difficulty changes, the *exposure* is
  ``X = integral dt / d(t)`` and the share count ``N``; the
  maximum-likelihood rate is ``lam = N / X``. A share found at a
  high difficulty weighs no more than one found at a low one (each share is
  one Poisson event), so neither a change nor a lucky share at an old, much
  higher difficulty makes the estimate jump, and nothing restarts at a
  change. A share credited at a difficulty below the current one (an old job
  in flight after a raise) counts ``d_share / d``: it proves less work.
* **Evidence at the current difficulty.** ``e = X * d / T`` is the number of
  shares a miner on target (one per ``T = 60 / shares_per_minute`` s) would
  have sent over the window's exposure. ``N`` against ``e`` decides.
* **Silence** (``N == 0`` at a check): the absence of shares bounds the rate:
  ``lam <= SILENCE_C / X`` is where zero shares over ``X`` is unsurprising
  (probability ``e^-SILENCE_C``). The difficulty drops to that level, i.e. by
  ``e / SILENCE_C`` (300x after one silent 30 s interval at 6 shares/min,
  about 300x again after the next): once every ``retarget_interval_s`` down
  to ``min_difficulty``, like ckpool's decay but sized by the Poisson bound.
  The bound is deliberately loose: undershooting is cheap (a too-low
  difficulty brings many shares, and the rule below lifts it with a precise
  estimate at the next check); overshooting is expensive (a too-high
  difficulty brings no information). The price: a miner on target that is
  silent for its first interval (odds ``e^-3`` at the defaults) is cut too,
  and raised back at the next check.
* **Retarget** (``N > 0``), every ``retarget_interval_s``, sooner when shares
  flood in: with ``z = 2 (sqrt N - sqrt e)`` (Poisson noise about N(0, 1)),
  change when ``|z|`` exceeds a threshold and the rate is off by more than
  ``HYSTERESIS``. The threshold rises from ``Z_FRESH`` to ``Z_SETTLED`` with
  the evidence behind the current difficulty, ``min(N, e)`` up to
  ``E_SETTLED``: a guess (start, suggestion, silence cut) yields to modest
  evidence, a difficulty backed by minutes of matching shares only to strong
  evidence, and a moderate deviation of a settled one must persist over two
  checks. After a deliberate undershoot (a silence cut or a probing cut) a
  raise needs only ``Z_PROBE``: the shares that follow are the measurement.
* **Step size** is a confidence bound of the rate, in standard errors
  (``1/sqrt N`` in log scale) from the point estimate: a raise stops short of
  it (by ``SHRINK_FRESH``, zero, to ``SHRINK_SETTLED``), a cut of a settled difficulty
  too (a noisy stretch is likelier than a real change), a cut of a fresh one
  goes ``PROBE_SIGMAS`` past it (undershooting is cheap, see above), never
  below the silence bound. No fixed step cap: with many shares the step is
  (almost) the whole way, with few it is cautious. Steps under ``MIN_STEP``
  are skipped.
* **Cost of the start difficulty.** A start far above a miner costs about
  one silent interval per factor ``~300`` (at the defaults, 6 shares/min and
  30 s); a start far below costs one early check: the first check (a
  ``maybe_retarget`` call) that finds ``FLOOD_MIN_SHARES`` new shares raises
  it, after a second or two of shares at the excess rate.
* **Bounds.** Results are clamped to ``[min_difficulty, max_difficulty]``. A
  miner's ``minimum-difficulty`` (BIP310) raises the floor;
  ``mining.suggest_difficulty`` sets the difficulty within the bounds, and
  the rules above continue from there.
"""

from __future__ import annotations

import math
from collections import deque

from sv2.work import HASHES_PER_DIFF1

__all__ = ["Vardiff"]

HYSTERESIS = 1.5
"""A deviation of the point estimate smaller than this factor never causes a change."""

Z_FRESH = 2.5
"""Retarget threshold (standard errors of the square-root-transformed count) for a
difficulty with no evidence behind it yet."""

Z_PROBE = 1.0
"""Threshold for a raise after a deliberate undershoot (silence or probing cut)."""

Z_SETTLED = 4.5
"""Retarget threshold for a settled difficulty (see E_SETTLED)."""

E_SETTLED = 15.0
"""A difficulty is settled once the window holds this many shares and this many
were due at it (``min(N, e)``); the threshold ramps up to there."""

SHRINK_FRESH = 0.0
SHRINK_SETTLED = 2.0
"""A raise stops this many standard errors short of the point estimate (from
fresh to settled); so does a cut of a settled difficulty."""

PROBE_SIGMAS = 1.5
"""A cut of a fresh difficulty goes this many standard errors past the point estimate."""

MIN_STEP = 1.1
"""Smallest factor worth a change (smaller steps are skipped)."""

SILENCE_C = 0.01
"""Zero shares cut to the rate at which the window's silence had probability
``e^-SILENCE_C``."""

FLOOD_FACTOR = 4.0
FLOOD_MIN_SHARES = 32
"""Retarget early when a check interval brings this many shares (and at least
FLOOD_FACTOR times the expected number)."""

MAX_WINDOW_SHARES = 1024
"""Bound on the remembered shares (memory stays constant under a flood)."""

MIN_SHARES_FOR_ESTIMATE = 3
"""Below this many shares the hashrate estimate is capped at the current
difficulty's nominal rate (one or two lucky shares are no measurement)."""


class Vardiff:
    """Difficulty controller for one miner. See the module docstring."""

    __slots__ = (
        "_difficulty",
        "_last_check",
        "_pending",
        "_probing",
        "_segments",
        "_shares",
        "_shares_since_check",
        "_window_start",
        "last_now",
        "max_difficulty",
        "min_difficulty",
        "retarget_interval_s",
        "share_interval_s",
        "shares_per_minute",
        "window_s",
    )

    def __init__(
        self,
        shares_per_minute: float,
        start_difficulty: float,
        min_difficulty: float,
        max_difficulty: float,
        retarget_interval_s: float = 30.0,
        *,
        now: float,
        window_s: float | None = None,
    ) -> None:
        if not (math.isfinite(shares_per_minute) and shares_per_minute > 0):
            raise ValueError("shares_per_minute must be finite and > 0")
        if not (math.isfinite(min_difficulty) and min_difficulty > 0):
            raise ValueError("min_difficulty must be finite and > 0")
        if not (math.isfinite(max_difficulty) and max_difficulty >= min_difficulty):
            raise ValueError("max_difficulty must be finite and >= min_difficulty")
        if not (math.isfinite(start_difficulty) and start_difficulty > 0):
            raise ValueError("start_difficulty must be finite and > 0")
        if not (math.isfinite(retarget_interval_s) and retarget_interval_s > 0):
            raise ValueError("retarget_interval_s must be finite and > 0")
        self.shares_per_minute = float(shares_per_minute)
        self.share_interval_s = 60.0 / self.shares_per_minute
        self.min_difficulty = float(min_difficulty)
        self.max_difficulty = float(max_difficulty)
        self.retarget_interval_s = float(retarget_interval_s)
        if window_s is None:
            window_s = max(20.0 * self.retarget_interval_s, 40.0 * self.share_interval_s)
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError("window_s must be finite and > 0")
        self.window_s = float(window_s)
        self._difficulty = self._clamp(float(start_difficulty))
        self.last_now = now
        self._shares: deque[tuple[float, float]] = deque()  # (time, weight)
        self._segments: deque[tuple[float, float]] = deque()  # (start, difficulty)
        self._window_start = now
        self._last_check = now
        self._shares_since_check = 0
        self._pending = 0
        self._probing = False
        self._segments.append((now, self._difficulty))

    # -- difficulty ------------------------------------------------------------

    @property
    def difficulty(self) -> float:
        """The miner's current difficulty."""
        return self._difficulty

    @difficulty.setter
    def difficulty(self, value: float) -> None:
        """Override the difficulty (e.g. raised to an upstream floor by the caller).

        A different value counts as a change at ``last_now``; the measurements
        are kept (they are in exposure units, valid across changes).
        """
        if not (math.isfinite(value) and value > 0):
            raise ValueError("difficulty must be finite and > 0")
        if value != self._difficulty:
            self._apply(float(value), self.last_now)

    def _clamp(self, d: float) -> float:
        return min(max(d, self.min_difficulty), self.max_difficulty)

    def _apply(self, d: float, now: float) -> None:
        self._difficulty = d
        segments = self._segments
        if segments and segments[-1][0] >= now:
            segments.pop()  # a second change at the same instant replaces the first
        segments.append((now, d))
        self._last_check = now
        self._shares_since_check = 0
        self._pending = 0

    def suggest(self, difficulty: float) -> float:
        """Apply a miner's ``mining.suggest_difficulty`` hint, bounded; returns the result."""
        if not (math.isfinite(difficulty) and difficulty > 0):
            return self._difficulty
        d = self._clamp(float(difficulty))
        if d != self._difficulty:
            self._apply(d, self.last_now)
            self._probing = False  # the miner's own figure, not our undershoot
        return d

    def set_floor_hint(self, minimum: float) -> None:
        """Raise the floor to a miner's BIP310 ``minimum-difficulty`` (never above the ceiling).

        The current difficulty is not touched here; the next ``maybe_retarget``
        returns the clamped value at once.
        """
        if math.isfinite(minimum) and minimum > self.min_difficulty:
            self.min_difficulty = min(float(minimum), self.max_difficulty)

    def reset(self, now: float) -> None:
        """Forget measurements and restart timing (e.g. when the first job is sent)."""
        self.last_now = max(self.last_now, now)
        self._shares.clear()
        self._segments.clear()
        self._segments.append((now, self._difficulty))
        self._window_start = now
        self._last_check = now
        self._shares_since_check = 0
        self._pending = 0
        self._probing = False

    # -- measurements --------------------------------------------------------

    def record_share(self, now: float, difficulty: float | None = None) -> None:
        """Count one accepted share, credited at ``difficulty`` (default: the current one)."""
        if now > self.last_now:
            self.last_now = now
        d = self._difficulty
        # A share at a lower difficulty than the current one (an old job after a
        # raise) proves proportionally less; one at a higher difficulty (an old
        # job after a cut) is still one Poisson event, not several.
        # min(1.0, max(difficulty, 0.0) / d) written out (this runs for every share);
        # "not <" rather than ">=" so that a NaN weighs 1.0 there too.
        if difficulty is None or not difficulty < d:
            weight = 1.0
        else:
            weight = difficulty / d if difficulty > 0.0 else 0.0
        shares = self._shares
        shares.append((now, weight))
        if len(shares) > MAX_WINDOW_SHARES:
            t0, _ = shares.popleft()
            if t0 > self._window_start:
                self._window_start = t0
        self._shares_since_check += 1

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s
        if horizon > self._window_start:
            self._window_start = horizon
            shares = self._shares
            while shares and shares[0][0] < horizon:
                shares.popleft()
        segments = self._segments
        while len(segments) > 1 and segments[1][0] <= self._window_start:
            segments.popleft()

    def _window(self, now: float) -> tuple[float, float]:
        """(weighted share count, exposure in seconds per unit difficulty) of the window."""
        self._trim(now)
        start = self._window_start
        exposure = 0.0
        segments = self._segments
        for i, (t0, d) in enumerate(segments):
            t1 = segments[i + 1][0] if i + 1 < len(segments) else now
            t0 = max(t0, start)
            if t1 > t0:
                exposure += (t1 - t0) / d
        count = math.fsum(w for _, w in self._shares)
        return count, exposure

    def estimated_hashrate(self, now: float) -> float:
        """Hashes per second over the window: ``N * 2^32 / X`` (see the module docstring).

        0.0 without shares (the caller then uses its nominal figure). With
        fewer than ``MIN_SHARES_FOR_ESTIMATE`` shares the exposure counts as
        at least one share interval at the current difficulty per share: a
        lucky first share does not read as a huge hashrate.
        """
        n, exposure = self._window(now)
        if n <= 0:
            return 0.0
        if n < MIN_SHARES_FOR_ESTIMATE or exposure <= 0.0:
            # (no time has passed at all, e.g. every share at one instant of a simulated clock:
            # the same floor keeps the estimate finite)
            exposure = max(exposure, n * self.share_interval_s / self._difficulty)
        return n * HASHES_PER_DIFF1 / exposure

    # -- control ---------------------------------------------------------------

    def maybe_retarget(self, now: float) -> float | None:
        """A new difficulty when one is due, else None. The new value is applied."""
        if now > self.last_now:
            self.last_now = now
        d = self._difficulty
        bounded = self._clamp(d)
        if bounded != d:
            self._apply(bounded, now)
            return bounded
        # Due on the interval, or early under a share flood.
        since_check = now - self._last_check
        on_target = since_check / self.share_interval_s
        flood = self._shares_since_check >= max(FLOOD_MIN_SHARES, FLOOD_FACTOR * on_target)
        if since_check < self.retarget_interval_s and not flood:
            return None
        self._last_check = now
        self._shares_since_check = 0
        n, exposure = self._window(now)
        if exposure <= 0:
            return None
        expected = exposure * d / self.share_interval_s
        if n <= 0:
            factor, probing = self._silence_step(expected), True
        else:
            factor, probing = self._step(n, expected)
        if factor is None:
            return None
        new = self._clamp(d * factor)
        if new == d:
            return None
        self._apply(new, now)
        self._probing = probing
        return new

    def _silence_step(self, expected: float) -> float | None:
        """Zero shares where ``expected`` were due on target: cut to the Poisson bound."""
        factor = SILENCE_C / expected
        return factor if factor < 1.0 / MIN_STEP else None

    def _threshold(self, n: float, expected: float, direction: int) -> tuple[float, float]:
        """(z threshold, settledness in [0, 1]) for a move in ``direction``."""
        # Evidence behind the current difficulty: shares that both were due and came.
        settled = min(1.0, n / E_SETTLED, expected / E_SETTLED)
        if direction > 0 and self._probing:
            # We went low on purpose; the shares that follow are the measurement.
            return Z_PROBE, 0.0
        return Z_FRESH + (Z_SETTLED - Z_FRESH) * settled, settled

    def _step(self, n: float, expected: float) -> tuple[float | None, bool]:
        """(factor or None, whether it is a probe) for ``n`` shares where ``expected`` were due."""
        # The square-root transform makes Poisson noise about N(0, 1) on both sides.
        z = 2.0 * (math.sqrt(n) - math.sqrt(expected))
        direction = 1 if z > 0 else -1
        threshold, settled = self._threshold(n, expected, direction)
        if abs(z) <= threshold or abs(math.log(n / expected)) <= math.log(HYSTERESIS):
            self._pending = 0
            return None, False
        if settled >= 1.0 and abs(z) <= 2.0 * threshold and self._pending != direction:
            # A moderate deviation from a settled difficulty must persist over two checks.
            self._pending = direction
            return None, False
        # Step to a confidence bound of the rate. A raise stops short of the
        # point estimate (a too-high difficulty starves the measurement); so
        # does a cut of a settled difficulty (the evidence is a noisy stretch
        # more often than a real change). A cut of a fresh difficulty goes
        # past it: a too-low difficulty costs only extra shares, and those
        # measure the miner quickly.
        if direction > 0:
            sigmas = SHRINK_FRESH + (SHRINK_SETTLED - SHRINK_FRESH) * settled
        else:
            sigmas = PROBE_SIGMAS - (PROBE_SIGMAS + SHRINK_SETTLED) * settled
        # Never below the bound zero shares would give.
        step = max(_poisson_bound(n, sigmas), SILENCE_C) / expected
        if math.log(step) * direction < math.log(MIN_STEP):
            return None, False
        return step, sigmas > 0 and direction < 0


def _poisson_bound(n: float, sigmas: float) -> float:
    """A one-sided confidence bound on a Poisson mean given ``n`` events: the lower bound
    ``sigmas`` standard normal deviates down, or for negative ``sigmas`` the upper bound
    that many up (Wilson-Hilferty approximation of the gamma quantile)."""
    k = n if sigmas >= 0 else n + 1.0
    root = 1.0 - 1.0 / (9.0 * k) - sigmas / (3.0 * math.sqrt(k))
    return k * max(root, 0.0) ** 3
