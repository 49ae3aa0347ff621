"""Prometheus' own linter, ``promtool check metrics``, for exposition text in tests.

promtool comes with the ``prometheus`` package (Debian/Ubuntu: ``apt-get install
prometheus``); tests that need it are skipped, with that reason, when it is
not on PATH.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

PROMTOOL = shutil.which("promtool")

requires_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (apt-get install prometheus provides /usr/bin/promtool)"
)


def check_metrics(text: str) -> tuple[int, str]:
    """(exit status, output) of ``promtool check metrics`` on ``text``."""
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=120, check=False
    )
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()
