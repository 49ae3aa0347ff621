"""Per-miner variable difficulty, pure and clock-injected.

The caller passes ``now`` (seconds, any monotonic origin) to every method;
nothing here reads a clock. One ``Vardiff`` per SV1 connection.

Algorithm
---------
Each accepted share is worth its difficulty ``d`` in units of ``2^32`` hashes,
whatever the difficulty was, so the hashrate over a window is
``sum(d) * 2^32 / elapsed``. The ideal difficulty for ``shares_per_minute`` is
``hashrate * (60 / shares_per_minute) / 2^32``. The window restarts at every
difficulty change: a share found at an old, much higher difficulty says
little (it is 0 or a large number), and mixing it into the new window would
skew the estimate.

* **Normal retarget**, at most every ``retarget_interval_s`` (sooner when
  shares flood in): compare the window's share count ``N`` (in units of the
  current difficulty) with the count ``E`` expected if the miner were on
  target. With the square-root transform ``z = 2 (sqrt N - sqrt E)`` the
  Poisson noise is about N(0, 1) on both sides. A change needs ``|z| > Z``
  and a rate off by more than ``HYSTERESIS``, and unless ``|z| > 2 Z`` the
  same verdict on two consecutive checks, so a miner at the right difficulty
  does not flap. The step goes halfway (``SHRINK``) between the point
  estimate and the edge of the confidence interval nearest the current
  difficulty: a barely significant deviation moves a little, an overwhelming
  one nearly all the way. Steps are bounded to ``MAX_STEP`` either way;
  steps under ``MIN_STEP`` are skipped.
* **Zero shares**: silence is evidence too. After the last share (or the last
  change) a miner at the right difficulty produces a share every
  ``60 / shares_per_minute`` s; ``ZERO_SHARE_EXPECTED`` expected shares
  without one (odds e^-12 for a miner on target) divide the difficulty by
  ``ZERO_SHARE_STEP``. Each further silent stage waits ``ZERO_SHARE_STEP``
  times less (after a cut the miner should find shares that much faster),
  down to one cut per ``min(share interval, retarget interval)``. A CPU miner
  started at 1024 reaches its level (2^19 lower) in under four first waits.
* Results are clamped to ``[min_difficulty, max_difficulty]``. A miner's
  ``minimum-difficulty`` (BIP310) raises the floor; ``suggest_difficulty``
  sets the difficulty within the bounds.
"""

from __future__ import annotations

import math
from collections import deque

from sv2.work import HASHES_PER_DIFF1

__all__ = ["Vardiff"]

MAX_STEP = 4.0
"""Largest factor of one normal retarget, up or down."""

HYSTERESIS = 1.5
"""A deviation smaller than this factor never causes a change."""

SHRINK = 0.5
"""Weight of the conservative (confidence-edge) estimate in a step; the rest is
the point estimate."""

MIN_STEP = 1.1
"""Smallest factor worth a change (smaller steps are skipped)."""

Z = 4.0
"""Deviation needed, in standard errors of the square-root-transformed share count."""

ZERO_SHARE_EXPECTED = 12.0
"""Expected shares without any before a zero-share cut (false-cut odds e^-12)."""

ZERO_SHARE_STEP = 4.0
"""Factor of one zero-share cut."""

FLOOD_FACTOR = 4.0
FLOOD_MIN_SHARES = 16
"""Retarget early when a check interval brings this many shares (and at least
FLOOD_FACTOR times the expected number)."""

MAX_WINDOW_SHARES = 1024
"""Bound on the remembered shares (memory stays constant under a flood)."""

MIN_SHARES_FOR_ESTIMATE = 3


class Vardiff:
    """Difficulty controller for one miner. See the module docstring."""

    __slots__ = (
        "_carry_hashrate",
        "_difficulty",
        "_last_change",
        "_last_check",
        "_last_share",
        "_pending",
        "_shares",
        "_shares_since_check",
        "_window_start",
        "_zero_factor",
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
            window_s = max(10.0 * self.retarget_interval_s, 20.0 * self.share_interval_s)
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError("window_s must be finite and > 0")
        self.window_s = float(window_s)
        self._difficulty = self._clamp(float(start_difficulty))
        self._shares: deque[tuple[float, float]] = deque()
        self.last_now = now
        self._window_start = now
        self._last_change = now
        self._last_check = now
        self._last_share = -math.inf
        self._shares_since_check = 0
        self._zero_factor = 1.0
        self._carry_hashrate = 0.0
        self._pending = 0

    # -- difficulty ------------------------------------------------------------

    @property
    def difficulty(self) -> float:
        """The miner's current difficulty."""
        return self._difficulty

    @difficulty.setter
    def difficulty(self, value: float) -> None:
        """Override the difficulty (e.g. raised to an upstream floor by the caller).

        A different value counts as a change at ``last_now``: the window restarts.
        """
        if not (math.isfinite(value) and value > 0):
            raise ValueError("difficulty must be finite and > 0")
        if value != self._difficulty:
            self._apply(float(value), self.last_now)

    def _clamp(self, d: float) -> float:
        return min(max(d, self.min_difficulty), self.max_difficulty)

    def _apply(self, d: float, now: float) -> None:
        self._carry_hashrate = self.estimated_hashrate(now)
        self._difficulty = d
        self._shares.clear()
        self._window_start = now
        self._last_change = now
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
        self._window_start = now
        self._last_change = now
        self._last_check = now
        self._last_share = -math.inf
        self._shares_since_check = 0
        self._zero_factor = 1.0
        self._carry_hashrate = 0.0

    # -- measurements --------------------------------------------------------

    def record_share(self, now: float, difficulty: float | None = None) -> None:
        """Count one accepted share, worth ``difficulty`` (default: the current one)."""
        if now > self.last_now:
            self.last_now = now
        shares = self._shares
        shares.append((now, self._difficulty if difficulty is None else difficulty))
        if len(shares) > MAX_WINDOW_SHARES:
            t0, _ = shares.popleft()
            if t0 > self._window_start:
                self._window_start = t0
        self._last_share = now
        self._shares_since_check += 1
        self._zero_factor = 1.0

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s
        if horizon > self._window_start:
            self._window_start = horizon
            shares = self._shares
            while shares and shares[0][0] < horizon:
                shares.popleft()

    def _window(self, now: float) -> tuple[int, float, float]:
        """(shares, summed difficulty, elapsed seconds) of the current window."""
        self._trim(now)
        n = len(self._shares)
        total = math.fsum(d for _, d in self._shares) if n else 0.0
        return n, total, now - self._window_start

    def estimated_hashrate(self, now: float) -> float:
        """Hashes per second over the window: ``sum(difficulty) * 2^32 / elapsed``.

        Right after a change, while the new window holds fewer than three shares
        and is younger than a retarget interval, the previous window's estimate
        is returned. Elapsed time counts as at least one share interval, so a
        lucky first share does not read as a huge hashrate.
        """
        n, total, elapsed = self._window(now)
        if (
            n < MIN_SHARES_FOR_ESTIMATE
            and elapsed < self.retarget_interval_s
            and self._carry_hashrate > 0
        ):
            return self._carry_hashrate
        if n == 0:
            return 0.0
        return total * HASHES_PER_DIFF1 / max(elapsed, self.share_interval_s)

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

        # Zero shares: cut after enough expected-but-missing shares.
        silence = now - max(self._last_change, self._last_share)
        wait = max(
            ZERO_SHARE_EXPECTED * self.share_interval_s / self._zero_factor,
            min(self.share_interval_s, self.retarget_interval_s),
        )
        if silence >= wait:
            new = self._clamp(d / ZERO_SHARE_STEP)
            if new == d:
                return None
            factor = self._zero_factor * ZERO_SHARE_STEP
            self._apply(new, now)
            self._zero_factor = factor
            return new

        # Normal retarget: due on the interval, or early under a share flood.
        since_check = now - self._last_check
        on_target = since_check / self.share_interval_s
        flood = self._shares_since_check >= max(FLOOD_MIN_SHARES, FLOOD_FACTOR * on_target)
        if since_check < self.retarget_interval_s and not flood:
            return None
        self._last_check = now
        self._shares_since_check = 0
        n, total, elapsed = self._window(now)
        if n == 0 or total <= 0:
            return None
        # Observed shares (in units of the current difficulty) against the
        # number expected if the miner were on target; the square-root
        # transform makes Poisson noise roughly N(0, 1) on both sides.
        observed = total / d
        expected = max(elapsed, self.share_interval_s) / self.share_interval_s
        z = 2.0 * (math.sqrt(observed) - math.sqrt(expected))
        log_ratio = math.log(observed / expected)
        if abs(z) <= Z or abs(log_ratio) <= math.log(HYSTERESIS):
            self._pending = 0
            return None
        direction = 1 if z > 0 else -1
        if abs(z) <= 2.0 * Z and self._pending != direction:
            # A moderate deviation must persist over two checks.
            self._pending = direction
            return None
        # Step halfway between the point estimate and the edge of the
        # confidence interval nearest the current difficulty: a barely
        # significant deviation moves a little, an overwhelming one nearly
        # all the way.
        root = math.sqrt(observed) - direction * Z / 2.0
        log_step = SHRINK * math.log(root * root / expected) + (1.0 - SHRINK) * log_ratio
        if abs(log_step) < math.log(MIN_STEP):
            return None
        step = math.exp(max(-math.log(MAX_STEP), min(math.log(MAX_STEP), log_step)))
        new = self._clamp(d * step)
        if new == d:
            return None
        self._apply(new, now)
        return new
