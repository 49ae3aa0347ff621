"""CostLimiter: the token bucket behind the API's admission control."""

from __future__ import annotations

import pytest

from monitoring.limits import CostLimiter, response_cost


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_response_cost() -> None:
    assert response_cost(0) == 1.0
    assert response_cost(65_536) == 2.0
    assert response_cost(2_000_000) == pytest.approx(31.5, abs=0.1)


def test_burst_then_waits_in_order_then_refuses() -> None:
    clock = Clock()
    lim = CostLimiter(rate=10.0, burst=3.0, max_wait_s=0.5, clock=clock)
    assert [lim.reserve(1.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    waits = [lim.reserve(1.0) for _ in range(5)]
    assert waits[:5] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert lim.reserve(1.0) is None  # would wait 0.6 s > max_wait_s
    assert (lim.admitted, lim.refused) == (8, 1)
    clock.t += 10.0  # refilled, capped at the burst
    assert [lim.reserve(1.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.reserve(1.0) == pytest.approx(0.1)


def test_cost_above_burst_is_charged_as_burst() -> None:
    lim = CostLimiter(rate=10.0, burst=5.0, max_wait_s=1.0, clock=Clock())
    assert lim.reserve(1000.0) == 0.0
    assert lim.reserve(5.0) == pytest.approx(0.5)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        CostLimiter(rate=0.0, burst=1.0)
    with pytest.raises(ValueError):
        CostLimiter(rate=1.0, burst=0.5)


async def test_acquire_waits_and_refuses() -> None:
    lim = CostLimiter(rate=1000.0, burst=1.0, max_wait_s=0.01)
    assert await lim.acquire(1.0)
    assert await lim.acquire(1.0)  # waits ~1 ms
    slow = CostLimiter(rate=10.0, burst=1.0, max_wait_s=0.01)
    assert await slow.acquire(1.0)
    assert not await slow.acquire(1.0)  # would wait 0.1 s
