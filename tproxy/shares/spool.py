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
torn tail (a last frame running past the end of the file) is cut off with a
warning (that batch never reached the disk completely, and so was never
reported as spooled). Proven damage (bad magic, a bad frame header, a CRC
mismatch) moves the segment to ``quarantine/`` with an error log line;
replay goes on with the next segment. Frames before the damage that were already replayed are
recorded in the ``.ack`` file, frames after it stay in the quarantined file.

Replay reads frames in order (the share log reads the frame after the head
ahead with ``read(ref, quarantine=False)``: damage is then reported, not acted
on, until that frame is the head). After each frame is in ClickHouse its end
offset is written to the ``.ack`` file (``.ack.tmp`` then rename; a failed
write removes the tmp file, and stale ones are removed at open); a fully
replayed, closed segment is deleted. Each frame keeps its batch's
deduplication token, so a frame replayed twice (crash between the insert and
the ack, or an ack file that could not be written) is dropped by ClickHouse.

Errors: only proven corruption (bad magic, CRC or format mismatch) moves a
segment to quarantine. An ``OSError`` (EMFILE, ENFILE, ENOSPC, EACCES...) is
never taken as corruption: ``read`` raises ``SpoolUnavailable`` and the
caller retries later; a failed ``append`` cuts what it wrote back off (so
the segment holds whole frames only) and raises; a failed ack-file write is
logged by the caller's counters and retried with the next ack. Every file is
opened through an ``FdReserve`` when one is given, so a process out of
descriptors can still open its spool files.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tproxy.shares.fdreserve import FdReserve

log = logging.getLogger("tproxy.shares.spool")

FILE_MAGIC = b"TPSPOOL1"
FRAME_MAGIC = b"TPSF"
FRAME_VERSION = 1
_HDR = struct.Struct("<4sBBHIIQ")
_CRC = struct.Struct("<I")
MAX_BODY = 1 << 30

KIND_SHARES = 0
KIND_VERDICTS = 1
KIND_EVENTS = 2  # worker and upstream events (issue 13)
KINDS = (KIND_SHARES, KIND_VERDICTS, KIND_EVENTS)


class SpoolCorrupt(Exception):
    """A segment failed a check; it has been (or must be) quarantined."""


class SpoolUnavailable(OSError):
    """A spool file could not be opened or read right now (EMFILE, EACCES...): retry later.

    Nothing was quarantined; the spool's state is unchanged."""


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
    payload: Any = tuple(rows)  # rows hold plain values only (marshal's own type is narrower than object)
    body = marshal.dumps(payload, 4)
    tok = token.encode()
    head = _HDR.pack(FRAME_MAGIC, FRAME_VERSION, kind, len(tok), len(rows), len(body), first_ms)
    crc = zlib.crc32(body, zlib.crc32(tok, zlib.crc32(head)))
    return b"".join((head, tok, body, _CRC.pack(crc)))


class Spool:
    """Segments in one directory; see the module docstring for the format."""

    def __init__(self, directory: str | os.PathLike[str], *, segment_bytes: int = 64 << 20, fsync: bool = True,
                 reserve: FdReserve | None = None) -> None:
        self.dir = Path(directory)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.reserve = reserve or FdReserve(0)
        self._pending: deque[FrameRef] = deque()
        self._fd: int | None = None
        self._active: int = 0  # segment number being appended to (0 = none)
        self._active_size = 0
        self._next_seg = 1
        self.pending_rows = 0
        self.pending_by_kind = [0] * len(KINDS)
        self.pending_bytes = 0
        self.quarantined: list[str] = []
        self.quarantined_rows = [0] * len(KINDS)  # rows of indexed frames moved to quarantine, per kind
        self.ack_failures = 0  # ack files that could not be written (replay is still exact: tokens)

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
        """Scan existing segments, cut a torn tail, quarantine damage, index pending frames.

        An OSError (a file that cannot be opened now) is raised with nothing
        quarantined; calling ``open`` again starts the scan over."""
        self._close_active_keep()  # a retried open starts over
        self._pending.clear()
        self.pending_rows, self.pending_by_kind, self.pending_bytes = 0, [0] * len(KINDS), 0
        self.dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.dir.glob("*.ack.tmp"):  # left by a write that died half-way
            with contextlib.suppress(OSError):
                tmp.unlink()
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
                # A last frame that runs past the end of the file is an interrupted write
                # (a kill, or a full disk whose cut-back failed), not damage: the frames
                # before it passed their CRC and stay pending; the torn bytes were never
                # reported as spooled. Any segment, not only the newest.
                log.warning(
                    "spool segment %s: cutting a torn last frame (%d bytes) left by an interrupted write%s",
                    self._seg_path(n).name, size - good_end, "" if newest else " (older segment)",
                )
                os.truncate(self._seg_path(n), good_end)
                truncated += size - good_end
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
        data = self.read_file(self._seg_path(n))
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
        if magic != FRAME_MAGIC or ver != FRAME_VERSION or kind not in KINDS or body_len > MAX_BODY:
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
            return int(self.read_file(self._ack_path(n)).decode().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    # ------------------------------------------------------------------ file access (through the reserve)

    def read_file(self, path: Path, offset: int = 0, size: int = -1) -> bytes:
        fd = self.reserve.open(path, os.O_RDONLY)
        try:
            if size < 0:
                size = os.fstat(fd).st_size - offset
            chunks, got = [], 0
            while got < size:
                b = os.pread(fd, size - got, offset + got)
                if not b:
                    break
                chunks.append(b)
                got += len(b)
            return b"".join(chunks)
        finally:
            self.reserve.close(fd)

    def _write_file(self, path: Path, data: bytes) -> None:
        """Create ``path`` holding ``data`` (fsynced when configured); on failure nothing is left."""
        fd = self.reserve.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            _write_all(fd, data)
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            self.reserve.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self.reserve.close(fd)

    def _fsync_dir(self) -> None:
        dfd = self.reserve.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            self.reserve.close(dfd)

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
        with contextlib.suppress(OSError):
            self._fsync_dir()
        log.error("spool segment %s quarantined to %s: %s", src.name, dst, reason)
        return str(dst)

    def _delete_segment(self, n: int) -> None:
        for p in (self._seg_path(n), self._ack_path(n)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:  # replayed already: a leftover only costs disk until the next open
                log.warning("spool: cannot delete %s: %s", p, e)

    # ------------------------------------------------------------------ append

    def append(self, kind: int, token: str, first_ms: int, rows: tuple[tuple[object, ...], ...] | list[tuple[object, ...]]) -> FrameRef:
        """Write one frame; on any OSError the segment is cut back to its last whole frame
        (the batch is not in the spool) and the error is raised."""
        frame = encode_frame(kind, token, first_ms, rows)
        if self._fd is None or (self._active_size + len(frame) > self.segment_bytes and self._active_size > len(FILE_MAGIC)):
            self._rotate()
        assert self._fd is not None
        off = self._active_size
        try:
            # One write per frame: a killed process leaves whole frames or a torn tail.
            _write_all(self._fd, frame)
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            self._cut_back()
            raise
        self._active_size += len(frame)
        ref = FrameRef(self._active, off, off + len(frame), kind, len(rows), first_ms, token)
        self._pending.append(ref)
        self.pending_rows += ref.nrows
        self.pending_by_kind[ref.kind] += ref.nrows
        self.pending_bytes += len(frame)
        return ref

    def _cut_back(self) -> None:
        """A frame write failed half-way (ENOSPC): drop its bytes so the segment ends on a
        whole frame. If even that fails, stop appending to this segment: its torn tail is
        then cut at the next open, and its frames up to the tear are replayed."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._active_size)
        except OSError as e:
            log.error("spool segment %s: cannot cut a failed write back (%s); starting a new segment",
                      self._seg_path(self._active).name, e)
            self._close_active_keep()

    def _rotate(self) -> None:
        self._close_active()
        n = self._next_seg
        path = self._seg_path(n)
        try:
            fd = self.reserve.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        except FileExistsError:
            self._next_seg += 1  # a stray file holds that number: the next try takes the next one
            raise
        try:
            _write_all(fd, FILE_MAGIC)
            if self.fsync:
                os.fsync(fd)
                self._fsync_dir()
        except BaseException:
            # Disk full: leave no empty segment and no open descriptor behind; the next
            # append tries the same number again.
            self.reserve.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._next_seg += 1
        self._fd, self._active, self._active_size = fd, n, len(FILE_MAGIC)

    def _close_active(self) -> None:
        if self._fd is not None:
            self.reserve.close(self._fd)
            self._fd = None
            if not any(r.segment == self._active for r in self._pending):
                self._delete_segment(self._active)
            self._active = 0

    # ------------------------------------------------------------------ replay

    def head(self) -> FrameRef | None:
        return self._pending[0] if self._pending else None

    def second(self) -> FrameRef | None:
        """The frame replay takes after the head (read ahead while the head is inserted)."""
        return self._pending[1] if len(self._pending) > 1 else None

    def read(self, ref: FrameRef, *, quarantine: bool = True) -> tuple[tuple[object, ...], ...]:
        """The rows of ``ref``. Raises SpoolUnavailable when the file cannot be read now
        (nothing changes), SpoolCorrupt on proven damage: after quarantining the segment,
        or with nothing changed when ``quarantine`` is False (a read ahead leaves that
        to the read that finds the frame at the head)."""
        try:
            data = self.read_file(self._seg_path(ref.segment), ref.offset, ref.end - ref.offset)
        except OSError as e:
            raise SpoolUnavailable(e.errno, f"cannot read spool segment {ref.segment}: {e.strerror}") from e
        try:
            if len(data) != ref.end - ref.offset:
                raise SpoolCorrupt(f"frame at offset {ref.offset} is shorter on disk than when written")
            parsed = self._parse_at(ref.segment, data, 0)
            if parsed is None or parsed.token != ref.token:
                raise SpoolCorrupt(f"frame at offset {ref.offset} changed on disk")
            body_at = _HDR.size + len(ref.token.encode())
            rows = marshal.loads(data[body_at : len(data) - _CRC.size])
            if not isinstance(rows, tuple) or len(rows) != ref.nrows:
                raise SpoolCorrupt(f"frame at offset {ref.offset}: row count mismatch")
            return rows
        except (SpoolCorrupt, ValueError, EOFError, TypeError) as e:
            if quarantine:
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
                self.quarantined_rows[r.kind] += r.nrows
        self._pending = keep
        if not self._seg_path(n).exists():
            return None
        dst = self._quarantine(n, reason)
        self.quarantined.append(dst)
        return dst

    def _close_active_keep(self) -> None:
        if self._fd is not None:
            self.reserve.close(self._fd)
            self._fd = None
            self._active = 0

    def ack(self, ref: FrameRef) -> None:
        """``ref`` is in ClickHouse: advance the segment's ack, delete the segment when done.

        Never raises for a file that cannot be written: the in-memory state moves on, the
        ack file keeps its older offset (``ack_failures`` counts it), and a restart
        replays those frames again, which ClickHouse drops by their tokens."""
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
        try:
            self._write_file(tmp, str(ref.end).encode())
            os.replace(tmp, self._ack_path(ref.segment))
        except OSError as e:
            self.ack_failures += 1
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.debug("spool: ack of segment %d not written: %s", ref.segment, e)

    def quarantine_frame(self, ref: FrameRef, reason: str) -> str:
        """A batch the database keeps rejecting as bad data: copy that one frame to
        ``quarantine/`` (as a one-frame segment) and ack it, so replay goes on."""
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        frame = self.read_file(self._seg_path(ref.segment), ref.offset, ref.end - ref.offset)
        dst = self.quarantine_dir / f"rejected-{ref.segment:012d}-{ref.offset}.seg"
        self._write_file(dst, FILE_MAGIC + frame)
        self.quarantined.append(str(dst))
        self.quarantined_rows[ref.kind] += ref.nrows
        log.error("spool batch %s (%d rows) quarantined to %s: %s", ref.token, ref.nrows, dst, reason)
        self.ack(ref)
        return str(dst)

    def quarantine_rows(self, kind: int, token: str, first_ms: int, rows: list[tuple[object, ...]], reason: str) -> str:
        """Rows the database rejected one by one (the rest of their batch was written):
        one frame in a new ``quarantine/rejected-*.seg`` file. Raises OSError when it
        cannot be written (the caller keeps the batch and retries)."""
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() else "_" for c in token)[-120:]
        dst = self.quarantine_dir / f"rejected-{safe}.seg"
        k = 1
        while dst.exists():
            dst = self.quarantine_dir / f"rejected-{safe}.{k}.seg"
            k += 1
        self._write_file(dst, FILE_MAGIC + encode_frame(kind, token, first_ms, rows))
        self.quarantined.append(str(dst))
        self.quarantined_rows[kind] += len(rows)
        log.error("share log: %d row(s) of batch %s rejected by the database, quarantined to %s: %s",
                  len(rows), token, dst, reason)
        return str(dst)

    def probe(self) -> None:
        """Check that the spool directory takes a write again (after ENOSPC...): write,
        fsync and delete a small file; raises OSError when it still fails."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / ".probe"
        self._write_file(path, b"\0" * 4096)
        path.unlink()

    @property
    def pending_frames(self) -> int:
        return len(self._pending)

    @property
    def head_first_ms(self) -> int | None:
        return self._pending[0].first_ms if self._pending else None

    def close(self) -> None:
        if self._fd is not None:
            self.reserve.close(self._fd)
            self._fd = None
            if not any(r.segment == self._active for r in self._pending):
                self._delete_segment(self._active)
            self._active = 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        k = os.write(fd, view)
        if k <= 0:
            raise OSError(28, "short write")  # ENOSPC in effect
        view = view[k:]


def read_quarantine_file(path: str | os.PathLike[str]) -> list[tuple[int, str, tuple[tuple[object, ...], ...]]]:
    """(kind, token, rows) of every whole frame in a quarantined file, for an operator (or a
    test) who inspects or re-imports it. Stops at the first damaged or torn frame."""
    data = Path(path).read_bytes()
    if not data.startswith(FILE_MAGIC):
        return []
    out: list[tuple[int, str, tuple[tuple[object, ...], ...]]] = []
    off = len(FILE_MAGIC)
    while off < len(data):
        try:
            ref = Spool(Path(path).parent)._parse_at(0, data, off)
        except SpoolCorrupt:
            break
        if ref is None:
            break
        body_at = off + _HDR.size + len(ref.token.encode())
        out.append((ref.kind, ref.token, marshal.loads(data[body_at : ref.end - _CRC.size])))
        off = ref.end
    return out
