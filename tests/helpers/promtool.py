"""Prometheus' own linter, ``promtool check metrics``, for exposition text in tests.

promtool comes with the ``prometheus`` package (Debian/Ubuntu: ``apt-get install
prometheus``; .ci/run installs it). Tests that need it are skipped, with that
reason, when it is not on PATH on a developer machine; in CI (``CI`` set) a
missing promtool fails them instead of skipping silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

PROMTOOL = shutil.which("promtool")

requires_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"), reason="promtool not on PATH (apt-get install prometheus provides /usr/bin/promtool)"
)


def check_metrics(text: str) -> tuple[int, str]:
    """(exit status, output) of ``promtool check metrics`` on ``text``."""
    if PROMTOOL is None:
        pytest.fail("promtool not found although CI is set (.ci/run installs it: apt-get install prometheus)")
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=120, check=False
    )
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()
