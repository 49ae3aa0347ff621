"""FdReserve: held descriptors are handed back when the process is out of them, and a
closed file's slot goes back to the reserve instead of the process."""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from tproxy.shares.fdreserve import FdReserve


@pytest.fixture
def exhausted() -> Iterator[list[int]]:
    """Use up every descriptor under a lowered soft limit; restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hog: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
    try:
        yield hog
    finally:
        for fd in hog:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def fill(hog: list[int]) -> None:
    while True:
        try:
            hog.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as e:
            assert e.errno == errno.EMFILE
            return


def test_open_and_close_keep_working_out_of_descriptors(tmp_path: Path, exhausted: list[int]) -> None:
    res = FdReserve(3)
    assert res.held == 3
    fill(exhausted)
    with pytest.raises(OSError):
        os.open(tmp_path / "plain", os.O_WRONLY | os.O_CREAT)
    for k in range(50):  # many more opens than the reserve holds: each slot comes back
        fd = res.open(tmp_path / f"f{k}", os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"x")
        res.close(fd)
        assert res.held == 3
    # Two at once: the reserve runs short, then refills from the closed slots.
    a = res.open(tmp_path / "a", os.O_WRONLY | os.O_CREAT)
    b = res.open(tmp_path / "b", os.O_WRONLY | os.O_CREAT)
    assert res.held == 1
    res.close(a)
    res.close(b)
    assert res.held == 3
    fd = res.open(tmp_path / "f49", os.O_RDONLY)
    assert os.read(fd, 10) == b"x"
    res.close(fd)
    res.close_all()
    assert res.held == 0


def test_no_reserve_raises_emfile(tmp_path: Path, exhausted: list[int]) -> None:
    res = FdReserve(0)
    fill(exhausted)
    with pytest.raises(OSError) as e:
        res.open(tmp_path / "x", os.O_WRONLY | os.O_CREAT)
    assert e.value.errno == errno.EMFILE
