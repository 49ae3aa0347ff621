"""RateLimitedLog with an injected clock: first line at once, then one count per interval."""

from __future__ import annotations

import logging

import pytest

from tproxy.shares.ratelog import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.ratelog"]


def test_first_then_summary_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("test.ratelog"), 10.0, clock=clock)
    with caplog.at_level(logging.ERROR, logger="test.ratelog"):
        assert rl.log(logging.ERROR, "open %s failed: %s", "a.seg", "EMFILE")
        for _ in range(500):
            clock.t += 0.01
            assert not rl.log(logging.ERROR, "open %s failed: %s", "a.seg", "EMFILE")
        assert lines(caplog) == ["open a.seg failed: EMFILE"]
        clock.t += 10.0
        assert rl.log(logging.ERROR, "open %s failed: %s", "a.seg", "EMFILE")
        assert lines(caplog)[1] == "open a.seg failed: EMFILE (repeated 501 times in the last 15s)"
        # A different message is not held back by the first one.
        assert rl.log(logging.ERROR, "open %s failed: %s", "b.seg", "ENOSPC")
        assert len(lines(caplog)) == 3


def test_tick_flushes_a_pending_count_and_forgets_quiet_errors(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("test.ratelog"), 10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        rl.log(logging.WARNING, "disk full")
        rl.log(logging.WARNING, "disk full")
        rl.log(logging.WARNING, "disk full")
        clock.t += 5
        rl.tick()
        assert lines(caplog) == ["disk full"]
        clock.t += 5
        rl.tick()
        assert lines(caplog) == ["disk full", "disk full (repeated 2 times in the last 10s)"]
        clock.t += 10
        rl.tick()  # nothing new for a whole interval: no line, and the error is forgotten
        assert len(lines(caplog)) == 2
        assert rl.log(logging.WARNING, "disk full")  # so it is logged at once when it returns
        assert lines(caplog)[-1] == "disk full"


def test_explicit_key_groups_varying_text(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("test.ratelog"), 10.0, clock=clock)
    with caplog.at_level(logging.ERROR, logger="test.ratelog"):
        for k in range(5):
            rl.log(logging.ERROR, "batch %d rejected", k, key="rejected")
        assert lines(caplog) == ["batch 0 rejected"]
        clock.t += 10
        rl.tick()
        assert lines(caplog)[-1] == "batch 4 rejected (repeated 4 times in the last 10s)"


def test_key_table_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("test.ratelog"), 10.0, clock=clock, max_keys=4)
    with caplog.at_level(logging.ERROR, logger="test.ratelog"):
        for k in range(100):
            rl.log(logging.ERROR, "error %d", k)
    assert len(rl._entries) == 4 and len(lines(caplog)) == 100
