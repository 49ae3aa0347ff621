"""A real headless browser for tests: Debian's ``chromium``, driven from its command line.

``chromium()`` finds the binary; when it is absent the calling test skips with
the reason locally, and fails in CI (``CI=true``), where ``.ci/run`` installs
it: a browser test must not vanish silently from CI.

``dump_dom`` and ``screenshot`` run chromium as an asyncio subprocess, so a
server running on the test's own event loop keeps answering the page's
fetches meanwhile. ``--virtual-time-budget`` lets the page's timers run for
that much virtual time; chromium holds virtual time while network fetches
are pending, so the page's first polls complete before the DOM is dumped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAMES = ("chromium", "chromium-browser")


def artifacts_dir() -> Path:
    """Where tests keep files for people to look at (``TEST_ARTIFACTS_DIR``, default
    ``test-artifacts/`` in the repository, git-ignored)."""
    d = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO / "test-artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def chromium() -> str:
    """The chromium binary; skips the test (fails it in CI) when there is none."""
    for name in NAMES:
        path = shutil.which(name)
        if path is not None:
            return path
    reason = "chromium not installed (apt-get install -y chromium; .ci/run does this)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}: a browser test must run in CI")
    pytest.skip(reason)


def _flags(user_data: str, width: int, height: int) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
        f"--user-data-dir={user_data}",
        f"--window-size={width},{height}",
    ]


async def _run(args: list[str], timeout: float) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out, err


async def dump_dom(url: str, *, budget_ms: int = 4000, width: int = 1400, height: int = 1000, timeout: float = 90.0) -> str:
    """The page's DOM (serialized HTML) after ``budget_ms`` of virtual time."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        args = [chromium(), *_flags(profile, width, height), f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
        rc, out, err = await _run(args, timeout)
    assert rc == 0, f"chromium --dump-dom exited {rc}: {err.decode(errors='replace')[-2000:]}"
    return out.decode("utf-8", errors="replace")


async def screenshot(
    url: str, path: Path, *, budget_ms: int = 4000, width: int = 1400, height: int = 1000, timeout: float = 90.0
) -> Path:
    """Save a PNG of the page after ``budget_ms`` of virtual time; returns ``path``."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        args = [
            chromium(),
            *_flags(profile, width, height),
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={path}",
            url,
        ]
        rc, _out, err = await _run(args, timeout)
    assert rc == 0 and path.is_file(), f"chromium --screenshot exited {rc}: {err.decode(errors='replace')[-2000:]}"
    return path
