"""Test-wide fixtures: the shared test vectors' directory (see tests.helpers.vectors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.vectors import vectors_dir


@pytest.fixture(scope="session")
def vectors() -> Path:
    return vectors_dir()
