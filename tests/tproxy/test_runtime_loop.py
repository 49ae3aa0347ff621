"""proxy.event_loop: asyncio's loop by default, uvloop on request (an optional extra)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from tproxy.config import ProxySettings
from tproxy.runtime import loop_factory


def test_the_default_is_asyncios_own_loop() -> None:
    assert ProxySettings().event_loop == "asyncio"
    assert loop_factory("asyncio") is None


def test_uvloop_is_used_when_asked_for() -> None:
    uvloop = pytest.importorskip("uvloop")
    factory = loop_factory("uvloop")
    assert factory is not None
    with asyncio.Runner(loop_factory=factory) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        assert runner.run(asyncio.sleep(0, "ran")) == "ran"


def test_other_loops_are_refused_by_the_config() -> None:
    with pytest.raises(ValidationError):
        ProxySettings(event_loop="trio")  # type: ignore[arg-type]
