"""Open-batch journal files (tproxy/shares/journal.py): what recovery reads back.

A journal written by this version holds one record per write or commit, each the list
of rows added since the previous one; journals left by earlier versions hold one row
(a tuple) per record. Recovery must read both, keep every whole record and cut a torn
last one (a kill during a commit, or a power loss).
"""

from __future__ import annotations

import logging
import marshal
import zlib
from pathlib import Path

from tproxy.shares.journal import JREC, Journal, decode_records, encode_record
from tproxy.shares.ratelog import RateLimitedLog
from tproxy.shares.spool import KIND_SHARES, KIND_VERDICTS, Spool

RUN = 0x1234


def row(seq: int) -> tuple[object, ...]:
    return (1_700_000_000_000 + seq, "jtest", RUN, seq, f"w{seq}", 1.5 * seq, True)


def old_record(body: object) -> bytes:
    """A record as journals were written before rows were batched: marshal version 4, one row."""
    data = marshal.dumps(body, 4)
    return JREC.pack(len(data), zlib.crc32(data)) + data


def journal(directory: Path) -> Journal:
    return Journal(directory, "jtest", RUN, sync=True, retry_s=1.0, max_waiting=100, stall_s=1.0,
                   rlog=RateLimitedLog(logging.getLogger("test"), 60.0))


def test_decode_reads_lists_of_rows_and_cuts_a_torn_tail() -> None:
    header = ("jtest", RUN, KIND_SHARES, 7)
    data = encode_record(header) + encode_record([row(1), row(2)]) + encode_record([row(3)])
    torn = encode_record([row(4), row(5)])
    assert decode_records(data) == (header, [row(1), row(2), row(3)])
    assert decode_records(data + torn[:-3]) == (header, [row(1), row(2), row(3)])
    bad = bytearray(torn)
    bad[-1] ^= 0xFF  # a whole-length record whose CRC does not match: cut as well
    assert decode_records(data + bytes(bad) + encode_record([row(6)])) == (header, [row(1), row(2), row(3)])


def test_recovery_reads_old_and_new_journals(tmp_path: Path) -> None:
    directory = tmp_path / "spool" / "journal"
    directory.mkdir(parents=True)
    # Left by an earlier version: one row per record, and a torn last record.
    old = old_record(("jtest", RUN, KIND_SHARES, 1)) + b"".join(old_record(row(s)) for s in (1, 2, 3))
    (directory / f"s-{RUN:x}-1.jnl").write_bytes(old + old_record(row(4))[:-5])
    # This version: lists of rows, and a torn last record.
    new = encode_record(("jtest", RUN, KIND_SHARES, 2)) + encode_record([row(5), row(6)]) + encode_record([row(7)])
    (directory / f"s-{RUN:x}-2.jnl").write_bytes(new + encode_record([row(8), row(9)])[:9])
    # A pool-verdict journal of this version, whole.
    (directory / f"v-{RUN:x}-1.jnl").write_bytes(
        encode_record(("jtest", RUN, KIND_VERDICTS, 1)) + encode_record([(1, "jtest", RUN, 0, 0, 1, "accepted")]))
    # A journal whose batch got no row to disk: nothing to replay, deleted all the same.
    (directory / f"s-{RUN:x}-3.jnl").write_bytes(encode_record(("jtest", RUN, KIND_SHARES, 3)))
    spool = Spool(tmp_path / "spool", fsync=False)
    spool.open()
    try:
        assert journal(directory).recover(spool) == (3, 7)
        assert list(directory.glob("*.jnl")) == []
        got = {}
        while (ref := spool.head()) is not None:
            got[ref.token] = list(spool.read(ref))
            spool.ack(ref)
        assert got == {
            f"jtest:{RUN:x}:s:1": [row(1), row(2), row(3)],
            f"jtest:{RUN:x}:s:2": [row(5), row(6), row(7)],
            f"jtest:{RUN:x}:v:1": [(1, "jtest", RUN, 0, 0, 1, "accepted")],
        }
    finally:
        spool.close()
