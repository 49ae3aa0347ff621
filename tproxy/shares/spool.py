"""The on-disk spool: append-only, checksummed segments of batches not yet in ClickHouse.

Owns the spool directory. Not thread-safe by design: the share log calls a
``Spool`` from one dedicated thread only.

Layout of ``spool_dir``::

    000000000001.seg      segment: 8-byte file magic, then frames
    000000000001.ack      replay progress of that segment (byte offset, text)
    quarantine/           segments that failed a check, moved aside, never deleted

Frame (little endian)::

    magic    4s  b"TPSF"
    version  u8  1
    kind     u8  0 = shares, 1 = pool verdicts
    tok_len  u16 length of the deduplication token
    nrows    u32
    body_len u32 length of the row payload
    first_ms u64 wall-clock ms when the batch's oldest record was queued
    token    tok_len bytes (UTF-8)
    body     body_len bytes: marshal of the tuple of row tuples
    crc      u32 CRC-32 of everything above from ``magic``

A frame is written with one ``write`` (and ``fsync`` when configured), so a
killed process leaves either whole frames or a torn last frame. At open, a
torn tail of the newest segment is cut off with a warning (that batch never
reached the disk completely, and so was never reported as spooled). Any
other damage (bad magic, bad CRC, a torn frame in an older segment) moves the
segment to ``quarantine/`` with an error log line; replay goes on with the
next segment. Frames before the damage that were already replayed are
recorded in the ``.ack`` file, frames after it stay in the quarantined file.

Replay reads frames in order. After each frame is in ClickHouse its end
offset is written to the ``.ack`` file; a fully replayed, closed segment is
deleted. Each frame keeps its batch's deduplication token, so a frame
replayed twice (crash between the insert and the ack) is dropped by
ClickHouse.
"""

from __future__ import annotations

import logging
import marshal
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tproxy.shares.spool")

FILE_MAGIC = b"TPSPOOL1"
FRAME_MAGIC = b"TPSF"
FRAME_VERSION = 1
_HDR = struct.Struct("<4sBBHIIQ")
_CRC = struct.Struct("<I")
MAX_BODY = 1 << 30

KIND_SHARES = 0
KIND_VERDICTS = 1


class SpoolCorrupt(Exception):
    """A segment failed a check; it has been (or must be) quarantined."""


@dataclass(frozen=True, slots=True)
class FrameRef:
    """Where one spooled batch sits, and what it is (without reading its rows)."""

    segment: int
    offset: int
    end: int
    kind: int
    nrows: int
    first_ms: int
    token: str


@dataclass(frozen=True, slots=True)
class SpoolOpenReport:
    frames: int
    rows: int
    truncated_bytes: int
    quarantined: tuple[str, ...]


def encode_frame(kind: int, token: str, first_ms: int, rows: tuple[tuple[object, ...], ...] | list[tuple[object, ...]]) -> bytes:
    body = marshal.dumps(tuple(rows), 4)
    tok = token.encode()
    head = _HDR.pack(FRAME_MAGIC, FRAME_VERSION, kind, len(tok), len(rows), len(body), first_ms)
    crc = zlib.crc32(body, zlib.crc32(tok, zlib.crc32(head)))
    return b"".join((head, tok, body, _CRC.pack(crc)))


class Spool:
    """Segments in one directory; see the module docstring for the format."""

    def __init__(self, directory: str | os.PathLike[str], *, segment_bytes: int = 64 << 20, fsync: bool = True) -> None:
        self.dir = Path(directory)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._pending: deque[FrameRef] = deque()
        self._fd: int | None = None
        self._active: int = 0  # segment number being appended to (0 = none)
        self._active_size = 0
        self._next_seg = 1
        self.pending_rows = 0
        self.pending_by_kind = [0, 0]
        self.pending_bytes = 0
        self.quarantined: list[str] = []

    # ------------------------------------------------------------------ paths

    def _seg_path(self, n: int) -> Path:
        return self.dir / f"{n:012d}.seg"

    def _ack_path(self, n: int) -> Path:
        return self.dir / f"{n:012d}.ack"

    @property
    def quarantine_dir(self) -> Path:
        return self.dir / "quarantine"

    # ------------------------------------------------------------------ open / scan

    def open(self) -> SpoolOpenReport:
        """Scan existing segments, cut a torn tail, quarantine damage, index pending frames."""
        self.dir.mkdir(parents=True, exist_ok=True)
        segs = sorted(int(p.stem) for p in self.dir.glob("*.seg") if p.stem.isdigit())
        truncated = 0
        quarantined: list[str] = []
        for i, n in enumerate(segs):
            newest = i == len(segs) - 1
            try:
                refs, good_end, size = self._scan(n)
            except SpoolCorrupt as e:
                quarantined.append(self._quarantine(n, str(e)))
                continue
            if good_end < size:
                if newest:
                    log.warning(
                        "spool segment %s: cutting a torn last frame (%d bytes) left by an interrupted write",
                        self._seg_path(n).name, size - good_end,
                    )
                    with open(self._seg_path(n), "r+b") as f:
                        f.truncate(good_end)
                    truncated += size - good_end
                else:
                    # Keep the whole frames before the damage pending; quarantine the file.
                    quarantined.append(self._quarantine(n, f"torn or damaged frame at offset {good_end}"))
                    continue
            if not refs:
                self._delete_segment(n)
                continue
            for r in refs:
                self._pending.append(r)
                self.pending_rows += r.nrows
                self.pending_by_kind[r.kind] += r.nrows
                self.pending_bytes += r.end - r.offset
        if segs:
            self._next_seg = segs[-1] + 1
        self.quarantined.extend(quarantined)
        return SpoolOpenReport(len(self._pending), self.pending_rows, truncated, tuple(quarantined))

    def _scan(self, n: int) -> tuple[list[FrameRef], int, int]:
        """Index one segment, verifying every CRC. Returns (frames not yet acked, end of
        the last good frame, file size). Raises SpoolCorrupt on a bad file header or
        a complete frame whose checksum fails."""
        path = self._seg_path(n)
        data = path.read_bytes()
        if len(data) < len(FILE_MAGIC):
            return [], len(data) if data == FILE_MAGIC[: len(data)] else 0, len(data)
        if data[: len(FILE_MAGIC)] != FILE_MAGIC:
            raise SpoolCorrupt("bad file magic")
        acked = self._read_ack(n)
        refs: list[FrameRef] = []
        off = len(FILE_MAGIC)
        while off < len(data):
            ref = self._parse_at(n, data, off)
            if ref is None:
                break  # torn: not enough bytes for a whole frame
            if ref.end > acked:
                refs.append(ref)
            off = ref.end
        return refs, off, len(data)

    def _parse_at(self, n: int, data: bytes | memoryview, off: int) -> FrameRef | None:
        if len(data) - off < _HDR.size:
            return None
        magic, ver, kind, tok_len, nrows, body_len, first_ms = _HDR.unpack_from(data, off)
        if magic != FRAME_MAGIC or ver != FRAME_VERSION or kind not in (KIND_SHARES, KIND_VERDICTS) or body_len > MAX_BODY:
            raise SpoolCorrupt(f"bad frame header at offset {off}")
        end = off + _HDR.size + tok_len + body_len + _CRC.size
        if end > len(data):
            return None
        crc_at = end - _CRC.size
        (crc,) = _CRC.unpack_from(data, crc_at)
        if zlib.crc32(memoryview(data)[off:crc_at]) != crc:
            raise SpoolCorrupt(f"checksum mismatch in frame at offset {off}")
        tok_at = off + _HDR.size
        token = bytes(data[tok_at : tok_at + tok_len]).decode()
        return FrameRef(n, off, end, kind, nrows, first_ms, token)

    def _read_ack(self, n: int) -> int:
        try:
            return int(self._ack_path(n).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _quarantine(self, n: int, reason: str) -> str:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        src = self._seg_path(n)
        dst = self.quarantine_dir / src.name
        k = 1
        while dst.exists():
            dst = self.quarantine_dir / f"{src.stem}.{k}.seg"
            k += 1
        os.replace(src, dst)
        ack = self._ack_path(n)
        if ack.exists():
            os.replace(ack, dst.with_suffix(".ack"))
        log.error("spool segment %s quarantined to %s: %s", src.name, dst, reason)
        return str(dst)

    def _delete_segment(self, n: int) -> None:
        for p in (self._seg_path(n), self._ack_path(n)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------ append

    def append(self, kind: int, token: str, first_ms: int, rows: tuple[tuple[object, ...], ...] | list[tuple[object, ...]]) -> FrameRef:
        frame = encode_frame(kind, token, first_ms, rows)
        if self._fd is None or (self._active_size + len(frame) > self.segment_bytes and self._active_size > len(FILE_MAGIC)):
            self._rotate()
        assert self._fd is not None
        off = self._active_size
        # One write per frame: a killed process leaves whole frames or a torn tail.
        view = memoryview(frame)
        while view:
            k = os.write(self._fd, view)
            view = view[k:]
        if self.fsync:
            os.fsync(self._fd)
        self._active_size += len(frame)
        ref = FrameRef(self._active, off, off + len(frame), kind, len(rows), first_ms, token)
        self._pending.append(ref)
        self.pending_rows += ref.nrows
        self.pending_by_kind[ref.kind] += ref.nrows
        self.pending_bytes += len(frame)
        return ref

    def _rotate(self) -> None:
        self._close_active()
        n = self._next_seg
        self._next_seg += 1
        fd = os.open(self._seg_path(n), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.write(fd, FILE_MAGIC)
        if self.fsync:
            os.fsync(fd)
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self._fd, self._active, self._active_size = fd, n, len(FILE_MAGIC)

    def _close_active(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if not any(r.segment == self._active for r in self._pending):
                self._delete_segment(self._active)
            self._active = 0

    # ------------------------------------------------------------------ replay

    def head(self) -> FrameRef | None:
        return self._pending[0] if self._pending else None

    def read(self, ref: FrameRef) -> tuple[tuple[object, ...], ...]:
        """The rows of ``ref``; raises SpoolCorrupt (after quarantining the segment) on damage."""
        path = self._seg_path(ref.segment)
        try:
            with open(path, "rb") as f:
                f.seek(ref.offset)
                data = f.read(ref.end - ref.offset)
            parsed = self._parse_at(ref.segment, data, 0)
            if parsed is None or parsed.token != ref.token:
                raise SpoolCorrupt(f"frame at offset {ref.offset} changed on disk")
            body_at = _HDR.size + len(ref.token.encode())
            rows = marshal.loads(data[body_at : len(data) - _CRC.size])
            if not isinstance(rows, tuple) or len(rows) != ref.nrows:
                raise SpoolCorrupt(f"frame at offset {ref.offset}: row count mismatch")
            return rows
        except (OSError, SpoolCorrupt, ValueError, EOFError, TypeError) as e:
            self.drop_segment_to_quarantine(ref.segment, f"{type(e).__name__}: {e}")
            raise SpoolCorrupt(str(e)) from e

    def drop_segment_to_quarantine(self, n: int, reason: str) -> str | None:
        """Quarantine segment ``n`` and forget its pending frames."""
        if n == self._active:
            self._close_active_keep()
        keep = deque(r for r in self._pending if r.segment != n)
        for r in self._pending:
            if r.segment == n:
                self.pending_rows -= r.nrows
                self.pending_by_kind[r.kind] -= r.nrows
                self.pending_bytes -= r.end - r.offset
        self._pending = keep
        if not self._seg_path(n).exists():
            return None
        dst = self._quarantine(n, reason)
        self.quarantined.append(dst)
        return dst

    def _close_active_keep(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._active = 0

    def ack(self, ref: FrameRef) -> None:
        """``ref`` is in ClickHouse: advance the segment's ack, delete the segment when done."""
        head = self._pending[0] if self._pending else None
        if head != ref:
            raise ValueError("ack out of order")
        self._pending.popleft()
        self.pending_rows -= ref.nrows
        self.pending_by_kind[ref.kind] -= ref.nrows
        self.pending_bytes -= ref.end - ref.offset
        more_in_segment = bool(self._pending) and self._pending[0].segment == ref.segment
        if not more_in_segment and ref.segment != self._active:
            self._delete_segment(ref.segment)
            return
        if not more_in_segment and ref.segment == self._active:
            # Everything written so far is replayed: start a fresh segment next time.
            self._close_active()
            return
        tmp = self._ack_path(ref.segment).with_suffix(".ack.tmp")
        tmp.write_text(str(ref.end))
        os.replace(tmp, self._ack_path(ref.segment))

    def quarantine_frame(self, ref: FrameRef, reason: str) -> str:
        """A batch the database keeps rejecting as bad data: copy that one frame to
        ``quarantine/`` (as a one-frame segment) and ack it, so replay goes on."""
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        with open(self._seg_path(ref.segment), "rb") as f:
            f.seek(ref.offset)
            frame = f.read(ref.end - ref.offset)
        dst = self.quarantine_dir / f"rejected-{ref.segment:012d}-{ref.offset}.seg"
        with open(dst, "wb") as out:
            out.write(FILE_MAGIC + frame)
            out.flush()
            if self.fsync:
                os.fsync(out.fileno())
        self.quarantined.append(str(dst))
        log.error("spool batch %s (%d rows) quarantined to %s: %s", ref.token, ref.nrows, dst, reason)
        self.ack(ref)
        return str(dst)

    @property
    def pending_frames(self) -> int:
        return len(self._pending)

    @property
    def head_first_ms(self) -> int | None:
        return self._pending[0].first_ms if self._pending else None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if not any(r.segment == self._active for r in self._pending):
                self._delete_segment(self._active)
            self._active = 0
