"""Spool: append/read/ack in order, resume after reopen, torn tails cut, damage quarantined."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tproxy.shares.spool import KIND_SHARES, KIND_VERDICTS, Spool, SpoolCorrupt


def rows(k: int, n: int = 3) -> list[tuple[object, ...]]:
    return [(k, i, f"w{i}", 1.5 * i, True) for i in range(n)]


def drain(sp: Spool) -> list[str]:
    out = []
    while (ref := sp.head()) is not None:
        got = sp.read(ref)
        assert list(got) == rows(int(ref.token.split(":")[1]), ref.nrows)
        out.append(ref.token)
        sp.ack(ref)
    return out


def test_roundtrip_in_order_across_segments(tmp_path: Path) -> None:
    sp = Spool(tmp_path, segment_bytes=1 << 16, fsync=False)
    sp.open()
    for k in range(200):
        sp.append(KIND_SHARES if k % 3 else KIND_VERDICTS, f"t:{k}", 1000 + k, rows(k, 20))
    assert len(list(tmp_path.glob("*.seg"))) > 1  # rotated
    assert sp.pending_frames == 200 and sp.pending_rows == 4000
    assert sp.head_first_ms == 1000
    assert drain(sp) == [f"t:{k}" for k in range(200)]
    assert sp.pending_rows == 0 and sp.pending_bytes == 0
    sp.close()
    assert list(tmp_path.glob("*.seg")) == []


def test_reopen_resumes_after_last_ack(tmp_path: Path) -> None:
    sp = Spool(tmp_path, fsync=False)
    sp.open()
    for k in range(10):
        sp.append(KIND_SHARES, f"t:{k}", k, rows(k))
    for _ in range(4):
        ref = sp.head()
        assert ref is not None
        sp.read(ref)
        sp.ack(ref)
    sp.close()
    sp2 = Spool(tmp_path, fsync=False)
    rep = sp2.open()
    assert rep.frames == 6 and rep.rows == 18
    assert drain(sp2) == [f"t:{k}" for k in range(4, 10)]


def test_torn_tail_is_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sp = Spool(tmp_path, fsync=False)
    sp.open()
    for k in range(5):
        sp.append(KIND_SHARES, f"t:{k}", k, rows(k))
    seg = next(tmp_path.glob("*.seg"))
    # A killed process: half of a sixth frame reached the file.
    from tproxy.shares.spool import encode_frame

    frame = encode_frame(KIND_SHARES, "t:5", 5, rows(5))
    with open(seg, "ab") as f:
        f.write(frame[: len(frame) // 2])
    sp2 = Spool(tmp_path, fsync=False)
    with caplog.at_level(logging.WARNING):
        rep = sp2.open()
    assert rep.frames == 5 and rep.truncated_bytes == len(frame) // 2
    assert "torn last frame" in caplog.text
    assert drain(sp2) == [f"t:{k}" for k in range(5)]


def test_corrupt_segment_is_quarantined_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sp = Spool(tmp_path, segment_bytes=1 << 16, fsync=False)
    sp.open()
    for k in range(600):
        sp.append(KIND_SHARES, f"t:{k}", k, rows(k, 10))
    sp.close()
    segs = sorted(tmp_path.glob("*.seg"))
    assert len(segs) >= 3
    bad = segs[1]
    data = bytearray(bad.read_bytes())
    data[200] ^= 0xFF  # flip a bit inside the first frame's rows
    bad.write_bytes(bytes(data))
    sp2 = Spool(tmp_path, segment_bytes=1 << 16, fsync=False)
    with caplog.at_level(logging.ERROR):
        rep = sp2.open()
    assert len(rep.quarantined) == 1 and "quarantined" in caplog.text and bad.name in caplog.text
    assert (tmp_path / "quarantine" / bad.name).exists()
    got = drain(sp2)
    assert got[0] == "t:0" and got[-1] == "t:599" and 0 < len(got) < 600


def test_damage_found_at_read_quarantines(tmp_path: Path) -> None:
    sp = Spool(tmp_path, fsync=False)
    sp.open()
    for k in range(3):
        sp.append(KIND_SHARES, f"t:{k}", k, rows(k))
    sp.close()
    sp2 = Spool(tmp_path, fsync=False)
    sp2.open()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[-10] ^= 0x01
    seg.write_bytes(bytes(data))
    ref = sp2.head()
    assert ref is not None
    sp2.read(ref)  # first frame is intact
    sp2.ack(ref)
    ref = sp2.head()
    assert ref is not None
    sp2.read(ref)
    sp2.ack(ref)
    ref = sp2.head()
    assert ref is not None
    with pytest.raises(SpoolCorrupt):
        sp2.read(ref)
    assert sp2.head() is None and sp2.pending_rows == 0
    assert len(list((tmp_path / "quarantine").glob("*.seg"))) == 1


def test_read_without_quarantine_changes_nothing(tmp_path: Path) -> None:
    # Replay's read ahead of the frame after the head: damage is reported, not acted on.
    sp = Spool(tmp_path, fsync=False)
    sp.open()
    for k in range(2):
        sp.append(KIND_SHARES, f"t:{k}", k, rows(k))
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[-10] ^= 0x01
    seg.write_bytes(bytes(data))
    second = sp.second()
    assert second is not None and second.token == "t:1"
    with pytest.raises(SpoolCorrupt):
        sp.read(second, quarantine=False)
    assert sp.pending_rows == 6 and seg.exists() and not (tmp_path / "quarantine").exists()
    assert drain_until_damage(sp) == ["t:0"]
    assert sp.pending_rows == 0 and len(list((tmp_path / "quarantine").glob("*.seg"))) == 1


def drain_until_damage(sp: Spool) -> list[str]:
    out = []
    while (ref := sp.head()) is not None:
        try:
            sp.read(ref)
        except SpoolCorrupt:
            continue  # quarantined: its frames are gone from the pending list
        out.append(ref.token)
        sp.ack(ref)
    return out


def test_quarantine_single_frame(tmp_path: Path) -> None:
    sp = Spool(tmp_path, fsync=False)
    sp.open()
    for k in range(3):
        sp.append(KIND_SHARES, f"t:{k}", k, rows(k))
    ref = sp.head()
    assert ref is not None
    dst = sp.quarantine_frame(ref, "test")
    assert Path(dst).exists()
    assert drain(sp) == ["t:1", "t:2"]


def test_torn_tail_of_an_older_segment_is_cut_not_quarantined(tmp_path: Path) -> None:
    """An interrupted write in a segment that is no longer the newest (a full disk whose
    cut-back failed) is not corruption: its whole frames are replayed, nothing is quarantined."""
    from tproxy.shares.spool import encode_frame

    sp = Spool(tmp_path, segment_bytes=1 << 16, fsync=False)
    sp.open()
    for k in range(600):
        sp.append(KIND_SHARES, f"t:{k}", k, rows(k, 10))
    sp.close()
    segs = sorted(tmp_path.glob("*.seg"))
    assert len(segs) >= 3
    frame = encode_frame(KIND_SHARES, "t:torn", 0, rows(9999, 10))
    with open(segs[0], "ab") as f:
        f.write(frame[: len(frame) // 3])
    sp2 = Spool(tmp_path, segment_bytes=1 << 16, fsync=False)
    rep = sp2.open()
    assert rep.quarantined == () and rep.truncated_bytes == len(frame) // 3
    assert drain(sp2) == [f"t:{k}" for k in range(600)]


def test_unreadable_segment_is_retry_later_not_quarantined(tmp_path: Path) -> None:
    """An OSError while reading a frame (here EISDIR, standing in for EMFILE/EACCES, which
    root cannot provoke with permissions) leaves the spool as it was."""
    from tproxy.shares.spool import SpoolUnavailable

    sp = Spool(tmp_path, fsync=False)
    sp.open()
    for k in range(3):
        sp.append(KIND_SHARES, f"t:{k}", k, rows(k))
    sp.close()
    sp2 = Spool(tmp_path, fsync=False)
    sp2.open()
    seg = next(tmp_path.glob("*.seg"))
    moved = tmp_path / "aside"
    seg.rename(moved)
    seg.mkdir()  # open() works, read() fails with EISDIR
    ref = sp2.head()
    assert ref is not None
    with pytest.raises(SpoolUnavailable):
        sp2.read(ref)
    assert sp2.pending_frames == 3 and not (tmp_path / "quarantine").exists()
    seg.rmdir()
    moved.rename(seg)
    assert drain(sp2) == ["t:0", "t:1", "t:2"]


def test_stale_ack_tmp_removed_at_open(tmp_path: Path) -> None:
    sp = Spool(tmp_path, fsync=False)
    sp.open()
    for k in range(3):
        sp.append(KIND_SHARES, f"t:{k}", k, rows(k))
    sp.close()
    stale = tmp_path / "000000000001.ack.tmp"
    stale.write_bytes(b"")  # what a write that died on a full disk left behind
    sp2 = Spool(tmp_path, fsync=False)
    assert sp2.open().frames == 3
    assert not stale.exists()
