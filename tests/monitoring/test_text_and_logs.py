"""clean_text and url_segment (the documented text rule), and the rate-limited log helper on a fake clock."""

from __future__ import annotations

import logging
from urllib.parse import unquote

import pytest

from monitoring.logs import LogLimiter, RateLimitFilter, log_limited
from monitoring.text import clean_text, url_segment


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("farm.rig1", "farm.rig1"),
        ("\ud800", "\ufffd"),
        ("a\ud800b\udfffc", "a\ufffdb\ufffdc"),
        ("\ud83d\ude00", "\ufffd\ufffd"),  # two lone surrogates in a str, not a pair
        ("nul\x00, ctl\x01\x1b[31m\x7f, nl\n, cr\r, tab\t", "nul\x00, ctl\x01\x1b[31m\x7f, nl\n, cr\r, tab\t"),
        ("🙂 ацкт ✓ \u2028", "🙂 ацкт ✓ \u2028"),
        ("", ""),
    ],
)
def test_clean_text_replaces_only_lone_surrogates(raw: str, clean: str) -> None:
    out = clean_text(raw)
    assert out == clean
    out.encode("utf-8")  # always encodable


def test_clean_text_keeps_the_object_when_valid() -> None:
    s = "x" * 10_000 + "é"
    assert clean_text(s) is s


@pytest.mark.parametrize(
    ("name", "segment"),
    [
        ("farm.rig1", "farm.rig1"),
        ("a/b c", "a%2Fb%20c"),
        ("100%", "100%25"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("...", "..."),
        ("\ud800", "%EF%BF%BD"),
        ("nl\n\x00", "nl%0A%00"),
    ],
)
def test_url_segment(name: str, segment: str) -> None:
    assert url_segment(name) == segment
    assert unquote(segment) == clean_text(name)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_log_limiter_drops_repeats_within_the_interval() -> None:
    clock = FakeClock()
    lim = LogLimiter(60.0, clock=clock)
    assert lim.check("a") == 0
    assert lim.check("a") is None
    assert lim.check("b") == 0  # another key is independent
    clock.t += 59.9
    assert lim.check("a") is None
    clock.t += 0.2
    assert lim.check("a") == 2  # written again, saying two were dropped
    assert lim.check("a") is None


def test_log_limiter_memory_is_bounded() -> None:
    clock = FakeClock()
    lim = LogLimiter(60.0, clock=clock, max_keys=3)
    for k in range(10):
        assert lim.check(k) == 0
    assert len(lim._state) == 3
    assert lim.check(9) is None  # the most recent keys are remembered


def test_log_limited_writes_first_and_counts_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    lim = LogLimiter(10.0, clock=clock)
    logger = logging.getLogger("test.monitoring.logs")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        results = [log_limited(logger, logging.WARNING, "k", "bad thing %d", i, limiter=lim) for i in range(100)]
        clock.t += 10.0
        assert log_limited(logger, logging.WARNING, "k", "bad thing %d", 100, limiter=lim)
    assert results.count(True) == 1 and results[0]
    assert [r.getMessage() for r in caplog.records] == ["bad thing 0", "bad thing 100 (99 similar messages suppressed)"]


def test_rate_limit_filter_keys_on_template_and_exception(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    logger = logging.getLogger("test.monitoring.filter")
    filt = RateLimitFilter(LogLimiter(60.0, clock=clock))
    logger.addFilter(filt)
    try:
        with caplog.at_level(logging.ERROR, logger=logger.name):
            for i in range(50):  # one template from 50 "addresses": one key
                try:
                    raise ValueError(i)
                except ValueError:
                    logger.exception("Error handling request from %s", f"10.0.0.{i}")
            try:
                raise KeyError("x")
            except KeyError:
                logger.exception("Error handling request from %s", "10.0.0.1")  # another exception type
            clock.t += 61.0
            logger.error("Error handling request from %s", "10.0.0.2")
            logger.error("Error handling request from %s", "10.0.0.3")
    finally:
        logger.removeFilter(filt)
    assert [r.getMessage() for r in caplog.records] == [
        "Error handling request from 10.0.0.0",
        "Error handling request from 10.0.0.1",
        "Error handling request from 10.0.0.2",
    ]
